//! A secret key's stored digest never leaves: `token` on secret (or untyped) key lists matches
//! only full tokens by equality, and cannot order them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

over_http! {
    async fn token_ranges_patterns_and_order_are_refused_unless_publishable_only(app) {
        let sk = app.create_key("hidden", "secret").await;
        let token = sk["token"].as_str().unwrap().to_owned();
        for query in [
            "token[$gt]=0",
            "token[$lt]=8",
            "token[$like]=%25",
            "token[$ilike]=a%25",
            "token[$ne]=x",
            "type=secret&token[$gte]=0",
            "token=0123456789abcdef",
            "$or[0][token][$gt]=0",
        ] {
            let (status, body) = app.get(&format!("/admin/api-keys?{query}")).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["message"], keyward::service::TOKEN_FILTER_REFUSED, "{query}");
        }
        for query in ["order=token", "order=-token", "type=secret&order=token"] {
            let (status, body) = app.get(&format!("/admin/api-keys?{query}")).await;
            assert_eq!((status, body["message"].as_str()), (400, Some(keyward::service::TOKEN_ORDER_REFUSED)), "{query}");
        }
        // The full plaintext token finds its key (digested before the query).
        let (status, found) = app.get(&format!("/admin/api-keys?token={token}")).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["count"], 1);
        assert_eq!(found["api_keys"][0]["id"], sk["id"]);
        // So does a restricted key's (rk_), alone or in a list.
        let (s, rk) = app.post("/admin/api-keys", serde_json::json!({"title": "narrow", "type": "secret", "permissions": ["keys:verify"]})).await;
        assert_eq!(s, 200, "{rk}");
        let rk_token = rk["api_key"]["token"].as_str().unwrap();
        let (status, found) = app.get(&format!("/admin/api-keys?token={rk_token}")).await;
        assert_eq!((status, &found["api_keys"][0]["id"]), (200, &rk["api_key"]["id"]), "{found}");
        let (status, found) = app.get(&format!("/admin/api-keys?token[$in][]={rk_token}&token[$in][]={token}")).await;
        assert_eq!((status, &found["count"]), (200, &serde_json::json!(2)), "{found}");
        // Publishable keys keep Medusa's behaviour.
        let pk = app.create_key("shop", "publishable").await;
        let (status, listed) = app.get("/admin/api-keys?type=publishable&order=token&token[$like]=pk_%25").await;
        assert_eq!(status, 200, "{listed}");
        assert!(listed["api_keys"].as_array().unwrap().iter().any(|k| k["id"] == pk["id"]));
    }
}

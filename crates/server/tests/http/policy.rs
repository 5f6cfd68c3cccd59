//! Keys that carry their own policy, over a real socket on SQLite and Postgres: restricted
//! secret keys reach only the routes their permissions name (the test walks the route table),
//! nobody mints a key with more than it holds, `allowed_ips` limits where a key works from
//! (through a trusted proxy too), and metadata round-trips, filters and is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use support::{App, read};

/// Creates a key with extra fields; returns the create answer's `api_key` (token included).
async fn create(app: &App, body: Value) -> Value {
    let (s, created) = app.post("/admin/api-keys", body).await;
    assert_eq!(s, 200, "{created}");
    created["api_key"].clone()
}

fn basic(token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{token}:")))
}

/// A request with `token` as the admin credential.
async fn as_key(app: &App, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.anon(method, path).header("authorization", basic(token));
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.unwrap()).await
}

over_http! {
    async fn a_verify_only_key_reaches_the_verify_route_and_no_other(app) {
        let restricted = create(&app, json!({"title": "verifier", "type": "secret", "permissions": ["keys:verify"]})).await;
        let rk = restricted["token"].as_str().unwrap().to_owned();
        assert!(rk.starts_with("rk_"), "a restricted key is recognisable by its prefix: {rk}");
        assert_eq!(restricted["permissions"], json!(["keys:verify"]));
        let pk = app.create_key("storefront", "publishable").await;
        let routes = keyward_server::admin_routes();
        let mut refused = 0;
        for route in &routes {
            let path = route.path.replace("{id}", pk["id"].as_str().unwrap());
            let body = (route.method != Method::GET && route.method != Method::DELETE).then(|| json!({"key": pk["token"]}));
            let (s, answer) = as_key(&app, &rk, route.method.clone(), &path, body).await;
            if route.permission == keyward::Permission::KeysVerify {
                assert_eq!((s, &answer["code"]), (200, &json!("VALID")), "{} {path}: {answer}", route.method);
            } else {
                assert_eq!(s, 403, "{} {path}: {answer}", route.method);
                assert_eq!(answer["type"], "forbidden");
                assert!(answer["message"].as_str().unwrap().contains(route.permission.as_str()), "{answer}");
                refused += 1;
            }
        }
        assert_eq!(refused, routes.len() - 1);
        for (method, path) in [(Method::GET, "/admin/nothing-here"), (Method::GET, "/metrics")] {
            let (s, answer) = as_key(&app, &rk, method, path, None).await;
            assert_eq!(s, 403, "{path}: {answer}");
        }
        // Still a secret credential: as Bearer it gets the dedicated 401, like an sk_ key.
        let (s, answer) = read(app.anon(Method::GET, "/admin/api-keys").bearer_auth(&rk).send().await.unwrap()).await;
        assert_eq!(s, 401);
        assert!(answer["message"].as_str().unwrap().contains("HTTP Basic"), "{answer}");
        // And the key is nothing a storefront can use.
        let (s, _) = read(app.anon(Method::GET, "/store/regions").header("x-publishable-api-key", &rk).send().await.unwrap()).await;
        assert_eq!(s, 400);
    }

    async fn a_read_key_cannot_write_and_nobody_mints_more_than_it_holds(app) {
        let reader = create(&app, json!({"title": "reader", "type": "secret", "permissions": ["api_keys:read"]})).await;
        let rk = reader["token"].as_str().unwrap();
        let victim = app.create_key("victim", "secret").await;
        let victim_path = format!("/admin/api-keys/{}", victim["id"].as_str().unwrap());
        assert_eq!(as_key(&app, rk, Method::GET, "/admin/api-keys", None).await.0, 200);
        assert_eq!(as_key(&app, rk, Method::GET, &victim_path, None).await.0, 200);
        for (path, body) in [
            ("/admin/api-keys".to_owned(), json!({"title": "more", "type": "publishable"})),
            (format!("{victim_path}/revoke"), json!({})),
            (format!("{victim_path}/roll"), json!({})),
            (victim_path.clone(), json!({"title": "renamed"})),
        ] {
            let (s, answer) = as_key(&app, rk, Method::POST, &path, Some(body)).await;
            assert_eq!((s, answer["type"].as_str()), (403, Some("forbidden")), "{path}: {answer}");
        }
        let (_, still) = app.get(&victim_path).await;
        assert_eq!((still["api_key"]["title"].as_str(), &still["api_key"]["revoked_at"]), (Some("victim"), &Value::Null));

        let writer = create(&app, json!({"title": "writer", "type": "secret", "permissions": ["api_keys:write"]})).await;
        let wk = writer["token"].as_str().unwrap();
        for body in [
            json!({"title": "unrestricted", "type": "secret"}),
            json!({"title": "wider", "type": "secret", "permissions": ["api_keys:write", "sales_channels:read"]}),
        ] {
            let (s, answer) = as_key(&app, wk, Method::POST, "/admin/api-keys", Some(body)).await;
            assert_eq!(s, 403, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains("is wider than this key's api_keys:write"), "{answer}");
        }
        let (s, narrower) = as_key(&app, wk, Method::POST, "/admin/api-keys",
            Some(json!({"title": "narrower", "type": "secret", "permissions": ["api_keys:read"]}))).await;
        assert_eq!(s, 200, "{narrower}");
        assert!(narrower["api_key"]["token"].as_str().unwrap().starts_with("rk_"));
        let (s, _) = as_key(&app, wk, Method::POST, "/admin/api-keys", Some(json!({"title": "shop", "type": "publishable"}))).await;
        assert_eq!(s, 200, "a publishable key carries no admin permission");
        // Widening a key it may change, or rolling a stronger key, is refused as well.
        let narrow_path = format!("/admin/api-keys/{}", narrower["api_key"]["id"].as_str().unwrap());
        let (s, _) = as_key(&app, wk, Method::POST, &narrow_path, Some(json!({"permissions": ["api_keys:read", "keys:verify"]}))).await;
        assert_eq!(s, 403);
        let (s, _) = as_key(&app, wk, Method::POST, &format!("{victim_path}/roll"), Some(json!({}))).await;
        assert_eq!(s, 403, "rolling an unrestricted key would hand out an unrestricted token");
        let (s, rolled) = as_key(&app, wk, Method::POST, &format!("{narrow_path}/roll"), Some(json!({}))).await;
        assert_eq!(s, 200, "{rolled}");
        assert!(rolled["api_key"]["token"].as_str().unwrap().starts_with("rk_"));
        assert_eq!(rolled["api_key"]["permissions"], json!(["api_keys:read"]), "the successor keeps the permissions");
        // Nor may it revoke a key stronger than itself (see least_privilege.rs).
        let (s, revoked) = as_key(&app, wk, Method::POST, &format!("{victim_path}/revoke"), Some(json!({}))).await;
        assert_eq!(s, 403, "{revoked}");
        // An admin may narrow a restricted key; an unrestricted key cannot be given permissions.
        let (s, changed) = app.post(&format!("/admin/api-keys/{}", writer["id"].as_str().unwrap()), json!({"permissions": ["api_keys:read"]})).await;
        assert_eq!((s, &changed["api_key"]["permissions"]), (200, &json!(["api_keys:read"])));
        let (s, _) = as_key(&app, wk, Method::POST, "/admin/api-keys", Some(json!({"title": "now refused", "type": "publishable"}))).await;
        assert_eq!(s, 403, "the narrowed key is refused at once");
        let (s, answer) = app.post(&victim_path, json!({"permissions": ["keys:verify"]})).await;
        assert_eq!(s, 400);
        assert!(answer["message"].as_str().unwrap().contains("is not a restricted key"), "{answer}");
        // Bad permissions are refused with the list of good ones; publishable keys carry none.
        for (body, words) in [
            (json!({"title": "x", "type": "secret", "permissions": ["api_keys:admin"]}), "Unknown permission 'api_keys:admin'"),
            (json!({"title": "x", "type": "secret", "permissions": []}), "at least one"),
            (json!({"title": "x", "type": "publishable", "permissions": ["keys:verify"]}), "Only secret keys carry permissions"),
        ] {
            let (s, answer) = app.post("/admin/api-keys", body).await;
            assert_eq!(s, 400, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains(words), "{answer}");
        }
    }

    async fn a_key_with_allowed_ips_works_only_from_them(app) {
        let here = create(&app, json!({"title": "here", "type": "secret", "allowed_ips": ["127.0.0.1"]})).await;
        assert_eq!(here["allowed_ips"], json!(["127.0.0.1/32"]));
        let there = create(&app, json!({"title": "there", "type": "secret", "allowed_ips": ["10.9.0.0/16"]})).await;
        let (here_sk, there_sk) = (here["token"].as_str().unwrap(), there["token"].as_str().unwrap());
        assert_eq!(as_key(&app, here_sk, Method::GET, "/admin/api-keys", None).await.0, 200);
        let (s, answer) = as_key(&app, there_sk, Method::GET, "/admin/api-keys", None).await;
        assert_eq!((s, answer), (403, json!({"type": "forbidden", "message": "This API key may not be used from this address"})));
        // The verify API judges the address it is given, else its caller's.
        let verdict = |key: &str, ip: Option<&str>| {
            let mut body = json!({"key": key});
            if let Some(ip) = ip {
                body["ip"] = json!(ip);
            }
            body
        };
        let (_, v) = app.post("/v1/keys/verify", verdict(there_sk, None)).await;
        assert_eq!((&v["valid"], &v["code"]), (&json!(false), &json!("FORBIDDEN_ORIGIN")));
        assert_eq!(v["api_key"]["allowed_ips"], json!(["10.9.0.0/16"]));
        let (_, v) = app.post("/v1/keys/verify", verdict(there_sk, Some("10.9.3.4"))).await;
        assert_eq!(v["code"], "VALID");
        let (s, v) = app.post("/v1/keys/verify", verdict(there_sk, Some("nowhere"))).await;
        assert_eq!((s, v["message"].as_str()), (400, Some("ip must be an IPv4 or IPv6 address, but got: 'nowhere'")));
        // A publishable key from elsewhere gets Medusa's store refusal.
        let shop = create(&app, json!({"title": "kiosk", "type": "publishable", "allowed_ips": ["10.9.0.0/16"]})).await;
        let (s, answer) = read(app.anon(Method::GET, "/store/regions").header("x-publishable-api-key", shop["token"].as_str().unwrap()).send().await.unwrap()).await;
        assert_eq!((s, answer), (400, json!({"type": "not_allowed", "message": "A valid publishable key is required to proceed with the request"})));
        // Lifting the limit takes effect at once; a bad block is a clear 400.
        let (s, lifted) = app.post(&format!("/admin/api-keys/{}", there["id"].as_str().unwrap()), json!({"allowed_ips": null})).await;
        assert_eq!(s, 200);
        assert!(lifted["api_key"].get("allowed_ips").is_none(), "{lifted}");
        assert_eq!(as_key(&app, there_sk, Method::GET, "/admin/api-keys", None).await.0, 200);
        let (s, answer) = app.post("/admin/api-keys", json!({"title": "x", "type": "secret", "allowed_ips": ["10.0.0.0/40"]})).await;
        assert_eq!(s, 400);
        assert!(answer["message"].as_str().unwrap().contains("is not an address or CIDR block"), "{answer}");
    }

    async fn metadata_round_trips_filters_and_is_bounded(app) {
        let meta = json!({"team": "web", "plan": "pro", "seats": 5});
        let pro = create(&app, json!({"title": "pro", "type": "publishable", "metadata": meta})).await;
        assert_eq!(pro["metadata"], meta);
        create(&app, json!({"title": "free", "type": "publishable", "metadata": {"plan": "free", "seats": "5"}})).await;
        let plain = app.create_key("plain", "publishable").await;
        assert!(plain.get("metadata").is_none(), "a key without metadata is answered as Medusa answers it: {plain}");
        let titles = |list: &Value| -> Vec<String> {
            list["api_keys"].as_array().unwrap().iter().map(|k| k["title"].as_str().unwrap().to_owned()).collect()
        };
        let (_, found) = app.get("/admin/api-keys?metadata[plan]=pro").await;
        assert_eq!(titles(&found), ["pro"]);
        assert_eq!(found["api_keys"][0]["metadata"], meta);
        let (_, found) = app.get("/admin/api-keys?metadata[seats]=5").await;
        assert_eq!(titles(&found), ["free"], "a filter matches strings, not the number 5");
        let (_, found) = app.get("/admin/api-keys?metadata[plan]=pro&metadata[team]=web&q=pr").await;
        assert_eq!((titles(&found), &found["count"]), (vec!["pro".to_owned()], &json!(1)));
        let (_, v) = app.post("/v1/keys/verify", json!({"key": pro["token"]})).await;
        assert_eq!(v["api_key"]["metadata"], meta, "the verify answer carries it");
        // Replaced whole, removed with null.
        let path = format!("/admin/api-keys/{}", pro["id"].as_str().unwrap());
        let (_, updated) = app.post(&path, json!({"metadata": {"plan": "enterprise"}})).await;
        assert_eq!(updated["api_key"]["metadata"], json!({"plan": "enterprise"}));
        let (_, updated) = app.post(&path, json!({"metadata": null})).await;
        assert!(updated["api_key"].get("metadata").is_none(), "{updated}");
        // Bad metadata is refused and nothing is written.
        let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        for (body, words) in [
            (json!({"metadata": {"blob": "x".repeat(5000)}}), "metadata takes at most 4096 bytes as JSON"),
            (json!({"metadata": many}), "metadata holds at most 50 keys, but got 51"),
            (json!({"metadata": {"bad key": 1}}), "metadata key \"bad key\" must be 1 to 40"),
            (json!({"metadata": "flat"}), "metadata"),
        ] {
            let mut create_body = body.clone();
            create_body["title"] = json!("refused");
            create_body["type"] = json!("secret");
            let (s, answer) = app.post("/admin/api-keys", create_body).await;
            assert_eq!(s, 400, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains(words), "{answer}");
            let (s, _) = app.post(&path, body).await;
            assert_eq!(s, 400);
        }
        let (_, all) = app.get("/admin/api-keys?q=refused").await;
        assert_eq!(all["count"], 0, "a refused create leaves nothing");
        let (s, answer) = app.get("/admin/api-keys?metadata[a%20b]=x").await;
        assert_eq!(s, 400, "{answer}");
    }
}

// Behind a trusted proxy the client is the forwarded address, so a key limited to it works
// through the proxy and nowhere else.
mod behind_a_proxy {
    use super::*;

    over_http_behind_a_proxy! {
        async fn allowed_ips_through_a_trusted_proxy(proxied) {
            let support::Proxied(app) = proxied;
            let key = create(
                &app,
                json!({"title": "office", "type": "secret", "allowed_ips": ["198.51.100.0/24"]}),
            )
            .await;
            let sk = key["token"].as_str().unwrap();
            let send = |forwarded: Option<&str>| {
                let mut req = app
                    .anon(Method::GET, "/admin/api-keys")
                    .header("authorization", basic(sk));
                if let Some(f) = forwarded {
                    req = req.header("x-forwarded-for", f);
                }
                async move { read(req.send().await.unwrap()).await.0 }
            };
            assert_eq!(send(Some("198.51.100.7")).await, 200);
            assert_eq!(send(Some("203.0.113.9")).await, 403);
            assert_eq!(send(None).await, 403, "the proxy's own address is not the office's");
            // A client that sends its own Forwarded header through a proxy that appends to
            // X-Forwarded-For (nginx's default) does not choose its address.
            let spoofed = app
                .anon(Method::GET, "/admin/api-keys")
                .header("authorization", basic(sk))
                .header("forwarded", "for=198.51.100.7")
                .header("x-forwarded-for", "203.0.113.9");
            assert_eq!(read(spoofed.send().await.unwrap()).await.0, 403);
        }
    }
}

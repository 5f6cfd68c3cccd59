//! Bounded inputs and the headers every answer carries, over a real socket on SQLite and
//! Postgres: each limit is a 400 naming it, and a refused write leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use serde_json::{Value, json};

fn says(answer: &(u16, Value), words: &str) {
    assert_eq!(answer.0, 400, "{}", answer.1);
    let message = answer.1["message"].as_str().unwrap();
    assert!(message.contains(words), "expected {words:?} in {message:?}");
}

over_http! {
    async fn lists_refuse_queries_beyond_their_bounds(app) {
        let terms = |n: usize| vec!["title"; n].join(",");
        assert_eq!(app.get(&format!("/admin/api-keys?order={}", terms(10))).await.0, 200);
        says(&app.get(&format!("/admin/api-keys?order={}", terms(11))).await, "order takes at most 10 terms, but got 11");
        says(&app.get(&format!("/admin/api-keys?order={}", terms(3000))).await, "order takes at most 10 terms, but got 3000");
        let groups = |n: usize| (0..n).map(|i| format!("$or[{i}][title]=t{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(app.get(&format!("/admin/api-keys?{}", groups(50))).await.0, 200);
        says(&app.get(&format!("/admin/api-keys?{}", groups(51))).await, "at most 50 $and/$or groups, but got 51");
        let values = |n: usize| (0..n).map(|i| format!("id[$in][]=apk_{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(app.get(&format!("/admin/api-keys?{}", values(1000))).await.0, 200);
        says(&app.get(&format!("/admin/api-keys?{}", values(1001))).await, "holds at most 1000, but got 1001");
        says(&app.get(&format!("/admin/sales-channels?order={}", ["name"; 11].join(","))).await, "order takes at most 10 terms");
    }

    async fn titles_names_descriptions_and_channel_metadata_are_bounded(app) {
        let long = |n: usize| "x".repeat(n);
        assert_eq!(app.post("/admin/api-keys", json!({"title": long(1000), "type": "secret"})).await.0, 200);
        says(&app.post("/admin/api-keys", json!({"title": long(1001), "type": "secret"})).await, "title holds at most 1000 characters, but got 1001");
        let key = app.create_key("short", "publishable").await;
        let path = format!("/admin/api-keys/{}", key["id"].as_str().unwrap());
        says(&app.post(&path, json!({"title": long(5000)})).await, "title holds at most 1000 characters, but got 5000");
        assert_eq!(app.get(&path).await.1["api_key"]["title"], "short");

        says(&app.post("/admin/sales-channels", json!({"name": long(1001)})).await, "name holds at most 1000 characters");
        says(&app.post("/admin/sales-channels", json!({"name": "web", "description": long(10_001)})).await, "description holds at most 10000 characters");
        let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        says(&app.post("/admin/sales-channels", json!({"name": "web", "metadata": many})).await, "metadata holds at most 50 keys");
        says(&app.post("/admin/sales-channels", json!({"name": "web", "metadata": {"blob": long(900_000)}})).await, "metadata takes at most 4096 bytes");
        let (_, list) = app.get("/admin/sales-channels?q=web").await;
        assert_eq!(list["count"], 0, "no refused channel was stored: {list}");
        let channel = app.create_channel("web").await;
        let cpath = format!("/admin/sales-channels/{}", channel["id"].as_str().unwrap());
        says(&app.post(&cpath, json!({"description": long(10_001)})).await, "description holds at most 10000 characters");
        says(&app.post(&cpath, json!({"metadata": {"bad key": 1}})).await, "metadata key \"bad key\"");
        assert_eq!(app.post(&cpath, json!({"description": long(10_000)})).await.0, 200);
    }

    async fn a_login_field_of_the_wrong_type_is_a_400_and_a_missing_one_medusas_401(app) {
        for (body, status, words) in [
            (json!({"email": 42, "password": "x"}), 400, "email must be a string"),
            (json!({"email": "a@b.c", "password": ["x"]}), 400, "password must be a string"),
            (json!({"email": "a@b.c"}), 401, "Password should be a string"),
            (json!({"password": "x"}), 401, "Email should be a string"),
        ] {
            let res = app.anon(Method::POST, "/auth/user/emailpass").json(&body).send().await.unwrap();
            let (s, answer) = support::read(res).await;
            assert_eq!(s, status, "{body}: {answer}");
            assert!(answer["message"].as_str().unwrap().contains(words), "{answer}");
        }
    }

    async fn every_answer_says_nosniff_and_the_docs_run_no_inline_script(app) {
        for (method, path) in [(Method::GET, "/admin/api-keys"), (Method::GET, "/nowhere"), (Method::GET, "/health"), (Method::GET, "/openapi.json")] {
            let res = app.admin(method, path).send().await.unwrap();
            assert_eq!(res.headers().get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
        }
        let res = app.anon(Method::GET, "/admin/api-keys").send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.headers()["x-content-type-options"].to_str().unwrap()), (401, "nosniff"));
        let docs = app.anon(Method::GET, "/docs").send().await.unwrap();
        let csp = docs.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        let html = docs.text().await.unwrap();
        assert!(html.contains(r#"<script src="/docs.js">"#) && !html.contains("<script>") && !html.contains("<style>"), "{html}");
        for asset in ["/docs.js", "/docs.css"] {
            let res = app.anon(Method::GET, asset).send().await.unwrap();
            assert_eq!(res.status(), 200, "{asset}");
        }
    }
}

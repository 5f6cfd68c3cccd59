//! Every authenticated route refuses a request without credentials, whatever its method: the
//! test walks the same table the router is built from, so a new route cannot be forgotten.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use serde_json::json;
use support::{App, read};

#[tokio::test]
async fn every_admin_route_rejects_an_unauthenticated_request() {
    // Every probe below is a failed authentication; none of them is limited (only password
    // logins are), so the walk needs no special limiter.
    let app = App::sqlite().await;
    let routes = keyward_server::admin_routes();
    assert!(routes.len() >= 9);
    let mut refused = 0;
    for route in &routes {
        let concrete = route.path.replace("{id}", "apk_someone");
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            let (s, body) = read(
                app.anon(method.clone(), &concrete)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (s, body),
                (401, json!({"message": "Unauthorized"})),
                "{method} {concrete}"
            );
            refused += 1;
        }
    }
    // Paths no route matches are refused too, before anyone learns whether they exist.
    for path in [
        "/admin",
        "/admin/",
        "/admin/nothing-here",
        "/admin/api-keys/x/y/z",
        "/v1/keys",
        "/v1/anything",
    ] {
        let (s, _) = read(app.anon(Method::GET, path).send().await.unwrap()).await;
        assert_eq!(s, 401, "{path}");
    }
    assert!(refused >= 80);
    // With credentials, a listed route answers.
    assert_eq!(app.get("/admin/api-keys").await.0, 200);
}

//! Cookie sessions cannot be ridden by another site: a cookie-authenticated change must come
//! from the server's own origin and send JSON; Bearer and Basic requests are not affected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use reqwest::Method;
use support::{App, read};

async fn cookie_of(app: &App) -> String {
    let res = app.admin(Method::POST, "/auth/session").send().await.unwrap();
    res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn revoked(app: &App, id: &str) -> bool {
    app.get(&format!("/admin/api-keys/{id}")).await.1["api_key"]["revoked_at"].is_string()
}

over_http! {
    async fn a_cookie_revoke_from_another_origin_or_without_json_changes_nothing(app) {
        let cookie = cookie_of(&app).await;
        let key = app.create_key("target", "secret").await;
        let id = key["id"].as_str().unwrap().to_owned();
        let path = format!("/admin/api-keys/{id}/revoke");
        let own = app.base.clone();
        let with_cookie = |origin: Option<&str>, content_type: Option<&str>| {
            let mut req = app.anon(Method::POST, &path).header("cookie", &cookie).body("{}");
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            req
        };
        let (s, body) = read(with_cookie(Some("https://evil.example"), Some("application/json")).send().await.unwrap()).await;
        assert_eq!(s, 403, "{body}");
        assert_eq!(body["message"], keyward_server::csrf::FOREIGN_ORIGIN);
        let (s, _) = read(with_cookie(None, Some("application/json")).send().await.unwrap()).await;
        assert_eq!(s, 403, "no Origin and no Sec-Fetch-Site");
        let (s, body) = read(with_cookie(Some(&own), None).send().await.unwrap()).await;
        assert_eq!(s, 415, "{body}");
        let (s, _) = read(with_cookie(Some(&own), Some("text/plain")).send().await.unwrap()).await;
        assert_eq!(s, 415);
        assert!(!revoked(&app, &id).await, "nothing changed");
        // From its own origin, as JSON: it goes through.
        let (s, body) = read(with_cookie(Some(&own), Some("application/json")).send().await.unwrap()).await;
        assert_eq!(s, 200, "{body}");
        assert!(revoked(&app, &id).await);
        // Sec-Fetch-Site: same-origin stands in for a missing Origin.
        let other = app.create_key("other", "secret").await;
        let req = app
            .anon(Method::POST, &format!("/admin/api-keys/{}/revoke", other["id"].as_str().unwrap()))
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/json")
            .body("{}");
        assert_eq!(req.send().await.unwrap().status(), 200);
        // A cookie still reads without any of this.
        let req = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie).header("origin", "https://evil.example");
        assert_eq!(req.send().await.unwrap().status(), 200);
    }

    async fn a_cookie_logout_from_another_origin_ends_nothing(app) {
        let cookie = cookie_of(&app).await;
        let logout = |origin: &str| app.anon(Method::DELETE, "/auth/session").header("cookie", &cookie).header("origin", origin);
        let (s, body) = read(logout("https://evil.example").send().await.unwrap()).await;
        assert_eq!(s, 403, "{body}");
        let reads = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie).send().await.unwrap();
        assert_eq!(reads.status(), 200, "the session is still live");
        // A bogus Bearer header beside the cookie does not make it a Bearer logout.
        let (s, _) = read(logout("https://evil.example").bearer_auth("not-a-login-token").send().await.unwrap()).await;
        assert_eq!(s, 403);
        // Nor do two Origin headers, one of them its own.
        let twice = logout(&app.base).header("origin", "https://evil.example");
        assert_eq!(read(twice.send().await.unwrap()).await.0, 403);
        let reads = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie).send().await.unwrap();
        assert_eq!(reads.status(), 200, "the session is still live");
        let own = app.base.clone();
        let (s, _) = read(logout(&own).send().await.unwrap()).await;
        assert_eq!(s, 200);
        let reads = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie).send().await.unwrap();
        assert_eq!(reads.status(), 401, "a same-origin logout ends it");
    }

    async fn bearer_and_basic_changes_need_no_origin(app) {
        let sk = app.create_key("automation", "secret").await["token"].as_str().unwrap().to_owned();
        for (n, auth) in ["bearer", "basic"].into_iter().enumerate() {
            let key = app.create_key(&format!("k{n}"), "publishable").await;
            let req = app.anon(Method::POST, &format!("/admin/api-keys/{}/revoke", key["id"].as_str().unwrap()))
                .header("origin", "https://elsewhere.example")
                .body("{}");
            let req = match auth {
                "bearer" => req.bearer_auth(&app.token),
                _ => req.basic_auth(&sk, Some("")),
            };
            let (s, body) = read(req.send().await.unwrap()).await;
            assert_eq!(s, 200, "{auth}: {body}");
        }
    }
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed() {
    let app = App::configured(keyward_testkit::TestDb::sqlite(), |s| {
        s.with_public_url(Some("https://keys.example.com".into()))
    })
    .await;
    let res = app.admin(Method::POST, "/auth/session").send().await.unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-keyward_session="), "{cookie}");
    assert!(
        cookie.contains("; Secure") && cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let key = app.create_key("t", "publishable").await;
    let revoke = |origin: &str| {
        app.anon(
            Method::POST,
            &format!("/admin/api-keys/{}/revoke", key["id"].as_str().unwrap()),
        )
        .header("cookie", &pair)
        .header("origin", origin.to_owned())
        .header("content-type", "application/json")
        .body("{}")
    };
    assert_eq!(
        revoke(&app.base).send().await.unwrap().status(),
        403,
        "the public origin is the own one"
    );
    assert_eq!(revoke("https://keys.example.com").send().await.unwrap().status(), 200);
}

//! What an operator relies on: metrics, the failed-authentication limit, CORS, readiness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod support;

use std::time::Duration;

use keyward_server::limits::AuthLimiter;
use keyward_testkit::TestDb;
use reqwest::Method;
use serde_json::json;
use support::{App, read};

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_verifications_by_code() {
    let app = App::sqlite().await;
    let pk = app.create_key("p", "publishable").await;
    let id = pk["id"].as_str().unwrap();
    app.get(&format!("/admin/api-keys/{id}")).await;
    app.get("/admin/api-keys/apk_missing").await;
    let token = pk["token"].as_str().unwrap();
    read(
        app.anon(Method::GET, "/store/regions")
            .header("x-publishable-api-key", token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    read(
        app.anon(Method::GET, "/store/regions")
            .header("x-publishable-api-key", "pk_junk")
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.post("/v1/keys/verify", json!({"key": token})).await;
    let res = app.anon(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    for line in [
        r#"keyward_http_requests_total{method="GET",route="/admin/api-keys/{id}",status="200"} 1"#,
        r#"keyward_http_requests_total{method="GET",route="/admin/api-keys/{id}",status="404"} 1"#,
        r#"keyward_http_requests_total{method="POST",route="/admin/api-keys",status="200"} 1"#,
        r#"keyward_verifications_total{source="store",code="VALID"} 1"#,
        r#"keyward_verifications_total{source="store",code="MALFORMED"} 1"#,
        r#"keyward_verifications_total{source="verify_api",code="VALID"} 1"#,
        r#"keyward_http_request_duration_seconds_count{route="/admin/api-keys/{id}"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains(id), "raw ids never become labels");
}

#[tokio::test]
async fn an_address_with_too_many_failed_logins_is_refused_for_a_while() {
    let app = App::configured(TestDb::sqlite(), |s| {
        s.with_limiter(AuthLimiter::new(3, Duration::from_secs(60)))
    })
    .await;
    let login = |password: &'static str| {
        app.anon(Method::POST, "/auth/user/emailpass")
            .json(&json!({"email": support::EMAIL, "password": password}))
    };
    for _ in 0..3 {
        assert_eq!(login("wrong-password").send().await.unwrap().status(), 401);
    }
    let res = login(support::PASSWORD).send().await.unwrap();
    assert_eq!(res.status(), 429, "even the right password waits out the window");
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() <= 60);
    let (_, body) = read(res).await;
    assert_eq!(body["type"], "too_many_requests");
    // Failed admin credentials count too, and the block covers the admin API.
    let (s, _) = read(
        app.anon(Method::GET, "/admin/api-keys")
            .bearer_auth("nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 429);
    // Store routes and health are not authentication and stay open.
    assert_eq!(app.anon(Method::GET, "/health").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let app = App::configured(TestDb::sqlite(), |s| {
        s.with_cors_origins(vec!["https://admin.example".into()])
    })
    .await;
    let preflight = |origin: &'static str| {
        app.anon(Method::OPTIONS, "/admin/api-keys")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
    };
    let ok = preflight("https://admin.example").send().await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://admin.example");
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let other = preflight("https://evil.example").send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let plain = App::sqlite().await;
    let res = plain
        .anon(Method::GET, "/health")
        .header("origin", "https://admin.example")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "no CORS unless configured"
    );
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let app = App::sqlite().await;
    assert_eq!(
        read(app.anon(Method::GET, "/ready").send().await.unwrap()).await,
        (200, json!({"status": "ready"}))
    );
    assert_eq!(
        read(app.anon(Method::GET, "/health").send().await.unwrap()).await,
        (200, json!({"status": "ok"}))
    );
}

#[tokio::test]
async fn readiness_says_503_when_the_database_goes_away() {
    use sqlx::Connection;
    let Some(app) = App::postgres().await else { return };
    assert_eq!(app.anon(Method::GET, "/ready").send().await.unwrap().status(), 200);
    let admin = std::env::var("KEYWARD_TEST_PG_URL").unwrap_or_else(|_| keyward_testkit::DEFAULT_PG_URL.to_owned());
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (s, body) = read(app.anon(Method::GET, "/ready").send().await.unwrap()).await;
    assert_eq!(
        (s, body),
        (
            503,
            json!({"status": "unavailable", "message": "The database is unreachable"})
        )
    );
    // Requests that need the database fail fast with 503, not 500.
    let (s, body) = app.get("/admin/api-keys").await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["type"], "database_unavailable");
}

//! What an operator relies on: metrics, the failed-authentication limit, CORS, readiness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

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
    let res = app.admin(Method::GET, "/metrics").send().await.unwrap();
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

/// The status of a sign-in from `from` with `password`.
async fn login_status(app: &App, from: &str, password: &str) -> u16 {
    login_from(app, from, password).send().await.unwrap().status().as_u16()
}

fn login_from(app: &App, from: &str, password: &str) -> reqwest::RequestBuilder {
    let http = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    http.post(format!("{}/auth/user/emailpass", app.base))
        .json(&json!({"email": support::EMAIL, "password": password}))
}

#[tokio::test]
async fn metrics_need_an_admin_credential_or_the_metrics_token() {
    let app = App::configured(TestDb::sqlite(), |s| {
        s.with_metrics_token(Some("scrape-me-please-0123".into()))
    })
    .await;
    let (s, body) = read(app.anon(Method::GET, "/metrics").send().await.unwrap()).await;
    assert_eq!((s, body), (401, json!({"message": "Unauthorized"})));
    let wrong = app.anon(Method::GET, "/metrics").bearer_auth("scrape-me-please-0124");
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    let scraper = app.anon(Method::GET, "/metrics").bearer_auth("scrape-me-please-0123");
    let res = scraper.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("keyward_http_requests_total"));
    assert_eq!(app.admin(Method::GET, "/metrics").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn password_logins_are_limited_per_address_but_a_valid_credential_never_is() {
    let app = App::configured(TestDb::sqlite(), |s| {
        s.with_limiter(AuthLimiter::new(3, Duration::from_secs(60)))
    })
    .await;
    for _ in 0..3 {
        assert_eq!(login_status(&app, "127.0.0.1", "wrong-password").await, 401);
    }
    let res = login_from(&app, "127.0.0.1", support::PASSWORD).send().await.unwrap();
    assert_eq!(res.status(), 429, "this address has had its guesses");
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() <= 60);
    let (_, body) = read(res).await;
    assert_eq!(body["type"], "too_many_requests");
    // Another address still logs in (the email's own limit is higher).
    assert_eq!(login_status(&app, "127.0.0.2", support::PASSWORD).await, 200);
    // A valid login token, from the limited address, is never refused; bad ones are just 401.
    let (s, _) = app.get("/admin/api-keys").await;
    assert_eq!(s, 200);
    let (s, _) = read(
        app.anon(Method::GET, "/admin/api-keys")
            .bearer_auth("nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(app.anon(Method::GET, "/health").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_thousand_bad_credentials_lock_no_valid_one_out() {
    let app = App::sqlite().await;
    let sk = app.create_key("ops", "secret").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = app.admin(Method::POST, "/auth/session").send().await.unwrap().headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for i in 0..1_000 {
        let req = app.anon(Method::GET, "/admin/api-keys");
        let req = match i % 4 {
            0 => req,
            1 => req.bearer_auth("garbage"),
            2 => req.basic_auth("sk_not_a_real_key", Some("")),
            _ => req.header("cookie", "keyward_session=forged"),
        };
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    assert_eq!(app.get("/admin/api-keys").await.0, 200, "the JWT");
    let with_cookie = app.anon(Method::GET, "/admin/api-keys").header("cookie", &cookie);
    assert_eq!(with_cookie.send().await.unwrap().status(), 200, "the cookie");
    let with_key = app.anon(Method::GET, "/admin/api-keys").basic_auth(&sk, Some(""));
    assert_eq!(with_key.send().await.unwrap().status(), 200, "the secret key");
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_gets_no_more_than_the_limit_evaluated() {
    let app = App::sqlite().await;
    let mut burst = Vec::new();
    for _ in 0..50 {
        let req = login_from(&app, "127.0.0.1", "wrong-password");
        burst.push(tokio::spawn(async move { req.send().await.unwrap().status().as_u16() }));
    }
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await.unwrap());
    }
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(evaluated, 20, "the default 20 a minute per address: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    assert_eq!(login_status(&app, "127.0.0.3", support::PASSWORD).await, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_limited_on_its_own() {
    let behind = App::configured(TestDb::sqlite(), |s| {
        s.with_limiter(AuthLimiter::new(2, Duration::from_secs(60)))
            .with_trusted_proxies(keyward_server::client::parse_list(&["127.0.0.1/32".into()]).unwrap())
    })
    .await;
    let via =
        |app: &App, client: &str| login_from(app, "127.0.0.1", "wrong").header("x-forwarded-for", client.to_owned());
    for _ in 0..2 {
        assert_eq!(via(&behind, "203.0.113.1").send().await.unwrap().status(), 401);
    }
    assert_eq!(via(&behind, "203.0.113.1").send().await.unwrap().status(), 429);
    assert_eq!(
        via(&behind, "203.0.113.2").send().await.unwrap().status(),
        401,
        "another client behind the proxy"
    );
    // An untrusted peer's X-Forwarded-For is ignored: every guess counts against the peer.
    let direct = App::configured(TestDb::sqlite(), |s| {
        s.with_limiter(AuthLimiter::new(2, Duration::from_secs(60)))
    })
    .await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(via(&direct, client).send().await.unwrap().status(), 401);
    }
    assert_eq!(via(&direct, "203.0.113.3").send().await.unwrap().status(), 429);
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
async fn readiness_says_503_when_the_postgres_database_goes_away() {
    use sqlx::Connection;
    let app = App::postgres().await;
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

//! The exported tower layers on a stranger's router, driven in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use keyward::{ApiKeyType, CreateApiKey, CreateSalesChannel, CreatedApiKey, RevokeApiKey};
use keyward_server::layers::{PublishableKey, RequirePublishableKey, RequireSecretKey, SecretKey};
use keyward_testkit::Harness;
use tower::ServiceExt;

async fn call(app: &Router, header: Option<(&str, String)>) -> (StatusCode, String) {
    let mut req = Request::get("/x");
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn made(h: &Harness, title: &str, key_type: ApiKeyType) -> CreatedApiKey {
    h.flows
        .create_api_key(&keyward::Actor::System, CreateApiKey::new(title, key_type, "t"))
        .await
        .unwrap()
}

#[tokio::test]
async fn require_publishable_key_passes_the_keys_channels_to_the_handler() {
    let h = Harness::sqlite().await;
    let pk = made(&h, "p", ApiKeyType::Publishable).await;
    let sc = h
        .flows
        .create_sales_channel(
            &keyward::Actor::System,
            CreateSalesChannel {
                name: "web".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.flows
        .link_sales_channels(&keyward::Actor::System, &pk.key.id, std::slice::from_ref(&sc.id), &[])
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/x",
            get(|Extension(k): Extension<PublishableKey>| async move { format!("{:?}", k.sales_channel_ids()) }),
        )
        .layer(RequirePublishableKey::new(h.kw.clone()));
    let (s, body) = call(&app, Some(("x-publishable-api-key", pk.token.expose().to_owned()))).await;
    assert_eq!((s, body), (StatusCode::OK, format!("[{:?}]", sc.id)));
    let (s, body) = call(&app, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("Publishable API key required"), "{body}");
    h.flows
        .revoke_api_key(
            &keyward::Actor::System,
            &pk.key.id,
            &RevokeApiKey {
                revoked_by: "t".into(),
                revoke_in: None,
            },
        )
        .await
        .unwrap();
    let (s, body) = call(&app, Some(("x-publishable-api-key", pk.token.expose().to_owned()))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("A valid publishable key is required"), "{body}");
}

#[tokio::test]
async fn require_secret_key_names_the_key_and_refuses_publishable_ones() {
    let h = Harness::sqlite().await;
    let sk = made(&h, "s", ApiKeyType::Secret).await;
    let pk = made(&h, "p", ApiKeyType::Publishable).await;
    let app = Router::new()
        .route(
            "/x",
            get(|Extension(SecretKey(k)): Extension<SecretKey>| async move { k.id.to_string() }),
        )
        .layer(RequireSecretKey::new(h.kw.clone()));
    let (s, body) = call(&app, Some(("authorization", format!("Basic {}", sk.token.expose())))).await;
    assert_eq!((s, body), (StatusCode::OK, sk.key.id.to_string()));
    for header in [
        None,
        Some(("authorization", format!("Basic {}", pk.token.expose()))),
        Some(("authorization", "Bearer x".to_owned())),
    ] {
        let (s, body) = call(&app, header).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::UNAUTHORIZED, r#"{"message":"Unauthorized"}"#)
        );
    }
}

#[tokio::test]
async fn require_secret_key_with_permissions_lets_only_holders_through() {
    let h = Harness::sqlite().await;
    let restricted = |title: &str, permissions: &[&str]| {
        let mut k = CreateApiKey::new(title, ApiKeyType::Secret, "t");
        k.policy.permissions = Some(permissions.iter().map(|p| p.parse().unwrap()).collect());
        k
    };
    let reader = h
        .flows
        .create_api_key(&keyward::Actor::System, restricted("r", &["orders:read"]))
        .await
        .unwrap();
    let both = h
        .flows
        .create_api_key(
            &keyward::Actor::System,
            restricted("b", &["orders:read", "refunds:write"]),
        )
        .await
        .unwrap();
    let verifier = h
        .flows
        .create_api_key(&keyward::Actor::System, restricted("v", &["keys:verify"]))
        .await
        .unwrap();
    let sk = made(&h, "s", ApiKeyType::Secret).await;
    let app = Router::new().route("/x", get(|| async { "ok" })).layer(
        RequireSecretKey::new(h.kw.clone())
            .with_permissions("orders:read AND (orders:write OR refunds:write)")
            .unwrap(),
    );
    let basic = |k: &CreatedApiKey| Some(("authorization", format!("Basic {}", k.token.expose())));
    assert_eq!(call(&app, basic(&both)).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, basic(&sk)).await.0,
        StatusCode::OK,
        "an unrestricted key holds everything"
    );
    for lacking in [&reader, &verifier] {
        let (s, body) = call(&app, basic(lacking)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("does not hold the permissions this route requires"),
            "{body}"
        );
    }
    assert_eq!(call(&app, None).await.0, StatusCode::UNAUTHORIZED);
    assert!(
        RequireSecretKey::new(h.kw.clone())
            .with_permissions("orders:read AND")
            .is_err()
    );
}

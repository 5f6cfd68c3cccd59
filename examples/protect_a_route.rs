//! Protecting your own axum routes with keyward's tower layers.
//!
//!     cargo run -p keyward-examples --example protect_a_route
//!
//! Opens (or creates) `example.db`, makes a publishable key linked to the Default Sales Channel
//! and a secret key, then serves on 127.0.0.1:3000:
//!
//! - `GET /catalogue` needs `x-publishable-api-key` and answers with the key's sales channels;
//! - `GET /internal/report` needs `Authorization: Basic <secret key>`.
//!
//! The `curl` lines it prints show both, with and without a key.

use axum::routing::get;
use axum::{Extension, Json, Router};
use keyward::{ApiKeyType, CreateApiKey, Keyward, Workflows};
use keyward_server::layers::{PublishableKey, RequirePublishableKey, RequireSecretKey, SecretKey};
use serde_json::{Value, json};

async fn catalogue(Extension(key): Extension<PublishableKey>) -> Json<Value> {
    Json(json!({ "visible_sales_channels": key.sales_channel_ids() }))
}

async fn report(Extension(SecretKey(key)): Extension<SecretKey>) -> Json<Value> {
    Json(json!({ "report": "for internal eyes", "requested_by": key.id }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (store, log) = keyward_connect::open("sqlite://example.db").await?;
    let flows = Workflows::new(Keyward::new(store), log, keyward_flow::DEFAULT_LEASE)?;
    flows.migrate().await?;
    let kw = flows.kw().clone();
    let default_key = kw
        .list_api_keys(
            &keyward::ApiKeyFilter::new().try_eq(keyward::ApiKeyField::CreatedBy, "")?,
            &Default::default(),
        )
        .await?
        .into_iter()
        .next()
        .ok_or("the default publishable key is missing")?;
    let secret = flows
        .create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new("example report reader", ApiKeyType::Secret, "example"),
        )
        .await?;

    let app = Router::new()
        .route(
            "/catalogue",
            get(catalogue).layer(RequirePublishableKey::new(kw.clone())),
        )
        .route("/internal/report", get(report).layer(RequireSecretKey::new(kw.clone())));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    println!(
        "  curl -H 'x-publishable-api-key: {}' localhost:3000/catalogue",
        default_key.token
    );
    println!("  curl localhost:3000/catalogue                       # 400: key required");
    println!("  curl -u '{}:' localhost:3000/internal/report", secret.token.expose());
    axum::serve(listener, app).await?;
    Ok(())
}

//! keyward's server with a route of your own that runs a workflow.
//!
//!     cargo run -p keyward-examples --example workflow_route
//!
//! Opens (or creates) `example.db` and serves keyward's whole API on 127.0.0.1:9000 plus
//! `GET /workflow`, which runs the seed's `create-api-key` workflow and answers `{api_key}`:
//!
//!     curl 'localhost:9000/workflow?title=Storefront'
//!
//! It also subscribes the seed's subscriber (a key for every new user: try
//! `KEYWARD_DATABASE_URL=sqlite://example.db keyward user create --email you@example.com
//! --password '…'` while it runs) and schedules the seed's daily job (`0 0 * * *`).

use std::time::Duration;

use keyward::{Keyward, Workflows};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (store, log) = keyward_connect::open("sqlite://example.db").await?;
    let flows = Workflows::new(Keyward::new(store), log, Duration::from_secs(15))?;
    flows.migrate().await?;
    let create = flows.engine().register(keyward_examples::create_api_key_workflow())?;
    let mine = keyward_examples::routes_for(&flows, create.clone());
    flows
        .engine()
        .subscribe(keyward_examples::user_created_subscriber(&flows, create.clone()))?;
    flows.engine().schedule(keyward_examples::daily_job(&flows, create)?)?;
    flows.engine().register_subscribers().await?;
    let state = keyward_server::AppState::new(flows, b"example-only-secret".to_vec());
    let app = keyward_server::app(state.clone()).merge(mine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    println!("listening on http://127.0.0.1:9000 — try: curl 'localhost:9000/workflow?title=Storefront'");
    keyward_server::serve_router(state, app, listener).await?;
    Ok(())
}

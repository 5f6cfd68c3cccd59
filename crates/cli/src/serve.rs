//! `keyward serve` (and `bench-baseline`): settings to a running server with its background work.

use keyward::{Error, Workflows};

use super::{AccessOptions, EventOptions, Failure, Outcome, usage};

pub(crate) async fn bench_baseline(listen: &str) -> Result<Outcome, Failure> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let handler = |body: axum::body::Bytes| async move {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            format!("{{\"valid\":true,\"read\":{}}}", body.len()),
        )
    };
    let app = axum::Router::new().fallback(handler);
    axum::serve(listener, app)
        .await
        .map_err(|e| Failure::Refused(keyward::Error::unavailable(format!("baseline server failed: {e}"))))?;
    Ok(Outcome::ok(String::new()))
}

pub(crate) async fn serve(
    flows: Workflows,
    listen: &str,
    jwt_secret: Option<String>,
    cors: Vec<String>,
    access: AccessOptions,
    events: EventOptions,
) -> Result<Outcome, Failure> {
    let kw = flows.kw().clone();
    let access = checked(access)?;
    init_logging()?;
    let delivery = wire_events(&flows, &events)?;
    // Subscribers are known to the database before anything is served, so every change made
    // from now on (by this node, another node or the CLI) gets a delivery for them.
    flows
        .engine()
        .register_subscribers()
        .await
        .map_err(keyward::workflows::from_flow)?;
    let secret = signing_secret(&kw, jwt_secret).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::unexpected(e.to_string()))?;
    println!("keyward is listening on http://{addr} ({} database)", kw.backend());
    println!("The dashboard: http://{addr}/app");
    if kw.count_users().await? == 0 {
        println!(
            "No admin user yet. Create one with:\n  keyward user create --email admin@example.com --password '<at least 8 characters>'"
        );
    }
    let state = keyward_server::AppState::new(flows, secret)
        .with_cors_origins(cors)
        .with_trusted_proxies(access.trusted)
        .with_client_header(access.client_header)
        .with_metrics_token(access.metrics_token)
        .with_public_url(access.public_url)
        .with_delivery(delivery);
    keyward_server::serve(state, listener)
        .await
        .map_err(|e| Error::unexpected(format!("the server stopped: {e}")))?;
    Ok(Outcome::ok(String::new()))
}

/// The access settings, checked.
struct Access {
    trusted: Vec<keyward_server::client::Cidr>,
    client_header: keyward_server::client::ClientHeader,
    metrics_token: Option<String>,
    public_url: Option<String>,
}

fn checked(access: AccessOptions) -> Result<Access, Failure> {
    let trusted = keyward_server::client::parse_list(&access.trusted_proxies)
        .map_err(|e| usage(format!("KEYWARD_TRUSTED_PROXIES: {e}")))?;
    let client_header = access
        .client_header
        .parse()
        .map_err(|e| usage(format!("KEYWARD_CLIENT_HEADER: {e}")))?;
    let metrics_token = access.metrics_token.filter(|t| !t.is_empty());
    let public_url = access.public_url.filter(|u| !u.is_empty());
    if let Some(u) = &public_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(usage(format!(
            "KEYWARD_PUBLIC_URL must start with http:// or https://, not {u:?}"
        )));
    }
    if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(usage("KEYWARD_METRICS_TOKEN must be at least 16 characters"));
    }
    Ok(Access {
        trusted,
        client_header,
        metrics_token,
        public_url,
    })
}

/// Logs to stderr, filtered by `KEYWARD_LOG` (`info` when unset): a level (`debug`) or
/// tracing's directives (`info,keyward_flow=debug`). A filter that does not parse stops the
/// start with its reason instead of logging less than asked.
fn init_logging() -> Result<(), Failure> {
    use std::io::IsTerminal;
    let spec = std::env::var("KEYWARD_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "info".to_owned()
    } else {
        spec
    };
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    // One bare word is read by tracing as a target name, which would silence everything else:
    // a misspelt level must be refused, not obeyed.
    let bare = !spec.contains(['=', ',', '[']);
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .ok()
        .filter(|_| !bare || LEVELS.contains(&spec.trim().to_ascii_lowercase().as_str()))
        .ok_or_else(|| {
            usage(format!(
                "KEYWARD_LOG={spec:?} is not a log filter: use a level ({}) or directives such as info,keyward_flow=debug",
                LEVELS.join(", ")
            ))
        })?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// The entries of a comma-separated setting, trimmed, empty ones left out.
fn listed(entries: &[String]) -> Vec<&str> {
    entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect()
}

/// One subscriber per `KEYWARD_WEBHOOK_URL`, taking the named events.
fn subscribe_webhooks(flows: &Workflows, o: &EventOptions, names: &[&str]) -> Result<(), Failure> {
    let urls = listed(&o.webhook_urls);
    if urls.is_empty() {
        return Ok(());
    }
    let secret = o.webhook_secret.clone().filter(|s| !s.is_empty());
    if secret.is_none() {
        tracing::warn!("KEYWARD_WEBHOOK_SECRET is not set: webhook requests are not signed");
    }
    // A receiver must answer itself: a redirect could send signed events anywhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::unexpected(format!("cannot build the webhook client: {e}")))?;
    for url in urls {
        let hook =
            keyward_server::webhooks::Webhook::new(url, secret.clone().map(String::into_bytes)).map_err(usage)?;
        flows
            .engine()
            .subscribe(hook.subscriber(client.clone(), names))
            .map_err(|e| usage(e.to_string()))?;
    }
    Ok(())
}

/// The shortest signing secret accepted: an HMAC-SHA256 key should carry 256 bits.
pub(crate) const MIN_JWT_SECRET: usize = 32;

/// The secret that signs login tokens: the configured one (32 bytes at least), or else the one
/// this deployment's database holds, made by the first node that needed it — so every node
/// shares it and logins survive restarts.
pub(crate) async fn signing_secret(kw: &keyward::Keyward, configured: Option<String>) -> Result<Vec<u8>, Failure> {
    if let Some(s) = configured.filter(|s| !s.is_empty()) {
        if s.len() < MIN_JWT_SECRET {
            return Err(usage(format!(
                "KEYWARD_JWT_SECRET is {} bytes; it must be at least {MIN_JWT_SECRET} (e.g. `openssl rand -hex 32`), \
                 or leave it unset to use one generated into the database",
                s.len()
            )));
        }
        return Ok(s.into_bytes());
    }
    let mut bytes = [0u8; 32];
    keyward::Entropy::fill(&keyward::OsEntropy, &mut bytes).map_err(Error::from)?;
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let stored = kw.setting_or_insert("jwt_secret", &fresh).await?;
    Ok(stored.into_bytes())
}

/// Registers the configured webhooks, the key-on-user-created subscriber and the purge job,
/// refusing bad configuration before anything starts.
pub(crate) fn wire_events(flows: &Workflows, o: &EventOptions) -> Result<keyward_flow::DeliveryOptions, Failure> {
    let names = listed(&o.webhook_events);
    for name in &names {
        if *name != "*" && keyward::EventName::parse(name).is_none() {
            return Err(usage(format!(
                "unknown event name '{name}' in KEYWARD_WEBHOOK_EVENTS; known: *, {}",
                keyward::EventName::list()
            )));
        }
    }
    if !(o.event_retry_base.is_finite() && o.event_retry_base >= 0.01 && o.event_retry_base <= 3600.0) {
        return Err(usage(format!(
            "--event-retry-base must be between 0.01 and 3600 seconds, not {}",
            o.event_retry_base
        )));
    }
    subscribe_webhooks(flows, o, &names)?;
    if let Some(t) = o.key_on_user_created {
        flows
            .engine()
            .subscribe(keyward::builtins::key_on_user_created(flows, t.into()))
            .map_err(|e| usage(e.to_string()))?;
    }
    if let Some(days) = o.purge_revoked_after_days {
        let job = keyward::builtins::purge_revoked_keys(flows, days)?;
        flows.engine().schedule(job).map_err(|e| usage(e.to_string()))?;
    }
    if o.expiry_warning > 0 {
        let warning = std::time::Duration::from_secs(o.expiry_warning);
        let job = keyward::builtins::notify_api_key_expiry(flows, warning)?;
        flows.engine().schedule(job).map_err(|e| usage(e.to_string()))?;
    }
    Ok(keyward_flow::DeliveryOptions {
        backoff: std::time::Duration::from_secs_f64(o.event_retry_base),
        ..keyward_flow::DeliveryOptions::default()
    })
}

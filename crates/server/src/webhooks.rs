//! The built-in webhook subscriber: every event, as JSON, POSTed to each configured URL and
//! retried (by the event bus, with backoff) until the endpoint answers 2xx.
//!
//! Signature (Stripe's scheme, so existing verifiers fit): `keyward-signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256 of "<t>.<body>" under KEYWARD_WEBHOOK_SECRET>`. The timestamp is inside the
//! signed text, so a captured request cannot be replayed later with a fresh timestamp; receivers
//! should refuse old ones. `keyward-event-id` is stable across retries for de-duplication.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use keyward::Keyward;
use keyward_flow::{Event, StepError, Subscriber};
use sha2::Sha256;

/// A webhook endpoint as configured.
#[derive(Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.id())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Checks `url` is an absolute http(s) URL.
    pub fn new(url: &str, secret: Option<Vec<u8>>) -> Result<Self, String> {
        let parsed =
            reqwest::Url::parse(url.trim()).map_err(|e| format!("KEYWARD_WEBHOOK_URL '{url}' is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "KEYWARD_WEBHOOK_URL '{url}' must be an http:// or https:// URL"
            ));
        }
        Ok(Self {
            url: parsed,
            secret: secret.filter(|s| !s.is_empty()),
        })
    }

    /// The subscriber id: the endpoint without credentials or query (those may hold secrets).
    pub fn id(&self) -> String {
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        format!("webhook:{shown}")
    }

    /// The subscriber delivering every event (or those in `events`) to this endpoint.
    pub fn subscriber(&self, client: reqwest::Client, events: &[&str]) -> Subscriber<Keyward> {
        let hook = self.clone();
        Subscriber::new(self.id(), events, move |event: Event, _kw| {
            let (hook, client) = (hook.clone(), client.clone());
            async move { hook.post(&client, &event).await }
        })
        .timeout(Duration::from_secs(15))
    }

    async fn post(&self, client: &reqwest::Client, event: &Event) -> Result<(), StepError> {
        let body = serde_json::to_vec(event).map_err(StepError::from_error)?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut request = client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .header("keyward-event-id", &event.id)
            .header("keyward-event", &event.name)
            .timeout(Duration::from_secs(10));
        if let Some(secret) = &self.secret {
            request = request.header("keyward-signature", signature(secret, timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| StepError::new(format!("POST {}: {}", self.id(), without_url(&e))))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(StepError::new(format!("POST {} answered {status}", self.id())))
        }
    }
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256("<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// A reqwest error's text without the URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

//! The client's address. Behind a reverse proxy every request comes from the proxy, so when the
//! peer is one of `KEYWARD_TRUSTED_PROXIES` the client is the right-most address of the
//! `Forwarded` (or else `X-Forwarded-For`) chain that is not itself a trusted proxy; otherwise the
//! peer, and forwarding headers are ignored (anyone can send them).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::AppState;

/// An address block (kept in the module: keys' `allowed_ips` are blocks too).
pub use keyward::Cidr;

/// Parses a comma-separated list of blocks (`KEYWARD_TRUSTED_PROXIES`).
pub fn parse_list(items: &[String]) -> Result<Vec<Cidr>, String> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// Who sent a request, as far as the server can tell (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address the request is counted and logged under; `None` when the server was started
    /// without connect info (an embedding that calls `Router::into_make_service`).
    pub ip: Option<IpAddr>,
    /// Whether the TCP peer is a trusted proxy (so its `X-Forwarded-Proto` is believed).
    pub peer_trusted: bool,
}

/// One address of a `Forwarded: for=…` or `X-Forwarded-For` entry (quotes, brackets and a port
/// removed); `None` for `unknown` or an obfuscated name.
fn forwarded_addr(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

/// The forwarding chain, client first: `Forwarded`'s `for=` values, or else `X-Forwarded-For`.
fn chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                .map(|(_, v)| forwarded_addr(v))
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(forwarded_addr)
        .collect()
}

/// The client of a request from `peer`.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in chain(headers).into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            // An unparseable hop: nothing to its left can be trusted.
            None => return client,
        }
    }
    client
}

/// A request's client address: the [`ClientAddr`] keyward's front layer put there (which heeds
/// `KEYWARD_TRUSTED_PROXIES`), else the TCP peer when the service was served with connect info
/// (the tower layers in another app). `None` when neither is known: a key with `allowed_ips` is
/// then refused.
pub fn origin(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ClientAddr>()
        .and_then(|c| c.ip)
        .or_else(|| ext.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()))
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Middleware: puts the [`ClientAddr`] in the request's extensions.
pub async fn client_address<F, Fut>(state: &AppState, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if peer.is_none() && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "requests carry no client address (the router was served without connect info): \
             every login attempt shares one limit; serve it with into_make_service_with_connect_info"
        );
    }
    let client = peer.map(|p| client_of(p, req.headers(), &state.trusted_proxies));
    let trusted = peer.is_some_and(|p| state.trusted_proxies.iter().any(|c| c.contains(p)));
    req.extensions_mut().insert(ClientAddr {
        ip: client,
        peer_trusted: trusted,
    });
    // Every log line of the request names its client.
    let span = match client {
        Some(ip) => tracing::info_span!("client", client = %ip),
        None => tracing::info_span!("client", client = "unknown"),
    };
    tracing::Instrument::instrument(next(req), span).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_behind_a_trusted_peer() {
        let trusted = parse_list(&["10.0.0.0/8".into()]).unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &h, &trusted),
            ip("2.2.2.2"),
            "a client cannot claim 1.1.1.1"
        );
        assert_eq!(
            client_of(ip("9.9.9.9"), &h, &trusted),
            ip("9.9.9.9"),
            "an untrusted peer's header is ignored"
        );
        let f = headers(&[("forwarded", r#"for=3.3.3.3;proto=https, for="[2001:db8::7]:4711""#)]);
        assert_eq!(client_of(ip("10.0.0.1"), &f, &trusted), ip("2001:db8::7"));
        let none = headers(&[]);
        assert_eq!(client_of(ip("10.0.0.1"), &none, &trusted), ip("10.0.0.1"));
        let junk = headers(&[("x-forwarded-for", "4.4.4.4, junk, 10.0.0.9")]);
        assert_eq!(client_of(ip("10.0.0.1"), &junk, &trusted), ip("10.0.0.9"));
    }
}

//! The client's address. Behind a reverse proxy every request comes from the proxy, so when the
//! peer is one of `KEYWARD_TRUSTED_PROXIES` the client is the right-most address of one
//! forwarding header's chain that is not itself a trusted proxy; otherwise the peer, and
//! forwarding headers are ignored (anyone can send them).
//!
//! One header only: `X-Forwarded-For` unless `KEYWARD_CLIENT_HEADER` names `forwarded` or
//! `x-real-ip`. Never a mix: a proxy that appends to `X-Forwarded-For` passes a client's own
//! `Forwarded` header through untouched, so reading both would let the client choose.

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

/// The one header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx's `$proxy_add_x_forwarded_for`, most
    /// load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
    /// `X-Real-IP: client`, one address set by the proxy.
    XRealIp,
}

impl ClientHeader {
    pub const NAMES: &'static str = "x-forwarded-for, forwarded, x-real-ip";

    pub fn as_str(self) -> &'static str {
        match self {
            ClientHeader::XForwardedFor => "x-forwarded-for",
            ClientHeader::Forwarded => "forwarded",
            ClientHeader::XRealIp => "x-real-ip",
        }
    }
}

impl std::str::FromStr for ClientHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            ClientHeader::XForwardedFor,
            ClientHeader::Forwarded,
            ClientHeader::XRealIp,
        ]
        .into_iter()
        .find(|h| h.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("{s:?} is not one of {}", ClientHeader::NAMES))
    }
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

/// The forwarding chain of the one header `which`, client first.
fn chain(headers: &HeaderMap, which: ClientHeader) -> Vec<Option<IpAddr>> {
    let values = headers
        .get_all(which.as_str())
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Vec<_>>();
    // A value that is not text spoils the chain: nothing to its left can be read.
    if values.iter().any(Option::is_none) {
        return vec![None];
    }
    let elements = values.into_iter().flatten().flat_map(|v| v.split(','));
    match which {
        ClientHeader::Forwarded => elements
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| forwarded_addr(v))
            })
            .collect(),
        ClientHeader::XForwardedFor | ClientHeader::XRealIp => elements.map(forwarded_addr).collect(),
    }
}

/// The client of a request from `peer`, read from the header `which` when `peer` is trusted.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr], which: ClientHeader) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in chain(headers, which).into_iter().rev() {
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
    let client = peer.map(|p| client_of(p, req.headers(), &state.trusted_proxies, state.client_header));
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
        let xff = ClientHeader::XForwardedFor;
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &h, &trusted, xff),
            ip("2.2.2.2"),
            "a client cannot claim 1.1.1.1"
        );
        assert_eq!(
            client_of(ip("9.9.9.9"), &h, &trusted, xff),
            ip("9.9.9.9"),
            "an untrusted peer's header is ignored"
        );
        let f = headers(&[("forwarded", r#"for=3.3.3.3;proto=https, for="[2001:db8::7]:4711""#)]);
        let fwd = ClientHeader::Forwarded;
        assert_eq!(client_of(ip("10.0.0.1"), &f, &trusted, fwd), ip("2001:db8::7"));
        let none = headers(&[]);
        assert_eq!(client_of(ip("10.0.0.1"), &none, &trusted, xff), ip("10.0.0.1"));
        let junk = headers(&[("x-forwarded-for", "4.4.4.4, junk, 10.0.0.9")]);
        assert_eq!(client_of(ip("10.0.0.1"), &junk, &trusted, xff), ip("10.0.0.9"));
        let real = headers(&[("x-real-ip", "5.5.5.5"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &real, &trusted, ClientHeader::XRealIp),
            ip("5.5.5.5")
        );
    }

    #[test]
    fn a_client_sent_header_of_another_kind_is_never_read() {
        let trusted = parse_list(&["10.0.0.0/8".into()]).unwrap();
        // nginx appends the peer to X-Forwarded-For and passes the client's own Forwarded on.
        let h = headers(&[("forwarded", "for=192.0.2.1"), ("x-forwarded-for", "203.0.113.50")]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &h, &trusted, ClientHeader::XForwardedFor),
            ip("203.0.113.50")
        );
        assert_eq!(
            client_of(ip("10.0.0.1"), &h, &trusted, ClientHeader::Forwarded),
            ip("192.0.2.1"),
            "only when the operator names it"
        );
        assert_eq!("X-Real-IP".parse::<ClientHeader>().unwrap(), ClientHeader::XRealIp);
        assert!("via".parse::<ClientHeader>().is_err());
    }
}

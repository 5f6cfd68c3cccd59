//! What a key may carry beyond Medusa's fields: `permissions` (a restricted secret key), an
//! `allowed_ips` list, and `metadata`. A key without them behaves exactly as a Medusa key.
//!
//! The rules live here once: which permission grants which, whether one holder covers what
//! another asks for (nobody mints a key with more than it holds), whether an address is
//! allowed, and what metadata is acceptable.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One thing a restricted secret key may do: a resource and an access. keyward's own routes
/// need its own permissions; a key may also hold the embedder's own (`orders:read`), which
/// keyward's routes ignore and `/v1/keys/verify` and the tower layer check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// List and read keys.
    ApiKeysRead,
    /// Create, update, revoke, roll, delete keys and link their channels (and read them).
    ApiKeysWrite,
    SalesChannelsRead,
    SalesChannelsWrite,
    /// `POST /v1/keys/verify` only.
    KeysVerify,
    /// The activity views: workflow runs and events.
    WorkflowsRead,
    /// `GET /admin/users/me`.
    UsersRead,
    /// `GET /metrics`.
    MetricsRead,
    /// One of the embedder's own: `name:action`, checked by [`Permission::custom`].
    Custom(Arc<str>),
}

/// The longest custom permission name.
pub const MAX_PERMISSION_LEN: usize = 64;
/// The most permissions one key holds.
pub const MAX_PERMISSIONS: usize = 100;

/// The resources keyward's own permissions name: a custom permission may not borrow them (so a
/// typo like `api_keys:admin` is refused, not stored as a permission nothing checks).
const OWN_RESOURCES: [&str; 6] = ["api_keys", "sales_channels", "keys", "workflows", "users", "metrics"];

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::ApiKeysRead,
        Permission::ApiKeysWrite,
        Permission::SalesChannelsRead,
        Permission::SalesChannelsWrite,
        Permission::KeysVerify,
        Permission::WorkflowsRead,
        Permission::UsersRead,
        Permission::MetricsRead,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Permission::Custom(name) => name,
            Permission::ApiKeysRead => "api_keys:read",
            Permission::ApiKeysWrite => "api_keys:write",
            Permission::SalesChannelsRead => "sales_channels:read",
            Permission::SalesChannelsWrite => "sales_channels:write",
            Permission::KeysVerify => "keys:verify",
            Permission::WorkflowsRead => "workflows:read",
            Permission::UsersRead => "users:read",
            Permission::MetricsRead => "metrics:read",
        }
    }

    /// Whether holding `self` allows what `needed` allows: itself, and a write grants the read
    /// of its resource.
    pub fn grants(&self, needed: &Permission) -> bool {
        self == needed
            || matches!(
                (self, needed),
                (Permission::ApiKeysWrite, Permission::ApiKeysRead)
                    | (Permission::SalesChannelsWrite, Permission::SalesChannelsRead)
            )
    }

    /// keyward's own permissions' names, for messages and help texts.
    pub fn names() -> String {
        Permission::ALL
            .iter()
            .map(Permission::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A custom permission, checked: `name:action`, each part lower-case letters, digits or
    /// `_ . -`, at most 64 characters in all, not in one of keyward's own resources.
    pub fn custom(s: &str) -> Result<Self> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
        };
        let shaped = s.len() <= MAX_PERMISSION_LEN
            && s.split_once(':')
                .is_some_and(|(name, action)| part_ok(name) && part_ok(action));
        let own = s.split_once(':').is_some_and(|(name, _)| OWN_RESOURCES.contains(&name));
        if !shaped || own {
            return Err(Error::invalid_data(format!(
                "Unknown permission '{s}': expected one of {}, or one of your own as name:action \
                 (lower-case letters, digits, _ . -, at most {MAX_PERMISSION_LEN} characters)",
                Permission::names()
            )));
        }
        Ok(Permission::Custom(Arc::from(s)))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match Permission::ALL.into_iter().find(|p| p.as_str() == s) {
            Some(own) => Ok(own),
            None => Permission::custom(s),
        }
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: Error| serde::de::Error::custom(e.message))
    }
}

/// What a caller holds: everything (a user, an unrestricted secret key, custom permissions
/// included) or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds<'a> {
    Everything,
    Only(&'a [Permission]),
}

impl<'a> Holds<'a> {
    /// What a key's `permissions` field means: none is everything.
    pub fn of(permissions: Option<&'a [Permission]>) -> Self {
        permissions.map_or(Holds::Everything, Holds::Only)
    }

    pub fn allows(self, needed: &Permission) -> bool {
        match self {
            Holds::Everything => true,
            Holds::Only(held) => held.iter().any(|h| h.grants(needed)),
        }
    }

    /// Whether a key with `wanted` (none: unrestricted) would hold nothing beyond this.
    pub fn covers(self, wanted: Option<&[Permission]>) -> bool {
        match (self, wanted) {
            (Holds::Everything, _) => true,
            (Holds::Only(_), None) => false,
            (Holds::Only(_), Some(w)) => w.iter().all(|p| self.allows(p)),
        }
    }
}

/// A permission query: names joined by `AND` and `OR` (AND binds tighter), with parentheses:
/// `orders:read AND (orders:write OR refunds:write)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionQuery {
    One(Permission),
    All(Vec<PermissionQuery>),
    Any(Vec<PermissionQuery>),
}

/// The longest query text.
pub const MAX_QUERY_LEN: usize = 2_000;

impl PermissionQuery {
    /// Parses a query; a 400-style error names what is wrong and where.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_QUERY_LEN {
            return Err(Error::invalid_data(format!(
                "permissions takes a query of at most {MAX_QUERY_LEN} characters, but got {}",
                text.len()
            )));
        }
        let spaced = text.replace('(', " ( ").replace(')', " ) ");
        let words: Vec<&str> = spaced.split_whitespace().collect();
        let mut at = 0;
        let query = Self::any(&words, &mut at, 0)?;
        match words.get(at) {
            None => Ok(query),
            Some(w) => Err(query_error(format!("unexpected '{w}'"))),
        }
    }

    /// Terms joined by `OR`, each a conjunction.
    fn any(words: &[&str], at: &mut usize, depth: usize) -> Result<Self> {
        Self::joined(words, at, depth, "OR", Self::all, PermissionQuery::Any)
    }

    /// Factors joined by `AND`, each a name or a parenthesised query.
    fn all(words: &[&str], at: &mut usize, depth: usize) -> Result<Self> {
        Self::joined(words, at, depth, "AND", Self::one, PermissionQuery::All)
    }

    /// Operands joined by the word `op`, each read by `operand`; one operand stands alone.
    fn joined(
        words: &[&str],
        at: &mut usize,
        depth: usize,
        op: &str,
        operand: fn(&[&str], &mut usize, usize) -> Result<Self>,
        wrap: fn(Vec<Self>) -> Self,
    ) -> Result<Self> {
        let mut items = vec![operand(words, at, depth)?];
        while words.get(*at).is_some_and(|w| w.eq_ignore_ascii_case(op)) {
            *at += 1;
            items.push(operand(words, at, depth)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { wrap(items) })
    }

    fn one(words: &[&str], at: &mut usize, depth: usize) -> Result<Self> {
        const MAX_DEPTH: usize = 16;
        let word = words
            .get(*at)
            .ok_or_else(|| query_error("a permission is missing at the end".to_owned()))?;
        *at += 1;
        match *word {
            "(" if depth >= MAX_DEPTH => Err(query_error(format!("parentheses nest at most {MAX_DEPTH} deep"))),
            "(" => {
                let inner = Self::any(words, at, depth + 1)?;
                match words.get(*at) {
                    Some(&")") => {
                        *at += 1;
                        Ok(inner)
                    }
                    _ => Err(query_error("a '(' is not closed".to_owned())),
                }
            }
            w if w == ")" || w.eq_ignore_ascii_case("AND") || w.eq_ignore_ascii_case("OR") => {
                Err(query_error(format!("expected a permission, but got '{w}'")))
            }
            name => name.parse().map(PermissionQuery::One),
        }
    }

    /// Whether a holder of `holds` satisfies the query.
    pub fn satisfied_by(&self, holds: Holds<'_>) -> bool {
        match self {
            PermissionQuery::One(p) => holds.allows(p),
            PermissionQuery::All(q) => q.iter().all(|q| q.satisfied_by(holds)),
            PermissionQuery::Any(q) => q.iter().any(|q| q.satisfied_by(holds)),
        }
    }
}

fn query_error(what: String) -> Error {
    Error::invalid_data(format!(
        "permissions must be a query like 'a:read AND (b:write OR c:write)': {what}"
    ))
}

impl fmt::Display for PermissionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |f: &mut fmt::Formatter<'_>, qs: &[PermissionQuery], op: &str| -> fmt::Result {
            f.write_str("(")?;
            for (i, q) in qs.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{q}")?;
            }
            f.write_str(")")
        };
        match self {
            PermissionQuery::One(p) => f.write_str(p.as_str()),
            PermissionQuery::All(q) => joined(f, q, "AND"),
            PermissionQuery::Any(q) => joined(f, q, "OR"),
        }
    }
}

/// A restricted key's permissions, checked: at least one, at most [`MAX_PERMISSIONS`], each
/// named once, in a fixed order (keyward's own first).
pub fn checked_permissions(mut permissions: Vec<Permission>) -> Result<Vec<Permission>> {
    if permissions.is_empty() {
        return Err(Error::invalid_data(format!(
            "permissions must name at least one of {}; leave the field out for an unrestricted key",
            Permission::names()
        )));
    }
    permissions.sort();
    permissions.dedup();
    if permissions.len() > MAX_PERMISSIONS {
        return Err(Error::invalid_data(format!(
            "permissions holds at most {MAX_PERMISSIONS}, but got {}",
            permissions.len()
        )));
    }
    Ok(permissions)
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address. Kept in one form: host bits
/// cleared (`10.1.2.3/8` is `10.0.0.0/8`), and an IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`)
/// as the IPv4 block it is; an IPv4-mapped IPv6 address is matched as the IPv4 address it
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an address or CIDR block (like 10.0.0.0/8 or 2001:db8::/32)");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        let (net, len) = match net {
            IpAddr::V6(v6) if len >= 96 => v6.to_ipv4_mapped().map_or((net, len), |v4| (IpAddr::V4(v4), len - 96)),
            other => (other, len),
        };
        Ok(Self {
            net: masked(net, len),
            len,
        })
    }

    /// Whether every address of `inner` lies inside this block.
    pub fn covers(&self, inner: &Cidr) -> bool {
        self.len <= inner.len && self.net.is_ipv4() == inner.net.is_ipv4() && self.contains(inner.net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.len),
            _ => false,
        }
    }
}

/// `ip` with every bit past the first `len` cleared.
fn masked(ip: IpAddr, len: u8) -> IpAddr {
    let keep = |bits: u32, len: u8| -> u128 {
        match u32::from(len) {
            0 => 0,
            l if l >= bits => u128::MAX,
            l => !((1u128 << (bits - l)) - 1),
        }
    };
    match ip {
        IpAddr::V4(v4) => {
            let mask = keep(32, len) as u32;
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & keep(128, len))),
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (full, rest) = (usize::from(bits / 8), bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        (a[full] & mask) == (b[full] & mask)
    }
}

impl fmt::Display for Cidr {
    /// `net/len`, the form it is stored and answered in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The most blocks one key's `allowed_ips` holds.
pub const MAX_ALLOWED_IPS: usize = 100;

/// An `allowed_ips` list, checked: one block at least (leave it out to allow every address),
/// at most [`MAX_ALLOWED_IPS`].
pub fn checked_allowed_ips(blocks: Vec<Cidr>) -> Result<Vec<Cidr>> {
    if blocks.is_empty() {
        return Err(Error::invalid_data(
            "allowed_ips must name at least one address or block; leave it out (or set it to null) to allow every address",
        ));
    }
    if blocks.len() > MAX_ALLOWED_IPS {
        return Err(Error::invalid_data(format!(
            "allowed_ips holds at most {MAX_ALLOWED_IPS} blocks, but got {}",
            blocks.len()
        )));
    }
    Ok(blocks)
}

/// Whether a request from `origin` may use a key with this `allowed_ips`. A key without a list
/// is allowed from anywhere; a key with one only from a known address inside it.
pub fn origin_allowed(allowed: Option<&[Cidr]>, origin: Option<IpAddr>) -> bool {
    match allowed {
        None => true,
        Some(blocks) => origin.is_some_and(|ip| blocks.iter().any(|b| b.contains(ip))),
    }
}

/// The longest key title and sales-channel name, in characters.
pub const MAX_NAME_CHARS: usize = 1_000;
/// The longest sales-channel description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// Refuses a text `field` longer than `max` characters.
pub fn check_length(field: &str, text: &str, max: usize) -> Result<()> {
    let n = text.chars().count();
    if n > max {
        return Err(Error::invalid_data(format!(
            "{field} holds at most {max} characters, but got {n}"
        )));
    }
    Ok(())
}

/// A sales channel's metadata, checked as a key's; `null` clears it, anything but an object is
/// refused.
pub fn check_metadata_value(metadata: Option<&serde_json::Value>) -> Result<()> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(m)) => check_metadata(m),
        Some(_) => Err(Error::invalid_data("metadata must be a JSON object")),
    }
}

/// A key's metadata: a JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// The most top-level keys metadata holds.
pub const MAX_METADATA_KEYS: usize = 50;
/// The longest name of a metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 40;
/// The most bytes metadata takes as JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Metadata, checked: at most 50 keys, each 1–40 letters, digits or `_ - . :`, and 4 KiB of
/// JSON in all. The names are limited so every key can be filtered on (`metadata[plan]=pro`).
pub fn check_metadata(metadata: &Metadata) -> Result<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid_data(format!(
            "metadata holds at most {MAX_METADATA_KEYS} keys, but got {}",
            metadata.len()
        )));
    }
    if let Some(name) = metadata.keys().find(|k| !metadata_key_ok(k)) {
        return Err(Error::invalid_data(format!(
            "metadata key {name:?} must be 1 to {MAX_METADATA_KEY_LEN} letters, digits or _ - . :"
        )));
    }
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if size > MAX_METADATA_BYTES {
        return Err(Error::invalid_data(format!(
            "metadata takes at most {MAX_METADATA_BYTES} bytes as JSON, but got {size}"
        )));
    }
    Ok(())
}

/// Whether `name` can be a metadata key (and so a filter's).
pub fn metadata_key_ok(name: &str) -> bool {
    (1..=MAX_METADATA_KEY_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_write_grants_its_read_and_nothing_else() {
        use Permission::*;
        assert!(ApiKeysWrite.grants(&ApiKeysRead));
        assert!(!ApiKeysRead.grants(&ApiKeysWrite));
        assert!(!ApiKeysWrite.grants(&SalesChannelsRead));
        let held = Holds::Only(&[ApiKeysWrite]);
        assert!(held.covers(Some(&[ApiKeysRead, ApiKeysWrite])));
        assert!(!held.covers(Some(&[KeysVerify])));
        assert!(
            !held.covers(None),
            "a restricted holder cannot mint an unrestricted key"
        );
        assert!(Holds::Everything.covers(None));
    }

    #[test]
    fn permissions_parse_by_name_and_refuse_unknown_ones() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        let err = "api_keys:admin".parse::<Permission>().unwrap_err();
        assert!(
            err.message.starts_with("Unknown permission 'api_keys:admin'"),
            "{}",
            err.message
        );
        assert!(checked_permissions(vec![]).is_err());
        let checked = checked_permissions(vec![
            Permission::KeysVerify,
            Permission::ApiKeysRead,
            Permission::KeysVerify,
        ]);
        assert_eq!(checked.unwrap(), vec![Permission::ApiKeysRead, Permission::KeysVerify]);
    }

    #[test]
    fn custom_permissions_are_names_of_their_own() {
        let p: Permission = "orders:read".parse().unwrap();
        assert_eq!((p.as_str(), matches!(p, Permission::Custom(_))), ("orders:read", true));
        for bad in [
            "orders",
            "Orders:read",
            "orders:",
            ":read",
            "a:b:c d",
            "api_keys:admin",
            &"x".repeat(60),
            "ord ers:read",
        ] {
            let bad = if bad.len() == 60 {
                format!("{bad}:read")
            } else {
                bad.to_owned()
            };
            let e = bad.parse::<Permission>().unwrap_err();
            assert!(
                e.message.starts_with(&format!("Unknown permission '{bad}'")),
                "{}",
                e.message
            );
        }
        assert!("a.b-c_d:e.f-g_1".parse::<Permission>().is_ok());
        let many: Vec<Permission> = (0..101).map(|i| format!("p{i}:x").parse().unwrap()).collect();
        assert!(checked_permissions(many).unwrap_err().message.contains("at most 100"));
        let held = [Permission::ApiKeysWrite, "orders:read".parse().unwrap()];
        assert!(Holds::Only(&held).allows(&"orders:read".parse().unwrap()));
        assert!(!Holds::Only(&held).allows(&"orders:write".parse().unwrap()));
    }

    #[test]
    fn permission_queries_parse_and_evaluate() {
        let q = PermissionQuery::parse("orders:read AND (orders:write OR refunds:write)").unwrap();
        assert_eq!(q.to_string(), "(orders:read AND (orders:write OR refunds:write))");
        let p = |s: &str| s.parse::<Permission>().unwrap();
        assert!(q.satisfied_by(Holds::Only(&[p("orders:read"), p("refunds:write")])));
        assert!(!q.satisfied_by(Holds::Only(&[p("orders:read")])));
        assert!(!q.satisfied_by(Holds::Only(&[p("orders:write"), p("refunds:write")])));
        assert!(
            q.satisfied_by(Holds::Everything),
            "an unrestricted key holds everything"
        );
        // AND binds tighter than OR; words in any case.
        let q = PermissionQuery::parse("a:x or b:y and c:z").unwrap();
        assert!(q.satisfied_by(Holds::Only(&[p("a:x")])));
        assert!(!q.satisfied_by(Holds::Only(&[p("b:y")])));
        assert!(
            PermissionQuery::parse("api_keys:write")
                .unwrap()
                .satisfied_by(Holds::Only(&[Permission::ApiKeysWrite]))
        );
        assert!(
            PermissionQuery::parse("api_keys:read")
                .unwrap()
                .satisfied_by(Holds::Only(&[Permission::ApiKeysWrite]))
        );
        for bad in [
            "",
            "a:x AND",
            "(a:x",
            "a:x)",
            "AND a:x",
            "a:x b:y",
            "a:x OR OR b:y",
            "()",
            "nope",
        ] {
            assert!(PermissionQuery::parse(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}a:x{}", "(".repeat(40), ")".repeat(40));
        assert!(
            PermissionQuery::parse(&deep)
                .unwrap_err()
                .message
                .contains("nest at most")
        );
        assert!(
            PermissionQuery::parse(&"a:x OR ".repeat(400))
                .unwrap_err()
                .message
                .contains("at most 2000")
        );
    }

    #[test]
    fn blocks_parse_contain_and_print() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let v6 = Cidr::parse("2001:db8::/33").unwrap();
        assert!(v6.contains(ip("2001:db8:7fff::1")) && !v6.contains(ip("2001:db8:8000::1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert_eq!(Cidr::parse("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let wide = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(wide.covers(&c) && !c.covers(&wide) && wide.covers(&wide));
        assert!(wide.covers(&Cidr::parse("::ffff:10.9.0.0/112").unwrap()));
        // One form: host bits cleared, IPv4-mapped blocks as IPv4 (so they match IPv4 clients).
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::ffff:127.0.0.1/104").unwrap().to_string(), "127.0.0.0/8");
        assert!(Cidr::parse("::ffff:127.0.0.0/104").unwrap().contains(ip("127.0.0.1")));
        assert!(
            Cidr::parse("::ffff:127.0.0.0/104")
                .unwrap()
                .contains(ip("::ffff:127.0.0.1"))
        );
        assert_eq!(Cidr::parse("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Cidr::parse("1.2.3.4/0").unwrap().to_string(), "0.0.0.0/0");
        assert!(!wide.covers(&Cidr::parse("::/0").unwrap()) && !v6.covers(&wide));
        let list = [Cidr::parse("192.0.2.0/24").unwrap()];
        assert!(origin_allowed(Some(&list), Some(ip("192.0.2.7"))));
        assert!(!origin_allowed(Some(&list), Some(ip("198.51.100.1"))));
        assert!(!origin_allowed(Some(&list), None), "an unknown origin is refused");
        assert!(origin_allowed(None, None));
    }

    #[test]
    fn metadata_is_bounded_in_keys_names_and_size() {
        let mut m = Metadata::new();
        m.insert("plan".into(), "pro".into());
        assert!(check_metadata(&m).is_ok());
        m.insert("bad name".into(), 1.into());
        assert!(check_metadata(&m).unwrap_err().message.contains("\"bad name\""));
        let many: Metadata = (0..51).map(|i| (format!("k{i}"), 1.into())).collect();
        assert!(check_metadata(&many).unwrap_err().message.contains("at most 50 keys"));
        let mut big = Metadata::new();
        big.insert("blob".into(), "x".repeat(5000).into());
        assert!(check_metadata(&big).unwrap_err().message.contains("at most 4096 bytes"));
    }
}

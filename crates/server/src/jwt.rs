//! HS256 JSON Web Tokens, the admin login token. Written out here (HMAC-SHA256 over
//! base64url parts) because keyward needs exactly one algorithm, and a general JWT library would
//! bring algorithm negotiation we must then disable.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a login token lasts, as Medusa's: one day.
pub const TOKEN_TTL_SECONDS: i64 = 86_400;

/// Who issues login tokens, and for whom they are: a token of this shape signed for anything
/// else (another service sharing the secret) is refused.
pub const ISSUER: &str = "keyward";
pub const AUDIENCE: &str = "keyward-admin";

/// Signs and checks login tokens with one secret.
pub struct Jwt {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jwt(***)")
    }
}

impl Jwt {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self { secret: secret.into() }
    }

    fn mac(&self) -> Option<HmacSha256> {
        HmacSha256::new_from_slice(&self.secret).ok()
    }

    /// A device cookie's value for a device that signed in as `email`: `nonce.signature`, the
    /// signature binding the nonce to the email (lower-cased).
    pub fn device_cookie(&self, email: &str, nonce: &str) -> Option<String> {
        let mut mac = self.mac()?;
        mac.update(device_input(email, nonce).as_bytes());
        Some(format!(
            "{nonce}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        ))
    }

    /// The nonce of a device cookie this secret signed for `email`; `None` for any other value.
    pub fn device_of<'a>(&self, cookie: &'a str, email: &str) -> Option<&'a str> {
        let (nonce, sig) = cookie.split_once('.')?;
        let mut mac = self.mac()?;
        mac.update(device_input(email, nonce).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).ok()?).ok()?;
        Some(nonce)
    }

    /// `header.payload.signature` for these claims.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac()?;
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Some(format!("{signing_input}.{sig}"))
    }

    /// The claims of a token this secret signed (HS256 only) that has not expired at `now`.
    pub fn verify(&self, token: &str, now_seconds: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (header, payload, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "HS256" {
            return None;
        }
        let mut mac = self.mac()?;
        mac.update(token_prefix(token)?.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).ok()?).ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if claims.get("exp")?.as_i64()? <= now_seconds {
            return None;
        }
        if claims.get("iss")?.as_str()? != ISSUER || claims.get("aud")?.as_str()? != AUDIENCE {
            return None;
        }
        Some(claims)
    }

    /// A login token for a user's session `sid`, with Medusa's claims.
    pub fn user_token(&self, user_id: &str, sid: &str, now_seconds: i64) -> Option<String> {
        self.sign(&json!({
            "actor_id": user_id,
            "sid": sid,
            "actor_type": "user",
            "auth_identity_id": format!("authid_{}", user_id.trim_start_matches("user_")),
            "auth_provider": "emailpass",
            "mfa_enabled": false,
            "mfa_challenge_completed_at": null,
            "app_metadata": {"user_id": user_id},
            "user_metadata": {},
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now_seconds,
            "exp": now_seconds + TOKEN_TTL_SECONDS,
        }))
    }
}

/// `header.payload` of a token.
fn token_prefix(token: &str) -> Option<&str> {
    token.rfind('.').map(|i| &token[..i])
}

/// What a device cookie signs: its purpose, the email and the nonce (a login token's signing
/// input never has this shape, so one cannot stand for the other).
fn device_input(email: &str, nonce: &str) -> String {
    format!("keyward-device|{}|{nonce}", email.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let jwt = Jwt::new("secret");
        let t = jwt.user_token("user_1", "sess_1", 1000).unwrap();
        let claims = jwt.verify(&t, 1001).unwrap();
        assert_eq!(claims["actor_id"], "user_1");
        assert!(jwt.verify(&t, 1000 + TOKEN_TTL_SECONDS).is_none());
    }

    #[test]
    fn a_device_cookie_stands_for_its_email_and_secret_only() {
        let jwt = Jwt::new("secret");
        let cookie = jwt.device_cookie("Owner@Example.com", "n0nce").unwrap();
        assert_eq!(jwt.device_of(&cookie, "owner@example.com"), Some("n0nce"));
        assert_eq!(jwt.device_of(&cookie, "other@example.com"), None);
        assert_eq!(Jwt::new("other").device_of(&cookie, "owner@example.com"), None);
        assert_eq!(
            jwt.device_of(&cookie.replace("n0nce", "n1nce"), "owner@example.com"),
            None
        );
        assert_eq!(jwt.device_of("garbage", "owner@example.com"), None);
    }

    #[test]
    fn a_token_from_another_secret_or_tampered_is_refused() {
        let t = Jwt::new("a").user_token("user_1", "sess_1", 0).unwrap();
        assert!(Jwt::new("b").verify(&t, 1).is_none());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(br#"{"actor_id":"user_2","exp":99999999999,"iss":"keyward","aud":"keyward-admin"}"#);
        parts[1] = &forged;
        assert!(Jwt::new("a").verify(&parts.join("."), 1).is_none());
        let none_alg = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), parts[1]);
        assert!(Jwt::new("a").verify(&none_alg, 1).is_none());
        let foreign =
            Jwt::new("a").sign(&json!({"actor_id": "user_1", "exp": 99, "iss": "other", "aud": "keyward-admin"}));
        assert!(Jwt::new("a").verify(&foreign.unwrap(), 1).is_none(), "another issuer");
        let no_aud = Jwt::new("a").sign(&json!({"actor_id": "user_1", "exp": 99, "iss": "keyward"}));
        assert!(Jwt::new("a").verify(&no_aud.unwrap(), 1).is_none(), "no audience");
        for garbage in ["", ".", "..", "a.b.c", "a.b.c.d"] {
            assert!(Jwt::new("a").verify(garbage, 1).is_none());
        }
    }
}

//! Who is acting, and what they may do: the one place keyward decides access to keys.
//!
//! Every write through [`crate::Workflows`] names its [`Actor`]: a signed-in user, a secret key
//! (with what it holds: permissions, allowed addresses, expiry), or the system (jobs, the CLI
//! working on the database, an embedder acting for itself). The workflows check the rules below
//! in their planning steps, against the keys as they read them, so a route, a CLI command and a
//! Rust caller get the same answer.
//!
//! The rules, for a key acting (users and the system are not constrained by them):
//! - it needs the permission of the verb (`api_keys:write` to change keys,
//!   `sales_channels:write` to change channels);
//! - a restricted key changes only keys its access covers: publishable keys, and restricted
//!   keys whose permissions it holds; unrestricted secret keys are changed only by users and
//!   unrestricted keys;
//! - no key makes a secret key (creating, updating or rolling it, its own record included) hold
//!   more than it holds itself: permissions it lacks, addresses outside its own `allowed_ips`,
//!   or an expiry later than its own.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ApiKeyId;
use crate::model::{ApiKey, ApiKeyType, KeyPolicy};
use crate::policy::{Cidr, Holds, Permission};
use crate::time::Timestamp;

/// Who makes a change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// keyward itself or its operator: jobs, subscribers, the CLI on the database, an embedder
    /// acting for itself. Records whatever `created_by`/`revoked_by` the change names.
    #[default]
    System,
    /// A signed-in user (`user_…`).
    User { id: String },
    /// A secret key, with what it holds.
    Key(KeyActor),
}

/// A secret key acting, as it verified: what it holds bounds what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyActor {
    pub id: ApiKeyId,
    /// A restricted key's permissions; none is everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<Permission>>,
    /// The addresses it works from; none is everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<Cidr>>,
    /// When it stops working; none is never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl Actor {
    /// A signed-in user.
    pub fn user(id: impl Into<String>) -> Self {
        Actor::User { id: id.into() }
    }

    /// A secret key acting with everything it holds. A revocation it awaits ends it as an
    /// expiry would, so it bounds what the key makes the same way.
    pub fn key(key: &ApiKey) -> Self {
        let ends = match (key.expires_at, key.revoked_at) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        };
        Actor::Key(KeyActor {
            id: key.id.clone(),
            permissions: key.policy.permissions.clone(),
            allowed_ips: key.policy.allowed_ips.clone(),
            expires_at: ends,
        })
    }

    /// The id a change records as its author (`created_by`, `revoked_by`): the user's or the
    /// key's own, or, for the system, the name the change gave.
    pub fn recorded_as<'a>(&'a self, given: &'a str) -> &'a str {
        match self {
            Actor::System => given,
            Actor::User { id } => id,
            Actor::Key(k) => k.id.as_str(),
        }
    }

    /// The user's or key's id; none for the system.
    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::System => None,
            Actor::User { id } => Some(id),
            Actor::Key(k) => Some(k.id.as_str()),
        }
    }

    /// The acting key, if a key acts.
    pub fn as_key(&self) -> Option<&KeyActor> {
        match self {
            Actor::Key(k) => Some(k),
            _ => None,
        }
    }

    /// What the actor holds: everything, unless it is a restricted key.
    pub fn holds(&self) -> Holds<'_> {
        Holds::of(self.as_key().and_then(|k| k.permissions.as_deref()))
    }

    /// Refuses unless the actor holds `needed`.
    pub fn require(&self, needed: Permission) -> Result<()> {
        if self.holds().allows(&needed) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "This API key does not have the permission {needed}; it holds {}",
            list(self.as_key().and_then(|k| k.permissions.as_deref()).unwrap_or_default())
        )))
    }

    /// Refuses unless the actor may change `target` at all (update, roll, revoke, delete, link
    /// channels): a restricted key changes only publishable keys and restricted keys whose
    /// permissions it holds.
    pub fn may_change(&self, target: &ApiKey) -> Result<()> {
        let Some(KeyActor {
            permissions: Some(own), ..
        }) = self.as_key()
        else {
            return Ok(());
        };
        let theirs = target.policy.permissions.as_deref();
        if target.key_type == ApiKeyType::Publishable || Holds::Only(own).covers(theirs) {
            return Ok(());
        }
        Err(Error::forbidden(match theirs {
            None => format!(
                "API key {} is an unrestricted secret key; only users and unrestricted keys change it",
                target.id
            ),
            Some(theirs) => format!(
                "API key {} holds {}, which is wider than this key's {}",
                target.id,
                list(theirs),
                list(own)
            ),
        }))
    }

    /// Refuses a revocation by a key that would move `target`'s scheduled revocation later (or
    /// revive it): a key may bring a revocation forward, never postpone one, its own included.
    /// Users and the system set the instant as they choose.
    pub fn may_revoke_at(&self, target: &ApiKey, at: Timestamp) -> Result<()> {
        match (self.as_key(), target.revoked_at) {
            (Some(_), Some(scheduled)) if at > scheduled => Err(Error::forbidden(format!(
                "API key {} is to be revoked at {scheduled}; a key may bring a revocation forward, not postpone it",
                target.id
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses unless a secret key holding `policy` and expiring at `expires_at` would hold
    /// nothing beyond the actor: the bound of every create, update and roll a key makes.
    pub fn may_grant(&self, policy: &KeyPolicy, expires_at: Option<Timestamp>) -> Result<()> {
        let Some(k) = self.as_key() else { return Ok(()) };
        self.may_grant_permissions(policy.permissions.as_deref())?;
        k.may_grant_ips(policy.allowed_ips.as_deref())?;
        k.may_grant_expiry(expires_at)
    }

    /// The permissions part of [`Actor::may_grant`] (none: an unrestricted key).
    pub fn may_grant_permissions(&self, wanted: Option<&[Permission]>) -> Result<()> {
        let Some(own) = self.as_key().and_then(|k| k.permissions.as_deref()) else {
            return Ok(());
        };
        if Holds::Only(own).covers(wanted) {
            return Ok(());
        }
        let lacking = match wanted {
            None => "(all)".to_owned(),
            Some(w) => w
                .iter()
                .filter(|p| !Holds::Only(own).allows(p))
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        Err(wider("permissions", &lacking, &list(own)))
    }
}

impl KeyActor {
    /// Every block of `wanted` (none: every address) lies inside one of the key's own.
    fn may_grant_ips(&self, wanted: Option<&[Cidr]>) -> Result<()> {
        let Some(own) = self.allowed_ips.as_deref() else {
            return Ok(());
        };
        let own_list = || own.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ");
        match wanted {
            None => Err(wider("allowed_ips", "(every address)", &own_list())),
            Some(w) => match w.iter().find(|b| !own.iter().any(|o| o.covers(b))) {
                None => Ok(()),
                Some(outside) => Err(wider("allowed_ips", &outside.to_string(), &own_list())),
            },
        }
    }

    /// `wanted` (none: never) comes no later than the key's own expiry.
    fn may_grant_expiry(&self, wanted: Option<Timestamp>) -> Result<()> {
        let Some(own) = self.expires_at else { return Ok(()) };
        match wanted {
            Some(at) if at <= own => Ok(()),
            Some(at) => Err(Error::forbidden(format!(
                "expires_at {at} is later than this key's expiry {own}"
            ))),
            None => Err(Error::forbidden(format!(
                "expires_at (never) is later than this key's expiry {own}"
            ))),
        }
    }
}

fn wider(field: &str, wanted: &str, own: &str) -> Error {
    Error::forbidden(format!("{field} {wanted} is wider than this key's {own}"))
}

fn list(permissions: &[Permission]) -> String {
    permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::User { id } => f.write_str(id),
            Actor::Key(k) => f.write_str(k.id.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key_actor(permissions: Option<Vec<Permission>>, ips: Option<&[&str]>, expires_at: Option<i64>) -> Actor {
        Actor::Key(KeyActor {
            id: ApiKeyId::parse("apk_01ACTOR").unwrap(),
            permissions,
            allowed_ips: ips.map(|l| l.iter().map(|s| Cidr::parse(s).unwrap()).collect()),
            expires_at: expires_at.and_then(Timestamp::from_millis),
        })
    }

    fn blocks(l: &[&str]) -> Vec<Cidr> {
        l.iter().map(|s| Cidr::parse(s).unwrap()).collect()
    }

    #[test]
    fn a_fenced_key_grants_only_inside_its_fence() {
        let a = key_actor(None, Some(&["10.0.0.0/8"]), Some(1_000));
        let within = KeyPolicy {
            allowed_ips: Some(blocks(&["10.1.0.0/16"])),
            ..KeyPolicy::default()
        };
        assert!(a.may_grant(&within, Timestamp::from_millis(999)).is_ok());
        let e = a
            .may_grant(&KeyPolicy::default(), Timestamp::from_millis(999))
            .unwrap_err();
        assert_eq!(
            e.message,
            "allowed_ips (every address) is wider than this key's 10.0.0.0/8"
        );
        let wide = KeyPolicy {
            allowed_ips: Some(blocks(&["0.0.0.0/0"])),
            ..KeyPolicy::default()
        };
        let e = a.may_grant(&wide, Timestamp::from_millis(999)).unwrap_err();
        assert_eq!(e.message, "allowed_ips 0.0.0.0/0 is wider than this key's 10.0.0.0/8");
        let e = a.may_grant(&within, None).unwrap_err();
        assert!(e.message.starts_with("expires_at (never) is later"), "{}", e.message);
        assert!(a.may_grant(&within, Timestamp::from_millis(1_001)).is_err());
        assert!(Actor::System.may_grant(&KeyPolicy::default(), None).is_ok());
        assert!(Actor::user("user_1").may_grant(&KeyPolicy::default(), None).is_ok());
    }

    #[test]
    fn a_restricted_key_grants_and_changes_only_what_it_holds() {
        use Permission::*;
        let a = key_actor(Some(vec![ApiKeysWrite, KeysVerify]), None, None);
        assert!(a.may_grant_permissions(Some(&[ApiKeysRead, KeysVerify])).is_ok());
        let e = a.may_grant_permissions(None).unwrap_err();
        assert_eq!(
            e.message,
            "permissions (all) is wider than this key's api_keys:write, keys:verify"
        );
        let e = a.may_grant_permissions(Some(&[KeysVerify, WorkflowsRead])).unwrap_err();
        assert_eq!(
            e.message,
            "permissions workflows:read is wider than this key's api_keys:write, keys:verify"
        );
        assert!(a.require(ApiKeysRead).is_ok());
        assert!(a.require(SalesChannelsWrite).is_err());
    }
}

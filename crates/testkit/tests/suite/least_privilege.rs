//! Rule 2 of least privilege as a property, through the real workflows on a SQLite file: random
//! acting keys (restricted or not, fenced or not, expiring or not) send random requests on every
//! verb (create, update, roll, revoke, delete, link) — at other keys and at their own record — and
//! whatever the module accepts is never wider than its actor. The containment checks here are
//! the test's own (address ranges as numbers), not the module's.
//!
//! `KEYWARD_PROPTEST_CASES` sets the number of cases (default 256).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward::{
    Actor, ApiKey, ApiKeyType, Cidr, CreateApiKey, CreateSalesChannel, ErrorKind, KeyPolicy, Permission, RevokeApiKey,
    UpdateApiKey,
};
use keyward_testkit::Harness;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const BLOCKS: [&str; 9] = [
    "127.0.0.1/32",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "::1/128",
    "2001:db8::/32",
];

/// A block as the test reads it: family and the first and last address as numbers.
fn range(block: &str) -> (bool, u128, u128) {
    let (addr, len) = block.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let (v4, n, bits) = match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (false, u128::from(a), 128),
    };
    let host = bits - len;
    let mask = if host == 128 { u128::MAX } else { (1u128 << host) - 1 };
    (v4, n & !mask, (n & !mask) | mask)
}

fn inside(inner: &Cidr, outer: &[Cidr]) -> bool {
    let (f, lo, hi) = range(&inner.to_string());
    outer.iter().any(|o| {
        let (of, olo, ohi) = range(&o.to_string());
        f == of && olo <= lo && hi <= ohi
    })
}

/// What holding `held` allows, by the documented table: itself, and a write its read.
fn allowed(held: &[Permission], p: &Permission) -> bool {
    use Permission::*;
    held.iter().any(|h| {
        h == p
            || matches!(
                (h, p),
                (ApiKeysWrite, ApiKeysRead) | (SalesChannelsWrite, SalesChannelsRead)
            )
    })
}

/// Whether a secret key with `policy` and `expires_at` holds nothing beyond `actor`.
fn within(actor: &ApiKey, key: &ApiKey) -> Result<(), String> {
    if let Some(own) = &actor.policy.permissions {
        match &key.policy.permissions {
            None => return Err("an unrestricted key from a restricted actor".into()),
            Some(p) if !p.iter().all(|p| allowed(own, p)) => return Err(format!("permissions {p:?} beyond {own:?}")),
            _ => {}
        }
    }
    if let Some(own) = &actor.policy.allowed_ips {
        match &key.policy.allowed_ips {
            None => return Err("an unfenced key from a fenced actor".into()),
            Some(b) if !b.iter().all(|b| inside(b, own)) => return Err(format!("blocks {b:?} beyond {own:?}")),
            _ => {}
        }
    }
    if let Some(own) = actor.expires_at {
        match key.expires_at {
            None => return Err("a key that never expires from an expiring actor".into()),
            Some(at) if at > own => return Err(format!("expiry {at} after {own}")),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a restricted actor may reach `target` at all.
fn covers(actor: &ApiKey, target: &ApiKey) -> bool {
    match (&actor.policy.permissions, target.key_type, &target.policy.permissions) {
        (None, _, _) | (_, ApiKeyType::Publishable, _) => true,
        (Some(_), _, None) => false,
        (Some(own), _, Some(theirs)) => theirs.iter().all(|p| allowed(own, p)),
    }
}

#[derive(Debug, Clone)]
struct Shape {
    secret: bool,
    permissions: Option<Vec<Permission>>,
    blocks: Option<Vec<usize>>,
    expires_in_days: Option<i64>,
}

#[derive(Debug, Clone)]
enum Verb {
    Create,
    Update {
        permissions: Option<Vec<Permission>>,
        blocks: Option<Option<Vec<usize>>>,
        expiry: Option<Option<i64>>,
        own: bool,
    },
    Roll {
        own: bool,
    },
    /// Revoke in `revoke_in` seconds a target whose revocation is scheduled `scheduled` seconds
    /// ahead (when some).
    Revoke {
        scheduled: Option<i64>,
        revoke_in: Option<i64>,
    },
    Delete,
    Link,
}

fn shape(secret: impl Strategy<Value = bool>) -> impl Strategy<Value = Shape> {
    (
        secret,
        proptest::option::of(proptest::sample::subsequence(pool(), 1..4)),
        proptest::option::weighted(0.3, proptest::collection::vec(0..BLOCKS.len(), 1..3)),
        proptest::option::weighted(0.3, 1i64..400),
    )
        .prop_map(|(secret, permissions, blocks, expires_in_days)| Shape {
            permissions: permissions.filter(|_| secret),
            secret,
            blocks,
            expires_in_days,
        })
}

fn verb() -> impl Strategy<Value = Verb> {
    prop_oneof![
        Just(Verb::Create),
        (
            proptest::option::of(proptest::sample::subsequence(pool(), 1..4)),
            proptest::option::of(proptest::option::of(proptest::collection::vec(0..BLOCKS.len(), 1..3))),
            proptest::option::of(proptest::option::of(1i64..400)),
            any::<bool>(),
        )
            .prop_map(|(permissions, blocks, expiry, own)| Verb::Update {
                permissions,
                blocks,
                expiry,
                own
            }),
        any::<bool>().prop_map(|own| Verb::Roll { own }),
        (proptest::option::of(1i64..100_000), proptest::option::of(1i64..200_000))
            .prop_map(|(scheduled, revoke_in)| Verb::Revoke { scheduled, revoke_in }),
        Just(Verb::Delete),
        Just(Verb::Link),
    ]
}

/// keyward's own permissions and two of the embedder's.
fn pool() -> Vec<Permission> {
    let mut all = Permission::ALL.to_vec();
    all.extend(["orders:read", "orders:write"].map(|p| p.parse().unwrap()));
    all
}

fn blocks_of(ix: &[usize]) -> Vec<Cidr> {
    ix.iter().map(|i| Cidr::parse(BLOCKS[*i]).unwrap()).collect()
}

fn to_create(h: &Harness, s: &Shape, title: &str) -> CreateApiKey {
    let key_type = if s.secret {
        ApiKeyType::Secret
    } else {
        ApiKeyType::Publishable
    };
    let mut k = CreateApiKey::new(title, key_type, "prop");
    k.expires_at = s.expires_in_days.map(|d| h.kw.now().plus_seconds(d * 86_400));
    k.policy = KeyPolicy {
        metadata: None,
        permissions: s.permissions.clone(),
        allowed_ips: s.blocks.as_deref().map(blocks_of),
    };
    k
}

static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

async fn one_case(h: &Harness, actor_shape: Shape, target_shape: Shape, verb: Verb) -> Result<(), String> {
    let system = Actor::System;
    let made = |s: &Shape, t: &str| to_create(h, s, t);
    let mut pair = h
        .flows
        .create_api_keys(
            &system,
            vec![made(&actor_shape, "actor"), made(&target_shape, "target")],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key);
    let (actor_key, target) = (pair.next().unwrap(), pair.next().unwrap());
    let actor = Actor::key(&actor_key);
    let days = |d: i64| h.kw.now().plus_seconds(d * 86_400);
    let (outcome, produced, reached): (keyward::Result<()>, Option<ApiKey>, Option<&ApiKey>) = match &verb {
        Verb::Create => {
            let r = h.flows.create_api_key(&actor, made(&target_shape, "made")).await;
            let key = r.as_ref().ok().map(|c| c.key.clone());
            (r.map(|_| ()), key, None)
        }
        Verb::Update {
            permissions,
            blocks,
            expiry,
            own,
        } => {
            let subject = if *own { &actor_key } else { &target };
            let update = UpdateApiKey {
                title: Some("updated".into()),
                expires_at: expiry.map(|e| e.map(days)),
                metadata: None,
                permissions: permissions.clone(),
                allowed_ips: blocks.as_ref().map(|b| b.as_deref().map(blocks_of)),
            };
            let r = h.flows.update_api_key_with(&actor, &subject.id, &update).await;
            let key = r.as_ref().ok().cloned();
            (r.map(|_| ()), key, Some(subject))
        }
        Verb::Roll { own } => {
            let subject = if *own { &actor_key } else { &target };
            let r = h.flows.roll_api_key(&actor, &subject.id, "prop", Some(60)).await;
            let key = r.as_ref().ok().map(|(c, _)| c.key.clone());
            (r.map(|_| ()), key, Some(subject))
        }
        Verb::Revoke { scheduled, revoke_in } => {
            let by = |revoke_in: Option<i64>| RevokeApiKey {
                revoked_by: "prop".into(),
                revoke_in,
            };
            let before = match scheduled {
                Some(s) => {
                    h.flows
                        .revoke_api_key(&system, &target.id, &by(Some(*s)))
                        .await
                        .unwrap()
                        .revoked_at
                }
                None => None,
            };
            let r = h.flows.revoke_api_key(&actor, &target.id, &by(*revoke_in)).await;
            if let (Ok(after), Some(before)) = (&r, before)
                && after.revoked_at.is_none_or(|a| a > before)
            {
                return Err(format!(
                    "{verb:?} by {actor_key:?} postponed a revocation from {before} to {:?}",
                    after.revoked_at
                ));
            }
            (r.map(|_| ()), None, Some(&target))
        }
        Verb::Delete => {
            let data = RevokeApiKey {
                revoked_by: "prop".into(),
                revoke_in: None,
            };
            h.flows.revoke_api_key(&system, &target.id, &data).await.unwrap();
            (
                h.flows.delete_api_keys(&actor, std::slice::from_ref(&target.id)).await,
                None,
                Some(&target),
            )
        }
        Verb::Link => {
            let channel = CreateSalesChannel {
                name: "prop".into(),
                description: None,
                is_disabled: false,
                metadata: None,
                id: None,
            };
            let c = h.flows.create_sales_channel(&system, channel).await.unwrap();
            let r = h.flows.link_sales_channels(&actor, &target.id, &[c.id], &[]).await;
            (r, None, Some(&target))
        }
    };
    match outcome {
        Err(e) => {
            if !matches!(e.kind, ErrorKind::Forbidden | ErrorKind::InvalidData) {
                return Err(format!("{verb:?} failed unexpectedly: {e:?}"));
            }
            REFUSED.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(()) => {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = reached
                && !covers(&actor_key, t)
            {
                return Err(format!("{verb:?} reached {t:?}, which {actor_key:?} does not cover"));
            }
            match produced {
                Some(k) if k.key_type == ApiKeyType::Secret => {
                    within(&actor_key, &k).map_err(|why| format!("{verb:?} by {actor_key:?} made {k:?}: {why}"))
                }
                _ => Ok(()),
            }
        }
    }
}

#[test]
fn no_key_ever_makes_or_reaches_more_than_it_holds() {
    let cases = std::env::var("KEYWARD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(Harness::sqlite());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // An acting key that may write keys at all, nine times in ten: the rest shows the plain
    // permission refusal.
    let actor = (shape(Just(true)), proptest::bool::weighted(0.9)).prop_map(|(mut s, writes)| {
        if let Some(p) = s.permissions.as_mut().filter(|_| writes) {
            p.push(Permission::ApiKeysWrite);
        }
        s
    });
    let strategy = (actor, shape(any::<bool>()), verb());
    runner
        .run(&strategy, |(a, t, v)| {
            rt.block_on(one_case(&h, a, t, v)).map_err(TestCaseError::fail)
        })
        .unwrap();
    let (accepted, refused) = (ACCEPTED.load(Ordering::Relaxed), REFUSED.load(Ordering::Relaxed));
    assert!(
        accepted > 0 && refused > 0,
        "the cases exercise both answers: {accepted} accepted, {refused} refused"
    );
}

keyward_testkit::on_both_stores! {
    /// The postpone rule is judged in the writing transaction: a revocation a user moved earlier
    /// after a key planned its own is never pushed back by the key's write.
    async fn a_keys_revocation_never_postpones_one_moved_earlier_meanwhile(h) {
        use keyward::store::{Blocked, RevokeOnce};
        let made = h.flows.create_api_key(&Actor::System, CreateApiKey::new("t", ApiKeyType::Secret, "t")).await.unwrap();
        let id = made.key.id;
        let by = |s: i64| RevokeApiKey { revoked_by: "user_1".into(), revoke_in: Some(s) };
        h.flows.revoke_api_key(&Actor::user("user_1"), &id, &by(60)).await.unwrap();
        let at = |s: i64| h.kw.now().plus_seconds(s);
        let ids = std::slice::from_ref(&id);
        let write = |s: i64, forward_only: bool| {
            h.store.revoke_api_keys(ids, "apk_actor", at(s), &*h.clock, RevokeOnce::Secret, None, forward_only)
        };
        assert_eq!(write(3600, true).await.unwrap(), Err(Blocked::Postponed(vec![id.clone()])));
        let kept = h.kw.retrieve_api_key(&id).await.unwrap();
        assert_eq!(kept.revoked_at, Some(at(60)), "nothing written");
        assert_eq!(write(30, true).await.unwrap(), Ok(()), "forward is allowed");
        assert_eq!(write(3600, false).await.unwrap(), Ok(()), "a user's revocation sets the instant it names");
    }

    /// A key's revocation racing a user's earlier one, in many rounds: whatever the order, the
    /// key ends revoked no later than the user asked.
    async fn a_keys_revocation_racing_a_users_earlier_one_ends_at_the_users_instant(h) {
        let writer = {
            let mut k = CreateApiKey::new("writer", ApiKeyType::Secret, "t");
            k.policy.permissions = Some(vec![Permission::ApiKeysWrite]);
            h.flows.create_api_key(&Actor::System, k).await.unwrap().key
        };
        let actor = Actor::key(&writer);
        for round in 0..20 {
            let mut k = CreateApiKey::new(format!("target {round}"), ApiKeyType::Secret, "t");
            k.policy.permissions = Some(vec![Permission::ApiKeysRead]);
            let target = h.flows.create_api_key(&Actor::System, k).await.unwrap().key;
            let by = |s: i64| RevokeApiKey { revoked_by: "user_1".into(), revoke_in: Some(s) };
            h.flows.revoke_api_key(&Actor::System, &target.id, &by(3600)).await.unwrap();
            let (flows, id) = (h.flows.clone(), target.id.clone());
            let (actor, user) = (actor.clone(), Actor::user("user_1"));
            let key_side = tokio::spawn({
                let (flows, id) = (flows.clone(), id.clone());
                async move { flows.revoke_api_key(&actor, &id, &by(1800)).await }
            });
            let user_side = tokio::spawn(async move { flows.revoke_api_key(&user, &id, &by(60)).await });
            let (k, u) = (key_side.await.unwrap(), user_side.await.unwrap());
            u.unwrap();
            if let Err(e) = k {
                assert_eq!(e.kind, ErrorKind::Forbidden, "{e:?}");
            }
            let now = h.kw.retrieve_api_key(&target.id).await.unwrap();
            assert_eq!(now.revoked_at, Some(h.kw.now().plus_seconds(60)), "round {round}: {now:?}");
        }
    }
}

//! Randomized races between two `keyward serve` processes on one database (one SQLite file, or
//! one Postgres): each round starts a few keys, then fires concurrent creates, renames, revokes,
//! rolls, deletes, links and unlinks at them through both nodes, and checks afterwards that
//!
//! - the keys, their revocations and links are what *some* serial order of the requests that
//!   succeeded produces (every order of them is tried against a model of the rules),
//! - the events published are exactly that order's, once each (refused and compensated changes
//!   publish none),
//! - every key the model calls revoked is refused by verification, every other one accepted,
//! - every workflow run ended `done` or `reverted`.
//!
//! Seeded: a failure prints `KEYWARD_RACE_SEED=<n>` to replay it. `KEYWARD_RACE_ROUNDS` (default
//! 12 per store) runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use keyward_flow::RunState;
use keyward_testkit::{Served, TestDb};
use serde_json::{Value, json};

fn node(db: &str, log: &std::path::Path) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.env("KEYWARD_DATABASE_URL", db)
        .env("KEYWARD_JWT_SECRET", "race-test-secret-race-test-secret")
        .env_remove("KEYWARD_FAULT")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    Served::start(cmd)
}

/// splitmix64: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rev {
    No,
    Past,
    Future,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyState {
    exists: bool,
    secret: bool,
    title: String,
    rev: Rev,
    channels: BTreeSet<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Update(String, String),
    Revoke(String, Option<i64>),
    Roll(String, Option<i64>),
    Delete(String),
    Link(String, String),
    Unlink(String, String),
}

#[derive(Debug, Clone)]
enum Seen {
    /// 200: the change happened (for delete: it happened or there was nothing to delete).
    Applied(Value),
    /// 404: the key was not there (or was gone when the answer read it again).
    Missing,
    /// 400: a rule refused it.
    Refused,
}

type Events = Vec<(String, String)>;

/// What `op` does to `model` in a serial order, or `None` when its outcome could not have been
/// `seen` at this point of the order.
fn apply(model: &mut BTreeMap<String, KeyState>, op: &Op, seen: &Seen, events: &mut Events) -> Option<()> {
    let key_of = |op: &Op| match op {
        Op::Update(k, _) | Op::Revoke(k, _) | Op::Roll(k, _) | Op::Delete(k) | Op::Link(k, _) | Op::Unlink(k, _) => {
            k.clone()
        }
    };
    let id = key_of(op);
    let exists = model.get(&id).is_some_and(|k| k.exists);
    let applied = matches!(seen, Seen::Applied(_));
    if !exists {
        // Only a delete answers 200 for a key that is not there.
        return (matches!(seen, Seen::Missing) || (applied && matches!(op, Op::Delete(_)))).then_some(());
    }
    // A change answers with the key read again after it: a 404 there may also mean it happened
    // and a delete came before that read (a roll answers with what its run returned).
    let happened = applied || (matches!(seen, Seen::Missing) && !matches!(op, Op::Roll(..)));
    if !happened {
        return None;
    }
    let mut ev = |name: &str, id: &str| events.push((name.to_owned(), id.to_owned()));
    let key = model.get_mut(&id)?;
    match op {
        Op::Update(_, title) => {
            key.title.clone_from(title);
            ev("api_key.updated", &id);
        }
        Op::Revoke(_, revoke_in) => {
            if key.secret && key.rev == Rev::Past {
                return None;
            }
            key.rev = match (revoke_in, key.rev) {
                (None, _) | (Some(_), Rev::Past) => Rev::Past,
                (Some(_), _) => Rev::Future,
            };
            ev("api_key.revoked", &id);
        }
        Op::Roll(_, grace) => {
            if key.rev == Rev::Past {
                return None;
            }
            key.rev = if grace.is_some() { Rev::Future } else { Rev::Past };
            let Seen::Applied(body) = seen else { return None };
            let new_id = body["api_key"]["id"].as_str()?.to_owned();
            let new = KeyState {
                exists: true,
                secret: key.secret,
                title: key.title.clone(),
                rev: Rev::No,
                channels: key.channels.clone(),
            };
            ev("api_key.created", &new_id);
            if !new.channels.is_empty() {
                ev("api_key.updated", &new_id);
            }
            ev("api_key.revoked", &id);
            ev("api_key.rolled", &new_id);
            model.insert(new_id, new);
        }
        Op::Delete(_) => {
            if key.rev != Rev::Past {
                return None;
            }
            key.exists = false;
            key.channels.clear();
            ev("api_key.deleted", &id);
        }
        Op::Link(_, ch) => {
            if key.secret {
                return None;
            }
            key.channels.insert(ch.clone());
            ev("api_key.updated", &id);
        }
        Op::Unlink(_, ch) => {
            key.channels.remove(ch);
            ev("api_key.updated", &id);
        }
    }
    Some(())
}

/// Every order of `items`, each passed to `visit` until it returns true.
fn some_order(items: &mut Vec<usize>, k: usize, visit: &mut dyn FnMut(&[usize]) -> bool) -> bool {
    if k == items.len() {
        return visit(items);
    }
    for i in k..items.len() {
        items.swap(k, i);
        if some_order(items, k + 1, visit) {
            return true;
        }
        items.swap(k, i);
    }
    false
}

struct Client {
    http: reqwest::Client,
    jwt: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, url).bearer_auth(&self.jwt);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, url: String, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, url, Some(body)).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn run_rounds(db: TestDb) {
    let seed: u64 = std::env::var("KEYWARD_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    let rounds: usize = std::env::var("KEYWARD_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!(
        "races on {}: KEYWARD_RACE_SEED={seed} KEYWARD_RACE_ROUNDS={rounds}",
        db.backend
    );
    let mut rng = Rng(seed);

    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
    let logs = tempfile::tempdir().unwrap();
    let log_paths = [logs.path().join("node-a.log"), logs.path().join("node-b.log")];
    let nodes = [node(&db.url, &log_paths[0]), node(&db.url, &log_paths[1])];
    let node_logs = || {
        log_paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let http = reqwest::Client::new();
    let jwt = keyward_testkit::login(&http, &nodes[0].base).await;
    let client = std::sync::Arc::new(Client { http, jwt });
    let (_, log) = db.open().await;
    let base = |i: usize| nodes[i % 2].base.clone();

    let mut channels = Vec::new();
    for name in ["EU", "US"] {
        let c = client
            .post(format!("{}/admin/sales-channels", base(0)), json!({"name": name}))
            .await;
        channels.push(c["sales_channel"]["id"].as_str().unwrap().to_owned());
    }

    for round in 0..rounds {
        // The round's keys: a publishable one on the first channel and a secret one, each
        // possibly revoked already (a delete can then go through).
        let mut model: BTreeMap<String, KeyState> = BTreeMap::new();
        let mut tokens: BTreeMap<String, String> = BTreeMap::new();
        for secret in [false, true] {
            let kind = if secret { "secret" } else { "publishable" };
            let k = client
                .post(
                    format!("{}/admin/api-keys", base(round)),
                    json!({"title": format!("r{round} {kind}"), "type": kind}),
                )
                .await;
            let id = k["api_key"]["id"].as_str().unwrap().to_owned();
            tokens.insert(id.clone(), k["api_key"]["token"].as_str().unwrap().to_owned());
            let mut state = KeyState {
                exists: true,
                secret,
                title: format!("r{round} {kind}"),
                rev: Rev::No,
                channels: BTreeSet::new(),
            };
            if !secret {
                client
                    .post(
                        format!("{}/admin/api-keys/{id}/sales-channels", base(round)),
                        json!({"add": [channels[0]]}),
                    )
                    .await;
                state.channels.insert(channels[0].clone());
            }
            match rng.below(3) {
                0 => {
                    client
                        .post(format!("{}/admin/api-keys/{id}/revoke", base(round)), json!({}))
                        .await;
                    state.rev = Rev::Past;
                }
                1 => {
                    client
                        .post(
                            format!("{}/admin/api-keys/{id}/revoke", base(round)),
                            json!({"revoke_in": 3600}),
                        )
                        .await;
                    state.rev = Rev::Future;
                }
                _ => {}
            }
            model.insert(id, state);
        }
        let ids: Vec<String> = model.keys().cloned().collect();
        let before: BTreeSet<String> = log
            .list_events(100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(e, _)| e.id)
            .collect();

        let count = 3 + rng.below(4);
        let mut ops = Vec::new();
        for n in 0..count {
            let key = ids[rng.below(ids.len())].clone();
            let grace = if rng.below(2) == 0 { None } else { Some(3600) };
            ops.push(match rng.below(6) {
                0 => Op::Update(key, format!("r{round} title {n}")),
                1 => Op::Revoke(key, grace),
                2 => Op::Roll(key, grace),
                3 => Op::Delete(key),
                4 => Op::Link(key, channels[rng.below(2)].clone()),
                _ => Op::Unlink(key, channels[rng.below(2)].clone()),
            });
        }
        let creates = rng.below(2);
        let mut tasks = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let (client, node) = (client.clone(), base(rng.below(2) + n));
            let (method, path, body) = match op {
                Op::Update(k, t) => (
                    reqwest::Method::POST,
                    format!("/admin/api-keys/{k}"),
                    Some(json!({"title": t})),
                ),
                Op::Revoke(k, g) => (
                    reqwest::Method::POST,
                    format!("/admin/api-keys/{k}/revoke"),
                    Some(g.map_or(json!({}), |g| json!({"revoke_in": g}))),
                ),
                Op::Roll(k, g) => (
                    reqwest::Method::POST,
                    format!("/admin/api-keys/{k}/roll"),
                    Some(g.map_or(json!({}), |g| json!({"revoke_in": g}))),
                ),
                Op::Delete(k) => (reqwest::Method::DELETE, format!("/admin/api-keys/{k}"), None),
                Op::Link(k, c) => (
                    reqwest::Method::POST,
                    format!("/admin/api-keys/{k}/sales-channels"),
                    Some(json!({"add": [c]})),
                ),
                Op::Unlink(k, c) => (
                    reqwest::Method::POST,
                    format!("/admin/api-keys/{k}/sales-channels"),
                    Some(json!({"remove": [c]})),
                ),
            };
            tasks.push(tokio::spawn(async move {
                client.send(method, format!("{node}{path}"), body).await
            }));
        }
        let mut create_tasks = Vec::new();
        for n in 0..creates {
            let (client, node) = (client.clone(), base(n));
            create_tasks.push(tokio::spawn(async move {
                client
                    .send(
                        reqwest::Method::POST,
                        format!("{node}/admin/api-keys"),
                        Some(json!({"title": format!("r{round} new {n}"), "type": "secret"})),
                    )
                    .await
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            seen.push(match status {
                200 => Seen::Applied(body),
                404 => Seen::Missing,
                400 | 409 => Seen::Refused,
                other => panic!(
                    "KEYWARD_RACE_SEED={seed} round {round}: unexpected {other} {body}\nnode logs:\n{}",
                    node_logs()
                ),
            });
        }
        let mut created_events: Events = Vec::new();
        for t in create_tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "seed {seed}: {body}");
            created_events.push((
                "api_key.created".into(),
                body["api_key"]["id"].as_str().unwrap().to_owned(),
            ));
        }
        for (op, s) in ops.iter().zip(&seen) {
            if let (Op::Roll(..), Seen::Applied(body)) = (op, s) {
                let new = &body["api_key"];
                tokens.insert(
                    new["id"].as_str().unwrap().to_owned(),
                    new["token"].as_str().unwrap().to_owned(),
                );
            }
        }

        // What the store now holds for every key of the round (and those rolls made).
        let mut observed: BTreeMap<String, KeyState> = BTreeMap::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for id in tokens.keys() {
            let (status, body) = client
                .send(reqwest::Method::GET, format!("{}/admin/api-keys/{id}", base(0)), None)
                .await;
            let k = &body["api_key"];
            let exists = status == 200 && k.is_object();
            let rev = match k["revoked_at"].as_str() {
                None => Rev::No,
                Some(at) => {
                    let at = keyward::Timestamp::parse(at).unwrap().millis();
                    if at <= now { Rev::Past } else { Rev::Future }
                }
            };
            observed.insert(
                id.clone(),
                KeyState {
                    exists,
                    secret: k["type"] == "secret",
                    title: k["title"].as_str().unwrap_or_default().to_owned(),
                    rev,
                    channels: k["sales_channels"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                },
            );
        }
        let mut published: Events = log
            .list_events(100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|(e, _)| !before.contains(&e.id))
            .map(|(e, _)| (e.name, e.data["id"].as_str().unwrap_or_default().to_owned()))
            .collect();
        published.sort();

        // Is there a serial order of the requests that succeeded giving all of that?
        let mut order: Vec<usize> = (0..ops.len()).filter(|&i| !matches!(seen[i], Seen::Refused)).collect();
        let comparable = |m: &BTreeMap<String, KeyState>| -> BTreeMap<String, Option<KeyState>> {
            m.iter()
                .map(|(id, k)| (id.clone(), k.exists.then(|| k.clone())))
                .collect()
        };
        let observed_cmp = comparable(&observed);
        let found = some_order(&mut order, 0, &mut |perm| {
            let mut m = model.clone();
            let mut events = created_events.clone();
            for &i in perm {
                if apply(&mut m, &ops[i], &seen[i], &mut events).is_none() {
                    return false;
                }
            }
            events.sort();
            comparable(&m) == observed_cmp && events == published
        });
        assert!(
            found,
            "KEYWARD_RACE_SEED={seed} round {round} ({}): no serial order of the successful requests explains the outcome\n\
             start: {model:#?}\nops: {ops:#?}\nseen: {seen:#?}\nobserved: {observed:#?}\npublished: {published:#?}",
            db.backend
        );

        // Verification agrees with what the store holds.
        for (id, k) in &observed {
            let (_, verdict) = client
                .send(
                    reqwest::Method::POST,
                    format!("{}/v1/keys/verify", base(1)),
                    Some(json!({"key": tokens[id]})),
                )
                .await;
            let valid = k.exists && k.rev != Rev::Past;
            assert_eq!(
                verdict["valid"], valid,
                "KEYWARD_RACE_SEED={seed} round {round}: {id} {k:?} {verdict}"
            );
        }
    }
    for run in log.list_runs(None, 100_000).await.unwrap() {
        assert!(
            matches!(run.state, RunState::Done | RunState::Reverted),
            "KEYWARD_RACE_SEED={seed}: run {} of {} ended {}",
            run.transaction_id,
            run.workflow,
            run.state
        );
    }
}

keyward_testkit::on_both_dbs! {
    async fn concurrent_changes_through_two_nodes_end_as_some_serial_order_of_them(db) {
        run_rounds(db).await;
    }
}

//! Verification at scale, each figure beside its baseline from the same run:
//!
//!     cargo bench -p keyward-testkit --bench cache
//!
//! For SQLite and for Postgres, with `KEYWARD_BENCH_KEYS` keys stored (default 1,000,000):
//! - bulk create through the create workflow (batches of 1,000, as `keys create --count`), for
//!   the first `KEYWARD_BENCH_CREATE` keys (default 100,000; the rest are seeded directly): keys/s;
//! - cache misses (first verification of a token: storage read + fill): p50 / p99 / max;
//! - the cache filled with every key: resident memory per cached key;
//! - cache hits on one thread for `KEYWARD_BENCH_SECONDS` (default 5, in 5 rounds alternating
//!   with the baseline of raw SHA-256 + lookup in a `HashMap` of as many digests): medians of
//!   verifications/s, of the baseline and of the ratio;
//! - the same for 1,000 keys that carry every policy (an expiry, permissions, three allowed
//!   blocks with the caller in the last, metadata), verified from an address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::{ApiKeyType, CreateApiKey, Keyward, Workflows};
use keyward_testkit::{TestDb, now_or_never, watch};
use sha2::{Digest, Sha256};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Calls `f(i)` for i = 0, 1, … on this thread for `seconds`; calls per second.
fn throughput(seconds: f64, mut f: impl FnMut(usize)) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut n = 0usize;
    while Instant::now() < deadline {
        for _ in 0..1_000 {
            f(n);
            n += 1;
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one backend.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let n = env_or("KEYWARD_BENCH_KEYS", 1_000_000);
    let seconds = env_or("KEYWARD_BENCH_SECONDS", 5) as f64;
    let rt = keyward_testkit::bench_runtime();
    println!(
        "keys stored: {n}; {} CPUs",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    let probes: Vec<String> = (0..1_000)
        .map(|i| format!("sk_baseline_{}", i * (n / 1_000).max(1)))
        .collect();
    let map: HashMap<[u8; 32], usize> = (0..n)
        .map(|i| (Sha256::digest(format!("sk_baseline_{i}").as_bytes()).into(), i))
        .collect();
    // Run again beside every round of hits (see `run`), so drift hits both alike.
    let baseline = move |seconds: f64| {
        throughput(seconds, |i| {
            let d: [u8; 32] = Sha256::digest(black_box(&probes[i % probes.len()]).as_bytes()).into();
            black_box(map.get(&d));
        })
    };

    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        let db = rt.block_on(async {
            match backend {
                "sqlite" => TestDb::sqlite(),
                _ => TestDb::postgres().await,
            }
        });
        rt.block_on(run(backend, db, n, seconds, &baseline));
    }
}

async fn run(backend: &str, db: TestDb, n: usize, seconds: f64, baseline: &dyn Fn(f64) -> f64) {
    // Room for every key: quick_cache's bound is approximate.
    let (store, log) = keyward_connect::open_with_cache(&db.url, n + n / 10).await.unwrap();
    let kw = Keyward::new(Arc::clone(&store));
    let flows = Workflows::new(kw.clone(), log, keyward_flow::DEFAULT_LEASE).unwrap();
    flows.migrate().await.unwrap();

    // The first keys through the create workflow, as `keys create --count` makes them (timed);
    // the rest straight into the store, which is faster and is not what is measured here.
    let through_workflow = env_or("KEYWARD_BENCH_CREATE", 100_000).min(n);
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(n);
    while tokens.len() < n {
        let batch = (n - tokens.len()).min(1_000);
        if tokens.len() < through_workflow {
            let input: Vec<CreateApiKey> = (0..batch)
                .map(|i| CreateApiKey::new(format!("k{}", tokens.len() + i), ApiKeyType::Secret, "bench"))
                .collect();
            let created = flows.create_api_keys(&keyward::Actor::System, input).await.unwrap();
            tokens.extend(created.iter().map(|c| c.token.expose().to_owned()));
        } else {
            tokens.extend(keyward_testkit::insert_secret_keys(&store, "k", batch).await);
        }
        if tokens.len() == through_workflow {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "\n[{backend}] bulk create through the workflow: {through_workflow} keys in {seconds:.1} s = {:.0} keys/s",
                through_workflow as f64 / seconds
            );
        }
    }

    let _watch = watch(&kw).await;
    let sample: Vec<&String> = tokens.iter().step_by((n / 20_000).max(1)).collect();
    let mut latencies = Vec::with_capacity(sample.len());
    for t in &sample {
        let at = Instant::now();
        assert!(kw.verify(t).await.unwrap().is_valid());
        latencies.push(at.elapsed());
    }
    latencies.sort();
    println!(
        "[{backend}] cache miss ({} tokens): p50 {}  p90 {}  p99 {}  max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );

    let before = resident_bytes();
    let cached_before = store.cache().stats().keys;
    for t in &tokens {
        kw.verify(t).await.unwrap();
    }
    let cached = store.cache().stats().keys - cached_before;
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "[{backend}] cache filled: {} keys cached, resident +{:.0} MiB = {:.0} bytes per key",
        store.cache().stats().keys,
        grown as f64 / 1048576.0,
        grown as f64 / cached.max(1) as f64
    );

    let hot: Vec<&String> = tokens.iter().step_by((n / 1_000).max(1)).collect();
    // Entries age by the clock: start the hot set fresh (filling a million took longer than an
    // entry lives).
    store.cache().flush();
    for t in &hot {
        kw.verify(t).await.unwrap();
    }
    // Polled once on this thread, no runtime involved: a hit completes without waiting. Rounds
    // alternate with the baseline; the figures are the medians.
    let before = store.cache().stats();
    let mut pending = 0usize;
    let (mut hits, mut bases, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let base = baseline(seconds / ROUNDS as f64);
        let per_second = throughput(seconds / ROUNDS as f64, |i| {
            match now_or_never(kw.verify(black_box(hot[i % hot.len()]))) {
                Some(v) => {
                    black_box(v.unwrap());
                }
                // Not answered from memory (an entry aged out or was dropped): counted.
                None => pending += 1,
            }
        });
        hits.push(per_second);
        bases.push(base);
        ratios.push(per_second / base);
    }
    let after = store.cache().stats();
    println!(
        "[{backend}] during the hit loop: {pending} verifications not answered from memory; \
         misses +{}, flushes +{}, online {}",
        after.misses - before.misses,
        after.flushes - before.flushes,
        after.online
    );
    report(backend, "cache hit", n, &mut hits, &mut bases, &ratios);
    policy_hits(backend, &flows, n, seconds, baseline).await;
}

fn report(backend: &str, what: &str, n: usize, hits: &mut [f64], bases: &mut [f64], ratios: &[f64]) {
    println!(
        "[{backend}] {what}: {:.0}/s on one thread; baseline sha256 + HashMap({n}) {:.0}/s; \
         ratio {:.2} (medians of {ROUNDS} alternating rounds; ratios {})",
        median(hits),
        median(bases),
        median(&mut ratios.to_vec()),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ")
    );
}

/// Hits on keys that carry every policy, verified from an address in their list: what the
/// expiry, origin and permission checks add to a hit.
async fn policy_hits(backend: &str, flows: &Workflows, n: usize, seconds: f64, baseline: &dyn Fn(f64) -> f64) {
    let blocks: Vec<keyward::Cidr> = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"]
        .iter()
        .map(|b| keyward::Cidr::parse(b).unwrap())
        .collect();
    let metadata: keyward::Metadata = [("team".to_owned(), serde_json::json!("web"))].into_iter().collect();
    let input: Vec<CreateApiKey> = (0..1_000)
        .map(|i| {
            let mut k = CreateApiKey::new(format!("policy {i}"), ApiKeyType::Secret, "bench");
            k.expires_in = Some(86_400);
            k.policy = keyward::KeyPolicy {
                metadata: Some(Box::new(metadata.clone())),
                permissions: Some(vec![keyward::Permission::KeysVerify, keyward::Permission::ApiKeysRead]),
                allowed_ips: Some(blocks.clone()),
            };
            k
        })
        .collect();
    let created = flows.create_api_keys(&keyward::Actor::System, input).await.unwrap();
    let tokens: Vec<String> = created.iter().map(|c| c.token.expose().to_owned()).collect();
    let from: std::net::IpAddr = "192.0.2.77".parse().unwrap();
    let kw = flows.kw();
    for t in &tokens {
        assert!(kw.verify_from(t, Some(from)).await.unwrap().is_valid());
    }
    let (mut hits, mut bases, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let base = baseline(seconds / ROUNDS as f64);
        let per_second = throughput(seconds / ROUNDS as f64, |i| {
            if let Some(v) = now_or_never(kw.verify_from(black_box(&tokens[i % tokens.len()]), Some(from))) {
                black_box(v.unwrap());
            }
        });
        hits.push(per_second);
        bases.push(base);
        ratios.push(per_second / base);
    }
    report(
        backend,
        "cache hit, keys with every policy",
        n,
        &mut hits,
        &mut bases,
        &ratios,
    );
}

const ROUNDS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

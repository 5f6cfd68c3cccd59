//! Token and verification costs, each beside a raw SHA-256 baseline measured in the same run, so
//! the ratios hold on a noisy machine.
//!
//!     cargo bench -p keyward-testkit --bench verify
//!
//! Groups: `token/*` (generate, parse + checksum, digest vs `sha256` of a token), and
//! `authenticate/*` (a secret token verified against 100,000 stored keys: from the verification
//! cache (`cache_hit`, `cache_negative_hit`), and from storage on SQLite and on Postgres, i.e. a
//! cache miss; vs `sha256_hashmap`: digest + lookup in an in-memory map of 100,000 digests). Set
//! `KEYWARD_BENCH_KEYS` to change the store size. The last lines print each ratio.
//! Percentiles, throughput on one core and memory with 1,000,000 keys: `--bench cache`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{ApiKeyType, OsEntropy, token};
use keyward_testkit::{Harness, TestDb, now_or_never};
use sha2::{Digest, Sha256};

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn tokens(c: &mut Criterion) {
    let t = token::generate(ApiKeyType::Secret, &OsEntropy).unwrap();
    let raw = t.expose().to_owned();
    let mut g = c.benchmark_group("token");
    g.bench_function("sha256", |b| b.iter(|| sha256(black_box(&raw))));
    g.bench_function("generate", |b| {
        b.iter(|| token::generate(ApiKeyType::Secret, &OsEntropy).unwrap())
    });
    g.bench_function("parse_checksum", |b| {
        b.iter(|| token::parse(black_box(&raw)).unwrap().kind())
    });
    g.bench_function("digest_hex", |b| b.iter(|| token::digest_hex(black_box(&raw))));
    g.finish();
}

fn store_size() -> usize {
    std::env::var("KEYWARD_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// A store holding `n` secret keys; returns the harness and a few of their tokens.
async fn seeded(db: TestDb, n: usize) -> (Harness, Vec<String>) {
    let h = Harness::on(db).await;
    let mut sample = Vec::new();
    let mut made = 0;
    while made < n {
        let batch = (n - made).min(2_000);
        let tokens = keyward_testkit::insert_secret_keys(&h.store, "k", batch).await;
        sample.extend(tokens.into_iter().step_by(500));
        made += batch;
    }
    (h, sample)
}

fn authenticate(c: &mut Criterion) {
    let n = store_size();
    let rt = keyward_testkit::bench_runtime();
    let mut g = c.benchmark_group("authenticate");
    g.sample_size(30);

    // Baseline: what a verifier minimally does — hash the token, look it up.
    let map: HashMap<[u8; 32], usize> = (0..n).map(|i| (sha256(&format!("sk_baseline_{i}")), i)).collect();
    let probe = format!("sk_baseline_{}", n / 2);
    g.bench_function("sha256_hashmap", |b| {
        b.iter(|| *map.get(&sha256(black_box(&probe))).unwrap())
    });

    let (h, sample) = rt.block_on(seeded(TestDb::sqlite(), n));
    {
        // The cache in use (its watcher connected) and filled: the hot path.
        let _watch = rt.block_on(async { keyward_testkit::watch(&h.kw).await });
        for t in &sample {
            rt.block_on(h.kw.authenticate(t)).unwrap().unwrap();
        }
        let mut i = 0;
        g.bench_function("cache_hit", |b| {
            b.iter(|| {
                i = (i + 1) % sample.len();
                now_or_never(h.kw.verify(black_box(&sample[i]))).unwrap().unwrap()
            })
        });
        let unknown = token::generate(ApiKeyType::Secret, &OsEntropy).unwrap();
        rt.block_on(h.kw.verify(unknown.expose())).unwrap();
        g.bench_function("cache_negative_hit", |b| {
            b.iter(|| now_or_never(h.kw.verify(black_box(unknown.expose()))).unwrap().unwrap())
        });
    }
    // Without a watcher nothing is cached: every call below reads storage (a cache miss).
    let mut i = 0;
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            i = (i + 1) % sample.len();
            rt.block_on(h.kw.authenticate(&sample[i])).unwrap().unwrap()
        })
    });
    g.bench_function("sqlite_malformed", |b| {
        b.iter(|| rt.block_on(h.kw.authenticate("sk_not_a_token")).unwrap())
    });
    drop(h);

    {
        let db = rt.block_on(TestDb::postgres());
        let (h, sample) = rt.block_on(seeded(db, n));
        let mut i = 0;
        g.bench_function("postgres", |b| {
            b.iter(|| {
                i = (i + 1) % sample.len();
                rt.block_on(h.kw.authenticate(&sample[i])).unwrap().unwrap()
            })
        });
        drop(h);
    }
    g.finish();
}

/// Reads criterion's estimates back and prints each benchmark against its group's baseline.
fn ratios(_: &mut Criterion) {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let root = std::path::Path::new(&dir).join("criterion");
    let root = if root.exists() {
        root
    } else {
        std::path::Path::new("../../target/criterion").to_path_buf()
    };
    let mean = |group: &str, name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(group).join(name).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    println!("\n{:<36} {:>12} {:>10}", "benchmark", "mean", "x baseline");
    for (group, base, names) in [
        (
            "token",
            "sha256",
            &["sha256", "generate", "parse_checksum", "digest_hex"][..],
        ),
        (
            "authenticate",
            "sha256_hashmap",
            &[
                "sha256_hashmap",
                "cache_hit",
                "cache_negative_hit",
                "sqlite",
                "sqlite_malformed",
                "postgres",
            ][..],
        ),
    ] {
        let Some(b) = mean(group, base) else { continue };
        for name in names {
            if let Some(m) = mean(group, name) {
                println!(
                    "{:<36} {:>9.3} µs {:>10.1}",
                    format!("{group}/{name}"),
                    m / 1000.0,
                    m / b
                );
            }
        }
    }
}

criterion_group!(benches, tokens, authenticate, ratios);
criterion_main!(benches);

//! The Medusa import and the first use of an imported secret key, each beside its baseline
//! from the same run:
//!
//!     cargo bench -p keyward-testkit --bench import [-- sqlite|postgres]
//!
//! For SQLite and for Postgres (the Medusa source is always a Postgres database):
//! - import of `KEYWARD_BENCH_KEYS` Medusa keys (default 100,000: half publishable, each linked
//!   to a channel; half secret) through the `import-medusa` workflow, plan to last link: keys/s,
//!   beside writing the same key rows straight to an empty store in chunks of 1,000 (no
//!   workflow, no events, no links): the ratio;
//! - the first verification of an imported secret key (candidate lookup, one scrypt, the
//!   upgrade, the re-read), over `KEYWARD_BENCH_LEGACY` keys (default 20): median, beside a bare
//!   scrypt run of the same parameters; then the same keys once upgraded, from a cold cache (one
//!   store read by digest) and from the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use keyward::ClockExt;
use std::time::{Duration, Instant};

use keyward::import::{ImportInput, ImportSet};
use keyward::store::StoredKey;
use keyward::{Keyward, SystemClock};
use keyward_testkit::medusa::MedusaDb;
use keyward_testkit::{TestDb, watch};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn legacy_rows(n: usize) -> Vec<(StoredKey, String)> {
    (0..n)
        .map(|i| keyward_testkit::medusa::legacy_secret("legacy", i, SystemClock.now()))
        .collect()
}

async fn run(backend: &str, n: usize, legacy: usize) {
    let fresh = || async {
        match backend {
            "sqlite" => TestDb::sqlite(),
            _ => TestDb::postgres().await,
        }
    };
    let m = MedusaDb::bulk(n as u32, SystemClock.now()).await;
    let started = Instant::now();
    let snapshot = keyward_postgres::medusa::read(m.url()).await.unwrap();
    let read = started.elapsed();
    let set = ImportSet::from_medusa(snapshot).unwrap();

    // The baseline: the same key rows written straight to an empty store.
    let base_db = fresh().await;
    let base = base_db.workflows().await;
    let base_store = base_db.store().await;
    let started = Instant::now();
    for chunk in set.keys.chunks(1_000) {
        base_store.restore_api_keys(chunk).await.unwrap();
    }
    let raw = n as f64 / started.elapsed().as_secs_f64();
    drop(base);

    let db = fresh().await;
    let flows = db.workflows().await;
    let started = Instant::now();
    let report = flows
        .import_medusa(ImportInput { set, update: false }, "bench-import")
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.api_keys.imported as usize, n);
    let rate = n as f64 / seconds;
    println!(
        "{backend:>8}  import {n} Medusa keys ({} links): {seconds:.1} s = {rate:.0} keys/s; \
         raw store insert {raw:.0} keys/s; ratio {:.2}  (reading Medusa: {:.2} s)",
        report.links.imported,
        rate / raw,
        read.as_secs_f64()
    );

    // The first use of imported secret keys, beside bare scrypt.
    let rows = legacy_rows(legacy);
    let bare: Vec<Duration> = rows
        .iter()
        .map(|(k, token)| {
            let started = Instant::now();
            std::hint::black_box(keyward::legacy::medusa_hash(token, &k.salt).unwrap());
            started.elapsed()
        })
        .collect();
    let kw = flows.kw().clone();
    db.store()
        .await
        .restore_api_keys(&rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let _watched = watch(&kw).await;
    let mut first = Vec::new();
    for (_, token) in &rows {
        let started = Instant::now();
        assert!(kw.verify(token).await.unwrap().is_valid());
        first.push(started.elapsed());
    }
    // Once upgraded: a node with an empty cache reads the key by its digest, then holds it.
    let (store, _) = db.open().await;
    let other = Keyward::new(store);
    let _watched_other = watch(&other).await;
    let (mut cold, mut hit) = (Vec::new(), Vec::new());
    for (_, token) in &rows {
        let started = Instant::now();
        assert!(other.verify(token).await.unwrap().is_valid());
        cold.push(started.elapsed());
        let started = Instant::now();
        assert!(other.verify(token).await.unwrap().is_valid());
        hit.push(started.elapsed());
    }
    let (first, bare, cold, hit) = (median(first), median(bare), median(cold), median(hit));
    println!(
        "{backend:>8}  first use of an imported secret key: {:.1} ms (bare scrypt {:.1} ms, ratio {:.2}); \
         upgraded: {:.0} µs from the store, {:.2} µs from the cache ({legacy} keys, medians)",
        first.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3,
        first.as_secs_f64() / bare.as_secs_f64(),
        cold.as_secs_f64() * 1e6,
        hit.as_secs_f64() * 1e6,
    );
    drop(m);
}

fn main() {
    let n = env_or("KEYWARD_BENCH_KEYS", 100_000);
    let legacy = env_or("KEYWARD_BENCH_LEGACY", 20).max(1);
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let rt = keyward_testkit::bench_runtime();
    for backend in ["sqlite", "postgres"] {
        if only.is_empty() || only.iter().any(|o| o == backend) {
            rt.block_on(run(backend, n, legacy));
        }
    }
}

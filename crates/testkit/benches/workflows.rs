//! What running a change as a durable workflow costs: creating one key through `create-api-keys`
//! (run log writes, events) beside creating it directly with the module, in the same run.
//!
//!     cargo bench -p keyward-testkit --bench workflows
//!
//! Groups `create_sqlite` and `create_postgres`, each `direct` (the baseline) and `workflow`.
//! The last lines print the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{ApiKeyType, CreateApiKey};
use keyward_testkit::{Harness, TestDb};

fn create(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut means = Vec::new();
    for (name, db) in [
        ("sqlite", Some(TestDb::sqlite())),
        ("postgres", rt.block_on(TestDb::postgres())),
    ] {
        let Some(db) = db else { continue };
        let h = rt.block_on(Harness::on(db));
        let mut g = c.benchmark_group(format!("create_{name}"));
        g.sample_size(30);
        let key = || CreateApiKey::new("bench", ApiKeyType::Secret, "bench");
        g.bench_function("direct", |b| {
            b.iter(|| rt.block_on(h.kw.create_api_key(key())).unwrap())
        });
        g.bench_function("workflow", |b| {
            b.iter(|| rt.block_on(h.flows.create_api_key(key())).unwrap())
        });
        g.finish();
        means.push(name);
    }
    let root = std::path::Path::new("../../target/criterion");
    let mean = |group: &str, bench: &str| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(group).join(bench).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    println!("\n{:<28} {:>12} {:>12} {:>8}", "store", "direct", "workflow", "ratio");
    for name in means {
        let group = format!("create_{name}");
        if let (Some(d), Some(w)) = (mean(&group, "direct"), mean(&group, "workflow")) {
            println!("{name:<28} {:>9.1} µs {:>9.1} µs {:>8.1}", d / 1e3, w / 1e3, w / d);
        }
    }
}

criterion_group!(benches, create);
criterion_main!(benches);

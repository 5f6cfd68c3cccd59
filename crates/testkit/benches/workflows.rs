//! What running a change as a durable workflow costs: creating one key through `create-api-keys`
//! and revoking one through `revoke-api-keys` (run log writes, events) beside the store's own
//! write of the same change (one insert; the guarded revoke), in the same run.
//!
//!     cargo bench -p keyward-testkit --bench workflows
//!
//! Groups `create_sqlite`, `create_postgres`, `revoke_sqlite` and `revoke_postgres`, each
//! `direct` (the baseline) and `workflow`.
//! The last lines print the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::store::RevokeOnce;
use keyward::{ApiKeyType, CreateApiKey};
use keyward_testkit::{Harness, TestDb};

fn create(c: &mut Criterion) {
    let rt = keyward_testkit::bench_runtime();
    let mut means = Vec::new();
    for (name, db) in [
        ("sqlite", TestDb::sqlite()),
        ("postgres", rt.block_on(TestDb::postgres())),
    ] {
        let h = rt.block_on(Harness::on(db));
        let mut g = c.benchmark_group(format!("create_{name}"));
        g.sample_size(30);
        let key = || CreateApiKey::new("bench", ApiKeyType::Secret, "bench");
        g.bench_function("direct", |b| {
            b.iter(|| rt.block_on(keyward_testkit::insert_secret_keys(&h.store, "direct", 1)))
        });
        g.bench_function("workflow", |b| {
            b.iter(|| {
                rt.block_on(h.flows.create_api_key(&keyward::Actor::System, key()))
                    .unwrap()
            })
        });
        g.finish();
        means.push(format!("create_{name}"));
        // Revoking one publishable key again and again, with a revocation in the future (which
        // may be moved): the revoke's guarded, clock-under-lock write beside the module's.
        let pk = rt.block_on(h.flows.create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new("revoked", ApiKeyType::Publishable, "bench"),
        ));
        let id = pk.unwrap().key.id;
        let later = keyward::RevokeApiKey {
            revoked_by: "bench".into(),
            revoke_in: Some(3600),
        };
        let mut g = c.benchmark_group(format!("revoke_{name}"));
        g.sample_size(30);
        let at = h.kw.now().plus_seconds(3600);
        let ids = std::slice::from_ref(&id);
        g.bench_function("direct", |b| {
            b.iter(|| {
                let store = &h.store;
                rt.block_on(store.revoke_api_keys(ids, "bench", at, &*h.clock, RevokeOnce::Secret, None, false))
                    .unwrap()
                    .unwrap()
            })
        });
        g.bench_function("workflow", |b| {
            b.iter(|| {
                rt.block_on(h.flows.revoke_api_key(&keyward::Actor::System, &id, &later))
                    .unwrap()
            })
        });
        g.finish();
        means.push(format!("revoke_{name}"));
    }
    let root = std::path::Path::new("../../target/criterion");
    let mean = |group: &str, bench: &str| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(group).join(bench).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    println!("\n{:<28} {:>12} {:>12} {:>8}", "change", "direct", "workflow", "ratio");
    for group in means {
        if let (Some(d), Some(w)) = (mean(&group, "direct"), mean(&group, "workflow")) {
            println!("{group:<28} {:>9.1} µs {:>9.1} µs {:>8.1}", d / 1e3, w / 1e3, w / d);
        }
    }
}

criterion_group!(benches, create);
criterion_main!(benches);

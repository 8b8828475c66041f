//! Per-transaction cost of the rules: the shipped pack with 100,000 live keys, and a
//! single windowed count. `cargo bench -p tillgate --bench rules`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::path::Path;
use std::time::Duration;
use tillgate::rules::{load_paths, DecideContext, Decider, Engine, NoOriginals};
use tillgate::txn::{parse, Transaction};

/// The agent's allocator (see `src/main.rs`), so the costs are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIVE_KEYS: usize = 100_000;

fn txn(i: usize, now: chrono::DateTime<chrono::Utc>) -> Transaction {
    let raw = format!(
        r#"{{"txn_id":"b{i}","store_id":"store-{s}","terminal_id":"till-{t}","operator_id":"op-{o}","customer_id":"cust-{k}","occurred_at":"{at}","type":"sale","total_minor":{amount},"currency":"USD","card":{{"token":"tok-{k}","bin":"411111","entry_mode":"chip"}}}}"#,
        s = i % 50,
        t = i % 400,
        o = i % 800,
        k = i % LIVE_KEYS,
        at = now.to_rfc3339(),
        amount = 100 + (i % 5000),
    );
    parse(raw.as_bytes(), now).expect("valid")
}

fn warmed(engine: &mut Engine, txns: &[Transaction]) {
    for (i, t) in txns.iter().enumerate() {
        engine.decide(
            t,
            &DecideContext {
                seq: i as u64,
                lookup: &NoOriginals,
                replaying: false,
            },
        );
    }
}

fn bench(c: &mut Criterion) {
    let now = chrono::Utc::now();
    let txns: Vec<Transaction> = (0..LIVE_KEYS).map(|i| txn(i, now)).collect();
    let pack_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules");

    let mut pack = Engine::new(load_paths(&[pack_dir]).expect("pack loads"), None, Duration::ZERO);
    warmed(&mut pack, &txns);
    bench_engine(c, "rule pack (16 rules, 3 reports), 100k live keys", &mut pack, &txns);

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("count.toml"),
        "[[rule]]\nid = \"count\"\nkey = \"card.token\"\nwindow = \"10m\"\naggregates = { n = \"count\" }\nwhen = 'n >= 6'\naction = \"block\"\n",
    )
    .expect("write");
    let mut simple = Engine::new(
        load_paths(&[dir.path().to_path_buf()]).expect("loads"),
        None,
        Duration::ZERO,
    );
    warmed(&mut simple, &txns);
    bench_engine(c, "one windowed count, 100k live keys", &mut simple, &txns);
}

/// Decides the warmed transactions again in a scattered order (every key stays live).
fn bench_engine(c: &mut Criterion, name: &str, engine: &mut Engine, txns: &[Transaction]) {
    let mut i = 0usize;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                i += 1;
                (&txns[(i * 7919) % LIVE_KEYS], (LIVE_KEYS + i) as u64)
            },
            |(t, seq)| {
                engine.decide(
                    t,
                    &DecideContext {
                        seq,
                        lookup: &NoOriginals,
                        replaying: false,
                    },
                )
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = rules;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(rules);

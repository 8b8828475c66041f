//! The oracle: 100,000 generated transactions (thousands of keys, bursts, windows
//! straddling boundaries, out-of-order and late events) through the rule engine, and the
//! same aggregates computed independently by SQLite. Every per-event aggregate and every
//! reporting window must match exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tillgate::rules::{load_paths, DecideContext, Decider, Engine, NoOriginals};

const N: usize = 100_000;
const KEYS: usize = 3_000;
const W: i64 = 300_000; // 5 min
const L: i64 = 60_000; // rule lateness
const LAST: i64 = 5; // count window
const REPORT_LATENESS: i64 = 60_000;
const TUMBLE: i64 = 300_000;
const HOP_SIZE: i64 = 600_000;
const HOP: i64 = 300_000;
const GAP: i64 = 120_000;

/// Every aggregate, and three over only the transactions of 25.00 or more (a
/// conditional aggregate: its own filter, the same window).
const AGGREGATES: &str = r#"{ n = "count", total = "sum(total_minor)", lo = "min(total_minor)", hi = "max(total_minor)", cards = "count_distinct(card.token)", big = { of = "count", filter = 'txn.total_minor >= 2500' }, big_total = { of = "sum(total_minor)", filter = 'txn.total_minor >= 2500' }, big_cards = { of = "count_distinct(card.token)", filter = 'txn.total_minor >= 2500' } }"#;

/// The same in SQL, over rows `(amount, card)`.
const SQL_AGGREGATES: &str = "COUNT(*), SUM(amount), MIN(amount), MAX(amount), COUNT(DISTINCT card), \
     SUM(amount >= 2500), SUM(CASE WHEN amount >= 2500 THEN amount ELSE 0 END), COUNT(DISTINCT CASE WHEN amount >= 2500 THEN card END)";

const RULES: &str = r#"
[[rule]]
id = "sliding"
key = "customer_id"
window = "5m"
lateness = "1m"
aggregates = AGGREGATES
when = 'true'
action = "allow"
max_keys = 1000000

[[rule]]
id = "last5"
key = "customer_id"
window = { last = 5 }
aggregates = AGGREGATES
when = 'true'
action = "allow"
max_keys = 1000000

[[report]]
id = "tumbling"
key = "customer_id"
window = { tumbling = "5m" }
allowed_lateness = "1m"
aggregates = AGGREGATES

[[report]]
id = "hopping"
key = "customer_id"
window = { hopping = "10m", every = "5m" }
allowed_lateness = "1m"
aggregates = AGGREGATES

[[report]]
id = "session"
key = "customer_id"
window = { session_gap = "2m" }
allowed_lateness = "1m"
aggregates = AGGREGATES
"#;

struct Ev {
    seq: i64,
    key: String,
    ts: i64,
    amount: i64,
    card: String,
}

/// Arrival order with event-time jitter: bursts on one key, out-of-order (up to 3 min)
/// and late (5–20 min) events, amounts and cards drawn from small sets so sums, minima
/// and distinct counts are exercised.
fn generate() -> Vec<Ev> {
    let mut rng = StdRng::seed_from_u64(20261127);
    let base: i64 = 1_800_000_000_000; // epoch ms, aligned to no window on purpose + 0
    let mut clock = base + 123_457;
    let mut out = Vec::with_capacity(N);
    let mut burst: Option<(usize, usize)> = None;
    for seq in 1..=N as i64 {
        clock += rng.random_range(0..40); // about 50 per second
        let key = match burst {
            Some((k, left)) if left > 0 => {
                burst = Some((k, left - 1));
                k
            }
            _ => {
                if rng.random_bool(0.02) {
                    let k = rng.random_range(0..KEYS);
                    burst = Some((k, rng.random_range(3..12)));
                    k
                } else {
                    rng.random_range(0..KEYS)
                }
            }
        };
        let mut ts = clock;
        let r: f64 = rng.random();
        if r < 0.05 {
            ts -= rng.random_range(0..180_000);
        } else if r < 0.06 {
            ts -= rng.random_range(300_000..1_200_000);
        }
        out.push(Ev {
            seq,
            key: format!("cust-{key}"),
            ts,
            amount: rng.random_range(1..50) * 100,
            card: format!("tok-{}", rng.random_range(0..4)),
        });
    }
    out
}

fn txn(e: &Ev) -> tillgate::txn::Transaction {
    let at = chrono::DateTime::from_timestamp_millis(e.ts).unwrap();
    let raw = format!(
        r#"{{"txn_id":"t{}","store_id":"s1","terminal_id":"p1","customer_id":"{}","occurred_at":"{}","type":"sale","total_minor":{},"currency":"USD","card":{{"token":"{}"}}}}"#,
        e.seq,
        e.key,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        e.amount,
        e.card
    );
    // Received when it occurred: event time is occurred_at, never the skew fallback.
    tillgate::txn::parse(raw.as_bytes(), at).unwrap()
}

type Aggs = [i64; 8];

fn aggs_of<M: for<'a> std::ops::Index<&'a str, Output = serde_json::Value>>(m: &M) -> Aggs {
    let g = |k: &str| m[k].as_i64().unwrap();
    [
        g("n"),
        g("total"),
        g("lo"),
        g("hi"),
        g("cards"),
        g("big"),
        g("big_total"),
        g("big_cards"),
    ]
}

/// Eight integer columns from `first` on.
fn aggs_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Aggs> {
    let mut out = [0; 8];
    for (i, v) in out.iter_mut().enumerate() {
        *v = r.get(first + i)?;
    }
    Ok(out)
}

#[test]
fn engine_matches_sqlite_on_100k_transactions() {
    let events = generate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oracle.toml"), RULES.replace("AGGREGATES", AGGREGATES)).unwrap();
    let mut engine = Engine::new(
        load_paths(&[dir.path().join("oracle.toml")]).unwrap(),
        None,
        Duration::ZERO,
    );

    let mut sliding = Vec::with_capacity(N);
    let mut last5 = Vec::with_capacity(N);
    let mut windows: BTreeMap<&str, BTreeSet<(String, i64, i64, Aggs)>> = BTreeMap::new();
    for e in &events {
        let d = engine.decide(
            &txn(e),
            &DecideContext {
                seq: e.seq as u64,
                lookup: &NoOriginals,
                replaying: false,
            },
        );
        sliding.push(aggs_of(
            &d.hits.iter().find(|h| &*h.id == "sliding").unwrap().aggregates,
        ));
        last5.push(aggs_of(&d.hits.iter().find(|h| &*h.id == "last5").unwrap().aggregates));
        for r in d.reports {
            let set = windows.entry(match r.report.as_str() {
                "tumbling" => "tumbling",
                "hopping" => "hopping",
                _ => "session",
            });
            set.or_default()
                .insert((r.key, r.window_start_ms, r.window_end_ms, aggs_of(&r.aggregates)));
        }
    }

    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE ev (seq INTEGER PRIMARY KEY, k TEXT NOT NULL, ts INTEGER NOT NULL, amount INTEGER NOT NULL, card TEXT NOT NULL);
         CREATE INDEX ev_k_ts ON ev(k, ts);",
    )
    .unwrap();
    {
        let tx = db.unchecked_transaction().unwrap();
        let mut ins = tx.prepare("INSERT INTO ev VALUES (?1, ?2, ?3, ?4, ?5)").unwrap();
        for e in &events {
            ins.execute(rusqlite::params![e.seq, e.key, e.ts, e.amount, e.card])
                .unwrap();
        }
        drop(ins);
        tx.commit().unwrap();
    }

    // Per-event sliding window: the key's events that arrived no later, with time in
    // [t − W, t], still held (time ≥ the key's previous newest − W − L), and itself.
    let rows = |sql: &str| -> Vec<Aggs> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| aggs_at(r, 0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let want_sliding = rows(&format!(
        "WITH p AS (SELECT seq, k, ts, MAX(ts) OVER (PARTITION BY k ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev FROM ev),
              w AS (SELECT p.seq AS at, e.* FROM p JOIN ev e ON e.k = p.k AND e.seq <= p.seq AND e.ts BETWEEN p.ts - {W} AND p.ts
                    WHERE e.seq = p.seq OR p.prev IS NULL OR e.ts >= p.prev - {W} - {L})
         SELECT {SQL_AGGREGATES} FROM w GROUP BY at ORDER BY at"
    ));
    let mismatch = (0..N).find(|&i| sliding[i] != want_sliding[i]);
    assert!(
        mismatch.is_none(),
        "sliding window differs at seq {}: engine {:?}, SQLite {:?}",
        mismatch.unwrap() + 1,
        sliding[mismatch.unwrap()],
        want_sliding[mismatch.unwrap()]
    );

    // The same aggregates as the plain window function `COUNT(*) OVER (PARTITION BY key
    // ORDER BY ts RANGE BETWEEN W PRECEDING AND CURRENT ROW)` for every transaction that
    // was its key's newest on arrival and that no later arrival falls beside: there the
    // arrival order cannot matter, and both must agree.
    let range_fn: Vec<(i64, [i64; 4])> = db
        .prepare(&format!(
            "WITH f AS (SELECT seq, ts, k, COUNT(*) OVER w AS n, SUM(amount) OVER w AS total, MIN(amount) OVER w AS lo, MAX(amount) OVER w AS hi,
                               MAX(ts) OVER (PARTITION BY k ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
                        FROM ev WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN {W} PRECEDING AND CURRENT ROW))
             SELECT seq, n, total, lo, hi FROM f
             WHERE (prev IS NULL OR ts >= prev)
               AND NOT EXISTS (SELECT 1 FROM ev l WHERE l.k = f.k AND l.seq > f.seq AND l.ts BETWEEN f.ts - {W} AND f.ts)"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        range_fn.len() > N / 2,
        "most transactions are in order: {}",
        range_fn.len()
    );
    for (seq, want) in &range_fn {
        let got = &sliding[*seq as usize - 1];
        assert_eq!(&got[..4], want, "RANGE window function differs at seq {seq}");
    }

    // Count window: the key's last 5 in arrival order.
    let want_last5 = rows(&format!(
        "SELECT COUNT(*) OVER w, SUM(amount) OVER w, MIN(amount) OVER w, MAX(amount) OVER w,
                (SELECT COUNT(DISTINCT card) FROM (SELECT card FROM ev e WHERE e.k = ev.k AND e.seq <= ev.seq ORDER BY e.seq DESC LIMIT {LAST})),
                SUM(amount >= 2500) OVER w, SUM(CASE WHEN amount >= 2500 THEN amount ELSE 0 END) OVER w,
                (SELECT COUNT(DISTINCT CASE WHEN amount >= 2500 THEN card END) FROM (SELECT card, amount FROM ev e WHERE e.k = ev.k AND e.seq <= ev.seq ORDER BY e.seq DESC LIMIT {LAST}))
         FROM ev WINDOW w AS (PARTITION BY k ORDER BY seq ROWS BETWEEN {} PRECEDING AND CURRENT ROW) ORDER BY seq",
        LAST - 1
    ));
    let mismatch = (0..N).find(|&i| last5[i] != want_last5[i]);
    assert!(
        mismatch.is_none(),
        "count window differs at seq {}",
        mismatch.unwrap() + 1
    );

    // Reports: events older than the watermark when they arrive are left out; a window
    // is emitted once the final watermark reaches its end.
    db.execute_batch(&format!(
        "CREATE TABLE kept AS SELECT * FROM (SELECT ev.*, MAX(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev FROM ev)
         WHERE prev IS NULL OR ts >= prev - {REPORT_LATENESS};"
    ))
    .unwrap();
    let final_wm: i64 = db
        .query_row(&format!("SELECT MAX(ts) - {REPORT_LATENESS} FROM ev"), [], |r| r.get(0))
        .unwrap();
    let set = |sql: String| -> BTreeSet<(String, i64, i64, Aggs)> {
        db.prepare(&sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, aggs_at(r, 3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let aggs = SQL_AGGREGATES;
    let tumbling = set(format!(
        "SELECT k, s, s + {TUMBLE}, {aggs} FROM (SELECT *, (ts / {TUMBLE}) * {TUMBLE} AS s FROM kept)
         GROUP BY k, s HAVING s + {TUMBLE} <= {final_wm}"
    ));
    assert!(
        tumbling.len() > 1000,
        "the data must produce many windows: {}",
        tumbling.len()
    );
    assert_eq!(windows["tumbling"], tumbling, "tumbling windows differ");
    let hopping = set(format!(
        "SELECT k, s, s + {HOP_SIZE}, {aggs} FROM (
             SELECT kept.*, (ts / {HOP}) * {HOP} - i * {HOP} AS s FROM kept, (SELECT 0 AS i UNION ALL SELECT 1)
         ) WHERE s + {HOP_SIZE} > ts GROUP BY k, s HAVING s + {HOP_SIZE} <= {final_wm}"
    ));
    assert!(hopping.len() > 1000, "{} hopping windows", hopping.len());
    assert_eq!(windows["hopping"], hopping, "hopping windows differ");
    let sessions = set(format!(
        "WITH g AS (SELECT *, LAG(ts) OVER (PARTITION BY k ORDER BY ts, seq) AS prev_ts FROM kept),
              s AS (SELECT *, SUM(CASE WHEN prev_ts IS NULL OR ts - prev_ts >= {GAP} THEN 1 ELSE 0 END)
                              OVER (PARTITION BY k ORDER BY ts, seq) AS sid FROM g)
         SELECT k, MIN(ts), MAX(ts) + {GAP}, {aggs} FROM s GROUP BY k, sid HAVING MAX(ts) + {GAP} <= {final_wm}"
    ));
    assert!(sessions.len() > 1000, "{} sessions", sessions.len());
    assert_eq!(windows["session"], sessions, "session windows differ");
    let late: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM ev) - (SELECT COUNT(*) FROM kept)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(late > 100, "the data must contain late events: {late}");
    let out_of_order = N - range_fn.len();
    assert!(
        out_of_order > 1000,
        "the data must contain out-of-order windows: {out_of_order}"
    );
}

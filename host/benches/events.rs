//! Event append with the hash chain vs without it, measured in one run, and the ratio.
//!
//! - `event_append/chained_*`: `Store::append_event` (one event per transaction) and
//!   `Store::append_events` (100 per transaction): the production path, which chains every
//!   event to the one before it (`happyx::audit`).
//! - `event_append/baseline_*`: the append HappyX ran before the chain existed, copied here
//!   verbatim (one `INSERT … (SELECT MAX(seq) + 1) … RETURNING seq` per event; no hash, no
//!   head lookup), through an identically opened store's own single write connection. It
//!   lives only in this bench, so nothing in production can reach it.
//!
//! Each side writes its own fresh database (WAL, `synchronous = FULL`, the defaults).
//! After criterion's figures it prints, on stderr, the chained/baseline throughput ratio
//! twice: from criterion's mean times, and as the median of paired rounds that alternate
//! the two sides (robust against a machine whose load changes during the run). The goal
//! is a ratio of at least 0.9 for both shapes on a release build.
//!
//! Run: `cargo bench -p happyx --bench events`.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use happyx::config::StorageConfig;
use happyx::store::{NewEvent, Store};
use happyx::util::{new_id, now_ms};
use serde_json::json;
use sqlx::{Row, SqlitePool};
use tokio::runtime::Runtime;

#[path = "common/tally.rs"]
mod tally;
use tally::Tally;

/// The goal: chained throughput over baseline throughput.
const GOAL: f64 = 0.9;

struct Side {
    _tmp: tempfile::TempDir,
    store: Store,
}

fn side(rt: &Runtime) -> Side {
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("store");
        Side { _tmp: tmp, store }
    })
}

fn event() -> NewEvent<'static> {
    NewEvent::new("bench.event", "bench", "subject", json!({"k": 1}))
}

/// The pre-chain `events::append`, as it was: one statement, `seq` taken inside it.
async fn baseline_append(conn: &mut sqlx::SqliteConnection, ev: &NewEvent<'_>) -> i64 {
    let row = sqlx::query(
        "INSERT INTO events (id, seq, at, code, actor, subject, data) \
         VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(new_id())
    .bind(now_ms())
    .bind(ev.code)
    .bind(ev.actor)
    .bind(ev.subject)
    .bind(ev.data.to_string())
    .fetch_one(&mut *conn)
    .await
    .expect("insert");
    row.try_get(0).expect("seq")
}

/// The pre-chain `Store::append_events` (and, for one event, `append_event`).
async fn baseline_append_events(pool: &SqlitePool, evs: &[NewEvent<'_>]) -> i64 {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    let mut last = 0;
    for ev in evs {
        last = baseline_append(&mut tx, ev).await;
    }
    tx.commit().await.expect("commit");
    last
}

async fn chained(store: &Store, n: usize) {
    if n == 1 {
        store.append_event(&event()).await.expect("append");
    } else {
        let evs: Vec<NewEvent> = (0..n).map(|_| event()).collect();
        store.append_events(&evs).await.expect("append");
    }
}

async fn baseline(store: &Store, n: usize) {
    let evs: Vec<NewEvent> = (0..n).map(|_| event()).collect();
    baseline_append_events(store.raw_write_pool().expect("a SQLite store"), &evs).await;
}

/// Median of `rounds` ratios, each from `txs` chained transactions and `txs` baseline ones
/// timed back to back (the side that goes first alternates).
fn paired_ratio(rt: &Runtime, c: &Side, b: &Side, per_tx: usize, txs: usize) -> f64 {
    let rounds = 21;
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|r| {
            rt.block_on(async {
                let time = |chain: bool| async move {
                    let t0 = Instant::now();
                    for _ in 0..txs {
                        if chain {
                            chained(&c.store, per_tx).await;
                        } else {
                            baseline(&b.store, per_tx).await;
                        }
                    }
                    t0.elapsed().as_secs_f64()
                };
                let (tc, tb) = if r % 2 == 0 {
                    let tc = time(true).await;
                    (tc, time(false).await)
                } else {
                    let tb = time(false).await;
                    (time(true).await, tb)
                };
                tb / tc
            })
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

fn event_append(c: &mut Criterion) {
    let rt = Runtime::new().expect("rt");
    let (chain_side, base_side) = (side(&rt), side(&rt));
    let mut g = c.benchmark_group("event_append");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let mut lines = Vec::new();
    for (per_tx, label) in [(1usize, "single"), (100, "batch100")] {
        g.throughput(Throughput::Elements(per_tx as u64));
        let (tc, tb) = (Tally::default(), Tally::default());
        g.bench_function(format!("chained_{label}"), |bch| {
            bch.iter_custom(|iters| {
                let t0 = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        chained(&chain_side.store, per_tx).await;
                    }
                });
                let dt = t0.elapsed();
                tc.add(dt, iters);
                dt
            })
        });
        g.bench_function(format!("baseline_{label}"), |bch| {
            bch.iter_custom(|iters| {
                let t0 = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        baseline(&base_side.store, per_tx).await;
                    }
                });
                let dt = t0.elapsed();
                tb.add(dt, iters);
                dt
            })
        });
        let txs = if per_tx == 1 { 200 } else { 10 };
        let paired = paired_ratio(&rt, &chain_side, &base_side, per_tx, txs);
        lines.push(format!(
            "event_append/{label}: chained/baseline throughput {:.3} (criterion means), \
             {:.3} (median of paired rounds); goal >= {GOAL}",
            tb.mean() / tc.mean(),
            paired
        ));
    }
    g.finish();
    for l in lines {
        eprintln!("{l}");
    }
    // Both logs must still be whole: the chained one verifies, the baseline one is gap-free.
    rt.block_on(async {
        let p = happyx::progress::Progress::hidden();
        let s = chain_side.store.verify_chain(&p).await.expect("read");
        assert!(s.is_ok(), "the chained log does not verify");
        let n = base_side.store.last_event_seq().await.expect("seq");
        let rows = base_side
            .store
            .events_after(0, i64::MAX)
            .await
            .expect("rows");
        assert_eq!(rows.len() as i64, n, "the baseline log has gaps");
    });
}

criterion_group!(benches, event_append);
criterion_main!(benches);

//! The store on PostgreSQL against raw sqlx on the same PostgreSQL, measured in one run, as the
//! `events` and `store` benches do on SQLite.
//!
//! - `pg_event_append/{store,raw_sqlx}`: one event per transaction. The store side is
//!   `Store::append_event` (hash-chained, under the write lock); the raw side is the unchained
//!   append (`INSERT … (SELECT MAX(seq) + 1) …`) under the same write lock, which is what any
//!   correct gap-free append across hosts must take.
//! - `pg_token_use/{store,raw_sqlx}`: one-time tokens, each presented by 64 concurrent
//!   contenders (32 through each of two pools, as two hosts), through
//!   `happyx::approvals::spend` vs the same statements raw, one locked transaction per
//!   attempt. Prints uses/s and the p99 attempt latency.
//!
//! Each side writes a fresh database of its own on the cluster `TEST_POSTGRES_URL` names
//! (`scripts/pg-cluster.sh start DIR` prints one); without it the bench says so and stops.
//! After criterion's figures it prints the store/raw throughput ratios on stderr.
//!
//! Run: `TEST_POSTGRES_URL=… cargo bench -p happyx --bench postgres`.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use happyx::store::{NewEvent, Store};
use happyx::util::{new_id, now_ms, random_bytes};
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Runtime;

#[path = "common/approvals.rs"]
mod approvals;
#[path = "common/tally.rs"]
mod tally;
use approvals::{ApprovalRow, CONTENDERS, approved, run_row, store_use};
use tally::Tally;

/// What the store's PostgreSQL write transactions begin with (`happyx_store::engine`).
const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(5206530950243564119)";

/// A fresh database: a store on it (as host `host`) and a raw pool of the same size.
struct Side {
    store: Store,
    raw: PgPool,
}

async fn side(url: &str, dir: &std::path::Path) -> Side {
    let cfg = happyx::config::StorageConfig {
        url: Some(happyx::store::config::DatabaseUrl::parse(url).expect("url")),
        ..Default::default()
    };
    let store = Store::open(dir, &cfg).await.expect("store");
    let raw = sqlx::postgres::PgPoolOptions::new()
        .max_connections(cfg.read_connections.saturating_add(2))
        .connect(url)
        .await
        .expect("raw pool");
    Side { store, raw }
}

fn event() -> NewEvent<'static> {
    NewEvent::new("bench.event", "bench", "subject", json!({"k": 1}))
}

async fn raw_append(pool: &PgPool) {
    let mut tx = pool.begin_with(BEGIN_WRITE).await.expect("begin");
    let ev = event();
    sqlx::query(
        "INSERT INTO events (id, seq, at, code, actor, subject, data) \
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(now_ms())
    .bind(ev.code)
    .bind(ev.actor)
    .bind(ev.subject)
    .bind(ev.data.to_string())
    .execute(&mut *tx)
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
}

/// The same statements as `Store::use_approval`, issued raw under the same lock.
async fn raw_use(pool: &PgPool, token_hash: &str) -> bool {
    let mut tx = pool.begin_with(BEGIN_WRITE).await.expect("begin");
    let row: Option<ApprovalRow> = sqlx::query_as(
        "SELECT a.id, a.action_hash, a.status, a.expires_at, a.scope, a.nonce, n.value \
         FROM approvals a LEFT JOIN nonces n ON n.scope = a.scope WHERE a.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await
    .expect("select");
    let Some((aid, hash, status, expires, scope, nonce, current)) = row else {
        return false;
    };
    if status != "approved"
        || hash != "h"
        || expires <= now_ms()
        || current.as_deref() != Some(&nonce)
    {
        return false;
    }
    let n = sqlx::query("INSERT INTO approval_uses (id, use_hash, approval_id, run_id, used_at) VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (use_hash) DO NOTHING")
        .bind(new_id()).bind(token_hash).bind(&aid).bind(now_ms())
        .execute(&mut *tx).await.expect("use").rows_affected();
    if n != 1 {
        return false;
    }
    let run = run_row();
    sqlx::query("INSERT INTO agent_runs (id, recipe, risk, status, exit_code, session_id, requested_by, approval_id, idempotency_key, action_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11)")
        .bind(&run.id).bind(&run.recipe).bind(run.risk.as_str()).bind(run.status.as_str()).bind(&run.session_id).bind(&run.requested_by)
        .bind(&aid).bind(None::<String>).bind("h").bind(run.created_at).bind(run.updated_at)
        .execute(&mut *tx).await.expect("run");
    for (code, subject) in [
        ("run.created", run.id.as_str()),
        ("approval.used", aid.as_str()),
    ] {
        sqlx::query(
            "INSERT INTO events (id, seq, at, code, actor, subject, data) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), $2, $3, $4, $5, $6)",
        )
        .bind(new_id())
        .bind(now_ms())
        .bind(code)
        .bind("token:bench")
        .bind(subject)
        .bind("{}")
        .execute(&mut *tx)
        .await
        .expect("event");
    }
    sqlx::query("UPDATE approval_uses SET run_id = $1 WHERE use_hash = $2")
        .bind(&run.id)
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .expect("link");
    sqlx::query(
        "UPDATE approvals SET status = 'used', updated_at = $1 WHERE id = $2 AND status = 'approved'",
    )
    .bind(now_ms())
    .bind(&aid)
    .execute(&mut *tx)
    .await
    .expect("used");
    sqlx::query("UPDATE nonces SET value = $1, updated_at = $2 WHERE scope = $3")
        .bind(hex::encode(random_bytes::<16>()))
        .bind(now_ms())
        .bind(&scope)
        .execute(&mut *tx)
        .await
        .expect("nonce");
    tx.commit().await.expect("commit");
    true
}

/// Spends `tokens`, each presented by 64 concurrent tasks split over the two hosts' pools.
/// Returns (elapsed, successful uses, per-attempt latencies).
async fn contend(
    hosts: &[Side; 2],
    tokens: Vec<String>,
    raw: bool,
) -> (Duration, usize, Vec<Duration>) {
    let start = Instant::now();
    let mut handles = Vec::new();
    for th in tokens {
        let th = Arc::new(th);
        for c in 0..CONTENDERS {
            let h = &hosts[c % 2];
            let (store, pool, th) = (h.store.clone(), h.raw.clone(), th.clone());
            handles.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let ok = if raw {
                    raw_use(&pool, &th).await
                } else {
                    store_use(&store, &th).await
                };
                (ok, t0.elapsed())
            }));
        }
    }
    let mut ok = 0;
    let mut lat = Vec::new();
    for h in handles {
        let (o, l) = h.await.expect("join");
        ok += usize::from(o);
        lat.push(l);
    }
    (start.elapsed(), ok, lat)
}

fn postgres(c: &mut Criterion) {
    let rt = Runtime::new().expect("rt");
    let Some(urls) = rt.block_on(async {
        let mut urls = Vec::new();
        for _ in 0..4 {
            urls.push(happyx::store::test_support::postgres_database().await?);
        }
        Some(urls)
    }) else {
        eprintln!(
            "postgres bench: set TEST_POSTGRES_URL to a cluster (scripts/pg-cluster.sh start DIR)"
        );
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let sides: Vec<Side> = urls
        .iter()
        .map(|u| rt.block_on(side(u, tmp.path())))
        .collect();
    let mut lines = Vec::new();

    let mut g = c.benchmark_group("pg_event_append");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    let (ts, tr) = (Tally::default(), Tally::default());
    g.bench_function("store", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    sides[0].store.append_event(&event()).await.expect("append");
                }
            });
            let dt = t0.elapsed();
            ts.add(dt, iters);
            dt
        })
    });
    g.bench_function("raw_sqlx", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    raw_append(&sides[1].raw).await;
                }
            });
            let dt = t0.elapsed();
            tr.add(dt, iters);
            dt
        })
    });
    g.finish();
    lines.push(format!(
        "pg_event_append: store {:.0}/s, raw sqlx {:.0}/s, store/raw {:.3}",
        ts.per_second(),
        tr.per_second(),
        ts.per_second() / tr.per_second()
    ));

    // Two "hosts" per side: two stores (two pools) on one database.
    let token_sides = rt.block_on(async {
        let a = [
            side(&urls[2], tmp.path()).await,
            side(&urls[2], tmp.path()).await,
        ];
        let b = [
            side(&urls[3], tmp.path()).await,
            side(&urls[3], tmp.path()).await,
        ];
        [a, b]
    });
    let mut g = c.benchmark_group("pg_token_use");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    let mut rates = Vec::new();
    for (i, (name, raw)) in [("store", false), ("raw_sqlx", true)]
        .into_iter()
        .enumerate()
    {
        let hosts = &token_sides[i];
        let tally = Tally::default();
        let mut lat = Vec::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let tokens = rt.block_on(approved(&hosts[0].store, iters as usize));
                let (dt, ok, l) = rt.block_on(contend(hosts, tokens, raw));
                assert_eq!(ok, iters as usize, "exactly one use per token");
                tally.add(dt, iters);
                lat.extend(l);
                dt
            })
        });
        lat.sort();
        let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
        rates.push(tally.per_second());
        lines.push(format!(
            "pg_token_use/{name}: {:.0} uses/s, p99 attempt latency {p99:?} under {CONTENDERS} contenders over 2 hosts",
            tally.per_second()
        ));
    }
    g.finish();
    lines.push(format!(
        "pg_token_use: store/raw {:.3}",
        rates[0] / rates[1]
    ));
    for l in lines {
        eprintln!("{l}");
    }
}

criterion_group!(benches, postgres);
criterion_main!(benches);

//! Store benchmarks, each against a raw-sqlx baseline measured in the same run
//! on an identically configured database (WAL, synchronous=FULL). Event append with
//! and without the hash chain is measured by the `events` bench.
//!
//! - `token_use/*`: spending one-time approval tokens with 64 concurrent
//!   contenders per token, through `happyx::approvals::spend` vs the same statements
//!   raw, one transaction per use. Prints uses/s and p99 latency to stderr.
//!
//! Run: `cargo bench -p happyx --bench store`.

// A bench that cannot set up its data has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use happyx::config::StorageConfig;
use happyx::store::Store;
use happyx::util::{new_id, now_ms, random_bytes};
use sqlx::SqlitePool;
use tokio::runtime::Runtime;

#[path = "common/approvals.rs"]
mod approvals;
use approvals::{ApprovalRow, CONTENDERS, approved, run_row, store_use};

struct Env {
    _tmp: tempfile::TempDir,
    store: Store,
    raw: SqlitePool,
}

fn env(rt: &Runtime) -> Env {
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), &StorageConfig::default())
            .await
            .expect("store");
        // The raw baseline uses the store's own single write connection, so
        // both sides pay the same pragmas and the same file.
        let raw = store.raw_write_pool().expect("a SQLite store").clone();
        Env {
            _tmp: tmp,
            store,
            raw,
        }
    })
}

const RAW_EVENT: &str = "INSERT INTO events (id, seq, at, code, actor, subject, data) \
     VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?, ?, ?, ?, ?)";

/// The same statements as `Store::use_approval`, issued raw.
async fn raw_use(pool: &SqlitePool, token_hash: &str) -> bool {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    let row: Option<ApprovalRow> = sqlx::query_as(
        "SELECT a.id, a.action_hash, a.status, a.expires_at, a.scope, a.nonce, n.value \
         FROM approvals a LEFT JOIN nonces n ON n.scope = a.scope WHERE a.token_hash = ?",
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
    let n = sqlx::query("INSERT INTO approval_uses (id, use_hash, approval_id, run_id, used_at) VALUES (?, ?, ?, NULL, ?) ON CONFLICT (use_hash) DO NOTHING")
        .bind(new_id()).bind(token_hash).bind(&aid).bind(now_ms())
        .execute(&mut *tx).await.expect("use").rows_affected();
    if n != 1 {
        return false;
    }
    let run = run_row();
    sqlx::query("INSERT INTO agent_runs (id, recipe, risk, status, exit_code, session_id, requested_by, approval_id, idempotency_key, action_hash, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)")
        .bind(&run.id).bind(&run.recipe).bind(run.risk.as_str()).bind(run.status.as_str()).bind(&run.session_id).bind(&run.requested_by)
        .bind(&aid).bind(None::<String>).bind("h").bind(run.created_at).bind(run.updated_at)
        .execute(&mut *tx).await.expect("run");
    for (code, subject) in [
        ("run.created", run.id.as_str()),
        ("approval.used", aid.as_str()),
    ] {
        sqlx::query(RAW_EVENT)
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
    sqlx::query("UPDATE approval_uses SET run_id = ? WHERE use_hash = ?")
        .bind(&run.id)
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .expect("link");
    sqlx::query(
        "UPDATE approvals SET status = 'used', updated_at = ? WHERE id = ? AND status = 'approved'",
    )
    .bind(now_ms())
    .bind(&aid)
    .execute(&mut *tx)
    .await
    .expect("used");
    sqlx::query("UPDATE nonces SET value = ?, updated_at = ? WHERE scope = ?")
        .bind(hex::encode(random_bytes::<16>()))
        .bind(now_ms())
        .bind(&scope)
        .execute(&mut *tx)
        .await
        .expect("nonce");
    tx.commit().await.expect("commit");
    true
}

/// Spends `tokens`, each presented by 64 concurrent tasks. Returns
/// (elapsed, successful uses, per-attempt latencies).
async fn contend(e: &Env, tokens: Vec<String>, raw: bool) -> (Duration, usize, Vec<Duration>) {
    let store = e.store.clone();
    let pool = e.raw.clone();
    let start = Instant::now();
    let mut handles = Vec::new();
    for th in tokens {
        let th = Arc::new(th);
        for _ in 0..CONTENDERS {
            let (store, pool, th) = (store.clone(), pool.clone(), th.clone());
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

fn token_use(c: &mut Criterion) {
    let rt = Runtime::new().expect("rt");
    let e = env(&rt);
    let mut g = c.benchmark_group("token_use");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for (name, raw) in [
        ("store_64_contenders", false),
        ("raw_sqlx_64_contenders", true),
    ] {
        let mut all_lat = Vec::new();
        let mut uses = 0usize;
        let mut spent = Duration::ZERO;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let tokens = rt.block_on(approved(&e.store, iters as usize));
                let (dt, ok, lat) = rt.block_on(contend(&e, tokens, raw));
                assert_eq!(ok, iters as usize, "exactly one use per token");
                uses += ok;
                spent += dt;
                all_lat.extend(lat);
                dt
            })
        });
        all_lat.sort();
        let p99 = all_lat
            .get(all_lat.len() * 99 / 100)
            .copied()
            .unwrap_or_default();
        eprintln!(
            "token_use/{name}: {:.0} uses/s, p99 attempt latency {:?} ({} uses, zero double use)",
            uses as f64 / spent.as_secs_f64(),
            p99,
            uses
        );
    }
    g.finish();
}

criterion_group!(benches, token_use);
criterion_main!(benches);

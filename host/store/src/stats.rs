//! Aggregates for the public views: counts per table and status, redaction
//! counters, the last prune, and an incremental digest of the event log.

use crate::engine::db;
use crate::rows::Columns;
use sha2::{Digest, Sha256};

use super::{Result, Store};

/// Tables whose rows are counted per status in `/public/state`.
const STATUS_TABLES: &[&str] = &[
    "tasks",
    "sessions",
    "permissions",
    "approvals",
    "agent_runs",
];
/// Tables counted as a whole.
const COUNT_TABLES: &[&str] = &[
    "events",
    "tokens",
    "deployments",
    "agent_run_outputs",
    "approval_uses",
];

/// `(table, status or "", count)`.
pub type StatusCount = (String, String, i64);

/// Redaction counters of runs and terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactionTotals {
    /// `(findings, withheld chunks)` over every run.
    pub runs: (i64, i64),
    /// `(findings, withheld chunks)` over every terminal.
    pub terminals: (i64, i64),
}

/// The last pruner pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneRecord {
    pub at: i64,
    pub policy_hash: String,
    pub counts: serde_json::Value,
}

impl Store {
    /// `(pending approvals not yet expired, runs queued or running, terminals starting or
    /// running)`, read in one statement.
    pub async fn live_counts(&self) -> Result<(i64, i64, i64)> {
        let now = happyx_core::util::now_ms();
        let row: (i64, i64, i64) = db!(read self, dbc => sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at > $1), \
                    (SELECT COUNT(*) FROM agent_runs WHERE status IN ('queued', 'running')), \
                    (SELECT COUNT(*) FROM pty_sessions WHERE state IN ('starting', 'running'))",
        )
        .bind(now)
        .fetch_one(dbc)
        .await?);
        Ok(row)
    }

    pub async fn status_counts(&self) -> Result<Vec<StatusCount>> {
        let mut out = Vec::new();
        for t in STATUS_TABLES {
            let q =
                format!("SELECT status, COUNT(*) AS n FROM {t} GROUP BY status ORDER BY status");
            for r in db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
                .fetch_all(dbc)
                .await?)
            {
                out.push((t.to_string(), r.col("status")?, r.col("n")?));
            }
        }
        for t in COUNT_TABLES {
            let q = format!("SELECT COUNT(*) FROM {t}");
            let (n,): (i64,) = db!(read self, dbc => sqlx::query_as(sqlx::AssertSqlSafe(q))
                .fetch_one(dbc)
                .await?);
            out.push((t.to_string(), String::new(), n));
        }
        Ok(out)
    }

    /// (masked findings, chunks withheld because redaction failed) over all runs.
    pub async fn redaction_totals(&self) -> Result<RedactionTotals> {
        let (rf, ru, tf, tw): (Option<i64>, Option<i64>, Option<i64>, Option<i64>) = db!(read self, dbc => sqlx::query_as(
                "SELECT (SELECT CAST(SUM(findings) AS BIGINT) FROM agent_runs), \
                        (SELECT CAST(SUM(unredacted_chunks) AS BIGINT) FROM agent_runs), \
                        (SELECT CAST(SUM(findings) AS BIGINT) FROM pty_sessions), \
                        (SELECT CAST(SUM(withheld_chunks) AS BIGINT) FROM pty_sessions)",
            )
            .fetch_one(dbc)
            .await?);
        Ok(RedactionTotals {
            runs: (rf.unwrap_or(0), ru.unwrap_or(0)),
            terminals: (tf.unwrap_or(0), tw.unwrap_or(0)),
        })
    }

    /// Events in the log now.
    pub async fn event_count(&self) -> Result<i64> {
        let (n,): (i64,) = db!(read self, dbc => sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(dbc)
            .await?);
        Ok(n)
    }

    pub async fn last_prune(&self) -> Result<Option<PruneRecord>> {
        let row = db!(rows read self, dbc => sqlx::query(
            "SELECT at, policy_hash, counts FROM prunes ORDER BY at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(dbc)
        .await?);
        match row {
            None => Ok(None),
            Some(r) => {
                let counts: String = r.col("counts")?;
                Ok(Some(PruneRecord {
                    at: r.col("at")?,
                    policy_hash: r.col("policy_hash")?,
                    counts: serde_json::from_str(&counts).unwrap_or(serde_json::Value::Null),
                }))
            }
        }
    }

    /// Extends a hash chain over the event log from `(seq, digest)`:
    /// `d_n = SHA-256(d_{n-1} || len-prefixed(id, seq, at, code, actor, subject, data))`,
    /// with `d_0` = 32 zero bytes. Returns the new `(seq, digest)`.
    pub async fn extend_event_digest(
        &self,
        mut seq: i64,
        mut digest: [u8; 32],
    ) -> Result<(i64, [u8; 32])> {
        loop {
            let rows = db!(rows read self, dbc => sqlx::query(
                "SELECT id, seq, at, code, actor, subject, data FROM events WHERE seq > $1 ORDER BY seq LIMIT 5000",
            )
            .bind(seq)
            .fetch_all(dbc)
            .await?);
            if rows.is_empty() {
                return Ok((seq, digest));
            }
            for r in &rows {
                let mut h = Sha256::new();
                h.update(digest);
                let s: i64 = r.col("seq")?;
                let at: i64 = r.col("at")?;
                for field in [
                    r.col::<String>("id")?.into_bytes(),
                    s.to_be_bytes().to_vec(),
                    at.to_be_bytes().to_vec(),
                    r.col::<String>("code")?.into_bytes(),
                    r.col::<String>("actor")?.into_bytes(),
                    r.col::<String>("subject")?.into_bytes(),
                    r.col::<String>("data")?.into_bytes(),
                ] {
                    h.update((field.len() as u32).to_be_bytes());
                    h.update(&field);
                }
                digest = h.finalize().into();
                seq = s;
            }
        }
    }
}

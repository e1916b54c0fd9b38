//! What the pruner reads and deletes: item metadata per kind (never contents),
//! per-kind totals, bounded deletes, and the record of each pass.

use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::{NewEvent, Result, Store, append_event};
use crate::util::{new_id, now_ms};

/// Metadata of one prunable item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMeta {
    pub id: String,
    pub created_at: i64,
    pub bytes: i64,
    pub session_id: Option<String>,
}

/// How a kind of item is stored. Only a prefix of the event log (oldest first)
/// may ever be pruned, so its sequence stays gap-free from its first row.
struct KindSpec {
    kind: &'static str,
    table: &'static str,
    /// SELECT list yielding id, created_at, bytes, session_id.
    select: &'static str,
    /// Key column for deletes.
    key: &'static str,
}

const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: "run-output",
        table: "agent_run_outputs o",
        select: "o.id AS id, o.created_at AS created_at, o.length AS bytes, \
                 (SELECT session_id FROM agent_runs r WHERE r.id = o.run_id) AS session_id",
        key: "agent_run_outputs.id",
    },
    KindSpec {
        kind: "transcript-chunk",
        table: "transcript_chunks o",
        select: "o.id AS id, o.created_at AS created_at, o.length AS bytes, NULL AS session_id",
        key: "transcript_chunks.id",
    },
    KindSpec {
        kind: "envelope",
        table: "envelopes o",
        select: "o.id AS id, o.received_at AS created_at, LENGTH(o.ciphertext) AS bytes, \
                 o.session_id AS session_id",
        key: "envelopes.id",
    },
    KindSpec {
        kind: "event",
        table: "events o",
        select: "o.id AS id, o.at AS created_at, LENGTH(o.data) AS bytes, NULL AS session_id",
        key: "events.id",
    },
];

fn spec(kind: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The kinds the pruner knows, in the order it visits them.
pub fn retention_kinds() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

/// Deletes events by id and moves the chain's anchor ([`crate::audit`]) to the newest of
/// them, in the caller's transaction, so the events left still verify.
async fn prune_events(conn: &mut SqliteConnection, ids: &[String]) -> Result<u64> {
    let mut n = 0;
    let mut newest: Option<(i64, Option<String>)> = None;
    for id in ids {
        let gone: Option<(i64, Option<String>)> =
            sqlx::query_as("DELETE FROM events WHERE id = ? RETURNING seq, hash")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((seq, hash)) = gone {
            n += 1;
            if newest.as_ref().is_none_or(|(s, _)| seq > *s) {
                newest = Some((seq, hash));
            }
        }
    }
    if let Some((seq, hash)) = newest {
        sqlx::query(
            "INSERT INTO event_anchor (id, seq, hash) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
             WHERE excluded.seq > event_anchor.seq",
        )
        .bind(seq)
        .bind(hash.unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    }
    Ok(n)
}

impl Store {
    /// `(count, bytes)` of all stored items of `kind`.
    pub async fn retention_totals(&self, kind: &str) -> Result<(i64, i64)> {
        let Some(k) = spec(kind) else {
            return Ok((0, 0));
        };
        let q = format!(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM (SELECT {} FROM {})",
            k.select, k.table
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(&self.read)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Items of `kind`, oldest first, after the `(created_at, id)` cursor.
    pub async fn retention_items(
        &self,
        kind: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ItemMeta>> {
        let Some(k) = spec(kind) else {
            return Ok(Vec::new());
        };
        let (at, id) = after.unwrap_or((i64::MIN, ""));
        let q = format!(
            "SELECT * FROM (SELECT {} FROM {}) WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
            k.select, k.table
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ItemMeta {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    bytes: r.try_get("bytes")?,
                    session_id: r.try_get("session_id")?,
                })
            })
            .collect()
    }

    /// Deletes items of `kind` by id in one transaction; returns how many went.
    /// Deleting an id that is already gone is a no-op (a rerun is idempotent).
    pub async fn prune_items(&self, kind: &str, ids: &[String]) -> Result<u64> {
        let Some(k) = spec(kind) else { return Ok(0) };
        let table = k.key.split('.').next().unwrap_or(k.key);
        let mut tx = self.begin().await?;
        if table == "events" {
            let n = prune_events(&mut tx, ids).await?;
            tx.commit().await?;
            return Ok(n);
        }
        let mut n = 0;
        for id in ids {
            let q = format!("DELETE FROM {table} WHERE id = ?");
            n += sqlx::query(sqlx::AssertSqlSafe(q))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Records a finished pass and its `retention.pruned` event.
    pub async fn record_prune(&self, policy_hash: &str, counts: &serde_json::Value) -> Result<()> {
        let mut tx = self.begin().await?;
        let id = new_id();
        sqlx::query("INSERT INTO prunes (id, at, policy_hash, counts) VALUES (?, ?, ?, ?)")
            .bind(&id)
            .bind(now_ms())
            .bind(policy_hash)
            .bind(counts.to_string())
            .execute(&mut *tx)
            .await?;
        let ev = NewEvent::new(
            "retention.pruned",
            "host",
            &id,
            json!({ "policy_hash": policy_hash, "counts": counts }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }
}

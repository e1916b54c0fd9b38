//! What the pruner reads and deletes: item metadata per [`RetentionKind`] (never contents),
//! per-kind totals, bounded batches that commit with their own audit event, and the record
//! of each pass. Leftovers come from three tables (approvals, enrollments, attach tickets);
//! their item ids carry the table as a prefix (`approval:…`, `enrollment:…`,
//! `attach-ticket:…`).

use crate::engine::{Tx, db};
use crate::rows::Columns;
use serde_json::json;

use super::{NewEvent, Result, Store, append_event};
use happyx_core::retention_kind::RetentionKind;
use happyx_core::util::{new_id, now_ms};

/// Metadata of one prunable item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMeta {
    pub id: String,
    pub created_at: i64,
    pub bytes: i64,
    pub session_id: Option<String>,
}

/// What pruning one row of a source does.
#[derive(Clone, Copy, PartialEq)]
enum Prune {
    /// The row goes.
    Delete,
    /// The row stays (it is part of the audit trail) but its token hash is replaced by
    /// `pruned:<id>`, so no token material is left and the UNIQUE column stays unique.
    BlankToken,
}

/// One table holding items of a kind. Only a prefix of the event log (oldest first) may
/// ever be pruned, so its sequence stays gap-free from its first row.
struct Source {
    table: &'static str,
    /// SELECT list yielding id, created_at, bytes, session_id.
    select: &'static str,
    /// Which rows are items at all (`{now}` is replaced by the pass's clock); `TRUE` for all.
    eligible: &'static str,
    /// Prefix of the item ids of this source (`""` when the kind has one source), so that a
    /// kind with several tables can tell its ids apart.
    prefix: &'static str,
    prune: Prune,
}

/// The tables of each kind.
fn sources(kind: RetentionKind) -> &'static [Source] {
    match kind {
        RetentionKind::RunOutput => &[Source {
            table: "agent_run_outputs",
            select: "o.id AS id, o.created_at AS created_at, o.length AS bytes, \
                     (SELECT session_id FROM agent_runs r WHERE r.id = o.run_id) AS session_id",
            eligible: "TRUE",
            prefix: "",
            prune: Prune::Delete,
        }],
        RetentionKind::TranscriptChunk => &[Source {
            table: "transcript_chunks",
            select: "o.id AS id, o.created_at AS created_at, o.length AS bytes, NULL AS session_id",
            eligible: "TRUE",
            prefix: "",
            prune: Prune::Delete,
        }],
        RetentionKind::Envelope => &[Source {
            table: "envelopes",
            select: "o.id AS id, o.received_at AS created_at, CAST(LENGTH(o.ciphertext) AS BIGINT) AS bytes, \
                     o.session_id AS session_id",
            eligible: "TRUE",
            prefix: "",
            prune: Prune::Delete,
        }],
        RetentionKind::Event => &[Source {
            table: "events",
            select: "o.id AS id, o.at AS created_at, CAST(LENGTH(o.data) AS BIGINT) AS bytes, NULL AS session_id",
            eligible: "TRUE",
            prefix: "",
            prune: Prune::Delete,
        }],
        RetentionKind::Leftover => &[
            Source {
                table: "approvals",
                select: "'approval:' || o.id AS id, o.created_at AS created_at, \
                         CAST(LENGTH(o.token_hash) AS BIGINT) AS bytes, NULL AS session_id",
                eligible: "o.token_hash NOT LIKE 'pruned:%' \
                           AND (o.status IN ('used', 'denied') OR o.expires_at <= {now})",
                prefix: "approval:",
                prune: Prune::BlankToken,
            },
            Source {
                table: "enrollments",
                select: "'enrollment:' || o.id AS id, o.created_at AS created_at, \
                         CAST(LENGTH(o.code_hash) AS BIGINT) AS bytes, NULL AS session_id",
                eligible: "(o.used_at IS NOT NULL OR o.expires_at <= {now})",
                prefix: "enrollment:",
                prune: Prune::Delete,
            },
            Source {
                table: "pty_attach_tickets",
                select: "'attach-ticket:' || o.id AS id, o.created_at AS created_at, \
                         CAST(LENGTH(o.ticket_hash) AS BIGINT) AS bytes, NULL AS session_id",
                eligible: "(o.used_at IS NOT NULL OR o.expires_at <= {now})",
                prefix: "attach-ticket:",
                prune: Prune::Delete,
            },
        ],
    }
}

/// `SELECT id, created_at, bytes, session_id` over every item of `kind` at `now`.
fn items_query(kind: RetentionKind, now: i64) -> String {
    sources(kind)
        .iter()
        .map(|s| {
            format!(
                "SELECT {} FROM {} o WHERE {}",
                s.select,
                s.table,
                s.eligible.replace("{now}", &now.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The kinds the pruner knows, in the order it visits them.
pub fn retention_kinds() -> [RetentionKind; 5] {
    RetentionKind::ALL
}

/// Deletes events by id and moves the chain's anchor ([`crate::audit`]) to the newest of
/// them, in the caller's transaction, so the events left still verify.
async fn prune_events(conn: &mut Tx, ids: &[String]) -> Result<u64> {
    let mut n = 0;
    let mut newest: Option<(i64, Option<String>)> = None;
    for id in ids {
        let gone: Option<(i64, Option<String>)> = db!(conn, dbc => sqlx::query_as("DELETE FROM events WHERE id = $1 RETURNING seq, hash")
                .bind(id)
                .fetch_optional(dbc)
                .await?);
        if let Some((seq, hash)) = gone {
            n += 1;
            if newest.as_ref().is_none_or(|(s, _)| seq > *s) {
                newest = Some((seq, hash));
            }
        }
    }
    if let Some((seq, hash)) = newest {
        db!(conn, dbc => sqlx::query(
            "INSERT INTO event_anchor (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
             WHERE excluded.seq > event_anchor.seq",
        )
        .bind(seq)
        .bind(hash.unwrap_or_default())
        .execute(dbc)
        .await?.rows_affected());
    }
    Ok(n)
}

impl Store {
    /// `(count, bytes)` of all stored items of `kind` at `now` (Unix ms).
    pub async fn retention_totals(&self, kind: RetentionKind, now: i64) -> Result<(i64, i64)> {
        let q = format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM ({}) AS items",
            items_query(kind, now)
        );
        let row = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(dbc)
            .await?);
        Ok((row.col("n")?, row.col("bytes")?))
    }

    /// Items of `kind` at `now`, oldest first, after the `(created_at, id)` cursor.
    pub async fn retention_items(
        &self,
        kind: RetentionKind,
        now: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ItemMeta>> {
        let (at, id) = after.unwrap_or((i64::MIN, ""));
        let q = format!(
            "SELECT * FROM ({}) AS items WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
            items_query(kind, now)
        );
        let rows = db!(rows read self, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(dbc)
            .await?);
        rows.iter()
            .map(|r| {
                Ok(ItemMeta {
                    id: r.col("id")?,
                    created_at: r.col("created_at")?,
                    bytes: r.col("bytes")?,
                    session_id: r.col("session_id")?,
                })
            })
            .collect()
    }

    /// Prunes one batch of items of `kind` by id and, if any went, appends its
    /// `retention.batch_pruned` event (kind, count, policy hash; no ids, no content), all in
    /// one transaction: a pass killed midway leaves no deletion without its record.
    /// Returns how many went and the size of the event it appended (0 when none went), so
    /// that a pass can keep its totals current without counting again. An id that is
    /// already gone, or no longer an item at `now` (a pending approval, an unused ticket), is
    /// skipped, so a rerun is idempotent.
    pub async fn prune_batch(
        &self,
        kind: RetentionKind,
        ids: &[String],
        policy_hash: &str,
        now: i64,
    ) -> Result<(u64, u64)> {
        let mut tx = self.begin().await?;
        let n = if kind == RetentionKind::Event {
            prune_events(&mut tx, ids).await?
        } else {
            let mut n = 0;
            for id in ids {
                let Some((src, key)) = sources(kind).iter().find_map(|s| {
                    id.strip_prefix(s.prefix)
                        .filter(|k| !k.is_empty())
                        .map(|k| (s, k))
                }) else {
                    continue;
                };
                let cond = src.eligible.replace("{now}", &now.to_string());
                let q = match src.prune {
                    Prune::Delete => {
                        format!("DELETE FROM {} AS o WHERE o.id = $1 AND {cond}", src.table)
                    }
                    Prune::BlankToken => format!(
                        "UPDATE {} AS o SET token_hash = 'pruned:' || o.id WHERE o.id = $1 AND {cond}",
                        src.table
                    ),
                };
                n += db!(tx, dbc => sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(key)
                    .execute(dbc)
                    .await?.rows_affected());
            }
            n
        };
        let mut event_bytes = 0;
        if n > 0 {
            let data = json!({ "kind": kind, "count": n, "policy_hash": policy_hash });
            event_bytes = data.to_string().len() as u64;
            let ev = NewEvent::new("retention.batch_pruned", "host", kind.as_str(), data);
            append_event(&mut tx, &ev).await?;
        }
        tx.commit().await?;
        Ok((n, event_bytes))
    }

    /// Records a finished pass and its `retention.pruned` event.
    pub async fn record_prune(&self, policy_hash: &str, counts: &serde_json::Value) -> Result<()> {
        let mut tx = self.begin().await?;
        let id = new_id();
        db!(tx, dbc => sqlx::query("INSERT INTO prunes (id, at, policy_hash, counts) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(now_ms())
            .bind(policy_hash)
            .bind(counts.to_string())
            .execute(dbc)
            .await?.rows_affected());
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

//! The append-only, gap-free audit log.

use serde_json::Value;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::{EventRow, Result, Store, StoreError};
use crate::audit::{self, ChainError, ChainSummary, EventFields, Verifier};
use crate::progress::Progress;
use crate::util::{new_id, now_ms};

/// An event to append in the same transaction as the change it records.
/// `data` must be public-safe: identifiers, counters, hashes; never secrets.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub code: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub data: Value,
}

impl<'a> NewEvent<'a> {
    pub fn new(code: &'a str, actor: &'a str, subject: &'a str, data: Value) -> Self {
        Self {
            code,
            actor,
            subject,
            data,
        }
    }
}

/// The newest event's `(seq, hash)`, else the prune anchor's, else `(0, genesis)`: what the
/// next event chains to. A malformed stored hash (only a tampered database has one) chains
/// from the genesis value; the break stays visible to `happyx audit verify`.
async fn chain_tip(conn: &mut SqliteConnection) -> Result<(i64, [u8; 32])> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let row = match row {
        Some(r) => Some(r),
        None => sqlx::query_as("SELECT seq, hash FROM event_anchor WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?
            .map(|(seq, hash): (i64, String)| (seq, Some(hash))),
    };
    Ok(match row {
        None => (0, audit::GENESIS),
        Some((seq, hash)) => (
            seq,
            hash.as_deref()
                .and_then(audit::parse_hash)
                .unwrap_or(audit::GENESIS),
        ),
    })
}

/// Appends inside an open write transaction; returns the new sequence number.
/// Gap-free because the write lock is held from `BEGIN IMMEDIATE` to commit; the row's chain
/// hash ([`crate::audit`]) is computed here, from the newest row, in the same transaction.
pub(super) async fn append(conn: &mut SqliteConnection, ev: &NewEvent<'_>) -> Result<i64> {
    let tip = chain_tip(conn).await?;
    Ok(append_after(conn, ev, tip).await?.0)
}

/// Appends `ev` after `tip` (the `(seq, hash)` [`chain_tip`] read in this same transaction, or
/// what the previous call returned); returns the new tip.
async fn append_after(
    conn: &mut SqliteConnection,
    ev: &NewEvent<'_>,
    (prev_seq, prev): (i64, [u8; 32]),
) -> Result<(i64, [u8; 32])> {
    let seq = prev_seq + 1;
    let id = new_id();
    let at = now_ms();
    let data = ev.data.to_string();
    let hash = audit::event_hash(
        &prev,
        &EventFields {
            seq,
            id: &id,
            at,
            code: ev.code,
            actor: ev.actor,
            subject: ev.subject,
            data: &data,
        },
    );
    sqlx::query(
        "INSERT INTO events (id, seq, at, code, actor, subject, data, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(seq)
    .bind(at)
    .bind(ev.code)
    .bind(ev.actor)
    .bind(ev.subject)
    .bind(data)
    .bind(hex::encode(hash))
    .execute(&mut *conn)
    .await?;
    Ok((seq, hash))
}

/// Rows read per batch when walking the chain.
const CHAIN_BATCH: i64 = 10_000;

/// Hashes the events a database had before the chain existed, once: while
/// `event_hash_backfill` holds its row (put there by migration 0007), rows without a hash
/// get one, in `seq` order, chained from the first event (a log whose oldest events were
/// already pruned gets an anchor at the seq before its first one, with the genesis value).
/// One transaction; the marker row goes with it, so a hash removed later is never refilled.
pub(super) async fn backfill_hashes(pool: &SqlitePool) -> Result<u64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (owed,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_hash_backfill")
        .fetch_one(&mut *tx)
        .await?;
    if owed == 0 {
        return Ok(0);
    }
    let anchor: Option<(i64,)> = sqlx::query_as("SELECT seq FROM event_anchor WHERE id = 1")
        .fetch_optional(&mut *tx)
        .await?;
    if anchor.is_none() {
        let (first,): (Option<i64>,) = sqlx::query_as("SELECT MIN(seq) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        if let Some(first) = first.filter(|f| *f > 1) {
            sqlx::query("INSERT INTO event_anchor (id, seq, hash) VALUES (1, ?, ?)")
                .bind(first - 1)
                .bind(hex::encode(audit::GENESIS))
                .execute(&mut *tx)
                .await?;
        }
    }
    let mut prev = audit::GENESIS;
    let mut after = i64::MIN;
    let mut filled = 0u64;
    loop {
        let rows = sqlx::query(
            "SELECT id, seq, at, code, actor, subject, data, hash FROM events \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(CHAIN_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("seq")?;
        for r in &rows {
            let stored: Option<String> = r.try_get("hash")?;
            if let Some(h) = stored.as_deref().and_then(audit::parse_hash) {
                prev = h;
                continue;
            }
            let (id, code, actor, subject, data): (String, String, String, String, String) = (
                r.try_get("id")?,
                r.try_get("code")?,
                r.try_get("actor")?,
                r.try_get("subject")?,
                r.try_get("data")?,
            );
            let seq: i64 = r.try_get("seq")?;
            prev = audit::event_hash(
                &prev,
                &EventFields {
                    seq,
                    id: &id,
                    at: r.try_get("at")?,
                    code: &code,
                    actor: &actor,
                    subject: &subject,
                    data: &data,
                },
            );
            sqlx::query("UPDATE events SET hash = ? WHERE seq = ?")
                .bind(hex::encode(prev))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            filled += 1;
        }
    }
    sqlx::query("DELETE FROM event_hash_backfill")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if filled > 0 {
        tracing::info!(
            events = filled,
            "hashed the existing event log into its chain"
        );
    }
    Ok(filled)
}

/// Walks the whole chain on `conn` (inside the caller's transaction, for a consistent
/// view), oldest first. The outer error is a storage failure; the inner one the first
/// bad `seq`.
pub(crate) async fn verify_chain_on(
    conn: &mut SqliteConnection,
    progress: &Progress,
) -> Result<std::result::Result<ChainSummary, ChainError>> {
    let anchor: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM event_anchor WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?;
    let mut v = match Verifier::new(anchor.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT id, seq, at, code, actor, subject, data, hash FROM events \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(CHAIN_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("seq")?;
        for r in &rows {
            let hash: Option<&str> = r.try_get("hash")?;
            let ev = EventFields {
                seq: r.try_get("seq")?,
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                code: r.try_get("code")?,
                actor: r.try_get("actor")?,
                subject: r.try_get("subject")?,
                data: r.try_get("data")?,
            };
            if let Err(e) = v.push(&ev, hash) {
                return Ok(Err(e));
            }
        }
        progress.inc(rows.len() as u64);
    }
    Ok(Ok(v.finish()))
}

fn event_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<EventRow> {
    let data: String = r.try_get("data")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        code: r.try_get("code")?,
        actor: r.try_get("actor")?,
        subject: r.try_get("subject")?,
        data: serde_json::from_str(&data).map_err(|_| StoreError::Corrupt("events.data"))?,
    })
}

impl Store {
    /// Appends one event in its own transaction (for changes that are only events).
    pub async fn append_event(&self, ev: &NewEvent<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let seq = append(&mut tx, ev).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Appends several events in one transaction; returns the last sequence number.
    pub async fn append_events(&self, evs: &[NewEvent<'_>]) -> Result<i64> {
        let mut tx = self.begin().await?;
        // The tip is read once; each event chains to the one appended before it.
        let mut tip = chain_tip(&mut tx).await?;
        let mut last = 0;
        for ev in evs {
            tip = append_after(&mut tx, ev, tip).await?;
            last = tip.0;
        }
        tx.commit().await?;
        Ok(last)
    }

    /// Events with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, seq, at, code, actor, subject, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Checks the whole event chain from the prune anchor to the newest event, in one read
    /// transaction. The outer error is a storage failure; the inner one the first bad `seq`.
    pub async fn verify_chain(
        &self,
        progress: &Progress,
    ) -> Result<std::result::Result<ChainSummary, ChainError>> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(&self.read)
            .await?;
        progress.add_total(n.max(0) as u64);
        let mut tx = self.read.begin().await?;
        let out = verify_chain_on(&mut tx, progress).await?;
        tx.rollback().await?;
        Ok(out)
    }

    /// The chain's head `(seq, hex hash)` and anchor `(seq, hex hash)`, as stored (not
    /// checked): what `/public/evidence` publishes. `(0, genesis)` stands for none.
    pub async fn chain_head(&self) -> Result<((i64, String), (i64, String))> {
        let mut conn = self.read.acquire().await?;
        let anchor: (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM event_anchor WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or_else(|| (0, hex::encode(audit::GENESIS)));
        let head: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?;
        let head = match head {
            Some((seq, hash)) => (seq, hash.unwrap_or_default()),
            None => anchor.clone(),
        };
        Ok((head, anchor))
    }

    /// Highest sequence number, 0 when the log is empty.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(seq.unwrap_or(0))
    }
}

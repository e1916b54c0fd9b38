//! The append-only, gap-free audit log.

use serde_json::Value;
use sqlx::{Row, SqliteConnection};

use super::{EventRow, Result, Store, StoreError};
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

/// Appends inside an open write transaction; returns the new sequence number.
/// Gap-free because the write lock is held from `BEGIN IMMEDIATE` to commit.
pub(super) async fn append(conn: &mut SqliteConnection, ev: &NewEvent<'_>) -> Result<i64> {
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
    .await?;
    Ok(row.try_get(0)?)
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
        let mut last = 0;
        for ev in evs {
            last = append(&mut tx, ev).await?;
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

    /// Highest sequence number, 0 when the log is empty.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(seq.unwrap_or(0))
    }
}

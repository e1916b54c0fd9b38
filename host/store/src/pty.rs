//! PTY sessions: the session row, its lifecycle events (`pty_events`, each
//! with its audit event in the same transaction), transcript chunks (raw data
//! private, redacted copy for every other view) and single-use attach tickets.
//!
//! A transcript chunk's masked copy is stored only when it differs from the raw bytes
//! (most terminal output holds no secret, and storing it twice doubled what every commit
//! and checkpoint writes): `redaction = 'ok'` with `redacted` NULL means "the masked copy is
//! the raw bytes"; `redaction = 'withheld'` (always with `redacted` NULL) means the redactor
//! failed and nothing may be shown. [`chunk_from_row`] turns both back into
//! [`TranscriptChunk::redacted`], so no reader sees the difference.

use crate::engine::{Tx, db};
use serde_json::{Value, json};

use crate::rows::{Columns, FromColumns, vocab_column};
use happyx_core::vocab::PtyState;

use super::{
    NewEvent, NewPty, NewTicket, PtyHolderRow, PtySession, Result, SpentTicket, Store, StoreError,
    TranscriptChunk, append_event,
};
use happyx_core::util::{new_id, now_ms};

pub(super) const COLS: &str = "id, recipe, risk, state, pid, exit_code, exit_signal, rows, cols, \
    persisted_offset, findings, withheld_chunks, truncated, requested_by, approval_id, created_at, \
    updated_at, exited_at, error, recipe_plugin_sha256, host_id";

pub(super) fn pty_from_row(r: &impl Columns) -> Result<PtySession> {
    Ok(PtySession {
        id: r.col("id")?,
        recipe: r.col("recipe")?,
        risk: vocab_column(r, "risk", "pty_sessions.risk")?,
        state: vocab_column(r, "state", "pty_sessions.state")?,
        pid: r.col("pid")?,
        exit_code: r.col("exit_code")?,
        exit_signal: r.col("exit_signal")?,
        rows: r.col("rows")?,
        cols: r.col("cols")?,
        output_bytes: r.col("persisted_offset")?,
        findings: r.col("findings")?,
        withheld_chunks: r.col("withheld_chunks")?,
        truncated: r.col::<i64>("truncated")? != 0,
        requested_by: r.col("requested_by")?,
        approval_id: r.col("approval_id")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        exited_at: r.col("exited_at")?,
        error: r.col("error")?,
        recipe_plugin_sha256: r.col("recipe_plugin_sha256")?,
        host_id: r.col("host_id")?,
    })
}

impl FromColumns for PtySession {
    fn from_columns(r: &impl Columns) -> Result<Self> {
        pty_from_row(r)
    }
}

fn holder_from_row(r: &impl Columns) -> Result<PtyHolderRow> {
    Ok(PtyHolderRow {
        id: r.col("id")?,
        state: vocab_column(r, "state", "pty_sessions.state")?,
        pid: r.col("pid")?,
        socket_path: r.col("socket_path")?,
        secret_hash: r.col("secret_hash")?,
        boot_id: r.col("boot_id")?,
        persisted_offset: r.col("persisted_offset")?,
        host_id: r.col("host_id")?,
    })
}

fn chunk_from_row(r: &impl Columns) -> Result<TranscriptChunk> {
    let data: Vec<u8> = r.col("data")?;
    let stored: Option<Vec<u8>> = r.col("redacted")?;
    let redaction: String = r.col("redaction")?;
    let redacted = match (stored, redaction.as_str()) {
        (Some(masked), _) => Some(masked),
        // The masked copy is the raw bytes (stored once).
        (None, "ok") => Some(data.clone()),
        (None, _) => None,
    };
    Ok(TranscriptChunk {
        byte_offset: r.col("byte_offset")?,
        data,
        redacted,
        findings: r.col("findings")?,
        policy_hash: r.col("policy_hash")?,
    })
}

/// Writes one `pty_events` row and its audit event (`pty.<kind>`).
async fn pty_event(
    conn: &mut Tx,
    pty_id: &str,
    kind: &str,
    actor: &str,
    data: Value,
) -> Result<()> {
    let now = now_ms();
    db!(conn, dbc => sqlx::query(
        "INSERT INTO pty_events (id, pty_id, kind, actor, data, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(pty_id)
    .bind(kind)
    .bind(actor)
    .bind(data.to_string())
    .bind(now)
    .execute(dbc)
    .await?.rows_affected());
    let code = format!("pty.{kind}");
    append_event(conn, &NewEvent::new(&code, actor, pty_id, data)).await?;
    Ok(())
}

/// Inserts a session row (state `starting`) and its `pty.created` event. `host` owns it: the
/// host whose holder keeps the terminal.
pub(super) async fn insert_pty(conn: &mut Tx, p: &NewPty, host: Option<&str>) -> Result<()> {
    let s = &p.session;
    db!(conn, dbc => sqlx::query(
        "INSERT INTO pty_sessions (id, recipe, risk, action_hash, state, pid, socket_path, secret_hash, \
         boot_id, rows, cols, requested_by, approval_id, created_at, updated_at, recipe_plugin_sha256, host_id) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&s.id)
    .bind(&s.recipe)
    .bind(s.risk.as_str())
    .bind(&p.action_hash)
    .bind(s.state.as_str())
    .bind(&p.socket_path)
    .bind(&p.secret_hash)
    .bind(&p.boot_id)
    .bind(s.rows)
    .bind(s.cols)
    .bind(&s.requested_by)
    .bind(&s.approval_id)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(&s.recipe_plugin_sha256)
    .bind(host)
    .execute(dbc)
    .await?.rows_affected());
    let ev = NewEvent::new(
        "pty.created",
        &s.requested_by,
        &s.id,
        json!({ "recipe": s.recipe, "risk": s.risk, "approval_id": s.approval_id }),
    );
    append_event(conn, &ev).await?;
    Ok(())
}

/// Inserts an attach ticket and its `pty.ticket_issued` event.
pub(super) async fn insert_ticket(
    conn: &mut Tx,
    t: &NewTicket,
    approval_id: Option<&str>,
) -> Result<()> {
    db!(conn, dbc => sqlx::query(
        "INSERT INTO pty_attach_tickets (id, pty_id, mode, ticket_hash, requested_by, approval_id, \
         expires_at, used_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
    )
    .bind(&t.id)
    .bind(&t.pty_id)
    .bind(t.mode.as_str())
    .bind(&t.ticket_hash)
    .bind(&t.requested_by)
    .bind(approval_id)
    .bind(t.expires_at)
    .bind(now_ms())
    .execute(dbc)
    .await?.rows_affected());
    let ev = NewEvent::new(
        "pty.ticket_issued",
        &t.requested_by,
        &t.pty_id,
        json!({ "ticket_id": t.id, "mode": t.mode, "approval_id": approval_id }),
    );
    append_event(conn, &ev).await?;
    Ok(())
}

impl Store {
    /// Creates a PTY session that needs no approval.
    pub async fn create_pty(&self, p: &NewPty) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_pty(&mut tx, p, self.host_id()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn pty(&self, id: &str) -> Result<Option<PtySession>> {
        self.lookup(
            &format!("SELECT {COLS} FROM pty_sessions WHERE id = $1"),
            id,
        )
        .await
    }

    /// Sessions not finished (`starting` or `running`) of this store's host (and those written
    /// before owners were recorded; without a host, all), with what reaching their holder needs.
    pub async fn unfinished_ptys(&self) -> Result<Vec<PtyHolderRow>> {
        let rows = db!(rows write self, dbc => sqlx::query(
            "SELECT id, state, pid, socket_path, secret_hash, boot_id, persisted_offset, host_id \
             FROM pty_sessions WHERE state IN ('starting', 'running') \
             AND ($1 IS NULL OR host_id = $1 OR host_id IS NULL) ORDER BY id",
        )
        .bind(self.host_id())
        .fetch_all(dbc)
        .await?);
        rows.iter().map(holder_from_row).collect()
    }

    pub async fn pty_holder(&self, id: &str) -> Result<Option<PtyHolderRow>> {
        let row = db!(rows write self, dbc => sqlx::query(
            "SELECT id, state, pid, socket_path, secret_hash, boot_id, persisted_offset, host_id \
             FROM pty_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(dbc)
        .await?);
        row.as_ref().map(holder_from_row).transpose()
    }

    /// `starting` → `running` with the child's pid; writes the `spawn` event.
    pub async fn mark_pty_running(&self, id: &str, pid: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = db!(tx, dbc => sqlx::query(
            "UPDATE pty_sessions SET state = 'running', pid = $1, updated_at = $2 WHERE id = $3 AND state = 'starting'",
        )
        .bind(pid)
        .bind(now_ms())
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        if n != 1 {
            return Err(StoreError::NotStarting);
        }
        pty_event(&mut tx, id, "spawn", "host", json!({ "pid": pid })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a lifecycle event (`resize` also stores the new size).
    pub async fn record_pty_event(
        &self,
        id: &str,
        kind: &str,
        actor: &str,
        data: Value,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        if kind == "resize" {
            let rows = data["rows"].as_i64().unwrap_or(0);
            let cols = data["cols"].as_i64().unwrap_or(0);
            db!(tx, dbc => sqlx::query("UPDATE pty_sessions SET rows = $1, cols = $2, updated_at = $3 WHERE id = $4")
                .bind(rows)
                .bind(cols)
                .bind(now_ms())
                .bind(id)
                .execute(dbc)
                .await?.rows_affected());
        }
        pty_event(&mut tx, id, kind, actor, data).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a session: `exited` (or `killed` when a kill was requested) with
    /// its status, or `lost`. Only a `starting`/`running` session changes.
    pub async fn finish_pty(
        &self,
        id: &str,
        lost_reason: Option<&str>,
        exit_code: Option<i64>,
        exit_signal: Option<i64>,
    ) -> Result<Option<PtyState>> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let state = if lost_reason.is_some() {
            PtyState::Lost
        } else {
            let (killed,): (i64,) = db!(tx, dbc => sqlx::query_as(
                "SELECT COUNT(*) FROM pty_events WHERE pty_id = $1 AND kind = 'kill'",
            )
            .bind(id)
            .fetch_one(dbc)
            .await?);
            if killed > 0 {
                PtyState::Killed
            } else {
                PtyState::Exited
            }
        };
        let n = db!(tx, dbc => sqlx::query(
            "UPDATE pty_sessions SET state = $1, exit_code = $2, exit_signal = $3, exited_at = $4, updated_at = $5 \
             WHERE id = $6 AND state IN ('starting', 'running')",
        )
        .bind(state.as_str())
        .bind(exit_code)
        .bind(exit_signal)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        if n != 1 {
            return Ok(None);
        }
        let (kind, data) = match lost_reason {
            Some(r) => ("lost", json!({ "reason": r })),
            None => (
                "exit",
                json!({ "state": state, "exit_code": exit_code, "signal": exit_signal }),
            ),
        };
        pty_event(&mut tx, id, kind, "host", data).await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    /// `starting` → `exited` with code 127 and `error`: the program could not be started.
    /// Recorded in the session and its `exit` event, not only in the log.
    pub async fn fail_pty_spawn(&self, id: &str, error: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let n = db!(tx, dbc => sqlx::query(
            "UPDATE pty_sessions SET state = 'exited', exit_code = 127, error = $1, exited_at = $2, \
             updated_at = $3 WHERE id = $4 AND state = 'starting'",
        )
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(dbc)
        .await?.rows_affected());
        if n == 1 {
            let data = json!({ "state": PtyState::Exited, "exit_code": 127, "error": error });
            pty_event(&mut tx, id, "exit", "host", data).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Persists transcript chunks (in offset order, contiguous from the stored
    /// offset) and advances `persisted_offset`, in one transaction. `prev_fix`
    /// replaces the masked copy of an earlier chunk (a secret split across the
    /// boundary). Returns the new persisted offset.
    ///
    /// Chunks starting at or past `cap` (the caller cuts a chunk at the cap) are accounted
    /// for (`persisted_offset` still advances, so the holder's output is acknowledged) but
    /// not stored; the first time that happens the session is marked `truncated` and one
    /// `pty.transcript_truncated` event `{cap}` is written, in the same transaction.
    pub async fn append_transcript(
        &self,
        pty_id: &str,
        chunks: &[TranscriptChunk],
        prev_fix: Option<(i64, &[u8])>,
        cap: u64,
    ) -> Result<i64> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        let (mut offset,): (i64,) = db!(tx, dbc => sqlx::query_as("SELECT persisted_offset FROM pty_sessions WHERE id = $1")
                .bind(pty_id)
                .fetch_one(dbc)
                .await?);
        if let Some((at, masked)) = prev_fix {
            db!(tx, dbc => sqlx::query(
                "UPDATE transcript_chunks SET redacted = $1 WHERE pty_id = $2 AND stream = 'output' \
                 AND byte_offset = $3 AND redaction = 'ok'",
            )
            .bind(masked)
            .bind(pty_id)
            .bind(at)
            .execute(dbc)
            .await?.rows_affected());
        }
        let now = now_ms();
        let (mut findings, mut withheld) = (0i64, 0i64);
        let mut dropped = false;
        for c in chunks {
            if c.byte_offset != offset {
                return Err(StoreError::TranscriptGap);
            }
            if c.byte_offset + c.data.len() as i64 > cap {
                // Callers cut at the cap; a chunk straddling it is not stored at all.
                offset += c.data.len() as i64;
                dropped = true;
                continue;
            }
            db!(tx, dbc => sqlx::query(
                "INSERT INTO transcript_chunks (id, pty_id, stream, byte_offset, length, data, redacted, \
                 redaction, findings, policy_hash, created_at) VALUES ($1, $2, 'output', $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(new_id())
            .bind(pty_id)
            .bind(c.byte_offset)
            .bind(c.data.len() as i64)
            .bind(&c.data)
            // Stored once when masking changed nothing (see the module doc).
            .bind(c.redacted.as_ref().filter(|m| **m != c.data))
            .bind(if c.redacted.is_some() { "ok" } else { "withheld" })
            .bind(c.findings)
            .bind(&c.policy_hash)
            .bind(now)
            .execute(dbc)
            .await?.rows_affected());
            offset += c.data.len() as i64;
            findings += c.findings;
            withheld += i64::from(c.redacted.is_none());
        }
        db!(tx, dbc => sqlx::query(
            "UPDATE pty_sessions SET persisted_offset = $1, findings = findings + $2, \
             withheld_chunks = withheld_chunks + $3, updated_at = $4 WHERE id = $5",
        )
        .bind(offset)
        .bind(findings)
        .bind(withheld)
        .bind(now)
        .bind(pty_id)
        .execute(dbc)
        .await?.rows_affected());
        if dropped {
            let marked = db!(tx, dbc => sqlx::query("UPDATE pty_sessions SET truncated = 1 WHERE id = $1 AND truncated = 0")
                    .bind(pty_id)
                    .execute(dbc)
                    .await?.rows_affected());
            if marked == 1 {
                let ev = NewEvent::new(
                    "pty.transcript_truncated",
                    "host",
                    pty_id,
                    json!({ "cap": cap }),
                );
                append_event(&mut tx, &ev).await?;
            }
        }
        tx.commit().await?;
        Ok(offset)
    }

    /// Output chunks that end after raw offset `from`, oldest first, at most `limit`.
    pub async fn transcript_from(
        &self,
        pty_id: &str,
        from: i64,
        limit: i64,
    ) -> Result<Vec<TranscriptChunk>> {
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT byte_offset, data, redacted, redaction, findings, policy_hash FROM transcript_chunks \
             WHERE pty_id = $1 AND stream = 'output' AND byte_offset + length > $2 \
             ORDER BY byte_offset LIMIT $3",
        )
        .bind(pty_id)
        .bind(from)
        .bind(limit)
        .fetch_all(dbc)
        .await?);
        rows.iter().map(chunk_from_row).collect()
    }

    /// The last output chunk (to restore the redaction overlap after a restart).
    pub async fn last_transcript_chunk(&self, pty_id: &str) -> Result<Option<TranscriptChunk>> {
        let row = db!(rows write self, dbc => sqlx::query(
            "SELECT byte_offset, data, redacted, redaction, findings, policy_hash FROM transcript_chunks \
             WHERE pty_id = $1 AND stream = 'output' ORDER BY byte_offset DESC LIMIT 1",
        )
        .bind(pty_id)
        .fetch_optional(dbc)
        .await?);
        row.as_ref().map(chunk_from_row).transpose()
    }

    /// Issues an attach ticket that needs no approval.
    pub async fn create_attach_ticket(&self, t: &NewTicket) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_ticket(&mut tx, t, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends a ticket: unknown, used or expired → `None` (nothing written).
    pub async fn spend_attach_ticket(&self, ticket_hash: &str) -> Result<Option<SpentTicket>> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let row = db!(rows tx, dbc => sqlx::query(
            "UPDATE pty_attach_tickets SET used_at = $1 WHERE ticket_hash = $2 AND used_at IS NULL \
             AND expires_at > $3 RETURNING id, pty_id, mode, requested_by",
        )
        .bind(now)
        .bind(ticket_hash)
        .bind(now)
        .fetch_optional(dbc)
        .await?);
        let Some(row) = row else {
            return Ok(None);
        };
        let t = SpentTicket {
            id: row.col("id")?,
            pty_id: row.col("pty_id")?,
            mode: vocab_column(&row, "mode", "pty_attach_tickets.mode")?,
            requested_by: row.col("requested_by")?,
        };
        pty_event(
            &mut tx,
            &t.pty_id,
            "attach",
            &t.requested_by,
            json!({ "ticket_id": t.id, "mode": t.mode }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(t))
    }

    /// `pty_events` kinds of a session, oldest first (tests and evidence).
    pub async fn pty_event_kinds(&self, pty_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = db!(read self, dbc => sqlx::query_as("SELECT kind FROM pty_events WHERE pty_id = $1 ORDER BY at, id")
                .bind(pty_id)
                .fetch_all(dbc)
                .await?);
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }
}

#[cfg(test)]
mod tests {
    //! Transcript chunks are stored once when masking changed nothing, and read back the same
    //! as when both copies were stored.

    use super::*;
    use crate::testing::{every_engine, new_pty};

    fn chunk(offset: i64, data: &[u8], redacted: Option<&[u8]>) -> TranscriptChunk {
        TranscriptChunk {
            byte_offset: offset,
            data: data.to_vec(),
            redacted: redacted.map(<[u8]>::to_vec),
            findings: i64::from(redacted.is_some_and(|m| m != data)),
            policy_hash: Some("p".into()),
        }
    }

    /// (byte_offset, bytes stored in `redacted` or NULL, redaction) of every chunk.
    async fn stored(s: &Store, pty: &str) -> Vec<(i64, Option<i64>, String)> {
        db!(read s, dbc => sqlx::query_as(
            "SELECT byte_offset, CAST(LENGTH(redacted) AS BIGINT), redaction FROM transcript_chunks \
             WHERE pty_id = $1 ORDER BY byte_offset",
        )
        .bind(pty)
        .fetch_all(dbc)
        .await
        .expect("chunks"))
    }

    every_engine! {
        #[tokio::test]
        async fn a_chunk_masking_left_unchanged_is_stored_once_and_read_back_whole(s) {
            new_pty(&s, "p1", None).await;
            let clean = b"cargo build: ok\r\n".repeat(100);
            let raw = b"key=AKIAIOSFODNN7EXAMPLE\r\n".to_vec();
            let masked = b"key=********************\r\n".to_vec();
            let chunks = [
                chunk(0, &clean, Some(&clean)),
                chunk(clean.len() as i64, &raw, Some(&masked)),
                chunk((clean.len() + raw.len()) as i64, b"lost", None),
            ];
            let end = s.append_transcript("p1", &chunks, None, u64::MAX).await.expect("append");
            assert_eq!(end, (clean.len() + raw.len() + 4) as i64);
            assert_eq!(
                stored(&s, "p1").await,
                vec![
                    (0, None, "ok".to_string()),
                    (clean.len() as i64, Some(masked.len() as i64), "ok".to_string()),
                    ((clean.len() + raw.len()) as i64, None, "withheld".to_string()),
                ],
                "the clean chunk's copy is not stored twice; the withheld one stays withheld"
            );
            let read = s.transcript_from("p1", 0, 10).await.expect("read");
            assert_eq!(read, chunks, "readers get each chunk's masked copy as it was appended");
            let last = s.last_transcript_chunk("p1").await.expect("last");
            assert_eq!(last.as_ref(), chunks.last());

            // A secret split across the boundary corrects a chunk stored once: its masked copy
            // is stored from then on; a withheld chunk is never given one.
            let fixed = {
                let mut m = clean.clone();
                let n = m.len();
                m[n - 3..].copy_from_slice(b"***");
                m
            };
            let next = chunk(end, b"tail", Some(b"tail"));
            s.append_transcript("p1", std::slice::from_ref(&next), Some((0, &fixed)), u64::MAX)
                .await
                .expect("fix");
            let read = s.transcript_from("p1", 0, 10).await.expect("read");
            assert_eq!(read[0].redacted.as_deref(), Some(fixed.as_slice()));
            assert_eq!(read[0].data, clean, "the raw bytes are untouched");
            assert_eq!(stored(&s, "p1").await[0], (0, Some(fixed.len() as i64), "ok".to_string()));
            let hold = chunks[2].byte_offset;
            let end = s.append_transcript("p1", &[], Some((hold, b"open")), u64::MAX).await.expect("no-op");
            assert_eq!(end, next.byte_offset + 4);
            let read = s.transcript_from("p1", hold, 10).await.expect("read");
            assert_eq!(read[0].redacted, None, "a withheld chunk stays withheld");
        }
    }
}

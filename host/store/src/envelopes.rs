//! Encrypted sessions (members and wrapped content keys per epoch), the envelope table with its
//! per-sender cursors, and the batched ingest transaction that gives at-most-once acceptance.
//!
//! The host stores wrapped keys and ciphertext as opaque bytes; nothing here can decrypt them.

use crate::engine::{Tx, db};
use crate::rows::Columns;
use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::QueryBuilder;

use super::{NewEvent, Result, Session, Store, StoreError, append_event, append_events_in};
use happyx_core::util::{new_id, now_ms};
use happyx_core::vocab::SessionKind;

/// A content key wrapped to one device for one epoch (opaque to the host).
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKeyRow {
    pub session_id: String,
    pub epoch: i64,
    pub device_id: String,
    pub key_version: i64,
    pub sender_device_id: String,
    pub sender_key_version: i64,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// HPKE ciphertext of the content key, base64.
    pub ciphertext: String,
}

happyx_core::debug_fields!(WrappedKeyRow {
    session_id,
    epoch,
    device_id,
    key_version
});

/// One envelope to accept or refuse, already parsed and signature-checked by the caller.
#[derive(Clone)]
pub struct IngestItem {
    /// The envelope's wire format version, stored with it.
    pub v: i64,
    pub session_id: String,
    pub sender_device_id: String,
    pub key_version: i64,
    pub epoch: i64,
    pub sequence: i64,
    pub created_at: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub signature: Vec<u8>,
    /// Bytes of wire JSON received.
    pub size: i64,
}

happyx_core::debug_fields!(IngestItem {
    session_id,
    sender_device_id,
    sequence,
    size
});

/// The verdict of the stateful checks on one [`IngestItem`], decided inside the batch's
/// transaction (checks in this order: session, key, revocation, epoch, membership, owed
/// rotation, cursor, window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestVerdict {
    /// Stored; the cursor moved to its sequence.
    Accepted { id: String, ordinal: i64 },
    /// No such encrypted session.
    UnknownSession,
    /// The sender or its key version is not known.
    UnknownKey,
    /// The device or the key version is revoked.
    Revoked,
    /// The epoch is not the session's current one.
    StaleEpoch { current: i64 },
    /// The sender is not authorized in the session's current epoch.
    NotMember,
    /// A member of the current epoch was revoked at least the rotation grace ago and no
    /// survivor has rotated yet: the current epoch's key is no longer private to the members.
    RotationRequired { current: i64 },
    /// At or below the sender's cursor.
    Replayed { cursor: i64 },
    /// `createdAt` outside the window.
    Expired,
}

impl IngestVerdict {
    fn code(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::UnknownSession => "not_found",
            Self::UnknownKey | Self::NotMember => "unknown_device",
            Self::Revoked => "revoked_key",
            Self::StaleEpoch { .. } => "stale_epoch",
            Self::RotationRequired { .. } => "rotation_required",
            Self::Replayed { .. } => "replayed",
            Self::Expired => "expired",
        }
    }
}

/// The explicit limits an ingest batch is judged by (`[envelopes]` of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest accepted `|createdAt - now|`, ms.
    pub window_ms: i64,
    /// How long after a member's revocation envelopes under the session's current epoch are
    /// still accepted, ms; from then on they are refused `rotation_required` until a rotation.
    pub rotation_grace_ms: i64,
}

/// Marks every encrypted session in which `device_id` is a member of the current epoch as
/// owing a rotation (an earlier mark is kept, so the grace never restarts), with one
/// `session.rotation_required` event each, inside the caller's transaction (the revocation's).
/// Returns the sessions marked, sorted.
pub(super) async fn require_rotation(
    conn: &mut Tx,
    device_id: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<Vec<String>> {
    let rows = db!(rows conn, dbc => sqlx::query(
        "UPDATE sessions SET rotation_required_since = COALESCE(rotation_required_since, $1), \
         updated_at = $2 WHERE kind = 'encrypted' AND id IN (SELECT sd.session_id FROM \
         session_devices sd JOIN sessions s ON s.id = sd.session_id AND s.epoch = sd.epoch \
         WHERE sd.device_id = $3) RETURNING id, epoch, rotation_required_since",
    )
    .bind(now)
    .bind(now)
    .bind(device_id)
    .fetch_all(dbc)
    .await?);
    let mut marked = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.col("id")?;
        let epoch: i64 = r.col("epoch")?;
        let since: Option<i64> = r.col("rotation_required_since")?;
        marked.push((id, epoch, since));
    }
    marked.sort();
    for (id, epoch, since) in &marked {
        let ev = NewEvent::new(
            "session.rotation_required",
            actor,
            id,
            json!({ "epoch": epoch, "device_id": device_id, "reason": reason, "since": since }),
        );
        append_event(&mut *conn, &ev).await?;
    }
    Ok(marked.into_iter().map(|(id, ..)| id).collect())
}

/// An accepted envelope as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// The wire format version it arrived in.
    pub v: i64,
    pub ordinal: i64,
    pub session_id: String,
    pub sender_device_id: String,
    pub key_version: i64,
    pub epoch: i64,
    pub sequence: i64,
    pub created_at: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub signature: Vec<u8>,
}

happyx_core::debug_fields!(StoredEnvelope {
    ordinal,
    session_id,
    sender_device_id,
    sequence
});

/// Per-sender envelope metadata of a session (no ciphertext, nonce or signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderStats {
    pub sender_device_id: String,
    pub envelopes: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    /// Bytes of wire JSON received.
    pub bytes: i64,
}

/// Envelope metadata of a session, safe for operators and public views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeStats {
    pub session_id: String,
    pub epoch: i64,
    pub envelopes: i64,
    pub bytes: i64,
    pub senders: Vec<SenderStats>,
}

fn wrapped_from_row(r: &impl Columns) -> Result<WrappedKeyRow> {
    Ok(WrappedKeyRow {
        session_id: r.col("session_id")?,
        epoch: r.col("epoch")?,
        device_id: r.col("device_id")?,
        key_version: r.col("key_version")?,
        sender_device_id: r.col("sender_device_id")?,
        sender_key_version: r.col("sender_key_version")?,
        enc: r.col("enc")?,
        ciphertext: r.col("ciphertext")?,
    })
}

async fn insert_epoch(conn: &mut Tx, keys: &[WrappedKeyRow], actor: &str, now: i64) -> Result<()> {
    for k in keys {
        db!(conn, dbc => sqlx::query(
            "INSERT INTO session_devices (session_id, epoch, device_id, key_version, added_by, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&k.session_id)
        .bind(k.epoch)
        .bind(&k.device_id)
        .bind(k.key_version)
        .bind(actor)
        .bind(now)
        .execute(dbc)
        .await?.rows_affected());
        db!(conn, dbc => sqlx::query(
            "INSERT INTO session_keys (session_id, epoch, device_id, key_version, sender_device_id, \
             sender_key_version, enc, ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&k.session_id)
        .bind(k.epoch)
        .bind(&k.device_id)
        .bind(k.key_version)
        .bind(&k.sender_device_id)
        .bind(k.sender_key_version)
        .bind(&k.enc)
        .bind(&k.ciphertext)
        .bind(now)
        .execute(dbc)
        .await?.rows_affected());
    }
    Ok(())
}

/// `$k, $k+1, …` for `n` single parameters numbered from `*next`, which moves past them.
fn marks(next: &mut usize, n: usize) -> String {
    let out: Vec<String> = (*next..*next + n).map(|i| format!("${i}")).collect();
    *next += n;
    out.join(", ")
}

/// `($k, $k+1), ($k+2, $k+3), …` for `n` pairs numbered from `*next`, which moves past them.
fn pairs(next: &mut usize, n: usize) -> String {
    let out: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", *next + 2 * i, *next + 2 * i + 1))
        .collect();
    *next += 2 * n;
    out.join(", ")
}

impl Store {
    /// Creates an encrypted session at epoch 0 with its members and wrapped keys, in one
    /// transaction. `Conflict` if the id is taken.
    pub async fn create_encrypted_session(
        &self,
        session: &Session,
        keys: &[WrappedKeyRow],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let res = db!(tx, dbc => sqlx::query(
            "INSERT INTO sessions (id, name, kind, status, task_id, epoch, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'encrypted', 'open', NULL, 0, $3, $4, $5)",
        )
        .bind(&session.id)
        .bind(&session.name)
        .bind(&session.created_by)
        .bind(session.created_at)
        .bind(session.updated_at)
        .execute(dbc)
        .await
        .map(|r| r.rows_affected()));
        if let Err(e) = res {
            let e = StoreError::from(e);
            return Err(if e.is_unique_violation() {
                StoreError::SessionExists
            } else {
                e
            });
        }
        insert_epoch(&mut tx, keys, &session.created_by, session.created_at).await?;
        let members: Vec<&str> = keys.iter().map(|k| k.device_id.as_str()).collect();
        let ev = NewEvent::new(
            "session.created",
            &session.created_by,
            &session.id,
            json!({ "kind": SessionKind::Encrypted, "epoch": 0, "devices": members }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves an encrypted session from epoch `from` to `from + 1` with new members and wrapped
    /// keys, and clears an owed rotation. `Conflict` if the session is no longer at `from` (a
    /// concurrent rotation won) or a recipient's device or key version is revoked by now.
    pub async fn rotate_session(
        &self,
        session_id: &str,
        from: i64,
        keys: &[WrappedKeyRow],
        actor: &str,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        // Checked again inside the transaction: a revocation that committed after the caller's
        // checks must not get the new epoch's key (nor clear the owed rotation).
        if !keys.is_empty() {
            let q = format!(
                "SELECT COUNT(*) FROM device_keys k JOIN devices d ON d.id = k.device_id \
                 WHERE k.revoked_at IS NULL AND d.status = 'active' \
                 AND (k.device_id, k.key_version) IN (VALUES {})",
                pairs(&mut 1, keys.len())
            );
            let (live,): (i64,) = db!(tx, dbc => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(q));
                for k in keys {
                    query = query.bind(&k.device_id).bind(k.key_version);
                }
                query.fetch_one(dbc).await?
            });
            if usize::try_from(live).ok() != Some(keys.len()) {
                return Err(StoreError::RecipientRevoked);
            }
        }
        let changed = db!(tx, dbc => sqlx::query(
            "UPDATE sessions SET epoch = epoch + 1, rotation_required_since = NULL, updated_at = $1 \
             WHERE id = $2 AND kind = 'encrypted' AND epoch = $3",
        )
        .bind(now)
        .bind(session_id)
        .bind(from)
        .execute(dbc)
        .await?.rows_affected());
        if changed != 1 {
            return Err(StoreError::EpochChanged);
        }
        insert_epoch(&mut tx, keys, actor, now).await?;
        let members: Vec<&str> = keys.iter().map(|k| k.device_id.as_str()).collect();
        let ev = NewEvent::new(
            "session.rotated",
            actor,
            session_id,
            json!({ "epoch": from + 1, "devices": members }),
        );
        append_event(&mut tx, &ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Devices authorized in `epoch` of a session, with their key versions.
    pub async fn session_members(
        &self,
        session_id: &str,
        epoch: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = db!(read self, dbc => sqlx::query_as(
            "SELECT device_id, key_version FROM session_devices WHERE session_id = $1 AND epoch = $2 \
             ORDER BY device_id",
        )
        .bind(session_id)
        .bind(epoch)
        .fetch_all(dbc)
        .await?);
        Ok(rows)
    }

    /// Whether a device was ever authorized in a session.
    pub async fn was_session_member(&self, session_id: &str, device_id: &str) -> Result<bool> {
        let row: Option<(i64,)> = db!(read self, dbc => sqlx::query_as(
            "SELECT CAST(1 AS BIGINT) FROM session_devices WHERE session_id = $1 AND device_id = $2 \
             LIMIT 1",
        )
        .bind(session_id)
        .bind(device_id)
        .fetch_optional(dbc)
        .await?);
        Ok(row.is_some())
    }

    /// Every content key of a session wrapped to `device_id`, oldest epoch first.
    pub async fn wrapped_keys_for(
        &self,
        session_id: &str,
        device_id: &str,
    ) -> Result<Vec<WrappedKeyRow>> {
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT * FROM session_keys WHERE session_id = $1 AND device_id = $2 ORDER BY epoch",
        )
        .bind(session_id)
        .bind(device_id)
        .fetch_all(dbc)
        .await?);
        rows.iter().map(wrapped_from_row).collect()
    }

    /// Accepted envelopes of a session after `after` (an ordinal), in acceptance order.
    pub async fn envelopes_after(
        &self,
        session_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEnvelope>> {
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT v, ordinal, session_id, sender_device_id, key_version, epoch, sequence, created_at, \
             nonce, ciphertext, signature FROM envelopes WHERE session_id = $1 AND ordinal > $2 \
             ORDER BY ordinal LIMIT $3",
        )
        .bind(session_id)
        .bind(after)
        .bind(limit)
        .fetch_all(dbc)
        .await?);
        rows.iter()
            .map(|r| {
                Ok(StoredEnvelope {
                    v: r.col("v")?,
                    ordinal: r.col("ordinal")?,
                    session_id: r.col("session_id")?,
                    sender_device_id: r.col("sender_device_id")?,
                    key_version: r.col("key_version")?,
                    epoch: r.col("epoch")?,
                    sequence: r.col("sequence")?,
                    created_at: r.col("created_at")?,
                    nonce: r.col("nonce")?,
                    ciphertext: r.col("ciphertext")?,
                    signature: r.col("signature")?,
                })
            })
            .collect()
    }

    /// Number of stored envelopes, all sessions.
    pub async fn envelope_count(&self) -> Result<i64> {
        let (n,): (i64,) = db!(read self, dbc => sqlx::query_as("SELECT COUNT(*) FROM envelopes")
            .fetch_one(dbc)
            .await?);
        Ok(n)
    }

    /// Per-session envelope metadata: counts, sequence ranges per sender and byte totals. Holds
    /// no ciphertext, nonce or signature, so it may back public views. `None` if the session
    /// does not exist.
    pub async fn envelope_stats(&self, session_id: &str) -> Result<Option<EnvelopeStats>> {
        let Some(session) = self.session(session_id).await? else {
            return Ok(None);
        };
        let rows = db!(rows read self, dbc => sqlx::query(
            "SELECT sender_device_id, COUNT(*) AS n, MIN(sequence) AS lo, MAX(sequence) AS hi, \
             CAST(SUM(size) AS BIGINT) AS bytes FROM envelopes WHERE session_id = $1 \
             GROUP BY sender_device_id ORDER BY sender_device_id",
        )
        .bind(session_id)
        .fetch_all(dbc)
        .await?);
        let mut senders = Vec::with_capacity(rows.len());
        for r in &rows {
            senders.push(SenderStats {
                sender_device_id: r.col("sender_device_id")?,
                envelopes: r.col("n")?,
                first_sequence: r.col("lo")?,
                last_sequence: r.col("hi")?,
                bytes: r.col("bytes")?,
            });
        }
        Ok(Some(EnvelopeStats {
            session_id: session.id,
            epoch: session.epoch,
            envelopes: senders.iter().map(|s| s.envelopes).sum(),
            bytes: senders.iter().map(|s| s.bytes).sum(),
            senders,
        }))
    }

    /// Decides and applies a batch of envelopes in ONE write transaction: each item is checked
    /// against the state as left by the items before it (so two envelopes of one sender in one
    /// batch are ordered), accepted ones are inserted and the cursors moved, refusals are
    /// recorded as events without payload. Nothing is visible (or acknowledged) before commit.
    /// `limits.window_ms` bounds `|createdAt - now|`; `limits.rotation_grace_ms` is how long
    /// a session that owes a rotation still accepts its current epoch.
    pub async fn ingest_batch(
        &self,
        items: &[IngestItem],
        limits: IngestLimits,
    ) -> Result<Vec<IngestVerdict>> {
        self.ingest_batch_at(items, limits, now_ms()).await
    }

    /// [`Self::ingest_batch`] as of host time `now` (tests pin the clock to reach an edge).
    pub async fn ingest_batch_at(
        &self,
        items: &[IngestItem],
        limits: IngestLimits,
        now: i64,
    ) -> Result<Vec<IngestVerdict>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let window_ms = limits.window_ms;
        let mut tx = self.begin().await?;
        let state = BatchState::load(&mut tx, items).await?;
        let BatchState {
            sessions,
            rotations,
            keys,
            members,
            mut cursors,
            mut ordinal,
        } = state;
        let mut verdicts = Vec::with_capacity(items.len());
        let mut accepted: Vec<(usize, String, i64)> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let sk = (it.session_id.clone(), it.sender_device_id.clone());
            let verdict = match sessions.get(&it.session_id) {
                None => IngestVerdict::UnknownSession,
                Some(&current) => match keys.get(&(it.sender_device_id.clone(), it.key_version)) {
                    None => IngestVerdict::UnknownKey,
                    Some(false) => IngestVerdict::Revoked,
                    Some(true) if it.epoch != current => IngestVerdict::StaleEpoch { current },
                    Some(true) if !members.contains(&sk) => IngestVerdict::NotMember,
                    Some(true)
                        if rotations.get(&it.session_id).is_some_and(|since| {
                            now.saturating_sub(*since) >= limits.rotation_grace_ms
                        }) =>
                    {
                        IngestVerdict::RotationRequired { current }
                    }
                    Some(true) => {
                        let cursor = cursors.get(&sk).copied().unwrap_or(0);
                        if it.sequence <= cursor {
                            IngestVerdict::Replayed { cursor }
                        } else if it.created_at.abs_diff(now) > window_ms.unsigned_abs() {
                            IngestVerdict::Expired
                        } else {
                            cursors.insert(sk, it.sequence);
                            ordinal += 1;
                            let id = new_id();
                            accepted.push((i, id.clone(), ordinal));
                            IngestVerdict::Accepted { id, ordinal }
                        }
                    }
                },
            };
            verdicts.push(verdict);
        }
        // Inserts, many rows per statement (14 parameters per row: 7,000 per statement, under the
        // limit of either engine, 32,766 on SQLite and 65,535 on PostgreSQL).
        for chunk in accepted.chunks(500) {
            db!(tx, dbc => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO envelopes (id, ordinal, session_id, sender_device_id, key_version, epoch, \
                 sequence, created_at, received_at, nonce, ciphertext, signature, size, v) ",
            );
            qb.push_values(chunk, |mut b, (i, id, ord)| {
                let it = &items[*i];
                b.push_bind(id.clone())
                    .push_bind(*ord)
                    .push_bind(it.session_id.clone())
                    .push_bind(it.sender_device_id.clone())
                    .push_bind(it.key_version)
                    .push_bind(it.epoch)
                    .push_bind(it.sequence)
                    .push_bind(it.created_at)
                    .push_bind(now)
                    .push_bind(it.nonce.clone())
                    .push_bind(it.ciphertext.clone())
                    .push_bind(it.signature.clone())
                    .push_bind(it.size)
                    .push_bind(it.v);
            });
            qb.build().execute(dbc).await?.rows_affected()
            });
        }
        // Cursor moves: the final value per (session, sender) touched by this batch.
        let mut moved: HashMap<(String, String), i64> = HashMap::new();
        for (i, _, _) in &accepted {
            let it = &items[*i];
            moved.insert(
                (it.session_id.clone(), it.sender_device_id.clone()),
                it.sequence,
            );
        }
        let moved: Vec<_> = moved.into_iter().collect();
        for chunk in moved.chunks(500) {
            db!(tx, dbc => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO envelope_cursors (session_id, sender_device_id, last_sequence, updated_at) ",
            );
            qb.push_values(chunk, |mut b, ((s, d), seq)| {
                b.push_bind(s.clone())
                    .push_bind(d.clone())
                    .push_bind(*seq)
                    .push_bind(now);
            });
            qb.push(
                " ON CONFLICT (session_id, sender_device_id) DO UPDATE SET \
                 last_sequence = excluded.last_sequence, updated_at = excluded.updated_at \
                 WHERE excluded.last_sequence > envelope_cursors.last_sequence",
            );
            qb.build().execute(dbc).await?.rows_affected()
            });
        }
        // Audit: one event per session for what was accepted, one per authenticated refusal.
        let mut per_session: HashMap<&str, (i64, HashSet<&str>)> = HashMap::new();
        for (i, _, _) in &accepted {
            let it = &items[*i];
            let e = per_session.entry(it.session_id.as_str()).or_default();
            e.0 += 1;
            e.1.insert(it.sender_device_id.as_str());
        }
        // Chained in memory and inserted many rows per statement: with one sender per session
        // a batch records about one event per envelope.
        let mut events = Vec::with_capacity(per_session.len());
        for (session_id, (count, senders)) in &per_session {
            let mut senders: Vec<&str> = senders.iter().copied().collect();
            senders.sort_unstable();
            events.push(NewEvent::new(
                "envelopes.accepted",
                "devices",
                session_id,
                json!({ "count": count, "senders": senders }),
            ));
        }
        for (it, v) in items.iter().zip(&verdicts) {
            if matches!(
                v,
                IngestVerdict::Accepted { .. } | IngestVerdict::UnknownSession
            ) {
                continue;
            }
            events.push(NewEvent::new(
                "envelope.rejected",
                &it.sender_device_id,
                &it.session_id,
                json!({ "code": v.code(), "key_version": it.key_version, "epoch": it.epoch,
                        "sequence": it.sequence, "size": it.size }),
            ));
        }
        append_events_in(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(verdicts)
    }
}

/// The state an ingest batch is decided against, read inside its transaction.
struct BatchState {
    /// Encrypted session id → current epoch.
    sessions: HashMap<String, i64>,
    /// Encrypted session id → since when it owes a rotation (only sessions that do).
    rotations: HashMap<String, i64>,
    /// (device, key version) → live?
    keys: HashMap<(String, i64), bool>,
    /// (session, device) authorized in the session's current epoch.
    members: HashSet<(String, String)>,
    /// (session, sender) → last accepted sequence.
    cursors: HashMap<(String, String), i64>,
    /// Highest ordinal so far.
    ordinal: i64,
}

impl BatchState {
    async fn load(conn: &mut Tx, items: &[IngestItem]) -> Result<Self> {
        let session_ids: Vec<&str> = items
            .iter()
            .map(|i| i.session_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let key_ids: Vec<(&str, i64)> = items
            .iter()
            .map(|i| (i.sender_device_id.as_str(), i.key_version))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let sender_ids: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.session_id.as_str(), i.sender_device_id.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();

        // One statement (one round trip to the database) reads all of it; `k` tags the part.
        let mut next = 1;
        let q = format!(
            "SELECT 's' AS k, id AS a, NULL AS b, epoch AS n FROM sessions \
             WHERE kind = 'encrypted' AND id IN ({sessions}) \
             UNION ALL \
             SELECT 'r', id, NULL, rotation_required_since FROM sessions \
             WHERE kind = 'encrypted' AND rotation_required_since IS NOT NULL AND id IN ({sessions}) \
             UNION ALL \
             SELECT CASE WHEN k.revoked_at IS NULL AND d.status = 'active' THEN 'live' ELSE 'dead' END, \
             k.device_id, NULL, k.key_version \
             FROM device_keys k JOIN devices d ON d.id = k.device_id \
             WHERE (k.device_id, k.key_version) IN (VALUES {keys}) \
             UNION ALL \
             SELECT 'm', sd.session_id, sd.device_id, NULL FROM session_devices sd \
             JOIN sessions s ON s.id = sd.session_id AND s.epoch = sd.epoch \
             WHERE (sd.session_id, sd.device_id) IN (VALUES {senders}) \
             UNION ALL \
             SELECT 'c', session_id, sender_device_id, last_sequence FROM envelope_cursors \
             WHERE (session_id, sender_device_id) IN (VALUES {senders}) \
             UNION ALL \
             SELECT 'o', NULL, NULL, MAX(ordinal) FROM envelopes",
            // Each list is named twice in the text and bound once: `$N` is one parameter.
            sessions = marks(&mut next, session_ids.len()),
            keys = pairs(&mut next, key_ids.len()),
            senders = pairs(&mut next, sender_ids.len()),
        );
        let rows = db!(rows conn, dbc => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for s in &session_ids {
                query = query.bind(*s);
            }
            for (d, v) in &key_ids {
                query = query.bind(*d).bind(*v);
            }
            for (s, d) in &sender_ids {
                query = query.bind(*s).bind(*d);
            }
            query.fetch_all(dbc).await?
        });
        let (mut sessions, mut rotations, mut keys, mut members, mut cursors) = (
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashSet::new(),
            HashMap::new(),
        );
        let mut ordinal = 0;
        for r in rows {
            let tag: String = r.col("k")?;
            let a: Option<String> = r.col("a")?;
            let b: Option<String> = r.col("b")?;
            let n: Option<i64> = r.col("n")?;
            let corrupt = || StoreError::Corrupt("envelope batch state");
            match tag.as_str() {
                "s" => {
                    sessions.insert(a.ok_or_else(corrupt)?, n.ok_or_else(corrupt)?);
                }
                "r" => {
                    rotations.insert(a.ok_or_else(corrupt)?, n.ok_or_else(corrupt)?);
                }
                "live" | "dead" => {
                    keys.insert(
                        (a.ok_or_else(corrupt)?, n.ok_or_else(corrupt)?),
                        tag == "live",
                    );
                }
                "m" => {
                    members.insert((a.ok_or_else(corrupt)?, b.ok_or_else(corrupt)?));
                }
                "c" => {
                    cursors.insert(
                        (a.ok_or_else(corrupt)?, b.ok_or_else(corrupt)?),
                        n.ok_or_else(corrupt)?,
                    );
                }
                _ => ordinal = n.unwrap_or(0),
            }
        }
        Ok(Self {
            sessions,
            rotations,
            keys,
            members,
            cursors,
            ordinal,
        })
    }
}

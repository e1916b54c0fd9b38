//! Plain row types the store returns. No behaviour, no secrets beyond what the
//! row itself holds (token rows carry only the secret's hash).
//!
//! Rows are not the API: they derive neither `Serialize` nor `ToSchema`, so a column added
//! here reaches no response until the server's `api::views` publishes it. Closed vocabularies
//! (statuses, kinds, risk) are the enums of `happyx_core::vocab`, decoded with
//! [`vocab_column`]: an unknown stored value is [`StoreError::Corrupt`], never a panic.

use std::str::FromStr;

use happyx_core::vocab::{
    ActionKind, ApprovalStatus, AttachMode, OutputStream, PermissionStatus, PtyState, Risk, Role,
    RunStatus, SessionKind, SessionStatus, TaskStatus,
};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;

use crate::{Result, StoreError};

/// A result row read by column name: sqlx's SQLite and PostgreSQL rows and the direct reads'
/// rows ([`crate::direct`]). A row type decoded through it is decoded by one function whichever
/// engine and path fetched it.
pub(crate) trait Columns {
    /// Column `name`, converted to `T`.
    fn col<T: ColumnValue>(&self, name: &str) -> Result<T>;
}

/// A Rust type every binding decodes from a column (integers, text, blobs and their
/// `Option`s).
pub(crate) trait ColumnValue:
    for<'r> sqlx::Decode<'r, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'r> sqlx::Decode<'r, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> ColumnValue for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + rusqlite::types::FromSql
{
}

impl Columns for SqliteRow {
    fn col<T: ColumnValue>(&self, name: &str) -> Result<T> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn col<T: ColumnValue>(&self, name: &str) -> Result<T> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn col<T: ColumnValue>(&self, name: &str) -> Result<T> {
        Ok(self.get(name)?)
    }
}

/// A row type decoded from either binding's row (the types [`Store::lookup`] returns).
///
/// [`Store::lookup`]: crate::Store
pub(crate) trait FromColumns: Sized {
    fn from_columns(r: &impl Columns) -> Result<Self>;
}

/// A vocabulary column of `r`, typed: an unknown stored value is a corrupt row
/// ([`StoreError::Corrupt`] naming `column`, e.g. `agent_runs.status`), never a panic.
pub(crate) fn vocab_column<T: FromStr>(
    r: &impl Columns,
    name: &str,
    column: &'static str,
) -> Result<T> {
    let text: String = r.col(name)?;
    text.parse().map_err(|_| StoreError::Corrupt(column))
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: String,
    /// Gap-free position in the log, starting at 1.
    pub seq: i64,
    pub at: i64,
    pub code: String,
    pub actor: String,
    pub subject: String,
    pub data: Value,
}

#[derive(Clone, PartialEq)]
pub struct TokenRow {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub kind: SessionKind,
    pub status: SessionStatus,
    pub task_id: Option<String>,
    /// Current key epoch (encrypted sessions).
    pub epoch: i64,
    /// Encrypted sessions: when a member of the current epoch was revoked (Unix ms); the
    /// session owes a rotation to a new epoch, and envelopes under the current one are refused
    /// `rotation_required` once `envelopes.rotation_grace_ms` has passed. `null` otherwise.
    pub rotation_required_since: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Permission {
    pub id: String,
    /// Token or device id the grant is for.
    pub subject: String,
    /// Class of action, e.g. `pty.drive`.
    pub action: String,
    /// Where it applies, e.g. `session:<id>` or `*`.
    pub scope: String,
    pub status: PermissionStatus,
    pub granted_by: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Public-safe run metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub recipe: String,
    pub risk: Risk,
    /// `spawn_failed`: the program could not be started; `error` says why.
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub session_id: Option<String>,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    /// Secrets the redactor masked in this run's output.
    pub findings: i64,
    /// Output chunks withheld because the redactor failed on them.
    pub unredacted_chunks: i64,
    /// Output beyond `runs.max_output_bytes` was not kept.
    pub truncated: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    /// Why the program could not be started (`spawn_failed` only).
    pub error: Option<String>,
    /// SHA-256 (hex) of the recipe plugin that rendered this run (as `GET /v1/plugins` shows
    /// it); `null` for runs recorded before hosts kept it.
    pub recipe_plugin_sha256: Option<String>,
    /// The host whose child runs it (`GET /v1/hosts`): the store's [`crate::Store::host_id`]
    /// when it was written, which the store sets on insert whatever this field holds; `None`
    /// for runs recorded before hosts kept it.
    pub host_id: Option<String>,
}

impl Run {
    /// A run that has not started yet: no output, no exit, no approval, created at `now`.
    pub fn queued(
        id: String,
        recipe: String,
        risk: Risk,
        session_id: Option<String>,
        requested_by: String,
        now: i64,
    ) -> Self {
        Run {
            id,
            recipe,
            risk,
            status: RunStatus::Queued,
            exit_code: None,
            session_id,
            requested_by,
            approval_id: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            findings: 0,
            unredacted_chunks: 0,
            truncated: false,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            error: None,
            recipe_plugin_sha256: None,
            host_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub kind: ActionKind,
    /// SHA-256 over the canonical encoding of the exact action.
    pub action_hash: String,
    /// The action as the operator sees it: recipe, args, rendered command.
    pub action: Value,
    pub requester: String,
    /// `pending`, `approved`, `denied` or `used`.
    pub status: ApprovalStatus,
    pub decider: Option<String>,
    pub decided_at: Option<i64>,
    pub scope: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One stored output chunk of a run, private.
#[derive(Clone, PartialEq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub chunk_index: i64,
    pub byte_offset: i64,
    pub data: Vec<u8>,
    /// Masked copy; `None` when redaction failed and the chunk is withheld.
    pub redacted: Option<Vec<u8>>,
    pub findings: i64,
    pub policy_hash: Option<String>,
}

impl std::fmt::Debug for OutputChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputChunk")
            .field("stream", &self.stream)
            .field("chunk_index", &self.chunk_index)
            .field("byte_offset", &self.byte_offset)
            .field("len", &self.data.len())
            .field("redacted", &self.redacted.as_ref().map(|r| r.len()))
            .field("findings", &self.findings)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub started_at: i64,
    pub version: String,
    pub schema_version: i64,
    pub config_hash: String,
    pub plugin_hashes: Value,
    pub boot_id: String,
}

/// A page of a listing plus the cursor for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Public-safe PTY session metadata (no socket path, no secret hash).
#[derive(Debug, Clone, PartialEq)]
pub struct PtySession {
    pub id: String,
    pub recipe: String,
    pub risk: Risk,
    pub state: PtyState,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    /// Signal number that ended the program, if any.
    pub exit_signal: Option<i64>,
    pub rows: i64,
    pub cols: i64,
    /// Raw output bytes persisted in the transcript so far.
    pub output_bytes: i64,
    /// Secrets the redactor masked in the transcript.
    pub findings: i64,
    /// Transcript chunks withheld because the redactor failed on them.
    pub withheld_chunks: i64,
    /// The transcript reached `[pty] max_transcript_bytes`: output past it was shown to live
    /// viewers but not stored.
    pub truncated: bool,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub exited_at: Option<i64>,
    /// Why the program could not be started (then `exited` with code 127).
    pub error: Option<String>,
    /// SHA-256 (hex) of the recipe plugin that rendered this terminal's program (as
    /// `GET /v1/plugins` shows it); `null` for terminals recorded before hosts kept it.
    pub recipe_plugin_sha256: Option<String>,
    /// The host that holds its program (`GET /v1/hosts`): the store's
    /// [`crate::Store::host_id`] when it was written, which the store sets on insert whatever
    /// this field holds; `None` for terminals recorded before hosts kept it.
    pub host_id: Option<String>,
}

impl PtySession {
    /// A terminal whose program is not started yet (24 × 80, no output, no approval), created
    /// at `now`; callers set what else they know with struct update syntax.
    pub fn starting(
        id: String,
        recipe: String,
        risk: Risk,
        requested_by: String,
        now: i64,
    ) -> Self {
        PtySession {
            id,
            recipe,
            risk,
            state: PtyState::Starting,
            pid: None,
            exit_code: None,
            exit_signal: None,
            rows: 24,
            cols: 80,
            output_bytes: 0,
            findings: 0,
            withheld_chunks: 0,
            truncated: false,
            requested_by,
            approval_id: None,
            created_at: now,
            updated_at: now,
            exited_at: None,
            error: None,
            recipe_plugin_sha256: None,
            host_id: None,
        }
    }
}

/// The private side of a PTY session the host needs to reach its holder.
#[derive(Clone, PartialEq)]
pub struct PtyHolderRow {
    pub id: String,
    pub state: PtyState,
    pub pid: Option<i64>,
    pub socket_path: String,
    pub secret_hash: String,
    pub boot_id: String,
    pub persisted_offset: i64,
    /// The host whose holder keeps it (`None`: written before owners were recorded).
    pub host_id: Option<String>,
}

happyx_core::debug_fields!(PtyHolderRow {
    id,
    state,
    pid,
    persisted_offset,
    host_id
});

/// A new PTY session row (state `starting`).
#[derive(Clone)]
pub struct NewPty {
    pub session: PtySession,
    pub action_hash: String,
    pub socket_path: String,
    pub secret_hash: String,
    pub boot_id: String,
}

/// One transcript chunk (≤ 64 KiB of raw output), private.
#[derive(Clone, PartialEq)]
pub struct TranscriptChunk {
    pub byte_offset: i64,
    pub data: Vec<u8>,
    /// Masked copy; `None` when redaction failed and the chunk is withheld.
    pub redacted: Option<Vec<u8>>,
    pub findings: i64,
    pub policy_hash: Option<String>,
}

impl std::fmt::Debug for TranscriptChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptChunk")
            .field("byte_offset", &self.byte_offset)
            .field("len", &self.data.len())
            .field("redacted", &self.redacted.as_ref().map(|r| r.len()))
            .field("findings", &self.findings)
            .finish()
    }
}

/// A single-use WebSocket attach ticket to persist (hash only).
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub id: String,
    pub pty_id: String,
    pub mode: AttachMode,
    pub ticket_hash: String,
    pub requested_by: String,
    pub expires_at: i64,
}

/// A ticket that was just spent.
#[derive(Debug, Clone, PartialEq)]
pub struct SpentTicket {
    pub id: String,
    pub pty_id: String,
    pub mode: AttachMode,
    pub requested_by: String,
}

happyx_core::debug_fields!(NewPty { session });

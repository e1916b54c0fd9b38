//! `/public/*`: unauthenticated views built from an allowlist of fields —
//! counts, counters, versions and hashes — never by filtering a full record.
//! Each view is its own struct, filled field by field.
//!
//! With `public.sessions` on, sessions and terminals are also listed
//! (`/public/sessions`, `/public/terminals`, paged by id) with the same views
//! as `/public/sessions/{id}` and `/public/terminals/{id}`, so that a client
//! such as `happyx verify-public` can reach every one of them without a token.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::page::{CheckpointPages, PageParams, SeqCursor};
use super::{ApiError, ApiResult, AppState, ErrorBody, PageQuery, Paged, path_id};
use crate::store::{Owner, PtySession, Run, SCHEMA_VERSION, Session};
use happyx_core::vocab::SessionKind;

const CACHE: &str = "public, max-age=5";

/// A plugin as the public sees it.
#[derive(Serialize, ToSchema)]
pub struct PublicPlugin {
    /// `redactor`, `retention` or `recipes`.
    kind: String,
    name: String,
    version: String,
    /// SHA-256 (hex) of the serving component.
    #[schema(format = "sha256")]
    sha256: String,
    loaded_at: u64,
    /// Whether the serving version passed the built-in contract checks.
    contract_checks_passed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PublicState {
    version: &'static str,
    /// `table -> status -> count` (status `""` for tables without one).
    counts: BTreeMap<String, BTreeMap<String, i64>>,
    /// Secrets masked so far, in run output and terminal transcripts together.
    redacted_findings: i64,
    /// Chunks withheld because the redactor failed on them, of run output and terminal
    /// transcripts together.
    withheld_chunks: i64,
    /// The same two counters by kind: `runs` and `terminals`.
    redaction: BTreeMap<String, PublicRedaction>,
    plugins: Vec<PublicPlugin>,
}

/// Redaction counters of one kind of output.
#[derive(Serialize, ToSchema)]
pub struct PublicRedaction {
    /// Secrets masked.
    findings: i64,
    /// Chunks withheld because the redactor failed on them.
    withheld_chunks: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PublicMigration {
    version: i64,
    description: String,
    /// SHA-256 (hex) of the migration's SQL, as embedded in this binary.
    #[schema(format = "sha256")]
    sql_sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublicPrune {
    at: i64,
    #[schema(format = "sha256")]
    policy_hash: String,
    #[schema(value_type = Object)]
    counts: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct PublicEvidence {
    version: &'static str,
    schema_version: i64,
    migrations: Vec<PublicMigration>,
    last_prune: Option<PublicPrune>,
    plugins: Vec<PublicPlugin>,
    /// Number of events in the log now (pruned events are not counted).
    event_count: i64,
    /// `seq` of the newest event covered by `event_log_sha256`.
    event_log_last_seq: i64,
    /// Hash chain over the audit log: d_n = SHA-256(d_(n-1) || length-prefixed
    /// id, seq, at, code, actor, subject, data), d_0 = 32 zero bytes.
    #[schema(format = "sha256")]
    event_log_sha256: String,
    /// `seq` of the newest event: the head of the stored event chain (see
    /// `happyx audit verify`); the anchor's when no event remains, 0 when there is none.
    chain_head_seq: i64,
    /// The stored chain hash of that event: SHA-256("happyx-event-v1\n" || previous hash ||
    /// u64be(seq) || lp(id) || i64be(at) || lp(code) || lp(actor) || lp(subject) || lp(data)).
    #[schema(format = "sha256")]
    chain_head_sha256: String,
    /// `seq` of the last pruned event (0 when nothing was pruned): the chain restarts after it.
    chain_anchor_seq: i64,
    /// The chain hash of the last pruned event (32 zero bytes when nothing was pruned).
    #[schema(format = "sha256")]
    chain_anchor_sha256: String,
    /// The newest checkpoint of the chain signed with the host key (`null` before the first):
    /// keep it to hold the host to this history later (`happyx audit verify --checkpoint`).
    checkpoint: Option<crate::checkpoint::Checkpoint>,
}

/// Query of `/public/checkpoints`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// Oldest `seq` to list (default 0).
    from_seq: Option<i64>,
    /// At most this many, 1 ..= 1000 (default 100).
    limit: Option<i64>,
}

impl PageParams for CheckpointQuery {
    type Limits = CheckpointPages;
    type Cursor = SeqCursor;
    const CURSOR: &'static str = "from_seq";
    fn take_cursor(&mut self) -> Option<i64> {
        self.from_seq.take()
    }
    fn limit(&self) -> Option<i64> {
        self.limit
    }
}

/// A page of `/public/checkpoints`.
#[derive(Serialize, ToSchema)]
pub struct PublicCheckpointList {
    /// Oldest first.
    items: Vec<crate::checkpoint::Checkpoint>,
}

/// Run metadata for `/public/runs`.
#[derive(Serialize, ToSchema)]
pub struct PublicRun {
    id: String,
    recipe: String,
    risk: String,
    status: String,
    exit_code: Option<i64>,
    stdout_bytes: i64,
    stderr_bytes: i64,
    findings: i64,
    withheld_chunks: i64,
    truncated: bool,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    /// SHA-256 (hex) of the recipe plugin that rendered the run (its risk and command);
    /// `null` for runs recorded before hosts kept it.
    #[schema(format = "sha256")]
    recipe_plugin_sha256: Option<String>,
}

impl From<Run> for PublicRun {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            recipe: r.recipe,
            risk: r.risk.to_string(),
            status: r.status.to_string(),
            exit_code: r.exit_code,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            findings: r.findings,
            withheld_chunks: r.unredacted_chunks,
            truncated: r.truncated,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            recipe_plugin_sha256: r.recipe_plugin_sha256,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PublicRunList {
    items: Vec<PublicRun>,
    next: Option<String>,
}

/// Session metadata for `/public/sessions/{id}`: a session (with the metadata of its encrypted
/// envelopes, if any), or a terminal (with the metadata of its transcript). Counts, sequence
/// ranges, byte totals and redaction status only — never ciphertext, nonces, signatures or output.
#[derive(Serialize, ToSchema)]
pub struct PublicSession {
    id: String,
    /// `agent`, `terminal` or `encrypted` for a session; `pty` for a terminal process.
    kind: String,
    /// The session's status, or the terminal's state.
    status: String,
    /// Current key epoch (0 for sessions without encryption and for terminals).
    epoch: i64,
    created_at: i64,
    updated_at: i64,
    /// Envelopes of an encrypted session; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    envelopes: Option<PublicEnvelopes>,
    /// Transcript of a terminal; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    transcript: Option<PublicTranscript>,
}

/// Envelope counts of an encrypted session.
#[derive(Serialize, ToSchema)]
pub struct PublicEnvelopes {
    count: i64,
    /// Bytes of wire JSON received.
    bytes: i64,
    senders: Vec<PublicSender>,
}

/// One sender's envelopes in a session.
#[derive(Serialize, ToSchema)]
pub struct PublicSender {
    sender_device_id: String,
    count: i64,
    first_sequence: i64,
    last_sequence: i64,
    bytes: i64,
}

/// Transcript metadata of a terminal.
#[derive(Serialize, ToSchema)]
pub struct PublicTranscript {
    /// Output bytes persisted.
    bytes: i64,
    /// Secrets the redactor masked.
    findings: i64,
    /// Chunks withheld from every non-private view because the redactor failed on them.
    withheld_chunks: i64,
    /// `ok`, or `partial` when chunks were withheld.
    redaction: &'static str,
    /// The transcript reached `[pty] max_transcript_bytes`; later output was not stored.
    truncated: bool,
}

/// A page of `/public/sessions` or `/public/terminals`.
#[derive(Serialize, ToSchema)]
pub struct PublicSessionList {
    items: Vec<PublicSession>,
    /// The `after` of the next page; `null` on the last one.
    next: Option<String>,
}

/// The public view of a session (with its envelope counts when it is encrypted).
async fn session_view(state: &AppState, s: Session) -> ApiResult<PublicSession> {
    let envelopes = if s.kind == SessionKind::Encrypted {
        state
            .store
            .envelope_stats(&s.id)
            .await?
            .map(|e| PublicEnvelopes {
                count: e.envelopes,
                bytes: e.bytes,
                senders: e
                    .senders
                    .into_iter()
                    .map(|x| PublicSender {
                        sender_device_id: x.sender_device_id,
                        count: x.envelopes,
                        first_sequence: x.first_sequence,
                        last_sequence: x.last_sequence,
                        bytes: x.bytes,
                    })
                    .collect(),
            })
    } else {
        None
    };
    Ok(PublicSession {
        id: s.id,
        kind: s.kind.to_string(),
        status: s.status.to_string(),
        epoch: s.epoch,
        created_at: s.created_at,
        updated_at: s.updated_at,
        envelopes,
        transcript: None,
    })
}

/// The public view of a terminal (with its transcript's counters).
fn terminal_view(p: PtySession) -> PublicSession {
    PublicSession {
        id: p.id,
        kind: "pty".into(),
        status: p.state.to_string(),
        epoch: 0,
        created_at: p.created_at,
        updated_at: p.updated_at,
        envelopes: None,
        transcript: Some(PublicTranscript {
            bytes: p.output_bytes,
            findings: p.findings,
            withheld_chunks: p.withheld_chunks,
            redaction: if p.withheld_chunks > 0 {
                "partial"
            } else {
                "ok"
            },
            truncated: p.truncated,
        }),
    }
}

fn sessions_enabled(state: &AppState) -> ApiResult<()> {
    if state.config.public.sessions {
        Ok(())
    } else {
        Err(ApiError::not_found("public view (public.sessions is off)"))
    }
}

fn plugins(state: &AppState) -> Vec<PublicPlugin> {
    state
        .runner
        .plugins()
        .status()
        .into_iter()
        .map(|p| PublicPlugin {
            // Only a version that passed its contract checks is ever served.
            contract_checks_passed: true,
            kind: p.kind,
            name: p.name,
            version: p.version,
            sha256: p.sha256,
            loaded_at: p.loaded_at,
        })
        .collect()
}

/// Counts per table and status, redaction counters, version, plugins.
#[utoipa::path(get, path = "/public/state", tag = "public",
    responses((status = 200, body = PublicState)))]
pub async fn public_state(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (table, status, n) in state.store.status_counts().await? {
        counts.entry(table).or_default().insert(status, n);
    }
    let totals = state.store.redaction_totals().await?;
    let redaction: BTreeMap<String, PublicRedaction> =
        [("runs", totals.runs), ("terminals", totals.terminals)]
            .into_iter()
            .map(|(k, (findings, withheld_chunks))| {
                (
                    k.to_string(),
                    PublicRedaction {
                        findings,
                        withheld_chunks,
                    },
                )
            })
            .collect();
    let body = PublicState {
        version: env!("CARGO_PKG_VERSION"),
        counts,
        redacted_findings: totals.runs.0 + totals.terminals.0,
        withheld_chunks: totals.runs.1 + totals.terminals.1,
        redaction,
        plugins: plugins(&state),
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// What the host can attest: schema, migrations, last prune, plugins, log digest.
#[utoipa::path(get, path = "/public/evidence", tag = "public",
    responses((status = 200, body = PublicEvidence)))]
pub async fn public_evidence(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    // One lock across the extension keeps the cached chain monotonic.
    let (last_seq, digest) = {
        let mut cached = state.event_digest.lock().await;
        let next = state.store.extend_event_digest(cached.0, cached.1).await?;
        *cached = next;
        next
    };
    let ((chain_head_seq, chain_head_sha256), (chain_anchor_seq, chain_anchor_sha256)) =
        state.store.chain_head().await?;
    let body = PublicEvidence {
        version: env!("CARGO_PKG_VERSION"),
        schema_version: SCHEMA_VERSION,
        migrations: state
            .store
            .migration_checksums()
            .into_iter()
            .map(|(version, description, sql_sha256)| PublicMigration {
                version,
                description,
                sql_sha256,
            })
            .collect(),
        last_prune: state.store.last_prune().await?.map(|p| PublicPrune {
            at: p.at,
            policy_hash: p.policy_hash,
            counts: p.counts,
        }),
        plugins: plugins(&state),
        event_count: state.store.event_count().await?,
        event_log_last_seq: last_seq,
        event_log_sha256: hex::encode(digest),
        chain_head_seq,
        chain_head_sha256,
        chain_anchor_seq,
        chain_anchor_sha256,
        checkpoint: state.store.latest_checkpoint().await?,
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// Stored signed checkpoints of the event chain, oldest first from `from_seq` (the host keeps
/// the newest `audit.checkpoint_keep`).
#[utoipa::path(get, path = "/public/checkpoints", tag = "public", params(CheckpointQuery),
    responses((status = 200, body = PublicCheckpointList), (status = 400, body = ErrorBody)))]
pub async fn public_checkpoints(
    State(state): State<AppState>,
    page: Paged<CheckpointQuery>,
) -> ApiResult<impl IntoResponse> {
    let body = PublicCheckpointList {
        items: state
            .store
            .checkpoints_from(page.after_seq(), page.limit)
            .await?,
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// Run metadata, by id order (only when `public.runs` is enabled).
#[utoipa::path(get, path = "/public/runs", tag = "public", params(PageQuery),
    responses((status = 200, body = PublicRunList), (status = 404, body = ErrorBody)))]
pub async fn public_runs(
    State(state): State<AppState>,
    page: Paged<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    if !state.config.public.runs {
        return Err(ApiError::not_found("public view (public.runs is off)"));
    }
    let page = state.store.runs(None, page.after_id(), page.limit).await?;
    let body = PublicRunList {
        items: page.items.into_iter().map(PublicRun::from).collect(),
        next: page.next,
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// Session metadata, or a terminal's (only when `public.sessions` is enabled).
#[utoipa::path(get, path = "/public/sessions/{id}", tag = "public", params(("id" = String, Path)),
    responses((status = 200, body = PublicSession), (status = 404, body = ErrorBody)))]
pub async fn public_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    sessions_enabled(&state)?;
    let id = path_id(&id, "session")?;
    let body = if let Some(s) = state.store.session(id).await? {
        session_view(&state, s).await?
    } else if let Some(p) = state.store.pty(id).await? {
        terminal_view(p)
    } else {
        return Err(ApiError::not_found("session"));
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// Sessions by id order, each as `/public/sessions/{id}` shows it (only when
/// `public.sessions` is enabled).
#[utoipa::path(get, path = "/public/sessions", tag = "public", params(PageQuery),
    responses((status = 200, body = PublicSessionList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn public_sessions(
    State(state): State<AppState>,
    page: Paged<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    sessions_enabled(&state)?;
    let page = state
        .store
        .sessions(Owner(None), page.after_id(), page.limit)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for s in page.items {
        items.push(session_view(&state, s).await?);
    }
    let body = PublicSessionList {
        items,
        next: page.next,
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// Terminals by id order, each as `/public/terminals/{id}` shows it (only when
/// `public.sessions` is enabled).
#[utoipa::path(get, path = "/public/terminals", tag = "public", params(PageQuery),
    responses((status = 200, body = PublicSessionList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn public_terminals(
    State(state): State<AppState>,
    page: Paged<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    sessions_enabled(&state)?;
    let page = state.store.pty_page(page.after_id(), page.limit).await?;
    let body = PublicSessionList {
        items: page.items.into_iter().map(terminal_view).collect(),
        next: page.next,
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(body)))
}

/// A terminal's metadata and transcript counters (only when `public.sessions` is enabled).
#[utoipa::path(get, path = "/public/terminals/{id}", tag = "public", params(("id" = String, Path)),
    responses((status = 200, body = PublicSession), (status = 404, body = ErrorBody)))]
pub async fn public_terminal(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    sessions_enabled(&state)?;
    let id = path_id(&id, "terminal")?;
    let Some(p) = state.store.pty(id).await? else {
        return Err(ApiError::not_found("terminal"));
    };
    Ok(([(CACHE_CONTROL, CACHE)], Json(terminal_view(p))))
}

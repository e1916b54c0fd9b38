//! `/v1/console/*`: what the operator console needs beyond the resource API —
//! sign-in / sign-out of a console session (cookie + CSRF proof, see
//! `console::session`), the one-round-trip overview, and the terminal listing
//! (`GET /v1/pty`), which API clients use too.

use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, Caller};
use super::page::{NoCursor, PageParams, RecentItems};
use super::views::PtySession;
use super::{ApiError, ApiResult, AppState, ErrorBody, Paged};
use crate::auth::{self, AuthError, Identity, Role};
use crate::console::session;
use crate::plugins::PluginStatus;
use crate::util::now_ms;
use happyx_core::vocab::{PtyState, RunStatus};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An operator or viewer token (`hpx_…`). Agents have no console.
    token: String,
}

/// The signed-in console session.
#[derive(Serialize, ToSchema)]
pub struct ConsoleSession {
    token_id: String,
    /// `token:<id>`, as in events and `requester` fields.
    actor: String,
    role: Role,
    name: Option<String>,
    /// Send as `X-CSRF-Token` on every state-changing request.
    csrf_token: String,
    expires_at: i64,
    /// Whether the identity that requested an approval may decide it.
    allow_self_approval: bool,
    version: &'static str,
}

fn tls(state: &AppState) -> bool {
    state.config.tls.cert.is_some()
}

fn session_body(
    state: &AppState,
    who: &Identity,
    s: &auth::Secret,
    expires_at: i64,
) -> ConsoleSession {
    ConsoleSession {
        token_id: who.id.clone(),
        actor: who.actor(),
        role: who.role,
        name: who.name.clone(),
        csrf_token: session::csrf_proof(s),
        expires_at,
        allow_self_approval: state.config.approvals.allow_self_approval,
        version: env!("CARGO_PKG_VERSION"),
    }
}

fn cross_site() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "console sign-in is only accepted from the console's own origin",
    )
}

/// Sign in to the console: exchanges an operator or viewer token for a session
/// cookie (`HttpOnly; SameSite=Strict`, `Secure` under TLS). Same-origin only.
#[utoipa::path(post, path = "/v1/console/session", tag = "console", request_body = SignIn,
    responses((status = 201, body = ConsoleSession, headers(("set-cookie" = String, description = "hpx_console session cookie"))),
              (status = 401, body = ErrorBody), (status = 403, description = "agent token (console_forbidden) or cross-site (csrf_failed)", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    if !session::same_origin(&headers, &uri, tls(&state)) {
        return Err(cross_site());
    }
    let who = auth::authenticate(&state.store, body.token.trim()).await?;
    if who.role == Role::Agent {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "console_forbidden",
            "agent tokens cannot sign in to the console; use an operator or viewer token",
        ));
    }
    let s = session::mint();
    let expires_at = now_ms() + session::SESSION_TTL_MS;
    state
        .store
        .create_console_session(&session::hash(&s), &who.id, expires_at)
        .await?;
    let cookie = session::set_cookie(&s, tls(&state))
        .ok_or_else(|| ApiError::internal(&"session cookie is not a header value"))?;
    tracing::info!(token = %who.id, role = who.role.as_str(), "console session started");
    let body = session_body(&state, &who, &s, expires_at);
    Ok((StatusCode::CREATED, [(SET_COOKIE, cookie)], Json(body)).into_response())
}

/// The current console session, with its CSRF proof (cookie only).
#[utoipa::path(get, path = "/v1/console/session", tag = "console",
    responses((status = 200, body = ConsoleSession), (status = 401, body = ErrorBody)))]
pub async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult<Json<ConsoleSession>> {
    let (who, s) = session::authenticate(&state.store, &headers, &method, &uri, tls(&state))
        .await?
        .ok_or(AuthError::Unauthenticated)?;
    let row = state
        .store
        .console_session(&session::hash(&s))
        .await?
        .ok_or(AuthError::Unauthenticated)?;
    Ok(Json(session_body(&state, &who, &s, row.expires_at)))
}

/// Sign out: ends the console session (needs its CSRF proof) and clears the cookie.
#[utoipa::path(delete, path = "/v1/console/session", tag = "console",
    responses((status = 204, description = "signed out"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> ApiResult<Response> {
    let (who, s) = session::authenticate(&state.store, &headers, &method, &uri, tls(&state))
        .await?
        .ok_or(AuthError::Unauthenticated)?;
    state
        .store
        .delete_console_session(&session::hash(&s))
        .await?;
    tracing::info!(token = %who.id, "console session ended");
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, session::clear_cookie(tls(&state)))],
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Overview {
    version: &'static str,
    /// Database file plus its write-ahead log, in bytes.
    storage_bytes: u64,
    /// The embedded console assets, in bytes.
    console_bytes: u64,
    #[schema(value_type = Vec<Object>)]
    plugins: Vec<PluginStatus>,
    pending_approvals: i64,
    live_runs: i64,
    live_terminals: i64,
    last_event_seq: i64,
    #[schema(value_type = Option<Object>)]
    last_prune: Option<crate::store::PruneRecord>,
    /// `[table, status, count]`.
    #[schema(value_type = Vec<Object>)]
    counts: Vec<crate::store::StatusCount>,
}

/// Host health in one answer: version, storage, plugins, queues (operator, viewer).
#[utoipa::path(get, path = "/v1/console/overview", tag = "console", security(("bearer" = [])),
    responses((status = 200, body = Overview), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn overview(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Overview>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let storage_bytes = state.store.storage_bytes().await?;
    let counts = state.store.status_counts().await?;
    let count = |table: &str, statuses: &[&str]| -> i64 {
        counts
            .iter()
            .filter(|(t, s, _)| t == table && statuses.contains(&s.as_str()))
            .map(|(_, _, n)| n)
            .sum()
    };
    let pending_approvals = state
        .store
        .approvals(Some(crate::approvals::ApprovalStatus::Pending), 500)
        .await?
        .len() as i64;
    let live: Vec<&str> = RunStatus::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| s.as_str())
        .collect();
    let live_runs = count("agent_runs", &live);
    let running = Some(PtyState::Running.as_str());
    let live_terminals = state.store.ptys(None, running, 500).await?.len() as i64;
    Ok(Json(Overview {
        version: env!("CARGO_PKG_VERSION"),
        storage_bytes,
        console_bytes: crate::console::asset_bytes(),
        plugins: state.runner.plugins().status(),
        pending_approvals,
        live_runs,
        live_terminals,
        last_event_seq: state.store.last_event_seq().await?,
        last_prune: state.store.last_prune().await?,
        counts,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PtyListQuery {
    /// `starting`, `running`, `exited`, `lost` or `killed`.
    state: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

impl PageParams for PtyListQuery {
    type Limits = RecentItems;
    type Cursor = NoCursor;
    fn take_cursor(&mut self) -> Option<std::convert::Infallible> {
        None
    }
    fn limit(&self) -> Option<i64> {
        self.limit
    }
}

#[derive(Serialize, ToSchema)]
pub struct PtyList {
    items: Vec<PtySession>,
}

/// Terminals, newest first (operator, viewer: all; agent: its own).
#[utoipa::path(get, path = "/v1/pty", tag = "pty", params(PtyListQuery), security(("bearer" = [])),
    responses((status = 200, body = PtyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_ptys(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<PtyListQuery>,
) -> ApiResult<Json<PtyList>> {
    let (q, limit) = (&page.query, page.limit);
    if let Some(s) = q.state.as_deref()
        && s.parse::<PtyState>().is_err()
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "state must be starting, running, exited, lost or killed",
        ));
    }
    let owner = caller.listing_owner();
    let items = state
        .store
        .ptys(owner.as_deref(), q.state.as_deref(), limit)
        .await?
        .into_iter()
        .map(PtySession::from)
        .collect();
    Ok(Json(PtyList { items }))
}

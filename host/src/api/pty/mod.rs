//! `/v1/pty`: real terminals — open one from a recipe (high risk through the
//! one-time approval flow, kind `pty`), read its state, resize / interrupt / kill it.
//! Its redacted transcript is served by [`transcript`], live attach (tickets and the
//! WebSocket) by [`attach`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::views::PtySession;
use crate::api::extract::{ApiJson, Caller};
use crate::api::gate::{self, Admission, Gated};
use crate::api::{ApiError, ApiResult, AppState, ErrorBody, path_id};
use crate::approvals::{self, ActionKind, UseRefusal};
use crate::auth::Role;
use crate::pty::manager::Cmd;
use crate::pty::protocol::SignalKind;
use crate::store::{self, Granted, NewPty, UseEffect};
use crate::util::{new_id, now_ms};

mod attach;
mod relay;
mod transcript;

pub use attach::*;
pub use transcript::*;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPtyBody {
    /// Recipe name from `GET /v1/recipes`.
    recipe: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
    /// The one-time token from an `approval_required` answer, once approved.
    approval_token: Option<String>,
    /// Initial size (default 24 x 80).
    rows: Option<u16>,
    cols: Option<u16>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    rows: u16,
    cols: u16,
}

fn check_size(rows: u16, cols: u16) -> ApiResult<()> {
    if (1..=1000).contains(&rows) && (1..=1000).contains(&cols) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "`rows` and `cols` must be between 1 and 1000",
        ))
    }
}

/// Open a PTY from a recipe (operator, agent). High risk follows the approval
/// flow of `POST /v1/runs` with approvals of kind `pty`. No run timeout.
#[utoipa::path(post, path = "/v1/pty", tag = "pty", request_body = NewPtyBody, security(("bearer" = [])),
    responses((status = 201, body = PtySession), (status = 403, description = "approval_required (with approval_id, approval_token), approval_pending, approval_invalid, forbidden", body = ErrorBody),
               (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create_pty(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewPtyBody>,
) -> ApiResult<Response> {
    caller.require(&[Role::Operator, Role::Agent])?;
    let (rows, cols) = (body.rows.unwrap_or(24), body.cols.unwrap_or(80));
    check_size(rows, cols)?;
    let Gated {
        rendered,
        risk,
        hash,
    } = gate::render(
        &state,
        state.pty.plugins(),
        ActionKind::Pty,
        &body.recipe,
        &body.args,
        None,
    )
    .await?;
    let requester = caller.actor();
    let id = new_id();
    let (socket_path, secret_hash) = state.pty.holder_paths(&id)?;
    let now = now_ms();
    let new = NewPty {
        session: store::PtySession {
            rows: i64::from(rows),
            cols: i64::from(cols),
            recipe_plugin_sha256: Some(rendered.plugin_hash.clone()),
            ..store::PtySession::starting(
                id.clone(),
                body.recipe.clone(),
                risk,
                requester.clone(),
                now,
            )
        },
        action_hash: hash.clone(),
        socket_path,
        secret_hash,
        boot_id: state.pty.boot_id().to_string(),
    };
    let shown = || {
        let mut action = gate::shown_action(&body.recipe, &body.args, &rendered, risk);
        action.insert("pty".into(), true.into());
        action.into()
    };
    let needs = approvals::needs_approval(ActionKind::Pty, risk, caller.0.role);
    let token = body.approval_token.as_deref();
    let effect = UseEffect::CreatePty { pty: &new };
    let session = match gate::admit(
        &state,
        ActionKind::Pty,
        &hash,
        &requester,
        token,
        needs,
        effect,
        shown,
    )
    .await?
    {
        Admission::Required(answer) => return Ok(answer),
        Admission::Granted(Granted::Pty(p)) => *p,
        Admission::Granted(_) => return Err(UseRefusal::Invalid.into()),
        Admission::Free => {
            state.store.create_pty(&new).await?;
            new.session
        }
    };
    let started = state.pty.start(&session, &rendered).await?;
    Ok((StatusCode::CREATED, Json(PtySession::from(started))).into_response())
}

/// Loads a PTY the caller may see (agents: their own).
async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<store::PtySession> {
    let id = path_id(id, "pty")?;
    match state.store.pty(id).await? {
        Some(p) if caller.owns(&p.requested_by) => Ok(p),
        _ => Err(ApiError::not_found("pty")),
    }
}

/// PTY state and public-safe metadata.
#[utoipa::path(get, path = "/v1/pty/{id}", tag = "pty", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = PtySession), (status = 404, body = ErrorBody)))]
pub async fn get_pty(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PtySession>> {
    Ok(Json(visible(&state, &caller, &id).await?.into()))
}

/// Where the terminal `id` is served: here, or the host that owns its holder
/// ([`crate::cluster`]).
pub(super) async fn owner_of(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> ApiResult<crate::cluster::Owner> {
    let owner = state.store.pty_holder(id).await?.and_then(|h| h.host_id);
    state.cluster.locate(owner.as_deref(), headers).await
}

/// A resize, interrupt or kill: run here on a terminal this host owns, else forwarded to its
/// owner as `POST /v1/pty/{id}/{kind}` with `body` and the caller's credentials.
async fn control(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    kind: &str,
    data: serde_json::Value,
    cmd: Cmd,
) -> ApiResult<Response> {
    caller.require(&[Role::Operator, Role::Agent])?;
    let p = visible(state, caller, id).await?;
    if let crate::cluster::Owner::Elsewhere(owner) = owner_of(state, &p.id, headers).await? {
        let body = (kind == "resize").then(|| data.clone());
        let path = format!("/v1/pty/{}/{kind}", p.id);
        return state
            .cluster
            .forward_post(&owner, &path, headers, body)
            .await;
    }
    state
        .pty
        .control(&p.id, &caller.actor(), kind, data, cmd)
        .await?;
    let view: PtySession = state.store.pty(&p.id).await?.unwrap_or(p).into();
    Ok(Json(view).into_response())
}

/// Resize the terminal (1–1000 rows and columns).
#[utoipa::path(post, path = "/v1/pty/{id}/resize", tag = "pty", params(("id" = String, Path)), request_body = ResizeBody,
    security(("bearer" = [])), responses((status = 200, body = PtySession), (status = 409, body = ErrorBody)))]
pub async fn resize_pty(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ResizeBody>,
) -> ApiResult<Response> {
    check_size(b.rows, b.cols)?;
    let data = json!({ "rows": b.rows, "cols": b.cols });
    control(
        &state,
        &caller,
        &headers,
        &id,
        "resize",
        data,
        Cmd::Resize(b.rows, b.cols),
    )
    .await
}

/// SIGINT to the terminal's foreground process group.
#[utoipa::path(post, path = "/v1/pty/{id}/interrupt", tag = "pty", params(("id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = PtySession), (status = 409, body = ErrorBody)))]
pub async fn interrupt_pty(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let cmd = Cmd::Signal(SignalKind::Interrupt);
    control(&state, &caller, &headers, &id, "interrupt", json!({}), cmd).await
}

/// SIGHUP, then SIGKILL to the process group after a 2 s grace.
#[utoipa::path(post, path = "/v1/pty/{id}/kill", tag = "pty", params(("id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = PtySession), (status = 409, body = ErrorBody)))]
pub async fn kill_pty(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let cmd = Cmd::Signal(SignalKind::Kill);
    control(
        &state,
        &caller,
        &headers,
        &id,
        "kill",
        json!({ "grace_ms": 2000 }),
        cmd,
    )
    .await
}

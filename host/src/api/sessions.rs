//! `/v1/sessions`: agent or terminal conversations.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller};
use super::views::Session;
use super::{ApiError, ApiResult, AppState, ErrorBody, PageQuery, Paged, check_text, path_id};
use crate::auth::Role;
use crate::store::{self, Owner};
use crate::util::{new_id, now_ms};
use happyx_core::vocab;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// 1 to 200 characters.
    name: String,
    /// `agent` (default) or `terminal`. Encrypted sessions are opened by devices.
    #[serde(default)]
    kind: SessionKind,
    /// The task this session works on.
    task_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    #[default]
    Agent,
    Terminal,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    status: SessionStatus,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Open,
    Closed,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    items: Vec<Session>,
    next: Option<String>,
}

fn visible(caller: &Caller, s: &store::Session) -> bool {
    caller.owns(&s.created_by)
}

/// Create a session (operator, agent).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession, security(("bearer" = [])),
    responses((status = 201, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    caller.require(&[Role::Operator, Role::Agent])?;
    check_text("name", &body.name, 1, 200)?;
    if let Some(task_id) = &body.task_id {
        let visible_task = match state.store.task(path_id(task_id, "task")?).await? {
            Some(t) => caller.owns(&t.created_by),
            None => false,
        };
        if !visible_task {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "`task_id`: no such task",
            ));
        }
    }
    let now = now_ms();
    let session = store::Session {
        id: new_id(),
        name: body.name,
        kind: match body.kind {
            SessionKind::Agent => vocab::SessionKind::Agent,
            SessionKind::Terminal => vocab::SessionKind::Terminal,
        },
        status: vocab::SessionStatus::Open,
        task_id: body.task_id,
        epoch: 0,
        rotation_required_since: None,
        created_by: caller.actor(),
        created_at: now,
        updated_at: now,
    };
    state.store.create_session(&session).await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// List sessions (agents: their own).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<PageQuery>,
) -> ApiResult<Json<SessionList>> {
    let owner = caller.listing_owner();
    let page = state
        .store
        .sessions(Owner(owner.as_deref()), page.after_id(), page.limit)
        .await?;
    Ok(Json(SessionList {
        items: page.items.into_iter().map(Session::from).collect(),
        next: page.next,
    }))
}

/// One session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Session), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Session>> {
    let id = path_id(&id, "session")?;
    match state.store.session(id).await? {
        Some(s) if visible(&caller, &s) => Ok(Json(s.into())),
        _ => Err(ApiError::not_found("session")),
    }
}

/// Open or close a session (operator; an agent on its own).
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    request_body = SessionUpdate, security(("bearer" = [])),
    responses((status = 200, body = Session), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SessionUpdate>,
) -> ApiResult<Json<Session>> {
    caller.require(&[Role::Operator, Role::Agent])?;
    let id = path_id(&id, "session")?;
    match state.store.session(id).await? {
        Some(s) if visible(&caller, &s) => {}
        _ => return Err(ApiError::not_found("session")),
    }
    let status = match body.status {
        SessionStatus::Open => vocab::SessionStatus::Open,
        SessionStatus::Closed => vocab::SessionStatus::Closed,
    };
    Ok(Json(
        state
            .store
            .set_session_status(id, status, &caller.actor())
            .await?
            .into(),
    ))
}

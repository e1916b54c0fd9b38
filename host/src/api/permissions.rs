//! `/v1/permissions`: standing grants (operator-managed).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller};
use super::views::Permission;
use super::{ApiError, ApiResult, AppState, ErrorBody, PageQuery, Paged, check_text, path_id};
use crate::auth::Role;
use crate::store;
use crate::util::{new_id, now_ms};
use happyx_core::vocab;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPermission {
    /// Token id or device id the grant is for.
    subject: String,
    /// Class of action, e.g. `pty.drive`, `pty.observe`, `run.high` (1–100 chars).
    action: String,
    /// Where it applies, e.g. `session:<id>` or `*` (1–200 chars).
    scope: String,
    /// Unix ms after which the grant no longer applies; must be in the future.
    expires_at: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionUpdate {
    /// Only `revoked`: a revoked grant is not re-activated; grant anew.
    status: PermissionStatus,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PermissionStatus {
    Revoked,
}

#[derive(Serialize, ToSchema)]
pub struct PermissionList {
    items: Vec<Permission>,
    next: Option<String>,
}

fn invalid(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", msg)
}

/// Grant a permission (operator).
#[utoipa::path(post, path = "/v1/permissions", tag = "permissions", request_body = NewPermission, security(("bearer" = [])),
    responses((status = 201, body = Permission), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_permission(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewPermission>,
) -> ApiResult<(StatusCode, Json<Permission>)> {
    caller.require(&[Role::Operator])?;
    if !crate::util::is_valid_id(&body.subject) {
        return Err(invalid("`subject`: not a token or device id"));
    }
    check_text("action", &body.action, 1, 100)?;
    check_text("scope", &body.scope, 1, 200)?;
    let now = now_ms();
    if matches!(body.expires_at, Some(t) if t <= now) {
        return Err(invalid("`expires_at`: must be in the future"));
    }
    let p = store::Permission {
        id: new_id(),
        subject: body.subject,
        action: body.action,
        scope: body.scope,
        status: vocab::PermissionStatus::Active,
        granted_by: caller.actor(),
        expires_at: body.expires_at,
        created_at: now,
        updated_at: now,
    };
    state.store.create_permission(&p).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// List permissions (operator, viewer).
#[utoipa::path(get, path = "/v1/permissions", tag = "permissions", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = PermissionList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_permissions(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<PageQuery>,
) -> ApiResult<Json<PermissionList>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let page = state.store.permissions(page.after_id(), page.limit).await?;
    Ok(Json(PermissionList {
        items: page.items.into_iter().map(Permission::from).collect(),
        next: page.next,
    }))
}

/// One permission (operator, viewer).
#[utoipa::path(get, path = "/v1/permissions/{id}", tag = "permissions", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Permission), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Permission>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let id = path_id(&id, "permission")?;
    state
        .store
        .permission(id)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| ApiError::not_found("permission"))
}

/// Revoke a permission (operator).
#[utoipa::path(patch, path = "/v1/permissions/{id}", tag = "permissions", params(("id" = String, Path)),
    request_body = PermissionUpdate, security(("bearer" = [])),
    responses((status = 200, body = Permission), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PermissionUpdate>,
) -> ApiResult<Json<Permission>> {
    caller.require(&[Role::Operator])?;
    let id = path_id(&id, "permission")?;
    let PermissionStatus::Revoked = body.status;
    Ok(Json(
        state
            .store
            .set_permission_status(id, vocab::PermissionStatus::Revoked, &caller.actor())
            .await?
            .into(),
    ))
}

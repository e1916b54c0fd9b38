//! `/v1/approvals`: operators see pending requests with the rendered command
//! and decide them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Caller, RawBody};
use super::{ApiError, ApiResult, AppState, ErrorBody, path_id};
use crate::auth::Role;
use crate::store::{Approval, StoreError};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending` (unexpired), `approved`, `denied` or `used`; all when absent.
    status: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalList {
    items: Vec<Approval>,
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    id: String,
    status: String,
}

/// Approvals, newest first (operator, viewer).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalsQuery), security(("bearer" = [])),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ApprovalsQuery>,
) -> ApiResult<Json<ApprovalList>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "approved" | "denied" | "used")
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status must be pending, approved, denied or used",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 500",
        ));
    }
    let items = state.store.approvals(q.status.as_deref(), limit).await?;
    Ok(Json(ApprovalList { items }))
}

/// Optional body of approve / deny.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (1–500 characters); recorded as an `approval.reason` event.
    reason: Option<String>,
}

async fn decide(
    state: AppState,
    caller: Caller,
    id: String,
    approve: bool,
    body: &[u8],
) -> ApiResult<Json<Decision>> {
    caller.require(&[Role::Operator])?;
    let id = path_id(&id, "approval")?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        super::parse_json(body)?
    };
    if let Some(r) = &body.reason {
        super::check_text("reason", r, 1, 500)?;
    }
    let decided = decide_inner(&state, &caller, id, approve).await?;
    if let Some(reason) = body.reason {
        let data = serde_json::json!({ "decision": decided.status, "reason": reason });
        state
            .store
            .append_event(&crate::store::NewEvent::new(
                "approval.reason",
                &caller.actor(),
                &decided.id,
                data,
            ))
            .await?;
    }
    Ok(Json(decided))
}

async fn decide_inner(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
) -> ApiResult<Decision> {
    let allow_self = state.config.approvals.allow_self_approval;
    match state
        .store
        .decide_approval(id, &caller.actor(), approve, allow_self)
        .await
    {
        Ok(a) => Ok(Decision {
            id: a.id,
            status: a.status,
        }),
        Err(StoreError::NotFound) => Err(ApiError::not_found("approval")),
        Err(StoreError::Conflict("not_pending")) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "approval_not_pending",
            "this approval was already decided or used",
        )),
        Err(StoreError::Conflict("expired")) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "approval_expired",
            "this approval has expired",
        )),
        Err(StoreError::Conflict("self_approval")) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "self_approval_forbidden",
            "the identity that requested an approval cannot decide it (approvals.allow_self_approval)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Approve a pending request (operator; not the requesting identity).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path)), request_body(content = Option<DecisionBody>), security(("bearer" = [])),
    responses((status = 200, body = Decision), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Decision>> {
    decide(state, caller, id, true, &body).await
}

/// Deny a pending request (operator; not the requesting identity).
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", params(("id" = String, Path)), request_body(content = Option<DecisionBody>), security(("bearer" = [])),
    responses((status = 200, body = Decision), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Decision>> {
    decide(state, caller, id, false, &body).await
}

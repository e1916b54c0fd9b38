//! `/v1/approvals`: operators see pending requests with the rendered command
//! and decide them.
//!
//! What each role sees of an action: operators the exact action, with every secret the
//! redactor finds in it marked (`secrets`: JSON pointer, byte range, rule), because they
//! decide on exactly what will run; viewers the action through the redactor (secrets masked
//! with `*`, byte lengths kept; a string the redactor failed on is withheld).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Caller, RawBody};
use super::page::{NoCursor, PageParams, RecentItems};
use super::views::Approval;
use super::{ApiError, ApiResult, AppState, ErrorBody, Paged, path_id};
use crate::approvals;
use crate::auth::Role;
use crate::store;
use happyx_core::vocab::ApprovalStatus;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending` (unexpired), `approved`, `denied` or `used`; all when absent.
    status: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

impl PageParams for ApprovalsQuery {
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
pub struct ApprovalList {
    items: Vec<ApprovalView>,
}

/// An approval as its reader may see it.
#[derive(Serialize, ToSchema)]
pub struct ApprovalView {
    #[serde(flatten)]
    approval: Approval,
    /// Operators: where in `action` the redactor found secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretMark>,
    /// `ok`, or `failed` when the redactor could not check the action (viewers then see
    /// every string of it withheld).
    redaction: &'static str,
}

/// A secret inside one string of an action.
#[derive(Serialize, ToSchema)]
pub struct SecretMark {
    /// JSON pointer (RFC 6901) to the string within `action`.
    path: String,
    /// Byte range within that string.
    start: usize,
    end: usize,
    rule: String,
}

/// Every string of `v` with its JSON pointer, in document order.
fn strings<'a>(
    v: &'a mut serde_json::Value,
    path: String,
    out: &mut Vec<(String, &'a mut String)>,
) {
    match v {
        serde_json::Value::String(s) => out.push((path, s)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strings(item, format!("{path}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let key = k.replace('~', "~0").replace('/', "~1");
                strings(item, format!("{path}/{key}"), out);
            }
        }
        _ => {}
    }
}

/// Runs the strings of `a.action` through the redactor in one call (joined by newlines) and
/// shapes the approval for `caller`'s role.
async fn view(state: &AppState, caller: &Caller, approval: store::Approval) -> ApprovalView {
    let mut approval = Approval::from(approval);
    let operator = caller.is(Role::Operator);
    let mut found: Vec<(String, &mut String)> = Vec::new();
    strings(&mut approval.action, String::new(), &mut found);
    let mut joined = Vec::new();
    let mut spans = Vec::with_capacity(found.len());
    for (_, s) in &found {
        let start = joined.len();
        joined.extend_from_slice(s.as_bytes());
        spans.push((start, joined.len()));
        joined.push(b'\n');
    }
    let plugins = state.runner.plugins();
    let (secrets, redaction) = match plugins.redact(crate::plugins::source::TEXT, &joined).await {
        Ok(r) => {
            let mut secrets = Vec::new();
            let mut masks: Vec<Vec<crate::plugins::Finding>> = vec![Vec::new(); found.len()];
            for f in &r.findings {
                for (i, (start, end)) in spans.iter().enumerate() {
                    let (a, b) = (f.start.max(*start), f.end.min(*end));
                    if a < b {
                        let local = crate::plugins::Finding {
                            rule: f.rule.clone(),
                            start: a - start,
                            end: b - start,
                        };
                        secrets.push(SecretMark {
                            path: found[i].0.clone(),
                            start: local.start,
                            end: local.end,
                            rule: f.rule.clone(),
                        });
                        masks[i].push(local);
                    }
                }
            }
            if !operator {
                for ((_, s), m) in found.iter_mut().zip(&masks) {
                    if !m.is_empty() {
                        let masked = crate::plugins::apply_masks(s.as_bytes(), m);
                        **s = String::from_utf8_lossy(&masked).into_owned();
                    }
                }
            }
            (if operator { secrets } else { Vec::new() }, "ok")
        }
        Err(e) => {
            tracing::warn!(approval = %approval.id, plugin = %e.plugin(), code = e.code(), "redactor failed on an approval's action");
            if !operator {
                for (_, s) in found.iter_mut() {
                    **s = format!("[withheld: {} bytes could not be redacted]", s.len());
                }
            }
            (Vec::new(), "failed")
        }
    };
    drop(found);
    ApprovalView {
        approval,
        secrets,
        redaction,
    }
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    id: String,
    status: ApprovalStatus,
}

/// Approvals, newest first (operator, viewer).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalsQuery), security(("bearer" = [])),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<ApprovalsQuery>,
) -> ApiResult<Json<ApprovalList>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let (q, limit) = (&page.query, page.limit);
    let status = q
        .status
        .as_deref()
        .map(str::parse::<ApprovalStatus>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "status must be pending, approved, denied or used",
            )
        })?;
    let mut items = Vec::new();
    for a in state.store.approvals(status, limit).await? {
        items.push(view(&state, &caller, a).await);
    }
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
    let a = approvals::decide(&state.store, id, &caller.actor(), approve, allow_self).await?;
    Ok(Decision {
        id: a.id,
        status: a.status,
    })
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

/// One approval (operator, viewer; an agent only its own), shaped for the reader's role as
/// in the listing.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ApprovalView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApprovalView>> {
    let id = path_id(&id, "approval")?;
    let a = state
        .store
        .approval(id)
        .await?
        .filter(|a| caller.owns(&a.requester))
        .ok_or_else(|| ApiError::not_found("approval"))?;
    Ok(Json(view(&state, &caller, a).await))
}

/// Withdraw one's own pending approval (the requesting identity): it ends `denied` and its
/// token can never be spent.
#[utoipa::path(post, path = "/v1/approvals/{id}/withdraw", tag = "approvals", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Decision), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Decision>> {
    let id = path_id(&id, "approval")?;
    let a = approvals::withdraw(&state.store, id, &caller.actor()).await?;
    Ok(Json(Decision {
        id: a.id,
        status: a.status,
    }))
}

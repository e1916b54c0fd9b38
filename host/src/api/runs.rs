//! `/v1/runs` and `/v1/recipes`: run a curated recipe, with the one-time
//! approval flow for high-risk ones.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller};
use super::gate::{self, Admission, ApprovalRequired, Gated};
use super::page::{IdCursor, IdPages, PageParams};
use super::views::Run;
use super::{ApiError, ApiResult, AppState, ErrorBody, Paged, path_id};
use crate::approvals::{self, ActionKind, UseRefusal};
use crate::auth::Role;
use crate::plugins::Recipe;
use crate::run_hold::{Served, served_prefix};
use crate::store::{self, Granted, StoreError, UseEffect};
use crate::util::{new_id, now_ms};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// Recipe name from `GET /v1/recipes`.
    recipe: String,
    /// Recipe arguments (string values).
    #[serde(default)]
    args: BTreeMap<String, String>,
    session_id: Option<String>,
    /// The one-time token from an `approval_required` answer, once approved.
    approval_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    items: Vec<Run>,
    next: Option<String>,
}

fn visible(caller: &Caller, r: &store::Run) -> bool {
    caller.owns(&r.requested_by)
}

/// Start a run (operator, agent). Low and medium risk start at once; high risk
/// answers `403 approval_required` with a one-time token, usable once after an
/// operator approves. `Idempotency-Key` makes retries return the same run.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = NewRun, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Client key (1–128 visible ASCII chars); a retry with the same key and action returns the same run")),
    responses((status = 201, body = Run), (status = 403, description = "approval_required (with approval_id, approval_token), approval_pending, approval_invalid, forbidden", body = ApprovalRequired),
               (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewRun>,
) -> ApiResult<impl IntoResponse> {
    caller.require(&[Role::Operator, Role::Agent])?;
    let idem = idempotency_key(&headers)?;
    if let Some(sid) = &body.session_id {
        let ok = match state.store.session(path_id(sid, "session")?).await? {
            Some(s) => caller.owns(&s.created_by),
            None => false,
        };
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "`session_id`: no such session",
            ));
        }
    }
    let Gated {
        rendered,
        risk,
        hash,
    } = gate::render(
        &state,
        state.runner.plugins(),
        ActionKind::Run,
        &body.recipe,
        &body.args,
        body.session_id.as_deref(),
    )
    .await?;
    let requester = caller.actor();
    if let Some(key) = idem.as_deref()
        && let Some((run, prior_hash)) = state.store.run_by_idempotency_key(&requester, key).await?
    {
        if prior_hash != hash {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was used for a different action",
            ));
        }
        return Ok((StatusCode::CREATED, Json(Run::from(run))).into_response());
    }
    let now = now_ms();
    let run = store::Run {
        recipe_plugin_sha256: Some(rendered.plugin_hash.clone()),
        host_id: None,
        ..store::Run::queued(
            new_id(),
            body.recipe.clone(),
            risk,
            body.session_id.clone(),
            requester.clone(),
            now,
        )
    };
    let effect = UseEffect::CreateRun {
        run: &run,
        idempotency_key: idem.as_deref(),
    };
    let shown = || {
        let mut action = gate::shown_action(&body.recipe, &body.args, &rendered, risk);
        action.insert("session_id".into(), serde_json::json!(body.session_id));
        action.into()
    };
    let needs = approvals::needs_approval(ActionKind::Run, risk, caller.0.role);
    let token = body.approval_token.as_deref();
    let run = match gate::admit(
        &state,
        ActionKind::Run,
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
        Admission::Granted(Granted::Run(run)) => *run,
        Admission::Granted(_) => return Err(UseRefusal::Invalid.into()),
        Admission::Free => match state.store.create_run(&run, idem.as_deref(), &hash).await {
            Ok(()) => run,
            Err(StoreError::IdempotencyKeyReuse) => {
                // A concurrent request with the same key won the race.
                let prior = state
                    .store
                    .run_by_idempotency_key(&requester, idem.as_deref().unwrap_or(""))
                    .await?;
                return match prior {
                    Some((r, h)) if h == hash => {
                        Ok((StatusCode::CREATED, Json(Run::from(r))).into_response())
                    }
                    _ => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_conflict",
                        "this Idempotency-Key was used for a different action",
                    )),
                };
            }
            Err(e) => return Err(e.into()),
        },
    };
    state
        .runner
        .start(run.id.clone(), run.requested_by.clone(), rendered);
    Ok((StatusCode::CREATED, Json(Run::from(run))).into_response())
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().ok().filter(|s| {
        !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY && s.bytes().all(|b| b.is_ascii_graphic())
    });
    match s {
        Some(s) => Ok(Some(s.to_string())),
        None => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )),
    }
}

/// List runs (agents: their own).
/// Filters and order of `GET /v1/runs`; without any, the original ascending cursor listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Ascending: return runs after this id (the `next` of the previous page).
    /// With `order=desc`: runs before this id.
    after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// `asc` (default without filters) or `desc` (newest first; always with a filter).
    order: Option<String>,
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs requested by this actor (`token:<id>`).
    requester: Option<String>,
    /// Only runs of this recipe.
    recipe: Option<String>,
    /// Only runs of this risk (`low`, `medium`, `high`).
    risk: Option<String>,
}

impl PageParams for RunsQuery {
    type Limits = IdPages;
    type Cursor = IdCursor;
    fn take_cursor(&mut self) -> Option<String> {
        self.after.take()
    }
    fn limit(&self) -> Option<i64> {
        self.limit
    }
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunsQuery), security(("bearer" = [])),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<RunsQuery>,
) -> ApiResult<Json<RunList>> {
    let owner = caller.listing_owner();
    let owner = owner.as_deref();
    let q = &page.query;
    let filtered =
        q.status.is_some() || q.requester.is_some() || q.recipe.is_some() || q.risk.is_some();
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "order must be asc or desc",
            ));
        }
    };
    if !filtered && !desc {
        let page = state.store.runs(owner, page.after_id(), page.limit).await?;
        return Ok(Json(RunList {
            items: page.items.into_iter().map(Run::from).collect(),
            next: page.next,
        }));
    }
    if let Some(r) = q.risk.as_deref()
        && !matches!(r, "low" | "medium" | "high")
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "risk must be low, medium or high",
        ));
    }
    for v in [&q.status, &q.requester, &q.recipe].into_iter().flatten() {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "a filter value is empty, too long or holds control characters",
            ));
        }
    }
    let limit = page.limit;
    let filter = crate::store::RunFilter {
        owner,
        status: q.status.as_deref(),
        requester: q.requester.as_deref(),
        recipe: q.recipe.as_deref(),
        risk: q.risk.as_deref(),
        before: page.after_id(),
        limit: limit + 1,
    };
    let mut items = state.store.runs_filtered(&filter).await?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.id.clone())
    } else {
        None
    };
    let items = items.into_iter().map(Run::from).collect();
    Ok(Json(RunList { items, next }))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Run), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Run>> {
    let id = path_id(&id, "run")?;
    match state.store.run(id).await? {
        Some(r) if visible(&caller, &r) => Ok(Json(r.into())),
        _ => Err(ApiError::not_found("run")),
    }
}

/// The redacted output as text (operator), stdout and stderr in the order they were
/// stored. Chunks the redactor could not process are withheld and replaced by a marker line.
///
/// While the run is queued or running, the last 4 KiB of the newest chunk of each stream (the
/// redaction overlap window, which the next chunk may still re-mask when a secret straddles
/// the boundary) is held back, together with everything stored after it, until the next
/// chunk of that stream is stored or 500 ms pass with no more output on it. So a client that
/// polls this route while the run is live only ever sees a growing prefix of the final
/// output, masked as it is finally stored. Once the run has finished, everything is served.
#[utoipa::path(get, path = "/v1/runs/{id}/output", tag = "runs", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "redacted output; while the run is live, a prefix of it (the overlap window held back)", content_type = "text/plain"), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_run_output(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(&[Role::Operator])?;
    let id = path_id(&id, "run")?;
    // Read before the status and the output: see `Holds::served`.
    let held = state.runner.served(id);
    let Some(run) = state.store.run(id).await? else {
        return Err(ApiError::not_found("run"));
    };
    let served = match held {
        Some(s) => s,
        None if !run.status.is_final() => Served::NOTHING,
        None => Served::Everything,
    };
    let chunks: Vec<(i64, Vec<u8>)> = state
        .store
        .run_output(id)
        .await?
        .into_iter()
        .map(|c| {
            let shown = match c.redacted {
                Some(r) => r,
                None => format!(
                    "\n[withheld: {} bytes of {} could not be redacted]\n",
                    c.data.len(),
                    c.stream
                )
                .into_bytes(),
            };
            (c.chunk_index, shown)
        })
        .collect();
    let out = served_prefix(served, chunks.iter().map(|(i, b)| (*i, b.as_slice())));
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], out))
}

/// The recipes the recipe plugin offers.
#[utoipa::path(get, path = "/v1/recipes", tag = "runs", security(("bearer" = [])),
    responses((status = 200, description = "[{name, description, risk, params}]"), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_recipes(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<Recipe>>> {
    state
        .runner
        .plugins()
        .catalog()
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()))
}

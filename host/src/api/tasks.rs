//! `/v1/tasks`: work an agent is asked to do.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller};
use super::views::Task;
use super::{ApiError, ApiResult, AppState, ErrorBody, PageQuery, Paged, check_text, path_id};
use crate::auth::Role;
use crate::store::{self, Owner};
use crate::util::{new_id, now_ms};
use happyx_core::vocab;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// 1 to 500 characters.
    title: String,
    /// Up to 10000 characters.
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdate {
    status: TaskStatus,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Done,
    Cancelled,
}

impl From<TaskStatus> for vocab::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Open => Self::Open,
            TaskStatus::InProgress => Self::InProgress,
            TaskStatus::Done => Self::Done,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    items: Vec<Task>,
    /// Cursor for the next page (`after`), absent on the last page.
    next: Option<String>,
}

/// Agents see only their own tasks.
fn visible(caller: &Caller, t: &store::Task) -> bool {
    caller.owns(&t.created_by)
}

/// Create a task (operator, agent).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = NewTask, security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    caller.require(&[Role::Operator, Role::Agent])?;
    check_text("title", &body.title, 1, 500)?;
    check_text("description", &body.description, 0, 10_000)?;
    let now = now_ms();
    let task = store::Task {
        id: new_id(),
        title: body.title,
        description: body.description,
        status: vocab::TaskStatus::Open,
        created_by: caller.actor(),
        created_at: now,
        updated_at: now,
    };
    state.store.create_task(&task).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// List tasks by id order (agents: their own).
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<PageQuery>,
) -> ApiResult<Json<TaskList>> {
    let owner = caller.listing_owner();
    let page = state
        .store
        .tasks(Owner(owner.as_deref()), page.after_id(), page.limit)
        .await?;
    Ok(Json(TaskList {
        items: page.items.into_iter().map(Task::from).collect(),
        next: page.next,
    }))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let id = path_id(&id, "task")?;
    match state.store.task(id).await? {
        Some(t) if visible(&caller, &t) => Ok(Json(t.into())),
        _ => Err(ApiError::not_found("task")),
    }
}

/// Change a task's status (operator; an agent on its own tasks).
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)), request_body = TaskUpdate,
    security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TaskUpdate>,
) -> ApiResult<Json<Task>> {
    caller.require(&[Role::Operator, Role::Agent])?;
    let id = path_id(&id, "task")?;
    match state.store.task(id).await? {
        Some(t) if visible(&caller, &t) => {}
        _ => return Err(ApiError::not_found("task")),
    }
    let t = state
        .store
        .set_task_status(id, body.status.into(), &caller.actor())
        .await?;
    Ok(Json(t.into()))
}

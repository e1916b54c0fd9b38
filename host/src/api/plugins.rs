//! `/v1/plugins`: what policy is serving, and hot reload.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::Caller;
use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::auth::Role;
use crate::plugins::PluginStatus;

/// The serving plugins: kind, world, name, version, sha256, loaded-at, last
/// error, call counts and time spent (operator, viewer).
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "[{kind, world, name, version, sha256, source, loaded_at, last_error, calls, failures, total_call_us}]"),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<PluginStatus>>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    Ok(Json(state.runner.plugins().status()))
}

/// Read the `[plugins]` section of the configuration again, recompile what changed, run the
/// contract checks (and fixtures), and swap atomically; a failing candidate leaves the last
/// good version serving and its error in `last_error` (operator). SIGHUP and
/// `plugins.watch` do the same.
#[utoipa::path(post, path = "/v1/plugins/reload", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "statuses after the reload"), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<PluginStatus>>> {
    caller.require(&[Role::Operator])?;
    match state.reloader.reload(&caller.actor(), "api").await {
        Ok(s) => Ok(Json(s)),
        Err(crate::reload::ReloadError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.code(),
            e.to_string(),
        )),
    }
}

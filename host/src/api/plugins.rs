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

/// Recompile the configured plugins, run their contract checks (and
/// fixtures), and swap atomically; a failing candidate leaves the last good
/// version serving and its error in `last_error` (operator).
#[utoipa::path(post, path = "/v1/plugins/reload", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "statuses after the reload"), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reload_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<PluginStatus>>> {
    caller.require(&[Role::Operator])?;
    let plugins = state.runner.plugins();
    let outcome = plugins.reload().await;
    let actor = caller.actor();
    let statuses = plugins.status();
    let data = serde_json::json!({
        "ok": outcome.is_ok(),
        "plugins": statuses.iter().map(|p| serde_json::json!({"kind": p.kind, "sha256": p.sha256})).collect::<Vec<_>>(),
    });
    state
        .store
        .append_event(&crate::store::NewEvent::new(
            "plugins.reloaded",
            &actor,
            "plugins",
            data,
        ))
        .await?;
    match outcome {
        Ok(s) => Ok(Json(s)),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.code(),
            format!("{e}; the previous version keeps serving"),
        )),
    }
}

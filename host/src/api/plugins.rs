//! `/v1/plugins`: what policy is serving, and hot reload; `/v1/hosts`: the hosts serving
//! this database.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Caller;
use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::auth::Role;
use crate::plugins::PluginStatus;

/// One plugin of this host, and the version every serving host has of its kind.
#[derive(Serialize)]
pub struct PluginView {
    #[serde(flatten)]
    status: PluginStatus,
    /// Host id → the SHA-256 of this kind's plugin that host serves (every serving host of
    /// the database, this one included; on SQLite, this host only).
    hosts: BTreeMap<String, String>,
}

/// The serving plugins of this host: kind, world, name, version, sha256, loaded-at, last
/// error, call counts and time spent; and, per kind, the sha256 each serving host has loaded
/// (`hosts`), so a reload that did not reach a host shows (operator, viewer).
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "[{kind, world, name, version, sha256, source, loaded_at, last_error, calls, failures, total_call_us, hosts: {host_id: sha256}}]"),
               (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<PluginView>>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let hosts = serving_hosts(&state).await?;
    let views = state
        .runner
        .plugins()
        .status()
        .into_iter()
        .map(|status| {
            let mut per_host: BTreeMap<String, String> = hosts
                .iter()
                .filter_map(|h| {
                    let sha = h.plugins.get(&status.kind)?.as_str()?;
                    Some((h.id.clone(), sha.to_string()))
                })
                .collect();
            // This host's own answer is what it serves this instant.
            per_host.insert(state.cluster.id().to_string(), status.sha256.clone());
            PluginView {
                status,
                hosts: per_host,
            }
        })
        .collect();
    Ok(Json(views))
}

/// A host that serves (or served) this database.
#[derive(Serialize, ToSchema)]
pub struct HostView {
    id: String,
    /// Where the other hosts reach it.
    advertise_url: String,
    version: String,
    started_at: i64,
    /// Whether it is serving now.
    alive: bool,
    /// Whether it is the host that answered.
    this: bool,
    /// Its loaded plugins, kind → SHA-256, as of `plugins_at`.
    #[schema(value_type = Object)]
    plugins: serde_json::Value,
    plugins_at: i64,
}

/// The registered hosts that serve now.
async fn serving_hosts(state: &AppState) -> ApiResult<Vec<crate::store::HostRecord>> {
    let mut out = Vec::new();
    for record in state.store.hosts().await? {
        if state.store.host_alive(&record.id).await? {
            out.push(record);
        }
    }
    Ok(out)
}

/// Every host that registered with this database, whether it serves now, where it is
/// reached and the plugins it loaded (operator, viewer).
#[utoipa::path(get, path = "/v1/hosts", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, body = [HostView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_hosts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<HostView>>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let mut out = Vec::new();
    for r in state.store.hosts().await? {
        let alive = state.store.host_alive(&r.id).await?;
        out.push(HostView {
            this: r.id == state.cluster.id(),
            id: r.id,
            advertise_url: r.advertise_url,
            version: r.version,
            started_at: r.started_at,
            alive,
            plugins: r.plugins,
            plugins_at: r.plugins_at,
        });
    }
    Ok(Json(out))
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

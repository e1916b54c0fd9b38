//! `GET /v1/status`: what an operator on call looks at first — version and address, which
//! isolation guarantees hold on this host, the plugins serving, pending approvals, live runs
//! and terminals, the last prune. `happyx status` prints it.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Caller;
use super::{ApiResult, AppState, ErrorBody};
use crate::auth::Role;
use crate::children::Guarantees;
use crate::plugins::PluginStatus;

/// The host at a glance.
#[derive(Serialize, ToSchema)]
pub struct Status {
    pub version: &'static str,
    /// The address the host listens on (as printed by `happyx serve`).
    pub address: String,
    /// Which isolation guarantees hold for children (runs, terminals) on this host.
    pub isolation: Guarantees,
    #[schema(value_type = Vec<Object>)]
    pub plugins: Vec<PluginStatus>,
    pub pending_approvals: i64,
    /// Runs queued or running.
    pub live_runs: i64,
    /// Terminals starting or running.
    pub live_terminals: i64,
    /// The last retention pass: when, under which policy, what it removed.
    #[schema(value_type = Option<Object>)]
    pub last_prune: Option<serde_json::Value>,
}

/// The host at a glance (operator, viewer).
#[utoipa::path(get, path = "/v1/status", tag = "status", security(("bearer" = [])),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn status(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Status>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let (pending_approvals, live_runs, live_terminals) = state.store.live_counts().await?;
    let last_prune = state.store.last_prune().await?.map(
        |p| serde_json::json!({ "at": p.at, "policy_hash": p.policy_hash, "counts": p.counts }),
    );
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        address: state.address.to_string(),
        isolation: state.children.guarantees(),
        plugins: state.runner.plugins().status(),
        pending_approvals,
        live_runs,
        live_terminals,
        last_prune,
    }))
}

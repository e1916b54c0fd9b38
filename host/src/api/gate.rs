//! The approval gate shared by everything that runs a curated recipe (`POST /v1/runs`,
//! `POST /v1/pty`) or attaches to one: argument limits, rendering through the recipe plugin with
//! the operator's risk floor, the action hash an approval is bound to, and the answers of the
//! approval flow (`approval_required` with a one-time token, `approval_pending`,
//! `approval_invalid`).

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState};
use crate::approvals::{self, Action, ActionKind, Step, action_hash};
use crate::auth::{self, Secret};
use crate::plugins::{PluginHost, Rendered, Risk};
use crate::store::{ApprovalUse, Granted, NewApproval, UseEffect};
use crate::util::{new_id, now_ms};

/// Most arguments one recipe call takes, the longest name and the longest value.
pub const MAX_ARGS: usize = 32;
pub const MAX_ARG_NAME_BYTES: usize = 64;
pub const MAX_ARG_BYTES: usize = 16 * 1024;

/// Body of `403 approval_required`.
#[derive(Serialize, ToSchema)]
pub struct ApprovalRequired {
    code: String,
    message: String,
    approval_id: String,
    /// Returned once; present it with the same request after an operator approves.
    approval_token: String,
    expires_at: i64,
}

/// A recipe call, rendered and bound: what would run, at which effective risk, under which hash.
pub struct Gated {
    pub rendered: Rendered,
    /// The higher of the plugin's risk and the operator's floor for the recipe.
    pub risk: Risk,
    /// The hash an approval for this exact action is bound to.
    pub hash: String,
}

/// Checks the argument limits, renders the recipe and computes its risk and action hash.
pub async fn render(
    state: &AppState,
    plugins: &PluginHost,
    kind: ActionKind,
    recipe: &str,
    args: &BTreeMap<String, String>,
    session_id: Option<&str>,
) -> ApiResult<Gated> {
    if args.len() > MAX_ARGS
        || args
            .iter()
            .any(|(k, v)| k.len() > MAX_ARG_NAME_BYTES || v.len() > MAX_ARG_BYTES)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!(
                "`args`: at most {MAX_ARGS} arguments, names up to {MAX_ARG_NAME_BYTES} bytes, \
                 values up to {MAX_ARG_BYTES} bytes"
            ),
        ));
    }
    let rendered = plugins
        .render(recipe, args)
        .await
        .map_err(|e| super::error::render_error(e, args))?;
    let risk = approvals::effective_risk(rendered.risk, state.config.runs.risk_floor(recipe));
    let hash = action_hash(&Action {
        kind,
        recipe,
        args: args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        program: &rendered.program,
        argv: &rendered.args,
        plugin_hash: &rendered.plugin_hash,
        session_id,
        target: None,
    });
    Ok(Gated {
        rendered,
        risk,
        hash,
    })
}

/// What an operator sees of a recipe action when deciding its approval: the recipe and its
/// args, the command they rendered to, the effective risk and the recipe plugin's hash.
pub fn shown_action(
    recipe: &str,
    args: &BTreeMap<String, String>,
    rendered: &Rendered,
    risk: Risk,
) -> serde_json::Map<String, serde_json::Value> {
    let mut action = serde_json::Map::new();
    action.insert("recipe".into(), recipe.into());
    action.insert("args".into(), serde_json::json!(args));
    action.insert(
        "command".into(),
        serde_json::json!({ "program": rendered.program, "args": rendered.args }),
    );
    action.insert("risk".into(), risk.as_str().into());
    action.insert("plugin_hash".into(), rendered.plugin_hash.clone().into());
    action
}

/// Persists a pending approval for `hash` and answers `403 approval_required` with the
/// requester's one-time token (only its hash is stored).
async fn require_approval(
    state: &AppState,
    kind: ActionKind,
    hash: String,
    action: serde_json::Value,
    requester: String,
) -> ApiResult<Response> {
    let (_, token) = auth::mint();
    let approval = NewApproval {
        id: new_id(),
        kind,
        action_hash: hash,
        action,
        token_hash: token.hash(),
        requester,
        expires_at: now_ms()
            .saturating_add(i64::try_from(state.config.approvals.ttl_ms).unwrap_or(i64::MAX)),
        max_pending: i64::from(state.config.approvals.max_pending_per_requester),
    };
    match state.store.create_approval(&approval).await {
        Ok(a) => {
            let body = ApprovalRequired {
                code: "approval_required".into(),
                message: "this action is high risk: an operator must approve it; then repeat \
                          the request with approval_token"
                    .into(),
                approval_id: a.id,
                approval_token: token.expose().to_string(),
                expires_at: a.expires_at,
            };
            Ok((StatusCode::FORBIDDEN, Json(body)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// How a request got past the approval gate.
pub enum Admission {
    /// A presented token was spent: its effect (the run, PTY or ticket) exists.
    Granted(Granted),
    /// `403 approval_required` with a one-time token: answer it as is.
    Required(Response),
    /// No approval needed: the handler performs the action itself.
    Free,
}

/// The one approval flow of everything that runs a recipe or attaches to one (see
/// [`approvals::step`]): spend a presented token on `effect`, or ask for an approval
/// (`action` is what the operator is shown), or let the request through.
#[allow(clippy::too_many_arguments)]
pub async fn admit(
    state: &AppState,
    kind: ActionKind,
    hash: &str,
    requester: &str,
    token: Option<&str>,
    needs_approval: bool,
    effect: UseEffect<'_>,
    action: impl FnOnce() -> serde_json::Value,
) -> ApiResult<Admission> {
    match approvals::step(token, needs_approval) {
        Step::Spend(token) => {
            let u = ApprovalUse {
                token_hash: &Secret::presented(token).hash(),
                requester,
                kind,
                action_hash: hash,
                effect,
            };
            Ok(Admission::Granted(
                approvals::spend(&state.store, &u).await?,
            ))
        }
        Step::Ask => {
            let resp = require_approval(
                state,
                kind,
                hash.to_string(),
                action(),
                requester.to_string(),
            )
            .await?;
            Ok(Admission::Required(resp))
        }
        Step::Proceed => Ok(Admission::Free),
    }
}

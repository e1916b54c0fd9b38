//! The error codes of the API in one place: [`CATALOGUE`], every `code` an error body can carry,
//! and [`ROUTES`], per route (keyed by its OpenAPI operation id, i.e. the handler's name) and
//! per status, the exact codes that route answers with. [`document`] writes the table into the
//! OpenAPI document served at `/v1/openapi.json`: each error response's `description` lists its
//! codes and carries them machine-readably as `x-error-codes`. Scripts match on codes, so they
//! are part of the contract: the unit tests pin the table against `docs/api-error-codes.txt`
//! and check that every code the server constructs is catalogued and documented for a route.
//!
//! A route's codes come from its handler and everything it calls: the extractors
//! (`api/extract.rs`: bearer or console-cookie caller, strict JSON, query strings), the
//! unauthenticated-route rate limit (`api/ratelimit.rs`), the body limit, and the `From<…> for
//! ApiError` conversions of the domain errors.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr, ResponseBuilder};

/// The errors of one route: `(status, codes)`, statuses ascending, codes sorted.
pub type RouteErrors = &'static [(u16, &'static [&'static str])];

/// Every code an API error body can carry, sorted.
pub const CATALOGUE: &[&str] = &[
    "approval_expired",
    "approval_invalid",
    "approval_not_pending",
    "approval_pending",
    "approval_required",
    "bad_proof",
    "bad_signature",
    "body_too_large",
    "config_invalid",
    "conflict",
    "console_forbidden",
    "csrf_failed",
    "device_unauthorized",
    "enrollment_invalid",
    "expired",
    "forbidden",
    "forward_loop",
    "frame_malformed",
    "frame_too_large",
    "frame_unknown",
    "holder_closed",
    "holder_io",
    "holder_launch_failed",
    "holder_refused",
    "idempotency_conflict",
    "internal",
    "invalid_arg",
    "invalid_body",
    "invalid_envelope",
    "invalid_field",
    "invalid_idempotency_key",
    "invalid_json",
    "invalid_key_version",
    "invalid_last_event_id",
    "invalid_query",
    "key_file_io",
    "key_file_mode",
    "key_file_not_regular",
    "key_file_wrong_size",
    "method_not_allowed",
    "missing_arg",
    "not_found",
    "owner_unavailable",
    "owner_unreachable",
    "plugin_bad_result",
    "plugin_config",
    "plugin_contract",
    "plugin_failed",
    "plugin_hash_mismatch",
    "plugin_host",
    "plugin_invalid",
    "plugin_io",
    "plugin_memory",
    "plugin_timeout",
    "plugin_trap",
    "plugin_unknown_import",
    "plugin_wit_version",
    "plugin_wrong_world",
    "pty_not_running",
    "rate_limited",
    "replayed",
    "replayed_request",
    "revoked_key",
    "rotation_required",
    "self_approval_forbidden",
    "socket_path_too_long",
    "stale_epoch",
    "ticket_invalid",
    "too_many_pending_approvals",
    "unauthorized",
    "unknown_arg",
    "unknown_device",
    "unknown_recipe",
    "unsupported_media_type",
    "weak_key",
];

/// Codes of any route, not of one: an unknown path and a known path with another method.
pub const NO_ROUTE: RouteErrors = &[(404, &["not_found"]), (405, &["method_not_allowed"])];

/// A recipe plugin failing while it is called (render, catalogue).
macro_rules! plugin_call {
    () => {
        &[
            "plugin_bad_result",
            "plugin_failed",
            "plugin_host",
            "plugin_memory",
            "plugin_timeout",
            "plugin_trap",
        ]
    };
}

/// A terminal's holder, reached here or through the host that owns it (`crate::cluster`).
macro_rules! holder_or_owner {
    () => {
        &[
            "frame_malformed",
            "frame_too_large",
            "frame_unknown",
            "holder_closed",
            "holder_io",
            "holder_launch_failed",
            "holder_refused",
            "key_file_io",
            "key_file_mode",
            "key_file_not_regular",
            "key_file_wrong_size",
            "owner_unavailable",
        ]
    };
}

/// Per route (operation id), per status, the codes it answers with. Read with the extractors:
/// a `/v1` caller is `401 unauthorized` (and, on a console cookie, `403 csrf_failed` for a
/// state-changing method); a JSON body is `400 invalid_body`/`invalid_json`,
/// `413 body_too_large`, `415 unsupported_media_type`, `422 invalid_field`; a query string
/// `400 invalid_query`; unauthenticated routes `429 rate_limited`; a storage failure `500
/// internal`.
pub const ROUTES: &[(&str, RouteErrors)] = &[
    ("healthz", &[]),
    ("openapi_json", &[]),
    ("metrics", &[]),
    (
        "status",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_events",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "event_stream",
        &[
            (400, &["invalid_last_event_id", "invalid_query"]),
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "sign_in",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["console_forbidden", "csrf_failed"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "whoami",
        &[
            (401, &["unauthorized"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "sign_out",
        &[
            (401, &["unauthorized"]),
            (403, &["csrf_failed"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "overview",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "create_task",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_tasks",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_task",
        &[
            (401, &["unauthorized"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "update_task",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "create_session",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_sessions",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_session",
        &[
            (401, &["unauthorized"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "update_session",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "create_permission",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_permissions",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_permission",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "update_permission",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "create_run",
        &[
            (
                400,
                &["invalid_body", "invalid_idempotency_key", "invalid_json"],
            ),
            (401, &["unauthorized"]),
            (
                403,
                &[
                    "approval_invalid",
                    "approval_pending",
                    "approval_required",
                    "csrf_failed",
                    "forbidden",
                ],
            ),
            (404, &["not_found"]),
            (409, &["idempotency_conflict"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (
                422,
                &[
                    "invalid_arg",
                    "invalid_field",
                    "missing_arg",
                    "unknown_arg",
                    "unknown_recipe",
                ],
            ),
            (429, &["too_many_pending_approvals"]),
            (500, &["internal"]),
            (503, plugin_call!()),
        ],
    ),
    (
        "list_runs",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_run",
        &[
            (401, &["unauthorized"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_run_output",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_recipes",
        &[
            (401, &["unauthorized"]),
            (500, &["internal"]),
            (503, plugin_call!()),
        ],
    ),
    (
        "list_approvals",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "approve",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (
                403,
                &["csrf_failed", "forbidden", "self_approval_forbidden"],
            ),
            (404, &["not_found"]),
            (409, &["approval_expired", "approval_not_pending"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "deny",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (
                403,
                &["csrf_failed", "forbidden", "self_approval_forbidden"],
            ),
            (404, &["not_found"]),
            (409, &["approval_expired", "approval_not_pending"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_approval",
        &[
            (401, &["unauthorized"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "withdraw",
        &[
            (401, &["unauthorized"]),
            (403, &["csrf_failed"]),
            (404, &["not_found"]),
            (409, &["approval_not_pending"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_plugins",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_hosts",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "reload_plugins",
        &[
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (
                422,
                &[
                    "config_invalid",
                    "plugin_bad_result",
                    "plugin_config",
                    "plugin_contract",
                    "plugin_failed",
                    "plugin_hash_mismatch",
                    "plugin_host",
                    "plugin_invalid",
                    "plugin_io",
                    "plugin_memory",
                    "plugin_timeout",
                    "plugin_trap",
                    "plugin_unknown_import",
                    "plugin_wit_version",
                    "plugin_wrong_world",
                ],
            ),
            (500, &["internal"]),
        ],
    ),
    (
        "public_state",
        &[(429, &["rate_limited"]), (500, &["internal"])],
    ),
    (
        "public_evidence",
        &[(429, &["rate_limited"]), (500, &["internal"])],
    ),
    (
        "public_checkpoints",
        &[
            (400, &["invalid_query"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "public_runs",
        &[
            (400, &["invalid_query"]),
            (404, &["not_found"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "public_session",
        &[
            (404, &["not_found"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "public_sessions",
        &[
            (400, &["invalid_query"]),
            (404, &["not_found"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "public_terminals",
        &[
            (400, &["invalid_query"]),
            (404, &["not_found"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "public_terminal",
        &[
            (404, &["not_found"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "create_pty",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (
                403,
                &[
                    "approval_invalid",
                    "approval_pending",
                    "approval_required",
                    "csrf_failed",
                    "forbidden",
                ],
            ),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (
                422,
                &[
                    "invalid_arg",
                    "invalid_field",
                    "missing_arg",
                    "unknown_arg",
                    "unknown_recipe",
                ],
            ),
            (429, &["too_many_pending_approvals"]),
            (500, &["internal", "socket_path_too_long"]),
            (
                503,
                &[
                    "frame_malformed",
                    "frame_too_large",
                    "frame_unknown",
                    "holder_closed",
                    "holder_io",
                    "holder_launch_failed",
                    "holder_refused",
                    "key_file_io",
                    "key_file_mode",
                    "key_file_not_regular",
                    "key_file_wrong_size",
                    "plugin_bad_result",
                    "plugin_failed",
                    "plugin_host",
                    "plugin_memory",
                    "plugin_timeout",
                    "plugin_trap",
                ],
            ),
        ],
    ),
    (
        "list_ptys",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_pty",
        &[
            (401, &["unauthorized"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "resize_pty",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (409, &["pty_not_running"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (421, &["forward_loop"]),
            (422, &["invalid_field"]),
            (500, &["internal", "socket_path_too_long"]),
            (502, &["owner_unreachable"]),
            (503, holder_or_owner!()),
        ],
    ),
    (
        "interrupt_pty",
        &[
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (409, &["pty_not_running"]),
            (421, &["forward_loop"]),
            (500, &["internal", "socket_path_too_long"]),
            (502, &["owner_unreachable"]),
            (503, holder_or_owner!()),
        ],
    ),
    (
        "kill_pty",
        &[
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (409, &["pty_not_running"]),
            (421, &["forward_loop"]),
            (500, &["internal", "socket_path_too_long"]),
            (502, &["owner_unreachable"]),
            (503, holder_or_owner!()),
        ],
    ),
    (
        "get_transcript",
        &[
            (400, &["invalid_query"]),
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "attach_pty",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (
                403,
                &[
                    "approval_invalid",
                    "approval_pending",
                    "approval_required",
                    "csrf_failed",
                    "forbidden",
                ],
            ),
            (404, &["not_found"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (429, &["too_many_pending_approvals"]),
            (500, &["internal"]),
        ],
    ),
    (
        "pty_ws",
        &[
            (400, &["invalid_query"]),
            (403, &["ticket_invalid"]),
            (404, &["not_found"]),
            (421, &["forward_loop"]),
            (500, &["internal"]),
            (502, &["owner_unreachable"]),
            (503, &["owner_unavailable"]),
        ],
    ),
    (
        "create_enrollment",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "enrollment_challenge",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field"]),
            (429, &["rate_limited"]),
        ],
    ),
    (
        "complete_enrollment",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (403, &["bad_proof", "enrollment_invalid"]),
            (413, &["body_too_large"]),
            (415, &["unsupported_media_type"]),
            (422, &["invalid_field", "invalid_key_version", "weak_key"]),
            (429, &["rate_limited"]),
            (500, &["internal"]),
        ],
    ),
    (
        "list_devices",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (500, &["internal"]),
        ],
    ),
    (
        "get_device",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "revoke_device",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["unauthorized"]),
            (403, &["csrf_failed", "forbidden"]),
            (404, &["not_found"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "device_keys",
        &[
            (401, &["device_unauthorized", "replayed_request"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "open_session",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["device_unauthorized", "replayed_request"]),
            (409, &["conflict"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "rotate_session",
        &[
            (400, &["invalid_body", "invalid_json"]),
            (401, &["device_unauthorized", "replayed_request"]),
            (404, &["not_found"]),
            (409, &["conflict"]),
            (413, &["body_too_large"]),
            (422, &["invalid_field"]),
            (500, &["internal"]),
        ],
    ),
    (
        "session_keys",
        &[
            (401, &["device_unauthorized", "replayed_request"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "post_envelope",
        &[
            (400, &["invalid_body", "invalid_envelope"]),
            (401, &["bad_signature"]),
            (403, &["revoked_key", "unknown_device"]),
            (404, &["not_found"]),
            (409, &["replayed", "rotation_required", "stale_epoch"]),
            (413, &["body_too_large"]),
            (422, &["expired"]),
            (500, &["internal"]),
        ],
    ),
    (
        "read_envelopes",
        &[
            (400, &["invalid_query"]),
            (401, &["device_unauthorized", "replayed_request"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "envelope_meta",
        &[
            (401, &["unauthorized"]),
            (403, &["forbidden"]),
            (404, &["not_found"]),
            (500, &["internal"]),
        ],
    ),
    (
        "post_envelope_batch",
        &[
            (400, &["invalid_body", "invalid_envelope"]),
            (401, &["bad_signature"]),
            (403, &["revoked_key", "unknown_device"]),
            (404, &["not_found"]),
            (409, &["replayed", "rotation_required", "stale_epoch"]),
            (413, &["body_too_large"]),
            (422, &["expired"]),
            (500, &["internal"]),
        ],
    ),
];

/// The errors of the route with this operation id.
pub fn route_errors(operation_id: &str) -> Option<RouteErrors> {
    ROUTES
        .iter()
        .find(|(id, _)| *id == operation_id)
        .map(|(_, e)| *e)
}

/// Writes [`ROUTES`] into `doc`: for every operation, each error status gets a response (one
/// referring to `ErrorBody` when the route's annotation did not declare it) whose description
/// lists the codes and whose `x-error-codes` extension holds them; the operation itself gets
/// `x-error-codes` with all of them; the document's own `x-error-codes` is [`CATALOGUE`] and
/// `x-error-codes-no-route` is [`NO_ROUTE`]. An operation missing from the table is left as declared
/// (the unit tests make sure there is none).
pub fn document(doc: &mut OpenApi) {
    let no_route: serde_json::Map<String, serde_json::Value> = NO_ROUTE
        .iter()
        .map(|(status, codes)| (status.to_string(), serde_json::json!(codes)))
        .collect();
    let top = utoipa::openapi::extensions::ExtensionsBuilder::new()
        .add("x-error-codes", serde_json::json!(CATALOGUE))
        .add(
            "x-error-codes-no-route",
            serde_json::Value::Object(no_route),
        )
        .build();
    doc.extensions.get_or_insert_default().merge(top);
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            document_operation(op);
        }
    }
}

fn document_operation(op: &mut Operation) {
    let Some(errors) = op.operation_id.as_deref().and_then(route_errors) else {
        return;
    };
    let mut all: Vec<&str> = Vec::new();
    for (status, codes) in errors {
        let key = status.to_string();
        let listed = codes
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let description = format!("error codes: {listed}");
        let ext = utoipa::openapi::extensions::ExtensionsBuilder::new()
            .add("x-error-codes", serde_json::json!(codes))
            .build();
        match op.responses.responses.get_mut(&key) {
            Some(RefOr::T(resp)) => {
                resp.description = if resp.description.is_empty() {
                    description
                } else {
                    format!("{}; {description}", resp.description)
                };
                resp.extensions.get_or_insert_default().merge(ext);
            }
            _ => {
                let resp = ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .extensions(Some(ext))
                    .build();
                op.responses.responses.insert(key, RefOr::T(resp));
            }
        }
        all.extend(codes.iter());
    }
    all.sort_unstable();
    all.dedup();
    let ext = utoipa::openapi::extensions::ExtensionsBuilder::new()
        .add("x-error-codes", serde_json::json!(all))
        .build();
    op.extensions.get_or_insert_default().merge(ext);
}

#[cfg(test)]
mod tests;

//! Encrypted sessions: opening and rotation (device-signed), envelope ingest (the envelope's
//! own signature authenticates; no token), reads for member devices (device-signed) and
//! metadata for operators (no ciphertext, nonce or signature).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde::Deserialize;

use super::devices::device_caller;
use super::error::refusal_status;
use super::extract::{ApiQuery, Caller, RawBody, parse_json};
use super::views::EnvelopeStats;
use super::{ApiError, ApiResult, AppState, ErrorBody, path_id};
use crate::auth::Role;
use crate::devices::ingest::Accepted;
use crate::devices::protocol::{
    EnvelopeAccepted, EnvelopeBatchResult, EnvelopeOutcome, EnvelopePage, OpenSession,
    RotateSession, SessionEpoch, SessionKeys,
};

/// Open an encrypted session with epoch 0's content key wrapped to each member
/// (device-signed request).
#[utoipa::path(post, path = "/v1/encrypted-sessions", tag = "encrypted sessions", request_body = OpenSession,
    responses((status = 201, body = SessionEpoch), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
               (status = 422, body = ErrorBody)))]
pub async fn open_session(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<SessionEpoch>)> {
    let caller = device_caller(&state, &headers, &method, &uri, &body).await?;
    let req: OpenSession = parse_json(&body)?;
    let opened = state.devices.open_session(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

/// Rotate to the next epoch with a new content key wrapped to the remaining devices
/// (device-signed; the caller must be a member of the current epoch; revoked devices can be
/// neither caller nor recipient). Envelopes under older epochs are refused from then on
/// (`stale_epoch`), and a rotation owed since a member's revocation is cleared. Two members
/// rotating at once: one wins, the other gets `409 conflict` and adopts the new epoch.
#[utoipa::path(post, path = "/v1/sessions/{id}/epochs", tag = "encrypted sessions", params(("id" = String, Path)),
    request_body = RotateSession,
    responses((status = 201, body = SessionEpoch), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rotate_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<SessionEpoch>)> {
    let caller = device_caller(&state, &headers, &method, &uri, &body).await?;
    let id = path_id(&id, "session")?;
    let req: RotateSession = parse_json(&body)?;
    let rotated = state.devices.rotate(&caller, id, req).await?;
    Ok((StatusCode::CREATED, Json(rotated)))
}

/// The current epoch, live members and the content keys wrapped to the caller
/// (device-signed; members only).
#[utoipa::path(get, path = "/v1/sessions/{id}/keys", tag = "encrypted sessions", params(("id" = String, Path)),
    responses((status = 200, body = SessionKeys), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn session_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<SessionKeys>> {
    let caller = device_caller(&state, &headers, &method, &uri, b"").await?;
    let id = path_id(&id, "session")?;
    Ok(Json(state.devices.session_keys(&caller, id).await?))
}

/// Submit one envelope in wire form. No bearer token; its signature authenticates it.
/// Refusals: `invalid_envelope`, `unknown_device`, `bad_signature`, `revoked_key`,
/// `stale_epoch`, `rotation_required` (a member of the current epoch was revoked longer than
/// `envelopes.rotation_grace_ms` ago and nobody has rotated since), `replayed`, `expired`.
#[utoipa::path(post, path = "/v1/sessions/{id}/envelopes", tag = "encrypted sessions", params(("id" = String, Path)),
    request_body(content = Object, description = "An envelope in wire form"),
    responses((status = 201, body = EnvelopeAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
               (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_envelope(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<EnvelopeAccepted>)> {
    let accepted = state.devices.ingestor.ingest(&id, &body).await?;
    Ok((StatusCode::CREATED, Json(accepted_body(accepted))))
}

fn accepted_body(a: Accepted) -> EnvelopeAccepted {
    EnvelopeAccepted {
        id: a.id,
        session_id: a.session_id,
        sender_device_id: a.sender_device_id,
        sequence: a.sequence,
    }
}

/// Submit up to 256 envelopes (`{"envelopes":[…]}`, body at most 1 MiB) of this session in one
/// request; no bearer token. Each is judged exactly as the single route would judge it, in the
/// batch's order (so one sender's consecutive sequences are accepted in turn), and every accepted
/// one is on disk before the answer. `200` with one outcome per envelope, in order; a body that
/// is not a batch, empty or over a limit is refused whole (`400 invalid_envelope`,
/// `413 body_too_large`) and stores nothing.
#[utoipa::path(post, path = "/v1/sessions/{id}/envelopes/batch", tag = "encrypted sessions", params(("id" = String, Path)),
    request_body(content = Object, description = "`{\"envelopes\":[…]}`, each an envelope in wire form"),
    responses((status = 200, body = EnvelopeBatchResult), (status = 400, body = ErrorBody),
               (status = 413, body = ErrorBody)))]
pub async fn post_envelope_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<EnvelopeBatchResult>> {
    let results = state.devices.ingestor.ingest_batch(&id, body).await?;
    let mut accepted = 0u64;
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(a) => {
                accepted += 1;
                EnvelopeOutcome {
                    status: StatusCode::CREATED.as_u16(),
                    id: Some(a.id),
                    sequence: Some(a.sequence),
                    code: None,
                    message: None,
                }
            }
            Err(e) => EnvelopeOutcome {
                status: refusal_status(&e).as_u16(),
                id: None,
                sequence: None,
                code: Some(e.code().to_owned()),
                message: Some(e.to_string()),
            },
        })
        .collect();
    Ok(Json(EnvelopeBatchResult { accepted, results }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    /// Return envelopes accepted after this position (`next_after` of the previous page).
    after: Option<i64>,
    /// Page size, 1 to 500 (default 500).
    limit: Option<i64>,
}

/// Envelopes of the session in wire form, with the content keys wrapped to the caller and the
/// senders' public keys per key version (device-signed; members only). The reader verifies
/// everything against its own pins.
#[utoipa::path(get, path = "/v1/sessions/{id}/envelopes", tag = "encrypted sessions", params(("id" = String, Path), AfterQuery),
    responses((status = 200, body = EnvelopePage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_envelopes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AfterQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<EnvelopePage>> {
    let caller = device_caller(&state, &headers, &method, &uri, b"").await?;
    let id = path_id(&id, "session")?;
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(500);
    Ok(Json(
        state
            .devices
            .envelope_page(&caller, id, after, limit)
            .await?,
    ))
}

/// Envelope metadata of a session: counts, sequence ranges per sender, byte totals; never
/// ciphertext, nonces or signatures (operator, viewer).
#[utoipa::path(get, path = "/v1/sessions/{id}/envelopes/meta", tag = "encrypted sessions", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = EnvelopeStats), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn envelope_meta(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvelopeStats>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let id = path_id(&id, "session")?;
    state
        .store
        .envelope_stats(id)
        .await?
        .map(|e| Json(e.into()))
        .ok_or_else(|| ApiError::not_found("session"))
}

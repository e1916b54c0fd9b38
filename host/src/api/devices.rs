//! `/v1/enrollments`, `/v1/devices`: enrollment codes (operator), device enrollment with a
//! proof of possession (no token; the code authenticates; rate-limited), device listing and
//! revocation (operator), and a device's current public keys (device-signed).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{ApiJson, Caller, RawBody, parse_json};
use super::views::DeviceRow;
use super::{ApiError, ApiResult, AppState, ErrorBody, path_id};
use crate::auth::Role;
use crate::devices::auth::{DEVICE_HEADER, KEY_VERSION_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::devices::protocol::{
    ChallengeRequest, ChallengeResponse, CompleteEnrollment, Enrolled, EnrollmentIssued,
    IssueEnrollment, PeerKeys, RevokeDevice,
};
use crate::devices::{DeviceCaller, SignedHeaders};

/// Authenticates a device-signed request (see `devices::auth`).
pub(super) async fn device_caller(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<DeviceCaller> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = SignedHeaders {
        device: get(DEVICE_HEADER),
        key_version: get(KEY_VERSION_HEADER),
        timestamp: get(TIMESTAMP_HEADER),
        signature: get(SIGNATURE_HEADER),
    };
    let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    Ok(state
        .devices
        .authenticate(signed, method.as_str(), pq, body)
        .await?)
}

/// The client's address when the server recorded it (for per-address rate limits).
pub struct ClientIp(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// Issue a single-use enrollment or re-enrollment code (operator). The code is shown once.
#[utoipa::path(post, path = "/v1/enrollments", tag = "devices", request_body = IssueEnrollment, security(("bearer" = [])),
    responses((status = 201, body = EnrollmentIssued), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 422, body = ErrorBody)))]
pub async fn create_enrollment(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<EnrollmentIssued>)> {
    caller.require(&[Role::Operator])?;
    let req: IssueEnrollment = if body.is_empty() {
        IssueEnrollment::default()
    } else {
        parse_json(&body)?
    };
    let issued = state.devices.issue_enrollment(req, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The challenge public key a device proves possession of its keys to (no token;
/// rate-limited per address and globally).
#[utoipa::path(post, path = "/v1/enrollments/challenge", tag = "devices", request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn enrollment_challenge(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> ApiResult<Json<ChallengeResponse>> {
    state.devices.rate_limit(ip)?;
    Ok(Json(state.devices.challenge(&req.code)?))
}

/// Enroll a device (no token; the code and the proof of possession authenticate;
/// rate-limited). A `reenroll` code gives an existing device a new key version.
#[utoipa::path(post, path = "/v1/enrollments/complete", tag = "devices", request_body = CompleteEnrollment,
    responses((status = 201, body = Enrolled), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
               (status = 429, body = ErrorBody)))]
pub async fn complete_enrollment(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CompleteEnrollment>,
) -> ApiResult<(StatusCode, Json<Enrolled>)> {
    state.devices.rate_limit(ip)?;
    let enrolled = state.devices.complete_enrollment(req).await?;
    Ok((StatusCode::CREATED, Json(enrolled)))
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    items: Vec<DeviceRow>,
}

/// Every device with its key versions (metadata; operator, viewer).
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = DeviceList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<DeviceList>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    Ok(Json(DeviceList {
        items: state
            .store
            .devices()
            .await?
            .into_iter()
            .map(DeviceRow::from)
            .collect(),
    }))
}

/// One device (metadata; operator, viewer).
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = DeviceRow), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceRow>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let id = path_id(&id, "device")?;
    state
        .store
        .device(id)
        .await?
        .map(|d| Json(d.into()))
        .ok_or_else(|| ApiError::not_found("device"))
}

/// Revoke a device and all its key versions (operator). From then on its envelopes are
/// refused with `revoked_key` and its signed requests with `device_unauthorized`. Every
/// encrypted session it is a member of in the current epoch owes a rotation from then on
/// (`rotation_required_since` on the session): after `envelopes.rotation_grace_ms`, envelopes
/// under that epoch are refused `rotation_required` until a surviving member rotates.
#[utoipa::path(post, path = "/v1/devices/{id}/revoke", tag = "devices", params(("id" = String, Path)),
    request_body = RevokeDevice, security(("bearer" = [])),
    responses((status = 200, body = DeviceRow), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 404, body = ErrorBody)))]
pub async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<DeviceRow>> {
    caller.require(&[Role::Operator])?;
    let id = path_id(&id, "device")?;
    let req: RevokeDevice = if body.is_empty() {
        RevokeDevice::default()
    } else {
        parse_json(&body)?
    };
    if let Some(r) = &req.reason {
        super::check_text("reason", r, 1, 500)?;
    }
    state
        .store
        .revoke_device(id, &caller.actor(), req.reason.as_deref())
        .await?
        .map(|d| Json(d.into()))
        .ok_or_else(|| ApiError::not_found("device"))
}

/// A device's current public keys (device-signed request). The caller checks them against
/// the fingerprint it pinned; the host's word is not trusted.
#[utoipa::path(get, path = "/v1/devices/{id}/keys", tag = "devices", params(("id" = String, Path)),
    responses((status = 200, body = PeerKeys), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn device_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<PeerKeys>> {
    device_caller(&state, &headers, &method, &uri, b"").await?;
    let id = path_id(&id, "device")?;
    Ok(Json(state.devices.live_keys(id).await?))
}

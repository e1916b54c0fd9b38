//! The one error body of the API: `{"code":"snake_case","message":"…"}` with a
//! fitting status. Messages never contain secrets, stored values or SQL.
//!
//! Every translation of a lower layer's typed error into an HTTP answer lives here
//! (store, auth, devices, envelope ingest, terminals, recipe rendering, approvals), so
//! that a status code or an error code is decided in one place and never recovered
//! from error text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use std::collections::BTreeMap;

use crate::approvals::{ApprovalError, DecideRefusal, UseRefusal};
use crate::auth::AuthError;
use crate::devices::DeviceError;
use crate::devices::ingest::IngestError;
use crate::envelope::{CryptoError, EnvelopeError};
use crate::plugins::RenderError;
use crate::pty::PtyError;
use crate::store::StoreError;

/// The error body every route returns on failure.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case; scripts match on it.
    pub code: String,
    /// A human sentence.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra top-level fields (e.g. `approval_id` with `approval_required`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's role may not do that",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the host could not complete the request; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        // For the access log and the failures-by-code counter (never the message).
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The stable code of an error response, carried to the observing middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("record"),
            StoreError::TooManyPending => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending_approvals",
                "this identity has too many pending approvals; wait for decisions or let them expire",
            ),
            e if e.is_conflict() => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            other => ApiError::internal(&other),
        }
    }
}

impl From<DecideRefusal> for ApiError {
    fn from(r: DecideRefusal) -> Self {
        match r {
            DecideRefusal::NotPending => ApiError::new(
                StatusCode::CONFLICT,
                "approval_not_pending",
                "this approval was already decided or used",
            ),
            DecideRefusal::Expired => ApiError::new(
                StatusCode::CONFLICT,
                "approval_expired",
                "this approval has expired",
            ),
            DecideRefusal::SelfApproval => ApiError::new(
                StatusCode::FORBIDDEN,
                "self_approval_forbidden",
                "the identity that requested an approval cannot decide it (approvals.allow_self_approval)",
            ),
            DecideRefusal::NotRequester => ApiError::not_found("approval"),
        }
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::Decide(r) => r.into(),
            ApprovalError::Use(r) => r.into(),
            ApprovalError::Store(StoreError::NotFound) => ApiError::not_found("approval"),
            ApprovalError::Store(s) => s.into(),
        }
    }
}

impl From<UseRefusal> for ApiError {
    fn from(r: UseRefusal) -> Self {
        match r {
            UseRefusal::Pending | UseRefusal::Invalid => {
                ApiError::new(StatusCode::FORBIDDEN, r.code(), r.to_string())
            }
        }
    }
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        let status = match &e {
            DeviceError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            DeviceError::InvalidField(_) | DeviceError::KeyVersion(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            DeviceError::Crypto(CryptoError::WeakKey { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            DeviceError::Crypto(_) | DeviceError::EnrollmentInvalid => StatusCode::FORBIDDEN,
            DeviceError::Unauthorized(_) | DeviceError::ReplayedRequest => StatusCode::UNAUTHORIZED,
            DeviceError::NotFound(_) => StatusCode::NOT_FOUND,
            DeviceError::EpochNotNext { .. } => StatusCode::CONFLICT,
            DeviceError::Store(_) | DeviceError::Secret(_) | DeviceError::Threads(_) => {
                if let DeviceError::Store(s) = e {
                    return s.into();
                }
                return ApiError::internal(&e);
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// The status of an envelope ingest refusal, the same on the single and the batch route.
pub fn refusal_status(e: &IngestError) -> StatusCode {
    match e {
        IngestError::Refused(r) => match r {
            EnvelopeError::Invalid(_) | EnvelopeError::Undecryptable => StatusCode::BAD_REQUEST,
            EnvelopeError::BadSignature => StatusCode::UNAUTHORIZED,
            EnvelopeError::UnknownDevice | EnvelopeError::RevokedKey => StatusCode::FORBIDDEN,
            EnvelopeError::Replayed { .. }
            | EnvelopeError::StaleEpoch { .. }
            | EnvelopeError::RotationRequired { .. } => StatusCode::CONFLICT,
            EnvelopeError::Expired { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        },
        IngestError::UnknownSession => StatusCode::NOT_FOUND,
        IngestError::Storage => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        if matches!(e, IngestError::Storage) {
            return ApiError::internal(&e);
        }
        ApiError::new(refusal_status(&e), e.code(), e.to_string())
    }
}

impl From<PtyError> for ApiError {
    fn from(e: PtyError) -> Self {
        match e {
            PtyError::NotRunning => {
                ApiError::new(StatusCode::CONFLICT, "pty_not_running", e.to_string())
            }
            PtyError::Store(s) => s.into(),
            PtyError::SocketPathTooLong => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string())
            }
            other => {
                tracing::error!(code = other.code(), error = %other, "terminal operation failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    other.code(),
                    "the terminal's holder could not be reached",
                )
            }
        }
    }
}

/// A recipe that could not be rendered. Error bodies carry no input values, and no input
/// names either (an argument may be named like a secret): a caller's argument is named by its
/// position in name order.
pub fn render_error(e: RenderError, args: &BTreeMap<String, String>) -> ApiError {
    let status = match &e {
        RenderError::Plugin(p) => {
            tracing::warn!(plugin = %p.plugin(), code = p.code(), "recipe plugin failed to render an action");
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let position = |name: &str| match args.keys().position(|k| k == name) {
        Some(i) => format!("argument #{} (in name order)", i + 1),
        None => "an argument".to_string(),
    };
    let message = match &e {
        RenderError::UnknownRecipe(_) => "no such recipe; GET /v1/recipes lists them".to_string(),
        RenderError::UnknownArg(name) => format!(
            "{} is not a parameter of this recipe; GET /v1/recipes lists them",
            position(name)
        ),
        RenderError::InvalidArg { name, reason } => {
            format!("{} is invalid: {reason}", position(name))
        }
        other => other.to_string(),
    };
    ApiError::new(status, e.code(), message)
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid bearer token",
            ),
            AuthError::Forbidden => ApiError::forbidden(),
            AuthError::Store(s) => s.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_refusals_keep_their_status_and_code() {
        let e = ApiError::from(DeviceError::EpochNotNext { expected: 7 });
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "conflict"));
        assert!(e.message.contains("must be 7"), "{}", e.message);
        let weak = ApiError::from(DeviceError::Crypto(CryptoError::WeakKey {
            which: "hpke",
            reason: "all zero",
        }));
        assert_eq!(
            (weak.status, weak.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "weak_key")
        );
        let bad = ApiError::from(DeviceError::Crypto(CryptoError::BadProof("signature")));
        assert_eq!(bad.status, StatusCode::FORBIDDEN);
    }
}

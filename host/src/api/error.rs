//! The one error body of the API: `{"code":"snake_case","message":"…"}` with a
//! fitting status. Messages never contain secrets, stored values or SQL.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::AuthError;
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
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("conflict: {what}"),
            ),
            other => ApiError::internal(&other),
        }
    }
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

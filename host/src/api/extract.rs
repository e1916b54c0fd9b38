//! Request extractors with typed errors: strict JSON bodies (unknown fields and
//! wrong types named), query strings, and the bearer-token caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::{self, AuthError, Identity, Role};

/// A JSON body parsed strictly: malformed JSON is `400 invalid_json`; a wrong
/// type, missing or unknown field is `422 invalid_field` naming the field; a
/// body over the limit is `413 body_too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ok = ct
                .to_str()
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("application/json")
                })
                .unwrap_or(false);
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "request bodies are JSON (Content-Type: application/json)",
                ));
            }
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The request body as bytes, for routes that parse it themselves (envelopes): a body over the
/// route's limit is `413 body_too_large`, an unreadable one `400 invalid_body`.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rej| {
                if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is larger than the host accepts \
                         (api.max_body_bytes; envelope batches: 1 MiB)",
                    )
                } else {
                    ApiError::bad_request("invalid_body", "the request body could not be read")
                }
            })
    }
}

/// Parses `bytes` as `T` with the error mapping of [`ApiJson`]. The body is exactly one JSON
/// document: anything but whitespace after it is `400 invalid_json`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(v) => v,
        Err(err) => {
            let path = safe_path(err.path());
            let inner = err.into_inner();
            return Err(json_error(&inner, &path));
        }
    };
    de.end().map_err(|e| json_error(&e, ""))?;
    Ok(value)
}

fn json_error(inner: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        ),
        Category::Data => {
            let what = describe_data_error(&inner.to_string());
            let what = if what.starts_with("unknown field") {
                // The unknown name is the caller's input: name its position instead.
                format!(
                    "unknown field at line {}, column {}{}",
                    inner.line(),
                    inner.column(),
                    what.split_once(", expected")
                        .map(|(_, e)| format!("; expected{e}"))
                        .unwrap_or_default()
                )
            } else {
                what
            };
            let field = if path.is_empty() || path == "." {
                String::new()
            } else {
                format!("`{path}`: ")
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("{field}{what}"),
            )
        }
    }
}

/// A path into the body for an error message, naming only what has the shape of a HappyX field
/// name (lowercase ASCII, digits and `_`, up to 32 bytes); any other key is the caller's input
/// (a map key such as a run argument's name) and shows as `[key]`.
fn safe_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let shaped = !key.is_empty()
                    && key.len() <= 32
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if shaped {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push_str("[key]");
                }
            }
            Segment::Unknown => out.push_str("[?]"),
        }
    }
    out
}

/// serde's message without the echoed input value (which may be a secret).
fn describe_data_error(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("wrong type, expected {expected}");
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("invalid value, expected {expected}");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("unknown value, expected {expected}");
    }
    if msg.starts_with("unknown field ") {
        // `unknown field `NAME`, expected …`: drop the caller's NAME.
        return match msg.split_once(", expected") {
            Some((_, expected)) => format!("unknown field, expected{expected}"),
            None => "unknown field".to_string(),
        };
    }
    msg.to_string()
}

/// A query string parsed into `T`; errors are `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<T>(q)
            .map(ApiQuery)
            .map_err(|e| {
                let what = describe_data_error(&e.to_string());
                let what = if what.starts_with("unknown field") {
                    what.replacen("unknown field", "unknown query parameter", 1)
                } else {
                    what
                };
                ApiError::bad_request("invalid_query", format!("bad query string: {what}"))
            })
    }
}

/// The authenticated caller of a `/v1` route.
pub struct Caller(pub Identity);

impl Caller {
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden.into())
        }
    }

    pub fn is(&self, role: Role) -> bool {
        self.0.role == role
    }

    pub fn actor(&self) -> String {
        self.0.actor()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A bearer token when the request has an `Authorization` header; otherwise
    /// the console session cookie (with its CSRF proof on state changes).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            let tls = state.config.tls.cert.is_some();
            return match crate::console::session::authenticate(
                &state.store,
                &parts.headers,
                &parts.method,
                &parts.uri,
                tls,
            )
            .await?
            {
                Some((who, _)) => {
                    record_identity(parts, &who);
                    Ok(Caller(who))
                }
                None => Err(AuthError::Unauthenticated.into()),
            };
        };
        let presented = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AuthError::Unauthenticated)?;
        let who = auth::authenticate(&state.store, presented).await?;
        record_identity(parts, &who);
        Ok(Caller(who))
    }
}

/// Leaves the caller's token id (never the token) for the access log.
fn record_identity(parts: &Parts, who: &Identity) {
    if let Some(slot) = parts.extensions.get::<super::metrics::IdentitySlot>() {
        let _ = slot.0.set(who.id.clone());
    }
}

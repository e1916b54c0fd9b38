//! Console sessions: what turns a signed-in browser into a [`Identity`].
//!
//! Sign-in exchanges an operator or viewer token for a random 256-bit session
//! id, sent once in a `Set-Cookie` (`HttpOnly; SameSite=Strict; Path=/`,
//! `Secure` under TLS, `Max-Age`); the store keeps only its SHA-256, tied to
//! the token, and every request re-checks that the token is not revoked.
//!
//! CSRF: a request authenticated by the cookie that changes state (anything
//! but GET/HEAD/OPTIONS) must carry the session's CSRF proof in
//! `X-CSRF-Token` and an `Origin` equal to the host's own. The proof is
//! derived from the session id (SHA-256 with a label), so it needs no storage
//! and reveals nothing about the id; the console reads it from
//! `GET /v1/console/session`, which another origin cannot read.

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::auth::{Identity, Secret};
use crate::store::Store;
use crate::util::random_bytes;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "hpx_console";
/// Header carrying the CSRF proof.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a console session lives (absolute, from sign-in).
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;

/// A fresh session id (shown to the browser once, in the cookie).
pub fn mint() -> Secret {
    Secret::presented(&URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// What the store keeps of a session id.
pub fn hash(session: &Secret) -> String {
    session.hash()
}

/// The CSRF proof of a session.
pub fn csrf_proof(session: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(b"happyx console csrf v1\0");
    h.update(session.expose().as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(session: &Secret, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        session.expose(),
        SESSION_TTL_MS / 1000
    ))
    .ok()
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "hpx_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("hpx_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    }
}

/// The session id presented in the `Cookie` header, if any.
pub fn presented(headers: &HeaderMap) -> Option<Secret> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(Secret::presented)
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "a console request that changes state needs the session's X-CSRF-Token and a same-origin Origin",
    )
}

/// True when the request's `Origin` is this host's own origin.
pub fn same_origin(headers: &HeaderMap, uri: &Uri, tls: bool) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Authenticates a request by its console cookie. `Ok(None)` when it carries no
/// session cookie; `401` for an unknown, expired or revoked session; `403
/// csrf_failed` for a state-changing request without the CSRF proof or from
/// another origin.
pub async fn authenticate(
    store: &Store,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    tls: bool,
) -> Result<Option<(Identity, Secret)>, ApiError> {
    let Some(session) = presented(headers) else {
        return Ok(None);
    };
    let row = store
        .console_session(&hash(&session))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the console session is unknown, expired or signed out; sign in again",
            )
        })?;
    if !is_safe(method) {
        let proof = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected = csrf_proof(&session);
        let ok: bool = proof.as_bytes().ct_eq(expected.as_bytes()).into();
        if !ok || !same_origin(headers, uri, tls) {
            tracing::warn!(token = %row.token_id, "console request refused: CSRF proof or origin missing");
            return Err(csrf_refused());
        }
    }
    Ok(Some((
        Identity {
            id: row.token_id,
            role: row.role,
            name: row.name,
        },
        session,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_parsed_among_others() {
        let s = mint();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE_NAME}={}; c=d", s.expose())).unwrap(),
        );
        assert_eq!(presented(&h).unwrap().expose(), s.expose());
        h.insert(COOKIE, HeaderValue::from_static("hpx_console=short"));
        assert!(presented(&h).is_none());
    }

    #[test]
    fn csrf_proof_is_stable_and_not_the_session() {
        let s = mint();
        assert_eq!(csrf_proof(&s), csrf_proof(&s));
        assert_ne!(csrf_proof(&s), s.expose());
        assert_ne!(csrf_proof(&s), csrf_proof(&mint()));
    }

    #[test]
    fn origin_must_match_scheme_and_host() {
        let uri: Uri = "/v1/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:7878"));
        assert!(!same_origin(&h, &uri, false));
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7878"));
        assert!(same_origin(&h, &uri, false));
        assert!(!same_origin(&h, &uri, true));
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h, &uri, false));
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, &uri, false));
    }

    #[test]
    fn cookie_flags() {
        let s = mint();
        let c = set_cookie(&s, true).unwrap();
        let c = c.to_str().unwrap();
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=43200",
            "Secure",
        ] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        assert!(
            !set_cookie(&s, false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}

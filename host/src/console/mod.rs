//! The operator console: static assets embedded in the binary (`host/console/`,
//! plain HTML/CSS/JS and vendored browser libraries, no build step), the
//! security headers every response carries, and the console-session helpers
//! (cookie, CSRF proof, origin check) the API's caller extractor uses.
//!
//! The console is a client of the same `/v1` API as everyone else; it holds no
//! token in the browser, only an `HttpOnly` session cookie (see [`session`]).

pub mod feed;
pub mod session;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};

use crate::api::{ApiError, AppState};

static ASSETS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/console");

/// The Content-Security-Policy of every response: no inline script, no `eval`,
/// nothing from another origin, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Routes serving the console: `/` is the single page, `/console/*` its assets.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html").unwrap_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the console assets are missing",
        )
        .into_response()
    })
}

async fn asset(Path(path): Path<String>) -> Response {
    if path.split('/').any(|s| s.is_empty() || s == "..") {
        return ApiError::not_found("console asset").into_response();
    }
    serve(&path).unwrap_or_else(|| ApiError::not_found("console asset").into_response())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn serve(path: &str) -> Option<Response> {
    let file = ASSETS.get_file(path)?;
    let mut resp = Response::new(Body::from(file.contents()));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(resp)
}

/// Total bytes of the embedded assets (reported by the overview).
pub fn asset_bytes() -> u64 {
    fn walk(d: &Dir<'_>) -> u64 {
        d.files().map(|f| f.contents().len() as u64).sum::<u64>() + d.dirs().map(walk).sum::<u64>()
    }
    walk(&ASSETS)
}

/// Adds the console's security headers to every response (API answers too:
/// they are harmless there and keep a JSON body from being sniffed or framed).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    resp
}

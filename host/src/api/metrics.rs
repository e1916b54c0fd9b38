//! `GET /metrics` (no auth; counts only) and the middleware counting responses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::metrics::Metrics;

/// Middleware counting responses by class.
pub async fn count(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let s = resp.status().as_u16();
    match s {
        200..=299 => Metrics::inc(&m.requests_2xx),
        401 => {
            Metrics::inc(&m.unauthorized);
            Metrics::inc(&m.requests_4xx)
        }
        400..=499 => Metrics::inc(&m.requests_4xx),
        500..=599 => Metrics::inc(&m.requests_5xx),
        _ => {}
    }
    resp
}

/// Prometheus text exposition of the host's counters.
#[utoipa::path(get, path = "/metrics", tag = "host", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<super::AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

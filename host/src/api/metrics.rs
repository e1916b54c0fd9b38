//! `GET /metrics` (no auth; counts only) and the middleware that observes every request: the
//! access log (method, route template, status, latency, identity id — never a token, a
//! path with ids, or a query), latency histograms by route, failures by code, and response
//! counters by class.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ErrorCode;
pub use crate::metrics::Metrics;
use crate::metrics::{CodeLabels, RouteLabels};

/// Where the authenticating extractor leaves the caller's token id for the access log.
#[derive(Clone, Default)]
pub struct IdentitySlot(pub Arc<OnceLock<String>>);

/// Middleware: access log, latency histogram, failures by code, responses by class.
pub async fn count(State(m): State<Arc<Metrics>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let identity = IdentitySlot::default();
    req.extensions_mut().insert(identity.clone());
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    m.labelled
        .http
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
            status: format!("{}xx", status / 100),
        })
        .observe(elapsed.as_secs_f64());
    if let Some(code) = code {
        m.labelled
            .failures
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }
    tracing::info!(
        target: "happyx::access",
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        identity = identity.0.get().map(String::as_str).unwrap_or("-"),
        code = code.unwrap_or("-"),
        "request"
    );
    let s = status;
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

/// Prometheus text exposition: counters, latency histograms by route, failures by code,
/// plugin calls, gauges (pending approvals, live runs and terminals, holders, the envelope
/// writer's queue) and `happyx_build_info`.
#[utoipa::path(get, path = "/metrics", tag = "host", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<super::AppState>) -> impl IntoResponse {
    let mut out = state.metrics.render();
    let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    if let Ok((pending, runs, terminals)) = state.store.live_counts().await {
        gauge(
            &mut out,
            "happyx_pending_approvals",
            "Pending approvals not yet expired",
            pending,
        );
        gauge(&mut out, "happyx_live_runs", "Runs queued or running", runs);
        gauge(
            &mut out,
            "happyx_live_terminals",
            "Terminals starting or running",
            terminals,
        );
    }
    let holders = i64::try_from(state.pty.live_holders()).unwrap_or(i64::MAX);
    gauge(
        &mut out,
        "happyx_pty_holders",
        "PTY holders this host supervises",
        holders,
    );
    let queued = i64::try_from(state.devices.ingestor.queued()).unwrap_or(i64::MAX);
    gauge(
        &mut out,
        "happyx_envelope_queue",
        "Envelopes queued for or inside the writer",
        queued,
    );
    out.push_str("# HELP happyx_plugin_calls_total Guest calls by plugin kind\n# TYPE happyx_plugin_calls_total counter\n");
    let plugins = state.runner.plugins().status();
    for p in &plugins {
        out.push_str(&format!(
            "happyx_plugin_calls_total{{kind=\"{}\"}} {}\n",
            p.kind, p.calls
        ));
    }
    out.push_str("# HELP happyx_plugin_failures_total Failed guest calls by plugin kind\n# TYPE happyx_plugin_failures_total counter\n");
    for p in &plugins {
        out.push_str(&format!(
            "happyx_plugin_failures_total{{kind=\"{}\"}} {}\n",
            p.kind, p.failures
        ));
    }
    out.push_str("# HELP happyx_plugin_call_seconds_total Time spent in guest calls by plugin kind\n# TYPE happyx_plugin_call_seconds_total counter\n");
    for p in &plugins {
        out.push_str(&format!(
            "happyx_plugin_call_seconds_total{{kind=\"{}\"}} {}\n",
            p.kind,
            p.total_call_us as f64 / 1e6
        ));
    }
    out.push_str(&format!(
        "# HELP happyx_build_info The running build\n# TYPE happyx_build_info gauge\nhappyx_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

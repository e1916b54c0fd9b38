//! Process-wide counters and histograms, rendered in the Prometheus text format: plain
//! atomics for the fixed counters, and `prometheus-client` families for what has labels —
//! request latency by route template, failures by error code. Labels are route templates and
//! stable codes only, never paths with ids or anything a caller chose.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a request's latency: method, route template (`/v1/runs/{id}`), status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

/// Label of a failure: its stable error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

pub use happyx_policy::metrics::{PluginCallLabels, PluginCalls};

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// The labelled series and the registry that renders them.
pub struct Labelled {
    registry: Registry,
    pub http: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub failures: Family<CodeLabels, Counter>,
    pub plugin_calls: PluginCalls,
}

impl Default for Labelled {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let failures = Family::<CodeLabels, Counter>::default();
        let plugin_calls: PluginCalls = Family::new_with_constructor(latency_histogram);
        registry.register(
            "happyx_plugin_call_duration_seconds",
            "Policy plugin call latency by plugin, call and outcome (ok or error code)",
            plugin_calls.clone(),
        );
        registry.register(
            "happyx_http_request_duration_seconds",
            "Request latency by method, route template and status class",
            http.clone(),
        );
        registry.register(
            "happyx_failures",
            "Error responses by stable error code",
            failures.clone(),
        );
        Self {
            registry,
            http,
            failures,
            plugin_calls,
        }
    }
}

impl std::fmt::Debug for Labelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Labelled")
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Request latency and failures by label.
    pub labelled: Labelled,
    pub requests_2xx: AtomicU64,
    pub requests_4xx: AtomicU64,
    pub requests_5xx: AtomicU64,
    pub unauthorized: AtomicU64,
    pub runs_started: AtomicU64,
    pub runs_finished: AtomicU64,
    pub redaction_failures: AtomicU64,
    pub envelopes_accepted: AtomicU64,
    pub envelopes_rejected: AtomicU64,
    /// Envelopes refused before any signature check (unauthenticated garbage).
    pub envelopes_garbage: AtomicU64,
    /// Connections closed at accept because a connection limit was reached.
    pub connections_refused: AtomicU64,
    /// Requests to unauthenticated routes refused by the per-address rate limit.
    pub rate_limited: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 12] = [
            (
                "happyx_http_responses_total{class=\"2xx\"}",
                "HTTP responses by status class",
                &self.requests_2xx,
            ),
            (
                "happyx_http_responses_total{class=\"4xx\"}",
                "",
                &self.requests_4xx,
            ),
            (
                "happyx_http_responses_total{class=\"5xx\"}",
                "",
                &self.requests_5xx,
            ),
            (
                "happyx_unauthorized_total",
                "Requests refused with 401",
                &self.unauthorized,
            ),
            (
                "happyx_runs_started_total",
                "Runs whose child was spawned",
                &self.runs_started,
            ),
            (
                "happyx_runs_finished_total",
                "Runs that reached a final status",
                &self.runs_finished,
            ),
            (
                "happyx_redaction_failures_total",
                "Chunks withheld because the redactor failed",
                &self.redaction_failures,
            ),
            (
                "happyx_envelopes_accepted_total",
                "Envelopes stored",
                &self.envelopes_accepted,
            ),
            (
                "happyx_envelopes_rejected_total",
                "Authenticated envelopes refused",
                &self.envelopes_rejected,
            ),
            (
                "happyx_envelopes_garbage_total",
                "Unauthenticated envelope garbage refused",
                &self.envelopes_garbage,
            ),
            (
                "happyx_connections_refused_total",
                "Connections closed at accept by a connection limit",
                &self.connections_refused,
            ),
            (
                "happyx_rate_limited_total",
                "Unauthenticated requests refused by the per-address rate limit",
                &self.rate_limited,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                out.push_str(&format!("# HELP {base} {help}\n# TYPE {base} counter\n"));
            }
            out.push_str(&format!("{name} {}\n", v.load(Ordering::Relaxed)));
        }
        let mut labelled = String::new();
        if prometheus_client::encoding::text::encode_registry(
            &mut labelled,
            &self.labelled.registry,
        )
        .is_ok()
        {
            out.push_str(&labelled);
        }
        out
    }
}

//! Process-wide counters, rendered in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
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
        out
    }
}

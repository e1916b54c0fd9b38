//! Operation statistics shared by every actor: latency per operation kind (per sampling window
//! and for the whole run), counts, and errors by `status:code`. 5xx answers are counted apart,
//! because any of them fails the verdict.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Default)]
struct Inner {
    window: BTreeMap<&'static str, Vec<u32>>,
    all: BTreeMap<&'static str, Vec<u32>>,
    errors: BTreeMap<String, u64>,
    server_errors: u64,
    transport_errors: u64,
}

/// Thread-safe counters.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

/// Latency figures of one operation kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpFigures {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One HTTP or WebSocket exchange that got an answer, with its latency in microseconds.
    pub fn answered(&self, op: &'static str, micros: u64, status: u16, code: Option<&str>) {
        let mut g = self.lock();
        let us = u32::try_from(micros).unwrap_or(u32::MAX);
        g.window.entry(op).or_default().push(us);
        g.all.entry(op).or_default().push(us);
        if status >= 500 {
            g.server_errors += 1;
        }
        if status >= 400 {
            *g.errors
                .entry(format!("{status}:{}", code.unwrap_or("-")))
                .or_default() += 1;
        }
    }

    /// An exchange that got no answer (connection refused or reset, timeout).
    pub fn transport_error(&self) {
        let mut g = self.lock();
        g.transport_errors += 1;
        *g.errors.entry("transport".into()).or_default() += 1;
    }

    /// A failure that is not an HTTP status (e.g. a WebSocket protocol violation).
    pub fn failure(&self, what: &str) {
        *self.lock().errors.entry(what.to_string()).or_default() += 1;
    }

    pub fn server_errors(&self) -> u64 {
        self.lock().server_errors
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.lock().errors.clone()
    }

    /// Figures since the last call, per operation; resets the window.
    pub fn take_window(&self) -> BTreeMap<String, OpFigures> {
        let mut g = self.lock();
        let window = std::mem::take(&mut g.window);
        window
            .into_iter()
            .map(|(op, mut v)| (op.to_string(), figures(&mut v)))
            .collect()
    }

    /// Figures over the whole run.
    pub fn totals(&self) -> BTreeMap<String, OpFigures> {
        let g = self.lock();
        g.all
            .iter()
            .map(|(op, v)| (op.to_string(), figures(&mut v.clone())))
            .collect()
    }
}

/// Count, median, 99th percentile and maximum of latencies in microseconds, in milliseconds.
pub fn figures(v: &mut [u32]) -> OpFigures {
    v.sort_unstable();
    let pick = |q: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        f64::from(v[i.min(v.len() - 1)]) / 1000.0
    };
    OpFigures {
        count: v.len() as u64,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: v.last().map(|x| f64::from(*x) / 1000.0).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let f = figures(&mut v);
        assert_eq!(f.count, 100);
        assert!((f.p50_ms - 50.0).abs() <= 1.0, "{f:?}");
        assert!((f.p99_ms - 99.0).abs() <= 1.0, "{f:?}");
        assert_eq!(f.max_ms, 100.0);
        assert_eq!(figures(&mut []).count, 0);
    }

    #[test]
    fn server_errors_are_counted_apart() {
        let s = Stats::default();
        s.answered("x", 10, 201, None);
        s.answered("x", 10, 503, Some("unavailable"));
        s.answered("x", 10, 403, Some("approval_required"));
        assert_eq!(s.server_errors(), 1);
        assert_eq!(s.errors().get("503:unavailable"), Some(&1));
        assert_eq!(s.take_window()["x"].count, 3);
        assert!(s.take_window().is_empty());
        assert_eq!(s.totals()["x"].count, 3);
    }
}

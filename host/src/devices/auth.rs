//! Device request signatures: how a device authenticates reads and session changes without a
//! bearer token, and the server's guards around them (time window, replay cache, rate limits).
//!
//! A request carries four headers:
//!
//! ```text
//! X-HappyX-Device:      <device id>
//! X-HappyX-Key-Version: <key version>
//! X-HappyX-Timestamp:   <Unix ms>
//! X-HappyX-Signature:   base64 Ed25519 over
//!   "happyx-device-request-v1\0" || lp(deviceId) || u64(keyVersion) || u64(timestamp)
//!   || lp(METHOD) || lp(path?query) || lp(SHA-256(body))
//! ```
//!
//! The server accepts a timestamp within ±[`REQUEST_WINDOW_MS`] of its clock and each signature
//! once (a replay cache holds the signatures seen inside the window), so a captured request
//! cannot be replayed. The cache lives in memory, so a host also refuses every signature made
//! before it started: a request captured before a restart cannot be replayed after it (the
//! device signs again).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub use happyx_envelope::request::{
    DEVICE_HEADER, KEY_VERSION_HEADER, REQUEST_DOMAIN, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    request_message, sign_request,
};

/// Accepted distance between a request's timestamp and the host clock.
pub const REQUEST_WINDOW_MS: i64 = 60_000;
/// Most signatures the replay cache holds; beyond it, new device requests are refused.
const REPLAY_CACHE_MAX: usize = 200_000;

/// Signatures seen inside the window, since the host started.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; 64], i64>>,
    /// When this cache (this host process) started: earlier signatures are refused.
    not_before: i64,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            not_before: crate::util::now_ms(),
        }
    }
}

impl ReplayCache {
    /// Was a request signed at `timestamp` (Unix ms) signed before this cache started, so
    /// that it may have been used already?
    pub fn predates(&self, timestamp: i64) -> bool {
        timestamp < self.not_before
    }

    /// Records `signature` (valid until `expires_at`); false if it was already seen or the
    /// cache is full.
    pub fn first_use(&self, signature: &[u8; 64], now: i64, expires_at: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() >= REPLAY_CACHE_MAX / 2 {
            seen.retain(|_, exp| *exp >= now);
        }
        if seen.len() >= REPLAY_CACHE_MAX {
            return false;
        }
        match seen.get(signature) {
            Some(exp) if *exp >= now => false,
            _ => {
                seen.insert(*signature, expires_at);
                true
            }
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Per-IP and global token buckets for the unauthenticated enrollment routes.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    global_burst: f64,
    global_per_sec: f64,
    state: Mutex<(Bucket, HashMap<IpAddr, Bucket>)>,
}

impl RateLimiter {
    /// `burst`/`per_sec` per client address, and a global bucket.
    pub fn new(burst: f64, per_sec: f64, global_burst: f64, global_per_sec: f64) -> Self {
        Self {
            burst,
            per_sec,
            global_burst,
            global_per_sec,
            state: Mutex::new((
                Bucket {
                    tokens: global_burst,
                    at_ms: 0,
                },
                HashMap::new(),
            )),
        }
    }

    fn take(bucket: &mut Bucket, burst: f64, per_sec: f64, now: i64) -> bool {
        let elapsed = (now - bucket.at_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token from `ip`'s bucket (if known) and the global one; false if either is
    /// empty.
    pub fn allow(&self, ip: Option<IpAddr>, now: i64) -> bool {
        let Ok(mut guard) = self.state.lock() else {
            return false;
        };
        let (global, per_ip) = &mut *guard;
        if let Some(ip) = ip {
            if per_ip.len() > 10_000 {
                let (burst, rate) = (self.burst, self.per_sec);
                per_ip.retain(|_, b| b.tokens + (now - b.at_ms) as f64 / 1000.0 * rate < burst);
            }
            let bucket = per_ip.entry(ip).or_insert(Bucket {
                tokens: self.burst,
                at_ms: now,
            });
            if !Self::take(bucket, self.burst, self.per_sec, now) {
                return false;
            }
        }
        Self::take(global, self.global_burst, self.global_per_sec, now)
    }
}

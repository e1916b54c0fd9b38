//! Per-address rate limit of the unauthenticated routes (`/public/*` and the console's
//! sign-in; device enrollment has its own limiter in `devices::auth`):
//! they do work for anyone who asks, so one address may not ask without bound. GCRA (the
//! `governor` crate), keyed by the peer IP: `api.public_requests_per_second`, with a burst
//! of twice as many. A refused request is `429 rate_limited` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;
use crate::metrics::Metrics;

/// The limiter and the counters it reports to.
#[derive(Clone)]
pub struct PublicLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    metrics: Arc<Metrics>,
}

impl PublicLimit {
    pub fn new(per_second: u32, metrics: Arc<Metrics>) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(rate);
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            metrics,
        }
    }
}

/// Is `path` one of the routes anyone may call without a credential?
fn unauthenticated(path: &str) -> bool {
    path.starts_with("/public/")
        || path == "/v1/console/session"
        || path == "/v1/enrollments/challenge"
        || path == "/v1/enrollments/complete"
}

pub async fn limit(State(l): State<PublicLimit>, req: Request, next: Next) -> Response {
    if unauthenticated(req.uri().path()) {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip
            && l.limiter.check_key(&ip).is_err()
        {
            Metrics::inc(&l.metrics.rate_limited);
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address to unauthenticated routes; retry shortly",
            )
            .into_response();
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            return resp;
        }
        // Forget addresses that have been quiet long enough to be back at a full burst.
        if l.limiter.len() > 10_000 {
            l.limiter.retain_recent();
        }
    }
    next.run(req).await
}

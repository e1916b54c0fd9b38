//! `GET /v1/events/stream`: the audit log as server-sent events, for the console
//! and API clients alike. Each event's SSE `id` is its `seq`; a client resumes
//! with `Last-Event-ID` (what `EventSource` sends on reconnect) or `?after=SEQ`
//! and gets every later event once, in order, with no gap. New events are
//! noticed through the shared [`EventFeed`](crate::console::feed::EventFeed);
//! the caller's credentials are checked again every few seconds, so revoking a
//! token or signing out ends its streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;

use super::extract::{ApiQuery, Caller};
use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::auth::{self, Role};
use crate::store::EventRow;

/// Events read from the store per query.
const BATCH: i64 = 200;
/// How often a live stream re-checks its caller's credentials.
const RECHECK: Duration = Duration::from_secs(5);
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this `seq` (default: the current end of the log, i.e. only new
    /// events). The `Last-Event-ID` header, when present, wins.
    after: Option<i64>,
}

struct Cursor {
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    rx: watch::Receiver<i64>,
    after: i64,
    buf: VecDeque<EventRow>,
    checked: Instant,
}

impl Cursor {
    /// True while the credentials that opened the stream are still good.
    async fn still_allowed(&self) -> bool {
        if let Some(v) = self.headers.get(AUTHORIZATION) {
            let Some(t) = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
                return false;
            };
            return auth::authenticate(&self.state.store, t.trim())
                .await
                .is_ok();
        }
        matches!(
            crate::console::session::authenticate(
                &self.state.store,
                &self.headers,
                &Method::GET,
                &self.uri,
                self.state.config.tls.cert.is_some(),
            )
            .await,
            Ok(Some(_))
        )
    }

    async fn next_event(&mut self) -> Option<EventRow> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(ev);
            }
            if self.checked.elapsed() >= RECHECK {
                if !self.still_allowed().await {
                    return None;
                }
                self.checked = Instant::now();
            }
            match self.state.store.events_after(self.after, BATCH).await {
                Ok(evs) if !evs.is_empty() => {
                    if let Some(last) = evs.last() {
                        self.after = last.seq;
                    }
                    self.buf.extend(evs);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(code = e.code(), error = %e, "event stream cannot read the log");
                    return None;
                }
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

fn resume_point(headers: &HeaderMap, q: &StreamQuery) -> ApiResult<Option<i64>> {
    if let Some(v) = headers.get("last-event-id") {
        let seq = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be an event seq (a non-negative integer)",
                )
            })?;
        return Ok(Some(seq));
    }
    match q.after {
        Some(a) if a < 0 => Err(ApiError::bad_request("invalid_query", "after must be >= 0")),
        other => Ok(other),
    }
}

/// Live audit events as server-sent events (operator, viewer; bearer or console
/// session). Each message: `id: <seq>`, `data: <event JSON>` as in `GET /v1/events`.
/// Resume with `Last-Event-ID` or `?after=SEQ`; keep-alive comments every 15 s.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq (wins over `after`)")),
    security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream: `id: SEQ`, `data: {id, seq, at, code, actor, subject, data}`", content_type = "text/event-stream"),
               (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn event_stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let after = match resume_point(&headers, &q)? {
        Some(a) => a,
        None => state.store.last_event_seq().await?,
    };
    let cursor = Cursor {
        rx: state.feed.subscribe(),
        state,
        headers,
        uri,
        after,
        buf: VecDeque::new(),
        checked: Instant::now(),
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        let ev = super::views::EventRow::from(c.next_event().await?);
        let data = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into());
        let sse = Event::default().id(ev.seq.to_string()).data(data);
        Some((Ok(sse), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

//! `GET /v1/events`: page through the audit log.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Caller;
use super::page::{EventPages, PageParams, Paged, SeqCursor};
use super::views::EventRow;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Role;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with `seq` greater than this (default 0).
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// `asc` (default) or `desc`: newest first, paging with `before`.
    order: Option<String>,
    /// With `order=desc`: only events with `seq` below this.
    before: Option<i64>,
    /// Exact event code, or a prefix ending in `.` (`run.`).
    code: Option<String>,
    /// Only events by this actor (`token:<id>`, `host`, …).
    actor: Option<String>,
    /// Only events about this subject id.
    subject: Option<String>,
    /// Only events at or after this time (Unix ms).
    since: Option<i64>,
    /// Only events before this time (Unix ms).
    until: Option<i64>,
}

impl PageParams for EventsQuery {
    type Limits = EventPages;
    type Cursor = SeqCursor;
    fn take_cursor(&mut self) -> Option<i64> {
        self.after.take()
    }
    fn limit(&self) -> Option<i64> {
        self.limit
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<EventRow>,
    /// Pass as `after` for the next page; equal to the request's `after` when empty.
    next_after: i64,
}

/// Audit events in sequence order (operator, viewer).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = EventPage), (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    page: Paged<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    caller.require(&[Role::Operator, Role::Viewer])?;
    let (after, limit, q) = (page.after_seq(), page.limit, &page.query);
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "order must be asc or desc",
            ));
        }
    };
    let filtered = q.code.is_some()
        || q.actor.is_some()
        || q.subject.is_some()
        || q.since.is_some()
        || q.until.is_some();
    if desc || filtered {
        for v in [&q.code, &q.actor, &q.subject].into_iter().flatten() {
            if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "a filter value is empty, too long or holds control characters",
                ));
            }
        }
        let f = crate::store::EventFilter {
            code: q.code.as_deref(),
            actor: q.actor.as_deref(),
            subject: q.subject.as_deref(),
            since: q.since,
            until: q.until,
            before: if desc { q.before } else { None },
            after: (!desc).then_some(after),
            ascending: !desc,
            limit,
        };
        let events = state.store.events_filtered(&f).await?;
        let next_after = events.last().map(|e| e.seq).unwrap_or(after);
        let events = events.into_iter().map(EventRow::from).collect();
        return Ok(Json(EventPage { events, next_after }));
    }
    let events = state.store.events_after(after, limit).await?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    let events = events.into_iter().map(EventRow::from).collect();
    Ok(Json(EventPage { events, next_after }))
}

//! `GET /v1/pty/{id}/transcript`: a terminal's redacted transcript from a raw output offset,
//! and the slicing of stored chunks shared with the live attach's catch-up.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::visible;
use crate::api::extract::{ApiQuery, Caller};
use crate::api::{ApiResult, AppState, ErrorBody};
use crate::auth::Role;
use crate::store::TranscriptChunk;

/// Transcript chunks read per page.
pub(super) const PAGE: i64 = 16;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    /// Raw output byte offset to start from (default 0).
    from: Option<i64>,
}

/// The redacted bytes of `c` from raw offset `from` (whole chunk when the
/// masked copy's length differs from the raw one); a marker when withheld.
pub(super) fn redacted_from(
    offset: u64,
    raw_len: u64,
    redacted: Option<&[u8]>,
    from: u64,
) -> Vec<u8> {
    match redacted {
        Some(r) if from > offset && r.len() as u64 == raw_len => {
            r[(from - offset).min(raw_len) as usize..].to_vec()
        }
        Some(r) => r.to_vec(),
        None => format!("\n[withheld: {raw_len} bytes could not be redacted]\n").into_bytes(),
    }
}

pub(super) fn chunk_bytes(c: &TranscriptChunk, from: u64) -> Vec<u8> {
    redacted_from(
        c.byte_offset as u64,
        c.data.len() as u64,
        c.redacted.as_deref(),
        from,
    )
}

/// The redacted transcript from a raw output offset, as text (operator).
#[utoipa::path(get, path = "/v1/pty/{id}/transcript", tag = "pty", params(("id" = String, Path), TranscriptQuery),
    security(("bearer" = [])), responses((status = 200, description = "redacted output", content_type = "text/plain"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_transcript(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> ApiResult<Response> {
    caller.require(&[Role::Operator])?;
    let p = visible(&state, &caller, &id).await?;
    let from = q.from.unwrap_or(0).max(0) as u64;
    let store = state.store.clone();
    let stream = futures::stream::unfold(Some(from), move |next| {
        let store = store.clone();
        let pid = p.id.clone();
        async move {
            let next = next?;
            match store.transcript_from(&pid, next as i64, PAGE).await {
                Ok(chunks) if chunks.is_empty() => None,
                Ok(chunks) => {
                    let mut out = Vec::new();
                    let mut at = next;
                    for c in &chunks {
                        out.extend_from_slice(&chunk_bytes(c, at));
                        at = c.byte_offset as u64 + c.data.len() as u64;
                    }
                    Some((Ok::<_, std::io::Error>(out), Some(at)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.code())), None)),
            }
        }
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

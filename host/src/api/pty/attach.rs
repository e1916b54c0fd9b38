//! Live attach to a terminal: `POST /v1/pty/{id}/attach` issues a short-lived single-use
//! ticket (high-risk PTYs: approval of kind `attach` bound to the PTY and the mode, unless the
//! caller is an operator), `GET /v1/pty/{id}/ws` upgrades to the WebSocket.
//!
//! WebSocket frames (see docs/pty.md):
//! - server → client, binary: `u64-BE raw offset || u32-BE raw length || redacted bytes`;
//! - server → client, text JSON: `{"type":"hello",…}`, `{"type":"exit",…}`, `{"type":"error",…}`;
//! - client → server, text JSON: `{"type":"resume","offset":N}` (first, optional),
//!   `{"type":"input","data":"…"}`, `{"type":"resize","rows":R,"cols":C}`; binary: raw input.
//!   Input and resize only on `drive` attaches.
//! - close `4000` with reason `slow_consumer; resume from offset N` when a viewer falls behind.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::transcript::{PAGE, chunk_bytes, redacted_from};
use super::visible;
use crate::api::extract::{ApiJson, ApiQuery, Caller};
use crate::api::gate::{self, Admission};
use crate::api::{ApiError, ApiResult, AppState, ErrorBody, path_id};
use crate::approvals::{self, Action, ActionKind, AttachMode, action_hash};
use crate::auth::{self, Role, Secret};
use crate::plugins::Risk;
use crate::pty::Live;
use crate::pty::manager::Cmd;
use crate::store::{NewTicket, UseEffect};
use crate::util::{new_id, now_ms};

/// How long an attach ticket stays valid.
const TICKET_TTL_MS: i64 = 30_000;
/// Most input bytes accepted in one WebSocket message.
const MAX_INPUT: usize = 64 * 1024;
/// How long a send to a viewer may block before it is closed as slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a socket opened without `?offset=` waits for a first `resume` frame before output
/// starts at 0.
const OPENING_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    /// `observe` (output only) or `drive` (also input and resize).
    mode: String,
    approval_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AttachTicket {
    /// Single use, valid for 30 s: `GET /v1/pty/{id}/ws?ticket=…`.
    ticket: String,
    mode: String,
    expires_at: i64,
    ws_path: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// The attach ticket from `POST /v1/pty/{id}/attach`.
    ticket: String,
    /// Raw output offset to resume from (or send `{"type":"resume","offset":N}` first).
    offset: Option<u64>,
}

/// Issue a single-use, 30 s WebSocket attach ticket. Modes: `observe`,
/// `drive`. Viewers may only observe. Attaching to a high-risk PTY with any
/// token but an operator's needs an approval of kind `attach` bound to this PTY
/// and mode (`403 approval_required`, then repeat with `approval_token`).
#[utoipa::path(post, path = "/v1/pty/{id}/attach", tag = "pty", params(("id" = String, Path)), request_body = AttachBody,
    security(("bearer" = [])), responses((status = 201, body = AttachTicket),
    (status = 403, description = "approval_required, approval_pending, approval_invalid, forbidden", body = ErrorBody)))]
pub async fn attach_pty(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AttachBody>,
) -> ApiResult<Response> {
    let p = visible(&state, &caller, &id).await?;
    let mode: AttachMode = b.mode.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "`mode`: expected `observe` or `drive`",
        )
    })?;
    if caller.is(Role::Viewer) && mode == AttachMode::Drive {
        return Err(ApiError::forbidden());
    }
    let hash = action_hash(&Action {
        kind: ActionKind::Attach,
        recipe: &p.recipe,
        args: Vec::new(),
        program: "",
        argv: &[],
        plugin_hash: "",
        session_id: None,
        target: Some((&p.id, mode)),
    });
    let requester = caller.actor();
    let (_, ticket) = auth::mint();
    let t = NewTicket {
        id: new_id(),
        pty_id: p.id.clone(),
        mode,
        ticket_hash: ticket.hash(),
        requested_by: requester.clone(),
        expires_at: now_ms() + TICKET_TTL_MS,
    };
    let risk: Risk = p.risk;
    let needs = approvals::needs_approval(ActionKind::Attach, risk, caller.0.role);
    let shown =
        || json!({ "attach": { "pty_id": p.id, "mode": mode }, "recipe": p.recipe, "risk": risk });
    let token = b.approval_token.as_deref();
    let effect = UseEffect::IssueAttachTicket { ticket: &t };
    match gate::admit(
        &state,
        ActionKind::Attach,
        &hash,
        &requester,
        token,
        needs,
        effect,
        shown,
    )
    .await?
    {
        Admission::Required(answer) => return Ok(answer),
        Admission::Granted(_) => {}
        Admission::Free => state.store.create_attach_ticket(&t).await?,
    }
    let body = AttachTicket {
        ws_path: format!("/v1/pty/{}/ws", p.id),
        ticket: ticket.expose().to_string(),
        mode: mode.as_str().to_owned(),
        expires_at: t.expires_at,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Live attach (WebSocket upgrade). Authenticated by the single-use ticket in
/// the query, not a bearer token. Frames: see the module description above and docs/pty.md.
#[utoipa::path(get, path = "/v1/pty/{id}/ws", tag = "pty", params(("id" = String, Path), WsQuery),
    responses((status = 101, description = "WebSocket: binary output frames `u64-BE offset || u32-BE raw length || redacted bytes`; \
                text JSON hello/exit/error; client sends resume/input/resize; close 4000 `slow_consumer; resume from offset N`"),
               (status = 403, body = ErrorBody)))]
pub async fn pty_ws(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WsQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let id = path_id(&id, "pty")?.to_string();
    // Another host's terminal: its owner spends the ticket and serves the socket; this host
    // relays the frames both ways.
    if let crate::cluster::Owner::Elsewhere(owner) = super::owner_of(&state, &id, &headers).await? {
        let mut query = format!("ticket={}", q.ticket);
        if let Some(offset) = q.offset {
            query.push_str(&format!("&offset={offset}"));
        }
        let path = format!("/v1/pty/{id}/ws?{query}");
        let upstream = match super::relay::connect(&state.cluster, &owner, &path).await {
            Ok(u) => u,
            Err(refused) => return Ok(refused),
        };
        return Ok(ws
            .max_message_size(1 << 20)
            .on_upgrade(move |socket| super::relay::pump(socket, upstream)));
    }
    let invalid = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "ticket_invalid",
            "the attach ticket is unknown, used, expired or for another terminal",
        )
    };
    let spent = state
        .store
        .spend_attach_ticket(&Secret::presented(&q.ticket).hash())
        .await?
        .ok_or_else(invalid)?;
    if spent.pty_id != id {
        return Err(invalid());
    }
    let drive = spent.mode == AttachMode::Drive;
    let offset = q.offset;
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            viewer(state.clone(), socket, id.clone(), drive, offset).await;
            let _ = state
                .store
                .record_pty_event(
                    &id,
                    "detach",
                    &spent.requested_by,
                    json!({ "ticket_id": spent.id }),
                )
                .await;
        }))
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn output_frame(offset: u64, raw_len: u64, bytes: &[u8]) -> Message {
    let mut b = Vec::with_capacity(12 + bytes.len());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&(raw_len as u32).to_be_bytes());
    b.extend_from_slice(bytes);
    Message::Binary(b.into())
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMsg {
    Resume { offset: u64 },
    Input { data: String },
    Resize { rows: u16, cols: u16 },
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(m)).await,
        Ok(Ok(()))
    )
}

async fn close(sink: &mut Sink, code: u16, reason: String) {
    let _ = send(
        sink,
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })),
    )
    .await;
}

/// Sends persisted chunks from `next` until the store has no more; returns the new offset.
/// While the session is live it stops where live viewers have been released to
/// ([`crate::pty::PtyManager::released`]): the newest chunk's overlap window may still be
/// re-masked, and arrives on the live channel once it is final.
async fn catch_up(state: &AppState, sink: &mut Sink, id: &str, mut next: u64) -> Option<u64> {
    let bound = state.pty.released(id);
    loop {
        let chunks = state
            .store
            .transcript_from(id, next as i64, PAGE)
            .await
            .ok()?;
        if chunks.is_empty() {
            return Some(next);
        }
        for c in &chunks {
            let start = next.max(c.byte_offset as u64);
            let end = c.byte_offset as u64 + c.data.len() as u64;
            let stop = bound.map_or(end, |b| b.min(end));
            if stop <= start {
                return Some(next);
            }
            let mut bytes = chunk_bytes(c, next);
            if stop < end && c.redacted.is_some() {
                bytes.truncate((stop - start) as usize);
            }
            if !send(sink, output_frame(start, stop - start, &bytes)).await {
                return None;
            }
            next = stop;
            if stop < end {
                return Some(next);
            }
        }
    }
}

async fn viewer(state: AppState, socket: WebSocket, id: String, drive: bool, offset: Option<u64>) {
    let (mut sink, mut stream) = socket.split();
    // The opening (docs/pty.md): with `?offset=N` output starts at N at once. Without it the
    // host waits up to OPENING_WAIT for a first frame: `resume` sets the offset; any other
    // frame is kept and handled like every later one (an early input is never dropped); then
    // `hello` names the offset output starts from.
    let mut first: Option<Message> = None;
    let mut next = match offset {
        Some(o) => o,
        None => match tokio::time::timeout(OPENING_WAIT, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientMsg>(t.as_str()) {
                Ok(ClientMsg::Resume { offset }) => offset,
                _ => {
                    first = Some(Message::Text(t));
                    0
                }
            },
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return,
            Ok(Some(Ok(m))) => {
                first = Some(m);
                0
            }
            Err(_) => 0,
        },
    };
    // Subscribe before reading the store: every chunk is either already
    // stored or still to come on the live channel (duplicates skipped by offset).
    let mut live = state.pty.subscribe(&id);
    let mode = if drive {
        AttachMode::Drive
    } else {
        AttachMode::Observe
    };
    let hello = json!({ "type": "hello", "pty_id": id, "mode": mode, "offset": next });
    if !send(&mut sink, text(hello)).await {
        return;
    }
    let Some(n) = catch_up(&state, &mut sink, &id, next).await else {
        return;
    };
    next = n;
    let Some(rx) = live.as_mut() else {
        return finish(&state, &mut sink, &id, next).await;
    };
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(Live::Chunk { offset, raw_len, redacted }) => {
                    if offset + raw_len <= next {
                        continue;
                    }
                    if offset > next {
                        let Some(n) = catch_up(&state, &mut sink, &id, next).await else { return };
                        // Nothing stored up to this chunk (the transcript reached its cap, or
                        // retention pruned it): go on live from here.
                        next = n.max(offset);
                        if offset + raw_len <= next {
                            continue;
                        }
                    }
                    let bytes = redacted_from(offset, raw_len, redacted.as_deref().map(Vec::as_slice), next);
                    if !send(&mut sink, output_frame(next, offset + raw_len - next, &bytes)).await {
                        return close(&mut sink, 4000, format!("slow_consumer; resume from offset {next}")).await;
                    }
                    next = offset + raw_len;
                }
                Ok(Live::InputDropped { bytes }) => {
                    if drive {
                        let e = json!({ "type": "error", "code": "input_dropped", "bytes": bytes,
                            "message": "the program is not reading its input; this many bytes of input were dropped" });
                        if !send(&mut sink, text(e)).await { return; }
                    }
                }
                Ok(Live::End { .. }) | Err(RecvError::Closed) => {
                    let Some(n) = catch_up(&state, &mut sink, &id, next).await else { return };
                    return finish(&state, &mut sink, &id, n).await;
                }
                Err(RecvError::Lagged(_)) => {
                    return close(&mut sink, 4000, format!("slow_consumer; resume from offset {next}")).await;
                }
            },
            msg = next_frame(&mut first, &mut stream) => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    _ => return,
                };
                let cmd = match msg {
                    Message::Binary(b) if b.len() <= MAX_INPUT => Some(Cmd::Input(b.to_vec())),
                    Message::Text(t) => match serde_json::from_str::<ClientMsg>(t.as_str()) {
                        Ok(ClientMsg::Input { data }) if data.len() <= MAX_INPUT => Some(Cmd::Input(data.into_bytes())),
                        Ok(ClientMsg::Resize { rows, cols }) if (1..=1000).contains(&rows) && (1..=1000).contains(&cols) => {
                            Some(Cmd::Resize(rows, cols))
                        }
                        Ok(ClientMsg::Resume { .. }) => None,
                        _ => {
                            let e = json!({ "type": "error", "code": "invalid_frame", "message": "unknown or malformed frame" });
                            if !send(&mut sink, text(e)).await { return; }
                            None
                        }
                    },
                    Message::Close(_) => return,
                    Message::Binary(_) => {
                        let e = json!({ "type": "error", "code": "input_too_large", "message": "at most 64 KiB of input per message" });
                        if !send(&mut sink, text(e)).await { return; }
                        None
                    }
                    _ => None,
                };
                let Some(cmd) = cmd else { continue };
                if !drive {
                    let e = json!({ "type": "error", "code": "observe_only", "message": "this attach may only observe" });
                    if !send(&mut sink, text(e)).await { return; }
                    continue;
                }
                if let Cmd::Resize(rows, cols) = cmd {
                    let _ = state.pty.control(&id, "viewer", "resize", json!({ "rows": rows, "cols": cols }), cmd).await;
                } else {
                    let _ = state.pty.send(&id, cmd).await;
                }
            }
        }
    }
}

/// The frame kept from the opening, else the next one from the client.
async fn next_frame(
    first: &mut Option<Message>,
    stream: &mut futures::stream::SplitStream<WebSocket>,
) -> Option<Result<Message, axum::Error>> {
    match first.take() {
        Some(m) => Some(Ok(m)),
        None => stream.next().await,
    }
}

/// Tells the viewer how the session ended and closes normally.
async fn finish(state: &AppState, sink: &mut Sink, id: &str, next: u64) {
    if let Ok(Some(p)) = state.store.pty(id).await {
        let v = json!({ "type": "exit", "state": p.state, "exit_code": p.exit_code, "signal": p.exit_signal, "offset": next });
        let _ = send(sink, text(v)).await;
    }
    close(sink, 1000, "terminal ended".into()).await;
}

//! Relaying a live attach to the host that owns the terminal (`crate::cluster`): this host
//! opens the owner's WebSocket with the client's ticket (the owner spends and checks it), then
//! upgrades the client's socket and copies frames both ways until either side closes. The
//! frames are not read here: output stays redacted by the owner, input goes as typed.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Up};

use crate::api::ApiError;
use crate::cluster::{Cluster, FORWARDED_HEADER};
use crate::store::HostRecord;

/// The owner's side of a relayed attach.
pub(super) type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the owner's WebSocket at `path_and_query`. The owner's refusal (an expired ticket,
/// say) is the answer as it gave it; an owner that cannot be reached, `502 owner_unreachable`.
pub(super) async fn connect(
    cluster: &Cluster,
    owner: &HostRecord,
    path_and_query: &str,
) -> Result<Upstream, Response> {
    let unreachable = |why: &str| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "owner_unreachable",
            format!(
                "host {}, which owns this terminal, cannot be reached at {} ({why})",
                owner.id, owner.advertise_url
            ),
        )
        .into_response()
    };
    let mut request = Cluster::ws_url(owner, path_and_query)
        .into_client_request()
        .map_err(|_| unreachable("its address is not a WebSocket URL"))?;
    let from = cluster
        .id()
        .parse()
        .map_err(|_| unreachable("this host's id is not a header value"))?;
    request.headers_mut().insert(FORWARDED_HEADER, from);
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        // Never the URL in a message: it holds the ticket.
        Err(tungstenite::Error::Http(answer)) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = answer.into_body().unwrap_or_default();
            Err((
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response())
        }
        Err(tungstenite::Error::Io(_)) => Err(unreachable("refused or unreachable")),
        Err(_) => Err(unreachable("the WebSocket handshake failed")),
    }
}

/// Copies frames between the client and the owner until one side closes (the other is then
/// closed with the same code and reason).
pub(super) async fn pump(client: WebSocket, upstream: Upstream) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let to_owner = async {
        while let Some(Ok(m)) = client_rx.next().await {
            let closing = matches!(m, Message::Close(_));
            if up_tx.send(to_upstream(m)).await.is_err() || closing {
                break;
            }
        }
        let _ = up_tx.close().await;
    };
    let to_client = async {
        while let Some(Ok(m)) = up_rx.next().await {
            let Some(m) = from_upstream(m) else { continue };
            let closing = matches!(m, Message::Close(_));
            if client_tx.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Whichever direction ends first ends the relay.
    tokio::select! {
        _ = to_owner => {}
        _ = to_client => {}
    }
}

fn to_upstream(m: Message) -> Up {
    match m {
        Message::Text(t) => Up::text(t.as_str()),
        Message::Binary(b) => Up::Binary(b),
        Message::Ping(b) => Up::Ping(b),
        Message::Pong(b) => Up::Pong(b),
        Message::Close(c) => Up::Close(c.map(|c| tungstenite::protocol::CloseFrame {
            code: c.code.into(),
            reason: c.reason.as_str().to_owned().into(),
        })),
    }
}

fn from_upstream(m: Up) -> Option<Message> {
    Some(match m {
        Up::Text(t) => Message::Text(Utf8Bytes::from(t.as_str())),
        Up::Binary(b) => Message::Binary(b),
        Up::Ping(b) => Message::Ping(b),
        Up::Pong(b) => Message::Pong(b),
        Up::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code.into(),
            reason: Utf8Bytes::from(c.reason.as_str()),
        })),
        Up::Frame(_) => return None,
    })
}

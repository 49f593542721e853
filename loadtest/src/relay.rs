//! The baseline server: a minimal WebSocket relay that checks the same HS256
//! token, parses the same client frames, and forwards each direct message
//! straight to the peer's socket as a pushed `sync_result` with one entry,
//! acking the sender, with no storage, no fan-out and no durability. `pairs`
//! against it measures what this stack (tokio, WebSocket, JSON, the loopback
//! network) can do on this machine: the physical limit the chat server is
//! compared with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use proto::{
    Ack, ClientFrame, ConvId, Entry, ErrorCode, HistoryMessage, Rid, ServerFrame, SyncResult,
    Target, UserId,
};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames queued per connection before a sender waits.
const QUEUE: usize = 1024;

/// A connected user: where to push frames, and its inbox counter.
struct Peer {
    outbox: mpsc::Sender<String>,
    seq: Arc<AtomicU64>,
}

#[derive(Default)]
struct Registry {
    peers: Mutex<HashMap<UserId, Peer>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Serves the relay on `listener` until the process ends.
pub async fn serve(listener: TcpListener, secret: String) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::default());
    let secret = Arc::new(secret);
    loop {
        let (stream, _) = listener.accept().await?;
        let (registry, secret) = (Arc::clone(&registry), Arc::clone(&secret));
        tokio::spawn(async move {
            if let Err(err) = connection(stream, &registry, &secret).await {
                tracing::debug!(error = %err, "relay connection ended");
            }
        });
    }
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr, secret: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "relay listening");
    serve(listener, secret).await
}

fn user_of(request: &Request, secret: &str) -> Option<UserId> {
    let header = request.headers().get("authorization")?.to_str().ok()?;
    let token = header.strip_prefix("Bearer ")?;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .ok()?
        .claims;
    UserId::parse(&claims.sub).ok()
}

// The handshake callback's error type (a whole HTTP response) is fixed by tungstenite.
#[allow(clippy::result_large_err)]
fn authorize(
    request: &Request,
    response: Response,
    secret: &str,
    user: &mut Option<UserId>,
) -> Result<Response, ErrorResponse> {
    *user = user_of(request, secret);
    if user.is_some() {
        return Ok(response);
    }
    let mut refused = ErrorResponse::new(Some("unauthorized".into()));
    *refused.status_mut() = StatusCode::UNAUTHORIZED;
    Err(refused)
}

/// The gateway's socket buffers (`gateway/src/ws.rs`; this crate cannot
/// depend on the gateway, so the sizes are repeated here), so that the
/// baseline is not slowed by tungstenite's default: a 128 KiB read buffer,
/// zero-filled before every read. With it the relay took 12-13 us of CPU per
/// message at 30,000/s; with these, 10.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(4096)
}

// The handshake callback's error type (a whole HTTP response) is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, registry: &Registry, secret: &str) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut user = None;
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| authorize(req, resp, secret, &mut user),
        Some(socket_config()),
    )
    .await?;
    let Some(user) = user else {
        return Ok(());
    };
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queue) = mpsc::channel::<String>(QUEUE);
    let seq = Arc::new(AtomicU64::new(0));
    registry.lock().insert(
        user.clone(),
        Peer {
            outbox: outbox.clone(),
            seq: Arc::clone(&seq),
        },
    );
    let writer = tokio::spawn(async move {
        while let Some(text) = queue.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let reply = match proto::parse_client_frame(&text) {
            Ok((rid, frame)) => handle(registry, &user, &seq, rid, frame).await,
            Err(err) => ServerFrame::from_frame_error(&err),
        };
        if outbox.send(reply.to_json()).await.is_err() {
            break;
        }
    }
    registry.lock().remove(&user);
    drop(outbox);
    writer.abort();
    Ok(())
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Peer>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer's outbox and next seq, if it is connected.
    fn route(&self, user: &UserId) -> Option<(mpsc::Sender<String>, u64)> {
        let peers = self.lock();
        let peer = peers.get(user)?;
        Some((
            peer.outbox.clone(),
            peer.seq.fetch_add(1, Ordering::Relaxed) + 1,
        ))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn error(rid: Option<Rid>, code: ErrorCode, message: &str) -> ServerFrame {
    ServerFrame::Error {
        rid,
        code,
        message: message.into(),
        retry_after_ms: None,
    }
}

async fn handle(
    registry: &Registry,
    user: &UserId,
    seq: &AtomicU64,
    rid: Option<Rid>,
    frame: ClientFrame,
) -> ServerFrame {
    match frame {
        ClientFrame::Ping => ServerFrame::Pong { rid },
        ClientFrame::Typing(_) | ClientFrame::Presence { .. } | ClientFrame::Read { .. } => error(
            rid,
            ErrorCode::BadRequest,
            "the relay forwards messages only",
        ),
        ClientFrame::Sync(_) => ServerFrame::SyncResult {
            rid,
            result: SyncResult {
                entries: Vec::new(),
                head: seq.load(Ordering::Relaxed),
                more: false,
            },
        },
        ClientFrame::Send(send) => {
            let Target::Peer(peer) = send.target else {
                return error(
                    rid,
                    ErrorCode::BadRequest,
                    "the relay forwards direct messages (to) only",
                );
            };
            let Ok(conv_id) = ConvId::dm(user, &peer) else {
                return error(rid, ErrorCode::BadRequest, "to must name another user");
            };
            let Some((outbox, peer_seq)) = registry.route(&peer) else {
                return error(rid, ErrorCode::Unavailable, "peer not connected");
            };
            let message = HistoryMessage {
                conv_id,
                conv_seq: peer_seq,
                from: user.clone(),
                client_msg_id: send.client_msg_id,
                kind: send.kind,
                body: send.body,
                ts: now_ms(),
                refers_to: send.refers_to,
                recalled: false,
            };
            let ack = Ack {
                client_msg_id: message.client_msg_id.clone(),
                conv_id: message.conv_id.clone(),
                conv_seq: message.conv_seq,
                seq: seq.fetch_add(1, Ordering::Relaxed) + 1,
                ts: message.ts,
            };
            let push = ServerFrame::SyncResult {
                rid: None,
                result: SyncResult {
                    entries: vec![Entry {
                        seq: peer_seq,
                        message,
                    }],
                    head: peer_seq,
                    more: false,
                },
            };
            // A peer that went away loses the message: the relay stores nothing.
            let _ = outbox.send(push.to_json()).await;
            ServerFrame::Ack { rid, ack }
        }
    }
}

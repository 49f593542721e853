//! One WebSocket session: a reader that answers frames in order, a writer
//! that owns the socket, a bounded outgoing queue between them, and notify
//! pushes from the hub. A client that does not read is closed with 1008.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use proto::{ClientFrame, ErrorCode, Seq, ServerFrame, UserId, parse_client_frame};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::state::AppState;

/// Close codes of RFC 6455 that this gateway uses.
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (drain deadline).
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: the client did not read its frames.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// Ends a session once, with the close code of the first reason given.
#[derive(Default)]
struct Closer {
    token: CancellationToken,
    code: AtomicU16,
}

impl Closer {
    fn close(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    fn code(&self) -> u16 {
        match self.code.load(Ordering::Acquire) {
            0 => close_code::NORMAL,
            code => code,
        }
    }
}

/// What the reader hands the writer.
enum Outgoing {
    Frame(String),
    Close(u16),
}

/// Runs a session over any message sink and stream (a real socket, or
/// channels in tests) for `user` until either side ends it.
pub async fn run<S, R, E>(sink: S, stream: R, state: AppState, user: UserId)
where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send,
{
    let registration = state.hub.register(&user).await;
    metrics::gauge!("chat_ws_connections").increment(1.0);
    let (out, queue) = mpsc::channel(state.limits.outgoing_queue.max(1));
    let closer = Arc::new(Closer::default());
    let writer = tokio::spawn(write_loop(
        sink,
        queue,
        registration.head.clone(),
        state.clone(),
        Arc::clone(&closer),
    ));
    read_loop(stream, &out, &state, &user, &closer).await;
    drop(out);
    if let Err(err) = writer.await {
        tracing::warn!(error = %err, "socket writer task failed");
    }
    metrics::gauge!("chat_ws_connections").decrement(1.0);
    drop(registration);
}

async fn read_loop<R, E>(
    mut stream: R,
    out: &mpsc::Sender<Outgoing>,
    state: &AppState,
    user: &UserId,
    closer: &Closer,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        let message = tokio::select! {
            () = closer.token.cancelled() => return,
            message = stream.next() => message,
        };
        let reply = match message {
            None | Some(Ok(Message::Close(_))) => return closer.close(close_code::NORMAL),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "socket read failed");
                return closer.close(close_code::NORMAL);
            }
            Some(Ok(Message::Text(text))) if text.len() > state.limits.max_frame_bytes => {
                let error = proto::ProtoError::TooLarge {
                    what: "frame",
                    limit: state.limits.max_frame_bytes,
                };
                let frame = Error::from(error).to_frame(None);
                let _ = out.try_send(Outgoing::Frame(frame.to_json()));
                let _ = out.try_send(Outgoing::Close(close_code::TOO_BIG));
                return;
            }
            Some(Ok(Message::Text(text))) => handle_text(state, user, &text).await,
            Some(Ok(Message::Binary(_))) => ServerFrame::Error {
                rid: None,
                code: ErrorCode::BadRequest,
                message: "binary frames are not accepted; send JSON text frames".into(),
                retry_after_ms: None,
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        if out.try_send(Outgoing::Frame(reply.to_json())).is_err() {
            metrics::counter!("chat_slow_client_closes_total").increment(1);
            return closer.close(close_code::POLICY);
        }
    }
}

/// Answers one text frame.
async fn handle_text(state: &AppState, user: &UserId, text: &str) -> ServerFrame {
    let (rid, frame) = match parse_client_frame(text) {
        Ok(parsed) => parsed,
        Err(err) => return ServerFrame::from_frame_error(&err),
    };
    metrics::counter!("chat_frames_total", "type" => frame_type(&frame)).increment(1);
    let answer =
        match frame {
            ClientFrame::Ping => return ServerFrame::Pong { rid },
            ClientFrame::Sync(sync) => state
                .api
                .sync(user, sync.since, sync.limit)
                .await
                .map(|result| ServerFrame::SyncResult {
                    rid: rid.clone(),
                    result,
                })
                .map_err(Error::from),
            ClientFrame::Send(request) => crate::rest::send_checked(state, user, request)
                .await
                .map(|ack| ServerFrame::Ack {
                    rid: rid.clone(),
                    ack,
                }),
        };
    answer.unwrap_or_else(|err| err.to_frame(rid))
}

fn frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Send(_) => "send",
        ClientFrame::Sync(_) => "sync",
        ClientFrame::Ping => "ping",
    }
}

async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outgoing>,
    mut head: watch::Receiver<Seq>,
    state: AppState,
    closer: Arc<Closer>,
) where
    S: Sink<Message> + Unpin,
{
    let mut goaway_sent = false;
    loop {
        let message = tokio::select! {
            () = closer.token.cancelled() => break,
            () = state.hard_stop.cancelled() => { closer.close(close_code::GOING_AWAY); break }
            () = state.draining.cancelled(), if !goaway_sent => {
                goaway_sent = true;
                Message::Text(goaway(&state).into())
            }
            changed = head.changed() => match changed {
                Ok(()) => Message::Text(ServerFrame::Notify { head: *head.borrow_and_update() }.to_json().into()),
                Err(_) => break,
            },
            outgoing = queue.recv() => match outgoing {
                Some(Outgoing::Frame(text)) => Message::Text(text.into()),
                Some(Outgoing::Close(code)) => { closer.close(code); break }
                None => break,
            },
        };
        if !write_in_time(&mut sink, message, &state, &closer).await {
            break;
        }
    }
    let frame = CloseFrame {
        code: closer.code(),
        reason: Utf8Bytes::from_static(""),
    };
    // The peer may not read even this: bounded, then the socket is dropped.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Writes one message unless the client stops reading (then closes with 1008).
async fn write_in_time<S: Sink<Message> + Unpin>(
    sink: &mut S,
    message: Message,
    state: &AppState,
    closer: &Closer,
) -> bool {
    tokio::select! {
        () = closer.token.cancelled() => false,
        written = tokio::time::timeout(state.limits.write_timeout, sink.send(message)) => match written {
            Ok(Ok(())) => true,
            Ok(Err(_)) => { closer.close(close_code::NORMAL); false }
            Err(_) => {
                metrics::counter!("chat_slow_client_closes_total").increment(1);
                closer.close(close_code::POLICY);
                false
            }
        },
    }
}

/// A `goaway` with a delay spread over the drain window, so reconnects do
/// not all land at once.
fn goaway(state: &AppState) -> String {
    let window = u64::try_from(state.drain_window.as_millis())
        .unwrap_or(10_000)
        .max(2);
    let delay = rand::rng().random_range(window / 10..window);
    ServerFrame::Goaway {
        reconnect_after_ms: delay,
    }
    .to_json()
}

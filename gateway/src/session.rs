//! One WebSocket session: a reader that checks frames as they arrive, a
//! request task that answers them in order, a writer that owns the socket,
//! bounded queues between them, and notify pushes from the hub. A client that does not read, floods frames or goes
//! silent is closed with 1008 (see `close`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_channel::mpsc;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use msg_service::storage::resilience::within;
use proto::{ClientFrame, ErrorCode, Rid, Seq, ServerFrame, UserId, parse_client_frame};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::budget::{FrameBudget, Verdict};
use crate::close::{CloseReason, Closer, close_code, for_read_error};
use crate::error::Error;
use crate::head::Head;
use crate::hub::Push;
use crate::slots::Slot;
use crate::state::AppState;

/// Requests read ahead of their answers per socket: a burst of pipelined
/// sends is seen (and rate limited) as it arrives.
const REQUESTS_AHEAD: usize = 64;

/// Senders of a session's write queue: the reader, the request task, the hub.
const WRITE_QUEUE_SENDERS: usize = 3;

/// How long a closed session still reads the client's input (see `linger`).
const LINGER: Duration = Duration::from_secs(1);

/// What the reader hands the writer.
enum Outgoing {
    Frame(String),
    Close(CloseReason),
}

/// Runs a session over any message sink and stream (a real socket, or
/// channels in tests) for `user` until either side ends it. `slot` is the
/// user's connection slot, held for as long as the session lives.
pub async fn run<S, R, E>(sink: S, stream: R, state: AppState, user: UserId, slot: Slot)
where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    // futures' channels, not tokio's: tokio's allocates a block of 32
    // slots and ~400 bytes of cache-padded state per socket up front,
    // futures' a node per queued item. Each sender adds a slot of its own,
    // so with the three (this one, the request task's, the hub's) the
    // queue holds `outgoing_queue` in all.
    let capacity = state
        .limits
        .outgoing_queue
        .saturating_sub(WRITE_QUEUE_SENDERS);
    let (mut out, queue) = mpsc::channel(capacity);
    let (pushed_to, push) = hub_push(&out);
    let registration = state.hub.register_socket(&user, Arc::clone(&push)).await;
    let me = Me {
        user: user.clone(),
        socket: registration.socket(),
        push,
    };
    metrics::gauge!("chat_ws_connections").increment(1.0);
    let closer = Arc::new(Closer::default());
    let writer = tokio::spawn(write_loop(
        sink,
        queue,
        registration.head.clone(),
        state.clone(),
        Arc::clone(&closer),
    ));
    // The one sender adds a slot to the REQUESTS_AHEAD - 1 asked for.
    let (mut requests, queued) = mpsc::channel(REQUESTS_AHEAD - 1);
    let answerer = tokio::spawn(answer_loop(
        queued,
        out.clone(),
        state.clone(),
        me,
        Arc::clone(&closer),
    ));
    let mut stream = stream;
    read_loop(&mut stream, &mut out, &mut requests, &state, &user, &closer).await;
    drop(requests);
    if let Err(err) = answerer.await {
        tracing::warn!(error = %err, "socket request task failed");
    }
    drop(out);
    drop(pushed_to);
    if let Err(err) = writer.await {
        tracing::warn!(error = %err, "socket writer task failed");
    }
    linger(&mut stream).await;
    metrics::gauge!("chat_ws_connections").decrement(1.0);
    drop(registration);
    drop(slot);
}

/// The hub's way into a session's write queue: a weak handle, since the hub
/// must not keep the queue open after the session; it works while the
/// session holds the returned sender. One shared sender behind a lock, not
/// a clone per push: every clone of a futures sender brings a slot of its
/// own, so a clone per push would leave the queue unbounded.
fn hub_push(out: &mpsc::Sender<Outgoing>) -> (Arc<Mutex<mpsc::Sender<Outgoing>>>, Push) {
    let pushed_to = Arc::new(Mutex::new(out.clone()));
    let weak = Arc::downgrade(&pushed_to);
    let push: Push = Arc::new(move |frame: &str| {
        if let Some(out) = weak.upgrade() {
            let frame = Outgoing::Frame(frame.to_owned());
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            // Best effort: a full queue drops the frame (a typing indicator).
            let _ = out.try_send(frame);
        }
    });
    (pushed_to, push)
}

async fn read_loop<R, E>(
    stream: &mut R,
    out: &mut mpsc::Sender<Outgoing>,
    requests: &mut mpsc::Sender<Request>,
    state: &AppState,
    user: &UserId,
    closer: &Closer,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let mut budget = FrameBudget::new(state.limits.frame_rate, state.limits.frame_burst);
    let idle_timeout = state.limits.idle_timeout;
    // One timer for the session, moved on only when it fires: arming a new
    // one per frame cost more than the frame's parsing.
    let idle = tokio::time::sleep(idle_timeout);
    let closed = closer.token.cancelled();
    tokio::pin!(idle, closed);
    let mut heard_at = Instant::now();
    loop {
        // Anything from the client (a pong to the writer's pings included)
        // proves it is alive; silence for the idle timeout ends the session.
        let message = tokio::select! {
            () = &mut closed => return,
            () = &mut idle => {
                let quiet_until = heard_at + idle_timeout;
                if quiet_until > Instant::now() {
                    idle.as_mut().reset(quiet_until);
                    continue;
                }
                metrics::counter!("chat_ws_idle_closes_total").increment(1);
                return closer.close(CloseReason::IDLE);
            }
            message = stream.next() => message,
        };
        heard_at = Instant::now();
        let message = match message {
            None | Some(Ok(Message::Close(_))) => return closer.close(CloseReason::NORMAL),
            Some(Err(err)) => return refuse_broken(out, closer, &err),
            Some(Ok(message)) => message,
        };
        match budget.take() {
            Verdict::Admit => {}
            Verdict::Refuse => {
                if let Some(refusal) = over_budget(&message, &budget, state)
                    && !queue_reply(out, closer, refusal)
                {
                    return;
                }
                continue;
            }
            Verdict::Close => return refuse_flood(out, closer, &budget, state),
        }
        let reply = match message {
            Message::Text(text) if text.len() > state.limits.max_frame_bytes => {
                let error = proto::ProtoError::TooLarge {
                    what: "frame",
                    limit: state.limits.max_frame_bytes,
                };
                let frame = Error::from(error).to_frame(None);
                return refuse(out, closer, frame, CloseReason::TOO_BIG);
            }
            Message::Text(text) => match admit(state, user, &text) {
                Ok(request) => {
                    // Waits while REQUESTS_AHEAD requests are queued: TCP
                    // back-pressure on a client that sends faster than it
                    // is answered.
                    tokio::select! {
                        () = &mut closed => return,
                        queued = requests.send(request) => if queued.is_err() { return },
                    }
                    continue;
                }
                Err(answer) => answer,
            },
            Message::Binary(_) => {
                bad_request("binary frames are not accepted; send JSON text frames")
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        if !queue_reply(out, closer, reply) {
            return;
        }
    }
}

/// Queues an answer for the writer; false when the session is over. A full
/// queue is a client that does not read: closed with 1008. A queue whose
/// writer has gone (the socket broke, or the gateway is stopping) just ends
/// the session, and is not counted as a slow client.
fn queue_reply(out: &mut mpsc::Sender<Outgoing>, closer: &Closer, reply: ServerFrame) -> bool {
    let Err(err) = out.try_send(Outgoing::Frame(reply.to_json())) else {
        return true;
    };
    if err.is_full() {
        metrics::counter!("chat_slow_client_closes_total").increment(1);
        closer.close(CloseReason::NOT_READING);
    } else {
        closer.close(CloseReason::NORMAL);
    }
    false
}

fn bad_request(message: &str) -> ServerFrame {
    ServerFrame::Error {
        rid: None,
        code: ErrorCode::BadRequest,
        message: message.into(),
        retry_after_ms: None,
    }
}

/// Queues a last `error` frame and the close after it. The writer sends
/// both in order, so the client reads why before the close.
/// When the queue is full the close cuts it short instead.
fn refuse(
    out: &mut mpsc::Sender<Outgoing>,
    closer: &Closer,
    frame: ServerFrame,
    reason: CloseReason,
) {
    let _ = out.try_send(Outgoing::Frame(frame.to_json()));
    if out.try_send(Outgoing::Close(reason)).is_err() {
        closer.close(reason);
    }
}

/// A frame over the socket's budget is not served. A text frame is answered
/// `rate_limited`, with its `rid` when it has one and how long to wait
/// before sending again; a control frame (a ping, a pong answering the
/// server's ping) has nothing to answer with, and is only counted.
fn over_budget(message: &Message, budget: &FrameBudget, state: &AppState) -> Option<ServerFrame> {
    metrics::counter!("chat_ws_frame_refusals_total").increment(1);
    let Message::Text(text) = message else {
        return None;
    };
    let rid = (text.len() <= state.limits.max_frame_bytes)
        .then(|| proto::rid_of_frame(text))
        .flatten();
    Some(budget_error(
        rid,
        budget,
        state,
        "wait retry_after_ms before sending again",
    ))
}

/// The client went on sending while refused: `rate_limited`, then 1008.
fn refuse_flood(
    out: &mut mpsc::Sender<Outgoing>,
    closer: &Closer,
    budget: &FrameBudget,
    state: &AppState,
) {
    metrics::counter!("chat_ws_frame_flood_closes_total").increment(1);
    let frame = budget_error(None, budget, state, "closing");
    refuse(out, closer, frame, CloseReason::TOO_MANY_FRAMES);
}

fn budget_error(
    rid: Option<Rid>,
    budget: &FrameBudget,
    state: &AppState,
    then: &str,
) -> ServerFrame {
    // Rounded up: a client that waits as told finds its token back.
    let retry = u64::try_from(budget.retry_after().as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    ServerFrame::Error {
        rid,
        code: ErrorCode::RateLimited,
        message: format!(
            "more than {} frames per second (bursts of {}); {then}",
            state.limits.frame_rate, state.limits.frame_burst
        ),
        retry_after_ms: Some(retry.max(1)),
    }
}

/// A read failed: invalid UTF-8 and oversized messages get an `error`
/// frame and their close code; a dropped connection just ends.
fn refuse_broken<E: std::error::Error + 'static>(
    out: &mut mpsc::Sender<Outgoing>,
    closer: &Closer,
    err: &E,
) {
    tracing::debug!(error = %err, "socket read failed");
    let reason = for_read_error(err);
    let frame = match reason.code {
        close_code::NORMAL => return closer.close(reason),
        close_code::TOO_BIG => ServerFrame::Error {
            rid: None,
            code: ErrorCode::TooLarge,
            message: reason.reason.into(),
            retry_after_ms: None,
        },
        _ => bad_request(reason.reason),
    };
    refuse(out, closer, frame, reason);
}

/// The closing handshake: after its close frame the server reads (and
/// drops) what the client still sends, until its close reply, for at most
/// a second. Closing a socket with unread input makes the kernel send a
/// reset, which can destroy the error and close frames before the client
/// reads them (a flooding or oversized sender would never learn why).
async fn linger<R, E>(stream: &mut R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let drain = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Who a session is, as its answers need it.
struct Me {
    user: UserId,
    /// Its registration number in the hub (for presence watches).
    socket: Option<u64>,
    /// Pushes a frame to this socket.
    push: Push,
}

/// A parsed frame waiting for its answer, in arrival order. The frame is
/// boxed: the request queue keeps an empty node of this size for every
/// open socket, idle ones included (~150 bytes unboxed, ~40 boxed).
struct Request {
    rid: Option<Rid>,
    frame: Box<ClientFrame>,
}

/// Checks one text frame as it arrives: the request to queue, or the answer
/// at once (a bad frame, a ping, or a send over the user's send rate). The
/// rate is charged on arrival, not when the send's turn comes, so that a
/// client pipelining a burst meets the limit however slow the store is.
fn admit(state: &AppState, user: &UserId, text: &str) -> Result<Request, ServerFrame> {
    let (rid, frame) =
        parse_client_frame(text).map_err(|err| ServerFrame::from_frame_error(&err))?;
    state.hot_metrics.frame(&frame);
    match frame {
        ClientFrame::Ping => Err(ServerFrame::Pong { rid }),
        ClientFrame::Send(_) => match crate::rest::admit_send(state, user) {
            Ok(()) => Ok(Request {
                rid,
                frame: Box::new(frame),
            }),
            Err(refused) => Err(refused.to_frame(rid)),
        },
        ClientFrame::Sync(_)
        | ClientFrame::Typing(_)
        | ClientFrame::Presence { .. }
        | ClientFrame::Read { .. } => Ok(Request {
            rid,
            frame: Box::new(frame),
        }),
    }
}

/// Answers the queued requests one after another until the reader is done
/// or the session closes.
async fn answer_loop(
    mut queued: mpsc::Receiver<Request>,
    mut out: mpsc::Sender<Outgoing>,
    state: AppState,
    me: Me,
    closer: Arc<Closer>,
) {
    let closed = closer.token.cancelled();
    tokio::pin!(closed);
    loop {
        let request = tokio::select! {
            () = &mut closed => return,
            request = queued.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let Some(reply) = answer(&state, &me, request).await else {
            continue;
        };
        if !queue_reply(&mut out, &closer, reply) {
            return;
        }
    }
}

/// Answers one admitted request (a typing indicator only when refused).
async fn answer(state: &AppState, me: &Me, request: Request) -> Option<ServerFrame> {
    let Request { rid, frame } = request;
    let frame = *frame;
    let user = &me.user;
    let answer =
        match frame {
            ClientFrame::Ping => return Some(ServerFrame::Pong { rid }),
            ClientFrame::Presence { users, watch } => {
                presence(state, me, &users, watch).await.map(|presence| {
                    ServerFrame::PresenceResult {
                        rid: rid.clone(),
                        presence,
                    }
                })
            }
            ClientFrame::Typing(conv) => {
                return state
                    .typing
                    .typing(&state.api, user, conv)
                    .await
                    .err()
                    .map(|err| err.to_frame(rid));
            }
            ClientFrame::Sync(sync) => state
                .api
                .sync(user, sync.since, sync.limit)
                .await
                .map(|result| ServerFrame::SyncResult {
                    rid: rid.clone(),
                    result,
                })
                .map_err(Error::from),
            ClientFrame::Read { conv, conv_seq } => state
                .api
                .mark_read(user, &conv, conv_seq)
                .await
                .map(|marker| ServerFrame::ReadAck {
                    rid: rid.clone(),
                    conv_id: conv,
                    conv_seq: marker,
                })
                .map_err(Error::from),
            ClientFrame::Send(request) => crate::rest::send_checked(state, user, request)
                .await
                .map(|ack| ServerFrame::Ack {
                    rid: rid.clone(),
                    ack,
                }),
        };
    Some(answer.unwrap_or_else(|err| err.to_frame(rid)))
}

/// A presence request: the answer, and with `watch` the socket watches
/// the users it may see (a later request replaces the list).
async fn presence(
    state: &AppState,
    me: &Me,
    users: &[UserId],
    watch: bool,
) -> Result<Vec<proto::PresenceOf>, Error> {
    let answer = state.presences.query(&state.api, &me.user, users).await?;
    if let Some(socket) = me.socket {
        // Only the users it may see: a stranger's changes never reach it.
        let watched: Vec<_> = answer
            .iter()
            .filter(|(_, visible)| watch && *visible)
            .map(|(seen, _)| seen.clone())
            .collect();
        state.hub.watch(socket, &me.push, &watched);
    }
    Ok(answer.into_iter().map(|(seen, _)| seen).collect())
}

async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outgoing>,
    mut head: watch::Receiver<Head>,
    state: AppState,
    closer: Arc<Closer>,
) where
    S: Sink<Message> + Unpin,
{
    let mut goaway_sent = false;
    // The head of the last notify sent: the next carries only the entries
    // above it (the client took the ones before or synced past them).
    let mut notified: Seq = 0;
    // Pings make a live client's WebSocket stack answer with a pong, which
    // the reader counts as a sign of life; three per idle timeout.
    let mut pings = tokio::time::interval(ping_interval(state.limits.idle_timeout));
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.reset();
    // Made once, not per frame: each makes and drops a waiter on its token.
    let closed = closer.token.cancelled();
    let hard_stop = state.hard_stop.cancelled();
    let draining = state.draining.cancelled();
    tokio::pin!(closed, hard_stop, draining);
    loop {
        let message = tokio::select! {
            () = &mut closed => break,
            () = &mut hard_stop => { closer.close(CloseReason::GOING_AWAY); break }
            _ = pings.tick() => Message::Ping(axum::body::Bytes::new()),
            () = &mut draining, if !goaway_sent => {
                goaway_sent = true;
                Message::Text(goaway(&state).into())
            }
            changed = head.changed() => match changed {
                Ok(()) => {
                    let now = head.borrow_and_update();
                    let frame = now.notify_frame(notified);
                    notified = now.seq;
                    Message::Text(frame.into())
                }
                Err(_) => break,
            },
            outgoing = queue.next() => match outgoing {
                Some(Outgoing::Frame(text)) => Message::Text(text.into()),
                Some(Outgoing::Close(reason)) => { closer.close(reason); break }
                None => break,
            },
        };
        if !write_in_time(&mut sink, message, &state, &closer, &mut closed).await {
            break;
        }
    }
    let reason = closer.reason();
    let frame = CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from_static(reason.reason),
    };
    // The peer may not read even this: bounded, then the socket is dropped.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Writes one message unless the client stops reading (then closes with
/// 1008) or the session is closed meanwhile (`closed`, the writer's own
/// wait for `closer`).
async fn write_in_time<S, C>(
    sink: &mut S,
    message: Message,
    state: &AppState,
    closer: &Closer,
    closed: &mut C,
) -> bool
where
    S: Sink<Message> + Unpin,
    C: Future<Output = ()> + Unpin,
{
    tokio::select! {
        () = closed => false,
        written = within(state.limits.write_timeout, sink.send(message)) => match written {
            Ok(Ok(())) => true,
            Ok(Err(_)) => { closer.close(CloseReason::NORMAL); false }
            Err(_) => {
                metrics::counter!("chat_slow_client_closes_total").increment(1);
                closer.close(CloseReason::NOT_READING);
                false
            }
        },
    }
}

/// A third of the idle timeout, so two pongs may be lost before it fires.
fn ping_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 3).max(Duration::from_millis(10))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hubs_push_reaches_the_queue_only_while_the_session_holds_it() {
        let (out, mut queue) = mpsc::channel(8);
        let (pushed_to, push) = hub_push(&out);
        push("one");
        assert!(matches!(queue.next().await, Some(Outgoing::Frame(f)) if f == "one"));

        drop((out, pushed_to));
        push("two");
        let ended = tokio::time::timeout(Duration::from_secs(5), queue.next()).await;
        assert!(
            matches!(ended, Ok(None)),
            "the queue ended though the hub still holds its push"
        );
        drop(push);
    }

    #[test]
    fn a_full_write_queue_closes_as_not_reading_and_a_gone_writer_just_ends() {
        let pong = || ServerFrame::Pong { rid: None };
        // Capacity 0: the sender's own slot only.
        let (mut out, _queue) = mpsc::channel(0);
        let closer = Closer::default();
        assert!(queue_reply(&mut out, &closer, pong()));
        assert!(!queue_reply(&mut out, &closer, pong()));
        assert_eq!(closer.reason(), CloseReason::NOT_READING);

        let (mut out, queue) = mpsc::channel(8);
        drop(queue);
        let closer = Closer::default();
        assert!(!queue_reply(&mut out, &closer, pong()));
        assert_eq!(closer.reason(), CloseReason::NORMAL);
    }

    /// A client that pipelines sends holds up to `REQUESTS_AHEAD` queued
    /// requests: each stays a few words, whatever the largest client frame
    /// is (a frame is boxed only once it is admitted).
    #[test]
    fn a_queued_request_is_small_whatever_the_frame() {
        let (request, frame) = (size_of::<Request>(), size_of::<ClientFrame>());
        assert!(request <= 48, "a request is {request} bytes");
        assert!(frame > request, "boxing pays: a frame is {frame} bytes");
    }
}

//! A client that does not read: the server bounds what it queues for it and
//! closes it (1008), while everyone else keeps chatting.
//!
//! What fills the server's outgoing queue: the session's reader answers every
//! request in order and only `try_send`s the reply to the writer. A client
//! that pipelines requests and never reads first fills the kernel buffers
//! (its receive buffer, kept small here, and the server's send buffer), then
//! the writer blocks, then the 256-frame queue fills and the reader closes
//! the socket; the writer's 10 s timeout is the other way out. Sync replies
//! of ~64 KiB fill the kernel buffers within a few dozen requests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, WsClient, msg_ids, spawn_app_with, u64_of};

/// Big entries in the slow user's inbox, so each sync reply is ~64 KiB.
const BIG_ENTRIES: usize = 4;
const BIG_BODY: usize = 16 * 1024;
/// Syncs pipelined at once: far more than the kernel buffers and the
/// 256-frame queue hold, given replies of ~64 KiB.
const PIPELINED: u64 = 1_000;
/// The server must have closed the slow client within this time.
const DEADLINE: Duration = Duration::from_secs(60);

/// A WebSocket on a socket with a small receive buffer, never read from.
async fn stalled_socket(app: &TestApp, user: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    // A fixed, small buffer (no autotuning) so the server's writes block soon.
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("setting SO_RCVBUF");
    let tcp = socket.connect(app.addr).await.expect("connecting");
    let url = app.ws_url(&format!("token={}&device=stalled", app.token(user)));
    let (ws, _) = tokio::time::timeout(
        crate::helpers::WAIT,
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .expect("the handshake finishes in time")
    .expect("the handshake succeeds");
    ws
}

/// Pipelines syncs, then keeps sending one every 20 ms until a write fails
/// (the server dropped the connection); how many were written. Writes alone
/// cannot tell: the kernel buffers absorb megabytes of small requests.
async fn pipeline_syncs_without_reading(ws: &mut WebSocketStream<TcpStream>) -> u64 {
    let request = json!({"type": "sync", "since": 0, "limit": BIG_ENTRIES}).to_string();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for sent in 0.. {
        if sent >= PIPELINED {
            pace.tick().await;
        }
        if ws.send(Message::text(request.clone())).await.is_err() {
            return sent;
        }
    }
    unreachable!("the loop returns when a write fails")
}

/// Alice sends bob message `n`: acked, bob notified, and bob's sync has it.
async fn exchange(alice: &mut WsClient, bob: &mut WsClient, bob_seq: &mut u64, n: u32) {
    let id = format!("live-{n}");
    alice.send("bob", &id, "are you still there?").await;
    let head = bob.wait_notify(*bob_seq + 1).await;
    let page = bob.sync(*bob_seq).await;
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(msg_ids(entries), [id], "bob's new entries: {page}");
    assert_eq!(u64_of(&page, "head"), head);
    *bob_seq = head;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_while_other_clients_keep_chatting() {
    // A frame budget large enough for the pipelined syncs, so what stops the
    // slow client is the outgoing queue under test, not the flood guard.
    let app = spawn_app_with(&["--ws-frame-burst", "100000"]).await;
    let mut filler = app.ws("slow", "filler").await;
    let big = "x".repeat(BIG_BODY);
    for i in 0..BIG_ENTRIES {
        filler.send("sink", &format!("big-{i}"), &big).await;
    }
    filler.close().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;

    let mut slow_ws = stalled_socket(&app, "slow").await;
    let stuck = tokio::spawn(async move {
        let sent = pipeline_syncs_without_reading(&mut slow_ws).await;
        (sent, slow_ws)
    });
    // Chat at 10 messages a second (under the send rate limit) until the
    // slow client is dropped, then once more.
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let (mut bob_seq, mut rounds) = (0, 0);
    while !stuck.is_finished() {
        assert!(
            started.elapsed() < DEADLINE,
            "the slow client was not closed within {DEADLINE:?}"
        );
        exchange(&mut alice, &mut bob, &mut bob_seq, rounds).await;
        rounds += 1;
        pace.tick().await;
    }
    exchange(&mut alice, &mut bob, &mut bob_seq, rounds).await;
    let (sent, mut slow_ws) = stuck.await.expect("the slow client task does not panic");

    // What the slow client finds when it finally reads: some replies, then
    // a 1008 close or a dropped connection, never all of its answers.
    let mut replies = 0;
    let ending = loop {
        let message = tokio::time::timeout(crate::helpers::WAIT, slow_ws.next())
            .await
            .expect("the slow socket ends in time");
        match message {
            Some(Ok(Message::Text(_))) => replies += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(
        replies < sent,
        "the slow client got all {sent} replies ({ending:?}): it was never closed"
    );
    assert!(
        matches!(ending, None | Some(1008)),
        "closed with {ending:?} instead of 1008"
    );
    println!("slow client: {sent} requests, {replies} replies read, {rounds} rounds meanwhile");

    // It reconnects and syncs, as a real client would.
    let mut slow = app.ws("slow", "stalled").await;
    let entries = slow.sync_all(0).await;
    assert_eq!(entries.len(), BIG_ENTRIES);
}

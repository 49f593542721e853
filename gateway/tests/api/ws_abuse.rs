//! Sockets that abuse the connection rather than the API: too many per
//! user, frames (pings) in a tight loop, silence, text that is not UTF-8,
//! binary frames. Each is refused with a clear code and others are served.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::upgrade_status;
use crate::helpers::{TestApp, WAIT, spawn_app, spawn_app_with, status_and_json};
use crate::raw_ws::{RawWs, opcode};
use crate::ws_client::WsClient;

#[tokio::test]
async fn the_seventeenth_connection_of_a_user_is_refused_with_429_by_default() {
    let app = spawn_app().await;
    let mut open = Vec::new();
    for i in 0..16 {
        open.push(app.ws("alice", &format!("d{i}")).await);
    }
    let url = app.ws_url(&format!("token={}&device=d16", app.token("alice")));
    assert_eq!(
        upgrade_status(url).await,
        429,
        "the 17th is refused before the upgrade"
    );
    let request = app
        .http
        .get(app.url("/v1/ws"))
        .bearer_auth(app.token("alice"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .timeout(WAIT)
        .send()
        .await
        .expect("the request completes");
    assert!(request.headers().get("retry-after").is_some());
    let (status, body) = status_and_json(request).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    // Other users are not affected, and a waiting long poll counts too.
    app.ws("bob", "phone").await.close().await;
    let poll = app
        .get("/v1/sync?wait_ms=1000", Some(&app.token("alice")))
        .await;
    assert_eq!(poll.status().as_u16(), 429, "a long poll needs a free slot");
    // The existing sockets still work.
    assert_eq!(open[0].sync(0).await["head"], 0);
}

#[tokio::test]
async fn a_closed_connection_gives_its_slot_back() {
    let app = spawn_app_with(&["--max-connections-per-user", "1"]).await;
    let first = app.ws("alice", "phone").await;
    let url = app.ws_url(&format!("token={}&device=laptop", app.token("alice")));
    assert_eq!(upgrade_status(url.clone()).await, 429);
    first.close().await;
    // The slot is freed just after the close frame is sent: poll, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while upgrade_status(url.clone()).await != 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::task::yield_now().await;
    }
}

/// What a flooding client saw: pongs, the other frames, and the ending.
struct Flooded {
    pongs: usize,
    others: Vec<Value>,
    close: Option<u16>,
}

/// A client of `user` that sends `message` in a tight loop from one task
/// while another reads, until the server ends the connection.
async fn flood(app: &TestApp, user: &str, message: Message) -> Flooded {
    let url = app.ws_url(&format!("token={}&device=flood", app.token(user)));
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake finishes in time")
        .expect("the handshake succeeds");
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..1_000_000 {
            if sink.send(message.clone()).await.is_err() {
                return;
            }
        }
        panic!("the server let a million frames through");
    });
    let mut seen = Flooded {
        pongs: 0,
        others: Vec::new(),
        close: None,
    };
    loop {
        let next = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the flood ends in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "pong" {
                    seen.pongs += 1;
                } else {
                    seen.others.push(frame);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                seen.close = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    writer.abort();
    seen
}

#[tokio::test]
async fn a_client_pinging_in_a_tight_loop_is_closed_with_1008_while_others_are_served() {
    // A burst of 100: its pongs and the refusals fit in the socket's
    // outgoing queue (256) even if none is written before the close.
    let app = spawn_app_with(&["--ws-frame-burst", "100"]).await;
    let mut bob = app.ws("bob", "phone").await;
    for message in [
        Message::text(r#"{"type":"ping"}"#),
        Message::Ping(Vec::new().into()),
    ] {
        let what = format!("{message:?}");
        let text = matches!(message, Message::Text(_));
        let flooding = flood(&app, "mallory", message);
        // Bob is answered while the flood runs.
        let (seen, pong) = tokio::join!(flooding, bob.request(json!({"type": "ping"})));
        assert_eq!(pong["type"], "pong");
        // Past the burst each frame is refused (a text frame answered, a
        // control frame only counted); 50 refusals later the socket is
        // closed, after an error that says why.
        let answered = if text { 51..=61 } else { 1..=1 };
        assert!(
            answered.contains(&seen.others.len()),
            "{what}: {answered:?} errors (50 refusals, what refilled meanwhile, the close): {}",
            seen.others.len()
        );
        for error in &seen.others {
            assert_eq!(error["code"], "rate_limited", "{what}: {error}");
            assert!(
                error["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1),
                "{what}: {error}"
            );
        }
        assert_eq!(seen.close, Some(1008), "{what}");
        assert!(
            seen.pongs <= 110,
            "{what}: at most the burst of 100 (and its refill) is answered: {}",
            seen.pongs
        );
    }
    assert_eq!(bob.request(json!({"type": "ping"})).await["type"], "pong");
}

/// `frame` as a request, sent again after the wait each `rate_limited`
/// answer asks for: the reply, and how many times it was refused.
async fn request_as_told(client: &mut WsClient, frame: &Value) -> (Value, u32) {
    let mut refused = 0;
    loop {
        let reply = client.request(frame.clone()).await;
        if reply["code"] != "rate_limited" {
            return (reply, refused);
        }
        refused += 1;
        let wait = reply["retry_after_ms"]
            .as_u64()
            .expect("a refusal says how long to wait");
        // The wait the server asked for is the behaviour under test.
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

#[tokio::test]
async fn a_catch_up_past_the_frame_burst_that_waits_as_told_is_served_to_the_end() {
    // 13 frames against a burst of 5 and 5 a second: unless each round
    // trip took 200 ms, some are refused.
    let app = spawn_app_with(&["--ws-frame-rate", "5", "--ws-frame-burst", "5"]).await;
    // Twelve messages for bob, sent over REST: alice's frames are not the test.
    let token = app.token("alice");
    for i in 0..12 {
        let body = json!({"client_msg_id": format!("m{i}"), "body": format!("hi {i}")});
        let (status, ack) = status_and_json(
            app.post_json("/v1/conversations/dm:alice:bob/messages", &token, &body)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{ack}");
    }
    // Bob pages through them one entry per `sync`, as fast as he is answered:
    // past the burst of 5, a refused page is answered by its rid.
    let mut bob = app.ws("bob", "phone").await;
    let (mut since, mut bodies, mut refusals) = (0, Vec::new(), 0);
    while bodies.len() < 12 {
        let sync = json!({"type": "sync", "since": since, "limit": 1});
        let (page, refused) = request_as_told(&mut bob, &sync).await;
        refusals += refused;
        let entries = page["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("a sync result: {page}"));
        let entry = entries
            .first()
            .expect("one entry per page until all are read");
        since = entry["seq"].as_u64().expect("seq");
        bodies.push(entry["body"].as_str().expect("a body").to_owned());
    }
    let expected: Vec<String> = (0..12).map(|i| format!("hi {i}")).collect();
    assert_eq!(bodies, expected);
    assert!(refusals > 0, "the catch-up went past the burst");
    let (pong, _) = request_as_told(&mut bob, &json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "the socket is still open");
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_with_1008_after_the_idle_timeout() {
    let app = spawn_app_with(&["--ws-idle-timeout-secs", "1"]).await;
    let path = format!("/v1/ws?token={}&device=silent", app.token("alice"));
    let started = tokio::time::Instant::now();
    let mut silent = RawWs::connect(app.addr, &path).await;
    let (before, close) = silent.until_close().await;
    assert_eq!(close, Some((1008, "idle timeout".to_owned())));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        before.iter().any(|f| f.opcode == 0x9),
        "the server pinged before giving up: {before:?}"
    );
}

#[tokio::test]
async fn an_idle_client_whose_stack_answers_pings_stays_connected() {
    let app = spawn_app_with(&["--ws-idle-timeout-secs", "1"]).await;
    let mut alice = app.ws("alice", "phone").await;
    // Reading lets tungstenite answer the server's pings; three idle
    // timeouts pass with no frame and no close.
    let quiet = tokio::time::timeout(Duration::from_secs(3), alice.try_next_frame()).await;
    assert!(
        quiet.is_err(),
        "the socket stayed quiet and open: {quiet:?}"
    );
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_gets_bad_request_then_close_1007() {
    let app = spawn_app().await;
    let path = format!("/v1/ws?token={}&device=raw", app.token("alice"));
    let mut raw = RawWs::connect(app.addr, &path).await;
    raw.send(opcode::TEXT, b"{\"type\":\"ping\",\"rid\":\"\xff\xfe\"}")
        .await;
    let (before, close) = raw.until_close().await;
    let texts: Vec<Value> = before
        .iter()
        .filter(|f| f.opcode == opcode::TEXT)
        .map(|f| serde_json::from_slice(&f.payload).expect("server frames are JSON"))
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["code"], "bad_request");
    assert_eq!(close.map(|(code, _)| code), Some(1007));
}

#[tokio::test]
async fn a_binary_frame_is_refused_with_bad_request_and_the_socket_stays_usable() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let frame = br#"{"type":"ping","rid":1}"#.to_vec();
    alice
        .send_message(Message::Binary(frame.into()))
        .await
        .expect("sent");
    let reply = alice.try_next_frame().await.expect("a reply");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

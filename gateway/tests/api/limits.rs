//! The limits of PROTOCOL.md at the edge, each pushed past: frame and body
//! size, sync limit, group size, send rate, connections per user, frame
//! floods (pings in a tight loop), silent sockets, invalid UTF-8, binary.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::upgrade_status;
use crate::helpers::{Ended, TestApp, WAIT, WsClient, spawn_app, spawn_app_with, status_and_json};
use crate::raw_ws::{RawWs, opcode};

/// The server's answer to a frame it refused, then how the socket ended.
async fn refusal_and_close(client: &mut WsClient) -> (Value, Ended) {
    let error = client
        .try_next_frame()
        .await
        .expect("an error frame before the close");
    (error, client.closed_by_server().await)
}

#[tokio::test]
async fn a_frame_over_64_kib_gets_too_large_then_close_1009() {
    let app = spawn_app().await;
    // Just over the limit (read, then refused) and far over it (cut off by
    // the WebSocket layer): the same answer either way.
    for size in [64 * 1024 + 1, 1024 * 1024] {
        let mut client = app.ws("alice", "phone").await;
        let body = "x".repeat(size);
        let frame = json!({"type": "send", "to": "bob", "client_msg_id": "big", "body": body});
        client
            .send_message(Message::text(frame.to_string()))
            .await
            .expect("sent");
        let (error, ended) = refusal_and_close(&mut client).await;
        assert_eq!(error["code"], "too_large", "{size} bytes: {error}");
        assert!(
            matches!(ended, Ended::Closed(Some(1009))),
            "{size} bytes: {ended:?}"
        );
    }
    // Nothing was stored.
    assert!(app.ws("bob", "phone").await.sync_all(0).await.is_empty());
}

#[tokio::test]
async fn a_rest_body_over_64_kib_is_413_and_a_non_json_body_is_400() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let path = "/v1/conversations/dm:alice:bob/messages";
    let body = json!({"client_msg_id": "big", "body": "x".repeat(70 * 1024)});
    let (status, error) = status_and_json(app.post_json(path, &token, &body).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("too_large")),
        "{error}"
    );
    let plain = app
        .http
        .post(app.url(path))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(r#"{"client_msg_id":"c","body":"hi"}"#)
        .timeout(WAIT)
        .send()
        .await
        .expect("the request completes");
    let (status, error) = status_and_json(plain).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("bad_request")),
        "{error}"
    );
}

#[tokio::test]
async fn a_sync_limit_above_500_returns_500_entries_and_a_bad_limit_is_bad_request() {
    let app = spawn_app_with(&[
        "--send-rate",
        "100000",
        "--send-burst",
        "100000",
        "--ws-frame-burst",
        "100000",
    ])
    .await;
    let mut alice = app.ws("alice", "phone").await;
    // 510 sends pipelined, then their acks.
    for i in 0..510 {
        let frame = json!({"type": "send", "rid": i, "to": "bob", "client_msg_id": format!("m{i}"), "body": "hi"});
        alice.send_frame(&frame).await;
    }
    for _ in 0..510 {
        assert_eq!(alice.next_frame_of_type("ack").await["type"], "ack");
    }
    let page = alice
        .request(json!({"type": "sync", "since": 0, "limit": 1_000_000}))
        .await;
    assert_eq!(
        page["entries"].as_array().map(Vec::len),
        Some(500),
        "capped at 500"
    );
    assert_eq!(page["more"], true);
    let rest = app
        .get("/v1/sync?since=0&limit=1000000", Some(&app.token("alice")))
        .await;
    let (status, rest) = status_and_json(rest).await;
    assert_eq!(status, 200);
    assert_eq!(rest["entries"].as_array().map(Vec::len), Some(500));
    for limit in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("10"),
        json!(18_446_744_073_709_551_616_f64),
    ] {
        let reply = alice
            .request(json!({"type": "sync", "since": 0, "limit": limit}))
            .await;
        assert_eq!(reply["code"], "bad_request", "limit {limit}: {reply}");
    }
    for query in ["limit=0", "limit=-1", "limit=1.5", "since=abc"] {
        let response = app
            .get(&format!("/v1/sync?{query}"), Some(&app.token("alice")))
            .await;
        assert_eq!(response.status().as_u16(), 400, "{query}");
    }
}

#[tokio::test]
async fn a_group_holds_at_most_500_members_the_creator_included() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let users = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let (status, group) = status_and_json(
        app.post_json("/v1/conversations", &token, &json!({"members": users(499)}))
            .await,
    )
    .await;
    assert_eq!(status, 201, "499 + alice = 500");
    let group = group["conv_id"].as_str().expect("an id").to_owned();
    let (status, error) = status_and_json(
        app.post_json("/v1/conversations", &token, &json!({"members": users(500)}))
            .await,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("bad_request")),
        "501: {error}"
    );
    let add = app
        .post_json(
            &format!("/v1/conversations/{group}/members"),
            &token,
            &json!({"members": ["one-more"]}),
        )
        .await;
    assert_eq!(add.status().as_u16(), 400, "the 501st member is refused");
}

#[tokio::test]
async fn sends_past_the_per_user_bucket_are_rate_limited_and_not_stored() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    for i in 0..80 {
        let frame = json!({"type": "send", "rid": i, "to": "bob", "client_msg_id": format!("m{i}"), "body": "hi"});
        alice.send_frame(&frame).await;
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 80 {
        let frame = alice.try_next_frame().await.expect("a reply");
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => {
                assert!(frame["retry_after_ms"].as_u64().is_some(), "{frame}");
                limited += 1;
            }
            (Some("notify"), _) => {}
            _ => panic!("unexpected reply {frame}"),
        }
    }
    assert!(
        (50..80).contains(&acked),
        "the burst of 50 (and a little refill) passes: {acked}"
    );
    assert!(limited > 0);
    let stored = app.ws("bob", "phone").await.sync_all(0).await;
    assert_eq!(stored.len(), acked, "only acked sends are stored");
    let rest = app
        .post_json(
            "/v1/conversations/dm:alice:bob/messages",
            &app.token("alice"),
            &json!({"client_msg_id": "r", "body": "hi"}),
        )
        .await;
    assert_eq!(rest.status().as_u16(), 429);
    assert!(
        rest.headers().get("retry-after").is_some(),
        "429 carries Retry-After"
    );
}

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
    let app = spawn_app().await;
    let mut bob = app.ws("bob", "phone").await;
    for message in [
        Message::text(r#"{"type":"ping"}"#),
        Message::Ping(Vec::new().into()),
    ] {
        let what = format!("{message:?}");
        let flooding = flood(&app, "mallory", message);
        // Bob is answered while the flood runs.
        let (seen, pong) = tokio::join!(flooding, bob.request(json!({"type": "ping"})));
        assert_eq!(pong["type"], "pong");
        assert_eq!(
            seen.others.len(),
            1,
            "{what}: one error frame says why: {:?}",
            seen.others
        );
        assert_eq!(
            seen.others[0]["code"], "rate_limited",
            "{what}: {:?}",
            seen.others
        );
        assert_eq!(seen.close, Some(1008), "{what}");
        assert!(
            seen.pongs <= 210,
            "{what}: at most the burst of 200 (and its refill) is answered: {}",
            seen.pongs
        );
    }
    assert_eq!(bob.request(json!({"type": "ping"})).await["type"], "pong");
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

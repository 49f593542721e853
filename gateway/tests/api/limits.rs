//! The size and rate limits of PROTOCOL.md at the edge, each pushed past:
//! frame and body size, sync limit, group size, sends per user.

use proto::UserId;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Ended, WAIT, WsClient, spawn_app, spawn_app_with, status_and_json};

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

/// Reads the replies to `sends` pipelined sends: how many were acked and
/// how many refused `rate_limited` (each with its `retry_after_ms`).
async fn acks_and_refusals(client: &mut WsClient, sends: usize) -> (usize, usize) {
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < sends {
        let frame = client.try_next_frame().await.expect("a reply");
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
    (acked, limited)
}

#[tokio::test]
async fn sends_past_the_per_user_bucket_are_rate_limited_and_not_stored() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let started = std::time::Instant::now();
    for i in 0..80 {
        let frame = json!({"type": "send", "rid": i, "to": "bob", "client_msg_id": format!("m{i}"), "body": "hi"});
        alice.send_frame(&frame).await;
    }
    let (acked, limited) = acks_and_refusals(&mut alice, 80).await;
    assert!(
        (50..80).contains(&acked),
        "the burst of 50 (and a little refill) passes: {acked}"
    );
    assert!(limited > 0);
    let stored = app.ws("bob", "phone").await.sync_all(0).await;
    assert_eq!(stored.len(), acked, "only acked sends are stored");

    // REST sends draw on the same budget: more of them at once than the
    // bucket can have refilled since the burst (20/s) meet a 429.
    let refill = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    let token = app.token("alice");
    let sends = (0..refill + 5).map(|i| {
        let body = json!({"client_msg_id": format!("r{i}"), "body": "hi"});
        let (app, token) = (&app, &token);
        async move {
            app.post_json("/v1/conversations/dm:alice:bob/messages", token, &body)
                .await
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let refused = answers.iter().find(|r| r.status().as_u16() == 429);
    let refused = refused.expect("a REST send past the shared budget is refused");
    assert!(
        refused.headers().get("retry-after").is_some(),
        "429 carries Retry-After"
    );
}

/// The send rate is charged when a frame arrives, not when its turn comes:
/// sends to a large group take long enough that, charged at their turn,
/// the bucket would refill and a pipelined burst of 80 would all pass.
#[tokio::test]
async fn a_pipelined_burst_is_rate_limited_on_arrival_however_slow_the_sends_are() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let members: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    let (_, group) = status_and_json(
        app.post_json("/v1/conversations", &token, &json!({"members": members}))
            .await,
    )
    .await;
    let group = group["conv_id"].as_str().expect("a group id").to_owned();
    let mut alice = app.ws("alice", "phone").await;
    let started = std::time::Instant::now();
    for i in 0..80 {
        let frame = json!({"type": "send", "rid": i, "conv_id": group, "client_msg_id": format!("g{i}"), "body": "hi"});
        alice.send_frame(&frame).await;
    }
    let (acked, limited) = acks_and_refusals(&mut alice, 80).await;
    let took = started.elapsed();
    assert!(
        limited >= 20,
        "80 pipelined sends answered over {took:?}: {acked} acked, {limited} rate limited"
    );
}

#[tokio::test]
async fn a_user_past_the_history_rate_gets_429_after_a_delay_while_others_are_served() {
    let app = spawn_app_with(&["--history-rate", "1", "--history-burst", "2"]).await;
    let path = "/v1/conversations/dm:alice:bob/messages";
    let alice = app.token("alice");
    for _ in 0..2 {
        assert_eq!(
            app.get(path, Some(&alice)).await.status(),
            200,
            "within the burst"
        );
    }
    let asked = std::time::Instant::now();
    let refused = app.get(path, Some(&alice)).await;
    assert_eq!(refused.status(), 429);
    assert!(
        asked.elapsed() >= std::time::Duration::from_millis(500),
        "the refusal waits (half to one and a half seconds), so retrying at once cannot flood"
    );
    assert!(refused.headers().contains_key("retry-after"));
    let (_, error) = status_and_json(refused).await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    let bob = app.get(path, Some(&app.token("bob"))).await;
    assert_eq!(bob.status(), 200, "another user has his own rate");
}

#[tokio::test]
async fn a_user_with_four_history_reads_in_flight_gets_429_while_others_are_served() {
    let app = spawn_app().await;
    let path = "/v1/conversations/dm:alice:bob/messages";
    let alice = UserId::parse("alice").expect("a valid id");
    // Four reads of alice in flight: held here instead of a slow store.
    let held: Vec<_> = (0..4)
        .map(|_| {
            app.state()
                .history_slots
                .try_take(&alice)
                .expect("a free slot")
        })
        .collect();

    let refused = app.get(path, Some(&app.token("alice"))).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let (_, error) = status_and_json(refused).await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    let bob = app.get(path, Some(&app.token("bob"))).await;
    assert_eq!(bob.status(), 200, "another user is served");

    drop(held);
    let served = app.get(path, Some(&app.token("alice"))).await;
    assert_eq!(served.status(), 200, "the slots came back");
}

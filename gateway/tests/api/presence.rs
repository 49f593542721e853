//! Presence (protocol 1.1): online while any device is connected,
//! `last_seen` once the last one left, a watch that hears of both, and
//! nothing at all about users who share no conversation with the caller.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, status_and_json};
use crate::ws_client::WsClient;

/// Asks about `users` over the socket; the `presence` list.
async fn ask(client: &mut WsClient, users: &[&str], watch: bool) -> Vec<Value> {
    let reply = client
        .request(json!({"type": "presence", "users": users, "watch": watch}))
        .await;
    assert_eq!(reply["type"], "presence_result", "{reply}");
    reply["presence"].as_array().expect("a list").clone()
}

/// Alice and bob share a conversation (alice wrote to bob), and so do
/// dave and bob.
async fn acquainted(app: &TestApp) {
    for (from, id) in [("alice", "hello-1"), ("dave", "hello-2")] {
        let mut sender = app.ws(from, "setup").await;
        sender.send("bob", id, "hello").await;
        sender.close().await;
    }
}

/// Pings and reads up to the pong: no presence change came before it.
/// (Called once another watcher got a change: had this socket been
/// watching, the same change would be queued ahead of the pong.)
async fn heard_no_presence(client: &mut WsClient) {
    client
        .send_frame(&json!({"type": "ping", "rid": "last"}))
        .await;
    loop {
        let frame = client.try_next_frame().await.expect("a frame");
        assert_ne!(frame["type"], "presence", "{frame}");
        if frame["type"] == "pong" {
            return;
        }
    }
}

#[tokio::test]
async fn a_user_is_online_while_any_device_is_connected_then_offline_with_last_seen() {
    let app = spawn_app().await;
    acquainted(&app).await;
    let mut alice = app.ws("alice", "phone").await;
    assert_eq!(
        ask(&mut alice, &["bob"], false).await,
        [json!({"user": "bob", "online": false})],
        "never connected: no last_seen"
    );

    let bob_phone = app.ws("bob", "phone").await;
    let bob_laptop = app.ws("bob", "laptop").await;
    assert_eq!(
        ask(&mut alice, &["bob"], true).await,
        [json!({"user": "bob", "online": true})]
    );
    bob_phone.close().await;
    assert_eq!(
        ask(&mut alice, &["bob"], true).await,
        [json!({"user": "bob", "online": true})],
        "the laptop is still connected"
    );
    bob_laptop.close().await;
    let change = alice.next_frame_of_type("presence").await;
    assert_eq!(change["user"], "bob", "{change}");
    assert_eq!(change["online"], false, "{change}");
    let last_seen = change["last_seen"].as_u64().expect("last_seen");
    assert_eq!(
        ask(&mut alice, &["bob"], false).await,
        [json!({"user": "bob", "online": false, "last_seen": last_seen})]
    );
}

#[tokio::test]
async fn a_watch_hears_a_watched_user_go_offline_and_come_back_and_nothing_else() {
    let app = spawn_app().await;
    acquainted(&app).await;
    let mut alice = app.ws("alice", "phone").await;
    let bob = app.ws("bob", "phone").await;
    ask(&mut alice, &["bob"], true).await;

    bob.close().await;
    let gone = alice.next_frame_of_type("presence").await;
    assert_eq!(
        (&gone["user"], &gone["online"]),
        (&json!("bob"), &json!(false)),
        "{gone}"
    );
    let bob = app.ws("bob", "tablet").await;
    let back = alice.next_frame_of_type("presence").await;
    assert_eq!(
        back,
        json!({"type": "presence", "user": "bob", "online": true})
    );

    // A later request replaces the list: bob leaving again reaches dave,
    // who watches him now, and no longer alice.
    let mut dave = app.ws("dave", "phone").await;
    ask(&mut dave, &["bob"], true).await;
    ask(&mut alice, &["dave"], true).await;
    bob.close().await;
    let gone = dave.next_frame_of_type("presence").await;
    assert_eq!(gone["online"], false, "{gone}");
    heard_no_presence(&mut alice).await;
}

#[tokio::test]
async fn presence_reveals_nothing_about_users_who_share_no_conversation() {
    let app = spawn_app().await;
    acquainted(&app).await;
    let alice = app.ws("alice", "phone").await;
    let mut mallory = app.ws("mallory", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    assert_eq!(
        ask(&mut bob, &["alice"], false).await,
        [json!({"user": "alice", "online": true})],
        "bob shares a conversation with alice"
    );

    // Online and existing, offline and existing, never existed: the same.
    let answers = ask(&mut mallory, &["alice", "bob", "nobody-at-all"], true).await;
    for (answer, user) in answers.iter().zip(["alice", "bob", "nobody-at-all"]) {
        assert_eq!(*answer, json!({"user": user, "online": false}));
    }
    // And a watch of them hears nothing: alice's leaving reaches bob, and
    // mallory's queue, which would have it first, has none.
    ask(&mut bob, &["alice"], true).await;
    alice.close().await;
    let gone = bob.next_frame_of_type("presence").await;
    assert_eq!(gone["online"], false, "{gone}");
    heard_no_presence(&mut mallory).await;
}

#[tokio::test]
async fn rest_answers_as_the_socket_does_and_both_refuse_more_than_100_users() {
    let app = spawn_app().await;
    acquainted(&app).await;
    let _bob = app.ws("bob", "phone").await;
    let mut alice = app.ws("alice", "phone").await;
    let over_socket = ask(&mut alice, &["bob", "mallory"], false).await;
    let (status, body) = status_and_json(
        app.get("/v1/presence?users=bob,mallory", Some(&app.token("alice")))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], json!(over_socket));

    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let (status, body) = status_and_json(
        app.get(
            &format!("/v1/presence?users={}", many.join(",")),
            Some(&app.token("alice")),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    let reply = alice
        .request(json!({"type": "presence", "users": many}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let (status, _) = status_and_json(app.get("/v1/presence?users=bob", None).await).await;
    assert_eq!(status, 401, "a token is needed");
}

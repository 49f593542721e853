//! Read markers and receipts (protocol 1.1): a marker never moves back and
//! never past the conversation's last message; when it moves, a `read`
//! entry goes to the reader's own inbox and, in a direct conversation, to
//! the peer's; the conversation object carries the caller's marker, the
//! unread count (exact up to 100) and, in a group, every member's marker.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, status_and_json, u64_of};

const DM: &str = "dm:alice:bob";

fn read(conv_id: &str, conv_seq: u64) -> Value {
    json!({"type": "read", "conv_id": conv_id, "conv_seq": conv_seq})
}

/// `user`'s view of `conv` over REST.
async fn conversation(app: &TestApp, user: &str, conv: &str) -> Value {
    let path = format!("/v1/conversations/{conv}");
    let (status, body) = status_and_json(app.get(&path, Some(&app.token(user))).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `read` entries among `entries`: (from, ref).
fn reads(entries: &[Value]) -> Vec<(String, u64)> {
    entries
        .iter()
        .filter(|e| e["kind"] == "read")
        .map(|e| {
            (
                e["from"].as_str().unwrap_or_default().to_owned(),
                u64_of(e, "ref"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_read_moves_the_marker_and_tells_the_readers_devices_and_the_peer() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    for n in 1..=3 {
        alice.send("bob", &format!("m-{n}"), "hi").await;
    }
    assert_eq!(conversation(&app, "bob", DM).await["unread"], 3);

    let ack = bob.request(read(DM, 2)).await;
    assert_eq!(ack["type"], "read_ack", "{ack}");
    assert_eq!(
        (ack["conv_id"].clone(), u64_of(&ack, "conv_seq")),
        (json!(DM), 2)
    );
    let view = conversation(&app, "bob", DM).await;
    assert_eq!(
        (view["read_up_to"].clone(), view["unread"].clone()),
        (json!(2), json!(1))
    );
    assert!(
        view.get("read").is_none(),
        "markers of all are for groups: {view}"
    );

    let bobs = bob.sync_all(0).await;
    assert_eq!(
        reads(&bobs),
        [("bob".to_owned(), 2)],
        "bob's other devices hear it"
    );
    let entry = bobs
        .iter()
        .find(|e| e["kind"] == "read")
        .expect("a read entry");
    assert!(
        entry.get("conv_seq").is_none(),
        "a read entry is in no log: {entry}"
    );
    let alices = alice.sync_all(0).await;
    assert_eq!(
        reads(&alices),
        [("bob".to_owned(), 2)],
        "the receipt reaches alice"
    );
    // Alice's own messages are not unread for her.
    assert_eq!(conversation(&app, "alice", DM).await["unread"], 0);
}

#[tokio::test]
async fn a_marker_never_moves_back_nor_past_the_last_message_and_a_repeat_adds_no_entry() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    for n in 1..=3 {
        alice.send("bob", &format!("m-{n}"), "hi").await;
    }
    let past = bob.request(read(DM, 99)).await;
    assert_eq!(
        u64_of(&past, "conv_seq"),
        3,
        "capped at the last message: {past}"
    );
    let back = bob.request(read(DM, 1)).await;
    assert_eq!(
        u64_of(&back, "conv_seq"),
        3,
        "the marker as it stands: {back}"
    );
    let again = bob.request(read(DM, 3)).await;
    assert_eq!(u64_of(&again, "conv_seq"), 3);
    assert_eq!(reads(&alice.sync_all(0).await), [("bob".to_owned(), 3)]);
    assert_eq!(conversation(&app, "bob", DM).await["read_up_to"], 3);
}

#[tokio::test]
async fn a_group_shows_every_members_marker_and_a_read_entry_only_to_the_reader() {
    let app = spawn_app().await;
    let group = app.create_group("alice", &["bob", "carol"]).await;
    assert_eq!(group["read"], json!({"alice": 0, "bob": 0, "carol": 0}));
    let conv = group["conv_id"].as_str().expect("an id").to_owned();
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    for n in 1..=2 {
        let frame = json!({"type": "send", "conv_id": conv, "client_msg_id": format!("g-{n}"), "body": "team"});
        assert_eq!(alice.request(frame).await["type"], "ack");
    }
    let path = format!("/v1/conversations/{conv}/read");
    let (status, marker) = status_and_json(
        app.post_json(&path, &app.token("carol"), &json!({"conv_seq": 1}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{marker}");
    assert_eq!(marker, json!({"conv_id": conv, "conv_seq": 1}));
    assert_eq!(bob.request(read(&conv, 2)).await["type"], "read_ack");

    let view = conversation(&app, "carol", &conv).await;
    assert_eq!(view["read"], json!({"alice": 0, "bob": 2, "carol": 1}));
    assert_eq!(
        (view["read_up_to"].clone(), view["unread"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        reads(&alice.sync_all(0).await).is_empty(),
        "no receipts in groups"
    );
    assert_eq!(reads(&bob.sync_all(0).await), [("bob".to_owned(), 2)]);
}

#[tokio::test]
async fn unread_is_exact_up_to_100_and_counts_only_text_of_others() {
    let app = spawn_app_with_a_fast_sender().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let first = alice.send("bob", "m-0", "first").await;
    // An edit is not a message to read; bob's own are not unread.
    let edit = json!({"type": "edit", "client_msg_id": "e-0", "conv_id": DM, "ref": u64_of(&first, "conv_seq"), "body": "1st"});
    assert_eq!(alice.request(edit).await["type"], "ack");
    bob.send("alice", "b-0", "mine").await;
    assert_eq!(conversation(&app, "bob", DM).await["unread"], 1);
    for n in 1..=104 {
        alice.send("bob", &format!("m-{n}"), "more").await;
    }
    assert_eq!(
        conversation(&app, "bob", DM).await["unread"],
        100,
        "100 or more"
    );
    let last = u64_of(&conversation(&app, "bob", DM).await, "last_conv_seq");
    bob.request(read(DM, last - 3)).await;
    assert_eq!(conversation(&app, "bob", DM).await["unread"], 3);
    let (status, list) =
        status_and_json(app.get("/v1/conversations", Some(&app.token("bob"))).await).await;
    assert_eq!(status, 200);
    assert_eq!(list["conversations"][0]["unread"], 3, "{list}");
}

/// A server whose send rate lets one client send 105 messages at once.
async fn spawn_app_with_a_fast_sender() -> TestApp {
    crate::helpers::spawn_app_with(&["--send-rate", "1000", "--send-burst", "1000"]).await
}

#[tokio::test]
async fn a_stranger_gets_the_usual_forbidden_and_bad_reads_are_bad_requests() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    alice.send("bob", "m-1", "hi").await;
    let mut carol = app.ws("carol", "phone").await;
    let reply = carol.request(read(DM, 1)).await;
    assert_eq!(
        (reply["code"].clone(), reply["message"].clone()),
        (
            json!("forbidden"),
            json!("not a member of this conversation")
        ),
        "{reply}"
    );
    let (status, _) = status_and_json(
        app.post_json(
            &format!("/v1/conversations/{DM}/read"),
            &app.token("carol"),
            &json!({"conv_seq": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    for bad in [
        json!({"type": "read", "conv_id": DM}),
        json!({"type": "read", "conv_id": DM, "conv_seq": -1}),
        json!({"type": "read", "conv_seq": 1}),
    ] {
        assert_eq!(alice.request(bad).await["code"], "bad_request");
    }
    let (status, _) = status_and_json(
        app.post_json(
            &format!("/v1/conversations/{DM}/read"),
            &app.token("alice"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

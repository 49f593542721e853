//! Access control: only members read or write a conversation. Anyone else
//! gets 403 `forbidden` (`forbidden` over WebSocket) whether or not the
//! conversation exists, so existence never shows (PROTOCOL.md, REST); a
//! removed member loses access with the removal's answer.

use serde_json::{Value, json};

use crate::helpers::{TestApp, WsClient, spawn_app, status_and_json};

/// A group of alice and bob with one message, and a DM between them.
async fn alice_and_bob_talking(app: &TestApp) -> String {
    let mut alice = app.ws("alice", "phone").await;
    alice.send("bob", "dm-1", "just between us").await;
    let response = app
        .post_json(
            "/v1/conversations",
            &app.token("alice"),
            &json!({"members": ["bob"], "title": "private"}),
        )
        .await;
    let (status, group) = status_and_json(response).await;
    assert_eq!(status, 201, "{group}");
    let group = group["conv_id"].as_str().expect("a conv_id").to_owned();
    let ack = alice
        .request(json!({"type": "send", "conv_id": group, "client_msg_id": "g-1", "body": "group secret"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    group
}

/// What a user gets for each read and write of `conv`, over REST.
async fn rest_answers(app: &TestApp, user: &str, conv: &str) -> Vec<(String, u16, Value)> {
    let token = app.token(user);
    let send = json!({"client_msg_id": format!("{user}-probe"), "body": "let me in"});
    let calls = [
        (
            "get",
            app.get(&format!("/v1/conversations/{conv}"), Some(&token))
                .await,
        ),
        (
            "history",
            app.get(&format!("/v1/conversations/{conv}/messages"), Some(&token))
                .await,
        ),
        (
            "history after",
            app.get(
                &format!("/v1/conversations/{conv}/messages?after=0"),
                Some(&token),
            )
            .await,
        ),
        (
            "send",
            app.post_json(&format!("/v1/conversations/{conv}/messages"), &token, &send)
                .await,
        ),
        (
            "recall",
            app.post_json(
                &format!("/v1/conversations/{conv}/messages/1/recall"),
                &token,
                &json!({"client_msg_id": format!("{user}-recall")}),
            )
            .await,
        ),
        (
            "edit",
            app.patch_json(
                &format!("/v1/conversations/{conv}/messages/1"),
                &token,
                &json!({"client_msg_id": format!("{user}-edit"), "body": "mine now"}),
            )
            .await,
        ),
        (
            "read",
            app.post_json(
                &format!("/v1/conversations/{conv}/read"),
                &token,
                &json!({"conv_seq": 1}),
            )
            .await,
        ),
        (
            "add members",
            app.post_json(
                &format!("/v1/conversations/{conv}/members"),
                &token,
                &json!({"members": [user]}),
            )
            .await,
        ),
        (
            "remove member",
            app.delete(&format!("/v1/conversations/{conv}/members/alice"), &token)
                .await,
        ),
    ];
    let mut answers = Vec::new();
    for (what, response) in calls {
        let (status, body) = status_and_json(response).await;
        answers.push((what.to_owned(), status, body));
    }
    answers
}

/// Every REST call on `conv` by `user` is 403 `forbidden`.
async fn assert_all_forbidden(app: &TestApp, user: &str, conv: &str) {
    for (what, status, body) in rest_answers(app, user, conv).await {
        assert_eq!(status, 403, "{user} {what} {conv}: {body}");
        assert_eq!(body["code"], "forbidden", "{user} {what} {conv}: {body}");
    }
}

/// A WebSocket send of `user` to `conv` is refused with `forbidden`.
async fn assert_ws_send_forbidden(client: &mut WsClient, conv: &str, id: &str) {
    let reply = client
        .request(json!({"type": "send", "conv_id": conv, "client_msg_id": id, "body": "let me in"}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden", "{conv}: {reply}");
}

/// A WebSocket recall, edit and read (protocol 1.1) of message 1 of `conv`
/// are refused with the same `forbidden` as a send.
async fn assert_ws_changes_forbidden(client: &mut WsClient, conv: &str, id: &str) {
    for frame in [
        json!({"type": "recall", "conv_id": conv, "client_msg_id": format!("{id}-r"), "ref": 1}),
        json!({"type": "edit", "conv_id": conv, "client_msg_id": format!("{id}-e"), "ref": 1, "body": "x"}),
        json!({"type": "read", "conv_id": conv, "conv_seq": 1}),
    ] {
        let reply = client.request(frame).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "forbidden", "{conv}: {reply}");
        assert_eq!(
            reply["message"], "not a member of this conversation",
            "{reply}"
        );
    }
}

/// A WebSocket typing indicator of `user` in `conv` is refused with the
/// same `forbidden` (protocol 1.1).
async fn assert_ws_typing_forbidden(client: &mut WsClient, conv: &str) {
    let reply = client
        .request(json!({"type": "typing", "conv_id": conv}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden", "{conv}: {reply}");
}

#[tokio::test]
async fn an_outsider_cannot_read_write_or_change_a_group_or_a_dm_of_others() {
    let app = spawn_app().await;
    let group = alice_and_bob_talking(&app).await;
    assert_all_forbidden(&app, "carol", &group).await;
    // The DM between two others, computed by id.
    assert_all_forbidden(&app, "carol", "dm:alice:bob").await;
    let mut carol = app.ws("carol", "phone").await;
    assert_ws_send_forbidden(&mut carol, &group, "c-1").await;
    assert_ws_send_forbidden(&mut carol, "dm:alice:bob", "c-2").await;
    assert_ws_typing_forbidden(&mut carol, &group).await;
    assert_ws_typing_forbidden(&mut carol, "dm:alice:bob").await;
    assert_ws_changes_forbidden(&mut carol, &group, "c-3").await;
    assert_ws_changes_forbidden(&mut carol, "dm:alice:bob", "c-4").await;

    // Nothing of theirs reached carol, and nothing of carol's reached them.
    assert!(
        carol.sync_all(0).await.is_empty(),
        "carol's inbox stays empty"
    );
    let list = app
        .get("/v1/conversations", Some(&app.token("carol")))
        .await;
    let (_, list) = status_and_json(list).await;
    assert_eq!(list["conversations"], json!([]), "carol lists nothing");
    let mut bob = app.ws("bob", "phone").await;
    let bobs = bob.sync_all(0).await;
    assert_eq!(
        bobs.len(),
        2,
        "bob has the DM and the group message only: {bobs:?}"
    );
    let members = app
        .get(
            &format!("/v1/conversations/{group}"),
            Some(&app.token("bob")),
        )
        .await;
    let (_, members) = status_and_json(members).await;
    assert_eq!(
        members["members"],
        json!(["alice", "bob"]),
        "carol was not added"
    );
}

#[tokio::test]
async fn an_outsider_cannot_tell_an_existing_conversation_from_a_missing_one() {
    let app = spawn_app().await;
    let group = alice_and_bob_talking(&app).await;
    let pairs = [
        (group.as_str(), "g:doesnotexist000000000"),
        ("dm:alice:bob", "dm:dave:erin"),
    ];
    for (existing, missing) in pairs {
        let seen = rest_answers(&app, "carol", existing).await;
        let unseen = rest_answers(&app, "carol", missing).await;
        // The send probe's ids are the same; every answer must match exactly.
        assert_eq!(seen, unseen, "{existing} vs {missing}");
        assert!(seen.iter().all(|(_, status, _)| *status == 403), "{seen:?}");
    }
}

#[tokio::test]
async fn a_removed_member_loses_access_as_soon_as_the_removal_is_answered() {
    let app = spawn_app().await;
    let group = alice_and_bob_talking(&app).await;
    let mut bob = app.ws("bob", "phone").await;
    let bob_head = bob.sync(0).await["head"].as_u64().expect("a head");

    let removal = app
        .delete(
            &format!("/v1/conversations/{group}/members/bob"),
            &app.token("alice"),
        )
        .await;
    let (status, conv) = status_and_json(removal).await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(conv["members"], json!(["alice"]));

    assert_all_forbidden(&app, "bob", &group).await;
    assert_ws_send_forbidden(&mut bob, &group, "b-after").await;
    // What the group says next does not reach bob's inbox.
    let mut alice = app.ws("alice", "laptop").await;
    let ack = alice
        .request(json!({"type": "send", "conv_id": group, "client_msg_id": "g-2", "body": "bob is gone"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(
        bob.sync_all(bob_head).await.is_empty(),
        "bob gets nothing new"
    );
}

#[tokio::test]
async fn a_non_member_cannot_add_members_or_add_themselves_to_a_group() {
    let app = spawn_app().await;
    let group = alice_and_bob_talking(&app).await;
    let carol = app.token("carol");
    for members in [json!(["carol"]), json!(["dave"]), json!(["alice"])] {
        let response = app
            .post_json(
                &format!("/v1/conversations/{group}/members"),
                &carol,
                &json!({"members": members}),
            )
            .await;
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 403, "adding {members}: {body}");
    }
    let conv = app
        .get(
            &format!("/v1/conversations/{group}"),
            Some(&app.token("alice")),
        )
        .await;
    let (_, conv) = status_and_json(conv).await;
    assert_eq!(conv["members"], json!(["alice", "bob"]));
}

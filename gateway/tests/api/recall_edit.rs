//! Recall and edit (protocol 1.1): only the sender, of a text message,
//! within its window; stored and fanned out like a message, acked, and
//! idempotent on client_msg_id; after a recall the body is never served
//! again, from history, any inbox or a notify.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, status_and_json, u64_of};

const DM: &str = "dm:alice:bob";

fn recall(client_msg_id: &str, conv_id: &str, refers_to: u64) -> Value {
    json!({"type": "recall", "client_msg_id": client_msg_id, "conv_id": conv_id, "ref": refers_to})
}

fn edit(client_msg_id: &str, conv_id: &str, refers_to: u64, body: &str) -> Value {
    json!({"type": "edit", "client_msg_id": client_msg_id, "conv_id": conv_id, "ref": refers_to, "body": body})
}

/// The error code and message of a refused request.
fn refusal(reply: &Value) -> (String, String) {
    assert_eq!(reply["type"], "error", "refused: {reply}");
    let field = |name: &str| reply[name].as_str().unwrap_or_default().to_owned();
    (field("code"), field("message"))
}

/// A page of `conv`'s history as `user` reads it, oldest first.
async fn history(app: &TestApp, user: &str, conv: &str) -> Vec<Value> {
    let path = format!("/v1/conversations/{conv}/messages?after=0");
    let (status, page) = status_and_json(app.get(&path, Some(&app.token(user))).await).await;
    assert_eq!(status, 200, "{page}");
    page["messages"].as_array().expect("messages").clone()
}

/// Drops `seq` from each entry: what is left compares with history.
fn without_seq(entries: &[Value]) -> Vec<Value> {
    let mut entries = entries.to_vec();
    for entry in &mut entries {
        entry.as_object_mut().expect("an object").remove("seq");
    }
    entries
}

fn without_rid(mut reply: Value) -> Value {
    reply.as_object_mut().expect("an object").remove("rid");
    reply
}

#[tokio::test]
async fn a_recall_blanks_its_message_in_history_and_in_every_inbox() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let sent = alice.send("bob", "m-1", "a secret").await;
    let conv_seq = u64_of(&sent, "conv_seq");

    let ack = alice.request(recall("r-1", DM, conv_seq)).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["client_msg_id"], "r-1");
    assert_eq!(u64_of(&ack, "conv_seq"), conv_seq + 1);

    for client in [&mut alice, &mut bob] {
        let entries = client.sync_all(0).await;
        assert_eq!(
            entries.len(),
            2,
            "the message, then its recall: {entries:?}"
        );
        assert_eq!(entries[0]["body"], "");
        assert_eq!(entries[0]["recalled"], true);
        assert_eq!(entries[0]["kind"], "text");
        assert_eq!(entries[1]["kind"], "recall");
        assert_eq!(u64_of(&entries[1], "ref"), conv_seq);
        assert_eq!(entries[1]["from"], "alice");
        let read = history(&app, "bob", DM).await;
        assert_eq!(read, without_seq(&entries), "history says the same");
    }
    let everything = format!("{:?}", history(&app, "alice", DM).await);
    assert!(!everything.contains("a secret"));
}

#[tokio::test]
async fn a_member_offline_during_a_recall_syncs_the_blanked_message_then_the_recall() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let sent = alice.send("bob", "m-1", "oops").await;
    alice.send("bob", "m-2", "still here").await;
    let ack = alice
        .request(recall("r-1", DM, u64_of(&sent, "conv_seq")))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");

    let mut bob = app.ws("bob", "phone").await;
    let entries = bob.sync_all(0).await;
    let summary: Vec<(Value, Value, Value)> = entries
        .iter()
        .map(|e| (e["kind"].clone(), e["body"].clone(), e["recalled"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("text"), json!(""), json!(true)),
            (json!("text"), json!("still here"), Value::Null),
            (json!("recall"), json!(""), Value::Null),
        ]
    );
}

#[tokio::test]
async fn no_notify_after_a_recall_carries_the_recalled_body() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let sent = alice.send("bob", "m-1", "take it back").await;
    let first = bob.wait_notify_frame(1).await;
    assert!(
        first.to_string().contains("take it back"),
        "inline: {first}"
    );
    alice
        .request(recall("r-1", DM, u64_of(&sent, "conv_seq")))
        .await;
    alice.send("bob", "m-2", "next").await;
    // A device that has seen nothing is sent what the gateway keeps.
    let mut laptop = app.ws("bob", "laptop").await;
    alice.send("bob", "m-3", "after").await;
    let notify = laptop.wait_notify_frame(3).await;
    assert!(!notify.to_string().contains("take it back"), "{notify}");
    let recalled = bob.wait_notify_frame(2).await;
    assert!(!recalled.to_string().contains("take it back"), "{recalled}");
}

#[tokio::test]
async fn an_edit_is_an_entry_with_the_new_body_and_the_original_stays() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let sent = alice.send("bob", "m-1", "helo").await;
    let conv_seq = u64_of(&sent, "conv_seq");
    let ack = alice.request(edit("e-1", DM, conv_seq, "hello")).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    let messages = history(&app, "bob", DM).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["body"], "helo");
    assert_eq!(messages[1]["kind"], "edit");
    assert_eq!(messages[1]["body"], "hello");
    assert_eq!(u64_of(&messages[1], "ref"), conv_seq);
    assert_eq!(messages[1]["client_msg_id"], "e-1");
}

#[tokio::test]
async fn recall_and_edit_are_idempotent_on_client_msg_id() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let sent = alice.send("bob", "m-1", "x").await;
    let conv_seq = u64_of(&sent, "conv_seq");
    let first_edit = without_rid(alice.request(edit("e-1", DM, conv_seq, "y")).await);
    let again = without_rid(alice.request(edit("e-1", DM, conv_seq, "y")).await);
    assert_eq!(first_edit["type"], "ack", "{first_edit}");
    assert_eq!(first_edit, again);
    let first_recall = without_rid(alice.request(recall("r-1", DM, conv_seq)).await);
    let again = without_rid(alice.request(recall("r-1", DM, conv_seq)).await);
    assert_eq!(first_recall["type"], "ack", "{first_recall}");
    assert_eq!(first_recall, again);
    let kinds: Vec<Value> = alice
        .sync_all(0)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("text"), json!("edit"), json!("recall")]);
}

#[tokio::test]
async fn only_the_sender_may_change_a_text_message_and_a_stranger_gets_the_usual_forbidden() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let mut carol = app.ws("carol", "phone").await;
    let sent = alice.send("bob", "m-1", "mine").await;
    let conv_seq = u64_of(&sent, "conv_seq");

    let (code, _) = refusal(&bob.request(recall("r-b", DM, conv_seq)).await);
    assert_eq!(code, "forbidden", "the peer is not the sender");
    let (code, _) = refusal(&bob.request(edit("e-b", DM, conv_seq, "z")).await);
    assert_eq!(code, "forbidden");
    // A stranger hears what a send to the conversation would tell them.
    let stranger_send =
        json!({"type": "send", "client_msg_id": "s-c", "conv_id": DM, "body": "hi"});
    let usual = refusal(&carol.request(stranger_send).await);
    assert_eq!(usual.0, "forbidden");
    assert_eq!(
        refusal(&carol.request(recall("r-c", DM, conv_seq)).await),
        usual
    );
    assert_eq!(
        refusal(&carol.request(edit("e-c", DM, conv_seq, "z")).await),
        usual
    );
    assert_eq!(
        refusal(&carol.request(recall("r-c2", DM, 999)).await),
        usual
    );

    let (code, _) = refusal(&alice.request(recall("r-2", DM, 999)).await);
    assert_eq!(code, "forbidden", "no such message");
    let recalled = alice.request(recall("r-1", DM, conv_seq)).await;
    let (code, _) = refusal(
        &alice
            .request(recall("r-3", DM, u64_of(&recalled, "conv_seq")))
            .await,
    );
    assert_eq!(code, "forbidden", "a recall is not a text message");
    let (code, _) = refusal(&alice.request(edit("e-1", DM, conv_seq, "z")).await);
    assert_eq!(code, "forbidden", "a recalled message cannot be edited");
    let (code, _) = refusal(&alice.request(recall("r-4", DM, 0)).await);
    assert_eq!(code, "bad_request", "ref 0 names no message");
}

#[tokio::test]
async fn the_windows_are_configurable_and_a_change_past_them_is_forbidden() {
    let app = spawn_app_with(&["--recall-window-secs", "0", "--edit-window-secs", "0"]).await;
    let mut alice = app.ws("alice", "phone").await;
    let sent = alice.send("bob", "m-1", "late").await;
    // Time passing, not a wait for an event: the window is 0 s.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let conv_seq = u64_of(&sent, "conv_seq");
    let (code, message) = refusal(&alice.request(recall("r-1", DM, conv_seq)).await);
    assert_eq!(code, "forbidden");
    assert!(message.contains("too late"), "{message}");
    let (code, _) = refusal(&alice.request(edit("e-1", DM, conv_seq, "z")).await);
    assert_eq!(code, "forbidden");
}

#[tokio::test]
async fn rest_recalls_and_edits_answer_the_ack_fields() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let base = format!("/v1/conversations/{DM}/messages");
    let (status, sent) = status_and_json(
        app.post_json(
            &base,
            &token,
            &json!({"client_msg_id": "m-1", "body": "one"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let conv_seq = u64_of(&sent, "conv_seq");

    let body = json!({"client_msg_id": "e-1", "body": "uno"});
    let (status, edited) = status_and_json(
        app.patch_json(&format!("{base}/{conv_seq}"), &token, &body)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(u64_of(&edited, "conv_seq"), conv_seq + 1);
    for field in ["client_msg_id", "conv_id", "conv_seq", "seq", "ts"] {
        assert!(edited.get(field).is_some(), "{field} in {edited}");
    }
    let recall_path = format!("{base}/{conv_seq}/recall");
    let body = json!({"client_msg_id": "r-1"});
    let (status, recalled) =
        status_and_json(app.post_json(&recall_path, &token, &body).await).await;
    assert_eq!(status, 200, "{recalled}");
    assert_eq!(u64_of(&recalled, "conv_seq"), conv_seq + 2);
    let messages = history(&app, "bob", DM).await;
    assert_eq!(messages[0]["recalled"], true);
    assert_eq!(messages[0]["body"], "");

    let (status, _) = status_and_json(
        app.post_json(
            &format!("{base}/x/recall"),
            &token,
            &json!({"client_msg_id": "r-2"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "a conv_seq that is not a number");
    let (status, _) = status_and_json(
        app.post_json(
            &recall_path,
            &app.token("carol"),
            &json!({"client_msg_id": "r-3"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "a stranger");
    let (status, _) = status_and_json(
        app.patch_json(
            &format!("{base}/{conv_seq}"),
            &token,
            &json!({"client_msg_id": "e-2"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "an edit without a body");
}

#[tokio::test]
async fn an_edits_body_has_the_limits_of_a_messages_body() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let sent = alice.send("bob", "m-1", "short").await;
    let conv_seq = u64_of(&sent, "conv_seq");
    let largest = "x".repeat(proto::MAX_BODY_BYTES);
    let too_large = alice
        .request(edit("e-1", DM, conv_seq, &format!("{largest}y")))
        .await;
    assert_eq!(refusal(&too_large).0, "too_large");
    let empty = alice.request(edit("e-2", DM, conv_seq, "")).await;
    assert_eq!(refusal(&empty).0, "bad_request");
    let fits = alice.request(edit("e-3", DM, conv_seq, &largest)).await;
    assert_eq!(fits["type"], "ack", "16 KiB fits: {}", fits["type"]);
    let messages = history(&app, "bob", DM).await;
    assert_eq!(
        messages[1]["body"].as_str().map(str::len),
        Some(proto::MAX_BODY_BYTES)
    );
}

#[tokio::test]
async fn a_recall_blanks_the_copy_of_a_member_removed_since_the_message() {
    let app = spawn_app().await;
    let conv = app.group("alice", &["bob", "carol"]).await;
    let mut alice = app.ws("alice", "phone").await;
    let send =
        json!({"type": "send", "client_msg_id": "m-1", "conv_id": conv, "body": "for all three"});
    let sent = alice.request(send).await;
    assert_eq!(sent["type"], "ack", "{sent}");
    let path = format!("/v1/conversations/{conv}/members/carol");
    assert_eq!(app.delete(&path, &app.token("alice")).await.status(), 200);

    let ack = alice
        .request(recall("r-1", &conv, u64_of(&sent, "conv_seq")))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let mut carol = app.ws("carol", "phone").await;
    let entries = carol.sync_all(0).await;
    assert_eq!(entries[0]["body"], "", "carol's copy is blank: {entries:?}");
    assert_eq!(entries[0]["recalled"], true);
    assert_eq!(
        entries.last().map(|e| e["kind"].clone()),
        Some(json!("recall"))
    );
}

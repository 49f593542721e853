//! `notify` fan-out: every socket of every member whose inbox head moved.

use crate::helpers::{msg_ids, spawn_app, u64_of};

#[tokio::test]
async fn a_new_message_notifies_every_device_of_the_recipient_and_the_senders_other_devices() {
    let app = spawn_app().await;
    let mut bob_phone = app.ws("bob", "phone").await;
    let mut bob_laptop = app.ws("bob", "laptop").await;
    let mut alice_phone = app.ws("alice", "phone").await;
    let mut alice_laptop = app.ws("alice", "laptop").await;

    let ack = alice_phone.send("bob", "n-1", "hello bob").await;

    let bob_inbox = bob_phone.sync(0).await;
    let entries = bob_inbox["entries"].as_array().expect("entries");
    assert_eq!(msg_ids(entries), ["n-1"], "bob's inbox: {bob_inbox}");
    let bob_head = u64_of(&bob_inbox, "head");
    assert!(bob_phone.wait_notify(bob_head).await >= bob_head);
    assert!(bob_laptop.wait_notify(bob_head).await >= bob_head);
    // The ack's seq is the entry's seq in the sender's own inbox.
    let alice_head = u64_of(&ack, "seq");
    assert!(alice_laptop.wait_notify(alice_head).await >= alice_head);
    let alice_inbox = alice_laptop.sync(0).await;
    assert_eq!(u64_of(&alice_inbox, "head"), alice_head);
}

#[tokio::test]
async fn every_later_message_moves_the_notified_head_up() {
    let app = spawn_app().await;
    let mut bob = app.ws("bob", "phone").await;
    let mut alice = app.ws("alice", "phone").await;

    let mut last_head = 0;
    for n in 0..3 {
        alice.send("bob", &format!("up-{n}"), "again").await;
        let head = bob.wait_notify(last_head + 1).await;
        let page = bob.sync(last_head).await;
        let entries = page["entries"].as_array().expect("entries");
        assert_eq!(
            msg_ids(entries),
            [format!("up-{n}")],
            "after {last_head}: {page}"
        );
        assert_eq!(
            u64_of(&entries[0], "seq"),
            head,
            "notify carries the new head"
        );
        last_head = head;
    }
}

#[tokio::test]
async fn a_notify_carries_the_new_entry_as_a_sync_answers_it_so_a_client_at_its_prev_needs_no_sync()
{
    let app = spawn_app().await;
    let mut bob = app.ws("bob", "phone").await;
    let mut alice = app.ws("alice", "phone").await;
    alice.send("bob", "i-1", "first").await;
    let since = bob.wait_notify(1).await;

    alice.send("bob", "i-2", "second \"quoted\" é").await;
    let notify = bob.wait_notify_frame(since + 1).await;
    let head = u64_of(&notify, "head");
    assert_eq!(u64_of(&notify, "prev"), since, "{notify}");
    let entries = notify["entries"].as_array().expect("entries inline");
    assert_eq!(msg_ids(entries), ["i-2"], "{notify}");
    assert_eq!(u64_of(&entries[0], "seq"), head);
    // Exactly what a sync from `prev` answers, field for field.
    let page = bob.sync(since).await;
    assert_eq!(notify["entries"], page["entries"], "{notify} vs {page}");
}

#[tokio::test]
async fn a_large_entry_comes_by_sync_the_notify_carries_the_head_alone() {
    let app = spawn_app().await;
    let mut bob = app.ws("bob", "phone").await;
    let mut alice = app.ws("alice", "phone").await;
    let big = "x".repeat(proto::MAX_BODY_BYTES);
    alice.send("bob", "big-1", &big).await;

    let notify = bob.wait_notify_frame(1).await;
    assert!(
        notify.get("entries").is_none(),
        "no entries inline: {notify:.200}"
    );
    assert!(notify.get("prev").is_none(), "no prev: {notify:.200}");
    let page = bob.sync(0).await;
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(msg_ids(entries), ["big-1"]);
}

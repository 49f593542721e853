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

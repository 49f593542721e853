//! Graceful shutdown: `goaway` to every socket, not ready while draining
//! (`/lbz` answers 404: the load balancer keeps the open sockets),
//! sockets that stay are closed (1001) at the deadline, `run` returns `Ok`,
//! and a new server on the same data dir has every acked message.

use std::collections::HashMap;

use serde_json::Value;

use crate::helpers::{Ended, WsClient, msg_ids, spawn_app_with, u64_of};

const DRAIN_SECS: u64 = 2;

/// A `goaway` arrives, with a delay inside the drain window.
async fn expect_goaway(client: &mut WsClient) {
    let goaway = client.next_frame_of_type("goaway").await;
    let delay = u64_of(&goaway, "reconnect_after_ms");
    assert!(
        (1..=DRAIN_SECS * 1000).contains(&delay),
        "reconnect_after_ms {delay} is within the drain window"
    );
}

#[tokio::test]
async fn shutdown_sends_goaway_to_every_socket_and_closes_the_ones_that_stay_with_1001() {
    let drain = DRAIN_SECS.to_string();
    let mut app = spawn_app_with(&["--drain-secs", &drain]).await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob_phone = app.ws("bob", "phone").await;
    let mut bob_laptop = app.ws("bob", "laptop").await;
    assert!(app.is_ready());
    assert_eq!(
        app.get("/lbz", None).await.status(),
        200,
        "/lbz while ready"
    );

    app.begin_shutdown();
    for client in [&mut alice, &mut bob_phone, &mut bob_laptop] {
        expect_goaway(client).await;
    }
    assert!(!app.is_ready(), "not ready while draining");
    // The load balancer must read "no new sockets, keep the open ones"
    // (HAProxy's disable-on-404), not a failed check that cuts them.
    assert_eq!(
        app.get("/lbz", None).await.status(),
        404,
        "/lbz answers 404 while draining"
    );
    // Two clients leave as asked; the laptop ignores the goaway.
    alice.close().await;
    bob_phone.close().await;
    let ended = bob_laptop.closed_by_server().await;
    assert!(
        matches!(ended, Ended::Closed(Some(1001))),
        "a socket still open at the drain deadline is closed with 1001, not {ended:?}"
    );
    app.stop().await;
}

/// Sends `count` messages from `from` to `to`; the acks by client_msg_id.
async fn send_many(client: &mut WsClient, to: &str, prefix: &str, count: u32) -> Vec<Value> {
    let mut acks = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        acks.push(client.send(to, &id, &format!("message {n}")).await);
    }
    acks
}

/// Every ack is in `entries` exactly once, with the ack's seq when the
/// entries are the sender's own inbox.
fn assert_exactly_once(entries: &[Value], acks: &[Value], own_inbox: bool) {
    let mut seen: HashMap<String, Vec<&Value>> = HashMap::new();
    for entry in entries {
        let id = entry["client_msg_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.entry(id).or_default().push(entry);
    }
    for ack in acks {
        let id = ack["client_msg_id"].as_str().expect("acks carry the id");
        let found = seen.get(id).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            found.len(),
            1,
            "{id} is in the inbox exactly once: {found:?}"
        );
        assert_eq!(found[0]["conv_seq"], ack["conv_seq"], "{id}'s conv_seq");
        if own_inbox {
            assert_eq!(
                found[0]["seq"], ack["seq"],
                "{id}'s seq in the sender's inbox"
            );
        }
    }
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_every_acked_message_exactly_once() {
    let drain = DRAIN_SECS.to_string();
    let mut app = spawn_app_with(&["--drain-secs", &drain]).await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let from_alice = send_many(&mut alice, "bob", "a", 30).await;
    let from_bob = send_many(&mut bob, "alice", "b", 5).await;

    app.begin_shutdown();
    expect_goaway(&mut alice).await;
    expect_goaway(&mut bob).await;
    alice.close().await;
    bob.close().await;
    let app = app.restart().await;

    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "laptop").await;
    let alice_inbox = alice.sync_all(0).await;
    let bob_inbox = bob.sync_all(0).await;
    assert_eq!(alice_inbox.len(), 35, "alice: {:?}", msg_ids(&alice_inbox));
    assert_eq!(bob_inbox.len(), 35, "bob: {:?}", msg_ids(&bob_inbox));
    assert_exactly_once(&alice_inbox, &from_alice, true);
    assert_exactly_once(&alice_inbox, &from_bob, false);
    assert_exactly_once(&bob_inbox, &from_bob, true);
    assert_exactly_once(&bob_inbox, &from_alice, false);

    // The same client_msg_id after the restart is still a duplicate.
    let retry = alice.send("bob", "a-0", "message 0").await;
    assert_eq!(
        retry["seq"], from_alice[0]["seq"],
        "a retry gets the first ack"
    );
    let later = alice.send("bob", "a-new", "after the restart").await;
    let old_max = alice_inbox.iter().map(|e| u64_of(e, "seq")).max();
    assert!(
        Some(u64_of(&later, "seq")) > old_max,
        "seqs keep increasing"
    );
}

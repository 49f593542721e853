//! Notify routing across gateways: a send through one gateway reaches the
//! sockets of every member on the other one (Redis presence and notify bus).

use serde_json::Value;

use crate::harness::Cluster;
use crate::helpers::{msg_ids, u64_of};
use crate::ws_client::WsClient;

/// The inbox head `client` sees now.
async fn head_of(client: &mut WsClient) -> u64 {
    u64_of(&client.sync(0).await, "head")
}

/// Waits for a notify past `since`, then syncs from `since`: the one new
/// entry must be `client_msg_id` from `from`.
async fn notified_and_synced(client: &mut WsClient, since: u64, from: &str, client_msg_id: &str) {
    let head = client.wait_notify(since + 1).await;
    let page = client.sync(since).await;
    let entries: &[Value] = page["entries"].as_array().expect("entries is an array");
    assert_eq!(msg_ids(entries), [client_msg_id], "after {since}: {page}");
    assert_eq!(entries[0]["from"], from, "the sender: {page}");
    assert_eq!(u64_of(&entries[0], "seq"), head, "notify carried the head");
}

#[tokio::test]
async fn a_message_sent_through_one_gateway_notifies_and_syncs_on_the_other_and_on_every_device_of_a_user_spread_over_both()
 {
    let cluster = Cluster::up().await;

    // One user per gateway.
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let alice_head = head_of(&mut alice).await;
    bob.send("alice", "x-1", "from gateway 2").await;
    notified_and_synced(&mut alice, alice_head, "bob", "x-1").await;
    // And back.
    let bob_head = head_of(&mut bob).await;
    alice.send("bob", "x-2", "from gateway 1").await;
    notified_and_synced(&mut bob, bob_head, "alice", "x-2").await;

    // carol has a device on each gateway; dave is on gateway 1.
    let mut carol_phone = cluster.ws(&cluster.gw1, "carol", "phone").await;
    let mut carol_laptop = cluster.ws(&cluster.gw2, "carol", "laptop").await;
    let mut dave = cluster.ws(&cluster.gw1, "dave", "phone").await;
    let carol_head = head_of(&mut carol_phone).await;
    dave.send("carol", "x-3", "to both devices").await;
    notified_and_synced(&mut carol_phone, carol_head, "dave", "x-3").await;
    notified_and_synced(&mut carol_laptop, carol_head, "dave", "x-3").await;

    // A send from carol's device on gateway 2 reaches dave on gateway 1 and
    // her own other device on gateway 1 (the sender's inbox has it too).
    let carol_head = head_of(&mut carol_laptop).await;
    let dave_head = head_of(&mut dave).await;
    let ack = carol_laptop.send("dave", "x-4", "reply").await;
    assert!(u64_of(&ack, "seq") > carol_head, "{ack}");
    notified_and_synced(&mut dave, dave_head, "carol", "x-4").await;
    notified_and_synced(&mut carol_phone, carol_head, "carol", "x-4").await;
}

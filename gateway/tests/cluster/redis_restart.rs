//! Redis holds presence and carries the notify bus: when it dies and comes
//! back empty, notifies must flow again at once (the gateways notice the new
//! instance and announce their users again), and what was sent while it was
//! down reaches the sockets by polling, without waiting for the 30 s refresh.

use std::time::Duration;

use crate::harness::Cluster;
use crate::helpers::{msg_ids, u64_of};

/// Much less than the 30 s presence refresh: only the restart detection
/// (every 2 s) can make it.
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn after_redis_is_killed_and_restarted_empty_notifies_reach_sockets_on_both_gateways_again() {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let bob_head = u64_of(&bob.sync(0).await, "head");
    alice.send("bob", "r-1", "before").await;
    bob.wait_notify(bob_head + 1).await;

    cluster.part("kill9", "redis").await;
    cluster.part("restart", "redis").await;

    let bob_head = u64_of(&bob.sync(0).await, "head");
    let ack = alice.send("bob", "r-2", "after the restart").await;
    tokio::time::timeout(WITHIN, bob.wait_notify(bob_head + 1))
        .await
        .expect("bob is notified again soon after Redis came back");
    let page = bob.sync(bob_head).await;
    let entries = page["entries"].as_array().expect("entries is an array");
    assert_eq!(msg_ids(entries), ["r-2"], "{page}");

    let alice_head = u64_of(&ack, "seq");
    bob.send("alice", "r-3", "and back").await;
    tokio::time::timeout(WITHIN, alice.wait_notify(alice_head + 1))
        .await
        .expect("alice on the other gateway is notified too");
}

#[tokio::test]
async fn while_redis_is_down_sockets_still_learn_of_new_messages() {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let bob_head = u64_of(&bob.sync(0).await, "head");

    cluster.part("kill9", "redis").await;
    alice.send("bob", "d-1", "while Redis is down").await;
    tokio::time::timeout(WITHIN, bob.wait_notify(bob_head + 1))
        .await
        .expect("the gateway polls the head while the bus is down");
    let page = bob.sync(bob_head).await;
    let entries = page["entries"].as_array().expect("entries is an array");
    assert_eq!(msg_ids(entries), ["d-1"], "{page}");
}

//! Gateways hold no state a reconnect cannot rebuild: when one drains and
//! exits, its clients reconnect through HAProxy to the other one and sync
//! from their seq, losing and repeating nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::harness::Cluster;
use crate::helpers::{assert_ascending, msg_ids, u64_of};
use crate::ws_client::WsClient;

/// Users connected through the balancer.
const USERS: usize = 6;
/// How long the reconnect of one client may keep failing.
const RECONNECT_WITHIN: Duration = Duration::from_secs(30);
/// How long gateway 1 may take to drain and exit once its clients left.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// A user with one socket, and what its inbox should hold.
struct User {
    name: String,
    ws: Option<WsClient>,
    on_gw1: bool,
    /// The highest seq processed (the client's sync key).
    seq: u64,
    /// `client_msg_id`s in the order they were synced.
    received: Vec<String>,
    /// `client_msg_id`s of every acked message to or from this user.
    expected: BTreeSet<String>,
}

impl User {
    fn ws(&mut self) -> &mut WsClient {
        self.ws
            .as_mut()
            .unwrap_or_else(|| panic!("{} is connected", self.name))
    }

    /// Syncs from the user's seq until nothing is newer.
    async fn catch_up(&mut self) {
        let since = self.seq;
        let entries = self.ws().sync_all(since).await;
        assert_ascending(&entries, since);
        if let Some(last) = entries.last() {
            self.seq = u64_of(last, "seq");
        }
        self.received.extend(msg_ids(&entries));
    }
}

/// `users[from]` sends a message to `users[to]`; both now expect it.
async fn exchange(users: &mut [User], from: usize, to: usize, client_msg_id: &str) {
    let recipient = users[to].name.clone();
    users[from]
        .ws()
        .send(&recipient, client_msg_id, "through the cluster")
        .await;
    users[from].expected.insert(client_msg_id.to_owned());
    users[to].expected.insert(client_msg_id.to_owned());
}

/// Connects `user` through the balancer, retrying with a bounded backoff
/// while a connect fails (it may reach the draining gateway, or the stopped
/// one before the health checks took it out of the pool).
async fn reconnect(cluster: &Cluster, user: &str) -> (WsClient, u32) {
    let deadline = Instant::now() + RECONNECT_WITHIN;
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0;
    loop {
        match WsClient::connect(cluster.ws_url(&cluster.lb, user, "phone")).await {
            Ok(client) => return (client, failures),
            Err(err) => {
                failures += 1;
                assert!(
                    Instant::now() < deadline,
                    "{user} could not reconnect within {RECONNECT_WITHIN:?} ({failures} tries): {err}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[tokio::test]
async fn clients_of_a_stopped_gateway_reconnect_through_the_balancer_and_sync_every_acked_message_exactly_once_in_order()
 {
    let cluster = Cluster::up().await;

    // Connect through HAProxy; gateway 1's session count tells where each landed.
    let mut users = Vec::new();
    let mut on_gw1 = cluster.ws_connections(&cluster.gw1).await;
    for n in 0..USERS {
        let name = format!("user{n}");
        let ws = cluster.ws(&cluster.lb, &name, "phone").await;
        let now_on_gw1 = cluster.ws_connections(&cluster.gw1).await;
        users.push(User {
            name,
            ws: Some(ws),
            on_gw1: now_on_gw1 > on_gw1,
            seq: 0,
            received: Vec::new(),
            expected: BTreeSet::new(),
        });
        on_gw1 = now_on_gw1;
    }
    let (a, b): (Vec<usize>, Vec<usize>) = (0..USERS).partition(|&n| users[n].on_gw1);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the balancer spreads clients: {} on gateway 1, {} on gateway 2",
        a.len(),
        b.len()
    );
    assert_eq!(
        cluster.ws_connections(&cluster.gw2).await,
        u64::try_from(b.len()).expect("a small count")
    );

    // Before the stop: a ring of messages, crossing gateways, synced.
    for n in 0..USERS {
        for k in 0..2 {
            exchange(&mut users, n, (n + 1) % USERS, &format!("before-{n}-{k}")).await;
        }
    }
    for user in &mut users {
        user.catch_up().await;
    }

    // Stop gateway 1: its clients get `goaway`; its sockets still serve
    // while it drains, so each sends one more message, then leaves.
    cluster.terminate("gateway1").await;
    for &n in &a {
        let goaway = users[n].ws().next_frame_of_type("goaway").await;
        assert!(u64_of(&goaway, "reconnect_after_ms") > 0, "{goaway}");
        exchange(&mut users, n, (n + 1) % USERS, &format!("draining-{n}")).await;
        users[n].ws.take().expect("connected").close().await;
    }

    // While they are away: messages to them from gateway 2's users.
    for &from in &b {
        for &to in &a {
            exchange(&mut users, from, to, &format!("away-{from}-{to}")).await;
        }
    }

    // They reconnect through the balancer right away (no goaway delay, to
    // meet the draining gateway) and sync from their seq.
    for &n in &a {
        let (ws, failures) = reconnect(&cluster, &users[n].name).await;
        eprintln!(
            "{} reconnected after {failures} failed tries",
            users[n].name
        );
        users[n].ws = Some(ws);
        users[n].catch_up().await;
    }
    cluster.wait_exited("gateway1", EXIT_WITHIN).await;
    assert_eq!(
        cluster.ws_connections(&cluster.gw2).await,
        u64::try_from(USERS).expect("a small count"),
        "every client is on gateway 2"
    );

    // After the stop: everyone sends again.
    for n in 0..USERS {
        exchange(&mut users, n, (n + 2) % USERS, &format!("after-{n}")).await;
    }
    for user in &mut users {
        user.catch_up().await;
    }

    // Every acked message exactly once, in seq order (checked on each sync);
    // a new device's full sync shows the same inbox.
    for user in &mut users {
        let unique: BTreeSet<String> = user.received.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            user.received.len(),
            "{}: no duplicates in {:?}",
            user.name,
            user.received
        );
        assert_eq!(unique, user.expected, "{}: every acked message", user.name);
        let mut audit = cluster.ws(&cluster.lb, &user.name, "audit").await;
        let all = audit.sync_all(0).await;
        assert_ascending(&all, 0);
        assert_eq!(
            msg_ids(&all),
            user.received,
            "{}: the stored inbox",
            user.name
        );
        assert_eq!(
            all.last().map(|e| u64_of(e, "seq")),
            Some(user.seq),
            "{}",
            user.name
        );
        audit.close().await;
    }
}

//! Crash safety of the real binary: an ack means the message is durable, so
//! after `kill -9` and a restart on the same data dir every acked message
//! is there exactly once, retries stay deduplicated, and seqs keep growing.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{SECRET, WsClient, mint_hs256, u64_of, unix_now};

/// Messages alice pipelines before the crash (under the burst of 50).
const IN_FLIGHT: u32 = 40;
/// Acks to collect before the kill; the rest may or may not be stored.
const ACKED_BEFORE_KILL: usize = 20;

/// The gateway binary running as a child process.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

/// A port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("the bound address")
}

impl Binary {
    /// Starts the binary on `data_dir` and waits until it is ready.
    async fn start(data_dir: &Path) -> Binary {
        let addr = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--jwt-secret", SECRET, "--dev-auth", "false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the gateway binary");
        let mut binary = Binary { child, addr };
        binary.wait_ready().await;
        binary
    }

    /// Polls `/readyz` a bounded number of times (it is another process).
    /// Not `/healthz`: that answers a moment before upgrades are accepted.
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.addr);
        for _ in 0..200 {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                panic!("the gateway exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway was not ready within 10 s");
    }

    async fn ws(&self, user: &str, device: &str) -> WsClient {
        let token = mint_hs256(&json!({"sub": user, "exp": unix_now() + 3600}), SECRET);
        let url = format!("ws://{}/v1/ws?token={token}&device={device}", self.addr);
        WsClient::connect(url)
            .await
            .expect("connecting to the binary")
    }

    /// SIGKILL, then reap the process.
    async fn kill_9(mut self) {
        self.child.start_kill().expect("sending SIGKILL");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the killed gateway exits in time")
            .expect("waiting for the child");
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

/// A send from alice to bob whose rid is its client_msg_id.
fn send_frame(id: &str) -> Value {
    json!({"type": "send", "rid": id, "to": "bob", "client_msg_id": id, "body": format!("body of {id}")})
}

/// Reads acks until `until` of them arrived or the socket ends.
async fn collect_acks(alice: &mut WsClient, acks: &mut HashMap<String, Value>, until: usize) {
    while acks.len() < until {
        let Ok(frame) = alice.try_next_frame().await else {
            return;
        };
        match frame["type"].as_str() {
            Some("ack") => {
                let id = frame["client_msg_id"].as_str().expect("an id").to_owned();
                acks.insert(id, frame);
            }
            Some("notify") => {}
            _ => panic!("only acks and notifies are expected: {frame}"),
        }
    }
}

/// How often each client_msg_id occurs in `entries`.
fn counts(entries: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in entries {
        let id = entry["client_msg_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn every_acked_message_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().expect("a data dir");
    let binary = Binary::start(dir.path()).await;
    let mut alice = binary.ws("alice", "phone").await;
    for n in 0..IN_FLIGHT {
        alice.send_frame(&send_frame(&format!("k-{n}"))).await;
    }
    let mut acks = HashMap::new();
    collect_acks(&mut alice, &mut acks, ACKED_BEFORE_KILL).await;
    assert!(acks.len() >= ACKED_BEFORE_KILL, "only {} acks", acks.len());
    binary.kill_9().await;
    // Acks already on their way count too.
    collect_acks(&mut alice, &mut acks, usize::MAX).await;

    let binary = Binary::start(dir.path()).await;
    let mut alice = binary.ws("alice", "phone").await;
    let mut bob = binary.ws("bob", "phone").await;
    let alice_inbox = alice.sync_all(0).await;
    let bob_inbox = bob.sync_all(0).await;
    let (in_alice, in_bob) = (counts(&alice_inbox), counts(&bob_inbox));
    for (id, ack) in &acks {
        assert_eq!(
            in_alice.get(id),
            Some(&1),
            "acked {id} in alice's inbox once"
        );
        assert_eq!(in_bob.get(id), Some(&1), "acked {id} in bob's inbox once");
        let entry = alice_inbox.iter().find(|e| e["client_msg_id"] == *id);
        assert_eq!(entry.map(|e| &e["seq"]), Some(&ack["seq"]), "{id}'s seq");
    }
    assert!(
        in_bob.values().all(|&n| n == 1),
        "no duplicates: {in_bob:?}"
    );

    // Retrying everything keeps each message once; then a new send goes above.
    for n in 0..IN_FLIGHT {
        let retry = alice.request(send_frame(&format!("k-{n}"))).await;
        assert_eq!(retry["type"], "ack", "retry of k-{n}: {retry}");
        if let Some(ack) = acks.get(&format!("k-{n}")) {
            assert_eq!(
                retry["seq"], ack["seq"],
                "a retry of k-{n} gets the first ack"
            );
        }
    }
    let bob_inbox = bob.sync_all(0).await;
    assert_eq!(
        bob_inbox.len(),
        IN_FLIGHT as usize,
        "{:?}",
        counts(&bob_inbox)
    );
    assert!(counts(&bob_inbox).values().all(|&n| n == 1));
    let old_max = alice_inbox.iter().map(|e| u64_of(e, "seq")).max();
    let later = alice.send("bob", "after-crash", "still here").await;
    assert!(
        Some(u64_of(&later, "seq")) > old_max,
        "seqs keep increasing"
    );
    binary.kill_9().await;
}

/// Crash points of the sweep: the kill comes this long after a round's first
/// ack, so it lands in a different phase (conversation append, inbox
/// fan-out, dedup record, fsync) of the sends in flight.
const CRASH_DELAYS_MS: [u64; 8] = [0, 1, 2, 3, 5, 8, 12, 20];
/// Users sending to bob at once in the sweep, so that at any moment of a
/// crash some send is in each phase.
const SENDERS: usize = 8;
/// Sends each sender pipelines per round.
const PER_ROUND: u32 = 5;

/// Retries (with the same ids) every send of `ids`; all must be acked.
async fn retry_all(client: &mut WsClient, ids: &[String]) {
    for id in ids {
        let ack = client.request(send_frame(id)).await;
        assert_eq!(ack["type"], "ack", "retry of {id}: {ack}");
    }
}

/// The direct conversation of `user` and bob, as `user` reads it over REST.
async fn history_with_bob(binary: &Binary, user: &str) -> Vec<Value> {
    let token = mint_hs256(&json!({"sub": user, "exp": unix_now() + 3600}), SECRET);
    let (a, b) = if user < "bob" {
        (user, "bob")
    } else {
        ("bob", user)
    };
    let url = format!(
        "http://{}/v1/conversations/dm:{a}:{b}/messages?limit=200",
        binary.addr
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("reading the history");
    assert!(
        response.status().is_success(),
        "history: {}",
        response.status()
    );
    let page: Value = response.json().await.expect("a JSON history page");
    assert_eq!(page["next_before"], Value::Null, "one page holds it all");
    page["messages"].as_array().expect("messages").clone()
}

/// One round of the sweep: every sender retries what it has not seen acked,
/// pipelines new sends, and the server is killed `delay` after the first
/// new ack. Returns the new ids, and each sender's unacked ids.
async fn crash_round(
    dir: &Path,
    round: usize,
    delay: u64,
    unacked: &[Vec<String>],
) -> (Vec<String>, Vec<Vec<String>>) {
    let binary = Binary::start(dir).await;
    let mut clients = Vec::new();
    let mut new_ids = Vec::new();
    for (s, retries) in unacked.iter().enumerate() {
        let mut client = binary.ws(&format!("s{s}"), "phone").await;
        retry_all(&mut client, retries).await;
        let ids: Vec<String> = (0..PER_ROUND)
            .map(|n| format!("s{s}-r{round}-{n}"))
            .collect();
        clients.push((client, ids));
    }
    for (client, ids) in &mut clients {
        for id in ids.iter() {
            client.send_frame(&send_frame(id)).await;
        }
    }
    let mut acks = HashMap::new();
    collect_acks(&mut clients[0].0, &mut acks, 1).await;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    binary.kill_9().await;
    let mut still_unacked = Vec::new();
    for (mut client, ids) in clients {
        collect_acks(&mut client, &mut acks, usize::MAX).await;
        still_unacked.push(
            ids.iter()
                .filter(|id| !acks.contains_key(*id))
                .cloned()
                .collect(),
        );
        new_ids.extend(ids);
    }
    (new_ids, still_unacked)
}

#[tokio::test]
async fn retries_after_kill_9_at_any_moment_of_a_send_store_each_message_once() {
    let dir = tempfile::tempdir().expect("a data dir");
    let (mut all, mut unacked) = (Vec::new(), vec![Vec::new(); SENDERS]);
    for (round, delay) in CRASH_DELAYS_MS.into_iter().enumerate() {
        let (ids, left) = crash_round(dir.path(), round, delay, &unacked).await;
        all.extend(ids);
        unacked = left;
    }

    let binary = Binary::start(dir.path()).await;
    let mut in_history = HashMap::new();
    for (s, retries) in unacked.iter().enumerate() {
        let user = format!("s{s}");
        retry_all(&mut binary.ws(&user, "phone").await, retries).await;
        in_history.extend(counts(&history_with_bob(&binary, &user).await));
    }
    let in_bob = counts(&binary.ws("bob", "phone").await.sync_all(0).await);
    for id in &all {
        assert_eq!(
            in_bob.get(id),
            Some(&1),
            "{id} in bob's inbox once: {in_bob:?}"
        );
        assert_eq!(in_history.get(id), Some(&1), "{id} in the history once");
    }
    assert_eq!(in_bob.len(), all.len(), "nothing else in bob's inbox");
    binary.kill_9().await;
}

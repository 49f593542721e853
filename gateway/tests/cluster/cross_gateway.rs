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
/// entry must be `client_msg_id` from `from`, and the notify carried it
/// (protocol 1.1: through the Redis bus too) as the sync answers it.
async fn notified_and_synced(client: &mut WsClient, since: u64, from: &str, client_msg_id: &str) {
    let notify = client.wait_notify_frame(since + 1).await;
    let head = u64_of(&notify, "head");
    let page = client.sync(since).await;
    let entries: &[Value] = page["entries"].as_array().expect("entries is an array");
    assert_eq!(msg_ids(entries), [client_msg_id], "after {since}: {page}");
    assert_eq!(entries[0]["from"], from, "the sender: {page}");
    assert_eq!(u64_of(&entries[0], "seq"), head, "notify carried the head");
    assert_eq!(u64_of(&notify, "prev"), since, "{notify}");
    assert_eq!(notify["entries"], page["entries"], "the notify's entries");
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

#[tokio::test]
async fn a_typing_indicator_reaches_the_other_members_devices_on_the_other_gateway_and_writes_nothing()
 {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob_phone = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let mut bob_laptop = cluster.ws(&cluster.gw1, "bob", "laptop").await;
    let mut carol = cluster.ws(&cluster.gw2, "carol", "phone").await;
    alice.send("bob", "t-1", "a message is written").await;
    let to_carol = alice
        .request(serde_json::json!({"type": "send", "to": "carol", "client_msg_id": "t-2", "body": "and another"}))
        .await;
    assert_eq!(to_carol["type"], "ack", "{to_carol}");
    let before = cluster.store_writes().await;
    assert!(before > 0.0, "msg-service counts its writes: {before}");

    alice
        .send_frame(&serde_json::json!({"type": "typing", "conv_id": "dm:alice:bob"}))
        .await;
    for bob in [&mut bob_phone, &mut bob_laptop] {
        let frame = bob.next_frame_of_type("typing").await;
        assert_eq!(frame["conv_id"], "dm:alice:bob", "{frame}");
        assert_eq!(frame["from"], "alice", "{frame}");
    }
    alice
        .send_frame(&serde_json::json!({"type": "typing", "conv_id": "dm:alice:carol"}))
        .await;
    let frame = carol.next_frame_of_type("typing").await;
    assert_eq!(frame["from"], "alice", "{frame}");
    assert_eq!(
        cluster.store_writes().await,
        before,
        "typing writes nothing"
    );
}

#[tokio::test]
async fn a_presence_watch_on_one_gateway_hears_a_user_of_the_other_come_and_go() {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    alice.send("bob", "p-1", "so we share a conversation").await;
    let bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let ask = serde_json::json!({"type": "presence", "users": ["bob"], "watch": true});
    let reply = alice.request(ask).await;
    assert_eq!(
        reply["presence"],
        serde_json::json!([{"user": "bob", "online": true}]),
        "{reply}"
    );

    bob.close().await;
    let gone = alice.next_frame_of_type("presence").await;
    assert_eq!(gone["user"], "bob", "{gone}");
    assert_eq!(gone["online"], false, "{gone}");
    assert!(gone["last_seen"].as_u64().is_some(), "{gone}");
    let _bob = cluster.ws(&cluster.gw2, "bob", "laptop").await;
    let back = alice.next_frame_of_type("presence").await;
    assert_eq!(
        back,
        serde_json::json!({"type": "presence", "user": "bob", "online": true})
    );
}

#[tokio::test]
async fn a_recall_through_one_gateway_blanks_the_message_for_a_member_on_the_other_and_in_the_cached_inbox()
 {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let sent = alice.send("bob", "r-0", "a secret").await;
    let conv_seq = u64_of(&sent, "conv_seq");
    bob.wait_notify(1).await;
    // Read once: the inbox is in the Redis cache with the body.
    assert_eq!(bob.sync(0).await["entries"][0]["body"], "a secret");

    let edited = alice
        .request(serde_json::json!({"type": "edit", "client_msg_id": "r-1", "conv_id": "dm:alice:bob", "ref": conv_seq, "body": "a typo"}))
        .await;
    assert_eq!(edited["type"], "ack", "{edited}");
    let recalled = alice
        .request(serde_json::json!({"type": "recall", "client_msg_id": "r-2", "conv_id": "dm:alice:bob", "ref": conv_seq}))
        .await;
    assert_eq!(recalled["type"], "ack", "{recalled}");
    let notify = bob.wait_notify_frame(3).await;
    assert!(!notify.to_string().contains("a secret"), "{notify}");

    let entries = bob.sync_all(0).await;
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["text", "edit", "recall"], "{entries:?}");
    assert_eq!(entries[0]["body"], "", "blank in the inbox: {entries:?}");
    assert_eq!(entries[0]["recalled"], true);
    assert_eq!(entries[1]["body"], "a typo");
    assert_eq!(u64_of(&entries[2], "ref"), conv_seq);
    let path = format!("{}/v1/conversations/dm:alice:bob/messages", cluster.gw2);
    let history: Value = cluster
        .http
        .get(&path)
        .bearer_auth(cluster.token("bob"))
        .send()
        .await
        .expect("history answers")
        .json()
        .await
        .expect("a JSON page");
    assert!(!history.to_string().contains("a secret"), "{history}");
    assert_eq!(history["messages"][2]["recalled"], true, "{history}");
}

#[tokio::test]
async fn a_read_receipt_through_one_gateway_reaches_the_peer_on_the_other_and_the_markers_show_in_a_group()
 {
    let cluster = Cluster::up().await;
    let mut alice = cluster.ws(&cluster.gw1, "alice", "phone").await;
    let mut bob = cluster.ws(&cluster.gw2, "bob", "phone").await;
    let sent = alice.send("bob", "rd-1", "read me").await;
    let conv_seq = u64_of(&sent, "conv_seq");
    let alice_head = head_of(&mut alice).await;
    let ack = bob
        .request(
            serde_json::json!({"type": "read", "conv_id": "dm:alice:bob", "conv_seq": conv_seq}),
        )
        .await;
    assert_eq!(ack["type"], "read_ack", "{ack}");
    let notify = alice.wait_notify_frame(alice_head + 1).await;
    let page = alice.sync(alice_head).await;
    let entry = &page["entries"][0];
    assert_eq!(
        (entry["kind"].as_str(), entry["from"].as_str()),
        (Some("read"), Some("bob")),
        "{page}"
    );
    assert_eq!(u64_of(entry, "ref"), conv_seq);
    assert_eq!(
        notify["entries"], page["entries"],
        "the receipt rode in its notify"
    );

    let (status, group) = {
        let response = cluster
            .http
            .post(format!("{}/v1/conversations", cluster.gw1))
            .bearer_auth(cluster.token("alice"))
            .json(&serde_json::json!({"members": ["bob"]}))
            .send()
            .await
            .expect("create answers");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    assert_eq!(status, 201, "{group}");
    let conv = group["conv_id"].as_str().expect("an id").to_owned();
    let frame = serde_json::json!({"type": "send", "conv_id": conv, "client_msg_id": "rd-2", "body": "team"});
    assert_eq!(alice.request(frame).await["type"], "ack");
    let read = serde_json::json!({"type": "read", "conv_id": conv, "conv_seq": 1});
    assert_eq!(bob.request(read).await["type"], "read_ack");
    let view: Value = cluster
        .http
        .get(format!("{}/v1/conversations/{conv}", cluster.gw1))
        .bearer_auth(cluster.token("alice"))
        .send()
        .await
        .expect("the conversation answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        view["read"],
        serde_json::json!({"alice": 0, "bob": 1}),
        "{view}"
    );
}

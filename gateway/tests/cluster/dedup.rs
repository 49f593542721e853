//! Idempotent sends across gateways: the dedup key lives in the shared
//! msg-service, so a retry through another gateway finds the first send.

use serde_json::{Value, json};

use crate::harness::Cluster;
use crate::helpers::{WAIT, msg_ids, without_rid};
use crate::ws_client::WsClient;

/// Sends `frame` with `rid` without waiting for the reply.
async fn send_with_rid(client: &mut WsClient, rid: &str, client_msg_id: &str) {
    let frame = json!({"type": "send", "rid": rid, "to": "frank",
        "client_msg_id": client_msg_id, "body": "only once"});
    client.send_frame(&frame).await;
}

/// The reply carrying `rid`, skipping notifies.
async fn reply_to(client: &mut WsClient, rid: &str) -> Value {
    loop {
        let frame = client
            .try_next_frame()
            .await
            .unwrap_or_else(|ended| panic!("the socket ended: {ended:?}"));
        if frame["rid"] == rid {
            return frame;
        }
        assert_eq!(frame["type"], "notify", "an unexpected frame: {frame}");
    }
}

#[tokio::test]
async fn a_retry_of_a_send_through_the_other_gateway_returns_the_same_ack_and_stores_one_message() {
    let cluster = Cluster::up().await;
    let mut erin_gw1 = cluster.ws(&cluster.gw1, "erin", "phone").await;
    let mut erin_gw2 = cluster.ws(&cluster.gw2, "erin", "laptop").await;

    // A retry after the first send was acked.
    let first = erin_gw1.send("frank", "d-1", "only once").await;
    let retry = erin_gw2.send("frank", "d-1", "only once").await;
    assert_eq!(without_rid(&first), without_rid(&retry), "the same ack");

    // Both at the same time, one through each gateway.
    send_with_rid(&mut erin_gw1, "a", "d-2").await;
    send_with_rid(&mut erin_gw2, "b", "d-2").await;
    let (one, two) = tokio::join!(reply_to(&mut erin_gw1, "a"), reply_to(&mut erin_gw2, "b"));
    assert_eq!(one["type"], "ack", "{one}");
    assert_eq!(without_rid(&one), without_rid(&two), "the same ack");

    // A retry over REST through the load balancer.
    let conv = first["conv_id"].as_str().expect("conv_id");
    assert_eq!(conv, "dm:erin:frank");
    let rest = cluster
        .http
        .post(format!("{}/v1/conversations/{conv}/messages", cluster.lb))
        .bearer_auth(cluster.token("erin"))
        .json(&json!({"client_msg_id": "d-1", "body": "only once"}))
        .timeout(WAIT)
        .send()
        .await
        .expect("POST a message");
    assert!(rest.status().is_success(), "{}", rest.status());
    let rest: Value = rest.json().await.expect("an ack body");
    for field in ["client_msg_id", "conv_id", "conv_seq", "seq", "ts"] {
        assert_eq!(rest[field], first[field], "{field}: {rest} vs {first}");
    }

    // One entry per message in both inboxes, one message each in the log.
    let mut frank = cluster.ws(&cluster.lb, "frank", "phone").await;
    assert_eq!(msg_ids(&frank.sync_all(0).await), ["d-1", "d-2"]);
    assert_eq!(msg_ids(&erin_gw2.sync_all(0).await), ["d-1", "d-2"]);
    let history: Value = cluster
        .http
        .get(format!("{}/v1/conversations/{conv}/messages", cluster.lb))
        .bearer_auth(cluster.token("frank"))
        .timeout(WAIT)
        .send()
        .await
        .expect("GET the history")
        .error_for_status()
        .expect("the history answers 200")
        .json()
        .await
        .expect("a history page");
    let messages = history["messages"].as_array().expect("messages");
    // Newest first.
    assert_eq!(msg_ids(messages), ["d-2", "d-1"], "{history}");
    assert_eq!(messages[1]["conv_seq"], first["conv_seq"]);
    assert_eq!(messages[0]["conv_seq"], one["conv_seq"]);
}

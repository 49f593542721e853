//! Typing indicators (protocol 1.1): to the other members' connected
//! devices, never back to the typist, `forbidden` for a non-member, and at
//! most one per user and conversation every 3 s.

use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::ws_client::WsClient;

fn typing(conv_id: &str) -> Value {
    json!({"type": "typing", "conv_id": conv_id})
}

/// The next typing indicator `client` gets: (conv_id, from).
async fn next_typing(client: &mut WsClient) -> (String, String) {
    let frame = client.next_frame_of_type("typing").await;
    let field = |name: &str| frame[name].as_str().unwrap_or_default().to_owned();
    (field("conv_id"), field("from"))
}

#[tokio::test]
async fn typing_reaches_every_device_of_the_other_members_and_not_the_typist() {
    let app = spawn_app().await;
    let mut alice_phone = app.ws("alice", "phone").await;
    let mut alice_laptop = app.ws("alice", "laptop").await;
    let mut bob_phone = app.ws("bob", "phone").await;
    let mut bob_laptop = app.ws("bob", "laptop").await;
    let dm = "dm:alice:bob";

    alice_phone.send_frame(&typing(dm)).await;
    for bob in [&mut bob_phone, &mut bob_laptop] {
        assert_eq!(next_typing(bob).await, (dm.into(), "alice".into()));
    }
    // Alice's own laptop got nothing of hers: the first indicator it sees
    // is bob's, sent after hers went out.
    bob_laptop.send_frame(&typing(dm)).await;
    assert_eq!(
        next_typing(&mut alice_laptop).await,
        (dm.into(), "bob".into())
    );
    assert_eq!(
        next_typing(&mut alice_phone).await,
        (dm.into(), "bob".into())
    );

    // In a group: every other member.
    let mut carol = app.ws("carol", "phone").await;
    let g = app.group("alice", &["bob", "carol"]).await;
    carol.send_frame(&typing(&g)).await;
    assert_eq!(
        next_typing(&mut alice_phone).await,
        (g.clone(), "carol".into())
    );
    assert_eq!(next_typing(&mut bob_phone).await, (g, "carol".into()));
}

#[tokio::test]
async fn a_non_member_gets_the_same_forbidden_whether_the_conversation_exists_or_not() {
    let app = spawn_app().await;
    let g = app.group("alice", &["bob"]).await;
    let mut mallory = app.ws("mallory", "phone").await;
    let mut refusals = Vec::new();
    for conv in ["dm:alice:bob", g.as_str(), "g:does-not-exist"] {
        let reply = mallory
            .request(json!({"type": "typing", "conv_id": conv}))
            .await;
        assert_eq!(reply["type"], "error", "{conv}: {reply}");
        assert_eq!(reply["code"], "forbidden", "{conv}: {reply}");
        refusals.push(reply["message"].clone());
    }
    assert_eq!(
        refusals[1], refusals[2],
        "a group that exists and one that does not"
    );
}

#[tokio::test]
async fn a_second_indicator_within_3_s_is_dropped() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    let mut bob = app.ws("bob", "phone").await;
    let g = app.group("alice", &["bob"]).await;
    let dm = "dm:alice:bob";

    alice.send_frame(&typing(dm)).await;
    alice.send_frame(&typing(dm)).await;
    // Another conversation has a 3 s of its own; its indicator goes the same
    // way after the dropped one, so bob has seen all there was before it.
    alice.send_frame(&typing(&g)).await;
    assert_eq!(next_typing(&mut bob).await, (dm.into(), "alice".into()));
    assert_eq!(next_typing(&mut bob).await, (g, "alice".into()));
}

#[tokio::test]
async fn a_typing_frame_without_a_valid_conversation_is_a_bad_request() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice", "phone").await;
    for frame in [
        json!({"type": "typing"}),
        json!({"type": "typing", "conv_id": 7}),
        json!({"type": "typing", "conv_id": "nonsense"}),
    ] {
        let reply = alice.request(frame.clone()).await;
        assert_eq!(reply["code"], "bad_request", "{frame}: {reply}");
    }
}

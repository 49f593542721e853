//! Dedup: `(sender, client_msg_id)` is the idempotency key of a send.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::helpers::{TestService, dm, user};

#[tokio::test]
async fn a_duplicate_client_msg_id_returns_the_first_ack() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = svc.send(&alice, &bob, "c-42", "hi").await?;
    let again = svc.send(&alice, &bob, "c-42", "hi").await?;
    assert_eq!(again, first);
    Ok(())
}

#[tokio::test]
async fn a_duplicate_with_another_body_stores_nothing_new() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = svc.send(&alice, &bob, "c-42", "first").await?;
    let (alice_len, bob_len) = (
        svc.sync_all(&alice, 0).await?.len(),
        svc.sync_all(&bob, 0).await?.len(),
    );

    let again = svc.send(&alice, &bob, "c-42", "second").await?;

    assert_eq!(again, first);
    assert_eq!(svc.sync_all(&alice, 0).await?.len(), alice_len);
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), bob_len);
    let log = svc.full_history(&bob, &dm(&alice, &bob)).await?;
    let bodies: Vec<&str> = log.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["first"]);
    Ok(())
}

#[tokio::test]
async fn a_duplicate_naming_the_conversation_instead_of_the_peer_is_still_a_duplicate()
-> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = svc.send(&alice, &bob, "c-1", "hi").await?;
    let again = svc.send(&alice, &dm(&alice, &bob), "c-1", "hi").await?;
    assert_eq!(again, first);
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_store_one_message() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sends = JoinSet::new();
    for _ in 0..16 {
        let (service, alice, bob) = (Arc::clone(&svc.service), alice.clone(), bob.clone());
        sends.spawn(
            async move { crate::helpers::send(&service, &alice, &bob, "same", "once").await },
        );
    }
    let mut acks = Vec::new();
    while let Some(ack) = sends.join_next().await {
        acks.push(ack??);
    }
    assert!(
        acks.windows(2).all(|w| w[0] == w[1]),
        "every retry got the same ack: {acks:?}"
    );
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), 1);
    assert_eq!(svc.sync_all(&alice, 0).await?.len(), 1);
    assert_eq!(svc.full_history(&alice, &dm(&alice, &bob)).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_same_client_msg_id_from_two_senders_is_two_messages() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let from_alice = svc.send(&alice, &carol, "c-1", "from alice").await?;
    let from_bob = svc.send(&bob, &carol, "c-1", "from bob").await?;
    assert_ne!(from_alice.conv_id, from_bob.conv_id);
    let carol_inbox = svc.sync_all(&carol, 0).await?;
    let senders: Vec<&str> = carol_inbox
        .iter()
        .map(|e| e.message.from.as_str())
        .collect();
    assert_eq!(senders, ["alice", "bob"]);
    Ok(())
}

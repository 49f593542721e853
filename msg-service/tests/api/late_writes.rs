//! Writes that land after a restart: a process whose store write timed out
//! dies, a new process takes the store over, and the write lands later (as
//! a remote store can replay it). The new process fences each log it
//! opens, so the late write never shows below entries readers have passed,
//! and the sender's retry stores the message once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use msg_service::{Backends, MessageApi, MessageService, ServiceConfig};
use proto::{Entry, HistoryMessage, UserId};
use storage::{EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, MessageStore, Page};
use tempfile::TempDir;

use crate::faults::assert_unavailable;
use crate::helpers::{drain, send, user};
use crate::store_double::{Faults, StoreDouble};

/// A msg-service process over `store`, through the fault double when given.
fn process(store: &EmbeddedStore, faults: Option<&Arc<Faults>>) -> MessageService {
    let store: Arc<dyn MessageStore> = match faults {
        Some(faults) => Arc::new(StoreDouble {
            inner: store.clone(),
            faults: Arc::clone(faults),
            reads: Arc::default(),
        }),
        None => Arc::new(store.clone()),
    };
    MessageService::new(
        Backends {
            store,
            cache: Arc::new(InProcessCache::default()),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        },
        ServiceConfig::default(),
    )
}

fn bodies(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.body.as_str()).collect()
}

fn history_bodies(messages: &[HistoryMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

#[tokio::test]
async fn an_inbox_write_that_lands_after_a_restart_leaves_no_late_hole() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), storage::Durability::Fsync)?;
    let faults = Arc::new(Faults::default());
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));

    let first = process(&store, Some(&faults));
    send(&first, &alice, &bob, "m1", "one").await?;
    *faults
        .inbox_late_of
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    assert_unavailable(send(&first, &alice, &bob, "m2", "two").await);
    drop(first); // it dies with bob's write unsettled

    let second = process(&store, None);
    send(&second, &carol, &bob, "m3", "three").await?;
    let seen = drain(&second, &bob, 0, 50).await?;
    assert_eq!(bodies(&seen), ["one", "three"]);
    let cursor = seen.last().map_or(0, |e| e.seq);

    assert_eq!(
        faults.land_late_writes(&store).await?,
        1,
        "the late write lands"
    );
    send(&second, &alice, &bob, "m2", "two").await?; // alice's retry
    let after = drain(&second, &bob, cursor, 50).await?;
    assert_eq!(
        bodies(&after),
        ["two"],
        "bob's client, from where it was, gets it"
    );
    let everything = drain(&second, &bob, 0, 50).await?;
    assert_eq!(
        bodies(&everything),
        ["one", "three", "two"],
        "and once, in that order"
    );
    Ok(())
}

/// A first process sends alice's "one" to bob, then dies while its append
/// of alice's "two" (`m2`) is held back as a late write: the store it
/// leaves, and the faults holding the write.
async fn after_a_late_conversation_append() -> anyhow::Result<(TempDir, EmbeddedStore, Arc<Faults>)>
{
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), storage::Durability::Fsync)?;
    let faults = Arc::new(Faults::default());
    let (alice, bob) = (user("alice"), user("bob"));
    let first = process(&store, Some(&faults));
    send(&first, &alice, &bob, "m1", "one").await?;
    faults.message_late.store(1, Ordering::SeqCst);
    assert_unavailable(send(&first, &alice, &bob, "m2", "two").await);
    Ok((dir, store, faults))
}

#[tokio::test]
async fn a_conversation_append_that_lands_after_a_restart_leaves_no_late_hole() -> anyhow::Result<()>
{
    let (_dir, store, faults) = after_a_late_conversation_append().await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let conv = proto::ConvId::dm(&alice, &bob)?;
    let second = process(&store, None);
    send(&second, &bob, &alice, "r1", "reply").await?;
    assert_eq!(
        faults.land_late_writes(&store).await?,
        1,
        "the late append lands"
    );
    let page = second.history(&bob, &conv, Page::After(0), 50).await?;
    assert_eq!(history_bodies(&page.messages), ["one", "reply"]);

    send(&second, &alice, &bob, "m2", "two").await?; // alice's retry
    let page = second.history(&bob, &conv, Page::After(0), 50).await?;
    assert_eq!(history_bodies(&page.messages), ["one", "reply", "two"]);
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.conv_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let inbox: Vec<UserId> = drain(&second, &bob, 0, 50)
        .await?
        .iter()
        .map(|e| e.message.from.clone())
        .collect();
    assert_eq!(inbox, [alice.clone(), bob.clone(), alice.clone()]);
    Ok(())
}

#[tokio::test]
async fn a_retry_never_acks_a_late_append_that_landed_above_the_head_already_read()
-> anyhow::Result<()> {
    let (_dir, store, faults) = after_a_late_conversation_append().await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let conv = proto::ConvId::dm(&alice, &bob)?;
    let second = process(&store, None);
    // The new process reads the conversation (its head: "one") before the
    // late append lands; then alice's retry finds the dedup record.
    let page = second.history(&bob, &conv, Page::After(0), 50).await?;
    assert_eq!(history_bodies(&page.messages), ["one"]);
    assert_eq!(faults.land_late_writes(&store).await?, 1);
    let ack = send(&second, &alice, &bob, "m2", "two").await?;
    send(&second, &bob, &alice, "r1", "reply").await?;
    let page = second.history(&bob, &conv, Page::After(0), 50).await?;
    assert_eq!(history_bodies(&page.messages), ["one", "two", "reply"]);
    assert_eq!(
        page.messages[1].conv_seq, ack.conv_seq,
        "the acked one is the one kept"
    );
    Ok(())
}

//! Notify: after an inbox append, the gateways holding that user's sockets
//! get the new head on the bus; nobody else does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use msg_service::ServiceConfig;
use proto::{Seq, UserId};
use storage::{
    BusMessage, GatewayId, InProcessCache, InProcessPresence, InboxCache, Notification, NotifyBus,
    Presence, Subscription,
};
use tokio::sync::mpsc::error::TryRecvError;

use crate::faults::{assert_unavailable, start_faulty_with};
use crate::helpers::{Options, TestService, send, seqs, user};
use crate::store_double::hold;

/// Every notification already queued for a gateway.
fn queued_notes(sub: &mut Subscription) -> Vec<Notification> {
    let mut notes = Vec::new();
    loop {
        match sub.try_recv() {
            Ok(BusMessage::Head(note)) => notes.push(note),
            Ok(other) => panic!("msg-service published {other:?}"),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return notes,
        }
    }
}

/// Whose head and which head every notification already queued tells.
fn queued(sub: &mut Subscription) -> Vec<(UserId, Seq)> {
    queued_notes(sub)
        .into_iter()
        .map(|note| (note.user, note.head))
        .collect()
}

/// Subscribes gateway gw-1 to the bus and tells presence it holds `user`.
async fn on_a_gateway(svc: &TestService, user: &UserId) -> anyhow::Result<Subscription> {
    let gateway = GatewayId("gw-1".into());
    let sub = svc.bus.subscribe(&gateway).await?;
    svc.presence.connected(user, &gateway).await?;
    Ok(sub)
}

fn note(name: &str, head: Seq) -> (UserId, Seq) {
    (user(name), head)
}

#[tokio::test]
async fn a_connected_recipient_gets_a_notify_with_the_new_head_before_the_ack() -> anyhow::Result<()>
{
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sub = on_a_gateway(&svc, &bob).await?;

    svc.send(&alice, &bob, "c-1", "one").await?;
    svc.send(&alice, &bob, "c-2", "two").await?;

    // The notify is published before the send returns, so it is queued now.
    let notes = queued_notes(&mut sub);
    let heads: Vec<_> = notes.iter().map(|n| (n.user.clone(), n.head)).collect();
    assert_eq!(
        heads,
        [note("bob", 1), note("bob", 2)],
        "bob's, not alice's"
    );
    // Each carries its entry (protocol 1.1): every entry above `prev`.
    for (note, (id, body)) in notes.iter().zip([("c-1", "one"), ("c-2", "two")]) {
        let inline = note.inline.as_ref().context("the entry inline")?;
        assert_eq!(inline.prev, note.head - 1);
        let entries: Vec<_> = inline
            .entries
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.message.client_msg_id.as_str(),
                    e.message.body.as_str(),
                )
            })
            .collect();
        assert_eq!(entries, [(note.head, id, body)]);
    }
    assert_eq!(svc.inbox_head(&bob).await?, 2);
    Ok(())
}

#[tokio::test]
async fn each_gateway_gets_the_notifies_of_its_own_users() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let (gw1, gw2) = (GatewayId("gw-1".into()), GatewayId("gw-2".into()));
    let (mut sub1, mut sub2) = (
        svc.bus.subscribe(&gw1).await?,
        svc.bus.subscribe(&gw2).await?,
    );
    svc.presence.connected(&alice, &gw1).await?;
    svc.presence.connected(&bob, &gw2).await?;
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], None)
        .await?
        .conv_id;
    svc.send(&carol, &bob, "warm-up", "hi").await?;

    svc.send(&carol, &group, "g-1", "hi all").await?;

    assert_eq!(queued(&mut sub1), [note("alice", 1)]);
    assert_eq!(queued(&mut sub2), [note("bob", 1), note("bob", 2)]);
    Ok(())
}

#[tokio::test]
async fn a_user_who_disconnected_gets_no_notify_but_loses_nothing() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sub = on_a_gateway(&svc, &bob).await?;
    svc.presence
        .disconnected(&bob, &GatewayId("gw-1".into()))
        .await?;

    svc.send(&alice, &bob, "c-1", "while you were away").await?;

    assert!(queued(&mut sub).is_empty());
    assert_eq!(
        svc.sync_all(&bob, 0).await?.len(),
        1,
        "the next sync finds the entry"
    );
    Ok(())
}

#[tokio::test]
async fn an_inbox_entry_reaches_the_cache_and_the_notify_only_once_it_is_durable()
-> anyhow::Result<()> {
    let cache = Arc::new(InProcessCache::default());
    let (svc, faults, _) = start_faulty_with(Options {
        // One inbox append at a time: the held fsync is bob's alone.
        config: ServiceConfig {
            fanout_concurrency: 1,
            ..ServiceConfig::default()
        },
        cache: Some(Arc::clone(&cache) as _),
        ..Options::default()
    })?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sub = on_a_gateway(&svc, &bob).await?;
    let (reached, release) = hold(&faults.hold_durable_of, &bob);

    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), bob.clone());
    let send = tokio::spawn(async move { send(&service, &from, &to, "c-1", "hi").await });
    let seq = reached.await.context("bob's entry waits for its fsync")?;
    assert!(
        cache.newest(&bob, Seq::MAX, 10).await?.is_empty(),
        "a machine crash now loses entry {seq}: the cache must not hold it"
    );
    assert!(queued(&mut sub).is_empty(), "nor a notify announce it");

    let _ = release.send(());
    send.await??;
    assert_eq!(seqs(&cache.newest(&bob, Seq::MAX, 10).await?), [seq]);
    assert_eq!(queued(&mut sub), [note("bob", seq)]);
    Ok(())
}

#[tokio::test]
async fn an_entry_made_visible_by_settling_an_uncertain_write_is_notified() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options::default())?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sub = on_a_gateway(&svc, &bob).await?;
    svc.send(&alice, &bob, "c-1", "first").await?;
    *faults
        .inbox_written_then_fail
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());

    assert_unavailable(svc.send(&alice, &bob, "c-2", "timed out").await);
    // The retry finds bob's entry stored and settles it: it becomes visible.
    svc.send(&alice, &bob, "c-2", "timed out").await?;

    assert_eq!(svc.inbox_head(&bob).await?, 2);
    assert_eq!(queued(&mut sub), [note("bob", 1), note("bob", 2)]);
    Ok(())
}

/// Presence whose next `gateways` lookups fail (Redis slow or down).
struct FailingLookups {
    inner: Arc<InProcessPresence>,
    failing: AtomicUsize,
}

#[async_trait]
impl Presence for FailingLookups {
    async fn connected(&self, user: &UserId, gateway: &GatewayId) -> storage::Result<()> {
        self.inner.connected(user, gateway).await
    }
    async fn disconnected(&self, user: &UserId, gateway: &GatewayId) -> storage::Result<()> {
        self.inner.disconnected(user, gateway).await
    }
    async fn gateways(&self, user: &UserId) -> storage::Result<Vec<GatewayId>> {
        let failing = self.failing.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing.store(failing - 1, Ordering::SeqCst);
            return Err(storage::Error::Unavailable("injected".into()));
        }
        self.inner.gateways(user).await
    }
    async fn refresh(&self, gateway: &GatewayId, users: &[UserId]) -> storage::Result<()> {
        self.inner.refresh(gateway, users).await
    }
    async fn set_last_seen(&self, user: &UserId, at_ms: u64) -> storage::Result<()> {
        self.inner.set_last_seen(user, at_ms).await
    }
    async fn last_seen(&self, user: &UserId) -> storage::Result<Option<u64>> {
        self.inner.last_seen(user).await
    }
}

#[tokio::test]
async fn a_notify_whose_presence_lookup_failed_is_sent_once_presence_answers_again()
-> anyhow::Result<()> {
    let svc = TestService::start_with(Options {
        wrap_presence: Some(Arc::new(|inner| {
            Arc::new(FailingLookups {
                inner,
                failing: AtomicUsize::new(2),
            })
        })),
        ..Options::default()
    })?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sub = on_a_gateway(&svc, &bob).await?;

    // The last message of the conversation: no later notify would cover it.
    svc.send(&alice, &bob, "c-1", "the last one").await?;
    assert!(queued(&mut sub).is_empty(), "its lookup failed");

    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .context("the kept notify is sent once presence answers")?;
    assert_eq!(
        got,
        Some(Notification::head(user("bob"), 1).into()),
        "the head alone: the client syncs"
    );
    Ok(())
}

//! Notify: after an inbox append, the gateways holding that user's sockets
//! get the new head on the bus; nobody else does.

use proto::Seq;
use storage::{GatewayId, Notification, NotifyBus, Presence, Subscription};
use tokio::sync::mpsc::error::TryRecvError;

use crate::helpers::{TestService, user};

/// Every notification already queued for a gateway.
fn queued(sub: &mut Subscription) -> Vec<Notification> {
    let mut notes = Vec::new();
    loop {
        match sub.try_recv() {
            Ok(note) => notes.push(note),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return notes,
        }
    }
}

fn note(name: &str, head: Seq) -> Notification {
    Notification {
        user: user(name),
        head,
    }
}

#[tokio::test]
async fn a_connected_recipient_gets_a_notify_with_the_new_head_before_the_ack() -> anyhow::Result<()>
{
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let gateway = GatewayId("gw-1".into());
    let mut sub = svc.bus.subscribe(&gateway).await?;
    svc.presence.connected(&bob, &gateway).await?;

    svc.send(&alice, &bob, "c-1", "one").await?;
    svc.send(&alice, &bob, "c-2", "two").await?;

    // The notify is published before the send returns, so it is queued now.
    assert_eq!(
        queued(&mut sub),
        [note("bob", 1), note("bob", 2)],
        "bob's, not alice's"
    );
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
    let gateway = GatewayId("gw-1".into());
    let mut sub = svc.bus.subscribe(&gateway).await?;
    svc.presence.connected(&bob, &gateway).await?;
    svc.presence.disconnected(&bob, &gateway).await?;

    svc.send(&alice, &bob, "c-1", "while you were away").await?;

    assert!(queued(&mut sub).is_empty());
    assert_eq!(
        svc.sync_all(&bob, 0).await?.len(),
        1,
        "the next sync finds the entry"
    );
    Ok(())
}

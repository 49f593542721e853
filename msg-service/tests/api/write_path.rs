//! The send path against slow fan-outs, membership changes and crashes
//! (issue 18): a sender's lock is held only for dedup, membership changes
//! are serialized with the conversation's sends, and a fan-out intent is
//! durable before the fan-out starts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use msg_service::{MessageApi, ServiceConfig};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::error::Elapsed;

use crate::faults::{assert_unavailable, start_faulty_with};
use crate::helpers::{Options, send, user, users};
use crate::retry_queue::inbox_ids;
use crate::store_double::hold;

/// Longer than any healthy call here takes; only a call stuck behind
/// another one runs into it.
const STUCK: Duration = Duration::from_secs(5);

/// A task's outcome: the one a short wait already got, else waited for now.
async fn finish<T>(
    early: Result<Result<T, JoinError>, Elapsed>,
    task: JoinHandle<T>,
) -> Result<T, JoinError> {
    match early {
        Ok(done) => done,
        Err(_) => task.await,
    }
}

#[tokio::test]
async fn a_slow_group_fan_out_does_not_hold_up_the_senders_next_send() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options::default())?;
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], None)
        .await?
        .conv_id;
    let (written, release) = hold(&faults.hold_inbox_of, &carol);

    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), group.clone());
    let slow = tokio::spawn(async move { send(&service, &from, &to, "g-1", "hi all").await });
    written.await.context("the group's fan-out reached carol")?;
    let next = tokio::time::timeout(STUCK, svc.send(&alice, &dave, "d-1", "meanwhile")).await;

    let _ = release.send(());
    slow.await??;
    next.context("alice's next send waited for her group's fan-out")??;
    Ok(())
}

#[tokio::test]
async fn concurrent_adds_never_take_a_group_past_its_member_cap() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options {
        config: ServiceConfig {
            max_group_members: 4,
            ..ServiceConfig::default()
        },
        ..Options::default()
    })?;
    let alice = user("alice");
    let group = svc
        .create_group(&alice, &users("m", 2), None)
        .await?
        .conv_id;
    let (first, second) = (user("first"), user("second"));
    let (adding, release) = hold(&faults.hold_add_of, &first);

    let adds = [first, second].map(|newcomer| {
        let (service, caller, conv) = (Arc::clone(&svc.service), alice.clone(), group.clone());
        tokio::spawn(async move { service.add_members(&caller, &conv, vec![newcomer]).await })
    });
    adding.await.context("the first add is being written")?;
    let [first_add, mut second_add] = adds;
    // The second add either waits for the first or ends first.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second_add).await;
    let _ = release.send(());
    let outcomes = [
        first_add.await?.is_ok(),
        finish(early, second_add).await?.is_ok(),
    ];

    let members = svc.conversation(&alice, &group).await?.members;
    assert!(members.len() <= 4, "{} members: {members:?}", members.len());
    assert_eq!(outcomes, [true, false], "the add that fits succeeds");
    Ok(())
}

#[tokio::test]
async fn a_member_removed_before_a_message_is_logged_never_receives_it() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options::default())?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol], None)
        .await?
        .conv_id;
    let (logging, release) = hold(&faults.hold_message_of, &alice);

    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), group.clone());
    let send = tokio::spawn(async move { send(&service, &from, &to, "g-1", "hi all").await });
    logging.await.context("the message is being logged")?;
    let service = Arc::clone(&svc.service);
    let (caller, conv, member) = (alice.clone(), group.clone(), bob.clone());
    let mut removal =
        tokio::spawn(async move { service.remove_member(&caller, &conv, &member).await });
    // The removal either waits for the send (it is ordered after it) or
    // ends first; a short bound tells which.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut removal).await;
    let removed_first = early.is_ok();
    let _ = release.send(());
    send.await??;
    finish(early, removal).await??;

    let got_it = !svc.sync_all(&bob, 0).await?.is_empty();
    assert!(
        !(removed_first && got_it),
        "bob was removed before the message was logged, yet received it"
    );
    Ok(())
}

#[tokio::test]
async fn a_retry_of_a_delivered_message_answers_its_ack_after_the_sender_was_removed()
-> anyhow::Result<()> {
    let svc = crate::helpers::TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let group = svc
        .create_group(&alice, std::slice::from_ref(&bob), None)
        .await?
        .conv_id;
    let ack = svc.send(&alice, &group, "g-1", "bye").await?;
    svc.remove_member(&bob, &group, &alice).await?;

    // The first ack was lost; the client retries with the same id.
    let retry = svc.send(&alice, &group, "g-1", "bye").await?;
    assert_eq!(retry, ack);
    Ok(())
}

#[tokio::test]
async fn a_retry_delivers_only_to_the_members_the_message_was_sent_to() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options::default())?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, std::slice::from_ref(&bob), None)
        .await?
        .conv_id;
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    assert_unavailable(svc.send(&alice, &group, "g-1", "hi").await);
    svc.add_members(&alice, &group, std::slice::from_ref(&carol))
        .await?;

    // The client retries the send that failed for bob.
    svc.send(&alice, &group, "g-1", "hi").await?;
    assert_eq!(inbox_ids(&svc, &bob).await?, ["g-1"]);
    assert!(
        inbox_ids(&svc, &carol).await?.is_empty(),
        "carol joined after the message was sent, yet received it"
    );
    Ok(())
}

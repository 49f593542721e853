//! The fan-out retry queue: a send whose inbox appends fail for some members
//! answers `unavailable` as before, queues the rest durably, and the worker
//! delivers it exactly once, also after a restart, resuming its pass at the
//! checkpoint. ARCHITECTURE.md, "Failure behaviour": a fan-out half done.

use std::time::Duration;

use anyhow::Context;
use msg_service::audit::find_missing;
use msg_service::{RetryConfig, ServiceConfig};
use proto::UserId;
use storage::{EmbeddedStore, MessageStore, RetryItem};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::faults::{BareStore, assert_unavailable, start_faulty_with};
use crate::helpers::{Options, TestService, seqs, strictly_increasing, user, users};
use crate::store_double::hold;

/// Short backoff and polling, so a test waits milliseconds for a retry.
fn quick_retries() -> Options {
    Options {
        config: ServiceConfig {
            retry: RetryConfig {
                backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                poll: Duration::from_millis(10),
            },
            ..ServiceConfig::default()
        },
        ..Options::default()
    }
}

/// The embedded store under the double (to read past the service).
pub fn bare(store: &BareStore) -> anyhow::Result<EmbeddedStore> {
    store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the service opened no store")
}

/// A crash and a restart; the test's handle on the store is let go first,
/// or the store would stay open (locked) under the new service.
fn restart(svc: TestService, store: &BareStore) -> anyhow::Result<TestService> {
    drop(store.lock().unwrap_or_else(|p| p.into_inner()).take());
    svc.restart()
}

async fn queued(store: &BareStore) -> anyhow::Result<Vec<RetryItem>> {
    Ok(bare(store)?.retry_items(None, 1000).await?)
}

/// Waits (bounded) until the worker has emptied the queue.
async fn drained(svc: &TestService) -> anyhow::Result<()> {
    let mut passes = svc.service.retry_passes();
    let wait = async {
        loop {
            if svc.service.retry_queue_depth().await? == 0 {
                return anyhow::Ok(());
            }
            passes.changed().await?;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .context("the retry queue did not drain in 10 s")?
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// Waits (bounded) for the worker's next pass to end.
async fn next_pass(svc: &TestService) -> anyhow::Result<()> {
    let mut passes = svc.service.retry_passes();
    passes.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(10), passes.changed())
        .await
        .context("no retry pass in 10 s")??;
    Ok(())
}

/// The client_msg_ids in an inbox, in inbox order; checks seqs ascend.
pub async fn inbox_ids(svc: &TestService, member: &UserId) -> anyhow::Result<Vec<String>> {
    let entries = svc.sync_all(member, 0).await?;
    assert!(
        strictly_increasing(&seqs(&entries)),
        "{member}: {entries:?}"
    );
    Ok(entries
        .iter()
        .map(|e| e.message.client_msg_id.to_string())
        .collect())
}

#[tokio::test]
async fn a_fan_out_that_fails_part_way_is_queued_and_the_worker_delivers_it_once()
-> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let members = users("m", 4);
    let group = svc.create_group(&members[0], &members[1..], None).await?;
    *faults.inboxes_of.lock().unwrap_or_else(|p| p.into_inner()) =
        vec![members[1].clone(), members[2].clone()];

    assert_unavailable(svc.send(&members[0], &group.conv_id, "m-1", "hi").await);
    let items = queued(&store).await?;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].members, [members[1].clone(), members[2].clone()]);

    let worker = svc.service.start_retry_worker();
    drained(&svc).await?;
    svc.send(&members[3], &group.conv_id, "m-2", "after")
        .await?;
    for member in &members {
        assert_eq!(inbox_ids(&svc, member).await?, ["m-1", "m-2"], "{member}");
    }
    let report = find_missing(&bare(&store)?, 0, u64::MAX).await?;
    assert!(report.missing.is_empty(), "{report:?}");
    assert_eq!(report.messages, 2);
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_retry_that_fails_again_is_kept_with_its_backoff_and_delivered_later()
-> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    // The send's append and the worker's first two attempts fail.
    *faults.inboxes_of.lock().unwrap_or_else(|p| p.into_inner()) = vec![bob.clone(); 3];

    assert_unavailable(svc.send(&alice, &bob, "d-1", "hi").await);
    let worker = svc.service.start_retry_worker();
    drained(&svc).await?;

    assert!(
        faults
            .inboxes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    );
    assert_eq!(inbox_ids(&svc, &bob).await?, ["d-1"]);
    assert_eq!(inbox_ids(&svc, &alice).await?, ["d-1"]);
    assert!(queued(&store).await?.is_empty());
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_queued_fan_out_survives_a_restart_and_the_new_worker_delivers_it() -> anyhow::Result<()>
{
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    assert_unavailable(svc.send(&alice, &bob, "r-1", "hi").await);

    let svc = restart(svc, &store)?;
    assert_eq!(queued(&store).await?.len(), 1, "the queue is on disk");
    let worker = svc.service.start_retry_worker();
    drained(&svc).await?;
    assert_eq!(inbox_ids(&svc, &bob).await?, ["r-1"]);
    assert_eq!(inbox_ids(&svc, &alice).await?, ["r-1"]);
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn after_a_restart_the_worker_resumes_its_pass_at_the_checkpoint_and_skips_nothing()
-> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    for id in ["k-1", "k-2", "k-3"] {
        *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
        assert_unavailable(svc.send(&alice, &bob, id, "hi").await);
    }
    let items = queued(&store).await?;
    assert_eq!(items.len(), 3);
    // A worker stopped by a crash after the second item (kept, say, for its
    // backoff) left its checkpoint there, and its watermark past the three
    // sends (their fan-outs ended, queued). Past, not at: recovery finishes
    // the intents written in the watermark's millisecond too, and a send
    // in this one would be delivered before the pass.
    bare(&store)?
        .save_retry_checkpoint(Some(&items[1].key))
        .await?;
    bare(&store)?.save_fanout_watermark(now_ms() + 1).await?;

    let svc = restart(svc, &store)?;
    let worker = svc.service.start_retry_worker();
    drained(&svc).await?;
    // The pass went on after the checkpoint first, then started over.
    assert_eq!(inbox_ids(&svc, &bob).await?, ["k-3", "k-1", "k-2"]);
    assert_eq!(inbox_ids(&svc, &alice).await?, ["k-1", "k-2", "k-3"]);
    assert_eq!(bare(&store)?.retry_checkpoint().await?, None, "pass done");
    let report = find_missing(&bare(&store)?, 0, u64::MAX).await?;
    assert!(report.missing.is_empty(), "{report:?}");
    worker.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retry_racing_the_worker_leaves_one_copy_in_each_inbox() -> anyhow::Result<()> {
    let (svc, faults, _store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    let worker = svc.service.start_retry_worker();
    for round in 0..20 {
        let id = format!("x-{round}");
        *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
        assert_unavailable(svc.send(&alice, &bob, &id, "hi").await);
        // The worker was kicked by the enqueue; the retry runs meanwhile.
        svc.send(&alice, &bob, &id, "hi").await?;
    }
    drained(&svc).await?;
    let expected: Vec<String> = (0..20).map(|round| format!("x-{round}")).collect();
    assert_eq!(inbox_ids(&svc, &bob).await?, expected);
    assert_eq!(inbox_ids(&svc, &alice).await?, expected);
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_crash_between_the_conversation_append_and_the_retry_record_is_finished_at_the_next_start()
-> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    // Bob's append fails and the retry record is never written: as if the
    // process died between the conversation append and the queue write.
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    faults.enqueue_retry.store(1, Ordering::Release);
    assert_unavailable(svc.send(&alice, &bob, "lost-1", "hi").await);
    assert!(queued(&store).await?.is_empty(), "nothing queued");

    let svc = restart(svc, &store)?;
    let worker = svc.service.start_retry_worker();
    next_pass(&svc).await?;
    assert_eq!(
        inbox_ids(&svc, &bob).await?,
        ["lost-1"],
        "recovered at start"
    );
    assert_eq!(inbox_ids(&svc, &alice).await?, ["lost-1"]);
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_fan_out_watermark_never_passes_a_fan_out_in_flight() -> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    let worker = svc.service.start_retry_worker();
    let (written_rx, release_tx) = hold(&faults.hold_inbox_of, &bob);
    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), bob.clone());
    let send =
        tokio::spawn(async move { crate::helpers::send(&service, &from, &to, "w-1", "hi").await });
    written_rx.await.context("bob's append was reached")?;
    let intent = bare(&store)?.fanout_intents(0, u64::MAX, None, 10).await?;
    let written_at = intent.first().context("the send's intent")?.key.enqueued_at;

    next_pass(&svc).await?;
    next_pass(&svc).await?;
    let watermark = bare(&store)?.fanout_watermark().await?;
    assert!(
        watermark <= written_at,
        "{watermark} passed the fan-out in flight at {written_at}"
    );
    let _ = release_tx.send(());
    send.await?.context("the held send")?;
    next_pass(&svc).await?;
    next_pass(&svc).await?;
    let watermark = bare(&store)?.fanout_watermark().await?;
    assert!(
        watermark > written_at,
        "{watermark} moved past the finished fan-out"
    );
    worker.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_message_whose_write_another_send_settled_reaches_its_members_without_a_client_retry()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(quick_retries())?;
    let (alice, bob) = (user("alice"), user("bob"));
    let worker = svc.service.start_retry_worker();
    // Alice's write reports a failure but is stored; she never retries.
    faults.message_late.store(1, Ordering::Release);
    assert_unavailable(svc.send(&alice, &bob, "a-1", "timed out").await);
    // Bob's reply settles it: it is in the conversation's history now.
    svc.send(&bob, &alice, "b-1", "reply").await?;

    drained(&svc).await?;
    for member in [&alice, &bob] {
        // The worker appends it after the reply: inbox order is append order.
        let mut ids = inbox_ids(&svc, member).await?;
        ids.sort();
        assert_eq!(ids, ["a-1", "b-1"], "{member}: each once");
    }
    worker.stop().await;
    Ok(())
}

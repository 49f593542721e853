//! Store failures and cancelled sends, injected with a test double around
//! the embedded store. PROTOCOL.md: a client retries `unavailable` keeping
//! the same `client_msg_id`, and that retry stores nothing new; ARCHITECTURE.md:
//! the cache never shows a hole, so a sync never skips a stored entry.
//!

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use msg_service::Error;
use proto::{ErrorCode, Seq, UserId};
use storage::{EmbeddedStore, MessageStore, Page};

use crate::helpers::{Options, TestService, dm, seqs, user};
use crate::store_double::{Faults, StoreDouble, hold};

/// The embedded store under the double, once the service has opened it.
pub type BareStore = Arc<Mutex<Option<EmbeddedStore>>>;

/// A service on a faulty store; also returns the faults and the bare store
/// (to read what is really stored, past the service's cache and heads).
fn start_faulty() -> anyhow::Result<(TestService, Arc<Faults>, BareStore)> {
    start_faulty_with(Options::default())
}

/// The same with these options (their `wrap_store` is replaced).
pub fn start_faulty_with(
    options: Options,
) -> anyhow::Result<(TestService, Arc<Faults>, BareStore)> {
    let faults = Arc::new(Faults::default());
    let bare = Arc::new(Mutex::new(None));
    let (f, b) = (Arc::clone(&faults), Arc::clone(&bare));
    let svc = TestService::start_with(Options {
        wrap_store: Some(Arc::new(move |inner: EmbeddedStore| {
            *b.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner.clone());
            Arc::new(StoreDouble {
                inner,
                faults: Arc::clone(&f),
                reads: Arc::default(),
            }) as Arc<dyn MessageStore>
        })),
        ..options
    })?;
    Ok((svc, faults, bare))
}

pub fn assert_unavailable<T: std::fmt::Debug>(result: msg_service::Result<T>) {
    match result {
        Err(err @ Error::Unavailable { .. }) => {
            assert_eq!(err.code(), ErrorCode::Unavailable);
            assert!(err.retry_after_ms().is_some(), "{err:?}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// How many entries of an inbox hold `(from, client_msg_id)`.
async fn copies(
    svc: &TestService,
    inbox: &UserId,
    from: &UserId,
    id: &str,
) -> anyhow::Result<usize> {
    let entries = svc.sync_all(inbox, 0).await?;
    Ok(entries
        .iter()
        .filter(|e| &e.message.from == from && e.message.client_msg_id.as_str() == id)
        .count())
}

#[tokio::test]
async fn a_store_outage_before_the_conversation_append_is_unavailable_and_the_retry_stores_once()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    faults.append_message.store(1, Ordering::Release);

    assert_unavailable(svc.send(&alice, &bob, "c-1", "hi").await);
    assert!(svc.sync_all(&bob, 0).await?.is_empty(), "nothing stored");
    let ack = svc.send(&alice, &bob, "c-1", "hi").await?;

    let log = svc.full_history(&bob, &dm(&alice, &bob)).await?;
    assert_eq!(
        log.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        [ack.conv_seq],
        "one message; its conv_seq may skip the failed one"
    );
    assert_eq!(copies(&svc, &bob, &alice, "c-1").await?, 1);
    assert_eq!(copies(&svc, &alice, &alice, "c-1").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_retry_after_a_failure_past_the_conversation_append_stores_nothing_new()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    // The message reaches the log and bob's inbox; alice's own append fails.
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(alice.clone());

    assert_unavailable(svc.send(&alice, &bob, "c-1", "hi").await);
    svc.send(&alice, &bob, "c-1", "hi")
        .await
        .context("the retry")?;

    assert_eq!(
        svc.full_history(&bob, &dm(&alice, &bob)).await?.len(),
        1,
        "one message in the log"
    );
    assert_eq!(
        copies(&svc, &bob, &alice, "c-1").await?,
        1,
        "one entry in bob's inbox"
    );
    assert_eq!(
        copies(&svc, &alice, &alice, "c-1").await?,
        1,
        "one entry in alice's inbox"
    );
    Ok(())
}

#[tokio::test]
async fn a_retry_after_a_fan_out_failed_part_way_reaches_everyone_exactly_once()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], None)
        .await?
        .conv_id;
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(carol.clone());

    assert_unavailable(svc.send(&alice, &group, "g-1", "hi all").await);
    svc.send(&alice, &group, "g-1", "hi all")
        .await
        .context("the retry")?;

    assert_eq!(
        svc.full_history(&alice, &group).await?.len(),
        1,
        "one message in the log"
    );
    for member in [&alice, &bob, &carol] {
        assert_eq!(
            copies(&svc, member, &alice, "g-1").await?,
            1,
            "{member}'s inbox"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_retry_whose_inbox_lookup_goes_stale_while_another_send_settles_its_entry_stores_it_once()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    // Bob's append of c-1 fails and may have landed: his log holds it unsettled.
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    assert_unavailable(svc.send(&alice, &bob, "c-1", "hi").await);

    // The retry looks into bob's inbox and is held with the answer "not there".
    let (looked_rx, release_tx) = hold(&faults.hold_seq_of, &bob);
    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), bob.clone());
    let retry =
        tokio::spawn(async move { crate::helpers::send(&service, &from, &to, "c-1", "hi").await });
    looked_rx
        .await
        .context("the retry looked into bob's inbox")?;
    // Meanwhile carol's message to bob settles the unsettled c-1 first.
    svc.send(&carol, &bob, "k-1", "hello").await?;
    let _ = release_tx.send(());
    retry.await?.context("the retry")?;

    assert_eq!(
        copies(&svc, &bob, &alice, "c-1").await?,
        1,
        "one entry of c-1 in bob's inbox"
    );
    Ok(())
}

#[tokio::test]
async fn a_send_cancelled_after_an_inbox_write_leaves_no_hole_in_that_inbox() -> anyhow::Result<()>
{
    let (svc, faults, bare) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    svc.send(&alice, &bob, "c-1", "first").await?;
    let (written_rx, release_tx) = hold(&faults.hold_inbox_of, &bob);

    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), bob.clone());
    let cancelled =
        tokio::spawn(
            async move { crate::helpers::send(&service, &from, &to, "c-2", "dropped").await },
        );
    let held_seq = written_rx.await.context("bob's entry was written")?;
    cancelled.abort();
    assert!(cancelled.await.is_err_and(|e| e.is_cancelled()));
    // The slow write finishes after its caller gave up.
    let _ = release_tx.send(());
    svc.send(&alice, &bob, "c-3", "third").await?;

    let head = svc.inbox_head(&bob).await?;
    let store = bare
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the bare store")?;
    let stored: Vec<Seq> = seqs(&store.read_inbox(&bob, 0, 100).await?)
        .into_iter()
        .filter(|&s| s <= head)
        .collect();
    assert!(
        stored.contains(&held_seq),
        "the held entry {held_seq} is stored and under head {head}"
    );
    assert_eq!(
        seqs(&svc.sync_all(&bob, 0).await?),
        stored,
        "a sync from 0 returns every stored entry"
    );
    Ok(())
}

#[tokio::test]
async fn an_inbox_write_that_lands_but_reports_an_error_leaves_no_hole() -> anyhow::Result<()> {
    let (svc, faults, bare) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    svc.send(&alice, &bob, "c-1", "first").await?;
    *faults
        .inbox_written_then_fail
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());

    assert_unavailable(svc.send(&alice, &bob, "c-2", "timed out").await);
    svc.send(&alice, &bob, "c-3", "third").await?;

    let head = svc.inbox_head(&bob).await?;
    let store = bare
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the bare store")?;
    let stored: Vec<Seq> = seqs(&store.read_inbox(&bob, 0, 100).await?)
        .into_iter()
        .filter(|&s| s <= head)
        .collect();
    assert_eq!(
        stored.len(),
        3,
        "the entry of the failed write is stored under head {head}: {stored:?}"
    );
    assert_eq!(
        seqs(&svc.sync_all(&bob, 0).await?),
        stored,
        "a sync from 0 returns every stored entry"
    );
    Ok(())
}

fn bare_store(bare: &BareStore) -> anyhow::Result<EmbeddedStore> {
    bare.lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the bare store")
}

/// `(from, client_msg_id)` of each entry, in order.
fn ids(entries: &[proto::Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.message.from.to_string(),
                e.message.client_msg_id.as_str().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_inbox_write_that_times_out_and_lands_later_is_not_skipped_by_a_reader()
-> anyhow::Result<()> {
    let (svc, faults, bare) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    svc.send(&alice, &bob, "c-1", "first").await?;
    *faults
        .inbox_late_of
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());

    assert_unavailable(svc.send(&alice, &bob, "c-2", "timed out").await);
    let before = svc.sync_all(&bob, 0).await?;
    let cursor = before.last().map_or(0, |e| e.seq);
    svc.send(&alice, &bob, "c-3", "third").await?;
    let after_cursor = svc.sync_all(&bob, cursor).await?;
    assert_eq!(
        ids(&after_cursor),
        [
            ("alice".into(), "c-2".into()),
            ("alice".into(), "c-3".into())
        ],
        "a reader past the first message gets the timed-out one before the next"
    );

    assert_eq!(faults.land_late_writes(&bare_store(&bare)?).await?, 1);
    svc.send(&alice, &bob, "c-2", "timed out").await?;
    let all = svc.sync_all(&bob, 0).await?;
    assert_eq!(
        ids(&all),
        [
            ("alice".into(), "c-1".into()),
            ("alice".into(), "c-2".into()),
            ("alice".into(), "c-3".into())
        ],
        "after the late write lands and the sender retries, each message is there once"
    );
    Ok(())
}

#[tokio::test]
async fn a_conversation_append_that_times_out_and_lands_later_is_stored_once() -> anyhow::Result<()>
{
    let (svc, faults, bare) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    svc.send(&alice, &bob, "c-0", "hello").await?;
    faults.message_late.store(1, Ordering::Release);

    assert_unavailable(svc.send(&alice, &bob, "c-1", "timed out").await);
    let ack = svc.send(&alice, &bob, "c-1", "timed out").await?;
    let history = svc.full_history(&bob, &dm(&alice, &bob)).await?;

    assert_eq!(faults.land_late_writes(&bare_store(&bare)?).await?, 1);
    let landed = svc.full_history(&bob, &dm(&alice, &bob)).await?;
    assert_eq!(landed, history, "the late write changes nothing");
    let ones: Vec<_> = landed
        .iter()
        .filter(|m| m.client_msg_id.as_str() == "c-1")
        .map(|m| m.conv_seq)
        .collect();
    assert_eq!(ones, [ack.conv_seq], "the retry settled the same conv_seq");
    assert_eq!(copies(&svc, &bob, &alice, "c-1").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_conversation_append_that_times_out_comes_before_the_next_message_of_another_sender()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob) = (user("alice"), user("bob"));
    faults.message_late.store(1, Ordering::Release);

    assert_unavailable(svc.send(&alice, &bob, "a-1", "timed out").await);
    svc.send(&bob, &alice, "b-1", "reply").await?;
    let retry = svc.send(&alice, &bob, "a-1", "timed out").await?;

    let history = svc.full_history(&bob, &dm(&alice, &bob)).await?;
    let order: Vec<_> = history
        .iter()
        .map(|m| (m.client_msg_id.as_str().to_owned(), m.conv_seq))
        .collect();
    assert_eq!(order.len(), 2, "{order:?}");
    assert_eq!(order[0], ("a-1".to_owned(), retry.conv_seq));
    assert_eq!(order[1].0, "b-1");
    assert_eq!(copies(&svc, &bob, &alice, "a-1").await?, 1);
    assert_eq!(copies(&svc, &alice, &alice, "a-1").await?, 1);
    Ok(())
}

#[tokio::test]
async fn while_the_store_is_down_history_comes_from_the_readers_cached_inbox_marked_degraded()
-> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for id in ["h-1", "h-2", "h-3"] {
        svc.send(&alice, &bob, id, "cached").await?;
    }
    let healthy = svc
        .history(&bob, &dm(&alice, &bob), Page::Before(Seq::MAX), 50)
        .await?;
    assert!(!healthy.degraded);
    faults.history_reads_down.store(true, Ordering::Release);

    let page = svc
        .history(&bob, &dm(&alice, &bob), Page::Before(Seq::MAX), 2)
        .await?;
    assert!(page.degraded, "served from the cache");
    let ids = |p: &msg_service::HistoryPage| {
        p.messages
            .iter()
            .map(|m| m.client_msg_id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&page),
        ["h-3", "h-2"],
        "newest first, at most the limit"
    );
    assert_eq!(
        page.messages,
        healthy.messages[..2],
        "the same messages as the store's"
    );
    let older = svc
        .history(
            &bob,
            &dm(&alice, &bob),
            Page::Before(page.next.context("a next page")?),
            2,
        )
        .await?;
    assert_eq!(ids(&older), ["h-1"]);
    let forward = svc
        .history(&bob, &dm(&alice, &bob), Page::After(0), 50)
        .await?;
    assert_eq!(ids(&forward), ["h-1", "h-2", "h-3"], "after: oldest first");

    assert_unavailable(
        svc.history(&carol, &dm(&alice, &carol), Page::Before(Seq::MAX), 50)
            .await,
    );
    faults.history_reads_down.store(false, Ordering::Release);
    let healed = svc
        .history(&bob, &dm(&alice, &bob), Page::Before(Seq::MAX), 50)
        .await?;
    assert!(!healed.degraded);
    Ok(())
}

//! Bulkheads: a flood of history reads holding every history slot (reads
//! stalled in the store) neither slows sends nor syncs, and one more history
//! call is turned away at once with `unavailable` and a retry delay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msg_service::{BulkheadConfig, MessageApi, ServiceConfig};
use proto::ErrorCode;
use storage::MessageStore;
use storage::Page;
use storage::fault::{Fault, FaultyStore};

use crate::helpers::{Options, TestService, dm, user};

/// How long "promptly" is: far below the stalled reads, which never end
/// until released.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_flood_cannot_starve_sends_and_the_excess_is_turned_away_fast()
-> anyhow::Result<()> {
    let faulty: Arc<Mutex<Option<Arc<FaultyStore>>>> = Arc::default();
    let handle = Arc::clone(&faulty);
    let svc = TestService::start_with(Options {
        config: ServiceConfig {
            history_bulkhead: BulkheadConfig::new(2, 0),
            ..ServiceConfig::default()
        },
        wrap_store: Some(Arc::new(move |inner| {
            let store = Arc::new(FaultyStore::new(Arc::new(inner)));
            *handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&store));
            store as Arc<dyn MessageStore>
        })),
        ..Options::default()
    })?;
    let store = faulty
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the store was not wrapped"))?;
    let (alice, bob) = (user("alice"), user("bob"));
    svc.send(&alice, &bob, "m-1", "before the flood").await?;

    store.set_pages(Fault::Stall);
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let (service, alice, conv) =
                (Arc::clone(&svc.service), alice.clone(), dm(&alice, &bob));
            tokio::spawn(async move {
                service
                    .history(&alice, &conv, Page::Before(u64::MAX), 10)
                    .await
            })
        })
        .collect();
    store.stalled_at_least(2).await;

    let started = Instant::now();
    let ack =
        tokio::time::timeout(PROMPT, svc.send(&alice, &bob, "m-2", "during the flood")).await??;
    assert_eq!(ack.conv_seq, 2);
    let synced = tokio::time::timeout(PROMPT, svc.sync(&bob, 0, 10)).await??;
    assert_eq!(synced.entries.len(), 2);
    let send_and_sync = started.elapsed();

    let started = Instant::now();
    let turned_away = tokio::time::timeout(
        PROMPT,
        svc.history(&alice, &dm(&alice, &bob), Page::Before(u64::MAX), 10),
    )
    .await?
    .expect_err("every history slot is taken");
    let rejection = started.elapsed();
    assert_eq!(turned_away.code(), ErrorCode::Unavailable, "{turned_away}");
    assert!(turned_away.retry_after_ms().is_some_and(|ms| ms > 0));
    assert!(
        rejection < Duration::from_millis(100),
        "turned away after {rejection:?}"
    );
    eprintln!("send + sync during the flood: {send_and_sync:?}; rejection: {rejection:?}");

    store.set_pages(Fault::Pass);
    for call in flood {
        // Each page stops at the head it read before it stalled: m-1 only.
        let page = call.await??;
        assert_eq!(page.messages.len(), 1);
    }
    Ok(())
}

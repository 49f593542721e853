//! The guarded store over a real embedded store with injected faults.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::fault::{Fault, FaultyStore};
use crate::resilience::BreakerState;
use crate::suite::user;
use crate::{Durability, EmbeddedStore};

fn config() -> GuardedStoreConfig {
    GuardedStoreConfig {
        timeout: Duration::from_millis(200),
        breaker: BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        },
        ..GuardedStoreConfig::default()
    }
}

fn open() -> (Arc<FaultyStore>, GuardedStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path(), Durability::Fsync).unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::new(embedded)));
    let guarded = GuardedStore::new(Arc::clone(&faulty) as Arc<dyn MessageStore>, config());
    (faulty, guarded, dir)
}

#[tokio::test(start_paused = true)]
async fn a_stalled_call_fails_as_unavailable_at_the_deadline() {
    let (faulty, guarded, _dir) = open();
    faulty.set_writes(Fault::Stall);
    let started = tokio::time::Instant::now();
    let err = guarded
        .remove_member(&proto::ConvId::parse("g:x").unwrap(), &user("a"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_failing_read_is_retried_and_a_failing_write_is_not() {
    let (faulty, guarded, _dir) = open();
    faulty.set_reads(Fault::Fail);
    guarded.inbox_head(&user("a")).await.unwrap_err();
    assert_eq!(faulty.calls(), 3, "one read and two retries");
    faulty.set_reads(Fault::Pass);
    faulty.set_writes(Fault::Fail);
    let before = faulty.calls();
    guarded
        .remove_member(&proto::ConvId::parse("g:x").unwrap(), &user("a"))
        .await
        .unwrap_err();
    assert_eq!(faulty.calls() - before, 1, "a write is tried once");
}

#[tokio::test(start_paused = true)]
async fn failures_open_the_breaker_and_then_calls_fail_fast_without_reaching_the_store() {
    let (faulty, guarded, _dir) = open();
    faulty.set_writes(Fault::Fail);
    let conv = proto::ConvId::parse("g:x").unwrap();
    for _ in 0..5 {
        guarded.remove_member(&conv, &user("a")).await.unwrap_err();
    }
    assert_eq!(guarded.breaker().state(), BreakerState::Open);
    let before = faulty.calls();
    let err = guarded.inbox_head(&user("a")).await.unwrap_err();
    assert_eq!(err.breaker_retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(
        faulty.calls(),
        before,
        "the store was called through an open breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_that_recovers_closes_the_breaker_after_a_probe() {
    let (faulty, guarded, _dir) = open();
    faulty.set_reads(Fault::Fail);
    // Two reads of three attempts each: the fifth failure opens the breaker.
    for _ in 0..2 {
        guarded.inbox_head(&user("a")).await.unwrap_err();
    }
    assert_eq!(guarded.breaker().state(), BreakerState::Open);
    faulty.set_reads(Fault::Pass);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(guarded.inbox_head(&user("a")).await.unwrap(), 0);
    assert_eq!(guarded.breaker().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_watched_breaker_lets_calls_through_once_the_store_answers_not_after_its_pause() {
    let (faulty, guarded, _dir) = open();
    guarded.watch_recovery();
    faulty.set_reads(Fault::Fail);
    faulty.set_writes(Fault::Fail);
    let conv = proto::ConvId::parse("g:x").unwrap();
    for _ in 0..5 {
        guarded.remove_member(&conv, &user("a")).await.unwrap_err();
    }
    assert_eq!(guarded.breaker().state(), BreakerState::Open);
    let refused = guarded.remove_member(&conv, &user("a")).await.unwrap_err();
    assert_eq!(
        refused.breaker_retry_after(),
        Some(Duration::from_millis(500)),
        "a watched breaker names at most half a second"
    );
    // Still down after a second: the probes fail, the breaker stays open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(guarded.breaker().state(), BreakerState::Open);
    faulty.set_reads(Fault::Pass);
    faulty.set_writes(Fault::Pass);
    // Within two probe periods, well before the 5 s pause ends (a read:
    // the embedded store's writes finish on its own thread, and paused
    // time would run past the deadline meanwhile).
    tokio::time::sleep(2 * RECOVERY_PROBE_EVERY).await;
    assert_eq!(guarded.inbox_head(&user("a")).await.unwrap(), 0);
    assert_eq!(guarded.breaker().state(), BreakerState::Closed);
}

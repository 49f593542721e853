//! The audit: it finds inbox entries missing behind the service's back (an
//! append that failed while the retry queue was down too), repairs them
//! through the owner's fan-out retry worker, respects its time range and a member's join
//! point; and the `msg-service audit` binary on a data dir, with its exit
//! status.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use msg_service::audit::{Missing, find_missing, queue_repairs};
use msg_service::{Backends, MessageService, ServiceConfig};
use storage::{
    Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, MessageStore,
};

use crate::faults::{assert_unavailable, start_faulty_with};
use crate::helpers::{Options, dm, send, user, users};
use crate::retry_queue::bare;
use crate::store_double::{Faults, StoreDouble};

#[tokio::test]
async fn the_audit_finds_an_append_the_queue_could_not_hold_and_repair_appends_it_once()
-> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(Options::default())?;
    let (alice, bob) = (user("alice"), user("bob"));
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    faults.enqueue_retry.store(1, Ordering::Release);
    assert_unavailable(svc.send(&alice, &bob, "a-1", "hi").await);
    let store = bare(&store)?;
    assert!(
        store.retry_items(None, 10).await?.is_empty(),
        "queue was down"
    );

    let report = find_missing(&store, 0, u64::MAX).await?;
    let expected = Missing {
        member: bob.clone(),
        conv_id: dm(&alice, &bob),
        conv_seq: 1,
    };
    assert_eq!(report.missing, std::slice::from_ref(&expected));
    let ts = svc.full_history(&alice, &dm(&alice, &bob)).await?[0].ts;
    let later = find_missing(&store, ts + 1, u64::MAX).await?;
    assert!(later.missing.is_empty(), "out of range: {later:?}");

    // Queued for the conversation's owner, whose retry worker appends it.
    assert_eq!(queue_repairs(&store, &report.missing).await?, 1);
    assert_eq!(msg_service::queued_retries(&store).await?, 1);
    let mut passes = svc.service.retry_passes();
    let worker = svc.service.start_retry_worker();
    passes.wait_for(|n| *n >= 1).await?;
    worker.stop().await;
    assert_eq!(msg_service::queued_retries(&store).await?, 0);
    assert!(find_missing(&store, 0, u64::MAX).await?.missing.is_empty());
    svc.send(&alice, &bob, "a-2", "again").await?;
    let ids: Vec<String> = svc
        .sync_all(&bob, 0)
        .await?
        .iter()
        .map(|e| e.message.client_msg_id.to_string())
        .collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    Ok(())
}

#[tokio::test]
async fn a_member_added_later_is_not_reported_missing_what_came_before() -> anyhow::Result<()> {
    let (svc, faults, store) = start_faulty_with(Options::default())?;
    let people = users("p", 3);
    let group = svc.create_group(&people[0], &people[1..2], None).await?;
    svc.send(&people[0], &group.conv_id, "g-1", "before")
        .await?;
    svc.add_members(&people[0], &group.conv_id, &people[2..])
        .await?;
    svc.send(&people[1], &group.conv_id, "g-2", "after").await?;
    // The newcomer's third message is lost, queue and all.
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(people[2].clone());
    faults.enqueue_retry.store(1, Ordering::Release);
    assert_unavailable(svc.send(&people[0], &group.conv_id, "g-3", "lost").await);

    let report = find_missing(&bare(&store)?, 0, u64::MAX).await?;
    let lost = Missing {
        member: people[2].clone(),
        conv_id: group.conv_id.clone(),
        conv_seq: 3,
    };
    assert_eq!(report.missing, [lost]);
    assert_eq!((report.conversations, report.messages), (1, 3));
    Ok(())
}

/// Runs the built binary (blocking, off the async workers).
async fn msg_service(args: Vec<String>) -> anyhow::Result<Output> {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_msg-service"))
            .args(&args)
            .output()
            .context("running msg-service")
    })
    .await?
}

fn audit_args(data_dir: &Path, repair: bool) -> Vec<String> {
    let mut args = vec![
        "audit".to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--from".to_owned(),
        "0".to_owned(),
        "--to".to_owned(),
        u64::MAX.to_string(),
    ];
    if repair {
        args.push("--repair".to_owned());
    }
    args
}

/// A data dir as the binary lays it out (`<dir>/store`) where bob's inbox
/// misses alice's message and the retry queue did not get it either.
async fn data_dir_with_a_lost_append() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let faults = Arc::new(Faults::default());
    let inner = EmbeddedStore::open(&dir.path().join("store"), Durability::Fsync)?;
    let store = StoreDouble {
        inner,
        faults: Arc::clone(&faults),
        reads: Arc::default(),
    };
    let backends = Backends {
        store: Arc::new(store) as Arc<dyn MessageStore>,
        cache: Arc::new(InProcessCache::default()),
        bus: Arc::new(InProcessBus::default()),
        presence: Arc::new(InProcessPresence::default()),
    };
    let service = MessageService::new(backends, ServiceConfig::default());
    let (alice, bob) = (user("alice"), user("bob"));
    *faults.inbox_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(bob.clone());
    faults.enqueue_retry.store(1, Ordering::Release);
    assert_unavailable(send(&service, &alice, &bob, "b-1", "hi").await);
    msg_service::MessageApi::flush(&service).await?;
    Ok(dir)
}

#[tokio::test]
async fn the_audit_binary_reports_exits_1_repairs_and_then_exits_0() -> anyhow::Result<()> {
    let dir = data_dir_with_a_lost_append().await?;
    let line = "missing member=bob conv_id=dm:alice:bob conv_seq=1";

    let found = msg_service(audit_args(dir.path(), false)).await?;
    let stdout = String::from_utf8_lossy(&found.stdout);
    assert_eq!(found.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(line), "{stdout}");

    let repaired = msg_service(audit_args(dir.path(), true)).await?;
    let stdout = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(repaired.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("repaired member=bob conv_id=dm:alice:bob conv_seq=1"),
        "{stdout}"
    );

    let clean = msg_service(audit_args(dir.path(), false)).await?;
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 missing"), "{stdout}");

    let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Fsync)?;
    let bob_inbox = store.read_inbox(&user("bob"), 0, 10).await?;
    assert_eq!(bob_inbox.len(), 1, "{bob_inbox:?}");
    Ok(())
}

#[tokio::test]
async fn the_audit_binary_refuses_a_data_dir_in_use_and_says_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _open = EmbeddedStore::open(&dir.path().join("store"), Durability::Fsync)?;
    let output = msg_service(audit_args(dir.path(), false)).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a msg-service running"), "{stderr}");
    Ok(())
}

//! Per-log state is bounded: however many users and conversations are
//! touched, the service keeps the state of at most `max_cached_logs` of each
//! kind, forgets only idle ones, and a forgotten log carries on correctly.

use msg_service::ServiceConfig;
use msg_service::storage::Page;

use crate::helpers::{TestService, bodies, dm, seqs, strictly_increasing, user, users};

fn capped(cap: usize) -> anyhow::Result<TestService> {
    TestService::with_config(ServiceConfig {
        max_cached_logs: cap,
        send_rate: 1_000,
        send_burst: 1_000,
        ..ServiceConfig::default()
    })
}

#[tokio::test]
async fn per_log_state_stays_under_its_cap_however_many_logs_are_touched() -> anyhow::Result<()> {
    let service = capped(50)?;
    let people = users("u", 400);
    for pair in people.chunks(2) {
        service.send(&pair[0], &pair[1], "m1", "hi").await?;
    }
    for person in &people {
        service.inbox_head(person).await?;
    }
    let cached = service.service.cached_logs();
    assert!(cached.inboxes <= 50, "{cached:?}");
    assert!(cached.conversations <= 50, "{cached:?}");
    Ok(())
}

#[tokio::test]
async fn a_forgotten_log_carries_on_above_what_it_had() -> anyhow::Result<()> {
    let service = capped(10)?;
    let (alice, bob) = (user("alice"), user("bob"));
    service.send(&alice, &bob, "m1", "before").await?;
    // Touch enough other logs to push alice's and bob's out.
    for (i, person) in users("other", 100).iter().enumerate() {
        service
            .send(person, &user(&format!("peer{i}")), "m1", "x")
            .await?;
    }
    let cached = service.service.cached_logs();
    assert!(
        cached.inboxes <= 10 && cached.conversations <= 10,
        "{cached:?}"
    );
    service.send(&alice, &bob, "m2", "after").await?;
    let entries = service.sync_all(&bob, 0).await?;
    assert_eq!(bodies(&entries), ["before", "after"]);
    assert!(strictly_increasing(&seqs(&entries)));
    let history = service.full_history(&alice, &dm(&alice, &bob)).await?;
    let conv_seqs: Vec<u64> = history.iter().map(|m| m.conv_seq).collect();
    assert_eq!(conv_seqs.len(), 2);
    assert!(strictly_increasing(&conv_seqs), "{conv_seqs:?}");
    Ok(())
}

#[tokio::test]
async fn reading_logs_that_do_not_exist_keeps_no_state() -> anyhow::Result<()> {
    let service = capped(100_000)?;
    let alice = user("alice");
    for i in 0..500 {
        let ghost = user(&format!("ghost{i}"));
        let page = service
            .history(&alice, &dm(&alice, &ghost), Page::Before(u64::MAX), 50)
            .await?;
        assert!(page.messages.is_empty());
        assert_eq!(service.inbox_head(&ghost).await?, 0);
        service.sync(&ghost, 0, 10).await?;
    }
    let cached = service.service.cached_logs();
    assert_eq!((cached.inboxes, cached.conversations), (0, 0));
    Ok(())
}

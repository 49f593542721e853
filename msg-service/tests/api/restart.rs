//! Crash and restart: the service and its store are dropped without a flush
//! (every acked write was made durable before its ack) and reopened on the
//! same data dir. Nothing acked is lost and seqs never go back.

use std::collections::HashMap;

use msg_service::ServiceConfig;
use proto::{Ack, ConvId, Entry, HistoryMessage, Seq, UserId};

use crate::helpers::{TestService, dm, seqs, strictly_increasing, user};

struct World {
    alice: UserId,
    bob: UserId,
    carol: UserId,
    group: ConvId,
}

async fn world(svc: &TestService) -> anyhow::Result<World> {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], Some("trio"))
        .await?
        .conv_id;
    Ok(World {
        alice,
        bob,
        carol,
        group,
    })
}

/// A few DMs both ways and a few group messages; returns the acks.
async fn chat(svc: &TestService, w: &World, round: usize) -> anyhow::Result<Vec<Ack>> {
    let mut acks = Vec::new();
    for k in 0..3 {
        acks.push(
            svc.send(&w.alice, &w.bob, &format!("a{round}-{k}"), "hi bob")
                .await?,
        );
        acks.push(
            svc.send(&w.bob, &w.alice, &format!("b{round}-{k}"), "hi alice")
                .await?,
        );
        acks.push(
            svc.send(&w.carol, &w.group, &format!("c{round}-{k}"), "hi all")
                .await?,
        );
    }
    Ok(acks)
}

/// Every inbox and conversation log, as a client would read it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    inboxes: HashMap<UserId, Vec<Entry>>,
    logs: HashMap<ConvId, Vec<HistoryMessage>>,
}

async fn snapshot(svc: &TestService, w: &World) -> anyhow::Result<Snapshot> {
    let mut inboxes = HashMap::new();
    for u in [&w.alice, &w.bob, &w.carol] {
        inboxes.insert(u.clone(), svc.sync_all(u, 0).await?);
    }
    let mut logs = HashMap::new();
    for conv in [dm(&w.alice, &w.bob), w.group.clone()] {
        logs.insert(conv.clone(), svc.full_history(&w.alice, &conv).await?);
    }
    Ok(Snapshot { inboxes, logs })
}

fn head_of(entries: &[Entry]) -> Seq {
    entries.last().map_or(0, |e| e.seq)
}

fn last_conv_seq(log: &[HistoryMessage]) -> Seq {
    log.last().map_or(0, |m| m.conv_seq)
}

#[tokio::test]
async fn every_acked_message_is_there_after_a_crash_and_restart() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let w = world(&svc).await?;
    let acks = chat(&svc, &w, 0).await?;
    let before = snapshot(&svc, &w).await?;

    let svc = svc.restart()?;

    let after = snapshot(&svc, &w).await?;
    assert_eq!(
        after, before,
        "a sync and a history read from 0 see the same data"
    );
    assert_eq!(
        after.inboxes[&w.alice].len(),
        9,
        "6 DMs and 3 group messages"
    );
    assert_eq!(after.inboxes[&w.carol].len(), 3);
    for ack in &acks {
        let sender_has_it = after
            .inboxes
            .values()
            .flatten()
            .any(|e| e.seq == ack.seq && e.message.client_msg_id == ack.client_msg_id);
        assert!(sender_has_it, "{ack:?} is lost");
    }
    Ok(())
}

#[tokio::test]
async fn sends_after_a_restart_get_seqs_and_conv_seqs_above_all_old_ones() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let w = world(&svc).await?;
    chat(&svc, &w, 0).await?;
    let old = snapshot(&svc, &w).await?;

    let svc = svc.restart()?;
    chat(&svc, &w, 1).await?;

    let new = snapshot(&svc, &w).await?;
    for (u, old_entries) in &old.inboxes {
        let old_head = head_of(old_entries);
        let fresh = svc.sync_all(u, old_head).await?;
        assert_eq!(
            fresh.len(),
            new.inboxes[u].len() - old_entries.len(),
            "{u}: a sync from the old head returns the new entries only"
        );
        assert!(
            fresh.iter().all(|e| e.seq > old_head),
            "{u}: a new seq at or below {old_head}"
        );
        assert!(strictly_increasing(&seqs(&new.inboxes[u])));
        assert_eq!(
            &new.inboxes[u][..old_entries.len()],
            &old_entries[..],
            "{u}: the old entries are unchanged"
        );
    }
    for (conv, old_log) in &old.logs {
        let old_last = last_conv_seq(old_log);
        let added: Vec<_> = new.logs[conv]
            .iter()
            .filter(|m| m.conv_seq > old_last)
            .collect();
        assert_eq!(
            added.len(),
            new.logs[conv].len() - old_log.len(),
            "{conv}: a new conv_seq at or below {old_last}"
        );
        let conversation = svc.conversation(&w.alice, conv).await?;
        assert_eq!(conversation.last_conv_seq, last_conv_seq(&new.logs[conv]));
    }
    Ok(())
}

#[tokio::test]
async fn a_retry_after_a_restart_returns_the_first_ack_and_stores_nothing() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = svc.send(&alice, &bob, "c-1", "hello").await?;

    let svc = svc.restart()?;

    let retry = svc.send(&alice, &bob, "c-1", "hello").await?;
    assert_eq!(retry, first);
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn seqs_keep_rising_across_several_restarts_in_a_row() -> anyhow::Result<()> {
    several_restarts(ServiceConfig::default()).await
}

#[tokio::test]
async fn seqs_keep_rising_across_restarts_when_ceilings_are_persisted_every_few_seqs()
-> anyhow::Result<()> {
    several_restarts(ServiceConfig {
        seq_step: 2,
        ..ServiceConfig::default()
    })
    .await
}

/// Rounds of chat and restarts: every round's entries are kept, every new
/// seq is above every old one, and a client that keeps its sync key across
/// the restarts receives every entry exactly once.
async fn several_restarts(config: ServiceConfig) -> anyhow::Result<()> {
    let mut svc = TestService::with_config(config)?;
    let w = world(&svc).await?;
    let mut expected: Vec<Entry> = Vec::new();
    let mut sync_key = 0;
    let mut conv_seqs: Vec<Seq> = Vec::new();
    for round in 0..5 {
        let acks = chat(&svc, &w, round).await?;
        conv_seqs.extend(
            acks.iter()
                .filter(|a| a.conv_id == w.group)
                .map(|a| a.conv_seq),
        );
        let fresh = svc.sync_all(&w.carol, sync_key).await?;
        assert_eq!(
            fresh.len(),
            3,
            "round {round}: carol gets this round's group messages once"
        );
        sync_key = head_of(&fresh);
        expected.extend(fresh);

        svc = svc.restart()?;

        let all = svc.sync_all(&w.carol, 0).await?;
        assert_eq!(all, expected, "round {round}: an entry was lost or changed");
        assert!(strictly_increasing(&seqs(&all)));
        assert!(
            svc.sync_all(&w.carol, sync_key).await?.is_empty(),
            "nothing new yet"
        );
    }
    assert!(
        strictly_increasing(&conv_seqs),
        "conv_seqs went back: {conv_seqs:?}"
    );
    Ok(())
}

//! The sync invariant of ARCHITECTURE.md: a client that syncs from its seq,
//! again and again, receives every entry of its inbox exactly once, in seq
//! order, while many senders write to that inbox at the same time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use msg_service::{MessageApi, MessageService};
use proto::{Ack, ConvId, Entry, Seq, UserId};
use storage::{GatewayId, NotifyBus, Presence, Subscription};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::helpers::{
    Options, TestService, count_by_sender_id, seqs, strictly_increasing, user, users,
};

const SENDERS: usize = 8;
const SENDS_EACH: usize = 30;
/// Small, so the reader needs many pages and reads while sends land.
const READ_LIMIT: usize = 7;
/// Only a hang would take this long; it turns a hang into a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_syncing_during_concurrent_sends_gets_every_entry_once_in_order()
-> anyhow::Result<()> {
    let svc = TestService::start()?;
    tokio::time::timeout(DEADLINE, check_invariant(&svc))
        .await
        .context("hung")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariant_holds_when_the_cache_is_too_small_and_syncs_read_the_store()
-> anyhow::Result<()> {
    let svc = TestService::start_with(Options {
        cache_per_inbox: 3,
        ..Options::default()
    })?;
    tokio::time::timeout(DEADLINE, check_invariant(&svc))
        .await
        .context("hung")?
}

/// One acked send: who sent it, and the ack.
struct Sent {
    from: UserId,
    ack: Ack,
}

pub(crate) async fn check_invariant(svc: &TestService) -> anyhow::Result<()> {
    let reader = user("reader");
    let senders = users("sender", SENDERS);
    let mut members = senders.clone();
    members.push(reader.clone());
    let group = svc
        .create_group(&senders[0], &members, Some("all"))
        .await?
        .conv_id;

    let gateway = GatewayId("gw-reader".into());
    svc.presence.connected(&reader, &gateway).await?;
    let notifies = svc.bus.subscribe(&gateway).await?;
    let (done_tx, done_rx) = watch::channel(false);
    let reading = tokio::spawn(read_until_done(
        Arc::clone(&svc.service),
        reader.clone(),
        notifies,
        done_rx,
    ));

    let mut sending = JoinSet::new();
    for sender in &senders {
        let service = Arc::clone(&svc.service);
        let (sender, reader, group) = (sender.clone(), reader.clone(), group.clone());
        sending.spawn(async move { send_all(&service, &sender, &reader, &group).await });
    }
    let mut sent = Vec::new();
    while let Some(acks) = sending.join_next().await {
        sent.extend(acks??);
    }
    done_tx.send(true)?;
    let seen = reading.await??;

    assert_every_ack_seen_once(&sent, &seen);
    assert_eq!(
        seen,
        svc.sync_all(&reader, 0).await?,
        "the reader saw exactly the inbox"
    );
    assert_sender_order_kept(&seen, &senders);
    assert_group_log_gap_free(svc, &reader, &group, &sent).await?;
    assert_acks_name_the_senders_entries(svc, &sent).await
}

/// One sender's sends, one after the other: two DMs to the reader, then one to the group.
async fn send_all(
    service: &MessageService,
    sender: &UserId,
    reader: &UserId,
    group: &ConvId,
) -> anyhow::Result<Vec<Sent>> {
    let mut sent = Vec::with_capacity(SENDS_EACH);
    for k in 0..SENDS_EACH {
        let id = format!("{sender}-{k}");
        let ack = if k % 3 == 2 {
            crate::helpers::send(service, sender, group, &id, "to the group").await
        } else {
            crate::helpers::send(service, sender, reader, &id, "to the reader").await
        };
        let ack = ack.with_context(|| format!("send {id}"))?;
        sent.push(Sent {
            from: sender.clone(),
            ack,
        });
    }
    Ok(sent)
}

/// Syncs from the last seq seen, page by page; when caught up, waits for a
/// notify. Once told the senders are done, drains and returns all it saw.
/// Checks every page as it arrives.
async fn read_until_done(
    service: Arc<MessageService>,
    reader: UserId,
    mut notifies: Subscription,
    mut done: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Entry>> {
    let mut seen: Vec<Entry> = Vec::new();
    let (mut last, mut last_head) = (0, 0);
    loop {
        // Read before the sync: when it is set, every send was acked before
        // this sync, so syncing until `more` is false reads them all.
        let finished = *done.borrow_and_update();
        let page = service.sync(&reader, last, READ_LIMIT).await?;
        check_page(&page, last, last_head)?;
        last_head = page.head;
        if let Some(entry) = page.entries.last() {
            last = entry.seq;
        }
        seen.extend(page.entries);
        if page.more {
            continue;
        }
        if finished {
            return Ok(seen);
        }
        tokio::select! {
            note = notifies.recv() => { note.context("the bus closed")?; }
            changed = done.changed() => changed?,
        }
    }
}

/// What one sync page must look like for a reader whose last seq is `since`.
fn check_page(page: &proto::SyncResult, since: Seq, last_head: Seq) -> anyhow::Result<()> {
    let got = seqs(&page.entries);
    ensure!(
        got.len() <= READ_LIMIT,
        "more entries than the limit: {got:?}"
    );
    ensure!(
        got.iter().all(|&s| s > since),
        "an entry at or below {since}, already seen: {got:?}"
    );
    ensure!(strictly_increasing(&got), "entries out of order: {got:?}");
    ensure!(
        got.iter().all(|&s| s <= page.head),
        "an entry above head {}: {got:?}",
        page.head
    );
    ensure!(
        page.head >= last_head,
        "head went back from {last_head} to {}",
        page.head
    );
    ensure!(
        since >= page.head || !got.is_empty(),
        "nothing returned below head {}",
        page.head
    );
    let reached = got.last().copied().unwrap_or(since);
    ensure!(
        page.more == (reached < page.head),
        "more={} at {reached}, head {}",
        page.more,
        page.head
    );
    Ok(())
}

fn assert_every_ack_seen_once(sent: &[Sent], seen: &[Entry]) {
    assert_eq!(sent.len(), SENDERS * SENDS_EACH);
    assert!(strictly_increasing(&seqs(seen)), "seen out of order");
    let counts = count_by_sender_id(seen);
    for Sent { from, ack } in sent {
        let key = (from.clone(), ack.client_msg_id.to_string());
        assert_eq!(
            counts.get(&key),
            Some(&1),
            "{key:?} seen {:?} times",
            counts.get(&key)
        );
    }
    assert_eq!(seen.len(), sent.len(), "the reader saw entries nobody sent");
    for Sent { from, ack } in sent {
        let entry = seen
            .iter()
            .find(|e| &e.message.from == from && e.message.client_msg_id == ack.client_msg_id)
            .expect("seen once");
        assert_eq!(
            (&entry.message.conv_id, entry.message.conv_seq),
            (&ack.conv_id, ack.conv_seq)
        );
    }
}

/// Each sender sent one message after the other, so the reader's inbox
/// holds each sender's messages in the order they were sent.
fn assert_sender_order_kept(seen: &[Entry], senders: &[UserId]) {
    for sender in senders {
        let ids: Vec<String> = seen
            .iter()
            .filter(|e| &e.message.from == sender)
            .map(|e| e.message.client_msg_id.to_string())
            .collect();
        let expected: Vec<String> = (0..SENDS_EACH).map(|k| format!("{sender}-{k}")).collect();
        assert_eq!(ids, expected, "the order of {sender}'s messages");
    }
}

/// The group's conv_seqs of this one run are 1..=n, each once, and its
/// history lists exactly those messages.
async fn assert_group_log_gap_free(
    svc: &TestService,
    reader: &UserId,
    group: &ConvId,
    sent: &[Sent],
) -> anyhow::Result<()> {
    let mut conv_seqs: Vec<Seq> = sent
        .iter()
        .filter(|s| &s.ack.conv_id == group)
        .map(|s| s.ack.conv_seq)
        .collect();
    conv_seqs.sort_unstable();
    let expected: Vec<Seq> = (1..=conv_seqs.len() as Seq).collect();
    assert_eq!(
        conv_seqs, expected,
        "group conv_seqs are gap-free and unique"
    );
    let history = svc.full_history(reader, group).await?;
    let listed: Vec<Seq> = history.iter().map(|m| m.conv_seq).collect();
    assert_eq!(listed, expected, "history lists every group message once");
    Ok(())
}

/// An ack's seq is the entry of that message in the sender's own inbox.
async fn assert_acks_name_the_senders_entries(
    svc: &TestService,
    sent: &[Sent],
) -> anyhow::Result<()> {
    let mut inboxes = std::collections::HashMap::new();
    for Sent { from, ack } in sent {
        if !inboxes.contains_key(from) {
            inboxes.insert(from.clone(), svc.sync_all(from, 0).await?);
        }
        let entry = inboxes[from]
            .iter()
            .find(|e| e.seq == ack.seq)
            .context("no entry at the ack's seq")?;
        assert_eq!(
            (&entry.message.from, &entry.message.client_msg_id),
            (from, &ack.client_msg_id)
        );
    }
    Ok(())
}

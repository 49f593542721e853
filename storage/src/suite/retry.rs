//! Store cases of the fan-out retry queue, its checkpoint, the fan-out
//! intents and their watermark, and the conversation scan, run by `store_suite!` against every store.

use std::collections::HashSet;

use proto::{ConvId, ConvKind, HistoryMessage, Seq};

use super::{message, user};
use crate::clock::now_ms;
use crate::{ConversationMeta, MessageStore, RetryItem, RetryKey};

fn item(enqueued_at: u64, conv: &ConvId, conv_seq: Seq) -> RetryItem {
    RetryItem {
        key: RetryKey {
            enqueued_at,
            conv_id: conv.clone(),
            conv_seq,
        },
        members: vec![user("m"), user("n")],
        attempts: 0,
        not_before: 0,
    }
}

fn group(name: &str) -> ConvId {
    format!("g:{name}").parse().unwrap()
}

pub async fn retry_items_read_back_in_key_order_after_a_cursor(store: &dyn MessageStore) {
    let (a, b) = (
        group(&user("qa").to_string()),
        group(&user("qb").to_string()),
    );
    let items = [
        item(20, &a, 1),
        item(10, &b, 7),
        item(10, &a, 3),
        item(20, &a, 2),
    ];
    for it in &items {
        store.enqueue_retry(it).await.unwrap();
    }
    let mut expected: Vec<RetryItem> = items.to_vec();
    expected.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(store.retry_items(None, 10).await.unwrap(), expected);
    let after = store.retry_items(Some(&expected[1].key), 2).await.unwrap();
    assert_eq!(after, expected[2..4].to_vec(), "strictly after, limited");
}

pub async fn a_retry_item_is_overwritten_by_its_key_and_removed_once_done(
    store: &dyn MessageStore,
) {
    let conv = group(&user("qc").to_string());
    let mut it = item(5, &conv, 1);
    store.enqueue_retry(&it).await.unwrap();
    it.members.truncate(1);
    it.attempts = 3;
    it.not_before = 1_764_262_800_000;
    store.enqueue_retry(&it).await.unwrap();
    assert_eq!(store.retry_items(None, 10).await.unwrap(), vec![it.clone()]);
    store.remove_retry(&it.key).await.unwrap();
    store.remove_retry(&it.key).await.unwrap();
    assert!(store.retry_items(None, 10).await.unwrap().is_empty());
}

pub async fn the_retry_checkpoint_starts_empty_and_keeps_the_last_position(
    store: &dyn MessageStore,
) {
    assert_eq!(store.retry_checkpoint().await.unwrap(), None);
    let at = item(9, &group(&user("qd").to_string()), 4).key;
    store.save_retry_checkpoint(Some(&at)).await.unwrap();
    assert_eq!(store.retry_checkpoint().await.unwrap(), Some(at));
    store.save_retry_checkpoint(None).await.unwrap();
    assert_eq!(store.retry_checkpoint().await.unwrap(), None);
}

pub async fn a_conversation_scan_pages_through_every_conversation_once(store: &dyn MessageStore) {
    let mut made = HashSet::new();
    for i in 0..7 {
        let conv = group(&user(&format!("scan{i}x")).to_string());
        let meta = ConversationMeta {
            conv_id: conv.clone(),
            kind: ConvKind::Group,
            title: None,
            created_at: 1,
        };
        store.put_conversation(&meta).await.unwrap();
        made.insert(conv);
    }
    let mut seen = Vec::new();
    let mut after: Option<ConvId> = None;
    loop {
        let page = store.conversation_ids(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    let unique: HashSet<ConvId> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no conversation twice: {seen:?}");
    assert!(made.is_subset(&unique), "every conversation seen");
}

/// Logs messages 1..=3 of a new group, their intents written at `at + seq`.
async fn logged_with_intents(store: &dyn MessageStore, at: u64) -> (ConvId, Vec<RetryItem>) {
    let from = user("intent");
    let conv = group(&from.to_string());
    let mut intents = Vec::new();
    for seq in 1..=3 {
        let msg: HistoryMessage = message(&conv, seq, &from);
        let intent = RetryItem::intent(at + seq, &msg, vec![from.clone(), user("peer")]);
        let ticket = store.append_message(&msg, &intent).await.unwrap();
        store.durable(ticket).await.unwrap();
        intents.push(intent);
    }
    (conv, intents)
}

/// The intents of `conv` among those read in `[from, to)`, page by page.
async fn intents_of(store: &dyn MessageStore, conv: &ConvId, from: u64, to: u64) -> Vec<RetryItem> {
    let (mut found, mut after) = (Vec::new(), None);
    loop {
        let page = store
            .fanout_intents(from, to, after.as_ref(), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return found;
        };
        after = Some(last.key.clone());
        found.extend(page.into_iter().filter(|i| &i.key.conv_id == conv));
    }
}

pub async fn fan_out_intents_are_kept_with_their_messages_and_read_from_a_time_on(
    store: &dyn MessageStore,
) {
    // Intents are read per minute up to a time: written at realistic times.
    let at = now_ms() - 10_000;
    let (conv, intents) = logged_with_intents(store, at).await;
    let end = now_ms() + 1;
    assert_eq!(
        intents_of(store, &conv, at, end).await,
        intents,
        "every one, in order"
    );
    assert_eq!(
        intents_of(store, &conv, at + 2, end).await,
        intents[1..].to_vec(),
        "from a time on, in pages of two"
    );
    assert_eq!(
        intents_of(store, &conv, at, at + 3).await,
        intents[..2].to_vec(),
        "up to a time, not including it"
    );
}

pub async fn the_fan_out_watermark_is_kept_and_intents_above_it_stay(store: &dyn MessageStore) {
    let at = now_ms() - 20_000;
    let (conv, intents) = logged_with_intents(store, at).await;
    let unsaved = store.fanout_watermark().await.unwrap();
    assert!(
        unsaved <= at + 1 && unsaved + 3 * 86_400_000 > at,
        "none saved: at or before the oldest intent, not years before ({unsaved} for {at})"
    );
    store.save_fanout_watermark(at + 2).await.unwrap();
    assert_eq!(store.fanout_watermark().await.unwrap(), at + 2);
    assert_eq!(
        intents_of(store, &conv, at + 2, now_ms() + 1).await,
        intents[1..].to_vec(),
        "the intents at and above the watermark stay"
    );
    store.save_fanout_watermark(at + 3).await.unwrap();
    assert_eq!(store.fanout_watermark().await.unwrap(), at + 3);
}

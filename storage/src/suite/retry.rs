//! Store cases of the fan-out retry queue, its checkpoint and the
//! conversation scan, run by `store_suite!` against every store.

use std::collections::HashSet;

use proto::{ConvId, ConvKind, Seq};

use super::user;
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

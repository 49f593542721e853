//! Trait-level test suites, run against every implementation of a trait
//! (the embedded store, the in-process and Redis backends, Scylla).
//! `store_suite!` and friends expand to one `#[tokio::test]` per case in the
//! calling test file.

#![allow(clippy::unwrap_used, missing_docs)]

use proto::{ClientMsgId, ConvId, ConvKind, Entry, HistoryMessage, MessageKind, Seq, UserId};

use crate::{
    BusMessage, ConversationMeta, GatewayId, InboxCache, MessageRef, MessageStore, Notification,
    NotifyBus, Page, Presence, RetryItem, WriteTicket,
};

/// A unique user id for a test, so suites can share a backend.
pub fn user(name: &str) -> UserId {
    let salt: u32 = rand_salt();
    UserId::parse(&format!("{name}{salt}")).unwrap()
}

fn rand_salt() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

pub fn message(conv: &ConvId, conv_seq: Seq, from: &UserId) -> HistoryMessage {
    HistoryMessage {
        conv_id: conv.clone(),
        conv_seq,
        from: from.clone(),
        client_msg_id: ClientMsgId::parse(&format!("c-{conv_seq}")).unwrap(),
        kind: MessageKind::Text,
        body: format!("message {conv_seq}"),
        ts: 1_764_262_800_000 + conv_seq,
        refers_to: None,
        recalled: false,
    }
}

pub fn entry(seq: Seq, conv: &ConvId, from: &UserId) -> Entry {
    Entry {
        seq,
        message: message(conv, seq, from),
    }
}

/// The fan-out intent of `msg` to its conversation's members (its sender
/// and, in a direct conversation, the peer), written at the message's time.
pub fn intent_of(msg: &HistoryMessage) -> RetryItem {
    let members = match msg.conv_id.dm_members() {
        Some((a, b)) => vec![a, b],
        None => vec![msg.from.clone()],
    };
    RetryItem::intent(msg.ts, msg, members)
}

fn seqs(entries: &[Entry]) -> Vec<Seq> {
    entries.iter().map(|e| e.seq).collect()
}

fn conv_seqs(messages: &[HistoryMessage]) -> Vec<Seq> {
    messages.iter().map(|m| m.conv_seq).collect()
}

pub mod leases;
pub mod retry;

pub mod store {
    use super::*;

    pub async fn an_empty_inbox_reads_empty_with_head_zero(store: &dyn MessageStore) {
        let u = user("empty");
        assert_eq!(store.inbox_head(&u).await.unwrap(), 0);
        assert!(store.read_inbox(&u, 0, 100).await.unwrap().is_empty());
        assert!(
            store
                .read_inbox(&u, Seq::MAX, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn inbox_reads_are_ascending_after_since_and_limited(store: &dyn MessageStore) {
        let (u, peer) = (user("reader"), user("peer"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        for seq in [1, 2, 3, 5, 8, 70_000] {
            store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .unwrap();
        }
        assert_eq!(store.inbox_head(&u).await.unwrap(), 70_000);
        assert_eq!(
            seqs(&store.read_inbox(&u, 0, 100).await.unwrap()),
            [1, 2, 3, 5, 8, 70_000]
        );
        assert_eq!(seqs(&store.read_inbox(&u, 2, 2).await.unwrap()), [3, 5]);
        assert_eq!(
            seqs(&store.read_inbox(&u, 4, 100).await.unwrap()),
            [5, 8, 70_000]
        );
        assert!(store.read_inbox(&u, 70_000, 100).await.unwrap().is_empty());
        assert!(store.read_inbox(&u, 0, 0).await.unwrap().is_empty());
        let first = &store.read_inbox(&u, 0, 1).await.unwrap()[0];
        assert_eq!(
            first,
            &entry(1, &conv, &peer),
            "an entry reads back as written"
        );
    }

    pub async fn inboxes_whose_ids_share_a_prefix_stay_apart(store: &dyn MessageStore) {
        let short = user("al");
        let long = UserId::parse(&format!("{short}ice")).unwrap();
        let conv = ConvId::dm(&short, &long).unwrap();
        store
            .append_inbox(&short, &entry(1, &conv, &long))
            .await
            .unwrap();
        store
            .append_inbox(&long, &entry(7, &conv, &short))
            .await
            .unwrap();
        assert_eq!(seqs(&store.read_inbox(&short, 0, 10).await.unwrap()), [1]);
        assert_eq!(store.inbox_head(&short).await.unwrap(), 1);
        assert_eq!(seqs(&store.read_inbox(&long, 0, 10).await.unwrap()), [7]);
    }

    pub async fn conversation_pages_go_both_ways(store: &dyn MessageStore) {
        let from = user("sender");
        let conv = ConvId::group(&format!("pages{}", from.as_str())).unwrap();
        assert_eq!(store.last_conv_seq(&conv).await.unwrap(), 0);
        assert!(
            store
                .messages(&conv, Page::Before(Seq::MAX), 10)
                .await
                .unwrap()
                .is_empty()
        );
        for seq in 1..=10 {
            let msg = message(&conv, seq, &from);
            store.append_message(&msg, &intent_of(&msg)).await.unwrap();
        }
        assert_eq!(store.last_conv_seq(&conv).await.unwrap(), 10);
        let newest = store
            .messages(&conv, Page::Before(Seq::MAX), 3)
            .await
            .unwrap();
        assert_eq!(conv_seqs(&newest), [10, 9, 8]);
        assert_eq!(
            conv_seqs(&store.messages(&conv, Page::Before(8), 3).await.unwrap()),
            [7, 6, 5]
        );
        assert_eq!(
            conv_seqs(&store.messages(&conv, Page::Before(2), 3).await.unwrap()),
            [1]
        );
        assert!(
            store
                .messages(&conv, Page::Before(1), 3)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .messages(&conv, Page::Before(0), 3)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            conv_seqs(&store.messages(&conv, Page::After(0), 3).await.unwrap()),
            [1, 2, 3]
        );
        assert_eq!(
            conv_seqs(&store.messages(&conv, Page::After(8), 5).await.unwrap()),
            [9, 10]
        );
        assert!(
            store
                .messages(&conv, Page::After(10), 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .messages(&conv, Page::After(Seq::MAX), 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            newest[0],
            message(&conv, 10, &from),
            "a message reads back as written"
        );
    }

    pub async fn conversations_and_members_are_kept_both_ways(store: &dyn MessageStore) {
        let (a, b, c) = (user("a"), user("b"), user("c"));
        let conv = ConvId::group(&format!("grp{}", a.as_str())).unwrap();
        assert_eq!(store.conversation(&conv).await.unwrap(), None);
        let meta = ConversationMeta {
            conv_id: conv.clone(),
            kind: ConvKind::Group,
            title: Some("t".into()),
            created_at: 5,
        };
        store.put_conversation(&meta).await.unwrap();
        assert_eq!(store.conversation(&conv).await.unwrap(), Some(meta));
        store
            .add_members(&conv, &[a.clone(), b.clone()])
            .await
            .unwrap();
        store
            .add_members(&conv, &[b.clone(), c.clone()])
            .await
            .unwrap();
        let mut expected = vec![a.clone(), b.clone(), c.clone()];
        expected.sort();
        assert_eq!(store.members(&conv).await.unwrap(), expected);
        assert_eq!(
            store.user_conversations(&b).await.unwrap(),
            std::slice::from_ref(&conv)
        );
        store.remove_member(&conv, &b).await.unwrap();
        store.remove_member(&conv, &b).await.unwrap();
        assert!(!store.members(&conv).await.unwrap().contains(&b));
        assert!(store.user_conversations(&b).await.unwrap().is_empty());
        assert_eq!(store.user_conversations(&a).await.unwrap(), [conv]);
    }

    pub async fn an_appended_message_is_found_by_its_sender_and_client_msg_id(
        store: &dyn MessageStore,
    ) {
        let (a, b) = (user("a"), user("b"));
        let conv = ConvId::dm(&a, &b).unwrap();
        let msg = message(&conv, 3, &a);
        assert_eq!(store.dedup_get(&a, &msg.client_msg_id).await.unwrap(), None);
        let ticket = store.append_message(&msg, &intent_of(&msg)).await.unwrap();
        store.durable(ticket).await.unwrap();
        let found = store.dedup_get(&a, &msg.client_msg_id).await.unwrap();
        assert_eq!(
            found,
            Some(MessageRef {
                conv_id: conv.clone(),
                conv_seq: 3,
                members: vec![a.clone(), b.clone()],
            }),
            "where it is, and whom it was sent to"
        );
        assert_eq!(
            store.dedup_get(&b, &msg.client_msg_id).await.unwrap(),
            None,
            "dedup is per sender"
        );
        assert_eq!(store.message(&conv, 3).await.unwrap(), Some(msg));
        assert_eq!(store.message(&conv, 4).await.unwrap(), None);
    }

    pub async fn an_inbox_entry_is_indexed_by_its_message(store: &dyn MessageStore) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        let mut e = entry(9, &conv, &peer);
        e.message.conv_seq = 4;
        let ticket = store.append_inbox(&u, &e).await.unwrap();
        store.durable(ticket).await.unwrap();
        assert_eq!(store.inbox_seq_of(&u, &conv, 4).await.unwrap(), Some(9));
        assert_eq!(store.inbox_seq_of(&u, &conv, 5).await.unwrap(), None);
        assert_eq!(store.inbox_seq_of(&peer, &conv, 4).await.unwrap(), None);
    }

    pub async fn a_recalled_message_and_its_inbox_copy_read_blank_and_recalled(
        store: &dyn MessageStore,
    ) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        let mut large = message(&conv, 2, &peer);
        large.body = "x".repeat(proto::MAX_BODY_BYTES);
        let edit = HistoryMessage {
            kind: MessageKind::Edit,
            refers_to: Some(1),
            ..message(&conv, 3, &peer)
        };
        let sent = [message(&conv, 1, &peer), large, edit];
        for (seq, msg) in (10..).zip(&sent) {
            let ticket = store.append_message(msg, &intent_of(msg)).await.unwrap();
            store.durable(ticket).await.unwrap();
            let entry = Entry {
                seq,
                message: msg.clone(),
            };
            let ticket = store.append_inbox(&u, &entry).await.unwrap();
            store.durable(ticket).await.unwrap();
        }
        for (conv_seq, seq) in [(1, 10), (2, 11)] {
            store.recall_message(&conv, conv_seq).await.unwrap();
            store.recall_entry(&u, seq).await.unwrap();
        }
        // Again, and of a message and an entry that are not there: nothing new.
        store.recall_message(&conv, 1).await.unwrap();
        store.recall_message(&conv, 9).await.unwrap();
        store.recall_entry(&u, 99).await.unwrap();

        let expected: Vec<HistoryMessage> = vec![
            sent[0].clone().recalled(),
            sent[1].clone().recalled(),
            sent[2].clone(),
        ];
        let history = store.messages(&conv, Page::After(0), 10).await.unwrap();
        assert_eq!(history, expected, "the log keeps the edit as it was");
        assert_eq!(store.message(&conv, 9).await.unwrap(), None);
        let inbox = store.read_inbox(&u, 0, 10).await.unwrap();
        let messages: Vec<HistoryMessage> = inbox.into_iter().map(|e| e.message).collect();
        assert_eq!(messages, expected);
        assert_eq!(store.inbox_head(&u).await.unwrap(), 12);
    }

    pub async fn read_markers_only_move_up_and_are_listed_per_member(store: &dyn MessageStore) {
        let (a, b) = (user("a"), user("b"));
        let conv = ConvId::group(&format!("g{}", rand_salt())).unwrap();
        assert_eq!(store.read_markers(&conv).await.unwrap(), []);
        store.raise_read_marker(&conv, &a, 7).await.unwrap();
        store.raise_read_marker(&conv, &a, 5).await.unwrap();
        store.raise_read_marker(&conv, &b, 2).await.unwrap();
        store.raise_read_marker(&conv, &b, 9).await.unwrap();
        let mut markers = store.read_markers(&conv).await.unwrap();
        markers.sort();
        let mut expected = vec![(a.clone(), 7), (b.clone(), 9)];
        expected.sort();
        assert_eq!(markers, expected, "a lower marker changes nothing");
        assert_eq!(store.read_marker(&conv, &a).await.unwrap(), 7);
        assert_eq!(store.read_marker(&conv, &user("c")).await.unwrap(), 0);
        let other = ConvId::dm(&a, &b).unwrap();
        assert_eq!(store.read_markers(&other).await.unwrap(), []);
    }

    pub async fn a_fence_removes_what_earlier_writers_left_in_its_range(store: &dyn MessageStore) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        for seq in [1, 2, 5, 7] {
            let mut e = entry(seq, &conv, &peer);
            e.message.conv_seq = seq + 100;
            let ticket = store.append_inbox(&u, &e).await.unwrap();
            store.durable(ticket).await.unwrap();
        }
        let inbox = crate::LogId::Inbox(u.clone());
        store.fence_log(&inbox, "w2", 2, 6).await.unwrap();
        let left = store.read_inbox(&u, 0, 10).await.unwrap();
        assert_eq!(seqs(&left), [1, 2, 7], "only seq 5 was in (2, 6]");
        assert_eq!(store.inbox_seq_of(&u, &conv, 105).await.unwrap(), None);
        assert_eq!(store.inbox_seq_of(&u, &conv, 107).await.unwrap(), Some(7));
        assert_eq!(store.inbox_head(&u).await.unwrap(), 7);

        for conv_seq in 1..=3 {
            let msg = message(&conv, conv_seq, &u);
            let ticket = store.append_message(&msg, &intent_of(&msg)).await.unwrap();
            store.durable(ticket).await.unwrap();
        }
        let log = crate::LogId::Conversation(conv.clone());
        store.fence_log(&log, "w2", 2, 10).await.unwrap();
        assert_eq!(store.message(&conv, 3).await.unwrap(), None);
        let third = message(&conv, 3, &u).client_msg_id;
        assert_eq!(
            store.dedup_get(&u, &third).await.unwrap(),
            None,
            "a dedup record counts only while its message is there"
        );
        let page = store.messages(&conv, Page::After(0), 10).await.unwrap();
        assert_eq!(conv_seqs(&page), [1, 2]);
        assert_eq!(store.last_conv_seq(&conv).await.unwrap(), 2);
        // The writer that fenced last has nothing of its own to fence off.
        store.fence_log(&log, "w2", 0, 10).await.unwrap();
        assert_eq!(
            store.message(&conv, 1).await.unwrap().map(|m| m.conv_seq),
            Some(1)
        );
        // A new writer does.
        store.fence_log(&log, "w3", 1, 10).await.unwrap();
        let page = store.messages(&conv, Page::After(0), 10).await.unwrap();
        assert_eq!(conv_seqs(&page), [1]);
    }

    pub async fn durable_accepts_the_zero_ticket_and_later_tickets(store: &dyn MessageStore) {
        store.durable(WriteTicket::default()).await.unwrap();
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        let first = store
            .append_inbox(&u, &entry(1, &conv, &peer))
            .await
            .unwrap();
        let second = store
            .append_inbox(&u, &entry(2, &conv, &peer))
            .await
            .unwrap();
        store.durable(second).await.unwrap();
        store.durable(first).await.unwrap();
        assert_eq!(store.inbox_head(&u).await.unwrap(), 2);
    }

    pub async fn ceilings_start_at_zero_and_keep_the_last_value(store: &dyn MessageStore) {
        let key = format!("u:{}", user("ceil"));
        assert_eq!(store.load_ceiling(&key).await.unwrap(), 0);
        store.swap_ceiling(&key, 0, 10_000).await.unwrap();
        store.swap_ceiling(&key, 10_000, 20_000).await.unwrap();
        assert_eq!(store.load_ceiling(&key).await.unwrap(), 20_000);
        store.flush().await.unwrap();
    }

    pub async fn a_ceiling_moves_only_from_the_value_the_writer_expects(store: &dyn MessageStore) {
        let key = format!("c:{}", user("cas"));
        store.swap_ceiling(&key, 0, 100).await.unwrap();
        let stale = store.swap_ceiling(&key, 0, 50).await.unwrap_err();
        assert!(
            matches!(stale, crate::Error::Conflict(_)),
            "a second first ceiling: {stale:?}"
        );
        assert!(!stale.is_retryable(), "a conflict is not retried as is");
        let behind = store.swap_ceiling(&key, 90, 190).await.unwrap_err();
        assert!(matches!(behind, crate::Error::Conflict(_)), "{behind:?}");
        assert_eq!(
            store.load_ceiling(&key).await.unwrap(),
            100,
            "a failed swap changes nothing"
        );
        store.swap_ceiling(&key, 100, 200).await.unwrap();
        assert_eq!(store.load_ceiling(&key).await.unwrap(), 200);
    }

    /// Two allocators on one key (two instances that both think they own
    /// it) take turns: every seq either hands out is unique, and each one's
    /// seqs rise.
    pub async fn two_allocators_sharing_a_key_never_hand_out_the_same_seq(
        store: std::sync::Arc<dyn MessageStore>,
    ) {
        let key = format!("u:{}", user("twice"));
        let (a, b) = (
            crate::SeqAllocator::new(store.clone(), 10),
            crate::SeqAllocator::new(store, 10),
        );
        let (mut ca, mut cb) = (a.resume(&key).await.unwrap(), b.resume(&key).await.unwrap());
        let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
        for _round in 0..4 {
            for _ in 0..15 {
                from_a.push(a.next(&key, &mut ca).await.unwrap());
            }
            for _ in 0..15 {
                from_b.push(b.next(&key, &mut cb).await.unwrap());
            }
        }
        assert!(from_a.windows(2).all(|w| w[0] < w[1]), "{from_a:?}");
        assert!(from_b.windows(2).all(|w| w[0] < w[1]), "{from_b:?}");
        let mut all: Vec<Seq> = from_a.iter().chain(&from_b).copied().collect();
        all.sort_unstable();
        let count = all.len();
        all.dedup();
        assert_eq!(all.len(), count, "a seq was handed out twice");
    }

    pub async fn concurrent_appends_to_many_inboxes_all_land(
        store: std::sync::Arc<dyn MessageStore>,
    ) {
        let peer = user("peer");
        let users: Vec<UserId> = (0..32).map(|i| user(&format!("u{i}x"))).collect();
        let mut tasks = Vec::new();
        for u in users.clone() {
            let (store, peer) = (store.clone(), peer.clone());
            tasks.push(tokio::spawn(async move {
                let conv = ConvId::dm(&u, &peer).unwrap();
                for seq in 1..=20 {
                    store
                        .append_inbox(&u, &entry(seq, &conv, &peer))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for u in users {
            assert_eq!(
                seqs(&store.read_inbox(&u, 0, 100).await.unwrap()),
                (1..=20).collect::<Vec<_>>()
            );
        }
    }
}

/// Expands to one test per store case; `$open` is an expression that yields
/// `(Arc<dyn MessageStore>, guard)`, the guard kept alive for the test. It is
/// pasted into each async test body, so it may `.await`, and it may `return`
/// to skip the test (the Scylla suite does when no node is configured).
#[macro_export]
macro_rules! store_suite {
    (@case #[$attr:meta] $open:expr, $name:ident) => {
        #[tokio::test]
        #[$attr]
        async fn $name() {
            let (store, _guard) = $open;
            $crate::suite::store::$name(&*store).await;
        }
    };
    (@retry #[$attr:meta] $open:expr, $name:ident) => {
        #[tokio::test]
        #[$attr]
        async fn $name() {
            let (store, _guard) = $open;
            $crate::suite::retry::$name(&*store).await;
        }
    };
    (#[$attr:meta] $open:expr) => {
        $crate::store_suite!(@case #[$attr] $open, an_empty_inbox_reads_empty_with_head_zero);
        $crate::store_suite!(@case #[$attr] $open, inbox_reads_are_ascending_after_since_and_limited);
        $crate::store_suite!(@case #[$attr] $open, inboxes_whose_ids_share_a_prefix_stay_apart);
        $crate::store_suite!(@case #[$attr] $open, conversation_pages_go_both_ways);
        $crate::store_suite!(@case #[$attr] $open, conversations_and_members_are_kept_both_ways);
        $crate::store_suite!(@case #[$attr] $open, an_appended_message_is_found_by_its_sender_and_client_msg_id);
        $crate::store_suite!(@case #[$attr] $open, an_inbox_entry_is_indexed_by_its_message);
        $crate::store_suite!(@case #[$attr] $open, a_recalled_message_and_its_inbox_copy_read_blank_and_recalled);
        $crate::store_suite!(@case #[$attr] $open, read_markers_only_move_up_and_are_listed_per_member);
        $crate::store_suite!(@case #[$attr] $open, durable_accepts_the_zero_ticket_and_later_tickets);
        $crate::store_suite!(@case #[$attr] $open, a_fence_removes_what_earlier_writers_left_in_its_range);
        $crate::store_suite!(@case #[$attr] $open, ceilings_start_at_zero_and_keep_the_last_value);
        $crate::store_suite!(@case #[$attr] $open, a_ceiling_moves_only_from_the_value_the_writer_expects);
        $crate::store_suite!(@retry #[$attr] $open, retry_items_read_back_in_key_order_after_a_cursor);
        $crate::store_suite!(@retry #[$attr] $open, a_retry_item_is_overwritten_by_its_key_and_removed_once_done);
        $crate::store_suite!(@retry #[$attr] $open, the_retry_checkpoint_starts_empty_and_keeps_the_last_position);
        $crate::store_suite!(@retry #[$attr] $open, a_conversation_scan_pages_through_every_conversation_once);
        $crate::store_suite!(@retry #[$attr] $open, fan_out_intents_are_kept_with_their_messages_and_read_from_a_time_on);
        $crate::store_suite!(@retry #[$attr] $open, the_fan_out_watermark_is_kept_and_intents_above_it_stay);
        #[tokio::test]
        #[$attr]
        async fn two_allocators_sharing_a_key_never_hand_out_the_same_seq() {
            let (store, _guard) = $open;
            $crate::suite::store::two_allocators_sharing_a_key_never_hand_out_the_same_seq(store)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn concurrent_appends_to_many_inboxes_all_land() {
            let (store, _guard) = $open;
            $crate::suite::store::concurrent_appends_to_many_inboxes_all_land(store).await;
        }
    };
    ($open:expr) => {
        $crate::store_suite!(#[cfg(all())] $open);
    };
}

/// Expands to one test per lease-store case; `$open` yields
/// `(Arc<dyn LeaseStore>, guard)`, as for [`store_suite!`].
#[macro_export]
macro_rules! lease_suite {
    (@case #[$attr:meta] $open:expr, $name:ident) => {
        #[tokio::test]
        #[$attr]
        async fn $name() {
            let (store, _guard) = $open;
            $crate::suite::leases::$name(&*store).await;
        }
    };
    (#[$attr:meta] $open:expr) => {
        $crate::lease_suite!(@case #[$attr] $open, of_two_instances_racing_for_a_shard_one_wins_at_the_next_epoch);
        $crate::lease_suite!(@case #[$attr] $open, a_released_shard_keeps_its_epoch_and_the_next_claim_raises_it);
        $crate::lease_suite!(@case #[$attr] $open, an_ended_instance_lease_is_never_renewed);
        $crate::lease_suite!(@case #[$attr] $open, a_late_renewal_never_moves_a_lease_end_back);
    };
    ($open:expr) => {
        $crate::lease_suite!(#[cfg(all())] $open);
    };
}

pub mod cache {
    use super::*;

    /// Appends `seqs` as an allocator would have handed them out, each after
    /// the one before it (the first starts a run).
    async fn append_run(
        cache: &dyn InboxCache,
        u: &UserId,
        conv: &ConvId,
        peer: &UserId,
        seqs: &[Seq],
    ) {
        let mut previous = 0;
        for &seq in seqs {
            cache
                .append(u, previous, &entry(seq, conv, peer))
                .await
                .unwrap();
            previous = seq;
        }
    }

    pub async fn an_unknown_inbox_is_not_covered(cache: &dyn InboxCache) {
        assert_eq!(cache.read(&user("nobody"), 0, 10, 10).await.unwrap(), None);
    }

    pub async fn a_cached_tail_answers_ranges_it_covers(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        append_run(cache, &u, &conv, &peer, &[5, 6, 9]).await;
        assert_eq!(
            seqs(&cache.read(&u, 4, 9, 10).await.unwrap().unwrap()),
            [5, 6, 9]
        );
        assert_eq!(seqs(&cache.read(&u, 5, 9, 1).await.unwrap().unwrap()), [6]);
        assert_eq!(seqs(&cache.read(&u, 5, 6, 10).await.unwrap().unwrap()), [6]);
        assert_eq!(cache.read(&u, 9, 9, 10).await.unwrap(), Some(vec![]));
        assert_eq!(
            cache.read(&u, 3, 9, 10).await.unwrap(),
            None,
            "seq 4 may exist below the cached run"
        );
        assert_eq!(
            cache.read(&u, 5, 10, 10).await.unwrap(),
            None,
            "the cache has not seen seq 10"
        );
    }

    pub async fn newest_returns_what_is_cached_newest_first_up_to_a_seq(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        assert!(cache.newest(&u, 100, 10).await.unwrap().is_empty());
        append_run(cache, &u, &conv, &peer, &[5, 6, 9]).await;
        assert_eq!(seqs(&cache.newest(&u, 100, 10).await.unwrap()), [9, 6, 5]);
        assert_eq!(seqs(&cache.newest(&u, 8, 10).await.unwrap()), [6, 5]);
        assert_eq!(seqs(&cache.newest(&u, 9, 2).await.unwrap()), [9, 6]);
        cache.invalidate(&u).await.unwrap();
        assert!(cache.newest(&u, 100, 10).await.unwrap().is_empty());
    }

    pub async fn an_append_after_a_seq_the_cache_missed_restarts_the_run(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        append_run(cache, &u, &conv, &peer, &[1, 2]).await;
        // Seq 3 was written to the store but never reached the cache.
        cache.append(&u, 3, &entry(4, &conv, &peer)).await.unwrap();
        assert_eq!(
            cache.read(&u, 2, 4, 10).await.unwrap(),
            None,
            "seq 3 is not cached: no hole shown"
        );
        assert_eq!(seqs(&cache.read(&u, 3, 4, 10).await.unwrap().unwrap()), [4]);
    }

    pub async fn an_out_of_order_append_restarts_the_run(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        append_run(cache, &u, &conv, &peer, &[5]).await;
        cache.append(&u, 5, &entry(5, &conv, &peer)).await.unwrap();
        let run = cache.read(&u, 4, 5, 10).await.unwrap().unwrap();
        assert_eq!(
            seqs(&run),
            [5],
            "the run restarted at seq 5, holding it once"
        );
    }

    pub async fn a_cached_entry_reads_back_as_written(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        let mut written = entry(1, &conv, &peer);
        written.message.body = "multi\nline | with \"quotes\" and ünïcode".into();
        cache.append(&u, 0, &written).await.unwrap();
        assert_eq!(cache.read(&u, 0, 1, 10).await.unwrap(), Some(vec![written]));
    }

    pub async fn a_dropped_inbox_starts_a_new_run_at_the_next_append(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        cache.append(&u, 4, &entry(5, &conv, &peer)).await.unwrap();
        cache.append(&u, 3, &entry(4, &conv, &peer)).await.unwrap();
        cache.append(&u, 5, &entry(6, &conv, &peer)).await.unwrap();
        assert_eq!(
            cache.read(&u, 4, 6, 10).await.unwrap(),
            None,
            "seq 5 is no longer cached"
        );
        assert_eq!(seqs(&cache.read(&u, 5, 6, 10).await.unwrap().unwrap()), [6]);
    }

    pub async fn cached_inboxes_whose_ids_share_a_prefix_stay_apart(cache: &dyn InboxCache) {
        let short = user("al");
        let long = UserId::parse(&format!("{short}ice")).unwrap();
        let conv = ConvId::dm(&short, &long).unwrap();
        cache
            .append(&short, 0, &entry(1, &conv, &long))
            .await
            .unwrap();
        cache
            .append(&long, 6, &entry(7, &conv, &short))
            .await
            .unwrap();
        assert_eq!(
            seqs(&cache.read(&short, 0, 1, 10).await.unwrap().unwrap()),
            [1]
        );
        assert_eq!(cache.read(&short, 0, 7, 10).await.unwrap(), None);
        cache.invalidate(&long).await.unwrap();
        assert_eq!(
            seqs(&cache.read(&short, 0, 1, 10).await.unwrap().unwrap()),
            [1]
        );
    }

    /// For a cache built to hold `3` entries per inbox.
    pub async fn only_the_newest_entries_stay_and_the_covered_range_follows(
        cache: &dyn InboxCache,
    ) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        append_run(cache, &u, &conv, &peer, &[1, 2, 3, 10, 11]).await;
        assert_eq!(
            cache.read(&u, 1, 11, 10).await.unwrap(),
            None,
            "seq 2 was evicted"
        );
        assert_eq!(
            seqs(&cache.read(&u, 2, 11, 10).await.unwrap().unwrap()),
            [3, 10, 11]
        );
        cache
            .append(&u, 11, &entry(12, &conv, &peer))
            .await
            .unwrap();
        assert_eq!(
            cache.read(&u, 2, 12, 10).await.unwrap(),
            None,
            "seq 3 was evicted"
        );
        assert_eq!(
            seqs(&cache.read(&u, 3, 12, 10).await.unwrap().unwrap()),
            [10, 11, 12],
            "every entry above the evicted seq 3 is cached, though seqs 4-9 never existed"
        );
        assert_eq!(
            seqs(&cache.read(&u, 3, 11, 1).await.unwrap().unwrap()),
            [10]
        );
    }

    pub async fn invalidate_forgets_the_inbox(cache: &dyn InboxCache) {
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).unwrap();
        cache.append(&u, 0, &entry(1, &conv, &peer)).await.unwrap();
        cache.invalidate(&u).await.unwrap();
        assert_eq!(cache.read(&u, 0, 1, 10).await.unwrap(), None);
    }
}

/// Expands to one test per inbox cache case; `$open` yields `(cache, guard)`
/// (it may `.await`). `only_the_newest_entries_stay_and_the_covered_range_follows`
/// needs a cache of 3 entries per inbox and is called on its own.
#[macro_export]
macro_rules! cache_suite {
    ($open:expr) => {
        $crate::cache_suite!(@case $open, an_unknown_inbox_is_not_covered);
        $crate::cache_suite!(@case $open, a_cached_tail_answers_ranges_it_covers);
        $crate::cache_suite!(@case $open, an_out_of_order_append_restarts_the_run);
        $crate::cache_suite!(@case $open, an_append_after_a_seq_the_cache_missed_restarts_the_run);
        $crate::cache_suite!(@case $open, invalidate_forgets_the_inbox);
        $crate::cache_suite!(@case $open, a_cached_entry_reads_back_as_written);
        $crate::cache_suite!(@case $open, a_dropped_inbox_starts_a_new_run_at_the_next_append);
        $crate::cache_suite!(@case $open, cached_inboxes_whose_ids_share_a_prefix_stay_apart);
        $crate::cache_suite!(@case $open, newest_returns_what_is_cached_newest_first_up_to_a_seq);
    };
    (@case $open:expr, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let (cache, _guard) = $open;
            $crate::suite::cache::$name(&*cache).await;
        }
    };
}

pub mod bus {
    use super::*;

    pub async fn a_gateway_receives_what_is_published_to_it(
        bus: &dyn NotifyBus,
        presence: &dyn Presence,
    ) {
        let (gw, other) = (
            GatewayId(format!("gw-{}", user("g"))),
            GatewayId(format!("gw-{}", user("h"))),
        );
        let mut sub = bus.subscribe(&gw).await.unwrap();
        let mut other_sub = bus.subscribe(&other).await.unwrap();
        let u = user("u");
        presence.connected(&u, &gw).await.unwrap();
        for target in presence.gateways(&u).await.unwrap() {
            bus.publish(&target, Notification::head(u.clone(), 7).into())
                .await
                .unwrap();
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Notification::head(u, 7).into()));
        assert!(
            other_sub.try_recv().is_err(),
            "a gateway without the user gets nothing"
        );
    }

    pub async fn a_second_subscribe_replaces_the_first(bus: &dyn NotifyBus) {
        let gw = GatewayId(format!("gw-{}", user("g")));
        let mut first = bus.subscribe(&gw).await.unwrap();
        let mut second = bus.subscribe(&gw).await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), first.recv()).await;
        assert_eq!(closed.unwrap(), None, "the first subscription ends");
        let note = BusMessage::from(Notification::head(user("u"), 3));
        bus.publish(&gw, note.clone()).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), second.recv()).await;
        assert_eq!(got.unwrap(), Some(note));
    }

    pub async fn publishing_to_a_gateway_nobody_listens_on_succeeds(bus: &dyn NotifyBus) {
        let gw = GatewayId(format!("gw-{}", user("gone")));
        let note = Notification::head(user("u"), 1);
        bus.publish(&gw, note.into()).await.unwrap();
    }

    pub async fn a_notify_carries_its_entries_as_they_were_published(bus: &dyn NotifyBus) {
        let gw = GatewayId(format!("gw-{}", user("g")));
        let mut sub = bus.subscribe(&gw).await.unwrap();
        let (u, conv) = (user("u"), ConvId::parse("g:inline").unwrap());
        let entries: Vec<Entry> = (8..=9)
            .map(|seq| Entry {
                seq,
                message: HistoryMessage {
                    conv_id: conv.clone(),
                    conv_seq: seq,
                    from: user("v"),
                    client_msg_id: ClientMsgId::parse(&format!("c-{seq}")).unwrap(),
                    kind: MessageKind::Text,
                    body: format!("body \"{seq}\" \u{e9}"),
                    ts: 1_700_000_000_000 + seq,
                    refers_to: None,
                    recalled: false,
                },
            })
            .collect();
        let note = BusMessage::from(Notification {
            user: u,
            head: 9,
            inline: Some(crate::Inline { prev: 7, entries }),
        });
        bus.publish(&gw, note.clone()).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv()).await;
        assert_eq!(got.unwrap(), Some(note));
    }

    pub async fn a_broadcast_reaches_every_gateway(bus: &dyn NotifyBus) {
        let (gw, other) = (
            GatewayId(format!("gw-{}", user("g"))),
            GatewayId(format!("gw-{}", user("h"))),
        );
        let mut subs = [
            bus.subscribe(&gw).await.unwrap(),
            bus.subscribe(&other).await.unwrap(),
        ];
        let change = BusMessage::Presence(crate::PresenceChange {
            user: user("u"),
            online: false,
            last_seen: Some(1_764_262_800_000),
        });
        bus.broadcast(change.clone()).await.unwrap();
        for sub in &mut subs {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv()).await;
            assert_eq!(got.unwrap(), Some(change.clone()));
        }
    }

    pub async fn a_typing_indicator_reaches_the_gateway_as_it_was_published(bus: &dyn NotifyBus) {
        let gw = GatewayId(format!("gw-{}", user("g")));
        let mut sub = bus.subscribe(&gw).await.unwrap();
        let typing = BusMessage::from(crate::Typing {
            to: user("to"),
            conv_id: ConvId::parse("g:typing").unwrap(),
            from: user("from"),
        });
        bus.publish(&gw, typing.clone()).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv()).await;
        assert_eq!(got.unwrap(), Some(typing));
    }

    pub async fn presence_lists_the_gateways_holding_a_user(presence: &dyn Presence) {
        let u = user("u");
        let (gw, other) = (
            GatewayId(format!("gw-{}", user("g"))),
            GatewayId(format!("gw-{}", user("h"))),
        );
        assert!(presence.gateways(&u).await.unwrap().is_empty());
        presence.connected(&u, &gw).await.unwrap();
        presence.connected(&u, &other).await.unwrap();
        let mut both = presence.gateways(&u).await.unwrap();
        both.sort();
        let mut expected = vec![gw.clone(), other.clone()];
        expected.sort();
        assert_eq!(both, expected);
        presence.disconnected(&u, &gw).await.unwrap();
        assert_eq!(
            presence.gateways(&u).await.unwrap(),
            std::slice::from_ref(&other)
        );
        presence.disconnected(&u, &other).await.unwrap();
        presence.disconnected(&u, &other).await.unwrap();
        assert!(presence.gateways(&u).await.unwrap().is_empty());
        assert!(presence.gateways(&user("nobody")).await.unwrap().is_empty());
    }

    pub async fn last_seen_is_what_was_set_last_and_nothing_for_a_user_never_seen(
        presence: &dyn Presence,
    ) {
        let u = user("seen");
        assert_eq!(presence.last_seen(&u).await.unwrap(), None);
        presence.set_last_seen(&u, 1_764_262_800_000).await.unwrap();
        presence.set_last_seen(&u, 1_764_262_900_000).await.unwrap();
        assert_eq!(
            presence.last_seen(&u).await.unwrap(),
            Some(1_764_262_900_000)
        );
        assert_eq!(presence.last_seen(&user("never")).await.unwrap(), None);
    }

    /// `ttl`: how long a claim lasts unrefreshed, for implementations whose
    /// claims lapse (`None` for in-process presence). Real time passes here.
    pub async fn refreshed_users_stay_and_the_others_lapse(
        presence: &dyn Presence,
        ttl: Option<std::time::Duration>,
    ) {
        let gw = GatewayId(format!("gw-{}", user("g")));
        let (kept, lapsed) = (user("kept"), user("lapsed"));
        presence.connected(&kept, &gw).await.unwrap();
        presence.connected(&lapsed, &gw).await.unwrap();
        if let Some(ttl) = ttl {
            tokio::time::sleep(ttl / 2).await;
        }
        presence
            .refresh(&gw, std::slice::from_ref(&kept))
            .await
            .unwrap();
        presence.refresh(&gw, &[]).await.unwrap();
        if let Some(ttl) = ttl {
            // The first claims lapsed a quarter of a ttl ago; the refreshed
            // one lapses a quarter of a ttl from now.
            tokio::time::sleep(ttl * 3 / 4).await;
        }
        assert_eq!(
            presence.gateways(&kept).await.unwrap(),
            std::slice::from_ref(&gw)
        );
        if ttl.is_some() {
            assert!(presence.gateways(&lapsed).await.unwrap().is_empty());
        }
    }
}

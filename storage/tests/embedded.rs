//! The trait-level suites run against the embedded store and the in-process
//! cache, bus and presence, plus what is particular to the embedded store:
//! reopening, group commit, and seq ceilings across restarts.

use std::sync::Arc;

use proto::{ConvId, UserId};
use storage::suite::{entry, user};
use storage::{
    Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, InboxCache,
    MessageStore, SeqAllocator,
};
use tempfile::TempDir;

fn open_store() -> (Arc<dyn MessageStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open store");
    (Arc::new(store), dir)
}

mod store_suite {
    use super::*;
    storage::store_suite!(open_store());
}

mod lease_suite {
    use super::*;
    fn open_leases() -> (Arc<dyn storage::LeaseStore>, TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open store");
        (Arc::new(store), dir)
    }
    storage::lease_suite!(open_leases());
}

mod cache_suite {
    use super::*;
    fn open_cache() -> (Arc<dyn InboxCache>, ()) {
        (Arc::new(InProcessCache::default()), ())
    }
    storage::cache_suite!(open_cache());
}

#[tokio::test]
async fn in_process_bus_routes_to_the_gateways_holding_the_user() {
    let (bus, presence) = (InProcessBus::default(), InProcessPresence::default());
    storage::suite::bus::a_gateway_receives_what_is_published_to_it(&bus, &presence).await;
    storage::suite::bus::a_second_subscribe_replaces_the_first(&bus).await;
    storage::suite::bus::publishing_to_a_gateway_nobody_listens_on_succeeds(&bus).await;
    storage::suite::bus::a_notify_carries_its_entries_as_they_were_published(&bus).await;
    storage::suite::bus::a_typing_indicator_reaches_the_gateway_as_it_was_published(&bus).await;
    storage::suite::bus::a_broadcast_reaches_every_gateway(&bus).await;
}

#[tokio::test]
async fn in_process_presence_lists_gateways_and_keeps_refreshed_users() {
    let presence = InProcessPresence::default();
    storage::suite::bus::presence_lists_the_gateways_holding_a_user(&presence).await;
    storage::suite::bus::last_seen_is_what_was_set_last_and_nothing_for_a_user_never_seen(
        &presence,
    )
    .await;
    storage::suite::bus::refreshed_users_stay_and_the_others_lapse(&presence, None).await;
}

#[tokio::test]
async fn the_cache_keeps_only_the_newest_entries_of_an_inbox() {
    let cache = InProcessCache::new(3, 10);
    storage::suite::cache::only_the_newest_entries_stay_and_the_covered_range_follows(&cache).await;
}

#[tokio::test]
async fn everything_written_is_there_after_reopening_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (u, peer) = (
        UserId::parse("alice").expect("id"),
        UserId::parse("bob").expect("id"),
    );
    let conv = ConvId::dm(&u, &peer).expect("dm");
    {
        let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open");
        for seq in 1..=50 {
            store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .expect("append");
        }
        store
            .swap_ceiling("u:alice", 0, 100)
            .await
            .expect("ceiling");
        // Dropped without flush(): the ceiling's fsync covers the appends
        // logged before it, and nothing else is made durable.
    }
    let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("reopen");
    assert_eq!(store.inbox_head(&u).await.expect("head"), 50);
    assert_eq!(store.read_inbox(&u, 0, 500).await.expect("read").len(), 50);
    assert_eq!(store.load_ceiling("u:alice").await.expect("ceiling"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open"));
    let peer = user("peer");
    let appends = 256;
    let tasks: Vec<_> = (0..appends)
        .map(|i| {
            let (store, peer) = (Arc::clone(&store), peer.clone());
            tokio::spawn(async move {
                let u = user(&format!("u{i}x"));
                let conv = ConvId::dm(&u, &peer).expect("dm");
                let ticket = store.append_inbox(&u, &entry(1, &conv, &peer)).await?;
                store.durable(ticket).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    let fsyncs = store.fsync_count();
    assert!(fsyncs >= 1, "appends were made durable");
    assert!(
        fsyncs < appends,
        "{appends} concurrent appends took {fsyncs} fsyncs: no group commit"
    );
}

#[tokio::test]
async fn seqs_resume_above_every_seq_handed_out_before_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut handed_out = Vec::new();
    for _run in 0..3 {
        let store: Arc<dyn MessageStore> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open"));
        let seqs = SeqAllocator::new(store, 10);
        let mut cursor = seqs.resume("u:alice").await.expect("resume");
        for _ in 0..15 {
            handed_out.push(seqs.next("u:alice", &mut cursor).await.expect("next"));
        }
    }
    assert!(
        handed_out.windows(2).all(|w| w[0] < w[1]),
        "seqs never go back: {handed_out:?}"
    );
    assert_eq!(handed_out[0], 1);
}

/// The guarded store forwards every call unchanged when nothing fails.
mod guarded_store_suite {
    use super::*;
    use storage::resilience::{GuardedStore, GuardedStoreConfig};

    fn open_guarded() -> (Arc<dyn MessageStore>, TempDir) {
        let (store, dir) = open_store();
        let guarded = GuardedStore::new(store, GuardedStoreConfig::default());
        (Arc::new(guarded), dir)
    }

    storage::store_suite!(open_guarded());
}

#[tokio::test]
async fn an_append_that_lands_in_a_fenced_range_after_the_fence_is_never_visible() {
    let (store, _dir) = open_store();
    let (u, peer) = (user("u"), user("p"));
    let conv = ConvId::dm(&u, &peer).expect("dm");
    let inbox = storage::LogId::Inbox(u.clone());
    store.fence_log(&inbox, "w2", 2, 6).await.expect("fence");
    for seq in [4, 7] {
        let ticket = store
            .append_inbox(&u, &entry(seq, &conv, &peer))
            .await
            .expect("append");
        store.durable(ticket).await.expect("durable");
    }
    let entries = store.read_inbox(&u, 0, 10).await.expect("read");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7], "the late write at 4 never shows");
    assert_eq!(store.inbox_seq_of(&u, &conv, 4).await.expect("index"), None);
}

//! The store suite against ScyllaDB / Cassandra, plus what is particular to
//! it: reads across many buckets, pages larger than one request, reconnects,
//! schema versions, two instances racing for a seq ceiling.
//!
//! These tests NEED A NODE: set `SCYLLA_NODES=127.0.0.1:9042` (comma-
//! separated for several). Each test runs in a fresh random keyspace,
//! dropped afterwards. Without the variable every test prints
//! `SKIPPED: <test> needs a ScyllaDB/Cassandra node` and returns, so its
//! "ok" means nothing was checked: hence the module name
//! `scylla_needs_node`. (The unit tests under `storage/src/scylla/` need no
//! node.)

#[cfg(feature = "scylla")]
mod scylla_needs_node {
    use std::sync::Arc;

    use proto::{ConvId, Seq};
    use storage::scylla::{ScratchKeyspace, ScyllaOptions};
    use storage::suite::{entry, message, user};
    use storage::{Error, MessageStore, Page, ScyllaStore, SeqAllocator};

    /// A store in a keyspace of its own, or `None` (test skipped).
    async fn open() -> Option<(Arc<dyn MessageStore>, ScratchKeyspace)> {
        let scratch = ScratchKeyspace::from_env()?;
        let store = scratch.connect().await.expect("connect to SCYLLA_NODES");
        Some((Arc::new(store), scratch))
    }

    mod store_suite {
        use super::*;
        storage::store_suite!(
            #[cfg_attr(
                not(scylla_nodes),
                ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
            )]
            match open().await {
                Some(opened) => opened,
                None => return,
            }
        );
    }

    fn inbox_seqs(entries: &[proto::Entry]) -> Vec<Seq> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn log_seqs(messages: &[proto::HistoryMessage]) -> Vec<Seq> {
        messages.iter().map(|m| m.conv_seq).collect()
    }

    #[tokio::test]
    #[cfg_attr(
        not(scylla_nodes),
        ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
    )]
    async fn reads_cross_many_buckets_in_both_directions() {
        let Some((store, _keyspace)) = open().await else {
            return;
        };
        let (u, peer) = (user("walker"), user("peer"));
        let conv = ConvId::dm(&u, &peer).expect("dm");
        // Buckets 0, 1, 2, 3 and 40 (4 to 39 stay empty), on bucket edges.
        let seqs = [5, 131_071, 131_072, 196_608, 2_621_449];
        for seq in seqs {
            store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .expect("append");
            let msg = message(&conv, seq, &peer);
            store.append_message(&msg).await.expect("append message");
        }
        assert_eq!(store.inbox_head(&u).await.expect("head"), 2_621_449);
        assert_eq!(store.last_conv_seq(&conv).await.expect("last"), 2_621_449);
        let all = store.read_inbox(&u, 0, 100).await.expect("read");
        assert_eq!(inbox_seqs(&all), seqs);
        let from_edge = store.read_inbox(&u, 131_071, 2).await.expect("read");
        assert_eq!(inbox_seqs(&from_edge), [131_072, 196_608]);
        let newest = store
            .messages(&conv, Page::Before(Seq::MAX), 3)
            .await
            .expect("page");
        assert_eq!(log_seqs(&newest), [2_621_449, 196_608, 131_072]);
        let older = store
            .messages(&conv, Page::Before(131_072), 10)
            .await
            .expect("page");
        assert_eq!(log_seqs(&older), [131_071, 5]);
        let after = store
            .messages(&conv, Page::After(131_071), 10)
            .await
            .expect("page");
        assert_eq!(log_seqs(&after), [131_072, 196_608, 2_621_449]);
    }

    #[tokio::test]
    #[cfg_attr(
        not(scylla_nodes),
        ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
    )]
    async fn a_page_larger_than_one_request_is_read_in_several() {
        let Some((store, _keyspace)) = open().await else {
            return;
        };
        let (u, peer) = (user("many"), user("peer"));
        let conv = ConvId::dm(&u, &peer).expect("dm");
        for seq in 1..=1_200 {
            store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .expect("append");
        }
        let read = store.read_inbox(&u, 0, 1_150).await.expect("read");
        assert_eq!(inbox_seqs(&read), (1..=1_150).collect::<Vec<Seq>>());
    }

    #[tokio::test]
    #[cfg_attr(
        not(scylla_nodes),
        ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
    )]
    async fn reconnecting_to_an_existing_keyspace_keeps_dedup_records_and_ceilings() {
        let Some(scratch) = ScratchKeyspace::from_env() else {
            return;
        };
        let (a, b) = (user("a"), user("b"));
        let conv = ConvId::dm(&a, &b).expect("dm");
        let msg = message(&conv, 1, &a);
        {
            let store = scratch.connect().await.expect("connect");
            store.append_message(&msg).await.expect("append");
            store.swap_ceiling("u:a", 0, 10).await.expect("ceiling");
        }
        let store = scratch.connect().await.expect("reconnect");
        let found = store
            .dedup_get(&a, &msg.client_msg_id)
            .await
            .expect("dedup");
        assert_eq!(found.map(|r| r.conv_seq), Some(1));
        assert_eq!(store.load_ceiling("u:a").await.expect("ceiling"), 10);
    }

    #[tokio::test]
    #[cfg_attr(
        not(scylla_nodes),
        ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
    )]
    async fn a_keyspace_with_a_newer_schema_version_is_refused() {
        let Some(scratch) = ScratchKeyspace::from_env() else {
            return;
        };
        drop(scratch.connect().await.expect("connect"));
        let options: &ScyllaOptions = scratch.options();
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(&options.nodes)
            .build()
            .await
            .expect("a raw session");
        let bump = format!(
            "UPDATE {}.schema_version SET version = 99 WHERE component = 'store'",
            options.keyspace
        );
        session.query_unpaged(bump, &[]).await.expect("bump");
        let refused = ScyllaStore::connect(options).await.err().expect("refused");
        assert!(matches!(refused, Error::Rejected(_)), "{refused:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(scylla_nodes),
        ignore = "needs a ScyllaDB/Cassandra node: set SCYLLA_NODES"
    )]
    async fn two_instances_racing_for_one_key_never_share_a_seq() {
        let Some(scratch) = ScratchKeyspace::from_env() else {
            return;
        };
        let key = format!("u:{}", user("raced"));
        let mut tasks = Vec::new();
        for _instance in 0..2 {
            let store: Arc<dyn MessageStore> = Arc::new(scratch.connect().await.expect("connect"));
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let seqs = SeqAllocator::new(store, 5);
                let mut cursor = seqs.resume(&key).await?;
                let mut mine = Vec::new();
                while mine.len() < 100 {
                    match seqs.next(&key, &mut cursor).await {
                        Ok(seq) => mine.push(seq),
                        // Lost twice in a row to the other instance: resume.
                        Err(Error::Conflict(_)) => cursor = seqs.resume(&key).await?,
                        Err(err) => return Err(err),
                    }
                }
                Ok::<_, Error>(mine)
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            let mine = task.await.expect("task").expect("allocate");
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
            all.extend(mine);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a seq was handed out by both instances");
    }
}

#[cfg(not(feature = "scylla"))]
#[test]
fn scylla_needs_node_skipped_without_the_feature() {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: storage was built without the `scylla` feature"
    );
}

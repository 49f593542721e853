//! The store suite against ScyllaDB / Cassandra, plus what is particular to
//! it: reads across many buckets, pages larger than one request, reconnects,
//! schema versions, two instances racing for a seq ceiling.
//!
//! These tests NEED A NODE, so they are `#[ignore]`d: run them with
//! `SCYLLA_NODES=127.0.0.1:9042 cargo test -p storage --test scylla -- --ignored`
//! (comma-separated for several nodes). Each test runs in a fresh random
//! keyspace, dropped afterwards. Run with `--ignored` but without the
//! variable, every test fails with a message saying so: none passes
//! without having checked anything. (The unit tests under
//! `storage/src/scylla/` need no node.)

#[cfg(feature = "scylla")]
mod scylla_needs_node {
    use std::sync::Arc;

    use proto::{ConvId, Seq};
    use storage::scylla::{ConsistencyLevel, ScratchKeyspace, ScyllaOptions};
    use storage::suite::{entry, message, user};
    use storage::{Error, MessageStore, Page, ScyllaStore, SeqAllocator};

    /// A store in a keyspace of its own (panics without `SCYLLA_NODES`).
    /// A driver session of its own, for CQL the store does not offer.
    async fn raw_session(options: &ScyllaOptions) -> scylla::client::session::Session {
        scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(&options.nodes)
            .build()
            .await
            .expect("a raw session")
    }

    async fn open() -> (Arc<dyn MessageStore>, ScratchKeyspace) {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect to SCYLLA_NODES");
        (Arc::new(store), scratch)
    }

    mod store_suite {
        use super::*;
        storage::store_suite!(
            #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
            open().await
        );
    }

    mod lease_suite {
        use super::*;
        async fn open_leases() -> (Arc<dyn storage::LeaseStore>, ScratchKeyspace) {
            let scratch = ScratchKeyspace::from_env();
            let store = scratch.connect().await.expect("connect to SCYLLA_NODES");
            (Arc::new(store), scratch)
        }
        storage::lease_suite!(
            #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
            open_leases().await
        );
    }

    /// Appends the message at `seq` of `conv` from `peer` to `user`'s inbox
    /// (at the same seq) and to the conversation's log.
    async fn append_both(
        store: &dyn MessageStore,
        user: &proto::UserId,
        conv: &ConvId,
        seq: Seq,
        peer: &proto::UserId,
    ) {
        store
            .append_inbox(user, &entry(seq, conv, peer))
            .await
            .expect("append");
        let msg = message(conv, seq, peer);
        store
            .append_message(&msg, &storage::suite::intent_of(&msg))
            .await
            .expect("append message");
    }

    fn inbox_seqs(entries: &[proto::Entry]) -> Vec<Seq> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn log_seqs(messages: &[proto::HistoryMessage]) -> Vec<Seq> {
        messages.iter().map(|m| m.conv_seq).collect()
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn reads_cross_many_buckets_in_both_directions() {
        let (store, _keyspace) = open().await;
        let (u, peer) = (user("walker"), user("peer"));
        let conv = ConvId::dm(&u, &peer).expect("dm");
        // Buckets 0, 1, 2, 3 and 40 (4 to 39 stay empty), on bucket edges.
        let seqs = [5, 131_071, 131_072, 196_608, 2_621_449];
        for seq in seqs {
            append_both(&*store, &u, &conv, seq, &peer).await;
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

    /// The write time (microseconds) of the one value `query` selects.
    async fn write_time(
        session: &scylla::client::session::Session,
        query: String,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> i64 {
        let result = session.query_unpaged(query, values).await.expect("read");
        let rows = result.into_rows_result().expect("rows");
        let (at,): (i64,) = rows.single_row().expect("one row");
        at
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn the_rows_of_one_append_share_one_timestamp_and_a_later_append_has_a_later_one() {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect");
        let session = raw_session(scratch.options()).await;
        let ks = &scratch.options().keyspace;
        let (u, peer) = (user("stamped"), user("peer"));
        let conv = ConvId::dm(&u, &peer).expect("dm");
        let mut stamps = Vec::new();
        for seq in [1_i64, 2] {
            // The inbox entry first, then the message (two appends).
            append_both(&store, &u, &conv, seq as Seq, &peer).await;
            let entry = write_time(
                &session,
                format!("SELECT writetime(sender) FROM {ks}.inbox WHERE user_id = ? AND bucket = 0 AND seq = ?"),
                (u.as_str(), seq),
            )
            .await;
            let index = write_time(
                &session,
                format!("SELECT writetime(seq) FROM {ks}.inbox_index WHERE user_id = ? AND conv_id = ? AND bucket = 0 AND conv_seq = ?"),
                (u.as_str(), conv.as_str(), seq),
            )
            .await;
            let row = write_time(
                &session,
                format!("SELECT writetime(sender) FROM {ks}.messages WHERE conv_id = ? AND bucket = 0 AND conv_seq = ?"),
                (conv.as_str(), seq),
            )
            .await;
            let dedup = write_time(
                &session,
                format!("SELECT writetime(conv_id) FROM {ks}.dedup WHERE user_id = ? AND client_msg_id = ?"),
                (peer.as_str(), format!("c-{seq}")),
            )
            .await;
            assert_eq!(entry, index, "one inbox append, one timestamp");
            assert_eq!(row, dedup, "one message append, one timestamp");
            stamps.extend([entry, row]);
        }
        assert!(stamps.is_sorted_by(|a, b| a < b), "{stamps:?}");
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_page_larger_than_one_request_is_read_in_several() {
        let (store, _keyspace) = open().await;
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
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn reconnecting_to_an_existing_keyspace_keeps_dedup_records_and_ceilings() {
        let scratch = ScratchKeyspace::from_env();
        let (a, b) = (user("a"), user("b"));
        let conv = ConvId::dm(&a, &b).expect("dm");
        let msg = message(&conv, 1, &a);
        {
            let store = scratch.connect().await.expect("connect");
            store
                .append_message(&msg, &storage::suite::intent_of(&msg))
                .await
                .expect("append");
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
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_write_of_an_earlier_writer_that_lands_after_the_fence_stays_invisible() {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect");
        let options: &ScyllaOptions = scratch.options();
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).expect("dm");
        store
            .append_inbox(&u, &entry(1, &conv, &peer))
            .await
            .expect("append");
        // The earlier writer's entry at seq 2 was sent before the fence
        // (its timestamp) but reaches the replicas only after it.
        let sent_at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        let inbox = storage::LogId::Inbox(u.clone());
        store
            .fence_log(&inbox, "w2", 1, 10_000)
            .await
            .expect("fence");
        let late = format!(
            "INSERT INTO {}.inbox (user_id, bucket, seq, conv_id, conv_seq, sender, client_msg_id, kind, body, ts) \
             VALUES (?, 0, 2, ?, 2, ?, 'late', 'text', 'late', 0) USING TIMESTAMP ?",
            options.keyspace
        );
        raw_session(options)
            .await
            .query_unpaged(
                late.as_str(),
                (u.as_str(), conv.as_str(), peer.as_str(), sent_at_us),
            )
            .await
            .expect("the late write");
        let entries = store.read_inbox(&u, 0, 10).await.expect("read");
        assert_eq!(inbox_seqs(&entries), [1], "the tombstone shadows it");
        assert_eq!(store.inbox_head(&u).await.expect("head"), 1);
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_keyspace_with_a_newer_schema_version_is_refused() {
        let scratch = ScratchKeyspace::from_env();
        drop(scratch.connect().await.expect("connect"));
        let options: &ScyllaOptions = scratch.options();
        let session = raw_session(options).await;
        let bump = format!(
            "UPDATE {}.schema_version SET version = 99 WHERE component = 'store'",
            options.keyspace
        );
        session.query_unpaged(bump, &[]).await.expect("bump");
        let refused = ScyllaStore::connect(options).await.err().expect("refused");
        assert!(matches!(refused, Error::Rejected(_)), "{refused:?}");
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn retry_items_of_schema_3_in_shard_zero_are_read_once_and_leave_nothing_when_removed() {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect");
        let options: &ScyllaOptions = scratch.options();
        let session = raw_session(options).await;
        // Schema 3 kept every item in shard 0; ten conversations reach
        // other shards too (all ten in shard 0: odds 8^-10).
        let old = format!(
            "INSERT INTO {}.fanout_retries (shard, enqueued_at, conv_id, conv_seq, members, attempts, not_before) \
             VALUES (0, ?, ?, 1, ['a'], 0, 0)",
            options.keyspace
        );
        for i in 0..10_i64 {
            session
                .query_unpaged(old.as_str(), (1_000 + i, format!("g:old-{i}")))
                .await
                .expect("an old item");
        }
        let items = store.retry_items(None, 100).await.expect("read");
        let convs: Vec<String> = items.iter().map(|i| i.key.conv_id.to_string()).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("g:old-{i}")).collect();
        assert_eq!(convs, expected, "each once, in key order");
        for item in &items {
            store.remove_retry(&item.key).await.expect("remove");
        }
        let count = format!("SELECT COUNT(*) FROM {}.fanout_retries", options.keyspace);
        let (left,): (i64,) = session
            .query_unpaged(count, &[])
            .await
            .expect("count")
            .into_rows_result()
            .expect("rows")
            .single_row()
            .expect("one row");
        assert_eq!(left, 0, "nothing left behind in shard 0 or elsewhere");
        assert!(store.retry_items(None, 100).await.expect("read").is_empty());
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn without_a_saved_watermark_recovery_starts_within_the_intents_ttl() {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let from = store.fanout_watermark().await.expect("watermark");
        let two_days = 2 * 86_400_000;
        assert!(
            from + two_days + 60_000 >= now && from <= now,
            "not since 1970: {from} for now {now}"
        );
        // A window of ten minutes reads in one call, found or not.
        let window = store
            .fanout_intents(from, from + 600_000, None, 10)
            .await
            .expect("a window");
        assert!(window.is_empty());
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_keyspace_with_fewer_replicas_than_required_is_refused_before_anything_is_created() {
        let scratch = ScratchKeyspace::from_env();
        let mut strict: ScyllaOptions = scratch.options().clone();
        strict.min_replication_factor = 2;
        let refused = ScyllaStore::connect(&strict).await.err().expect("refused");
        assert!(
            refused
                .to_string()
                .contains("would be created with replication factor 1"),
            "{refused}"
        );
        drop(scratch.connect().await.expect("created with one replica"));
        let refused = ScyllaStore::connect(&strict).await.err().expect("refused");
        assert!(matches!(refused, Error::Rejected(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("has replication factor 1"),
            "{refused}"
        );
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_keyspace_with_enough_replicas_is_accepted() {
        let scratch = ScratchKeyspace::from_env();
        let mut options: ScyllaOptions = scratch.options().clone();
        options.min_replication_factor = 3;
        options.replication = "SimpleStrategy:3".parse().expect("replication");
        // Three replicas on one test node: only ONE can be met.
        options.consistency = ConsistencyLevel::One;
        options.allow_weak_consistency = true;
        let store = ScyllaStore::connect(&options).await.expect("accepted");
        assert_eq!(store.keyspace(), &options.keyspace);
    }

    #[tokio::test]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn a_maximum_size_message_is_stored_and_read_back_without_a_batch_warning() {
        let scratch = ScratchKeyspace::from_env();
        let store = scratch.connect().await.expect("connect");
        let (a, b) = (user("big-a"), user("big-b"));
        let conv = ConvId::dm(&a, &b).expect("dm");
        let mut msg = message(&conv, 1, &a);
        msg.body = "é".repeat(proto::MAX_BODY_BYTES / 2);
        let mut small = message(&conv, 2, &a);
        small.body = "x".repeat(2 * 1024);
        for m in [&msg, &small] {
            store
                .append_message(m, &storage::suite::intent_of(m))
                .await
                .expect("append message");
            for (member, seq) in [(&a, m.conv_seq), (&b, m.conv_seq)] {
                let entry = proto::Entry {
                    seq,
                    message: m.clone(),
                };
                store.append_inbox(member, &entry).await.expect("append");
            }
        }
        assert_eq!(
            store.server_warnings(),
            0,
            "the cluster warned (batch size?): see its log"
        );
        let read = store.read_inbox(&b, 0, 10).await.expect("read");
        let bodies: Vec<&str> = read.iter().map(|e| e.message.body.as_str()).collect();
        assert_eq!(bodies, [msg.body.as_str(), small.body.as_str()]);
        let history = store
            .messages(&conv, Page::Before(Seq::MAX), 10)
            .await
            .expect("history");
        assert_eq!(history, [small.clone(), msg.clone()]);
        let one = store.message(&conv, 1).await.expect("message");
        assert_eq!(one, Some(msg));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p storage --test scylla -- --ignored"]
    async fn two_instances_racing_for_one_key_never_share_a_seq() {
        let scratch = ScratchKeyspace::from_env();
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
#[ignore = "needs storage's `scylla` feature and a ScyllaDB/Cassandra node"]
fn scylla_needs_node_cannot_run_without_the_scylla_feature() {
    panic!("storage was built without the `scylla` feature: no Scylla test ran");
}

//! ARCHITECTURE.md, Redis: the inbox cache holds the newest entries "so
//! syncs of online users do not touch Scylla". With the cache warm, syncs
//! from seqs inside the cached window make no store read at all (counted by
//! a store double), while a sync from further back does read the store,
//! which shows the count works.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage::{InboxCache, RedisOptions};

use crate::cache_support::{Harness, LIMITS, RedisServer, in_process_cache, redis_cache};

/// Entries the cache keeps per inbox.
const CACHED: usize = 10;
/// Sends to the reader: more than the cache keeps.
const SENT: usize = 30;
/// Only a hang would take this long.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_warm_redis_cache_syncs_of_recent_seqs_do_not_read_the_store() -> anyhow::Result<()>
{
    let server = RedisServer::start();
    let options = RedisOptions {
        cache_per_inbox: CACHED,
        ..RedisOptions::default()
    };
    let cache = redis_cache(&server.url(), options).await?;
    check_store_spared(cache).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_warm_in_process_cache_syncs_of_recent_seqs_do_not_read_the_store()
-> anyhow::Result<()> {
    check_store_spared(in_process_cache(CACHED)).await
}

async fn check_store_spared(cache: Arc<dyn InboxCache>) -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let h = Harness::start(cache).await?;
        h.send_mix("warm", SENT).await?;
        let stored = h.stored().await?;
        assert_eq!(stored.len(), SENT);
        let window = &stored[SENT - CACHED..];
        // The cache covers syncs from just below its oldest entry up.
        let mut recent = vec![window[0].seq - 1];
        recent.extend(window.iter().map(|e| e.seq));

        let (reads_before, heads_before) = h.reads.now();
        let served = h
            .assert_syncs_match_store(&recent, &LIMITS, "warm cache")
            .await?;
        let (reads_after, heads_after) = h.reads.now();
        assert_eq!(
            reads_after - reads_before,
            0,
            "read_inbox calls by {} syncs inside the cached window",
            recent.len() * LIMITS.len()
        );
        assert_eq!(
            heads_after - heads_before,
            0,
            "inbox_head calls by syncs of a loaded inbox"
        );
        assert!(served.by_cache > 0, "{served:?}");

        // The count works: ranges older than the window come from the store.
        assert!(
            h.store_reads_of_sync(0).await? >= 1,
            "a sync from 0 with only the newest {CACHED} of {SENT} entries cached read no store"
        );
        let below = stored[SENT - CACHED - 2].seq;
        assert!(
            h.store_reads_of_sync(below).await? >= 1,
            "a sync from {below}, below the cached window, read no store"
        );
        // And the window still answers alone afterwards.
        assert_eq!(h.store_reads_of_sync(window[3].seq).await?, 0);
        Ok(())
    })
    .await
    .context("hung")?
}

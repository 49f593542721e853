//! ARCHITECTURE.md, the sync invariant: the cache never shows what the store
//! does not have, and never shows a hole. So whichever of them serves a sync,
//! the answer is the one the store alone gives: for every since (0, each
//! seq, past the head) and every limit, after each batch of a mix of DMs and
//! group messages, with a real Redis cache and with the in-process one, and
//! with a cache that holds only the newest entries (old ranges come from the
//! store).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage::{InboxCache, RedisOptions};

use crate::cache_support::{Harness, LIMITS, RedisServer, in_process_cache, redis_cache};

/// Only a hang would take this long.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_answered_by_the_redis_cache_equal_the_stores_answers() -> anyhow::Result<()> {
    let server = RedisServer::start();
    let cache = redis_cache(&server.url(), RedisOptions::default()).await?;
    check_agreement(cache, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_equal_the_stores_answers_when_redis_caches_only_the_newest_five_entries()
-> anyhow::Result<()> {
    let server = RedisServer::start();
    let options = RedisOptions {
        cache_per_inbox: 5,
        ..RedisOptions::default()
    };
    let cache = redis_cache(&server.url(), options).await?;
    check_agreement(cache, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_answered_by_the_in_process_cache_equal_the_stores_answers() -> anyhow::Result<()> {
    check_agreement(in_process_cache(200), false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_equal_the_stores_answers_when_the_in_process_cache_holds_only_five_entries()
-> anyhow::Result<()> {
    check_agreement(in_process_cache(5), true).await
}

/// Three batches of sends; after each, every (since, limit) pair answers as
/// the store does. The cache must answer some of them (else the comparison
/// proves nothing about it); a small cache leaves some to the store.
async fn check_agreement(cache: Arc<dyn InboxCache>, small: bool) -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let h = Harness::start(cache).await?;
        for (batch, count) in [("a", 9), ("b", 14), ("c", 21)] {
            h.send_mix(batch, count).await?;
            let sinces = h.all_sinces().await?;
            let served = h
                .assert_syncs_match_store(&sinces, &LIMITS, &format!("after batch {batch}"))
                .await?;
            assert!(
                served.by_cache > 0,
                "after batch {batch} the cache answered no sync: {served:?}"
            );
            if small {
                assert!(
                    served.by_store > 0,
                    "after batch {batch} a five-entry cache answered every range: {served:?}"
                );
            }
        }
        assert_eq!(
            h.stored().await?.len(),
            9 + 14 + 21,
            "every send reached the inbox"
        );
        Ok(())
    })
    .await
    .context("hung")?
}

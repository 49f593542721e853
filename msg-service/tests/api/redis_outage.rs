//! ARCHITECTURE.md, failure behaviour: with Redis down, syncs read the store
//! and sends still succeed (a failed cache write only drops that inbox's
//! cache); and the cache never shows a hole, so once Redis is back no sync
//! may skip an entry written while the cache missed it - whether Redis comes
//! back empty, comes back from an older snapshot (the run cached before the
//! outage survives), or was only silent for a while (a network partition).
//! Each test starts its own redis-server and kills it or cuts it off.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage::{InboxCache, RedisCache};

use crate::cache_support::{
    FreezingProxy, Harness, LIMITS, RedisServer, Served, impatient, redis_cache, save_snapshot,
    wait_until_answering,
};

/// Only a hang would take this long.
const DEADLINE: Duration = Duration::from_secs(180);

async fn start(url: &str) -> anyhow::Result<(Harness, Arc<RedisCache>)> {
    let cache = redis_cache(url, impatient(200)).await?;
    let h = Harness::start(Arc::clone(&cache) as Arc<dyn InboxCache>).await?;
    Ok((h, cache))
}

/// Every (since, limit) pair answers as the store does, and the cache
/// answered every non-empty range (it is warm and covers the whole inbox).
async fn assert_all_from_cache(h: &Harness, when: &str) -> anyhow::Result<()> {
    let served = h
        .assert_syncs_match_store(&h.all_sinces().await?, &LIMITS, when)
        .await?;
    assert_eq!(
        served.by_store, 0,
        "{when}: the cache is in use: {served:?}"
    );
    assert!(served.by_cache > 0, "{when}: {served:?}");
    Ok(())
}

/// Every (since, limit) pair answers as the store does; returns who answered.
async fn assert_all_match(h: &Harness, limits: &[usize], when: &str) -> anyhow::Result<Served> {
    h.assert_syncs_match_store(&h.all_sinces().await?, limits, when)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_syncs_read_the_store_and_sends_succeed_and_after_a_restart_syncs_stay_exact()
-> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let mut server = RedisServer::start();
        let (h, cache) = start(&server.url()).await?;
        h.send_mix("before", 10).await?;
        assert_all_from_cache(&h, "before the outage").await?;

        server.stop();
        let served = assert_all_match(&h, &[2, 100], "redis down").await?;
        assert_eq!(served.by_cache, 0, "Redis is down: {served:?}");
        h.send_mix("during", 6)
            .await
            .context("sends while Redis is down")?;
        let served = assert_all_match(&h, &[1, 7, 500], "redis down, after sends").await?;
        assert_eq!(served.by_cache, 0, "Redis is down: {served:?}");

        server.start_again();
        wait_until_answering(&cache).await?;
        assert_all_match(&h, &LIMITS, "redis back, empty").await?;
        h.send_mix("after", 8).await?;
        let served = assert_all_match(&h, &LIMITS, "redis back, after sends").await?;
        assert!(
            served.by_cache > 0,
            "the cache answers again once Redis is back: {served:?}"
        );
        Ok(())
    })
    .await
    .context("hung")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_from_a_snapshot_older_than_the_outage_syncs_show_no_hole()
-> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let mut server = RedisServer::start();
        let (h, cache) = start(&server.url()).await?;
        h.send_mix("saved", 10).await?;
        assert_all_from_cache(&h, "before the outage").await?;
        let saved_head = h.svc.inbox_head(&h.reader).await?;
        save_snapshot(server.port())?;

        server.stop();
        h.send_mix("missed", 5)
            .await
            .context("sends while Redis is down")?;
        server.start_again();
        wait_until_answering(&cache).await?;
        // The setup works: Redis loaded the run cached before the outage.
        let survived = cache.read(&h.reader, 0, saved_head, 100).await?;
        assert_eq!(
            survived.map(|run| run.len()),
            Some(10),
            "the snapshot's cached run is back in Redis"
        );

        h.send_mix("after", 6).await?;
        let served = assert_all_match(&h, &LIMITS, "redis back from a snapshot").await?;
        assert!(served.by_cache > 0, "{served:?}");
        Ok(())
    })
    .await
    .context("hung")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_newest_cached_entries_in_a_restart_syncs_show_no_hole()
-> anyhow::Result<()> {
    // No cache call fails here: Redis acknowledged the entries it then lost.
    tokio::time::timeout(DEADLINE, async {
        let mut server = RedisServer::start();
        let (h, cache) = start(&server.url()).await?;
        h.send_mix("saved", 10).await?;
        save_snapshot(server.port())?;
        h.send_mix("unsaved", 4).await?;
        assert_all_from_cache(&h, "before the restart").await?;

        server.start_again();
        wait_until_answering(&cache).await?;
        h.send_mix("after", 6).await?;
        let served = assert_all_match(&h, &LIMITS, "redis restarted from a snapshot").await?;
        assert!(served.by_cache > 0, "{served:?}");
        Ok(())
    })
    .await
    .context("hung")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_redis_connection_goes_silent_and_is_replaced_syncs_show_no_hole()
-> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let server = RedisServer::start();
        let proxy = FreezingProxy::start(server.port()).await;
        let (h, cache) = start(&proxy.url()).await?;
        h.send_mix("before", 10).await?;
        assert_all_from_cache(&h, "before the partition").await?;

        // Writes sent on the frozen connection never reach Redis; the
        // cached run stays there.
        proxy.freeze_connections();
        h.send_mix("silent", 6)
            .await
            .context("sends while Redis is silent")?;
        wait_until_answering(&cache).await?;
        h.send_mix("after", 6).await?;
        let served = assert_all_match(&h, &LIMITS, "after the partition").await?;
        assert!(served.by_cache > 0, "{served:?}");
        Ok(())
    })
    .await
    .context("hung")?
}

//! What the cache tests share: the store double counting the reads a sync
//! makes, a service on the embedded store with a chosen inbox cache (a real
//! Redis one or the in-process one), a mix of traffic to one reader, and the
//! answer every sync must give, computed from the store alone.

#[path = "../../../storage/tests/support/mod.rs"]
mod redis_server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use msg_service::ServiceConfig;
use proto::{ConvId, Entry, Seq, SyncResult, UserId};
use storage::{
    EmbeddedStore, InProcessCache, InboxCache, MessageStore, RedisBackends, RedisCache,
    RedisOptions,
};

pub use redis_server::{FreezingProxy, RedisServer};

use crate::helpers::{Options, TestService, user, users};
use crate::store_double::StoreDouble;
pub use crate::store_double::StoreReads;

/// Every limit a sync is tried with.
pub const LIMITS: [usize; 5] = [1, 2, 7, 100, 500];

/// A service on the counting store with the given cache, the bare store
/// under it (read past the service, uncounted), and the counters.
pub struct Harness {
    /// The service.
    pub svc: TestService,
    /// The embedded store itself: the truth.
    store: EmbeddedStore,
    /// What the service read from the store.
    pub reads: Arc<StoreReads>,
    /// The user whose inbox the tests look at.
    pub reader: UserId,
    /// Users that write to the reader.
    peers: Vec<UserId>,
    /// A group of the reader and the peers.
    group: ConvId,
}

impl Harness {
    /// A service over `cache`, with the reader, its peers and their group.
    pub async fn start(cache: Arc<dyn InboxCache>) -> anyhow::Result<Self> {
        let reads = Arc::new(StoreReads::default());
        let bare = Arc::new(std::sync::Mutex::new(None));
        let (r, b) = (Arc::clone(&reads), Arc::clone(&bare));
        let svc = TestService::start_with(Options {
            config: ServiceConfig {
                send_rate: 10_000,
                send_burst: 10_000,
                ..ServiceConfig::default()
            },
            cache: Some(cache),
            wrap_store: Some(Arc::new(move |inner: EmbeddedStore| {
                *b.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner.clone());
                StoreDouble::counting(inner, &r)
            })),
            ..Options::default()
        })?;
        let store = bare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .context("the service opened no store")?;
        let reader = user("reader");
        let peers = users("peer", 3);
        let mut members = peers.clone();
        members.push(reader.clone());
        let group = svc
            .create_group(&peers[0], &members, Some("mix"))
            .await?
            .conv_id;
        Ok(Harness {
            svc,
            store,
            reads,
            reader,
            peers,
            group,
        })
    }

    /// Sends `count` messages that each land one entry in the reader's
    /// inbox, in turn: a peer's DM, a peer's group message, the reader's own
    /// DM to a peer, the reader's group message. Ids are `{batch}-{k}`.
    pub async fn send_mix(&self, batch: &str, count: usize) -> anyhow::Result<()> {
        let before = self.stored().await?.len();
        for k in 0..count {
            let id = format!("{batch}-{k}");
            let peer = &self.peers[k % self.peers.len()];
            let body = format!("{batch} message {k}");
            let sent = match k % 4 {
                0 => self.svc.send(peer, &self.reader, &id, &body).await,
                1 => self.svc.send(peer, &self.group, &id, &body).await,
                2 => self.svc.send(&self.reader, peer, &id, &body).await,
                _ => self.svc.send(&self.reader, &self.group, &id, &body).await,
            };
            sent.with_context(|| format!("send {id}"))?;
        }
        let after = self.stored().await?.len();
        ensure!(
            after == before + count,
            "{count} sends of batch {batch} stored {} entries in the reader's inbox",
            after - before
        );
        Ok(())
    }

    /// The reader's whole inbox as the store holds it.
    pub async fn stored(&self) -> anyhow::Result<Vec<Entry>> {
        Ok(self.store.read_inbox(&self.reader, 0, 100_000).await?)
    }

    /// What a sync of the reader from `since` with `limit` must answer,
    /// computed from the store alone.
    pub async fn expected(&self, since: Seq, limit: usize) -> anyhow::Result<SyncResult> {
        Ok(expected_from(&self.stored().await?, since, limit))
    }

    /// The since values worth trying: 0, every seq, and past the head.
    pub async fn all_sinces(&self) -> anyhow::Result<Vec<Seq>> {
        let stored = self.stored().await?;
        let head = stored.last().map_or(0, |e| e.seq);
        let mut sinces = vec![0];
        sinces.extend(stored.iter().map(|e| e.seq));
        sinces.extend([head + 1, head + 1_000]);
        Ok(sinces)
    }

    /// Syncs the reader from every `since` with every limit and compares
    /// each answer with the store's; counts who answered.
    pub async fn assert_syncs_match_store(
        &self,
        sinces: &[Seq],
        limits: &[usize],
        when: &str,
    ) -> anyhow::Result<Served> {
        let stored = self.stored().await?;
        let head = stored.last().map_or(0, |e| e.seq);
        let mut served = Served::default();
        for &since in sinces {
            for &limit in limits {
                let expected = expected_from(&stored, since, limit);
                let (reads_before, _) = self.reads.now();
                let got = self
                    .svc
                    .sync(&self.reader, since, limit)
                    .await
                    .with_context(|| format!("{when}: sync since {since} limit {limit}"))?;
                let (reads_after, _) = self.reads.now();
                assert_eq!(
                    got.head, expected.head,
                    "{when}: the head of a sync since {since} limit {limit}"
                );
                assert_eq!(
                    crate::helpers::seqs(&got.entries),
                    crate::helpers::seqs(&expected.entries),
                    "{when}: the seqs of a sync since {since} limit {limit} (store: {:?})",
                    crate::helpers::seqs(&stored)
                );
                assert_eq!(
                    got, expected,
                    "{when}: the answer to a sync since {since} limit {limit}"
                );
                if since < head {
                    if reads_after == reads_before {
                        served.by_cache += 1;
                    } else {
                        served.by_store += 1;
                    }
                }
            }
        }
        Ok(served)
    }

    /// Syncs the reader from `since` (with a limit that takes the whole
    /// rest) and returns how many `read_inbox` calls the store got.
    pub async fn store_reads_of_sync(&self, since: Seq) -> anyhow::Result<usize> {
        let (before, _) = self.reads.now();
        let got = self.svc.sync(&self.reader, since, 500).await?;
        let (after, _) = self.reads.now();
        assert_eq!(
            got,
            self.expected(since, 500).await?,
            "a sync since {since}"
        );
        Ok(after - before)
    }
}

/// Which syncs (of a non-empty range) the cache answered, and which the store.
#[derive(Debug, Default)]
pub struct Served {
    /// Answered without a `read_inbox` call.
    pub by_cache: usize,
    /// Answered with one.
    pub by_store: usize,
}

/// The answer to a sync from `since` with `limit` over an inbox that holds
/// exactly `stored` (ascending) and whose head is its last seq.
fn expected_from(stored: &[Entry], since: Seq, limit: usize) -> SyncResult {
    let head = stored.last().map_or(0, |e| e.seq);
    let entries: Vec<Entry> = stored
        .iter()
        .filter(|e| e.seq > since)
        .take(limit)
        .cloned()
        .collect();
    let after = entries.last().map_or(since, |e| e.seq);
    SyncResult {
        more: stored.iter().any(|e| e.seq > after),
        entries,
        head,
    }
}

/// The in-process cache with `per_inbox` entries per inbox.
pub fn in_process_cache(per_inbox: usize) -> Arc<dyn InboxCache> {
    Arc::new(InProcessCache::new(per_inbox, 100_000))
}

/// Options that give up on a Redis that is down within a fraction of a second.
pub fn impatient(per_inbox: usize) -> RedisOptions {
    RedisOptions {
        cache_per_inbox: per_inbox,
        command_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        reconnect_retries: 1,
        ..RedisOptions::default()
    }
}

/// The Redis inbox cache at `url`.
pub async fn redis_cache(url: &str, options: RedisOptions) -> anyhow::Result<Arc<RedisCache>> {
    let backends = RedisBackends::connect(url, options)
        .await
        .with_context(|| format!("connecting to the redis-server at {url}"))?;
    Ok(Arc::new(backends.cache))
}

/// Waits until `cache` answers again (after an outage), up to 15 s.
pub async fn wait_until_answering(cache: &RedisCache) -> anyhow::Result<()> {
    let probe = user("probe");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cache.read(&probe, 0, 1, 1).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(error = %err, "redis not answering yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err).context("the Redis cache did not answer within 15 s"),
        }
    }
}

/// Makes the redis-server on `port` write its snapshot (`SAVE`), which it
/// loads when it starts again in the same dir.
pub fn save_snapshot(port: u16) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("connect to redis")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"SAVE\r\n")?;
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).context("SAVE's reply")?;
    ensure!(
        &reply == b"+OK\r\n",
        "SAVE answered {:?}",
        String::from_utf8_lossy(&reply)
    );
    Ok(())
}

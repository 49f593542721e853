//! Routing between replicas: where a call about a log runs (here, or at the
//! instance its shard is assigned to), and the gRPC clients of the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::LeaseKeeper;
use crate::Result;
use crate::grpc::{ClientConfig, RemoteMessageService};

/// Where a call for one shard runs.
pub(crate) enum Route {
    /// In this process.
    Here,
    /// At another replica (its address), forwarded once.
    Peer(String, Arc<RemoteMessageService>),
}

/// The routes of one replica: its lease keeper decides, and a client per
/// other replica (connected lazily, with a breaker each) carries the call.
pub struct Routes {
    keeper: Arc<LeaseKeeper>,
    timeout: Duration,
    peers: Mutex<HashMap<String, Arc<RemoteMessageService>>>,
}

impl Routes {
    /// Routes by `keeper`'s view of the live instances; forwarded calls
    /// time out after `timeout`.
    pub fn new(keeper: Arc<LeaseKeeper>, timeout: Duration) -> Self {
        Routes {
            keeper,
            timeout,
            peers: Mutex::default(),
        }
    }

    /// The lease keeper the routes follow.
    pub fn keeper(&self) -> &Arc<LeaseKeeper> {
        &self.keeper
    }

    /// Where a call about a log of `shard` runs.
    pub(crate) fn to_shard(&self, shard: u16) -> Result<Route> {
        match self.keeper.route(shard) {
            None => Ok(Route::Here),
            Some(addr) => {
                let peer = self.peer(&addr)?;
                Ok(Route::Peer(addr, peer))
            }
        }
    }

    /// Returns once none of `shards` is routed to `addr` any more: the
    /// replica there died, or was paused past its lease, and others took
    /// them over. A call in flight there will then not be answered by
    /// their owner, so it need not wait out its deadline. Pending while the
    /// keeper runs and any of them is still routed there.
    pub(crate) async fn moved_from(&self, addr: &str, shards: &[u16]) {
        let mut membership = self.keeper.membership();
        loop {
            let routed_there = shards
                .iter()
                .any(|&shard| self.keeper.route(shard).as_deref() == Some(addr));
            if !routed_there {
                return;
            }
            if membership.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The patience of one call (or fan-out) with shards on their way
    /// between two live replicas, starting now.
    pub(crate) fn handover(&self) -> Handover {
        Handover {
            until: Instant::now() + self.keeper.handover_time(),
            membership: self.keeper.membership(),
            keeper: Arc::clone(&self.keeper),
        }
    }

    fn peer(&self, addr: &str) -> Result<Arc<RemoteMessageService>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = peers.get(addr) {
            return Ok(Arc::clone(peer));
        }
        let peer =
            RemoteMessageService::new(&ClientConfig::peer(addr, self.timeout)).map_err(|err| {
                // Retryable: the lease table may name a usable address soon.
                storage::Error::Unavailable(
                    format!("the replica address {addr:?} is unusable: {err}").into(),
                )
            })?;
        let peer = Arc::new(peer);
        peers.insert(addr.to_owned(), Arc::clone(&peer));
        Ok(peer)
    }
}

/// A shard on its way between two live replicas (one joined, or one is
/// leaving) is served by neither for a moment. A call turned away then
/// ("not served here") is held, up to the keeper's hand-over time, and made
/// again once the shard may have arrived, so that clients see a slower
/// answer rather than an error to retry, and a fan-out reaches the inbox
/// now rather than after the retry queue's backoff.
pub(crate) struct Handover {
    until: Instant,
    membership: watch::Receiver<u64>,
    keeper: Arc<LeaseKeeper>,
}

impl Handover {
    /// `false` once the hand-over time is over, or when this replica's own
    /// lease lapsed or was ended (then nothing is moving: its store is out
    /// of reach or it was deposed, and callers are better told at once);
    /// else `true` when the shards here or the live replicas changed (a
    /// claim here), or after [`HANDOVER_POLL`] (a claim elsewhere is seen
    /// only by asking again).
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() >= self.until || !self.keeper.holds_its_lease() {
            return false;
        }
        metrics::counter!("chat_calls_held_for_shard_total").increment(1);
        let membership = &mut self.membership;
        let changed = async {
            if membership.changed().await.is_err() {
                // The keeper is gone: nothing will change; wait out the poll.
                std::future::pending::<()>().await;
            }
        };
        let poll = (Instant::now() + HANDOVER_POLL).min(self.until);
        let _ = tokio::time::timeout_at(poll, changed).await;
        true
    }
}

/// How often a call held for a shard on its way to another replica asks
/// that replica again.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

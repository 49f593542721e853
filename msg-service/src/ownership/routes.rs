//! Routing between replicas: where a call about a log runs (here, or at the
//! instance its shard is assigned to), and the gRPC clients of the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

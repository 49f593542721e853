//! Presence: which gateways hold sockets of a user, so notifies go only
//! there (a user with one is online), and when each user's last device
//! left (their `last_seen`, protocol 1.1).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use proto::UserId;

use crate::Result;
use crate::model::GatewayId;

/// Tracks the gateways that hold each user's sockets. A gateway calls
/// `connected` when its first socket of a user opens and `disconnected` when
/// its last closes, and `refresh`es all its users periodically: shared
/// implementations let a claim lapse when it is not refreshed in time, so the
/// users of a gateway that died stop being routed to it.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// `gateway` holds sockets of `user` (its first one just opened).
    async fn connected(&self, user: &UserId, gateway: &GatewayId) -> Result<()>;
    /// `gateway` holds no more sockets of `user` (its last one just closed).
    async fn disconnected(&self, user: &UserId, gateway: &GatewayId) -> Result<()>;
    /// The gateways holding sockets of `user`.
    async fn gateways(&self, user: &UserId) -> Result<Vec<GatewayId>>;
    /// Announces again every user `gateway` holds, extending its claims
    /// (and restoring them if the presence store lost them).
    async fn refresh(&self, gateway: &GatewayId, users: &[UserId]) -> Result<()>;
    /// Names the running instance of the presence store; it changes when the
    /// store restarted and may have lost every claim (gateways then announce
    /// their users again at once instead of at their next refresh). An error
    /// means the store is unreachable now.
    async fn instance(&self) -> Result<String> {
        Ok(String::new())
    }
    /// Notes that `user`'s last device left at `at_ms` (Unix ms).
    async fn set_last_seen(&self, user: &UserId, at_ms: u64) -> Result<()>;
    /// When `user`'s last device left, if known (kept [`LAST_SEEN_KEPT`]).
    async fn last_seen(&self, user: &UserId) -> Result<Option<u64>>;
}

/// How long a user's `last_seen` is kept after it was set.
pub const LAST_SEEN_KEPT: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Past this many users' `last_seen`, the in-process presence forgets
/// those older than [`LAST_SEEN_KEPT`], and then the oldest half.
const LAST_SEEN_MAX: usize = 1_000_000;

/// In-process presence: a socket count per user and gateway. Nothing lapses
/// and nothing is lost in one process, so `refresh` has nothing to do.
#[derive(Default)]
pub struct InProcessPresence {
    sockets: Mutex<HashMap<UserId, BTreeMap<GatewayId, usize>>>,
    last_seen: Mutex<HashMap<UserId, u64>>,
}

impl InProcessPresence {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, BTreeMap<GatewayId, usize>>> {
        self.sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Presence for InProcessPresence {
    async fn connected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
        *self
            .sockets()
            .entry(user.clone())
            .or_default()
            .entry(gateway.clone())
            .or_insert(0) += 1;
        Ok(())
    }

    async fn disconnected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
        let mut sockets = self.sockets();
        if let Some(gateways) = sockets.get_mut(user) {
            if let Some(count) = gateways.get_mut(gateway) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    gateways.remove(gateway);
                }
            }
            if gateways.is_empty() {
                sockets.remove(user);
            }
        }
        Ok(())
    }

    async fn gateways(&self, user: &UserId) -> Result<Vec<GatewayId>> {
        Ok(self
            .sockets()
            .get(user)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn refresh(&self, _gateway: &GatewayId, _users: &[UserId]) -> Result<()> {
        Ok(())
    }

    async fn set_last_seen(&self, user: &UserId, at_ms: u64) -> Result<()> {
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= LAST_SEEN_MAX && !seen.contains_key(user) {
            forget_oldest(&mut seen, at_ms);
        }
        seen.insert(user.clone(), at_ms);
        Ok(())
    }

    async fn last_seen(&self, user: &UserId) -> Result<Option<u64>> {
        let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        Ok(seen.get(user).copied())
    }
}

/// Makes room in a full `last_seen` map: those past [`LAST_SEEN_KEPT`] go,
/// and if that is not enough, the older half.
fn forget_oldest(seen: &mut HashMap<UserId, u64>, now_ms: u64) {
    let kept_ms = u64::try_from(LAST_SEEN_KEPT.as_millis()).unwrap_or(u64::MAX);
    seen.retain(|_, at| now_ms.saturating_sub(*at) < kept_ms);
    if seen.len() >= LAST_SEEN_MAX {
        let mut times: Vec<u64> = seen.values().copied().collect();
        let middle = times.len() / 2;
        let (_, median, _) = times.select_nth_unstable(middle);
        let median = *median;
        seen.retain(|_, at| *at > median);
    }
}

//! Typing indicators (protocol 1.1): a member's `typing` frame goes to the
//! other members' connected devices, on this gateway or another (through
//! the notify bus, to the gateways presence names), at most one per user
//! and conversation every 3 s. Best effort and never stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msg_service::MessageApi;
use proto::{ConvId, UserId};
use storage::{NotifyBus, Presence, Typing};

use crate::error::Error;

/// At most one indicator per user and conversation this often.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);

/// Past this many remembered (user, conversation) pairs, those older than
/// [`TYPING_EVERY`] are forgotten.
const PRUNE_PAST: usize = 10_000;

/// Sends typing indicators and drops the extra ones.
pub struct Typist {
    bus: Arc<dyn NotifyBus>,
    presence: Arc<dyn Presence>,
    /// When each (user, conversation) last had an indicator go out.
    last: Mutex<HashMap<(UserId, ConvId), Instant>>,
}

impl Typist {
    /// Sends through `bus` to the gateways `presence` names.
    pub fn new(bus: Arc<dyn NotifyBus>, presence: Arc<dyn Presence>) -> Self {
        Typist {
            bus,
            presence,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `user` is typing in `conv`: `forbidden` unless a member; else the
    /// other members' devices are told, unless one went out for the same
    /// user and conversation less than 3 s ago (then it is dropped).
    pub async fn typing(
        &self,
        api: &Arc<dyn MessageApi>,
        user: &UserId,
        conv: ConvId,
    ) -> Result<(), Error> {
        let members = members(api, user, &conv).await?;
        if !self.admit(user, &conv) {
            metrics::counter!("chat_typing_dropped_total").increment(1);
            return Ok(());
        }
        for member in members.into_iter().filter(|m| m != user) {
            self.tell(Typing {
                to: member,
                conv_id: conv.clone(),
                from: user.clone(),
            })
            .await;
        }
        Ok(())
    }

    /// Whether an indicator of `user` in `conv` may go out now (and notes
    /// that one does).
    fn admit(&self, user: &UserId, conv: &ConvId) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > PRUNE_PAST {
            last.retain(|_, at| now.duration_since(*at) < TYPING_EVERY);
        }
        let key = (user.clone(), conv.clone());
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    /// Publishes one indicator to every gateway holding its recipient;
    /// failures are logged and dropped (best effort).
    async fn tell(&self, typing: Typing) {
        let gateways = match self.presence.gateways(&typing.to).await {
            Ok(gateways) => gateways,
            Err(err) => {
                tracing::debug!(error = %err, to = %typing.to, "typing: presence lookup failed; dropped");
                return;
            }
        };
        for gateway in gateways {
            if let Err(err) = self.bus.publish(&gateway, typing.clone().into()).await {
                tracing::debug!(error = %err, %gateway, "typing: publish failed; dropped");
            }
        }
    }
}

/// The members of `conv` if `user` is one; `forbidden` otherwise. A direct
/// conversation's members are in its id; a group's come from its owner.
async fn members(
    api: &Arc<dyn MessageApi>,
    user: &UserId,
    conv: &ConvId,
) -> Result<Vec<UserId>, Error> {
    if let Some((a, b)) = conv.dm_members() {
        return match *user == a || *user == b {
            true => Ok(vec![a, b]),
            false => Err(msg_service::Error::Forbidden.into()),
        };
    }
    Ok(api.conversation(user, conv).await?.members)
}

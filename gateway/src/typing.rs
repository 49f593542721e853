//! Typing indicators (protocol 1.1): a member's `typing` frame goes to the
//! other members' connected devices, on this gateway or another (through
//! the notify bus, to the gateways presence names), at most one per user
//! and conversation every 3 s. Best effort and never stored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msg_service::MessageApi;
use proto::{ConvId, UserId};
use storage::{NotifyBus, Presence, Typing};

use crate::error::Error;
use crate::typing_throttle::TypingThrottle;

/// At most one indicator per user and conversation this often.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);

/// At most this many (user, conversation) pairs are remembered at once:
/// past it, indicators of new pairs are dropped until older ones are
/// forgotten.
const MAX_TYPING_PAIRS: usize = 100_000;

/// Sends typing indicators and drops the extra ones.
pub struct Typist {
    bus: Arc<dyn NotifyBus>,
    presence: Arc<dyn Presence>,
    /// The (user, conversation) pairs that had an indicator go out lately.
    recent: Mutex<TypingThrottle>,
}

impl Typist {
    /// Sends through `bus` to the gateways `presence` names.
    pub fn new(bus: Arc<dyn NotifyBus>, presence: Arc<dyn Presence>) -> Self {
        Typist {
            bus,
            presence,
            recent: Mutex::new(TypingThrottle::new(TYPING_EVERY, MAX_TYPING_PAIRS)),
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
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.admit(user, conv, Instant::now())
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

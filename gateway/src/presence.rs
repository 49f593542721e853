//! Presence (protocol 1.1): who of the users a client asks about is online,
//! as that client may see it. Only users who share a conversation with it
//! are reported as they are; any other id (a stranger, or nobody) comes back
//! offline with no `last_seen`, so presence reveals neither who exists nor
//! who talks to whom.

use std::collections::HashSet;
use std::sync::Arc;

use msg_service::MessageApi;
use proto::{PresenceOf, UserId};
use storage::Presence;

use crate::error::Error;

/// Answers presence requests from the presence store.
pub struct Presences {
    presence: Arc<dyn Presence>,
}

impl Presences {
    /// Reads `presence` (Redis in the distributed mode).
    pub fn new(presence: Arc<dyn Presence>) -> Self {
        Presences { presence }
    }

    /// The presence of each of `users` as `caller` may see it, in order,
    /// each with whether the caller may see it (may watch it).
    pub async fn query(
        &self,
        api: &Arc<dyn MessageApi>,
        caller: &UserId,
        users: &[UserId],
    ) -> Result<Vec<(PresenceOf, bool)>, Error> {
        let known = peers(api, caller).await?;
        let mut answer = Vec::with_capacity(users.len());
        for user in users {
            answer.push(match known.contains(user) {
                true => (self.of(user).await?, true),
                false => (unknown(user), false),
            });
        }
        Ok(answer)
    }

    async fn of(&self, user: &UserId) -> Result<PresenceOf, Error> {
        let online = !self
            .presence
            .gateways(user)
            .await
            .map_err(msg_service::Error::from)?
            .is_empty();
        let last_seen = match online {
            true => None,
            false => self
                .presence
                .last_seen(user)
                .await
                .map_err(msg_service::Error::from)?,
        };
        Ok(PresenceOf {
            user: user.clone(),
            online,
            last_seen,
        })
    }
}

/// What any user the caller may not see looks like.
fn unknown(user: &UserId) -> PresenceOf {
    PresenceOf {
        user: user.clone(),
        online: false,
        last_seen: None,
    }
}

/// The users who share a conversation with `caller`, and the caller.
async fn peers(api: &Arc<dyn MessageApi>, caller: &UserId) -> Result<HashSet<UserId>, Error> {
    let mut peers: HashSet<UserId> = api
        .conversations(caller)
        .await?
        .into_iter()
        .flat_map(|conv| conv.members)
        .collect();
    peers.insert(caller.clone());
    Ok(peers)
}

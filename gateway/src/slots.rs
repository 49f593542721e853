//! Connection slots per user: how many WebSockets (and waiting long polls)
//! one user may hold open on this gateway, so one token cannot pin down an
//! unbounded number of sockets, tasks and buffers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proto::UserId;

/// Counts open connections per user against a fixed cap.
#[derive(Debug)]
pub struct Slots {
    max_per_user: usize,
    /// Open connections of each user that has at least one.
    open: Mutex<HashMap<UserId, usize>>,
}

/// One taken slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    user: UserId,
}

impl Slots {
    /// At most `max_per_user` connections per user.
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(Slots {
            max_per_user,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap per user.
    pub fn max_per_user(&self) -> usize {
        self.max_per_user
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // The map holds plain counters: a panic elsewhere cannot leave it torn.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `user`, or None when all of theirs are in use.
    pub fn try_take(self: &Arc<Self>, user: &UserId) -> Option<Slot> {
        let mut open = self.open();
        let count = open.entry(user.clone()).or_insert(0);
        if *count >= self.max_per_user {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: Arc::clone(self),
            user: user.clone(),
        })
    }

    /// How many connections `user` holds now.
    pub fn in_use(&self, user: &UserId) -> usize {
        self.open().get(user).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Forget idle users, so the map is bounded by open connections.
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("a valid user id")
    }

    #[test]
    fn a_user_gets_at_most_the_cap_and_a_freed_slot_can_be_taken_again() {
        let slots = Slots::new(2);
        let alice = user("alice");
        let first = slots.try_take(&alice).expect("first slot");
        let _second = slots.try_take(&alice).expect("second slot");
        assert!(slots.try_take(&alice).is_none(), "a third is refused");
        assert!(
            slots.try_take(&user("bob")).is_some(),
            "other users are not affected"
        );
        drop(first);
        assert!(slots.try_take(&alice).is_some(), "a freed slot is reusable");
    }

    #[test]
    fn a_user_whose_last_slot_is_freed_is_forgotten() {
        let slots = Slots::new(1);
        let alice = user("alice");
        drop(slots.try_take(&alice));
        assert_eq!(slots.in_use(&alice), 0);
        assert!(slots.open().is_empty(), "no entry is kept for alice");
    }
}

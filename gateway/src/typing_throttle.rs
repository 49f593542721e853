//! Which typing indicators go out: at most one per user and conversation
//! every period. The pairs it remembers are forgotten in the order they were
//! noted, so an indicator costs the same however many are remembered (a
//! sweep of them all, once past a size, let a client that typed into many
//! conversations make every indicator on the gateway cost that many steps);
//! past a cap of pairs remembered at once, a new pair is dropped:
//! indicators are best effort.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proto::{ConvId, UserId};

type Pair = (UserId, ConvId);

/// The (user, conversation) pairs that had an indicator go out within the
/// period, oldest first.
#[derive(Debug)]
pub struct TypingThrottle {
    every: Duration,
    max_pairs: usize,
    last: HashMap<Pair, Instant>,
    noted: VecDeque<(Instant, Pair)>,
}

impl TypingThrottle {
    /// One indicator per pair every `every`; at most `max_pairs` remembered.
    pub fn new(every: Duration, max_pairs: usize) -> Self {
        TypingThrottle {
            every,
            max_pairs,
            last: HashMap::new(),
            noted: VecDeque::new(),
        }
    }

    /// Whether an indicator of `user` in `conv` may go out at `now` (and
    /// notes that one does).
    pub fn admit(&mut self, user: &UserId, conv: &ConvId, now: Instant) -> bool {
        self.forget_before(now);
        let pair = (user.clone(), conv.clone());
        // What is still remembered went out less than a period ago.
        if self.last.contains_key(&pair) || self.last.len() >= self.max_pairs {
            return false;
        }
        self.last.insert(pair.clone(), now);
        self.noted.push_back((now, pair));
        true
    }

    /// How many pairs it remembers.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last.len()
    }

    /// Forgets the pairs noted a period or more before `now`.
    fn forget_before(&mut self, now: Instant) {
        while self
            .noted
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.every)
        {
            if let Some((_, pair)) = self.noted.pop_front() {
                self.last.remove(&pair);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(3);

    fn pair(user: &str, conv: &str) -> (UserId, ConvId) {
        (
            UserId::parse(user).expect("a user id"),
            ConvId::parse(conv).expect("a conversation id"),
        )
    }

    #[test]
    fn one_indicator_per_user_and_conversation_every_period() {
        let mut throttle = TypingThrottle::new(EVERY, 100);
        let (alice, group) = pair("alice", "g:one");
        let start = Instant::now();
        assert!(throttle.admit(&alice, &group, start));
        assert!(!throttle.admit(&alice, &group, start + Duration::from_secs(1)));
        let (_, other) = pair("alice", "g:two");
        assert!(throttle.admit(&alice, &other, start + Duration::from_secs(1)));
        assert!(throttle.admit(&alice, &group, start + EVERY));
    }

    #[test]
    fn pairs_are_forgotten_a_period_after_they_were_noted_oldest_first() {
        let mut throttle = TypingThrottle::new(EVERY, 100);
        let start = Instant::now();
        for (i, conv) in ["g:a", "g:b", "g:c"].into_iter().enumerate() {
            let (user, conv) = pair("alice", conv);
            let at = start + Duration::from_secs(u64::try_from(i).expect("small"));
            assert!(throttle.admit(&user, &conv, at));
        }
        let (bob, group) = pair("bob", "g:a");
        assert!(throttle.admit(&bob, &group, start + EVERY));
        assert_eq!(throttle.remembered(), 3, "g:a of alice went, bob's came");
    }

    #[test]
    fn past_the_cap_a_new_pair_is_dropped_until_one_is_forgotten() {
        let mut throttle = TypingThrottle::new(EVERY, 2);
        let start = Instant::now();
        let pairs = [pair("a", "g:x"), pair("b", "g:x"), pair("c", "g:x")];
        assert!(throttle.admit(&pairs[0].0, &pairs[0].1, start));
        assert!(throttle.admit(&pairs[1].0, &pairs[1].1, start));
        assert!(
            !throttle.admit(&pairs[2].0, &pairs[2].1, start),
            "over the cap"
        );
        assert!(throttle.admit(&pairs[2].0, &pairs[2].1, start + EVERY));
    }
}

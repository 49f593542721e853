//! The exactly-once checker: every message acked to its sender must reach
//! each of its recipients exactly once, and each inbox must arrive in
//! strictly increasing seq order. Each client keeps a [`Receipts`] of what it
//! received and an [`Acks`] of what it sent; [`Verdict::of`] joins them.

use std::collections::HashMap;

use serde::Serialize;

/// A message, by sender and `client_msg_id` (unique per sender).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgKey {
    /// The sender's user id.
    pub from: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
}

impl MsgKey {
    /// The key of a message from `from` with `client_msg_id`.
    pub fn new(from: &str, client_msg_id: &str) -> Self {
        MsgKey {
            from: from.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
        }
    }
}

/// What one receiver got, in the order it got it.
#[derive(Debug, Default)]
pub struct Receipts {
    last_seq: u64,
    counts: HashMap<MsgKey, u32>,
    out_of_order: u64,
    /// The first extra copies received, with their seqs (to look them up).
    extra_copies: Vec<(MsgKey, u64)>,
}

/// Lost or duplicated messages named in a verdict, at most.
const EXAMPLES: usize = 5;

impl Receipts {
    /// Records an inbox entry; returns whether it was new (not a duplicate).
    pub fn record(&mut self, seq: u64, key: MsgKey) -> bool {
        if seq <= self.last_seq {
            self.out_of_order += 1;
        } else {
            self.last_seq = seq;
        }
        let count = self.counts.entry(key.clone()).or_default();
        *count += 1;
        if *count > 1 && self.extra_copies.len() < EXAMPLES {
            self.extra_copies.push((key, seq));
        }
        *count == 1
    }

    /// The highest seq received so far (the client's sync key).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many distinct messages were received.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

/// Messages one sender got acks for, with the users each must reach.
#[derive(Debug, Default)]
pub struct Acks {
    acked: Vec<(MsgKey, Vec<String>)>,
}

impl Acks {
    /// Records an ack for `key`, which must reach `recipients`.
    pub fn record(&mut self, key: MsgKey, recipients: Vec<String>) {
        self.acked.push((key, recipients));
    }

    /// How many messages were acked.
    pub fn len(&self) -> usize {
        self.acked.len()
    }

    /// Whether nothing was acked.
    pub fn is_empty(&self) -> bool {
        self.acked.is_empty()
    }
}

/// The correctness result of a run; every count must be zero.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Messages acked to their sender that a recipient never received.
    pub lost: u64,
    /// Extra copies of a message in one inbox.
    pub duplicated: u64,
    /// Entries that arrived with a seq not above the one before.
    pub out_of_order: u64,
    /// Deliveries expected (acked messages times their recipients).
    pub expected: u64,
    /// Distinct expected deliveries that arrived.
    pub delivered: u64,
    /// The first lost and duplicated messages, named, with their seqs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl Verdict {
    /// Joins every client's receipts (by user) with every sender's acks.
    pub fn of<'a>(
        receipts: impl IntoIterator<Item = (&'a str, &'a Receipts)>,
        acks: impl IntoIterator<Item = &'a Acks>,
    ) -> Verdict {
        let receipts: HashMap<&str, &Receipts> = receipts.into_iter().collect();
        let mut verdict = Verdict::default();
        for (user, r) in &receipts {
            verdict.out_of_order += r.out_of_order;
            verdict.duplicated += r.counts.values().map(|&n| u64::from(n - 1)).sum::<u64>();
            for (key, seq) in &r.extra_copies {
                verdict.examples.push(format!(
                    "{}/{} again in {user}'s inbox, at seq {seq}",
                    key.from, key.client_msg_id
                ));
            }
        }
        for (key, recipients) in acks.into_iter().flat_map(|a| a.acked.iter()) {
            for recipient in recipients {
                verdict.expected += 1;
                let got = receipts
                    .get(recipient.as_str())
                    .is_some_and(|r| r.counts.contains_key(key));
                if got {
                    verdict.delivered += 1;
                } else {
                    verdict.lost += 1;
                    if verdict.lost <= EXAMPLES as u64 {
                        verdict.examples.push(format!(
                            "{}/{} never reached {recipient}",
                            key.from, key.client_msg_id
                        ));
                    }
                }
            }
        }
        verdict
    }

    /// Whether every acked message arrived exactly once, in order.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(from: &str, n: u32) -> MsgKey {
        MsgKey::new(from, &format!("{from}-{n}"))
    }

    /// Bob receives `stream` (seq, message number from alice); alice got
    /// acks for messages 1..=acked, each addressed to bob.
    fn verdict(stream: &[(u64, u32)], acked: u32) -> Verdict {
        let mut bob = Receipts::default();
        for &(seq, n) in stream {
            bob.record(seq, key("alice", n));
        }
        let mut alice = Acks::default();
        for n in 1..=acked {
            alice.record(key("alice", n), vec!["bob".into()]);
        }
        Verdict::of([("bob", &bob)], [&alice])
    }

    #[test]
    fn a_complete_ordered_stream_is_clean() {
        let v = verdict(&[(1, 1), (2, 2), (5, 3)], 3);
        assert!(v.is_clean(), "{v:?}");
        assert!(v.examples.is_empty());
        assert_eq!((v.expected, v.delivered), (3, 3));
    }

    #[test]
    fn a_missing_acked_message_is_counted_lost() {
        let v = verdict(&[(1, 1), (3, 3)], 3);
        assert_eq!(v.lost, 1);
        assert!(!v.is_clean());
        assert_eq!(v.examples, ["alice/alice-2 never reached bob"]);
    }

    #[test]
    fn a_message_received_twice_is_counted_duplicated() {
        let v = verdict(&[(1, 1), (2, 2), (3, 2)], 2);
        assert_eq!((v.duplicated, v.lost, v.out_of_order), (1, 0, 0));
        assert!(!v.is_clean());
        assert_eq!(v.examples, ["alice/alice-2 again in bob's inbox, at seq 3"]);
    }

    #[test]
    fn a_seq_that_goes_backwards_or_repeats_is_counted_out_of_order() {
        let v = verdict(&[(2, 1), (1, 2), (3, 3), (3, 4)], 4);
        assert_eq!((v.out_of_order, v.lost, v.duplicated), (2, 0, 0));
        assert!(!v.is_clean());
    }

    #[test]
    fn a_message_for_a_user_without_receipts_is_lost() {
        let mut alice = Acks::default();
        alice.record(key("alice", 1), vec!["carol".into()]);
        let v = Verdict::of(std::iter::empty(), [&alice]);
        assert_eq!((v.lost, v.expected), (1, 1));
    }

    #[test]
    fn a_message_not_acked_may_arrive_without_being_a_fault() {
        // A send whose ack was lost (the connection dropped) may be stored:
        // receiving it is fine as long as it arrives once.
        let v = verdict(&[(1, 1), (2, 2)], 1);
        assert!(v.is_clean(), "{v:?}");
    }

    #[test]
    fn every_recipient_of_a_group_message_is_checked() {
        let mut alice = Acks::default();
        alice.record(key("alice", 1), vec!["bob".into(), "carol".into()]);
        let mut bob = Receipts::default();
        bob.record(1, key("alice", 1));
        let carol = Receipts::default();
        let v = Verdict::of([("bob", &bob), ("carol", &carol)], [&alice]);
        assert_eq!((v.expected, v.delivered, v.lost), (2, 1, 1));
    }
}

//! How far each member's unread count in a conversation was taken, so that
//! the next view counts only the messages after it. A conversation's log up
//! to its settled head never changes in what the count reads (a message's
//! kind and sender; a recall changes only its body), so what was counted
//! stays counted until the member's marker moves. Without it, every view (a
//! conversation list, and the membership checks of presence and group
//! typing) paged again through every message after the marker that does not
//! count (the member's own, edits) until it had counted 100.

use proto::{ConvId, Seq, UserId};

use crate::bounded_map::BoundedMap;

/// A count of unread messages as far as it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The marker it counts after.
    pub(crate) marker: Seq,
    /// The last conv_seq it has looked at.
    pub(crate) through: Seq,
    /// The unread messages in (`marker`, `through`].
    pub(crate) unread: u32,
}

impl Counted {
    /// Nothing counted yet after `marker`.
    pub(crate) fn from(marker: Seq) -> Self {
        Counted {
            marker,
            through: marker,
            unread: 0,
        }
    }
}

/// The counts, bounded: when full it starts over (the next view of each
/// counts from its marker again).
pub(crate) struct UnreadCounts {
    counted: BoundedMap<(UserId, ConvId), Counted>,
}

impl UnreadCounts {
    pub(crate) fn new(cap: usize) -> Self {
        UnreadCounts {
            counted: BoundedMap::new(cap),
        }
    }

    /// Where the count of `member` in `conv` after `marker` stands, for a
    /// log settled up to `head`: from the marker when none was taken, when
    /// the marker moved, or when the count went past `head` (a view of a
    /// head that lags).
    pub(crate) fn resume(&self, member: &UserId, conv: &ConvId, marker: Seq, head: Seq) -> Counted {
        self.counted
            .get(&(member.clone(), conv.clone()))
            .filter(|counted| counted.marker == marker && counted.through <= head)
            .unwrap_or_else(|| Counted::from(marker))
    }

    /// Keeps `counted` as the count of `member` in `conv`.
    pub(crate) fn record(&self, member: &UserId, conv: &ConvId, counted: Counted) {
        self.counted.insert((member.clone(), conv.clone()), counted);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ids() -> (UserId, ConvId) {
        (
            UserId::parse("alice").unwrap(),
            ConvId::parse("g:x").unwrap(),
        )
    }

    #[test]
    fn a_count_resumes_while_the_marker_stays_and_the_head_is_past_it() {
        let counts = UnreadCounts::new(10);
        let (alice, conv) = ids();
        let counted = Counted {
            marker: 5,
            through: 90,
            unread: 7,
        };
        counts.record(&alice, &conv, counted);
        assert_eq!(counts.resume(&alice, &conv, 5, 100), counted);
        assert_eq!(
            counts.resume(&alice, &conv, 6, 100),
            Counted::from(6),
            "the marker moved"
        );
        assert_eq!(
            counts.resume(&alice, &conv, 5, 80),
            Counted::from(5),
            "a head that lags"
        );
    }

    #[test]
    fn a_full_map_starts_over() {
        let counts = UnreadCounts::new(1);
        let (alice, conv) = ids();
        let other = ConvId::parse("g:y").unwrap();
        counts.record(
            &alice,
            &conv,
            Counted {
                marker: 0,
                through: 9,
                unread: 1,
            },
        );
        counts.record(
            &alice,
            &other,
            Counted {
                marker: 0,
                through: 9,
                unread: 1,
            },
        );
        assert_eq!(counts.resume(&alice, &conv, 0, 9), Counted::from(0));
    }
}

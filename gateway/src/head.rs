//! A user's inbox head as this gateway last heard it, with the newest
//! entries when notifies carried them (protocol 1.1), each encoded to JSON
//! once and shared by all of the user's sockets; and the `notify` frame a
//! socket sends from it.

use std::sync::Arc;

use proto::{Entry, MessageKind, Seq};
use storage::Inline;

/// The entries a notify carries, in all, at most (protocol 1.1: "small").
pub const INLINE_MAX_BYTES: usize = 4 * 1024;

/// A user's inbox head and, when known, the entries just below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The head.
    pub seq: Seq,
    /// Every entry with `recent.prev < seq <= self.seq`, when known.
    pub recent: Option<Arc<Recent>>,
}

/// Every entry of an inbox above `prev`, ascending, as JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct Recent {
    /// The seq they follow.
    pub prev: Seq,
    /// Each entry's seq and JSON.
    pub entries: Vec<(Seq, Arc<str>)>,
}

impl Recent {
    fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, json)| json.len() + 1).sum()
    }
}

impl Head {
    /// Moves the head up to `head` (a lower or equal one changes nothing;
    /// whether it moved). Entries that carry on from the ones kept are
    /// added to them, the oldest dropped past [`INLINE_MAX_BYTES`]; any
    /// other notify replaces them, and one without entries (or with entries
    /// that are not exactly those above its `prev`) forgets them.
    pub fn advance(&mut self, head: Seq, inline: Option<&Inline>) -> bool {
        if head <= self.seq {
            return false;
        }
        let kept = self.recent.take();
        self.recent = inline
            .and_then(|inline| self.joined(kept, head, inline))
            .map(Arc::new);
        self.seq = head;
        true
    }

    fn joined(&self, kept: Option<Arc<Recent>>, head: Seq, inline: &Inline) -> Option<Recent> {
        if !covers(inline, head) {
            return None;
        }
        // A recall blanks a message that a kept entry may still carry: the
        // kept ones are forgotten, and a socket behind them syncs instead.
        let recalls = inline
            .entries
            .iter()
            .any(|entry| entry.message.kind == MessageKind::Recall);
        let mut recent = match kept {
            // Taken over, not copied, when no socket is reading it now.
            Some(kept) if inline.prev == self.seq && !recalls => Arc::try_unwrap(kept)
                .unwrap_or_else(|shared| Recent {
                    prev: shared.prev,
                    entries: shared.entries.clone(),
                }),
            _ => Recent {
                prev: inline.prev,
                entries: Vec::new(),
            },
        };
        for entry in &inline.entries {
            recent.entries.push((entry.seq, encode(entry)?));
        }
        while recent.bytes() > INLINE_MAX_BYTES && !recent.entries.is_empty() {
            let (dropped, _) = recent.entries.remove(0);
            recent.prev = dropped;
        }
        (!recent.entries.is_empty()).then_some(recent)
    }

    /// The `notify` frame for a socket whose last notify said `sent`: with
    /// the entries above `sent` (or above the oldest kept) when they are
    /// known, else the head alone.
    pub fn notify_frame(&self, sent: Seq) -> String {
        let Some(recent) = &self.recent else {
            return format!(r#"{{"type":"notify","head":{}}}"#, self.seq);
        };
        let prev = sent.clamp(recent.prev, self.seq);
        let mut entries = recent.entries.iter().filter(|(seq, _)| *seq > prev);
        let Some((_, first)) = entries.next() else {
            return format!(r#"{{"type":"notify","head":{}}}"#, self.seq);
        };
        let mut frame = String::with_capacity(64 + recent.bytes());
        frame.push_str(r#"{"type":"notify","head":"#);
        frame.push_str(&self.seq.to_string());
        frame.push_str(r#","prev":"#);
        frame.push_str(&prev.to_string());
        frame.push_str(r#","entries":["#);
        frame.push_str(first);
        for (_, json) in entries {
            frame.push(',');
            frame.push_str(json);
        }
        frame.push_str("]}");
        frame
    }
}

/// Whether `inline` holds entries ascending within `(prev, head]`, the last
/// at `head`: only then are they every entry above `prev`.
fn covers(inline: &Inline, head: Seq) -> bool {
    let seqs: Vec<Seq> = inline.entries.iter().map(|entry| entry.seq).collect();
    let ascending = seqs.windows(2).all(|pair| pair[0] < pair[1]);
    ascending
        && seqs.first().is_some_and(|&first| first > inline.prev)
        && seqs.last() == Some(&head)
}

fn encode(entry: &Entry) -> Option<Arc<str>> {
    match serde_json::to_string(entry) {
        Ok(json) => Some(json.into()),
        Err(err) => {
            tracing::error!(error = %err, seq = entry.seq, "an entry could not be encoded; notify without it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proto::{ClientMsgId, ConvId, HistoryMessage, MessageKind, ServerFrame, UserId};

    use super::*;

    fn entry(seq: Seq, body: &str) -> Entry {
        Entry {
            seq,
            message: HistoryMessage {
                conv_id: ConvId::parse("dm:alice:bob").unwrap(),
                conv_seq: seq,
                from: UserId::parse("alice").unwrap(),
                client_msg_id: ClientMsgId::parse(&format!("c-{seq}")).unwrap(),
                kind: MessageKind::Text,
                body: body.into(),
                ts: 1_700_000_000_000,
                refers_to: None,
                recalled: false,
            },
        }
    }

    fn inline(prev: Seq, seqs: &[Seq]) -> Inline {
        Inline {
            prev,
            entries: seqs.iter().map(|&seq| entry(seq, "hi \"there\"")).collect(),
        }
    }

    /// The frame as a client parses it: head, prev and the entries' seqs.
    fn parsed(frame: &str) -> (Seq, Option<Seq>, Vec<Seq>) {
        match serde_json::from_str::<ServerFrame>(frame).unwrap() {
            ServerFrame::Notify {
                head,
                prev,
                entries,
            } => (
                head,
                prev,
                entries.unwrap_or_default().iter().map(|e| e.seq).collect(),
            ),
            other => panic!("not a notify: {other:?}"),
        }
    }

    #[test]
    fn a_notify_with_entries_carries_them_as_the_entries_a_sync_answers() {
        let mut head = Head::default();
        assert!(head.advance(5, Some(&inline(4, &[5]))));
        let frame = head.notify_frame(0);
        let ServerFrame::Notify { entries, .. } = serde_json::from_str(&frame).unwrap() else {
            panic!("not a notify");
        };
        assert_eq!(entries.unwrap(), vec![entry(5, "hi \"there\"")]);
        assert_eq!(parsed(&frame), (5, Some(4), vec![5]));
    }

    #[test]
    fn notifies_that_carry_on_are_joined_and_a_socket_gets_what_it_has_not_had() {
        let mut head = Head::default();
        head.advance(5, Some(&inline(4, &[5])));
        head.advance(7, Some(&inline(5, &[6, 7])));
        assert_eq!(parsed(&head.notify_frame(0)), (7, Some(4), vec![5, 6, 7]));
        assert_eq!(parsed(&head.notify_frame(5)), (7, Some(5), vec![6, 7]));
        assert_eq!(parsed(&head.notify_frame(6)), (7, Some(6), vec![7]));
    }

    #[test]
    fn a_notify_that_does_not_carry_on_replaces_the_entries_kept() {
        let mut head = Head::default();
        head.advance(5, Some(&inline(4, &[5])));
        // Entry 6's notify was lost: the next one follows 6, not 5.
        head.advance(7, Some(&inline(6, &[7])));
        assert_eq!(parsed(&head.notify_frame(5)), (7, Some(6), vec![7]));
    }

    #[test]
    fn a_head_alone_forgets_the_entries() {
        let mut head = Head::default();
        head.advance(5, Some(&inline(4, &[5])));
        head.advance(6, None);
        assert_eq!(parsed(&head.notify_frame(5)), (6, None, vec![]));
    }

    #[test]
    fn a_head_that_does_not_move_up_changes_nothing() {
        let mut head = Head::default();
        head.advance(5, Some(&inline(4, &[5])));
        let before = head.clone();
        assert!(!head.advance(5, None));
        assert!(!head.advance(3, Some(&inline(2, &[3]))));
        assert_eq!(head, before);
    }

    #[test]
    fn entries_that_are_not_exactly_those_above_prev_are_not_sent() {
        for bad in [
            inline(4, &[6, 5]),
            inline(4, &[5]),
            inline(6, &[6]),
            inline(4, &[]),
        ] {
            let mut head = Head::default();
            head.advance(6, Some(&bad));
            assert_eq!(parsed(&head.notify_frame(0)), (6, None, vec![]), "{bad:?}");
        }
    }

    #[test]
    fn the_oldest_entries_kept_are_dropped_past_the_size_cap() {
        let big = "x".repeat(1500);
        let mut head = Head::default();
        for seq in 1..=4 {
            let note = Inline {
                prev: seq - 1,
                entries: vec![entry(seq, &big)],
            };
            head.advance(seq, Some(&note));
        }
        let (_, prev, seqs) = parsed(&head.notify_frame(0));
        assert_eq!((prev, seqs), (Some(2), vec![3, 4]));
        assert!(head.notify_frame(0).len() < INLINE_MAX_BYTES + 100);

        let mut huge = Head::default();
        let note = Inline {
            prev: 0,
            entries: vec![entry(1, &"y".repeat(INLINE_MAX_BYTES))],
        };
        huge.advance(1, Some(&note));
        assert_eq!(parsed(&huge.notify_frame(0)), (1, None, vec![]));
    }

    #[test]
    fn a_socket_that_had_the_head_already_gets_the_head_alone() {
        let mut head = Head::default();
        head.advance(5, Some(&inline(4, &[5])));
        assert_eq!(parsed(&head.notify_frame(5)), (5, None, vec![]));
    }
}

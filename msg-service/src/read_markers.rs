//! Read markers (protocol 1.1): each member's marker in a conversation,
//! only ever moved up, announced by a `read` entry in the reader's own
//! inbox and, in a direct conversation, the peer's; and what a
//! conversation's view shows of them (the caller's marker, the unread
//! count, a group's markers).

use std::collections::BTreeMap;

use proto::{ClientMsgId, ConvId, HistoryMessage, MessageKind, Seq, UserId};
use storage::Page;

use crate::Result;
use crate::api::UNREAD_COUNTED;
use crate::clock::now_ms;
use crate::deliveries::Pass;
use crate::service::Core;
use crate::unread_counts::Counted;

/// Messages read per page while counting unread ones.
const UNREAD_PAGE: usize = 200;

/// The read state of a conversation as one member sees it.
pub(crate) struct Reads {
    /// The member's marker.
    pub(crate) read_up_to: Seq,
    /// Text messages of others after it, up to [`UNREAD_COUNTED`].
    pub(crate) unread: u32,
    /// Every member's marker.
    pub(crate) everyone: BTreeMap<UserId, Seq>,
}

impl Core {
    /// Moves `user`'s marker in `conv` up to `conv_seq`, capped at the
    /// conversation's last message; answers the marker as it stands. The
    /// `read` entries go out before the marker moves: a failure is answered
    /// and the client's retry sends them again, instead of a moved marker
    /// with no entry. One user's marks go one at a time.
    pub(crate) async fn mark_read(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Seq> {
        self.check_member(user, conv).await?;
        let _reader = self.readers.lock(user).await;
        let wanted = conv_seq.min(self.listed_conv_head(conv).await?);
        let current = self.backends.store.read_marker(conv, user).await?;
        if wanted <= current {
            return Ok(current);
        }
        let entry = read_entry(user, conv, wanted)?;
        let to = match conv.dm_members() {
            Some((a, b)) => vec![a, b],
            None => vec![user.clone()],
        };
        for outcome in self.fan_out(&to, &entry, Pass::Always).await {
            outcome?;
        }
        let store = &self.backends.store;
        store.raise_read_marker(conv, user, wanted).await?;
        Ok(wanted)
    }

    /// `caller`'s read state of `conv`, whose log ends at `last` (and is
    /// `settled` up to it: then the count is kept for the next view).
    pub(crate) async fn reads(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: &[UserId],
        last: Seq,
        settled: bool,
    ) -> Result<Reads> {
        let mut everyone: BTreeMap<UserId, Seq> =
            members.iter().map(|member| (member.clone(), 0)).collect();
        for (user, up_to) in self.backends.store.read_markers(conv).await? {
            if let Some(marker) = everyone.get_mut(&user) {
                *marker = up_to;
            }
        }
        let read_up_to = everyone.get(caller).copied().unwrap_or(0);
        let unread = self.unread(caller, conv, read_up_to, last, settled).await?;
        Ok(Reads {
            read_up_to,
            unread,
            everyone,
        })
    }

    /// Text messages of others after `marker`, counted up to
    /// [`UNREAD_COUNTED`]: from where the last view's count stopped, when
    /// the log is `settled` up to `last` (else from the marker, and not
    /// kept: a message below `last` may not be written yet).
    async fn unread(
        &self,
        caller: &UserId,
        conv: &ConvId,
        marker: Seq,
        last: Seq,
        settled: bool,
    ) -> Result<u32> {
        let mut count = match settled {
            true => self.unread_counts.resume(caller, conv, marker, last),
            false => Counted::from(marker),
        };
        while count.through < last && count.unread < UNREAD_COUNTED {
            let page = self
                .backends
                .store
                .messages(conv, Page::After(count.through), UNREAD_PAGE)
                .await?;
            let Some(newest) = page.last().map(|m| m.conv_seq) else {
                break;
            };
            let counted = page
                .iter()
                .filter(|m| m.conv_seq <= last && m.kind == MessageKind::Text && &m.from != caller);
            count.unread = count
                .unread
                .saturating_add(u32::try_from(counted.count()).unwrap_or(u32::MAX));
            // Not past `last`: what lies above it is counted by a later view.
            count.through = newest.min(last);
        }
        if settled {
            self.unread_counts.record(caller, conv, count);
        }
        Ok(count.unread.min(UNREAD_COUNTED))
    }
}

/// The `read` entry of `user` having read `conv` up to `up_to`: in inboxes
/// only, so with no conv_seq of its own.
fn read_entry(user: &UserId, conv: &ConvId, up_to: Seq) -> Result<HistoryMessage> {
    Ok(HistoryMessage {
        conv_id: conv.clone(),
        conv_seq: 0,
        from: user.clone(),
        client_msg_id: ClientMsgId::parse(&format!("read-{up_to}"))?,
        kind: MessageKind::Read,
        body: String::new(),
        ts: now_ms(),
        refers_to: Some(up_to),
        recalled: false,
    })
}

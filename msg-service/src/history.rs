//! History: pages of a conversation's log for its members.

use proto::{ConvId, UserId};
use storage::Page;

use crate::api::HistoryPage;
use crate::service::Core;
use crate::{Error, Result};

impl Core {
    #[tracing::instrument(skip_all, fields(user = %user, conv = %conv), err)]
    pub(crate) async fn read_history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.check_member(user, conv).await?;
        if limit == 0 {
            return Err(Error::invalid("limit", "must be a positive integer"));
        }
        let head = self.visible_conv_head(conv).await?;
        // Never past the visible head: a message above it may not be durable yet.
        let page = match page {
            Page::Before(before) => Page::Before(before.min(head.saturating_add(1))),
            after @ Page::After(_) => after,
        };
        // One more than asked tells whether a further page exists.
        let mut messages = self.backends.store.messages(conv, page, limit + 1).await?;
        messages.retain(|m| m.conv_seq <= head);
        let further = messages.len() > limit;
        messages.truncate(limit);
        let next = further
            .then(|| messages.last().map(|m| m.conv_seq))
            .flatten();
        Ok(HistoryPage { messages, next })
    }

    /// Members only; anyone else gets `Forbidden`, whether or not it exists.
    pub(crate) async fn check_member(&self, user: &UserId, conv: &ConvId) -> Result<()> {
        let is_member = match conv.dm_members() {
            Some((a, b)) => user == &a || user == &b,
            None => self.backends.store.members(conv).await?.contains(user),
        };
        if is_member {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

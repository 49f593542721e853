//! History: pages of a conversation's log for its members; while the store
//! is unavailable, a degraded page from the reader's own cached inbox.

use proto::{ConvId, HistoryMessage, UserId};
use storage::Page;

use crate::api::HistoryPage;
use crate::service::Core;
use crate::{Error, Result};

impl Core {
    #[tracing::instrument(skip_all, fields(user = %user, conv = %conv), err(level = "debug", Debug))]
    pub(crate) async fn read_history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        if limit == 0 {
            return Err(Error::invalid("limit", "must be a positive integer"));
        }
        match self.history_from_store(user, conv, page, limit).await {
            Err(err @ Error::Unavailable { .. }) => {
                match self.history_from_cache(user, conv, page, limit).await {
                    Some(page) => Ok(page),
                    None => Err(err),
                }
            }
            other => other,
        }
    }

    async fn history_from_store(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.check_member(user, conv).await?;
        let head = self.visible_conv_head(conv).await?;
        // Never past the visible head: a message above it may not be durable yet.
        let page = match page {
            Page::Before(before) => Page::Before(before.min(head.saturating_add(1))),
            after @ Page::After(_) => after,
        };
        // One more than asked tells whether a further page exists.
        let mut messages = self.backends.store.messages(conv, page, limit + 1).await?;
        messages.retain(|m| m.conv_seq <= head);
        Ok(page_of(messages, limit, false))
    }

    /// The conversation's messages found in the reader's own cached inbox
    /// (so no membership check is needed: they were delivered to this
    /// reader), under its visible head. `None` when the cache holds none or
    /// the head is unknown: the caller answers `unavailable` then.
    async fn history_from_cache(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Option<HistoryPage> {
        let head = self.visible_inbox_head(user).await.ok()?;
        let cached = match self.backends.cache.newest(user, head, usize::MAX).await {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, %user, "inbox cache unreadable too; no degraded history");
                return None;
            }
        };
        let mut messages: Vec<HistoryMessage> = cached
            .into_iter()
            .map(|e| e.message)
            .filter(|m| &m.conv_id == conv)
            .filter(|m| match page {
                Page::Before(before) => m.conv_seq < before,
                Page::After(after) => m.conv_seq > after,
            })
            .collect();
        if messages.is_empty() {
            return None;
        }
        // Newest first from the cache; `after` pages go oldest first.
        if let Page::After(_) = page {
            messages.reverse();
        }
        Some(page_of(messages, limit, true))
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

/// The first `limit` of `messages` (in page order) as a page whose `next`
/// is set when more than `limit` were found.
fn page_of(mut messages: Vec<HistoryMessage>, limit: usize, degraded: bool) -> HistoryPage {
    let further = messages.len() > limit;
    messages.truncate(limit);
    let next = further
        .then(|| messages.last().map(|m| m.conv_seq))
        .flatten();
    HistoryPage {
        messages,
        next,
        degraded,
    }
}

//! Sync: the entries of an inbox after a seq, from the cache when it covers
//! the range, else from the store, never past the visible head.

use proto::{Seq, SyncResult, UserId};

use crate::Result;
use crate::service::Core;

impl Core {
    #[tracing::instrument(skip_all, fields(user = %user, since), err(level = "debug", Debug))]
    pub(crate) async fn sync_inbox(
        &self,
        user: &UserId,
        since: Seq,
        limit: usize,
    ) -> Result<SyncResult> {
        let head = self.visible_inbox_head(user).await?;
        if since >= head || limit == 0 {
            return Ok(SyncResult {
                entries: Vec::new(),
                head,
                more: since < head,
            });
        }
        let cached = self.backends.cache.read(user, since, head, limit).await;
        let mut entries = match cached {
            Ok(Some(entries)) => entries,
            Ok(None) => self.backends.store.read_inbox(user, since, limit).await?,
            Err(err) => {
                tracing::warn!(error = %err, %user, "inbox cache read failed; reading the store");
                self.backends.store.read_inbox(user, since, limit).await?
            }
        };
        // Entries above the head may be written but not yet durable.
        entries.retain(|e| e.seq <= head);
        let more = entries.last().is_some_and(|last| last.seq < head);
        Ok(SyncResult {
            entries,
            head,
            more,
        })
    }
}

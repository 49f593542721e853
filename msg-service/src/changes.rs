//! Recall and edit (protocol 1.1): who may change which message, and where
//! a recall blanks the message it names (the conversation's log before the
//! fan-out, each inbox's copy before the recall's entry reaches it).

use proto::{HistoryMessage, MessageKind, Seq, UserId};

use crate::clock::now_ms;
use crate::service::Core;
use crate::{Error, Result};

impl Core {
    /// Whether `sender` may make `change` (a recall or an edit) of its
    /// message, checked as the conversation's writer, so in order with the
    /// sends and other changes: only the sender of a text message that is
    /// not recalled, within the window of the change's kind. For a recall,
    /// the users the message went to (its dedup record's list): one removed
    /// from the group since still has a copy to blank.
    pub(crate) async fn check_change(
        &self,
        sender: &UserId,
        change: &HistoryMessage,
    ) -> Result<Vec<UserId>> {
        let window = match change.kind {
            MessageKind::Text | MessageKind::Read => return Ok(Vec::new()),
            MessageKind::Recall => self.config.recall_window,
            MessageKind::Edit => self.config.edit_window,
        };
        let refers_to = change
            .refers_to
            .ok_or_else(|| Error::invalid("ref", "a recall or an edit names its message"))?;
        let target = self
            .backends
            .store
            .message(&change.conv_id, refers_to)
            .await?
            .ok_or(Error::NotAllowed("no such message in this conversation"))?;
        if target.kind != MessageKind::Text {
            return Err(Error::NotAllowed("only a text message can be changed"));
        }
        if &target.from != sender {
            return Err(Error::NotAllowed("only its sender can change a message"));
        }
        if target.recalled {
            return Err(Error::NotAllowed("the message was recalled"));
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if now_ms().saturating_sub(target.ts) > window_ms {
            return Err(Error::NotAllowed("too late to change this message"));
        }
        if change.kind != MessageKind::Recall {
            return Ok(Vec::new());
        }
        let store = &self.backends.store;
        let sent = store.dedup_get(sender, &target.client_msg_id).await?;
        Ok(sent.map(|sent| sent.members).unwrap_or_default())
    }

    /// Before a recall is fanned out (first, resumed or retried): the
    /// message it names is blanked in the conversation's log. Idempotent.
    pub(crate) async fn recall_in_log(&self, message: &HistoryMessage) -> Result<()> {
        let Some(refers_to) = recalled_by(message) else {
            return Ok(());
        };
        // The message's own fan-out may still run (another device of its
        // sender saw it before the rest of the members had it), with its
        // body in memory: it ends first, and any later one reads the log.
        let _its_turn = self.fanout_turns.take(&message.conv_id, refers_to).await;
        let store = &self.backends.store;
        Ok(store.recall_message(&message.conv_id, refers_to).await?)
    }

    /// Before a recall's entry is appended to `user`'s inbox (at the
    /// inbox's owner): that inbox's copy of the message is blanked, and the
    /// inbox's cache, which may hold the copy, dropped.
    pub(crate) async fn recall_in_inbox(
        &self,
        user: &UserId,
        message: &HistoryMessage,
    ) -> Result<()> {
        let Some(refers_to) = recalled_by(message) else {
            return Ok(());
        };
        let store = &self.backends.store;
        let Some(seq) = store
            .inbox_seq_of(user, &message.conv_id, refers_to)
            .await?
        else {
            // Not there (yet): a later delivery copies the blanked log.
            return Ok(());
        };
        store.recall_entry(user, seq).await?;
        Ok(self.backends.cache.invalidate(user).await?)
    }
}

/// The conv_seq a recall names; none for any other kind.
fn recalled_by(message: &HistoryMessage) -> Option<Seq> {
    (message.kind == MessageKind::Recall)
        .then_some(message.refers_to)
        .flatten()
}

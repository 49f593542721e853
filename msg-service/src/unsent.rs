//! Notifies that could not go out (the presence lookup or a publish failed:
//! Redis slow or down). The newest head of each such user is kept and sent
//! again every 200 ms until it goes, so a live client hears of an entry
//! soon after Redis answers again, not only with its next message (after
//! the last message of a conversation, that would be never).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::{Seq, UserId};
use storage::{Inline, Notification, NotifyBus, Presence};

/// How often kept notifies are tried again.
const RESEND_EVERY: Duration = Duration::from_millis(200);

/// Users kept at most; beyond, a failed notify is dropped (and counted):
/// the client still finds the entry at its next sync.
const MAX_KEPT: usize = 100_000;

/// Where notifies go: who holds a user, and the bus to their gateways.
#[derive(Clone)]
pub(crate) struct Notifier {
    presence: Arc<dyn Presence>,
    bus: Arc<dyn NotifyBus>,
    unsent: Arc<Unsent>,
}

#[derive(Default)]
struct Unsent {
    heads: Mutex<HashMap<UserId, Seq>>,
    /// A resend task is running (one at most; it ends once nothing is kept).
    resending: AtomicBool,
}

impl Unsent {
    fn heads(&self) -> MutexGuard<'_, HashMap<UserId, Seq>> {
        // Only whole inserts and removals happen under this lock.
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, user: UserId, head: Seq) {
        let mut heads = self.heads();
        if heads.len() >= MAX_KEPT && !heads.contains_key(&user) {
            metrics::counter!("chat_notifies_unsent_dropped_total").increment(1);
            return;
        }
        let kept = heads.entry(user).or_default();
        *kept = (*kept).max(head);
    }
}

impl Notifier {
    pub(crate) fn new(presence: Arc<dyn Presence>, bus: Arc<dyn NotifyBus>) -> Self {
        Notifier {
            presence,
            bus,
            unsent: Arc::default(),
        }
    }

    /// Tells the gateways holding `user` that its inbox head moved, with
    /// the new entries when `inline` has them; if that fails, keeps the head
    /// and tries again until it goes (without the entries: the client
    /// syncs).
    pub(crate) async fn notify(&self, user: &UserId, head: Seq, inline: Option<Inline>) {
        if !self.try_notify(user, head, inline).await {
            self.unsent.keep(user.clone(), head);
            self.start_resending();
        }
    }

    /// Whether every gateway holding `user` was told.
    async fn try_notify(&self, user: &UserId, head: Seq, inline: Option<Inline>) -> bool {
        let gateways = match self.presence.gateways(user).await {
            Ok(gateways) => gateways,
            Err(err) => {
                tracing::warn!(error = %err, %user, "presence lookup failed; the notify is kept for later");
                return false;
            }
        };
        let mut sent = true;
        for gateway in gateways {
            let note = Notification {
                user: user.clone(),
                head,
                inline: inline.clone(),
            };
            if let Err(err) = self.bus.publish(&gateway, note.into()).await {
                tracing::warn!(error = %err, %gateway, "notify publish failed; kept for later");
                sent = false;
            }
        }
        sent
    }

    fn start_resending(&self) {
        if !self.unsent.resending.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().resend());
        }
    }

    /// Every `RESEND_EVERY`, tries every kept notify once; ends when none
    /// is left.
    async fn resend(self) {
        loop {
            tokio::time::sleep(RESEND_EVERY).await;
            let kept: Vec<(UserId, Seq)> = self.unsent.heads().drain().collect();
            let mut kept = kept.into_iter();
            for (user, head) in kept.by_ref() {
                if self.try_notify(&user, head, None).await {
                    metrics::counter!("chat_notifies_resent_total").increment(1);
                } else {
                    // Redis still fails: the rest waits for the next round.
                    self.unsent.keep(user, head);
                    break;
                }
            }
            for (user, head) in kept {
                self.unsent.keep(user, head);
            }
            if self.unsent.heads().is_empty() {
                self.unsent.resending.store(false, Ordering::Release);
                // A notify kept between the look and the store started no
                // task of its own: carry on for it.
                if self.unsent.heads().is_empty()
                    || self.unsent.resending.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        }
    }
}

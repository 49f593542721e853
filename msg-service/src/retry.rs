//! The fan-out retry queue (dead-letter queue): a send whose conversation
//! append succeeded but whose inbox appends failed for some members records
//! `(conv_id, conv_seq, members still missing)` durably before it answers,
//! and a worker drains the queue with backoff. A member's append is
//! idempotent (`deliver(.., resume = true)` looks in the inbox index first)
//! and runs through the same per-inbox writer as every send, so a retry can
//! neither duplicate an entry nor hand out a seq twice.
//!
//! The worker walks the queue in key order and checkpoints its position
//! after each item, so a restart resumes the pass where it stopped. An item
//! leaves the queue only once every member has the message, so the
//! checkpoint can never make one skipped: a pass that reaches the end starts
//! over from the front, where items kept for backoff (or enqueued behind the
//! cursor) wait. The checkpoint is shared by replicas: one's pass may start
//! where another's stopped, and the items before wait for its next pass.
//!
//! A crash before the queue write loses nothing either: the message was
//! logged with its fan-out intent, and the worker, before its first pass,
//! finishes every intent the last run left above its watermark (see
//! `intents`); after each pass it saves the watermark. Replicas sharing a
//! store (under leases) skip items of conversations they do not serve (the
//! owner retries them) and, instead of a watermark, finish the recent
//! intents of every shard they take over from another owner.

use std::sync::{Arc, Weak};
use std::time::Duration;

use proto::{ConvId, HistoryMessage, Seq, UserId};
use rand::Rng;
use storage::{RetryItem, RetryKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::clock::now_ms;
use crate::deliveries::Pass;
use crate::service::{Core, conv_key};

/// Queue items read per store call.
const BATCH: usize = 100;

/// The retry worker's tuning.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// The shortest wait after a failed retry (the wait is a quarter of
    /// how long the item has been queued, within these two).
    pub backoff: Duration,
    /// The longest wait after a failed retry.
    pub max_backoff: Duration,
    /// How long the worker waits between passes when nothing is enqueued.
    pub poll: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// The worker's wake-ups and progress, shared with the send path.
pub(crate) struct RetrySignals {
    /// Wakes the worker when an item is enqueued.
    pub(crate) kick: tokio::sync::Notify,
    /// Passes completed so far (tests and operators wait on it).
    pub(crate) passes: watch::Sender<u64>,
}

impl Default for RetrySignals {
    fn default() -> Self {
        RetrySignals {
            kick: tokio::sync::Notify::new(),
            passes: watch::channel(0).0,
        }
    }
}

/// A running retry worker; [`RetryWorker::stop`] ends it after its current
/// item. Dropped without `stop`, it is told to stop all the same.
pub struct RetryWorker {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RetryWorker {
    pub(crate) fn spawn(core: &Arc<Core>) -> Self {
        let cancel = CancellationToken::new();
        let signals = Arc::clone(&core.retry);
        let poll = core.config.retry.poll;
        let membership = core
            .routes
            .as_ref()
            .map(|routes| routes.keeper().membership());
        let worker = run(
            Arc::downgrade(core),
            signals,
            membership,
            poll,
            cancel.clone(),
        );
        let task = tokio::spawn(worker);
        RetryWorker {
            cancel,
            task: Some(task),
        }
    }

    /// Stops the worker and waits until it has let go of the service.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::error!(error = %err, "the retry worker failed");
        }
    }
}

impl Drop for RetryWorker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Holds the service only during a pass: between passes a dropped service
/// (and its store) is let go, and the worker ends.
///
/// A replica also passes at once when its keeper's `membership` changes,
/// taking every item as due: the fan-outs that failed for want of an
/// owner that died may go through now, not after their backoff.
async fn run(
    core: Weak<Core>,
    signals: Arc<RetrySignals>,
    mut membership: Option<watch::Receiver<u64>>,
    poll: Duration,
    cancel: CancellationToken,
) {
    let mut recovered = false;
    let mut all_due = false;
    while !cancel.is_cancelled() {
        let Some(strong) = core.upgrade() else {
            return;
        };
        // Not raced with the cancellation: recovery and a pass stop between
        // items, never in the middle of an inbox append.
        // A replica looks after the shards it took over at every pass.
        let replica = strong.routes.is_some();
        if !recovered || replica {
            recovered = recover(&strong, &cancel).await;
        }
        if let Err(err) = strong.retry_pass(&cancel, all_due).await {
            tracing::warn!(error = %err, "retry queue pass failed; trying again later");
        }
        // Only once recovery is done: until then the previous process's
        // intents above the saved watermark are not all finished.
        if recovered
            && !replica
            && let Err(err) = strong.save_fanout_watermark().await
        {
            tracing::warn!(error = %err, "fan-out watermark not saved; trying again later");
        }
        drop(strong);
        signals.passes.send_modify(|n| *n += 1);
        all_due = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = signals.kick.notified() => false,
            _ = tokio::time::sleep(poll) => false,
            () = changed(&mut membership) => true,
        };
    }
}

/// Returns when `membership` changes; never without one (or once its
/// keeper is gone).
async fn changed(membership: &mut Option<watch::Receiver<u64>>) {
    let gone = match membership {
        Some(rx) => rx.changed().await.is_err(),
        None => true,
    };
    if gone {
        std::future::pending::<()>().await;
    }
}

/// Finishes the previous process's pending fan-outs; whether it did. A
/// replica among several has no previous process of its own: it looks
/// after the shards it takes over instead, at every pass.
async fn recover(core: &Core, cancel: &CancellationToken) -> bool {
    if let Some(routes) = &core.routes {
        let adopted = routes.keeper().adopted();
        if adopted.is_empty() {
            return true;
        }
        return match core.recover_adopted(&adopted, cancel).await {
            Ok(_) if cancel.is_cancelled() => false,
            Ok(seen) => {
                tracing::info!(
                    shards = adopted.len(),
                    intents = seen,
                    "fan-outs of shards taken over finished"
                );
                routes.keeper().looked_after(&adopted);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "fan-outs of shards taken over not finished; trying again");
                false
            }
        };
    }
    match core.recover_fanouts(cancel).await {
        Ok(_) if cancel.is_cancelled() => false,
        Ok(seen) => {
            tracing::info!(intents = seen, "pending fan-outs of the last run finished");
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "fan-out recovery failed; trying again later");
            false
        }
    }
}

impl Core {
    /// Records the members whose append failed, if any, so that the worker
    /// finishes the fan-out. A failed queue write is logged and returned (a
    /// send answers `unavailable` either way; recovery tries again later).
    pub(crate) async fn queue_missing(
        &self,
        message: &HistoryMessage,
        members: &[UserId],
        seqs: &[Result<Seq>],
    ) -> Result<()> {
        let missing: Vec<UserId> = members
            .iter()
            .zip(seqs)
            .filter(|(_, seq)| seq.is_err())
            .map(|(member, _)| member.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let item = RetryItem {
            key: RetryKey {
                enqueued_at: now_ms(),
                conv_id: message.conv_id.clone(),
                conv_seq: message.conv_seq,
            },
            members: missing,
            attempts: 0,
            not_before: 0,
        };
        match self.backends.store.enqueue_retry(&item).await {
            Ok(()) => {
                metrics::counter!("chat_dlq_enqueued_total").increment(1);
                self.retry.kick.notify_one();
                Ok(())
            }
            Err(err) => {
                tracing::error!(
                    error = %err, conv = %message.conv_id, conv_seq = message.conv_seq,
                    "fan-out retry could not be queued"
                );
                Err(err.into())
            }
        }
    }

    /// One pass from the checkpoint to the end of the queue; then the next
    /// pass starts from the front. `all_due`: items still in their backoff
    /// are tried too.
    async fn retry_pass(&self, cancel: &CancellationToken, all_due: bool) -> Result<()> {
        let store = &self.backends.store;
        // Replicas share the queue: one's checkpoint would make another's
        // pass start behind items it owns. Theirs start at the front.
        let replica = self.routes.is_some();
        let mut cursor = match replica {
            true => None,
            false => store.retry_checkpoint().await?,
        };
        loop {
            let items = store.retry_items(cursor.as_ref(), BATCH).await?;
            if items.is_empty() {
                break;
            }
            for item in items {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                let key = item.key.clone();
                // Items still in their backoff are passed over without a
                // checkpoint write (one durable write each, every poll,
                // during an outage); a restart passes over them again.
                if self.retry_item(item, all_due).await? && !replica {
                    store.save_retry_checkpoint(Some(&key)).await?;
                }
                cursor = Some(key);
            }
        }
        if !replica {
            store.save_retry_checkpoint(None).await?;
        }
        self.report_depth().await
    }

    /// Retries one item if its backoff is over, or `all_due` (whether it
    /// did); keeps what still fails.
    async fn retry_item(&self, item: RetryItem, all_due: bool) -> Result<bool> {
        if item.not_before > now_ms() && !all_due {
            return Ok(false);
        }
        if !self.conversations.serves(&conv_key(&item.key.conv_id)) {
            // The conversation's owner retries it (replicas share the queue).
            return Ok(false);
        }
        let store = &self.backends.store;
        let key = &item.key;
        let still = match self
            .redeliver_to(&key.conv_id, key.conv_seq, &item.members)
            .await
        {
            Ok(results) => failed_members(results),
            Err(err) => {
                tracing::warn!(error = %err, conv = %item.key.conv_id, "fan-out retry failed");
                item.members.clone()
            }
        };
        if still.is_empty() {
            store.remove_retry(&item.key).await?;
            metrics::counter!("chat_dlq_delivered_total").increment(1);
            return Ok(true);
        }
        let attempts = item.attempts.saturating_add(1);
        let backoff = self.retry_backoff(item.key.enqueued_at);
        let kept = RetryItem {
            members: still,
            attempts,
            not_before: now_ms().saturating_add(backoff),
            ..item
        };
        store.enqueue_retry(&kept).await?;
        Ok(true)
    }

    /// The wait before an item queued at `enqueued_at` (wall ms) is tried
    /// again. It grows with the item's age, not with its failed tries:
    /// during an outage the tries fail fast (an open breaker) and many at
    /// once, and a backoff doubled per try would hold a fan-out back for
    /// seconds after the outage ended. Waiting a quarter of its age keeps
    /// that to a quarter of the outage.
    fn retry_backoff(&self, enqueued_at: u64) -> u64 {
        let retry = &self.config.retry;
        let age = now_ms().saturating_sub(enqueued_at);
        jittered(backoff_for_age(retry.backoff, retry.max_backoff, age))
    }

    /// Appends a stored message to these members' inboxes where it is not
    /// yet, in the message's fan-out turn (a client retry of the same
    /// message cannot race it). Each member's outcome, in order.
    pub(crate) async fn redeliver_to(
        &self,
        conv: &ConvId,
        conv_seq: Seq,
        members: &[UserId],
    ) -> Result<Vec<(UserId, Result<Seq>)>> {
        let store = &self.backends.store;
        self.open_conversation(conv).await?;
        let Some(message) = store.message(conv, conv_seq).await? else {
            // Fenced off (a write that never became visible): nothing to
            // deliver, and nothing was acked.
            tracing::warn!(%conv, conv_seq, "a queued fan-out's message is not in its log; dropped");
            return Ok(Vec::new());
        };
        let _turn = self.fanout_turns.take(conv, conv_seq).await;
        let seqs = self.fan_out(members, &message, Pass::Resume).await;
        Ok(members.iter().cloned().zip(seqs).collect())
    }

    /// Sets `chat_dlq_depth` to the number of items in the queue.
    async fn report_depth(&self) -> Result<()> {
        let depth = self.retry_queue_depth().await?;
        metrics::gauge!("chat_dlq_depth").set(depth as f64);
        Ok(())
    }

    /// How many items the queue holds (a walk of it: it stays small).
    pub(crate) async fn retry_queue_depth(&self) -> Result<usize> {
        queued_retries(&*self.backends.store).await
    }
}

/// How many items wait in `store`'s fan-out retry queue.
pub async fn queued_retries(store: &dyn storage::MessageStore) -> Result<usize> {
    let (mut depth, mut after) = (0, None);
    loop {
        let items = store.retry_items(after.as_ref(), BATCH).await?;
        depth += items.len();
        match items.last() {
            Some(last) => after = Some(last.key.clone()),
            None => return Ok(depth),
        }
    }
}

fn failed_members(results: Vec<(UserId, Result<Seq>)>) -> Vec<UserId> {
    results
        .into_iter()
        .filter_map(|(member, seq)| match seq {
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(error = %err, %member, "inbox append retry failed");
                Some(member)
            }
        })
        .collect()
}

/// A quarter of `age_ms`, at least `base` and at most `max`, in milliseconds.
fn backoff_for_age(base: Duration, max: Duration, age_ms: u64) -> u64 {
    let base = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let max = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    (age_ms / 4).max(base).min(max)
}

/// Half the backoff plus a random part of the other half ("equal jitter"):
/// items that failed together (one store outage) are not all retried in
/// the same pass, and none comes back sooner than half its backoff.
fn jittered(backoff: u64) -> u64 {
    let half = backoff / 2;
    half + rand::rng().random_range(0..=backoff - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_a_quarter_of_the_age_between_the_floor_and_the_cap() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(60));
        assert_eq!(backoff_for_age(base, max, 0), 200);
        assert_eq!(backoff_for_age(base, max, 3_000), 750);
        assert_eq!(backoff_for_age(base, max, 3_600_000), 60_000);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff_and_varies() {
        let draws: Vec<u64> = (0..200).map(|_| jittered(1_000)).collect();
        assert!(draws.iter().all(|d| (500..=1_000).contains(d)), "{draws:?}");
        assert!(
            draws.iter().any(|d| *d != draws[0]),
            "the delays are spread"
        );
        assert_eq!(jittered(0), 0);
    }
}

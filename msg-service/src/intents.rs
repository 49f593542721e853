//! Fan-out intents: every message is logged with an intent naming the
//! members it goes to (see `MessageStore::append_message`), so that a crash
//! in the middle of its fan-out loses nothing. This module tracks which
//! intents this process is still fanning out, saves the watermark below
//! which every fan-out is finished (or its failures are in the retry
//! queue), and at start finishes the fan-outs that the previous process
//! left between its last watermark and its end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proto::Seq;
use storage::RetryItem;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::clock::now_ms;
use crate::deliveries::Pass;
use crate::ownership::conversation_shard;
use crate::service::{Core, conv_key};

/// Intents read per page during recovery.
const PAGE: usize = 100;

/// Recovery reads intents in windows of this many ms: a store may read per
/// minute, so one call never walks a long span (a long downtime).
const WINDOW_MS: u64 = 10 * 60_000;

/// How far back a replica looks for unfinished fan-outs in the shards it
/// takes over: a send's fan-out runs for seconds at most (its store calls
/// and its caller have deadlines of a few seconds), and the old owner
/// stopped serving at most a lease before the take-over.
const ADOPTION_LOOKBACK_MS: u64 = 60_000;

/// The intents of this process whose fan-out has not finished, by the time
/// they were written.
pub(crate) struct InFlight {
    state: Mutex<State>,
    /// When this process began writing intents: those before are the
    /// previous process's, for recovery.
    started_at: u64,
}

struct State {
    /// Intents in flight per write time.
    counts: BTreeMap<u64, usize>,
    /// The latest time handed out: times never go back, even if the clock does.
    last: u64,
}

/// One intent in flight; dropping it marks its fan-out finished.
pub(crate) struct InFlightGuard {
    owner: Arc<InFlight>,
    /// When the intent was written (its key's time).
    pub(crate) at: u64,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        let started_at = now_ms();
        InFlight {
            state: Mutex::new(State {
                counts: BTreeMap::new(),
                last: started_at,
            }),
            started_at,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only counts change under this lock: nothing half done after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an intent about to be written; its time is the guard's `at`.
    pub(crate) fn register(self: &Arc<Self>) -> InFlightGuard {
        let mut state = self.state();
        let at = now_ms().max(state.last);
        state.last = at;
        *state.counts.entry(at).or_default() += 1;
        InFlightGuard {
            owner: Arc::clone(self),
            at,
        }
    }

    /// The earliest time of an intent in flight, or now when none is:
    /// every intent written before it has finished its fan-out.
    pub(crate) fn watermark(&self) -> u64 {
        let mut state = self.state();
        let now = now_ms().max(state.last);
        state.last = now;
        state.counts.keys().next().copied().unwrap_or(now)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut state = self.owner.state();
        if let Some(count) = state.counts.get_mut(&self.at) {
            *count -= 1;
            if *count == 0 {
                state.counts.remove(&self.at);
            }
        }
    }
}

impl Core {
    /// Finishes the fan-out of every intent the previous process wrote at
    /// or after its last saved watermark; returns how many it looked at.
    /// Stops early (unfinished) when cancelled.
    pub(crate) async fn recover_fanouts(&self, cancel: &CancellationToken) -> Result<usize> {
        let (mut from, end) = (
            self.backends.store.fanout_watermark().await?,
            self.in_flight.started_at,
        );
        let mut seen = 0;
        while from < end {
            let to = from.saturating_add(WINDOW_MS).min(end);
            seen += self.recover_window(from, to, &|_| true, cancel).await?;
            if cancel.is_cancelled() {
                break;
            }
            from = to;
        }
        Ok(seen)
    }

    /// Finishes the fan-outs that the earlier owners of `adopted` shards
    /// (each with when it was taken over, wall ms) may have left: those of
    /// the intents written from a minute before the earliest take-over on,
    /// whose conversation is in one of them. Replicas share the store, so
    /// one saved watermark cannot speak for each; a minute covers every
    /// send that was still in flight when its owner stopped.
    pub(crate) async fn recover_adopted(
        &self,
        adopted: &[(u16, u64)],
        cancel: &CancellationToken,
    ) -> Result<usize> {
        let earliest = adopted.iter().map(|(_, at)| *at).min().unwrap_or(0);
        let from = earliest.saturating_sub(ADOPTION_LOOKBACK_MS);
        let shards: Vec<u16> = adopted.iter().map(|(shard, _)| *shard).collect();
        let wanted = |intent: &RetryItem| shards.contains(&conversation_shard(&intent.key.conv_id));
        self.recover_window(from, now_ms(), &wanted, cancel).await
    }

    /// Finishes the intents written in `[from, to)` that `wanted` picks.
    async fn recover_window(
        &self,
        from: u64,
        to: u64,
        wanted: &(dyn Fn(&RetryItem) -> bool + Sync),
        cancel: &CancellationToken,
    ) -> Result<usize> {
        let store = &self.backends.store;
        let (mut after, mut seen) = (None, 0);
        loop {
            let page = store.fanout_intents(from, to, after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(seen);
            };
            after = Some(last.key.clone());
            for intent in page.into_iter().filter(|intent| wanted(intent)) {
                if cancel.is_cancelled() {
                    return Ok(seen);
                }
                self.finish_intent(intent).await?;
                seen += 1;
            }
        }
    }

    /// Appends the intent's message to the inboxes that lack it; queues
    /// the members whose append fails. An intent whose message never made
    /// it to the log (a write that failed after its intent) is skipped, and
    /// so is one that cannot be finished for good (bad data: logged), so
    /// that it cannot hold up recovery forever. A failure that may pass
    /// (the store, the queue write) ends recovery, to be tried again.
    async fn finish_intent(&self, intent: RetryItem) -> Result<()> {
        let (conv, conv_seq): (_, Seq) = (&intent.key.conv_id, intent.key.conv_seq);
        if !self.conversations.serves(&conv_key(conv)) {
            // Another instance owns it (it moved on again since it was
            // adopted, routine in a rolling restart); finishing it is
            // that owner's.
            tracing::debug!(%conv, conv_seq, "an intent of a conversation not served here; skipped");
            return Ok(());
        }
        // A message a dead process logged but never settled is fenced off
        // first, not fanned out.
        self.open_conversation(conv).await?;
        let message = match self.backends.store.message(conv, conv_seq).await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(err) if err.is_retryable() => return Err(err.into()),
            Err(err) => {
                tracing::error!(error = %err, %conv, conv_seq, "an intent's message cannot be read; skipped");
                return Ok(());
            }
        };
        let _turn = self.fanout_turns.take(conv, conv_seq).await;
        let seqs = self.fan_out(&intent.members, &message, Pass::Resume).await;
        if seqs.iter().any(|s| s.is_err()) {
            tracing::warn!(%conv, conv_seq, "a recovered fan-out failed in part; queued");
        }
        self.queue_missing(&message, &intent.members, &seqs).await?;
        metrics::counter!("chat_fanout_recovered_total").increment(1);
        Ok(())
    }

    /// Saves the watermark: the earliest intent still in flight, or now.
    pub(crate) async fn save_fanout_watermark(&self) -> Result<()> {
        let at = self.in_flight.watermark();
        Ok(self.backends.store.save_fanout_watermark(at).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_stays_at_the_earliest_intent_in_flight_until_it_ends() {
        let in_flight = Arc::new(InFlight::new());
        let first = in_flight.register();
        let second = in_flight.register();
        assert!(second.at >= first.at);
        assert_eq!(in_flight.watermark(), first.at);
        drop(first);
        assert_eq!(in_flight.watermark(), second.at);
        drop(second);
        assert!(in_flight.watermark() >= in_flight.started_at);
        let later = in_flight.register();
        assert_eq!(in_flight.watermark(), later.at);
    }
}

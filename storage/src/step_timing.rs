//! How long the embedded store's write steps take: a histogram of each, and
//! a log line for a slow one, so that a stall of delivery can be traced to
//! the disk (fsync) or to the engine (commit of a batch).

use std::time::Duration;

/// A store step slower than this is logged: it holds up every write behind it.
const SLOW_STEP: Duration = Duration::from_millis(200);

/// Records how long a step of the store's write path took (`fsync`, or
/// `commit` of a batch into the journal and memtables), and logs a slow one,
/// so that a stall of delivery can be traced to the disk or to the engine.
pub(crate) fn note_duration(step: &'static str, took: Duration) {
    metrics::histogram!("chat_store_step_seconds", "step" => step).record(took.as_secs_f64());
    if took >= SLOW_STEP {
        tracing::warn!(step, ms = took.as_millis() as u64, "slow store step");
    }
}

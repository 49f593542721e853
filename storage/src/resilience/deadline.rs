//! A deadline that arms its timer only when it is needed: most calls (a read
//! from memory, a write that fits a socket's buffer) finish at their first
//! poll, and a timer armed and dropped for each of those was a few percent
//! of a message's CPU.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::time::error::Elapsed;

/// `call`'s output, or `Elapsed` if it takes longer than `limit`. A call
/// that finishes at its first poll arms no timer: it cannot miss a deadline
/// (tokio's `timeout` polls the call before its timer too).
pub async fn within<F: Future>(limit: Duration, call: F) -> Result<F::Output, Elapsed> {
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(output) = futures_util::poll!(call.as_mut()) {
        return Ok(output);
    }
    tokio::time::timeout(limit, call).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_call_answers_and_a_slow_one_elapses_at_its_deadline() {
        assert_eq!(
            within(Duration::from_secs(1), async { 7 }).await.unwrap(),
            7
        );

        let started = tokio::time::Instant::now();
        let slow = within(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert!(slow.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        let waits = within(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            8
        });
        assert_eq!(waits.await.unwrap(), 8);
    }
}

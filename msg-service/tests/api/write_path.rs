//! The send path against slow fan-outs, membership changes and crashes
//! (issue 18): a sender's lock is held only for dedup, membership changes
//! are serialized with the conversation's sends, and a fan-out intent is
//! durable before the fan-out starts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::faults::start_faulty_with;
use crate::helpers::{Options, send, user};
use crate::store_double::hold;

/// Longer than any healthy call here takes; only a call stuck behind
/// another one runs into it.
const STUCK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_slow_group_fan_out_does_not_hold_up_the_senders_next_send() -> anyhow::Result<()> {
    let (svc, faults, _) = start_faulty_with(Options::default())?;
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], None)
        .await?
        .conv_id;
    let (written, release) = hold(&faults.hold_inbox_of, &carol);

    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), group.clone());
    let slow = tokio::spawn(async move { send(&service, &from, &to, "g-1", "hi all").await });
    written.await.context("the group's fan-out reached carol")?;
    let next = tokio::time::timeout(STUCK, svc.send(&alice, &dave, "d-1", "meanwhile")).await;

    let _ = release.send(());
    slow.await??;
    next.context("alice's next send waited for her group's fan-out")??;
    Ok(())
}

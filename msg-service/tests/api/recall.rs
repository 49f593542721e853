//! A recall that overtakes its message's fan-out (another device of the
//! sender saw the message while the other members' appends were still
//! running): the body still reaches no member once the recall is acked.

use std::sync::Arc;

use anyhow::Context;
use proto::SendRequest;
use storage::MessageStore;

use crate::faults::start_faulty_with;
use crate::helpers::{Options, user};
use crate::store_double::hold;

#[tokio::test]
async fn a_recall_of_a_message_still_being_fanned_out_leaves_its_body_in_no_inbox()
-> anyhow::Result<()> {
    let (svc, faults, bare) = start_faulty_with(Options::default())?;
    let (alice, bob) = (user("alice"), user("bob"));
    // Bob's copy is written, then held: the send's fan-out is not over.
    let (written, release) = hold(&faults.hold_inbox_of, &bob);
    let service = Arc::clone(&svc.service);
    let (from, to) = (alice.clone(), bob.clone());
    let sending =
        tokio::spawn(
            async move { crate::helpers::send(&service, &from, &to, "m-1", "secret").await },
        );
    written.await.context("bob's copy was written")?;
    let conv = proto::ConvId::dm(&alice, &bob)?;
    // Logged before its fan-out began (as a device of alice's sees it).
    let store = bare
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the bare store")?;
    let conv_seq = store.last_conv_seq(&conv).await?;

    let service = Arc::clone(&svc.service);
    let from = alice.clone();
    let recall = SendRequest::recall(Some("r-1"), Some(conv.as_str()), Some(conv_seq))?;
    let recalling =
        tokio::spawn(async move { msg_service::MessageApi::send(&*service, &from, recall).await });
    // The recall is logged and on its way to the inboxes before bob's
    // copy of the message is let go.
    let logged = conv_seq + 1;
    for _ in 0..1000 {
        if store.last_conv_seq(&conv).await? >= logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        store.last_conv_seq(&conv).await?,
        logged,
        "the recall was logged"
    );
    let _ = release.send(());
    sending.await??;
    recalling.await??;

    for reader in [&alice, &bob] {
        let entries = svc.sync_all(reader, 0).await?;
        let first = &entries.first().context("the message")?.message;
        assert!(
            first.recalled && first.body.is_empty(),
            "{reader}'s copy is blank: {first:?}"
        );
    }
    Ok(())
}

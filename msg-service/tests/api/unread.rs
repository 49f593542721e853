//! The unread count of a conversation's view (protocol 1.1): exact up to
//! 100, and taken on from where the last view's count stopped, so a view
//! reads only the messages since (pages counted by a store double); a moved
//! marker counts afresh.

use std::sync::Arc;

use msg_service::{MessageApi, ServiceConfig};
use proto::{ConvId, UserId};

use crate::helpers::{Options, TestService, user};
use crate::store_double::{StoreDouble, StoreReads};

/// Messages of the caller's own before the ones that count: three pages
/// (of 200) to look through.
const OWN: usize = 450;

#[tokio::test]
async fn a_view_counts_only_the_messages_since_the_last_views_count() -> anyhow::Result<()> {
    let reads = Arc::new(StoreReads::default());
    let svc = TestService::start_with(Options {
        wrap_store: Some(StoreDouble::counting_wrap(&reads)),
        config: ServiceConfig {
            send_rate: 100_000,
            send_burst: 100_000,
            ..ServiceConfig::default()
        },
        ..Options::default()
    })?;
    let (alice, bob) = (user("alice"), user("bob"));
    let group = svc
        .create_group(&alice, std::slice::from_ref(&bob), None)
        .await?
        .conv_id;
    for i in 0..OWN {
        svc.send(&alice, &group, &format!("a{i}"), "mine").await?;
    }
    svc.send(&bob, &group, "b0", "for alice").await?;
    svc.send(&bob, &group, "b1", "for alice").await?;

    let view = || unread_and_pages(&svc, &reads, &alice, &group);
    assert_eq!(
        view().await?,
        (2, 3),
        "the first view reads all after the marker"
    );
    svc.send(&bob, &group, "b2", "for alice").await?;
    assert_eq!(view().await?, (3, 1), "the next reads only what came since");
    assert_eq!(view().await?, (3, 0), "nothing came since");

    // A moved marker counts afresh, from itself.
    let marker = u64::try_from(OWN + 2).expect("small");
    svc.service.mark_read(&alice, &group, marker).await?;
    assert_eq!(view().await?, (1, 1));
    Ok(())
}

/// The unread count of `member`'s view of `conv`, and the pages of
/// messages the view read.
async fn unread_and_pages(
    svc: &TestService,
    reads: &StoreReads,
    member: &UserId,
    conv: &ConvId,
) -> anyhow::Result<(u32, usize)> {
    let before = reads.message_pages();
    let unread = svc.conversation(member, conv).await?.unread;
    Ok((unread, reads.message_pages() - before))
}

//! Paging edge cases of sync (inbox seqs) and history (conv_seqs).

use msg_service::HistoryPage;
use proto::{ErrorCode, MAX_SYNC_LIMIT, Seq, UserId, clamp_sync_limit};
use storage::Page;

use crate::helpers::{Options, TestService, dm, seqs, user};

/// `count` messages from alice to bob, one after the other.
async fn dms(svc: &TestService, count: usize) -> anyhow::Result<(UserId, UserId)> {
    let (alice, bob) = (user("alice"), user("bob"));
    for k in 1..=count {
        svc.send(&alice, &bob, &format!("c-{k}"), &format!("message {k}"))
            .await?;
    }
    Ok((alice, bob))
}

fn conv_seqs(page: &HistoryPage) -> Vec<Seq> {
    page.messages.iter().map(|m| m.conv_seq).collect()
}

#[tokio::test]
async fn a_sync_of_an_empty_inbox_returns_head_zero_and_nothing_more() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let page = svc.sync(&user("nobody"), 0, 100).await?;
    assert_eq!((page.entries.len(), page.head, page.more), (0, 0, false));
    assert_eq!(svc.inbox_head(&user("nobody")).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_sync_from_the_head_or_beyond_returns_nothing_and_no_more() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (_, bob) = dms(&svc, 3).await?;
    let head = svc.inbox_head(&bob).await?;
    assert_eq!(head, 3);
    for since in [head, head + 1, Seq::MAX] {
        let page = svc.sync(&bob, since, 100).await?;
        assert_eq!(
            (page.entries.len(), page.head, page.more),
            (0, head, false),
            "since {since}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_sync_with_limit_zero_returns_no_entries_but_says_more_exist() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (_, bob) = dms(&svc, 2).await?;
    let page = svc.sync(&bob, 0, 0).await?;
    assert_eq!((page.entries.len(), page.head, page.more), (0, 2, true));
    let caught_up = svc.sync(&bob, 2, 0).await?;
    assert!(!caught_up.more);
    Ok(())
}

#[test]
fn the_edge_refuses_a_zero_limit_and_clamps_large_ones_to_500() {
    let zero = clamp_sync_limit(Some(0)).expect_err("zero is refused");
    assert_eq!(zero.code(), ErrorCode::BadRequest);
    assert!(zero.to_string().contains("limit"), "{zero}");
    assert_eq!(clamp_sync_limit(Some(1000)), Ok(MAX_SYNC_LIMIT));
    assert_eq!(MAX_SYNC_LIMIT, 500);
    assert_eq!(clamp_sync_limit(None), Ok(100));
}

#[tokio::test]
async fn a_sync_pages_with_more_until_the_last_page() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (_, bob) = dms(&svc, 10).await?;
    let limit = clamp_sync_limit(Some(3))?;
    let mut since = 0;
    let mut pages = Vec::new();
    loop {
        let page = svc.sync(&bob, since, limit).await?;
        assert_eq!(page.head, 10);
        pages.push((seqs(&page.entries), page.more));
        match page.entries.last() {
            Some(last) if page.more => since = last.seq,
            _ => break,
        }
    }
    let expected = [
        (vec![1, 2, 3], true),
        (vec![4, 5, 6], true),
        (vec![7, 8, 9], true),
        (vec![10], false),
    ];
    assert_eq!(pages, expected);
    Ok(())
}

#[tokio::test]
async fn a_last_page_that_is_exactly_full_says_no_more() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (_, bob) = dms(&svc, 6).await?;
    let page = svc.sync(&bob, 3, 3).await?;
    assert_eq!((seqs(&page.entries), page.more), (vec![4, 5, 6], false));
    Ok(())
}

#[tokio::test]
async fn a_reader_behind_the_cache_pages_through_the_store_without_gaps() -> anyhow::Result<()> {
    let svc = TestService::start_with(Options {
        cache_per_inbox: 3,
        ..Options::default()
    })?;
    let (_, bob) = dms(&svc, 10).await?;
    let all = crate::helpers::drain(&svc.service, &bob, 0, 4).await?;
    assert_eq!(seqs(&all), (1..=10).collect::<Vec<_>>());
    // The cache holds 8..=10: from 7 it covers the range, from 6 it does not.
    let cached = svc.sync(&bob, 7, 4).await?;
    assert_eq!(
        (seqs(&cached.entries), cached.more),
        (vec![8, 9, 10], false)
    );
    let stored = svc.sync(&bob, 6, 4).await?;
    assert_eq!(
        (seqs(&stored.entries), stored.more),
        (vec![7, 8, 9, 10], false)
    );
    let short = svc.sync(&bob, 2, 4).await?;
    assert_eq!((seqs(&short.entries), short.more), (vec![3, 4, 5, 6], true));
    Ok(())
}

#[tokio::test]
async fn history_pages_backwards_with_next_before_cursors() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = dms(&svc, 7).await?;
    let conv = dm(&alice, &bob);
    let first = svc.history(&bob, &conv, Page::Before(Seq::MAX), 3).await?;
    assert_eq!((conv_seqs(&first), first.next), (vec![7, 6, 5], Some(5)));
    let second = svc.history(&bob, &conv, Page::Before(5), 3).await?;
    assert_eq!((conv_seqs(&second), second.next), (vec![4, 3, 2], Some(2)));
    let last = svc.history(&bob, &conv, Page::Before(2), 3).await?;
    assert_eq!((conv_seqs(&last), last.next), (vec![1], None));
    assert_eq!(last.messages[0].body, "message 1");
    Ok(())
}

#[tokio::test]
async fn history_pages_forwards_with_next_after_cursors() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = dms(&svc, 7).await?;
    let conv = dm(&alice, &bob);
    let first = svc.history(&alice, &conv, Page::After(0), 3).await?;
    assert_eq!((conv_seqs(&first), first.next), (vec![1, 2, 3], Some(3)));
    let second = svc.history(&alice, &conv, Page::After(3), 3).await?;
    assert_eq!((conv_seqs(&second), second.next), (vec![4, 5, 6], Some(6)));
    let last = svc.history(&alice, &conv, Page::After(6), 3).await?;
    assert_eq!((conv_seqs(&last), last.next), (vec![7], None));
    let exactly_full = svc.history(&alice, &conv, Page::After(4), 3).await?;
    assert_eq!(
        (conv_seqs(&exactly_full), exactly_full.next),
        (vec![5, 6, 7], None)
    );
    Ok(())
}

#[tokio::test]
async fn history_with_a_limit_larger_than_the_log_returns_it_all() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = dms(&svc, 4).await?;
    let conv = dm(&alice, &bob);
    let newest = svc
        .history(&alice, &conv, Page::Before(Seq::MAX), 200)
        .await?;
    assert_eq!((conv_seqs(&newest), newest.next), (vec![4, 3, 2, 1], None));
    let oldest = svc.history(&alice, &conv, Page::After(0), 200).await?;
    assert_eq!((conv_seqs(&oldest), oldest.next), (vec![1, 2, 3, 4], None));
    Ok(())
}

#[tokio::test]
async fn history_past_either_end_is_an_empty_page() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = dms(&svc, 2).await?;
    let conv = dm(&alice, &bob);
    for page in [
        Page::Before(1),
        Page::Before(0),
        Page::After(2),
        Page::After(Seq::MAX),
    ] {
        let got = svc.history(&alice, &conv, page, 10).await?;
        assert_eq!(
            got,
            HistoryPage {
                messages: vec![],
                next: None,
                degraded: false,
            },
            "{page:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_member_of_a_dm_without_messages_reads_an_empty_page() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let conv = dm(&alice, &bob);
    for page in [Page::Before(Seq::MAX), Page::After(0)] {
        let got = svc.history(&bob, &conv, page, 50).await?;
        assert_eq!(
            got,
            HistoryPage {
                messages: vec![],
                next: None,
                degraded: false,
            },
            "{page:?}"
        );
    }
    let view = svc.conversation(&alice, &conv).await?;
    assert_eq!((view.members, view.last_conv_seq), (vec![alice, bob], 0));
    Ok(())
}

#[tokio::test]
async fn history_with_limit_zero_is_a_bad_request() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = dms(&svc, 1).await?;
    let err = svc
        .history(&alice, &dm(&alice, &bob), Page::After(0), 0)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(err.to_string().contains("limit"), "{err}");
    Ok(())
}

//! Groups: fan-out to every member, membership checks, the member cap, and
//! membership changes.

use msg_service::{Error, ServiceConfig};
use proto::{ConvId, ConvKind, ErrorCode, Seq};
use storage::Page;

use crate::helpers::{TestService, dm, user, users};

const NEWEST: Page = Page::Before(Seq::MAX);

fn small_groups() -> ServiceConfig {
    ServiceConfig {
        max_group_members: 5,
        ..ServiceConfig::default()
    }
}

fn assert_forbidden<T: std::fmt::Debug>(result: msg_service::Result<T>, what: &str) {
    match result {
        Err(Error::Forbidden) => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

fn assert_bad_request<T: std::fmt::Debug>(result: msg_service::Result<T>, field: &str) {
    match result {
        Err(err) => {
            assert_eq!(err.code(), ErrorCode::BadRequest, "{err:?}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        Ok(ok) => panic!("expected bad_request about {field}, got {ok:?}"),
    }
}

#[tokio::test]
async fn creating_a_group_adds_the_creator_and_lists_it_for_every_member() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(
            &alice,
            &[carol.clone(), bob.clone(), bob.clone()],
            Some("plans"),
        )
        .await?;

    assert_eq!(group.kind, ConvKind::Group);
    assert_eq!(group.conv_id.kind(), ConvKind::Group);
    assert_eq!(
        group.members,
        [alice.clone(), bob.clone(), carol.clone()],
        "sorted, deduplicated, creator included"
    );
    assert_eq!(
        (group.title.as_deref(), group.last_conv_seq),
        (Some("plans"), 0)
    );
    for u in [&alice, &bob, &carol] {
        assert_eq!(
            svc.conversations(u).await?,
            std::slice::from_ref(&group),
            "{u}"
        );
        assert_eq!(svc.conversation(u, &group.conv_id).await?, group, "{u}");
    }
    Ok(())
}

#[tokio::test]
async fn a_group_message_reaches_every_member_including_the_sender() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let members = users("m", 4);
    let group = svc
        .create_group(&members[0], &members[1..], None)
        .await?
        .conv_id;
    // Give the inboxes different heads, so that a seq from the wrong inbox shows.
    svc.send(&members[2], &members[3], "warm-up", "hi").await?;

    let ack = svc.send(&members[2], &group, "g-1", "hello all").await?;

    for member in &members {
        let inbox = svc.sync_all(member, 0).await?;
        let got: Vec<_> = inbox
            .iter()
            .filter(|e| e.message.conv_id == group)
            .collect();
        assert_eq!(got.len(), 1, "{member} gets the message once");
        assert_eq!(
            (got[0].message.conv_seq, got[0].message.body.as_str()),
            (ack.conv_seq, "hello all")
        );
    }
    let sender_inbox = svc.sync_all(&members[2], 0).await?;
    assert_eq!(
        sender_inbox
            .last()
            .map(|e| (e.seq, &e.message.client_msg_id)),
        Some((ack.seq, &ack.client_msg_id))
    );
    assert_eq!(ack.seq, 2, "the sender's second entry");
    assert_eq!(
        svc.conversation(&members[1], &group).await?.last_conv_seq,
        ack.conv_seq
    );
    Ok(())
}

#[tokio::test]
async fn a_non_member_can_neither_send_nor_read_nor_see_a_group() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    let group = svc
        .create_group(&alice, std::slice::from_ref(&bob), None)
        .await?
        .conv_id;
    svc.send(&alice, &group, "a-1", "secret").await?;

    assert_forbidden(svc.send(&mallory, &group, "m-1", "hi").await, "send");
    assert_forbidden(svc.history(&mallory, &group, NEWEST, 10).await, "history");
    assert_forbidden(svc.conversation(&mallory, &group).await, "conversation");
    assert_forbidden(
        svc.add_members(&mallory, &group, std::slice::from_ref(&mallory))
            .await,
        "add",
    );
    assert_forbidden(svc.remove_member(&mallory, &group, &bob).await, "remove");
    assert!(svc.conversations(&mallory).await?.is_empty());
    assert!(svc.sync_all(&mallory, 0).await?.is_empty());
    assert_eq!(
        svc.full_history(&alice, &group).await?.len(),
        1,
        "nothing stored"
    );
    Ok(())
}

#[tokio::test]
async fn a_group_that_does_not_exist_is_forbidden_like_one_that_does() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let alice = user("alice");
    let nowhere = ConvId::parse("g:doesnotexist")?;
    assert_forbidden(svc.send(&alice, &nowhere, "a-1", "hi").await, "send");
    assert_forbidden(svc.history(&alice, &nowhere, NEWEST, 10).await, "history");
    assert_forbidden(svc.conversation(&alice, &nowhere).await, "conversation");
    Ok(())
}

#[tokio::test]
async fn a_group_over_the_member_cap_is_refused() -> anyhow::Result<()> {
    let svc = TestService::with_config(small_groups())?;
    let creator = user("creator");
    let at_cap = svc.create_group(&creator, &users("u", 4), None).await?;
    assert_eq!(at_cap.members.len(), 5, "the creator counts");
    assert_bad_request(
        svc.create_group(&creator, &users("u", 5), None).await,
        "at most 5 members",
    );
    assert_eq!(
        svc.conversations(&creator).await?.len(),
        1,
        "the refused group was not stored"
    );
    Ok(())
}

#[tokio::test]
async fn adding_members_beyond_the_cap_is_refused() -> anyhow::Result<()> {
    let svc = TestService::with_config(small_groups())?;
    let creator = user("creator");
    let group = svc
        .create_group(&creator, &users("u", 3), None)
        .await?
        .conv_id;
    assert_eq!(
        svc.add_members(&creator, &group, &users("u", 4))
            .await?
            .members
            .len(),
        5,
        "u0-u2 are already in"
    );
    assert_bad_request(
        svc.add_members(&creator, &group, &[user("one-too-many")])
            .await,
        "members",
    );
    assert_eq!(svc.conversation(&creator, &group).await?.members.len(), 5);
    Ok(())
}

#[tokio::test]
async fn an_added_member_receives_later_messages_and_reads_the_history() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, dave) = (user("alice"), user("bob"), user("dave"));
    let group = svc
        .create_group(&alice, std::slice::from_ref(&bob), None)
        .await?
        .conv_id;
    svc.send(&alice, &group, "before", "before dave").await?;

    let view = svc
        .add_members(&bob, &group, std::slice::from_ref(&dave))
        .await?;
    assert_eq!(view.members, [alice.clone(), bob.clone(), dave.clone()]);
    svc.send(&dave, &group, "after", "hi, dave here").await?;

    let inbox = svc.sync_all(&dave, 0).await?;
    let ids: Vec<&str> = inbox
        .iter()
        .map(|e| e.message.client_msg_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["after"],
        "the inbox holds what was sent since joining"
    );
    assert_eq!(
        svc.full_history(&dave, &group).await?.len(),
        2,
        "the log holds everything"
    );
    assert_eq!(svc.sync_all(&alice, 0).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_removed_member_can_no_longer_send_read_or_receive() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], None)
        .await?
        .conv_id;
    svc.send(&alice, &group, "a-1", "hi both").await?;

    let view = svc.remove_member(&alice, &group, &carol).await?;
    assert_eq!(view.members, [alice.clone(), bob.clone()]);
    svc.send(&alice, &group, "a-2", "just us").await?;

    assert_forbidden(svc.send(&carol, &group, "c-1", "wait").await, "send");
    assert_forbidden(svc.history(&carol, &group, NEWEST, 10).await, "history");
    assert_forbidden(svc.conversation(&carol, &group).await, "conversation");
    assert!(svc.conversations(&carol).await?.is_empty());
    let carol_inbox = svc.sync_all(&carol, 0).await?;
    let ids: Vec<&str> = carol_inbox
        .iter()
        .map(|e| e.message.client_msg_id.as_str())
        .collect();
    assert_eq!(ids, ["a-1"], "she keeps what she got, and gets nothing new");
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn the_members_of_a_dm_cannot_change() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    svc.send(&alice, &bob, "a-1", "hi").await?;
    let conv = dm(&alice, &bob);

    assert_bad_request(
        svc.add_members(&alice, &conv, std::slice::from_ref(&carol))
            .await,
        "conv_id",
    );
    assert_bad_request(svc.remove_member(&alice, &conv, &bob).await, "conv_id");
    assert_forbidden(
        svc.add_members(&carol, &conv, std::slice::from_ref(&carol))
            .await,
        "a non-member",
    );
    let view = svc.conversation(&bob, &conv).await?;
    assert_eq!(view.members, [alice, bob]);
    Ok(())
}

#[tokio::test]
async fn a_title_longer_than_256_bytes_is_too_large() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let alice = user("alice");
    assert!(
        svc.create_group(&alice, &[], Some(&"t".repeat(256)))
            .await
            .is_ok()
    );
    let err = svc
        .create_group(&alice, &[], Some(&"t".repeat(257)))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert!(err.to_string().contains("title"), "{err}");
    Ok(())
}

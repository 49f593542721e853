//! The send path: direct messages, acks, and conv_seq order when several
//! senders write to one conversation at once.

use std::sync::Arc;

use msg_service::Error;
use proto::{ConvKind, ErrorCode, Seq};
use tokio::task::JoinSet;

use crate::helpers::{
    Options, TestService, count_by_sender_id, dm, strictly_increasing, user, users,
};
use crate::store_double::{StoreDouble, StoreReads};

#[tokio::test]
async fn a_dm_reaches_both_inboxes_and_the_ack_names_the_senders_entry() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    let ack = svc.send(&alice, &bob, "c-1", "hi bob").await?;

    assert_eq!((ack.conv_id.as_str(), ack.conv_seq), ("dm:alice:bob", 1));
    let alice_inbox = svc.sync_all(&alice, 0).await?;
    let bob_inbox = svc.sync_all(&bob, 0).await?;
    assert_eq!(alice_inbox.len(), 1);
    assert_eq!(bob_inbox.len(), 1);
    assert_eq!(
        alice_inbox[0].seq, ack.seq,
        "the ack's seq is the sender's own entry"
    );
    assert_eq!(
        alice_inbox[0].message, bob_inbox[0].message,
        "both inboxes hold the same message"
    );
    let message = &bob_inbox[0].message;
    assert_eq!(
        (message.from.as_str(), message.body.as_str()),
        ("alice", "hi bob")
    );
    assert_eq!(
        (message.client_msg_id.as_str(), message.ts),
        ("c-1", ack.ts)
    );
    Ok(())
}

#[tokio::test]
async fn a_dm_exists_implicitly_once_its_first_message_is_sent() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob) = (user("alice"), user("bob"));
    assert!(svc.conversations(&alice).await?.is_empty());

    svc.send(&bob, &alice, "c-1", "hi").await?;

    for u in [&alice, &bob] {
        let list = svc.conversations(u).await?;
        assert_eq!(list.len(), 1, "{u}");
        assert_eq!(list[0].conv_id, dm(&alice, &bob));
        assert_eq!(list[0].kind, ConvKind::Dm);
        assert_eq!(list[0].members, [alice.clone(), bob.clone()]);
        assert_eq!(list[0].last_conv_seq, 1);
    }
    Ok(())
}

#[tokio::test]
async fn sending_to_yourself_is_a_bad_request() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let alice = user("alice");
    let err = svc
        .send(&alice, &alice, "c-1", "note to self")
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(err.to_string().contains("`to`"), "{err}");
    assert!(svc.sync_all(&alice, 0).await?.is_empty(), "nothing stored");
    Ok(())
}

#[tokio::test]
async fn a_dm_between_two_other_users_is_forbidden() -> anyhow::Result<()> {
    let svc = TestService::start()?;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    svc.send(&alice, &bob, "c-1", "hi").await?;
    let conv = dm(&alice, &bob);

    let err = svc
        .send(&mallory, &conv, "m-1", "let me in")
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    assert!(matches!(
        svc.history(&mallory, &conv, storage::Page::Before(Seq::MAX), 10)
            .await,
        Err(Error::Forbidden)
    ));
    assert!(matches!(
        svc.conversation(&mallory, &conv).await,
        Err(Error::Forbidden)
    ));
    assert_eq!(svc.sync_all(&bob, 0).await?.len(), 1, "nothing stored");
    Ok(())
}

const GROUP_SENDERS: usize = 6;
const GROUP_SENDS_EACH: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_into_one_group_get_gap_free_increasing_conv_seqs() -> anyhow::Result<()>
{
    let svc = TestService::start()?;
    let senders = users("s", GROUP_SENDERS);
    let listeners = users("l", 2);
    let members: Vec<_> = senders.iter().chain(&listeners).cloned().collect();
    let group = svc.create_group(&senders[0], &members, None).await?.conv_id;

    let mut tasks = JoinSet::new();
    for sender in &senders {
        let (service, sender, group) = (Arc::clone(&svc.service), sender.clone(), group.clone());
        tasks.spawn(async move {
            let mut conv_seqs = Vec::new();
            for k in 0..GROUP_SENDS_EACH {
                let ack = crate::helpers::send(
                    &service,
                    &sender,
                    &group,
                    &format!("{sender}-{k}"),
                    "hey",
                )
                .await?;
                conv_seqs.push(ack.conv_seq);
            }
            anyhow::Ok(conv_seqs)
        });
    }
    let mut all = Vec::new();
    while let Some(conv_seqs) = tasks.join_next().await {
        let conv_seqs = conv_seqs??;
        assert!(
            strictly_increasing(&conv_seqs),
            "one sender's conv_seqs: {conv_seqs:?}"
        );
        all.extend(conv_seqs);
    }

    let total = GROUP_SENDERS as u64 * GROUP_SENDS_EACH;
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "each conv_seq once, no gap"
    );
    let history = svc.full_history(&listeners[0], &group).await?;
    let listed: Vec<Seq> = history.iter().map(|m| m.conv_seq).collect();
    assert_eq!(listed, all, "history lists every message in conv_seq order");

    for member in &members {
        let inbox = svc.sync_all(member, 0).await?;
        assert_eq!(inbox.len() as u64, total, "{member}");
        let counts = count_by_sender_id(&inbox);
        assert!(
            counts.values().all(|&n| n == 1) && counts.len() as u64 == total,
            "{member}: every message once"
        );
        // Fan-outs of different messages interleave, so only each sender's
        // own (sequential) messages keep their conv_seq order in an inbox.
        for sender in &senders {
            let theirs: Vec<Seq> = inbox
                .iter()
                .filter(|e| &e.message.from == sender)
                .map(|e| e.message.conv_seq)
                .collect();
            assert!(
                strictly_increasing(&theirs),
                "{member}: {sender}'s messages out of order: {theirs:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_dms_later_sends_do_not_read_its_conversation_from_the_store() -> anyhow::Result<()> {
    let reads = Arc::new(StoreReads::default());
    let svc = TestService::start_with(Options {
        wrap_store: Some(StoreDouble::counting_wrap(&reads)),
        ..Options::default()
    })?;
    let (alice, bob) = (user("alice"), user("bob"));

    svc.send(&alice, &bob, "c-1", "first").await?;
    assert_eq!(reads.conversations(), 1, "the first send looks it up");
    for k in 2..=5 {
        let (from, to) = if k % 2 == 0 {
            (&bob, &alice)
        } else {
            (&alice, &bob)
        };
        svc.send(from, to, &format!("c-{k}"), "again").await?;
    }
    assert_eq!(reads.conversations(), 1, "a later send looked it up again");

    let list = svc.conversations(&alice).await?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].members, [alice.clone(), bob.clone()]);
    assert_eq!(list[0].last_conv_seq, 5);
    Ok(())
}

//! A message service serving under leases: it appends to and reads only the
//! logs of shards its keeper holds under a valid lease, answers the others
//! `unavailable`, and acks no write whose lease ended while it was written.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use msg_service::ownership::{
    KeeperClock, LeaseKeeper, NO_ADDRESS, RoutedService, SHARDS, assigned_to, conversation_shard,
    inbox_shard,
};
use msg_service::{Backends, MessageApi, MessageService, ServiceConfig};
use proto::{ConvId, UserId};
use storage::{
    BusMessage, EmbeddedStore, GatewayId, InProcessBus, InProcessCache, InProcessPresence,
    MessageStore, NotifyBus, Presence,
};
use tempfile::TempDir;

use crate::faults::assert_unavailable;
use crate::helpers::{bodies, drain, send, user};
use crate::ownership::{CONFIG, ManualClock};
use crate::store_double::{Faults, StoreDouble, hold};

struct Instance {
    keeper: Arc<LeaseKeeper>,
    service: Arc<MessageService>,
    bus: Arc<InProcessBus>,
    presence: Arc<InProcessPresence>,
}

async fn instance(
    store: &EmbeddedStore,
    faults: &Arc<Faults>,
    clock: &Arc<ManualClock>,
    name: &str,
) -> anyhow::Result<Instance> {
    let dyn_clock: Arc<dyn KeeperClock> = clock.clone();
    let keeper = Arc::new(
        LeaseKeeper::register(Arc::new(store.clone()), dyn_clock, CONFIG, name, NO_ADDRESS).await?,
    );
    let store: Arc<dyn MessageStore> = Arc::new(StoreDouble {
        inner: store.clone(),
        faults: Arc::clone(faults),
        reads: Arc::default(),
    });
    let (bus, presence) = (
        Arc::new(InProcessBus::default()),
        Arc::new(InProcessPresence::default()),
    );
    let backends = Backends {
        store,
        cache: Arc::new(InProcessCache::default()),
        bus: bus.clone(),
        presence: presence.clone(),
    };
    let service = MessageService::serving(
        backends,
        ServiceConfig::default(),
        Some(Arc::clone(&keeper)),
    );
    Ok(Instance {
        keeper,
        service: Arc::new(service),
        bus,
        presence,
    })
}

/// What the instances of a test share: one store, its faults, one clock.
struct Shared {
    _dir: TempDir,
    store: EmbeddedStore,
    faults: Arc<Faults>,
    clock: Arc<ManualClock>,
}

fn shared() -> anyhow::Result<Shared> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), storage::Durability::Fsync)?;
    Ok(Shared {
        _dir: dir,
        store,
        faults: Arc::default(),
        clock: Arc::default(),
    })
}

/// Two instances, each serving its share: `a`, whose store fails by faults
/// of its own (returned), and `b`, whose store does not.
async fn a_faulty_and_b(shared: &Shared) -> anyhow::Result<(Instance, Arc<Faults>, Instance)> {
    let (store, clock) = (&shared.store, &shared.clock);
    let a_faults: Arc<Faults> = Arc::default();
    let a = instance(store, &a_faults, clock, "a").await?;
    let b = instance(store, &shared.faults, clock, "b").await?;
    for _ in 0..2 {
        a.keeper.tick().await?;
        b.keeper.tick().await?;
    }
    Ok((a, a_faults, b))
}

/// Moves the clock `secs` on in steps of a renewal period, `survivor`
/// ticking at each: it stays healthy while another instance falls silent.
async fn outlive(clock: &ManualClock, survivor: &LeaseKeeper, secs: u64) -> anyhow::Result<()> {
    let step = CONFIG.renew_every();
    let mut moved = Duration::ZERO;
    while moved < Duration::from_secs(secs) {
        clock.advance(step);
        moved += step;
        survivor.tick().await?;
    }
    Ok(())
}

/// Two users whose inboxes, and their direct conversation, are all in
/// shards `keeper` serves (or, with `served` false, none of them is).
fn pair_in(keeper: &LeaseKeeper, served: bool) -> (UserId, UserId) {
    for i in 0..100_000 {
        let (a, b) = (user(&format!("a{i}")), user(&format!("b{i}")));
        let conv = ConvId::dm(&a, &b).expect("a dm");
        let shards = [inbox_shard(&a), inbox_shard(&b), conversation_shard(&conv)];
        if shards.iter().all(|s| keeper.serves(*s).is_some() == served) {
            return (a, b);
        }
    }
    panic!("no such pair in 100,000 tries");
}

/// Two users whose logs (both inboxes, their direct conversation) all move
/// from `from` to `to` once `from` sees `to`.
fn pair_moving(from: &Instance, to: &Instance) -> (UserId, UserId) {
    let live = [
        from.keeper.instance().to_owned(),
        to.keeper.instance().to_owned(),
    ];
    let moving = assigned_to(&to.keeper.instance(), &live);
    (0..100_000)
        .map(|i| (user(&format!("a{i}")), user(&format!("b{i}"))))
        .find(|(x, y)| {
            let conv = ConvId::dm(x, y).expect("a dm");
            [inbox_shard(x), inbox_shard(y), conversation_shard(&conv)]
                .iter()
                .all(|s| moving.contains(s))
        })
        .expect("such a pair")
}

/// `a` serving every shard, then `c` registered (not yet ticked), and a
/// pair whose logs move to `c` once `a` sees it; alice has sent bob "one"
/// through `a`, which caches their logs.
async fn a_then_c_with_a_pair_moving(
    shared: &Shared,
) -> anyhow::Result<(Instance, Instance, UserId, UserId)> {
    let (store, faults, clock) = (&shared.store, &shared.faults, &shared.clock);
    let a = instance(store, faults, clock, "a").await?;
    a.keeper.tick().await?;
    let c = instance(store, faults, clock, "c").await?;
    let (alice, bob) = pair_moving(&a, &c);
    send(&a.service, &alice, &bob, "m1", "one").await?;
    Ok((a, c, alice, bob))
}

/// `a`, having seen `c`, gives c's share up; `c` takes it.
async fn hand_c_its_share(a: &Instance, c: &Instance) -> anyhow::Result<()> {
    a.keeper.tick().await?;
    c.keeper.tick().await?;
    Ok(())
}

#[tokio::test]
async fn an_instance_serves_only_the_shards_it_holds_and_only_while_its_lease_holds()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (store, faults, clock) = (&shared.store, &shared.faults, &shared.clock);
    let a = instance(store, faults, clock, "a").await?;
    let b = instance(store, faults, clock, "b").await?;
    for _ in 0..2 {
        a.keeper.tick().await?;
        b.keeper.tick().await?;
    }
    assert!(a.keeper.held_shards() > 0 && b.keeper.held_shards() > 0);
    assert_eq!(
        a.keeper.held_shards() + b.keeper.held_shards(),
        usize::from(SHARDS)
    );

    let (alice, bob) = pair_in(&a.keeper, true);
    send(&a.service, &alice, &bob, "m1", "to a").await?;
    assert_unavailable(send(&b.service, &alice, &bob, "m2", "to b").await);
    let (carol, dave) = pair_in(&a.keeper, false);
    assert_unavailable(send(&a.service, &carol, &dave, "m3", "not a's").await);
    assert_unavailable(a.service.sync(&carol, 0, 10).await);
    // A shard moves within a lease: its answer asks for a quick retry.
    let moving = a.service.sync(&carol, 0, 10).await.expect_err("not a's");
    assert_eq!(moving.retry_after_ms(), Some(250));

    // Membership changes too run only at the conversation's owner.
    let group = a
        .service
        .create_group(&alice, vec![bob.clone()], None)
        .await?;
    let shard = conversation_shard(&group.conv_id);
    let (owner, other) = if a.keeper.serves(shard).is_some() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let eve = user("eve");
    assert_unavailable(
        other
            .service
            .add_members(&alice, &group.conv_id, vec![eve.clone()])
            .await,
    );
    owner
        .service
        .add_members(&alice, &group.conv_id, vec![eve])
        .await?;

    // a stops renewing: past its lease (less the margin) it serves nothing.
    clock.advance(Duration::from_secs(8));
    assert_unavailable(send(&a.service, &alice, &bob, "m4", "lapsed").await);
    assert_unavailable(a.service.sync(&bob, 0, 10).await);
    a.keeper.tick().await?;
    send(&a.service, &alice, &bob, "m4", "renewed").await?;
    Ok(())
}

#[tokio::test]
async fn a_write_whose_lease_ends_while_it_is_written_is_not_acked() -> anyhow::Result<()> {
    let shared = shared()?;
    let (store, faults, clock) = (&shared.store, &shared.faults, &shared.clock);
    let a = instance(store, faults, clock, "a").await?;
    a.keeper.tick().await?;
    let (alice, bob) = pair_in(&a.keeper, true);
    let (logging, release) = hold(&faults.hold_message_of, &alice);
    let service = Arc::clone(&a.service);
    let (from, to) = (alice.clone(), bob.clone());
    let sending = tokio::spawn(async move { send(&service, &from, &to, "m1", "slow").await });
    logging.await?;
    clock.advance(Duration::from_secs(8)); // the lease lapses mid-write
    let _ = release.send(());
    assert_unavailable(sending.await?);
    Ok(())
}

#[tokio::test]
async fn a_shard_that_comes_back_after_another_owner_wrote_carries_on_above_its_writes()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (a, c, alice, bob) = a_then_c_with_a_pair_moving(&shared).await?;

    hand_c_its_share(&a, &c).await?;
    send(&c.service, &alice, &bob, "m2", "two").await?;
    let seen = drain(&c.service, &bob, 0, 50).await?;
    let cursor = seen.last().map_or(0, |e| e.seq);
    c.keeper.release_all().await?;
    a.keeper.tick().await?; // the share comes back, at a new epoch

    send(&a.service, &alice, &bob, "m3", "three").await?;
    let after = drain(&a.service, &bob, cursor, 50).await?;
    assert_eq!(
        bodies(&after),
        ["three"],
        "bob's client, from where it was, gets it"
    );
    let all = drain(&a.service, &bob, 0, 50).await?;
    assert_eq!(bodies(&all), ["one", "two", "three"]);
    Ok(())
}

#[tokio::test]
async fn a_fan_out_its_dead_owner_left_unfinished_is_finished_by_the_replica_that_takes_over()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (a, a_faults, b) = a_faulty_and_b(&shared).await?;
    let (alice, bob) = pair_in(&a.keeper, true);
    // Logged, then bob's append and the retry queue write fail: a send
    // nobody retries (its client gave up), its intent the only trace.
    *a_faults.inbox_of.lock().expect("faults") = Some(bob.clone());
    a_faults
        .enqueue_retry
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert_unavailable(send(&a.service, &alice, &bob, "m1", "orphan").await);

    // a dies; past its lease and the margin b takes its shards over.
    outlive(&shared.clock, &b.keeper, 12).await?;
    assert!(b.keeper.serves(inbox_shard(&bob)).is_some());
    let mut passes = b.service.retry_passes();
    let worker = b.service.start_retry_worker();
    passes.wait_for(|n| *n >= 1).await?;
    worker.stop().await;
    let got = drain(&b.service, &bob, 0, 10).await?;
    assert_eq!(bodies(&got), ["orphan"], "bob has it once");
    assert!(b.keeper.adopted().is_empty(), "looked after");
    Ok(())
}

#[tokio::test]
async fn an_inbox_write_of_a_deposed_owner_that_lands_after_the_take_over_leaves_no_late_hole()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (a, a_faults, b) = a_faulty_and_b(&shared).await?;
    let (store, clock) = (&shared.store, &shared.clock);
    let (alice, bob) = pair_in(&a.keeper, true);
    let (carol, _) = pair_in(&a.keeper, true);
    send(&a.service, &alice, &bob, "m1", "one").await?;
    // bob's append of m2 times out at a, and lands only later.
    *a_faults.inbox_late_of.lock().expect("faults") = Some(bob.clone());
    assert_unavailable(send(&a.service, &alice, &bob, "m2", "two").await);

    // a stalls past its lease; b takes its shards over and serves bob.
    outlive(clock, &b.keeper, 12).await?;
    send(&b.service, &carol, &bob, "m3", "three").await?;
    let seen = drain(&b.service, &bob, 0, 50).await?;
    let cursor = seen.last().map_or(0, |e| e.seq);

    assert_eq!(
        a_faults.land_late_writes(store).await?,
        1,
        "a's write lands"
    );
    send(&b.service, &alice, &bob, "m2", "two").await?; // alice's retry, at b
    let after = drain(&b.service, &bob, cursor, 50).await?;
    assert_eq!(
        bodies(&after),
        ["two"],
        "bob's client, from where it was, gets it"
    );
    let all = drain(&b.service, &bob, 0, 50).await?;
    assert_eq!(
        bodies(&all),
        ["one", "three", "two"],
        "once each, in that order"
    );
    Ok(())
}

#[tokio::test]
async fn the_first_entry_after_a_take_over_follows_the_visible_head_in_its_notify()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (a, c, alice, bob) = a_then_c_with_a_pair_moving(&shared).await?;
    let seen = drain(&a.service, &bob, 0, 50).await?;
    let bob_is_at = seen.last().map_or(0, |e| e.seq);

    hand_c_its_share(&a, &c).await?; // at a new epoch: seqs jump
    let gateway = GatewayId("gw-1".into());
    let mut sub = c.bus.subscribe(&gateway).await?;
    c.presence.connected(&bob, &gateway).await?;
    send(&c.service, &alice, &bob, "m2", "two").await?;

    let Ok(BusMessage::Head(note)) = sub.try_recv() else {
        anyhow::bail!("no notify for bob");
    };
    let inline = note.inline.context("the notify carries its entry")?;
    let seqs: Vec<u64> = inline.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        inline.prev, bob_is_at,
        "the entry follows what bob has (seqs {seqs:?}), so his client takes it without a sync"
    );
    let synced = drain(&c.service, &bob, bob_is_at, 50).await?;
    assert_eq!(
        synced.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs,
        "the notify's entries are exactly what a sync from there gives"
    );
    Ok(())
}

#[tokio::test]
async fn a_call_for_a_shard_on_its_way_here_is_held_until_it_arrives_not_failed()
-> anyhow::Result<()> {
    let shared = shared()?;
    let (a, c, _alice, bob) = a_then_c_with_a_pair_moving(&shared).await?;
    c.keeper.tick().await?; // bob's inbox is assigned to c; a still holds it
    assert!(c.keeper.serves(inbox_shard(&bob)).is_none());
    let routed = RoutedService::new((*c.service).clone());

    let (synced, handed_over) = tokio::join!(routed.sync(&bob, 0, 10), hand_c_its_share(&a, &c));
    handed_over?;
    let synced = synced?;
    assert_eq!(
        bodies(&synced.entries),
        ["one"],
        "answered by c once it holds bob's inbox"
    );
    Ok(())
}

//! Cases of the lease store (instance leases, shard owners and epochs),
//! run against every store that keeps leases.

use super::rand_salt;
use crate::{InstanceLease, LeaseStore, ShardOwner};

/// A shard number of this test's own, so cases can share a store.
fn own_shard() -> u16 {
    rand_salt() as u16
}

fn instance(name: &str) -> String {
    format!("{name}-{}", rand_salt())
}

/// A live lease of `instance` that ends at 1,000.
fn alive_until_1000(instance: &str) -> InstanceLease {
    InstanceLease {
        instance: instance.to_owned(),
        addr: "127.0.0.1:7000".into(),
        expires_at: 1_000,
        alive: true,
    }
}

async fn owner_of(store: &dyn LeaseStore, shard: u16) -> ShardOwner {
    let owners = store.shard_owners().await.unwrap();
    owners
        .into_iter()
        .find(|o| o.shard == shard)
        .unwrap_or(ShardOwner {
            shard,
            owner: String::new(),
            epoch: 0,
        })
}

pub async fn of_two_instances_racing_for_a_shard_one_wins_at_the_next_epoch(
    store: &dyn LeaseStore,
) {
    let shard = own_shard();
    let (a, b) = (instance("a"), instance("b"));
    let seen = owner_of(store, shard).await;
    assert_eq!((seen.owner.as_str(), seen.epoch), ("", 0), "never claimed");
    let (won_a, won_b) = tokio::join!(store.claim_shard(&seen, &a), store.claim_shard(&seen, &b));
    let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
    assert!(won_a != won_b, "exactly one claim applies: {won_a} {won_b}");
    let winner = if won_a { &a } else { &b };
    let owned = owner_of(store, shard).await;
    assert_eq!((&owned.owner, owned.epoch), (winner, 1));
    assert!(
        !store.claim_shard(&seen, winner).await.unwrap(),
        "a claim from a stale view never applies"
    );
}

pub async fn a_released_shard_keeps_its_epoch_and_the_next_claim_raises_it(store: &dyn LeaseStore) {
    let shard = own_shard();
    let (a, b) = (instance("a"), instance("b"));
    let fresh = owner_of(store, shard).await;
    assert!(store.claim_shard(&fresh, &a).await.unwrap());
    assert!(!store.release_shard(shard, &b, 1).await.unwrap(), "not b's");
    assert!(
        !store.release_shard(shard, &a, 0).await.unwrap(),
        "not at epoch 0"
    );
    assert!(store.release_shard(shard, &a, 1).await.unwrap());
    let released = owner_of(store, shard).await;
    assert_eq!((released.owner.as_str(), released.epoch), ("", 1));
    assert!(store.claim_shard(&released, &b).await.unwrap());
    let owned = owner_of(store, shard).await;
    assert_eq!((&owned.owner, owned.epoch), (&b, 2));
}

pub async fn an_ended_instance_lease_is_never_renewed(store: &dyn LeaseStore) {
    let a = instance("a");
    let lease = alive_until_1000(&a);
    assert!(
        !store.renew_instance(&a, 2_000).await.unwrap(),
        "unknown yet"
    );
    store.register_instance(&lease).await.unwrap();
    assert!(store.renew_instance(&a, 2_000).await.unwrap());
    assert!(
        !store.end_instance(&a, 1_000).await.unwrap(),
        "renewed since it was seen expired: the end does not apply"
    );
    assert!(store.end_instance(&a, 2_000).await.unwrap());
    assert!(!store.renew_instance(&a, 3_000).await.unwrap());
    let found = store.instances().await.unwrap();
    let ended = found.iter().find(|l| l.instance == a).unwrap();
    assert_eq!(
        (ended.alive, ended.expires_at, ended.addr.as_str()),
        (false, 2_000, "127.0.0.1:7000")
    );
    store.remove_instance(&a).await.unwrap();
    let found = store.instances().await.unwrap();
    assert!(found.iter().all(|l| l.instance != a));
}

pub async fn a_late_renewal_never_moves_a_lease_end_back(store: &dyn LeaseStore) {
    let a = instance("a");
    let lease = alive_until_1000(&a);
    store.register_instance(&lease).await.unwrap();
    assert!(store.renew_instance(&a, 3_000).await.unwrap());
    // A renewal sent before that one, arriving after it: the lease still
    // lasts past what it asked, so it counts as renewed, and stays at 3,000.
    assert!(store.renew_instance(&a, 2_000).await.unwrap());
    assert!(
        store.renew_instance(&a, 3_000).await.unwrap(),
        "the same end"
    );
    let found = store.instances().await.unwrap();
    let kept = found.iter().find(|l| l.instance == a).unwrap();
    assert_eq!((kept.alive, kept.expires_at), (true, 3_000));
    assert!(
        !store.end_instance(&a, 2_000).await.unwrap(),
        "the late renewal's end was never the lease's"
    );
    assert!(store.end_instance(&a, 3_000).await.unwrap());
    assert!(
        !store.renew_instance(&a, 2_000).await.unwrap(),
        "ended: not renewed, whatever it asks"
    );
    store.remove_instance(&a).await.unwrap();
}

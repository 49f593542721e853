//! The lease keeper over the embedded store's leases, on a clock the test
//! moves: shards are split between live instances, move only once released
//! or once their owner's lease ran out, and an instance whose lease another
//! one ended never serves again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_service::ownership::{KeeperClock, KeeperConfig, LeaseKeeper, SHARDS};
use storage::{Durability, EmbeddedStore, LeaseStore};
use tempfile::TempDir;

/// A clock the test moves by hand: wall and monotonic time advance together.
#[derive(Default)]
pub struct ManualClock {
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().expect("clock lock") += by;
    }
}

impl KeeperClock for ManualClock {
    fn wall_ms(&self) -> u64 {
        1_800_000_000_000 + self.monotonic().as_millis() as u64
    }

    fn monotonic(&self) -> Duration {
        *self.elapsed.lock().expect("clock lock")
    }
}

pub const CONFIG: KeeperConfig = KeeperConfig {
    lease: Duration::from_secs(9),
    drift_margin: Duration::from_secs(1),
};

struct Setup {
    store: Arc<dyn LeaseStore>,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

fn setup() -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), Durability::Fsync)?;
    Ok(Setup {
        store: Arc::new(store),
        clock: Arc::default(),
        _dir: dir,
    })
}

async fn keeper(setup: &Setup, name: &str) -> anyhow::Result<LeaseKeeper> {
    let clock: Arc<dyn KeeperClock> = setup.clock.clone();
    Ok(LeaseKeeper::register(Arc::clone(&setup.store), clock, CONFIG, name, "127.0.0.1:1").await?)
}

/// Two instances, `a` and `b`, each serving its share.
async fn split_between_two(setup: &Setup) -> anyhow::Result<(LeaseKeeper, LeaseKeeper)> {
    let (a, b) = (keeper(setup, "a").await?, keeper(setup, "b").await?);
    for _ in 0..2 {
        a.tick().await?;
        b.tick().await?;
    }
    assert!(a.serves_its_shards() && b.serves_its_shards());
    Ok((a, b))
}

/// Every shard is served by exactly one of `keepers`.
fn each_shard_served_once(keepers: &[&LeaseKeeper]) {
    for shard in 0..SHARDS {
        let serving = keepers.iter().filter(|k| k.serves(shard).is_some()).count();
        assert_eq!(serving, 1, "shard {shard} is served by {serving}");
    }
}

#[tokio::test]
async fn one_instance_serves_every_shard_only_while_its_lease_holds() -> anyhow::Result<()> {
    let setup = setup()?;
    let a = keeper(&setup, "a").await?;
    assert_eq!(a.serves(0), None, "nothing before its first tick");
    a.tick().await?;
    assert!(a.serves_its_shards());
    each_shard_served_once(&[&a]);
    assert_eq!(a.serves(7), Some(1), "the first epoch");
    // Unrenewed, it stops a drift margin before the lease ends.
    setup.clock.advance(Duration::from_secs(8));
    assert_eq!(a.serves(7), None);
    assert!(!a.serves_its_shards());
    a.tick().await?;
    assert_eq!(a.serves(7), Some(1), "renewed");
    Ok(())
}

#[tokio::test]
async fn a_new_instance_gets_its_share_once_the_old_owner_released_it() -> anyhow::Result<()> {
    let setup = setup()?;
    let a = keeper(&setup, "a").await?;
    a.tick().await?;
    let b = keeper(&setup, "b").await?;
    b.tick().await?;
    assert_eq!(b.held_shards(), 0, "a still holds them all");
    each_shard_served_once(&[&a, &b]);
    a.tick().await?;
    b.tick().await?;
    each_shard_served_once(&[&a, &b]);
    assert!(a.serves_its_shards() && b.serves_its_shards());
    let moved = (0..SHARDS).filter(|s| b.serves(*s).is_some()).count();
    assert!(moved > 300 && moved < 730, "b took {moved}");
    for shard in (0..SHARDS).filter(|s| b.serves(*s).is_some()) {
        assert_eq!(b.serves(shard), Some(2), "a new owner, a new epoch");
    }
    Ok(())
}

#[tokio::test]
async fn the_shards_of_a_silent_instance_move_after_its_lease_and_it_never_serves_again()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    let a_had = a.held_shards();
    assert!(a_had > 0);
    // a goes silent (paused); within its lease b leaves its shards alone.
    setup.clock.advance(Duration::from_secs(5));
    b.tick().await?;
    assert_eq!(b.held_shards(), usize::from(SHARDS) - a_had);
    // Past the lease and the margin, b ends a's lease and takes its shards.
    setup.clock.advance(Duration::from_secs(6));
    b.tick().await?;
    assert_eq!(b.held_shards(), usize::from(SHARDS));
    each_shard_served_once(&[&a, &b]);
    // a wakes up: its renewal fails, and it serves nothing under it, ever.
    assert!(a.tick().await.is_err());
    assert_eq!(a.held_shards(), 0);
    assert!(a.tick().await.is_err());
    each_shard_served_once(&[&a, &b]);

    // As a new incarnation it gets a share again, at new epochs.
    let old_name = a.instance();
    let before: Vec<Option<u64>> = (0..SHARDS).map(|s| b.serves(s)).collect();
    a.reincarnate().await?;
    assert_ne!(a.instance(), old_name);
    for _ in 0..2 {
        a.tick().await?;
        b.tick().await?;
    }
    assert!(a.serves_its_shards() && b.serves_its_shards());
    each_shard_served_once(&[&a, &b]);
    for shard in (0..SHARDS).filter(|s| a.serves(*s).is_some()) {
        let (now, was) = (a.serves(shard), before[usize::from(shard)]);
        assert!(now > was, "shard {shard}: epoch {now:?} after {was:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_next_tick_is_due_when_a_silent_instances_lease_runs_out_not_a_period_later()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    // Both just renewed: a renewal period away (9 s / 3).
    assert_eq!(b.next_tick_in(), Duration::from_secs(3));
    // a goes silent while b renews; at 8 s a's lease (9 s) and the margin
    // (1 s) end in 2 s, sooner than b's next renewal (at 11 s).
    for at in [3, 6, 8] {
        setup
            .clock
            .advance(Duration::from_secs(at) - setup.clock.monotonic());
        b.tick().await?;
    }
    let due = b.next_tick_in();
    assert!(
        due > Duration::from_secs(2) && due < Duration::from_millis(2_100),
        "due in {due:?}"
    );
    setup.clock.advance(due);
    b.tick().await?;
    assert_eq!(
        b.held_shards(),
        usize::from(SHARDS),
        "a's shards moved then"
    );
    drop(a);
    Ok(())
}

#[tokio::test]
async fn after_the_store_stalled_past_every_lease_no_instance_ends_another_that_renews()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    let (a_had, b_had) = (a.held_shards(), b.held_shards());
    // Nobody could renew for 12 s: every lease looks expired.
    setup.clock.advance(Duration::from_secs(12));
    a.tick().await?;
    b.tick().await?;
    assert_eq!((a.held_shards(), b.held_shards()), (a_had, b_had));
    // Both keep renewing: a lease later, still nobody was ended.
    for _ in 0..4 {
        setup.clock.advance(CONFIG.renew_every());
        a.tick().await?;
        b.tick().await?;
    }
    assert!(a.serves_its_shards() && b.serves_its_shards());
    each_shard_served_once(&[&a, &b]);
    Ok(())
}

#[tokio::test]
async fn shards_taken_from_an_earlier_owner_are_adopted_until_looked_after() -> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    // The shards' first claims had no earlier owner: nothing to look after.
    assert!(a.adopted().is_empty() && b.adopted().is_empty());
    // b hands its shards over; the owner it had may have left fan-outs
    // (it may itself have taken them from one that died): a adopts them.
    let b_had = b.held_shards();
    b.release_all().await?;
    a.tick().await?;
    assert_eq!(a.held_shards(), usize::from(SHARDS));
    let adopted = a.adopted();
    assert_eq!(adopted.len(), b_had, "b's shards, to look after");
    a.looked_after(&adopted);
    assert!(a.adopted().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_stopping_instance_hands_its_shards_over_without_waiting_for_its_lease()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    a.release_all().await?;
    assert_eq!(a.held_shards(), 0);
    b.tick().await?;
    assert_eq!(
        b.held_shards(),
        usize::from(SHARDS),
        "no wait for a's lease"
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_process_serves_at_a_higher_epoch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock: Arc<ManualClock> = Arc::default();
    let mut epochs = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn LeaseStore> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Fsync)?);
        let dyn_clock: Arc<dyn KeeperClock> = clock.clone();
        let keeper = LeaseKeeper::register(store, dyn_clock, CONFIG, "only", "-").await?;
        keeper.tick().await?;
        epochs.push(keeper.serves(3));
        // A crash: no release.
    }
    assert_eq!(epochs, [Some(1), Some(2)]);
    Ok(())
}

//! The lease keeper over the embedded store's leases, on a clock the test
//! moves: shards are split between live instances, move only once released
//! or once their owner's lease ran out, and an instance whose lease another
//! one ended never serves again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_service::ownership::{KeeperClock, KeeperConfig, LeaseKeeper, NO_ADDRESS, SHARDS};
use storage::{Durability, EmbeddedStore, InstanceLease, LeaseStore, ShardOwner};
use tempfile::TempDir;

/// Where the test clocks' wall time starts (ms since the Unix epoch).
const WALL_START_MS: u64 = 1_800_000_000_000;

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
        WALL_START_MS + self.monotonic().as_millis() as u64
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
    keeper_on(setup, name, setup.clock.clone()).await
}

/// A test clock whose wall time is `ahead_ms` off the shared one's (a
/// clock stepped, or never set right); its monotonic time is the same.
struct SteppedClock {
    clock: Arc<ManualClock>,
    ahead_ms: AtomicI64,
}

impl SteppedClock {
    fn new(clock: &Arc<ManualClock>, ahead_ms: i64) -> Arc<Self> {
        Arc::new(SteppedClock {
            clock: Arc::clone(clock),
            ahead_ms: AtomicI64::new(ahead_ms),
        })
    }

    /// Steps its wall clock by `ms` (back when negative).
    fn step(&self, ms: i64) {
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl KeeperClock for SteppedClock {
    fn wall_ms(&self) -> u64 {
        let ahead_ms = self.ahead_ms.load(Ordering::SeqCst);
        self.clock.wall_ms().saturating_add_signed(ahead_ms)
    }

    fn monotonic(&self) -> Duration {
        self.clock.monotonic()
    }
}

/// A day, in ms.
const DAY_MS: i64 = 86_400_000;

async fn keeper_on(
    setup: &Setup,
    name: &str,
    clock: Arc<dyn KeeperClock>,
) -> anyhow::Result<LeaseKeeper> {
    Ok(LeaseKeeper::register(
        Arc::clone(&setup.store),
        clock,
        CONFIG,
        name,
        &addr_of(name),
    )
    .await?)
}

/// The address the instances named `name` serve on, one per name.
fn addr_of(name: &str) -> String {
    format!("{name}.test:1")
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
async fn a_process_restarted_at_the_same_address_ends_its_predecessor_at_once() -> anyhow::Result<()>
{
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    // a dies; a new process serves at its address long before a's lease
    // (9 s) runs out: no time passes at all.
    let a_again = keeper(&setup, "a").await?;
    a_again.tick().await?;
    b.tick().await?;
    a_again.tick().await?;
    assert!(a_again.serves_its_shards() && b.serves_its_shards());
    each_shard_served_once(&[&a_again, &b]);
    assert!(a.tick().await.is_err(), "the predecessor's lease was ended");
    assert!(a.deposed());
    // An instance at another address is never taken for a predecessor.
    assert!(b.tick().await.is_ok() && !b.deposed());
    Ok(())
}

#[tokio::test]
async fn a_newcomer_rebalances_often_until_it_holds_its_share_then_once_a_period()
-> anyhow::Result<()> {
    let setup = setup()?;
    let a = keeper(&setup, "a").await?;
    a.tick().await?;
    let b = keeper(&setup, "b").await?;
    b.tick().await?;
    // b's share is still a's until a's next rebalance releases it.
    assert!(!b.serves_its_shards());
    assert!(b.next_rebalance_in() <= Duration::from_millis(200));
    a.tick().await?;
    b.tick().await?;
    assert!(b.serves_its_shards());
    assert_eq!(b.next_rebalance_in(), Duration::from_secs(3));
    Ok(())
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
    assert!(!a.serves_its_shards() && !a.holds_its_lease());
    a.tick().await?;
    assert_eq!(a.serves(7), Some(1), "renewed");
    assert!(a.holds_its_lease());
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

/// `a` on a wall clock `ahead_ms` off, `b` on the true one, each serving
/// its share.
async fn split_with_a_stepped_clock(
    setup: &Setup,
    stepped: Arc<SteppedClock>,
) -> anyhow::Result<(LeaseKeeper, LeaseKeeper)> {
    let a = keeper_on(setup, "a", stepped).await?;
    let b = keeper(setup, "b").await?;
    for _ in 0..2 {
        a.tick().await?;
        b.tick().await?;
    }
    assert!(a.serves_its_shards() && b.serves_its_shards());
    Ok((a, b))
}

#[tokio::test]
async fn a_silent_instance_whose_wall_clock_is_a_day_ahead_loses_its_shards_after_its_lease()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) =
        split_with_a_stepped_clock(&setup, SteppedClock::new(&setup.clock, DAY_MS)).await?;
    let a_had = a.held_shards();
    // a goes silent: its lease row says it holds for another day.
    setup.clock.advance(Duration::from_secs(5));
    b.tick().await?;
    assert_eq!(b.held_shards(), usize::from(SHARDS) - a_had);
    // Unrenewed for the lease and the margin (9 + 1 s) since b read it.
    setup.clock.advance(Duration::from_secs(6));
    b.tick().await?;
    assert_eq!(b.held_shards(), usize::from(SHARDS), "not a day later");
    each_shard_served_once(&[&a, &b]);
    assert!(a.tick().await.is_err() && a.deposed());
    Ok(())
}

#[tokio::test]
async fn an_instance_whose_wall_clock_is_a_day_behind_keeps_its_shards_while_it_renews()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) =
        split_with_a_stepped_clock(&setup, SteppedClock::new(&setup.clock, -DAY_MS)).await?;
    // Its rows say its lease ran out a day ago.
    both_renew_and_keep_their_shares(&setup, &a, &b).await
}

/// `a` and `b` renew for 8 periods: `b` never ends `a`'s lease, and each
/// keeps its share.
async fn both_renew_and_keep_their_shares(
    setup: &Setup,
    a: &LeaseKeeper,
    b: &LeaseKeeper,
) -> anyhow::Result<()> {
    let had = (a.held_shards(), b.held_shards());
    for _ in 0..8 {
        setup.clock.advance(CONFIG.renew_every());
        a.tick().await?;
        b.tick().await?;
    }
    assert!(!a.deposed(), "b never ended a's lease");
    assert_eq!((a.held_shards(), b.held_shards()), had);
    assert!(a.serves_its_shards() && b.serves_its_shards());
    each_shard_served_once(&[a, b]);
    Ok(())
}

#[tokio::test]
async fn an_instance_whose_wall_clock_steps_back_keeps_its_shards_while_it_renews()
-> anyhow::Result<()> {
    let setup = setup()?;
    let stepped = SteppedClock::new(&setup.clock, 0);
    let (a, b) = split_with_a_stepped_clock(&setup, Arc::clone(&stepped)).await?;
    // Its next renewals' times are below the one its lease row holds: each
    // must still change the row, or b takes it for silent.
    stepped.step(-DAY_MS);
    both_renew_and_keep_their_shares(&setup, &a, &b).await
}

#[tokio::test]
async fn the_next_tick_is_due_when_a_silent_instances_lease_runs_out_not_a_period_later()
-> anyhow::Result<()> {
    let setup = setup()?;
    let (a, b) = split_between_two(&setup).await?;
    // Both just renewed: a renewal period away (9 s / 3).
    assert_eq!(b.next_rebalance_in(), Duration::from_secs(3));
    // a goes silent while b renews; at 8 s a's lease (9 s) and the margin
    // (1 s) end in 2 s, sooner than b's next renewal (at 11 s).
    for at in [3, 6, 8] {
        setup
            .clock
            .advance(Duration::from_secs(at) - setup.clock.monotonic());
        b.tick().await?;
    }
    let due = b.next_rebalance_in();
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
    assert!(!a.handing_over());
    a.release_all().await?;
    assert_eq!(a.held_shards(), 0);
    assert!(a.handing_over() && !a.serves_its_shards());
    for shard in 0..SHARDS {
        assert!(a.route(shard).is_some(), "a sends every call to b now");
    }
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
        let keeper = LeaseKeeper::register(store, dyn_clock, CONFIG, "only", NO_ADDRESS).await?;
        keeper.tick().await?;
        epochs.push(keeper.serves(3));
        // A crash: no release.
    }
    assert_eq!(epochs, [Some(1), Some(2)]);
    Ok(())
}

/// A clock that follows tokio's (paused) time.
struct TokioClock {
    start: tokio::time::Instant,
}

impl KeeperClock for TokioClock {
    fn wall_ms(&self) -> u64 {
        WALL_START_MS + self.monotonic().as_millis() as u64
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Leases whose scans of the lease tables never answer once `hang` is set
/// (a store node that died and is not yet known dead), whose next renewal
/// never answers once `hang_a_renewal` is set, and that record when each
/// renewal that extended the lease was sent.
struct HangingScans {
    inner: Arc<dyn LeaseStore>,
    hang: AtomicBool,
    hang_a_renewal: AtomicBool,
    renewed: tokio::sync::watch::Sender<Vec<tokio::time::Instant>>,
}

impl HangingScans {
    async fn scan<T>(&self, scan: impl Future<Output = storage::Result<T>>) -> storage::Result<T> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        scan.await
    }
}

#[async_trait::async_trait]
impl LeaseStore for HangingScans {
    async fn register_instance(&self, lease: &InstanceLease) -> storage::Result<()> {
        self.inner.register_instance(lease).await
    }
    async fn renew_instance(&self, instance: &str, expires_at: u64) -> storage::Result<bool> {
        if self.hang_a_renewal.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let sent = tokio::time::Instant::now();
        let renewed = self.inner.renew_instance(instance, expires_at).await;
        if matches!(renewed, Ok(true)) {
            self.renewed.send_modify(|times| times.push(sent));
        }
        renewed
    }
    async fn end_instance(&self, instance: &str, seen: u64) -> storage::Result<bool> {
        self.inner.end_instance(instance, seen).await
    }
    async fn remove_instance(&self, instance: &str) -> storage::Result<()> {
        self.inner.remove_instance(instance).await
    }
    async fn instances(&self) -> storage::Result<Vec<InstanceLease>> {
        self.scan(self.inner.instances()).await
    }
    async fn shard_owners(&self) -> storage::Result<Vec<ShardOwner>> {
        self.scan(self.inner.shard_owners()).await
    }
    async fn claim_shard(&self, seen: &ShardOwner, owner: &str) -> storage::Result<bool> {
        self.inner.claim_shard(seen, owner).await
    }
    async fn release_shard(&self, shard: u16, owner: &str, epoch: u64) -> storage::Result<bool> {
        self.inner.release_shard(shard, owner, epoch).await
    }
}

async fn keeper_on_hanging_scans() -> anyhow::Result<(Setup, Arc<HangingScans>, Arc<LeaseKeeper>)> {
    let setup = setup()?;
    let leases = Arc::new(HangingScans {
        inner: Arc::clone(&setup.store),
        hang: AtomicBool::new(false),
        hang_a_renewal: AtomicBool::new(false),
        renewed: tokio::sync::watch::channel(Vec::new()).0,
    });
    let clock: Arc<dyn KeeperClock> = Arc::new(TokioClock {
        start: tokio::time::Instant::now(),
    });
    let store: Arc<dyn LeaseStore> = leases.clone();
    let keeper = Arc::new(LeaseKeeper::register(store, clock, CONFIG, "a", "127.0.0.1:1").await?);
    keeper.tick().await?;
    assert!(keeper.serves_its_shards());
    Ok((setup, leases, keeper))
}

/// Waits for `count` more renewals to extend the lease, checking after
/// each that the keeper still serves its shards, and that no two were sent
/// further apart than a lease holds (lease less the margin): no gap, not
/// even one that a later renewal closed.
async fn lease_holds_for(
    leases: &HangingScans,
    keeper: &LeaseKeeper,
    count: usize,
) -> anyhow::Result<()> {
    let mut renewed = leases.renewed.subscribe();
    let start = renewed.borrow_and_update().len();
    for seen in start..start + count {
        let next = renewed.wait_for(|times| times.len() > seen);
        tokio::time::timeout(CONFIG.lease, next)
            .await
            .map_err(|_| anyhow::anyhow!("no renewal answered within a lease"))??;
        assert!(keeper.serves_its_shards(), "the lease lapsed");
    }
    let holds = CONFIG.lease - CONFIG.drift_margin;
    let times = renewed.borrow().clone();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] < holds,
            "a gap of {:?}",
            pair[1] - pair[0]
        );
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_rebalance_stuck_on_the_store_does_not_let_the_lease_lapse() -> anyhow::Result<()> {
    let (_setup, leases, keeper) = keeper_on_hanging_scans().await?;
    leases.hang.store(true, Ordering::SeqCst);
    let renewals = Arc::clone(&keeper).spawn_renewals();
    // Ten renewal periods (three leases) with every rebalance stuck.
    lease_holds_for(&leases, &keeper, 10).await?;
    renewals.abort();
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_never_answers_is_sent_again_before_the_lease_lapses() -> anyhow::Result<()>
{
    let (_setup, leases, keeper) = keeper_on_hanging_scans().await?;
    leases.hang_a_renewal.store(true, Ordering::SeqCst);
    let renewals = Arc::clone(&keeper).spawn_renewals();
    lease_holds_for(&leases, &keeper, 5).await?;
    assert!(
        !leases.hang_a_renewal.load(Ordering::SeqCst),
        "no renewal hung"
    );
    renewals.abort();
    Ok(())
}

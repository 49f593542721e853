//! The lease keeper of one instance: registers it, renews its lease, claims
//! the shards assigned to it and releases those it no longer has, and says
//! whether it may serve a shard now. It serves a shard only while its own
//! lease is valid by its monotonic clock (minus a drift margin) and it holds
//! the shard; it takes a shard from another instance only once that one
//! released it, or its lease ran out (plus the margin; read as
//! [`LeaseRows`] says, so that a wall clock set wrong on either side does
//! not decide it) and was ended, so two instances never serve one shard at
//! once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use storage::{InstanceLease, LeaseStore, ShardOwner};

use super::assign::{assigned_to, owner_of};
use super::lease_rows::LeaseRows;

/// How soon a failed tick or renewal is tried again.
const RETRY_FAILED_TICK: Duration = Duration::from_millis(200);

/// How many times a deposed instance tries to register again before the
/// process gives up (and its supervisor starts a new one).
const REINCARNATION_TRIES: u32 = 20;

/// Claims and releases in flight at once during a tick (each a compare-and-set
/// on a shard's own row: they do not contend).
const CONCURRENT_CLAIMS: usize = 64;

/// How often a keeper rebalances while shards assigned to it are still
/// held by another.
const CATCH_UP_EVERY: Duration = Duration::from_millis(200);

/// The address of an instance nobody calls (tests): it ends no
/// predecessor.
pub const NO_ADDRESS: &str = "-";

/// How long after another instance's lease runs out a tick is due, so
/// that its shards move at once rather than at the next renewal.
const TICK_AFTER_EXPIRY: Duration = Duration::from_millis(20);

/// The two clocks a keeper reads.
pub trait KeeperClock: Send + Sync + 'static {
    /// Wall-clock time, in ms since the Unix epoch: what leases store.
    fn wall_ms(&self) -> u64;
    /// Monotonic time since some fixed start: what validity is measured in.
    fn monotonic(&self) -> Duration;
}

/// The system's clocks.
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl KeeperClock for SystemClock {
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// How long leases last.
#[derive(Debug, Clone, Copy)]
pub struct KeeperConfig {
    /// How long a renewal holds.
    pub lease: Duration,
    /// The most two instances' clocks may disagree: an owner stops this much
    /// before its lease ends, a taker waits this much after (for clocks
    /// that disagree more, see [`LeaseRows`]).
    pub drift_margin: Duration,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        KeeperConfig {
            lease: Duration::from_secs(10),
            drift_margin: Duration::from_secs(1),
        }
    }
}

impl KeeperConfig {
    /// How often to renew: three times per lease, so two renewals in a row
    /// may fail without the lease running out.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }
}

/// What the keeper holds now.
#[derive(Default)]
struct Held {
    /// The current incarnation's unique name in the lease table.
    instance: String,
    /// Until when (monotonic) its own lease is valid; `None`: not at all.
    valid_until: Option<Duration>,
    /// When (monotonic) its last renewal was sent: the next is due a
    /// renewal period later.
    renewed_at: Duration,
    /// Since when (monotonic) its lease has held without a gap. Another
    /// instance's lease is ended only after a whole lease of this: after a
    /// stall of the store every instance's lease looks expired, and each
    /// must first get the chance to renew.
    healthy_since: Option<Duration>,
    /// Another instance ended its lease: it never serves again.
    deposed: bool,
    /// The expiry its last renewal wrote: each writes a later one, so that
    /// others see every renewal as a change of its row.
    expires_at: u64,
    /// The lease rows as it read them: when others' leases run out.
    rows: LeaseRows,
    /// The shards it holds, with the epoch it claimed each at.
    shards: HashMap<u16, u64>,
    /// How many shards are assigned to it (by its last tick).
    assigned: usize,
    /// The live instances, as its last tick read them, and their
    /// addresses: where calls for shards it does not serve go.
    live: Vec<String>,
    addrs: HashMap<String, String>,
    /// When (monotonic) the next tick is due at the latest: the soonest a
    /// live instance's lease runs out, if before the next renewal.
    next_expiry: Option<Duration>,
    /// Shards it took over from an earlier owner, with when (wall ms):
    /// their unfinished fan-outs have not been looked for yet.
    adopted: Vec<(u16, u64)>,
    /// It released its shards to leave (see [`LeaseKeeper::release_all`]).
    leaving: bool,
}

impl Held {
    /// Whether its lease is valid at `now` (monotonic) and was not ended by
    /// another instance.
    fn lease_holds(&self, now: Duration) -> bool {
        self.valid_until.is_some_and(|until| now < until) && !self.deposed
    }
}

/// One instance's leases.
pub struct LeaseKeeper {
    store: Arc<dyn LeaseStore>,
    clock: Arc<dyn KeeperClock>,
    config: KeeperConfig,
    /// The name its incarnations are named after.
    name: String,
    addr: String,
    held: Mutex<Held>,
    /// Wakes the claiming loop when a renewal finds the lease ended.
    deposition: tokio::sync::Notify,
    /// Counts changes of the live instances (see [`Self::membership`]).
    membership: tokio::sync::watch::Sender<u64>,
}

impl LeaseKeeper {
    /// Registers a new instance named `name` plus a random incarnation,
    /// reachable at `addr`; it holds no shard until its first tick.
    pub async fn register(
        store: Arc<dyn LeaseStore>,
        clock: Arc<dyn KeeperClock>,
        config: KeeperConfig,
        name: &str,
        addr: &str,
    ) -> storage::Result<Self> {
        let keeper = LeaseKeeper {
            store,
            clock,
            config,
            name: name.to_owned(),
            addr: addr.to_owned(),
            held: Mutex::default(),
            deposition: tokio::sync::Notify::new(),
            membership: tokio::sync::watch::channel(0).0,
        };
        keeper.incarnate().await?;
        Ok(keeper)
    }

    /// Registers a new incarnation (the name plus a random suffix) and
    /// starts it afresh: no shard, a lease from now.
    async fn incarnate(&self) -> storage::Result<()> {
        let instance = format!("{}-{:016x}", self.name, rand::random::<u64>());
        let sent = self.clock.monotonic();
        let lease = InstanceLease {
            instance: instance.clone(),
            addr: self.addr.clone(),
            expires_at: self.clock.wall_ms().saturating_add(self.config.lease_ms()),
            alive: true,
        };
        self.store.register_instance(&lease).await?;
        let mut held = self.held();
        *held = Held {
            instance,
            valid_until: Some(self.valid_from(sent)),
            renewed_at: sent,
            healthy_since: Some(sent),
            expires_at: lease.expires_at,
            live: std::mem::take(&mut held.live),
            addrs: std::mem::take(&mut held.addrs),
            adopted: std::mem::take(&mut held.adopted),
            ..Held::default()
        };
        Ok(())
    }

    /// Once deposed, serves again as a new incarnation: a new instance in
    /// the lease table, whose claims raise every shard's epoch, so nothing
    /// the deposed one still had in flight can be taken for its writes.
    pub async fn reincarnate(&self) -> storage::Result<()> {
        self.incarnate().await
    }

    /// [`Self::reincarnate`], tried again with a growing pause while the
    /// store fails (a deposition often comes with store trouble); the last
    /// error after [`REINCARNATION_TRIES`].
    async fn reincarnate_with_retries(&self) -> storage::Result<()> {
        let mut pause = RETRY_FAILED_TICK;
        let mut tries = 1;
        loop {
            match self.reincarnate().await {
                Ok(()) => return Ok(()),
                Err(err) if tries >= REINCARNATION_TRIES => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, "registering again failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.config.lease);
                    tries += 1;
                }
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every change under it is a plain assignment: nothing half done.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn valid_from(&self, sent: Duration) -> Duration {
        (sent + self.config.lease).saturating_sub(self.config.drift_margin)
    }

    /// The current incarnation's unique name.
    pub fn instance(&self) -> String {
        self.held().instance.clone()
    }

    /// Where it is reached.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The epoch `shard` is served at now, if this instance may serve it.
    pub fn serves(&self, shard: u16) -> Option<u64> {
        let now = self.clock.monotonic();
        let held = self.held();
        let epoch = held.shards.get(&shard).copied();
        epoch.filter(|_| held.lease_holds(now))
    }

    /// Whether it released its shards to leave: it forwards every call
    /// to their new owners until its process stops.
    pub fn handing_over(&self) -> bool {
        self.held().leaving
    }

    /// Whether its own lease is valid now and was not ended by another.
    pub fn holds_its_lease(&self) -> bool {
        let now = self.clock.monotonic();
        self.held().lease_holds(now)
    }

    /// Whether it serves every shard assigned to it under a valid lease:
    /// what readiness means.
    pub fn serves_its_shards(&self) -> bool {
        let now = self.clock.monotonic();
        let held = self.held();
        held.lease_holds(now) && held.assigned > 0 && held.shards.len() == held.assigned
    }

    /// Where calls for `shard` go: `None` here (it serves the shard, or the
    /// shard is assigned to it, or it knows no other live instance), else
    /// the address of the instance its last tick assigned the shard to.
    /// That one may still be waiting for the old owner's lease: it answers
    /// `unavailable` meanwhile, and the caller's retry finds it serving.
    pub fn route(&self, shard: u16) -> Option<String> {
        if self.serves(shard).is_some() {
            return None;
        }
        let held = self.held();
        let owner = owner_of(shard, &held.live)?;
        if owner == &held.instance {
            return None;
        }
        // An earlier incarnation of this process at its address (a restart
        // whose old lease has not run out yet) is not another replica.
        held.addrs
            .get(owner)
            .filter(|addr| **addr != self.addr)
            .cloned()
    }

    /// How many shards it holds.
    pub fn held_shards(&self) -> usize {
        self.held().shards.len()
    }

    /// One round: renews the lease, then gives up the shards no longer
    /// assigned to it and claims those assigned and free. Fails when the
    /// store does (the lease then runs out by itself unless a later
    /// renewal renews it) and, for good, once another instance ended its
    /// lease. [`Self::spawn_renewals`] runs the two halves on loops of
    /// their own.
    pub async fn tick(&self) -> storage::Result<()> {
        self.renew().await?;
        self.rebalance().await
    }

    /// [`Self::rebalance_once`]; then, if the live instances changed or
    /// it took shards, tells [`Self::membership`]'s watchers, once the
    /// claims are done.
    async fn rebalance(&self) -> storage::Result<()> {
        let before = {
            let held = self.held();
            (held.live.clone(), held.shards.len())
        };
        let outcome = self.rebalance_once().await;
        let moved = {
            let held = self.held();
            held.live != before.0 || held.shards.len() > before.1
        };
        if moved {
            self.membership.send_modify(|changes| *changes += 1);
        }
        outcome
    }

    /// Gives up the shards no longer assigned to it and claims those
    /// assigned and free (or whose owner's lease ended).
    async fn rebalance_once(&self) -> storage::Result<()> {
        let me = self.instance();
        if self.deposed() {
            return Err(ended(&me));
        }
        let mut instances: HashMap<String, InstanceLease> = self
            .store
            .instances()
            .await?
            .into_iter()
            .map(|lease| (lease.instance.clone(), lease))
            .collect();
        self.end_predecessors(&mut instances).await?;
        let now = self.clock.monotonic();
        let runs_out = self.runs_out(&instances, now);
        let mut live: Vec<String> = runs_out
            .iter()
            .filter(|(_, at)| **at > now)
            .map(|(instance, _)| instance.clone())
            .collect();
        live.sort();
        let soonest_expiry = runs_out
            .iter()
            .filter(|(instance, at)| **at > now && **instance != me)
            .map(|(_, at)| *at)
            .min();
        {
            let mut held = self.held();
            held.next_expiry = soonest_expiry.map(|at| at + TICK_AFTER_EXPIRY);
            held.live.clone_from(&live);
            held.addrs = instances
                .values()
                .map(|lease| (lease.instance.clone(), lease.addr.clone()))
                .collect();
        }
        let assigned = assigned_to(&me, &live);
        self.give_up(&assigned).await?;
        if self.held().shards.len() == assigned.len() {
            // Holds all it is assigned (and no more): nothing to read.
            self.held().assigned = assigned.len();
            return Ok(());
        }
        let owners: HashMap<u16, ShardOwner> = self
            .store
            .shard_owners()
            .await?
            .into_iter()
            .map(|owner| (owner.shard, owner))
            .collect();
        let wanted: Vec<ShardOwner> = {
            let held = self.held();
            assigned
                .iter()
                .filter(|shard| !held.shards.contains_key(shard))
                .map(|&shard| {
                    owners.get(&shard).cloned().unwrap_or(ShardOwner {
                        shard,
                        owner: String::new(),
                        epoch: 0,
                    })
                })
                .collect()
        };
        self.held().assigned = assigned.len();
        let ended = self
            .end_expired_owners(&wanted, &instances, &runs_out, now)
            .await?;
        let claims = futures_util::stream::iter(wanted)
            .map(|seen| self.take(seen, &instances, &ended))
            .buffer_unordered(CONCURRENT_CLAIMS);
        let outcomes: Vec<storage::Result<()>> = claims.collect().await;
        outcomes.into_iter().collect()
    }

    /// Takes in the lease rows read at `now` (monotonic); when each alive
    /// instance's lease runs out unless it is renewed.
    fn runs_out(
        &self,
        instances: &HashMap<String, InstanceLease>,
        now: Duration,
    ) -> HashMap<String, Duration> {
        let (lease, margin) = (self.config.lease, self.config.drift_margin);
        let wall_ms = self.clock.wall_ms();
        let mut held = self.held();
        held.rows.read_at(instances, now, wall_ms, margin);
        instances
            .values()
            .filter(|row| row.alive)
            .filter_map(|row| {
                let at = held.rows.runs_out(&row.instance, lease, margin)?;
                Some((row.instance.clone(), at))
            })
            .collect()
    }

    async fn renew(&self) -> storage::Result<()> {
        let me = self.instance();
        if self.held().deposed {
            return Err(ended(&me));
        }
        let sent = self.clock.monotonic();
        let expires_at = {
            let mut held = self.held();
            held.renewed_at = sent;
            // Later than the last, even if the wall clock stepped back.
            let expires_at = self
                .clock
                .wall_ms()
                .saturating_add(self.config.lease_ms())
                .max(held.expires_at.saturating_add(1));
            held.expires_at = expires_at;
            expires_at
        };
        let renewed = self.store.renew_instance(&me, expires_at).await?;
        let mut held = self.held();
        if held.instance != me {
            // It registered again meanwhile: the answer is about a lease
            // it no longer uses.
            return Ok(());
        }
        if renewed {
            let gap = held.valid_until.is_none_or(|until| until <= sent);
            if gap {
                held.healthy_since = Some(sent);
            }
            held.valid_until = Some(self.valid_from(sent));
            Ok(())
        } else {
            held.deposed = true;
            held.shards.clear();
            drop(held);
            self.deposition.notify_one();
            Err(ended(&me))
        }
    }

    /// Stops serving the shards not in `assigned`, then releases them.
    async fn give_up(&self, assigned: &[u16]) -> storage::Result<()> {
        let me = self.instance();
        let leaving: Vec<(u16, u64)> = {
            let mut held = self.held();
            let leaving: Vec<(u16, u64)> = held
                .shards
                .iter()
                .filter(|(shard, _)| !assigned.contains(shard))
                .map(|(shard, epoch)| (*shard, *epoch))
                .collect();
            for (shard, _) in &leaving {
                held.shards.remove(shard);
            }
            leaving
        };
        let releases = futures_util::stream::iter(leaving)
            .map(|(shard, epoch)| self.store.release_shard(shard, &me, epoch))
            .buffer_unordered(CONCURRENT_CLAIMS);
        let outcomes: Vec<storage::Result<bool>> = releases.collect().await;
        outcomes.into_iter().try_for_each(|r| r.map(|_| ()))
    }

    /// Ends the leases of the owners of `wanted` shards that ran out by
    /// `now` (by `runs_out`), once each; the instances it ended. One that
    /// renewed meanwhile is alive after all, and keeps its shards.
    async fn end_expired_owners(
        &self,
        wanted: &[ShardOwner],
        instances: &HashMap<String, InstanceLease>,
        runs_out: &HashMap<String, Duration>,
        now: Duration,
    ) -> storage::Result<HashSet<String>> {
        if !self.healthy_for_a_lease() {
            return Ok(HashSet::new());
        }
        let me = self.instance();
        let expired: HashMap<&str, u64> = wanted
            .iter()
            .filter(|seen| seen.owner != me)
            .filter_map(|seen| instances.get(&seen.owner))
            .filter(|lease| runs_out.get(&lease.instance).is_some_and(|at| *at <= now))
            .map(|lease| (lease.instance.as_str(), lease.expires_at))
            .collect();
        let mut ended = HashSet::new();
        for (instance, expires_at) in expired {
            if self.store.end_instance(instance, expires_at).await? {
                ended.insert(instance.to_owned());
            }
        }
        Ok(ended)
    }

    /// Ends the leases of earlier incarnations at its own address, marking
    /// them ended in `instances`: a process restarted after a crash need
    /// not wait for its predecessor's lease to run out before that one's
    /// shards move. They are dead: this process listens on the address
    /// they served (a live one would still hold it; one shutting down has
    /// closed it and writes nothing more). Not for an instance without an
    /// address ([`NO_ADDRESS`], tests), nor one that advertises a wildcard
    /// (`0.0.0.0:PORT` could be any host's).
    async fn end_predecessors(
        &self,
        instances: &mut HashMap<String, InstanceLease>,
    ) -> storage::Result<()> {
        let wildcard = self
            .addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|addr| addr.ip().is_unspecified());
        if self.addr == NO_ADDRESS || wildcard {
            return Ok(());
        }
        let me = self.instance();
        let predecessors: Vec<(String, u64)> = instances
            .values()
            .filter(|lease| lease.alive && lease.addr == self.addr && lease.instance != me)
            .map(|lease| (lease.instance.clone(), lease.expires_at))
            .collect();
        for (instance, expires_at) in predecessors {
            if self.store.end_instance(&instance, expires_at).await? {
                tracing::info!(%instance, addr = %self.addr, "ended the lease of an earlier incarnation at this address");
                metrics::counter!("chat_lease_predecessors_ended_total").increment(1);
                if let Some(lease) = instances.get_mut(&instance) {
                    lease.alive = false;
                }
            }
        }
        Ok(())
    }

    /// Whether its own lease has held for a whole lease without a gap.
    fn healthy_for_a_lease(&self) -> bool {
        let now = self.clock.monotonic();
        let held = self.held();
        held.healthy_since
            .is_some_and(|since| now.saturating_sub(since) >= self.config.lease)
            && held.valid_until.is_some_and(|until| now < until)
    }

    /// Claims one assigned shard if it is free, or its owner's lease ended.
    async fn take(
        &self,
        seen: ShardOwner,
        instances: &HashMap<String, InstanceLease>,
        ended: &HashSet<String>,
    ) -> storage::Result<()> {
        let me = self.instance();
        let other_owner = !seen.owner.is_empty() && seen.owner != me;
        let owner_alive = instances.get(&seen.owner).is_some_and(|lease| lease.alive);
        if other_owner && owner_alive && !ended.contains(&seen.owner) {
            // Still its owner's: it releases it at its next tick.
            return Ok(());
        }
        let epoch = if seen.owner == me {
            // A claim of ours that reported a failure but landed.
            seen.epoch
        } else if self.store.claim_shard(&seen, &me).await? {
            seen.epoch + 1
        } else {
            return Ok(());
        };
        // On the clock intents are written by, which recovery compares.
        let wall = crate::clock::now_ms();
        let mut held = self.held();
        held.shards.insert(seen.shard, epoch);
        // It had an owner before, whose fan-outs may be half done: one that
        // died, or one that released it while it was still looking after
        // fan-outs it had itself taken over (released shards count too).
        if epoch > 1 {
            held.adopted.push((seen.shard, wall));
        }
        Ok(())
    }

    /// How long until the next renewal is due: a renewal period after the
    /// last one was sent.
    fn next_renewal_in(&self) -> Duration {
        let due = self.held().renewed_at + self.config.renew_every();
        due.saturating_sub(self.clock.monotonic())
    }

    /// How long until the next rebalance is due: a renewal period, or less
    /// when another instance's lease runs out sooner (its shards move then),
    /// or [`CATCH_UP_EVERY`] while shards assigned to it are still held
    /// elsewhere (their owner releases them at its next rebalance, and
    /// they should not then wait a whole period unserved).
    pub fn next_rebalance_in(&self) -> Duration {
        let held = self.held();
        let mut period = self.config.renew_every();
        if held.shards.len() < held.assigned {
            period = period.min(CATCH_UP_EVERY);
        }
        let now = self.clock.monotonic();
        held.next_expiry
            .map_or(period, |expiry| expiry.saturating_sub(now).min(period))
    }

    /// How long a shard may go unserved while it moves between two live
    /// instances (one joined, or one leaves with a release): the old owner
    /// gives it up at its next rebalance, within a renewal period, and the
    /// new one claims it at its next catch-up. Calls routed to the new
    /// owner meanwhile are worth holding this long rather than failing.
    pub fn handover_time(&self) -> Duration {
        self.config.renew_every() + 2 * CATCH_UP_EVERY
    }

    /// The shards taken over from an earlier owner (one that died may have
    /// left fan-outs unfinished), each with when it was taken (wall ms),
    /// not yet marked [`Self::looked_after`].
    pub fn adopted(&self) -> Vec<(u16, u64)> {
        self.held().adopted.clone()
    }

    /// Marks the fan-outs of `adopted` (from [`Self::adopted`]) finished.
    pub fn looked_after(&self, adopted: &[(u16, u64)]) {
        self.held().adopted.retain(|shard| !adopted.contains(shard));
    }

    /// Changes whenever a rebalance found the live instances changed (one
    /// died, left or joined) or took shards: shards moved, so calls that
    /// failed for want of their owner may now succeed.
    pub fn membership(&self) -> tokio::sync::watch::Receiver<u64> {
        self.membership.subscribe()
    }

    /// Whether another instance ended this incarnation's lease: it never
    /// serves again under it (see [`Self::reincarnate`]).
    pub fn deposed(&self) -> bool {
        self.held().deposed
    }

    /// Renews the lease and rebalances the shards on two loops of one
    /// task (aborting it stops both), each every
    /// [`KeeperConfig::renew_every`]: a rebalance that waits on a store
    /// node that just died never delays a renewal. Once another instance
    /// ended its lease (it was paused or cut off past it), it registers a
    /// new incarnation and carries on; it returns only when that fails (the
    /// process should stop).
    pub fn spawn_renewals(self: Arc<Self>) -> tokio::task::JoinHandle<storage::Error> {
        tokio::spawn(async move {
            tokio::select! {
                never = self.renew_forever() => match never {},
                err = self.rebalance_forever() => err,
            }
        })
    }

    /// Renews every period. A renewal not answered within half a period is
    /// abandoned and sent again at once (the driver picks a store node that
    /// answers now); only an answered one extends the lease, so with three
    /// renewals per lease a node that died mid-call costs no gap. A failed
    /// one is tried again after [`RETRY_FAILED_TICK`].
    async fn renew_forever(&self) -> std::convert::Infallible {
        let patience = self.config.renew_every() / 2;
        let mut wait = self.next_renewal_in();
        loop {
            tokio::time::sleep(wait).await;
            if self.deposed() {
                // The rebalance loop registers it again.
                wait = RETRY_FAILED_TICK;
                continue;
            }
            wait = match tokio::time::timeout(patience, self.renew()).await {
                Ok(Ok(())) => self.next_renewal_in(),
                Ok(Err(_)) if self.deposed() => RETRY_FAILED_TICK,
                Ok(Err(err)) => {
                    renewal_failed(&err);
                    RETRY_FAILED_TICK
                }
                Err(_) => {
                    renewal_failed(&format!("no answer within {patience:?}"));
                    Duration::ZERO
                }
            };
        }
    }

    /// Rebalances every period (sooner when another instance's lease runs
    /// out, or this one's was ended); a failed rebalance is logged and tried
    /// again after [`RETRY_FAILED_TICK`], not a whole period later.
    async fn rebalance_forever(&self) -> storage::Error {
        let mut wait = self.next_rebalance_in();
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.deposition.notified() => {}
            }
            let outcome = self.rebalance().await;
            metrics::gauge!("chat_shards_held").set(self.held_shards() as f64);
            wait = match outcome {
                Ok(()) => self.next_rebalance_in(),
                Err(err) if self.deposed() => {
                    tracing::warn!(error = %err, "this instance lost its lease; serving again as a new incarnation");
                    metrics::counter!("chat_lease_reincarnations_total").increment(1);
                    if let Err(err) = self.reincarnate_with_retries().await {
                        return err;
                    }
                    tracing::info!(instance = %self.instance(), "registered again");
                    Duration::ZERO
                }
                Err(err) => {
                    metrics::counter!("chat_lease_tick_failures_total").increment(1);
                    tracing::warn!(error = ?err, "a rebalance of the shards failed; trying again shortly");
                    RETRY_FAILED_TICK.min(self.config.renew_every())
                }
            };
        }
    }

    /// Stops serving, releases every shard and removes the instance's
    /// lease, so that the next owners need not wait for it to expire. From
    /// then on it routes every call to the others. Stop the renewals first
    /// (a rebalance would claim the shards again).
    pub async fn release_all(&self) -> storage::Result<()> {
        {
            let mut held = self.held();
            let me = held.instance.clone();
            held.live.retain(|instance| *instance != me);
            held.assigned = 0;
            held.leaving = true;
        }
        self.membership.send_modify(|changes| *changes += 1);
        self.give_up(&[]).await?;
        self.store.remove_instance(&self.instance()).await
    }
}

fn renewal_failed(reason: &dyn std::fmt::Display) {
    metrics::counter!("chat_lease_renewal_failures_total").increment(1);
    tracing::warn!(%reason, "a lease renewal failed; sending it again");
}

fn ended(instance: &str) -> storage::Error {
    storage::Error::Conflict(format!(
        "the lease of {instance} was ended by another instance"
    ))
}

//! The durable store on ScyllaDB or Cassandra: the `MessageStore` trait over
//! prepared statements, every request in a bulkhead slot of its class.
//!
//! Durability: a write returns once the replicas its consistency level asks
//! for have it in their commit logs, so every write is durable when it
//! returns. Appends return `WriteTicket::default()` (durable already), and
//! `durable` and `flush` have nothing to wait for.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use ::scylla::policies::timestamp_generator::{MonotonicTimestampGenerator, TimestampGenerator};
use ::scylla::response::query_result::QueryResult;
use ::scylla::response::{PagingState, PagingStateResponse};
use ::scylla::serialize::batch::BatchValues;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::Batch;
use ::scylla::statement::prepared::PreparedStatement;
use std::ops::ControlFlow;
use std::time::Duration;

use super::bulkhead::{Bulkhead, Class};
use super::config::{Keyspace, ScyllaOptions};
use super::rows;
use super::statements::Statements;
use super::{errors, guards, schema};
use crate::{Error, Result};

/// Added to the driver's request timeout for the bulkhead's own deadline: it
/// only ends requests the driver failed to end.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// The Scylla store; cheap to clone (clones share the session).
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    keyspace: Keyspace,
    statements: Statements,
    bulkhead: Bulkhead,
    /// Seconds a dedup record lives.
    dedup_ttl: i32,
    /// The session's client-side timestamps, also taken by `stamp`.
    clock: Arc<MonotonicTimestampGenerator>,
    /// Warnings the cluster sent back with responses (a batch over the
    /// size warning threshold, too many tombstones read).
    server_warnings: AtomicU64,
}

/// A client-side write timestamp (microseconds), see `ScyllaStore::stamp`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(i64);

fn is_read(statement: &PreparedStatement) -> bool {
    statement.get_statement().trim_start().starts_with("SELECT")
}

/// How long a read or plain write waits for its coordinator before the same
/// request also goes to the next node (once): a node that hangs (paused,
/// or stuck in a GC) holds up a request for this long, not for the
/// request timeout. Well above a healthy request's latency, so that a
/// loaded cluster is not sent every request twice.
const HEDGE_AFTER: Duration = Duration::from_millis(250);

/// CQL keepalives on every connection: a node that stops answering them
/// for `KEEPALIVE_TIMEOUT` has its connections closed, and requests stop
/// going to it (the driver reconnects in the background).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

async fn open_session(
    options: &ScyllaOptions,
    clock: Arc<MonotonicTimestampGenerator>,
) -> Result<Session> {
    let hedge = SimpleSpeculativeExecutionPolicy {
        max_retry_count: 1,
        retry_interval: HEDGE_AFTER,
    };
    let profile = ExecutionProfile::builder()
        .consistency(options.consistency.driver())
        .serial_consistency(Some(options.consistency.serial()))
        .request_timeout(Some(options.request_timeout))
        // Idempotent requests only: reads (serial reads of a ceiling too: a
        // second Paxos round at most delays the first) and plain writes,
        // each stamped once (see `stamp`). Never an LWT.
        .speculative_execution_policy(Some(Arc::new(hedge)))
        .build();
    // Client-side timestamps, rising within this process: of two writes to
    // one row from here (a member removed, then added back), the later one
    // wins even if the coordinators' clocks disagree.
    SessionBuilder::new()
        .known_nodes(&options.nodes)
        .timestamp_generator(clock)
        .connection_timeout(options.connect_timeout)
        .keepalive_interval(KEEPALIVE_INTERVAL)
        .keepalive_timeout(KEEPALIVE_TIMEOUT)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(errors::new_session)
}

impl ScyllaStore {
    /// Connects to the cluster, creates the keyspace and tables that are
    /// missing (see `deploy/scylla/schema.cql`), and prepares every statement.
    /// Refuses (`Error::Rejected`), before creating anything, a consistency
    /// level below a quorum unless `allow_weak_consistency`, and a keyspace
    /// with fewer replicas than `min_replication_factor`.
    pub async fn connect(options: &ScyllaOptions) -> Result<Self> {
        let dedup_ttl = options
            .dedup_ttl_secs()
            .map_err(|err| Error::Rejected(Box::new(err)))?;
        guards::check_consistency(options).map_err(|err| Error::Rejected(Box::new(err)))?;
        let clock = Arc::new(MonotonicTimestampGenerator::new());
        let session = open_session(options, Arc::clone(&clock)).await?;
        guards::check_replication(&session, options).await?;
        schema::ensure(&session, &options.keyspace, &options.replication).await?;
        let statements =
            Statements::prepare(&session, &options.keyspace, options.consistency).await?;
        let bulkhead = Bulkhead::new(options.limits, options.request_timeout + DEADLINE_GRACE);
        tracing::info!(keyspace = %options.keyspace, nodes = ?options.nodes, "Scylla store ready");
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                keyspace: options.keyspace.clone(),
                statements,
                bulkhead,
                dedup_ttl,
                clock,
                server_warnings: AtomicU64::new(0),
            }),
        })
    }

    /// Drops a keyspace and everything in it, through a session of its own
    /// (tests and tear-downs; never called by the service).
    pub async fn drop_keyspace(options: &ScyllaOptions) -> Result<()> {
        let clock = Arc::new(MonotonicTimestampGenerator::new());
        let session = open_session(options, clock).await?;
        schema::drop_keyspace(&session, &options.keyspace).await
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &Keyspace {
        &self.inner.keyspace
    }

    /// How many warnings the cluster has sent back with this store's
    /// responses so far (the driver also logs each one). A maximum-size
    /// message adds none: see `bodies`.
    pub fn server_warnings(&self) -> u64 {
        self.inner.server_warnings.load(Ordering::Relaxed)
    }

    fn count_warnings(&self, result: &QueryResult) {
        let warnings = result.warnings().count() as u64;
        self.inner
            .server_warnings
            .fetch_add(warnings, Ordering::Relaxed);
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.inner.statements
    }

    pub(crate) fn dedup_ttl(&self) -> i32 {
        self.inner.dedup_ttl
    }

    /// A client timestamp taken now, for the writes of one call.
    ///
    /// Why a call takes its own rather than leaving it to the driver: the
    /// driver takes one per attempt, and an attempt that starts late (a
    /// retry, a hedge, after this process was paused) would carry a
    /// timestamp newer than a fence's delete made meanwhile, and outlive
    /// it. An append (`append_message`, `append_inbox`) takes one when it
    /// starts, right after its caller checked its lease, and every row and
    /// every attempt of it carries that one.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp(self.inner.clock.next_timestamp())
    }

    /// `statement` as this request sends it: an idempotent write stamped
    /// with `stamp`. Reads, and LWTs (not idempotent: never hedged, retried
    /// only after errors that say they did not run; Paxos orders them), go
    /// as they are.
    fn stamped<'s>(statement: &'s PreparedStatement, stamp: Stamp) -> Cow<'s, PreparedStatement> {
        if !statement.get_is_idempotent() || is_read(statement) {
            return Cow::Borrowed(statement);
        }
        let mut stamped = statement.clone();
        stamped.set_timestamp(Some(stamp.0));
        Cow::Owned(stamped)
    }

    /// Runs one prepared statement in a slot of `class`, a write stamped now.
    pub(crate) async fn execute(
        &self,
        class: Class,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult> {
        self.execute_at(self.stamp(), class, statement, values)
            .await
    }

    /// Runs one prepared statement in a slot of `class`, a write stamped
    /// with `stamp`.
    pub(crate) async fn execute_at(
        &self,
        stamp: Stamp,
        class: Class,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult> {
        let session = &self.inner.session;
        let statement = Self::stamped(statement, stamp);
        let result = self
            .inner
            .bulkhead
            .run(class, async {
                session
                    .execute_unpaged(&statement, values)
                    .await
                    .map_err(errors::execution)
            })
            .await?;
        self.count_warnings(&result);
        Ok(result)
    }

    /// Runs one batch of writes in a write slot.
    pub(crate) async fn batch(&self, batch: &Batch, values: impl BatchValues) -> Result<()> {
        let session = &self.inner.session;
        let mut batch = batch.clone();
        batch.set_timestamp(Some(self.stamp().0));
        let result = self
            .inner
            .bulkhead
            .run(Class::Write, async {
                session
                    .batch(&batch, values)
                    .await
                    .map_err(errors::execution)
            })
            .await?;
        self.count_warnings(&result);
        Ok(())
    }

    /// The rows of a select bounded by its `LIMIT` or its key.
    pub(crate) async fn select<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>>
    where
        R: for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        rows::all(self.execute(Class::Read, statement, values).await?)
    }

    /// The first row of a select, if any.
    pub(crate) async fn select_one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>>
    where
        R: for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        Ok(self.select(statement, values).await?.into_iter().next())
    }

    /// Every row of a select with no `LIMIT` (a member list), page by page,
    /// each page in a read slot of its own.
    pub(crate) async fn select_all<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>>
    where
        R: for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let session = &self.inner.session;
        let mut all = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next): (QueryResult, PagingStateResponse) = self
                .inner
                .bulkhead
                .run(Class::Read, async {
                    session
                        .execute_single_page(statement, &values, paging)
                        .await
                        .map_err(errors::execution)
                })
                .await?;
            all.extend(rows::all::<R>(result)?);
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => return Ok(all),
                ControlFlow::Continue(state) => paging = state,
            }
        }
    }
}

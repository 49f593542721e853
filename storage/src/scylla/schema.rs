//! The CQL schema, versioned: the keyspace, the tables of version 1, the
//! migrations after it, and the start-up step that creates what is missing
//! and records the version. `deploy/scylla/schema.cql` is rendered from the
//! same text (a test checks that they agree), for operators who create the
//! schema by hand.
//!
//! Clustering orders: `inbox` is read oldest first (a sync asks for the
//! entries after a seq), so it is ascending; `messages` is read newest first
//! (opening a conversation, scrolling back), so it is descending. Either
//! table also serves the other direction within one partition through
//! `ORDER BY`, which reads the partition backwards: the `inbox` head and
//! history's "after" pages do that, over partitions bounded by the bucket.
//! The `*_buckets` tables list the buckets that hold rows, newest first, so
//! a read that crosses buckets visits exactly those, and finding a head is
//! one row of each.

use ::scylla::client::session::Session;
use ::scylla::statement::unprepared::Statement;
use std::time::Duration;

use super::config::{Keyspace, Replication};
use super::errors;
use crate::{Error, Result};

/// The version this code writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 7;

/// The component name of the version row.
const COMPONENT: &str = "store";

/// DDL can wait for the whole cluster to agree on the schema.
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// The tables of version 1, `{ks}` standing for the keyspace. Never edited
/// once released: a change is a migration below, so a keyspace made by any
/// version reaches the same shape.
pub(crate) const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS {ks}.schema_version (
    component text,
    version int,
    applied_at timestamp,
    PRIMARY KEY ((component))
)",
    "CREATE TABLE IF NOT EXISTS {ks}.conversations (
    conv_id text,
    kind text,
    title text,
    created_at bigint,
    PRIMARY KEY ((conv_id))
)",
    "CREATE TABLE IF NOT EXISTS {ks}.members (
    conv_id text,
    user_id text,
    PRIMARY KEY ((conv_id), user_id)
)",
    "CREATE TABLE IF NOT EXISTS {ks}.user_convs (
    user_id text,
    conv_id text,
    PRIMARY KEY ((user_id), conv_id)
)",
    "CREATE TABLE IF NOT EXISTS {ks}.messages (
    conv_id text,
    bucket bigint,
    conv_seq bigint,
    sender text,
    client_msg_id text,
    kind text,
    body text,
    ts bigint,
    PRIMARY KEY ((conv_id, bucket), conv_seq)
) WITH CLUSTERING ORDER BY (conv_seq DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.message_buckets (
    conv_id text,
    bucket bigint,
    PRIMARY KEY ((conv_id), bucket)
) WITH CLUSTERING ORDER BY (bucket DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.inbox (
    user_id text,
    bucket bigint,
    seq bigint,
    conv_id text,
    conv_seq bigint,
    sender text,
    client_msg_id text,
    kind text,
    body text,
    ts bigint,
    PRIMARY KEY ((user_id, bucket), seq)
) WITH CLUSTERING ORDER BY (seq ASC)",
    "CREATE TABLE IF NOT EXISTS {ks}.inbox_buckets (
    user_id text,
    bucket bigint,
    PRIMARY KEY ((user_id), bucket)
) WITH CLUSTERING ORDER BY (bucket DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.inbox_index (
    user_id text,
    conv_id text,
    bucket bigint,
    conv_seq bigint,
    seq bigint,
    PRIMARY KEY ((user_id, conv_id, bucket), conv_seq)
)",
    "CREATE TABLE IF NOT EXISTS {ks}.seq_ceilings (
    section int,
    alloc_key text,
    max_seq bigint,
    PRIMARY KEY ((section), alloc_key)
)",
    "CREATE TABLE IF NOT EXISTS {ks}.dedup (
    user_id text,
    client_msg_id text,
    conv_id text,
    conv_seq bigint,
    PRIMARY KEY ((user_id, client_msg_id))
)",
];

/// `(version, statements)`: what moves a keyspace from `version - 1` to
/// `version`, in order, from 2 up to [`SCHEMA_VERSION`].
///
/// Version 2: the fan-out retry queue and its worker's checkpoint. The
/// queue is one partition (`shard` is always 0) so a pass reads it in key
/// order; it holds only fan-outs that failed part-way, few and short-lived,
/// and its deletes leave tombstones that a pass skips over: fine while the
/// queue stays small, which `chat_dlq_depth` alerts on.
///
/// Version 3: `message_bodies`, the bodies too large for a batch (see
/// `bodies`), keyed by the message's identity, one partition per bucket of
/// a conversation like `messages`.
///
/// Version 4: `dedup.members`, the members a message was sent to (a retry
/// goes to them, no more); `fanout_intents`, each message's fan-out intent,
/// written with it and never deleted (no tombstone per send): partitions
/// by minute and shard, expired by TTL, read only from the saved
/// `fanout_watermark` on, at start (see `intents`). The retry queue is now
/// spread over 8 shards (`shard` from the conversation id), read merged.
///
/// Version 5: ownership (instance leases, shard owners, log fences).
///
/// Version 6 (protocol 1.1): `ref_seq`, the message a recall or an edit
/// names, and `recalled`, set on a recalled message, in `messages` and
/// `inbox` (null reads as none and false).
///
/// Version 7 (protocol 1.1): `read_markers`, one row per member who moved
/// theirs, written with the marker as its write timestamp (`USING
/// TIMESTAMP`), so the highest marker wins whatever order writes land in,
/// without a compare-and-set.
pub(crate) const MIGRATIONS: &[(i32, &[&str])] = &[
    (
        2,
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.fanout_retries (
    shard int,
    enqueued_at bigint,
    conv_id text,
    conv_seq bigint,
    members list<text>,
    attempts int,
    not_before bigint,
    PRIMARY KEY ((shard), enqueued_at, conv_id, conv_seq)
)",
            "CREATE TABLE IF NOT EXISTS {ks}.fanout_retry_checkpoint (
    worker text,
    enqueued_at bigint,
    conv_id text,
    conv_seq bigint,
    PRIMARY KEY ((worker))
)",
        ],
    ),
    (
        3,
        &["CREATE TABLE IF NOT EXISTS {ks}.message_bodies (
    conv_id text,
    bucket bigint,
    conv_seq bigint,
    sender text,
    client_msg_id text,
    body text,
    PRIMARY KEY ((conv_id, bucket), conv_seq, sender, client_msg_id)
)"],
    ),
    (
        4,
        &[
            "ALTER TABLE {ks}.dedup ADD members list<text>",
            "CREATE TABLE IF NOT EXISTS {ks}.fanout_intents (
    minute bigint,
    shard int,
    written_at bigint,
    conv_id text,
    conv_seq bigint,
    members list<text>,
    PRIMARY KEY ((minute, shard), written_at, conv_id, conv_seq)
) WITH default_time_to_live = 172800
  AND gc_grace_seconds = 3600
  AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 1}",
            "CREATE TABLE IF NOT EXISTS {ks}.fanout_watermark (
    owner text,
    at bigint,
    PRIMARY KEY ((owner))
)",
        ],
    ),
    (
        5,
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.instance_leases (
    instance text,
    addr text,
    expires_at bigint,
    alive boolean,
    PRIMARY KEY ((instance))
)",
            "CREATE TABLE IF NOT EXISTS {ks}.shard_owners (
    shard int,
    owner text,
    epoch bigint,
    PRIMARY KEY ((shard))
)",
            "CREATE TABLE IF NOT EXISTS {ks}.log_fences (
    kind text,
    log_id text,
    writer text,
    PRIMARY KEY ((kind, log_id))
)",
        ],
    ),
    (
        6,
        &[
            "ALTER TABLE {ks}.messages ADD ref_seq bigint",
            "ALTER TABLE {ks}.messages ADD recalled boolean",
            "ALTER TABLE {ks}.inbox ADD ref_seq bigint",
            "ALTER TABLE {ks}.inbox ADD recalled boolean",
        ],
    ),
    (
        7,
        &["CREATE TABLE IF NOT EXISTS {ks}.read_markers (
    conv_id text,
    user_id text,
    up_to bigint,
    PRIMARY KEY ((conv_id), user_id)
)"],
    ),
];

/// Whether a migration's DDL failed only because it ran before (a start
/// that stopped before recording its version): `ALTER TABLE .. ADD` has
/// no `IF NOT EXISTS` in Cassandra 3.11.
fn ran_before(text: &str, err: &Error) -> bool {
    text.starts_with("ALTER TABLE")
        && matches!(err, Error::Rejected(_))
        && err
            .to_string()
            .contains("conflicts with an existing column")
}

const READ_VERSION: &str = "SELECT version FROM {ks}.schema_version WHERE component = ?";
const WRITE_VERSION: &str = "INSERT INTO {ks}.schema_version (component, version, applied_at) \
     VALUES (?, ?, toTimestamp(now()))";

pub(crate) fn in_keyspace(text: &str, keyspace: &Keyspace) -> String {
    text.replace("{ks}", keyspace.as_str())
}

/// `CREATE KEYSPACE`. `without_tablets` adds ScyllaDB 6+'s option that keeps
/// the keyspace on vnodes: LWTs (the seq ceilings) do not run on tablets.
pub(crate) fn keyspace_statement(
    keyspace: &Keyspace,
    replication: &Replication,
    without_tablets: bool,
) -> String {
    let tablets = if without_tablets {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}{tablets}",
        replication.cql_map()
    )
}

/// Every table statement of the current version, in order.
pub(crate) fn table_statements(keyspace: &Keyspace) -> Vec<String> {
    let migrations = MIGRATIONS
        .iter()
        .flat_map(|(_, statements)| statements.iter());
    TABLES
        .iter()
        .chain(migrations)
        .map(|text| in_keyspace(text, keyspace))
        .collect()
}

/// The whole schema as a cqlsh script (what `deploy/scylla/schema.cql` holds
/// for keyspace `chat` on one node).
pub fn script(keyspace: &Keyspace, replication: &Replication) -> String {
    let mut out = String::from(
        "-- The chat store's schema (ScyllaDB 5+, Cassandra 3.11+), rendered from\n\
         -- storage/src/scylla/schema.rs, which msg-service runs at start-up\n\
         -- (create if missing). A test checks that the two agree; to rewrite this\n\
         -- file: UPDATE_SCHEMA_CQL=1 cargo test -p storage schema_cql\n\
         --\n\
         -- Production: replace the keyspace's replication with\n\
         --   {'class': 'NetworkTopologyStrategy', 'dc1': 3}\n\
         -- On ScyllaDB 6+ add  AND tablets = {'enabled': false}  (the seq ceilings\n\
         -- use lightweight transactions, which tablets did not run); msg-service\n\
         -- does, and leaves it out where the option is unknown (Cassandra, Scylla 5).\n\n",
    );
    out.push_str(&keyspace_statement(keyspace, replication, false));
    out.push_str(";\n");
    for statement in table_statements(keyspace) {
        out.push('\n');
        out.push_str(&statement);
        out.push_str(";\n");
    }
    out.push_str(&format!(
        "\nINSERT INTO {keyspace}.schema_version (component, version, applied_at)\n    \
         VALUES ('{COMPONENT}', {SCHEMA_VERSION}, toTimestamp(now()));\n"
    ));
    out
}

async fn run_ddl(session: &Session, text: String) -> Result<()> {
    let mut statement = Statement::new(text);
    statement.set_request_timeout(Some(DDL_TIMEOUT));
    session
        .query_unpaged(statement, &[])
        .await
        .map_err(errors::execution)?;
    Ok(())
}

async fn create_keyspace(
    session: &Session,
    keyspace: &Keyspace,
    replication: &Replication,
) -> Result<()> {
    // ScyllaDB 6+ puts new keyspaces on tablets by default, where LWTs did
    // not run (up to 2025.x at least): ask for vnodes. Cassandra and
    // ScyllaDB 5 know no `tablets` option and refuse it: then ask without.
    match run_ddl(session, keyspace_statement(keyspace, replication, true)).await {
        Err(Error::Rejected(err)) => {
            tracing::debug!(%err, "keyspace option `tablets` refused; creating without it");
            run_ddl(session, keyspace_statement(keyspace, replication, false)).await
        }
        other => other,
    }
}

async fn read_version(session: &Session, keyspace: &Keyspace) -> Result<Option<i32>> {
    let statement = session
        .prepare(in_keyspace(READ_VERSION, keyspace))
        .await
        .map_err(errors::prepare)?;
    let result = session
        .execute_unpaged(&statement, (COMPONENT,))
        .await
        .map_err(errors::execution)?;
    let rows = result.into_rows_result().map_err(errors::rows)?;
    let row = rows.maybe_first_row::<(i32,)>().map_err(errors::rows)?;
    Ok(row.map(|(version,)| version))
}

async fn write_version(session: &Session, keyspace: &Keyspace) -> Result<()> {
    let statement = session
        .prepare(in_keyspace(WRITE_VERSION, keyspace))
        .await
        .map_err(errors::prepare)?;
    session
        .execute_unpaged(&statement, (COMPONENT, SCHEMA_VERSION))
        .await
        .map_err(errors::execution)?;
    Ok(())
}

/// Creates the keyspace and tables that are missing (the keyspace's
/// replication is only set when it is created: operators own it after),
/// applies the migrations above the recorded version, records the version.
/// Refuses a keyspace whose version is newer than this code.
pub(crate) async fn ensure(
    session: &Session,
    keyspace: &Keyspace,
    replication: &Replication,
) -> Result<()> {
    create_keyspace(session, keyspace, replication).await?;
    for text in TABLES {
        run_ddl(session, in_keyspace(text, keyspace)).await?;
    }
    let found = read_version(session, keyspace).await?.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(Error::Rejected(
            format!(
                "keyspace {keyspace} has schema version {found}; this build knows up to {SCHEMA_VERSION}"
            )
            .into(),
        ));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tracing::info!(%keyspace, version, "migrating the Scylla schema");
        for text in *statements {
            match run_ddl(session, in_keyspace(text, keyspace)).await {
                Err(err) if ran_before(text, &err) => tracing::info!(%err, "already applied"),
                other => other?,
            }
        }
    }
    if found < SCHEMA_VERSION {
        write_version(session, keyspace).await?;
    }
    Ok(())
}

/// Drops a keyspace and everything in it.
pub(crate) async fn drop_keyspace(session: &Session, keyspace: &Keyspace) -> Result<()> {
    run_ddl(session, format!("DROP KEYSPACE IF EXISTS {keyspace}")).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use super::*;

    fn chat() -> Keyspace {
        Keyspace::default()
    }

    fn deploy_file() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/scylla/schema.cql")
    }

    #[test]
    fn schema_cql_in_deploy_is_what_the_code_creates() {
        let rendered = script(&chat(), &Replication::Simple { factor: 1 });
        if std::env::var_os("UPDATE_SCHEMA_CQL").is_some() {
            std::fs::write(deploy_file(), &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(deploy_file()).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "deploy/scylla/schema.cql differs from storage/src/scylla/schema.rs; \
             rewrite it with UPDATE_SCHEMA_CQL=1 cargo test -p storage schema_cql"
        );
    }

    #[test]
    fn a_keyspace_asks_scylla_to_stay_off_tablets_or_says_nothing_of_them() {
        let nts: Replication = "NetworkTopologyStrategy:dc1=3".parse().unwrap();
        assert_eq!(
            keyspace_statement(&chat(), &nts, true),
            "CREATE KEYSPACE IF NOT EXISTS chat WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3} AND tablets = {'enabled': false}"
        );
        assert!(!keyspace_statement(&chat(), &nts, false).contains("tablets"));
    }

    #[test]
    fn every_statement_names_the_keyspace_it_is_given() {
        let ks: Keyspace = "chat_test_1".parse().unwrap();
        for statement in table_statements(&ks) {
            assert!(statement.contains("chat_test_1."), "{statement}");
            assert!(!statement.contains("{ks}"), "{statement}");
        }
    }

    #[test]
    fn migrations_follow_version_one_in_order_up_to_the_current_version() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i32> = (2..).take_while(|v| *v <= SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
    }
}

//! The sync invariant and crash-restart scenarios with the service on
//! ScyllaDB / Cassandra instead of the embedded store: syncs read the store
//! (a cache of 3 entries per inbox), and every restart connects anew and
//! resumes its seqs from the ceilings persisted by LWTs.
//!
//! These tests NEED A NODE, so they are `#[ignore]`d: run them with
//! `SCYLLA_NODES=127.0.0.1:9042 cargo test -p msg-service --test api scylla_needs_node -- --ignored`.
//! Each runs in a fresh random keyspace, dropped afterwards. Run with
//! `--ignored` but without the variable, each fails with a message saying
//! so: none passes without having checked anything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use msg_service::ServiceConfig;
use proto::{Entry, Seq};
use storage::MessageStore;
use storage::scylla::ScratchKeyspace;

use crate::helpers::{Options, TestService, dm, seqs, strictly_increasing, user};
use crate::sync_invariant::{DEADLINE, check_invariant};

/// Options whose store is Scylla. The helpers open an embedded store in a
/// temporary dir on every start; `wrap_store` sets it aside and hands the
/// service the next of `starts` Scylla stores, each connected up front (a
/// restarted process connects anew too).
async fn on_scylla(
    scratch: &ScratchKeyspace,
    starts: usize,
    base: Options,
) -> anyhow::Result<Options> {
    let mut stores: VecDeque<Arc<dyn MessageStore>> = VecDeque::new();
    for _ in 0..starts.max(1) {
        let store = scratch
            .connect()
            .await
            .context("connecting to SCYLLA_NODES")?;
        stores.push_back(Arc::new(store));
    }
    let last = Arc::clone(stores.back().context("one store at least")?);
    let stores = Mutex::new(stores);
    Ok(Options {
        wrap_store: Some(Arc::new(move |_embedded| {
            let mut stores = stores.lock().unwrap_or_else(|p| p.into_inner());
            stores.pop_front().unwrap_or_else(|| Arc::clone(&last))
        })),
        ..base
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p msg-service --test api scylla_needs_node -- --ignored"]
async fn on_scylla_a_reader_syncing_during_concurrent_sends_gets_every_entry_once_in_order()
-> anyhow::Result<()> {
    let scratch = ScratchKeyspace::from_env();
    let base = Options {
        cache_per_inbox: 3,
        ..Options::default()
    };
    let svc = TestService::start_with(on_scylla(&scratch, 1, base).await?)?;
    tokio::time::timeout(DEADLINE, check_invariant(&svc))
        .await
        .context("hung")?
}

const ROUNDS: usize = 4;

#[tokio::test]
#[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p msg-service --test api scylla_needs_node -- --ignored"]
async fn on_scylla_acked_messages_survive_restarts_and_seqs_keep_rising() -> anyhow::Result<()> {
    let scratch = ScratchKeyspace::from_env();
    let base = Options {
        // A ceiling every two seqs: many LWTs, and restarts jump often.
        config: ServiceConfig {
            seq_step: 2,
            ..ServiceConfig::default()
        },
        cache_per_inbox: 3,
        ..Options::default()
    };
    let mut svc = TestService::start_with(on_scylla(&scratch, ROUNDS + 1, base).await?)?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let group = svc
        .create_group(&alice, &[bob.clone(), carol.clone()], Some("trio"))
        .await?
        .conv_id;
    let first = svc.send(&alice, &bob, "first", "hello").await?;
    let mut carol_saw: Vec<Entry> = Vec::new();
    let mut group_log: Vec<Seq> = Vec::new();
    for round in 0..ROUNDS {
        for k in 0..3 {
            svc.send(&bob, &alice, &format!("b{round}-{k}"), "hi")
                .await?;
            let ack = svc
                .send(&carol, &group, &format!("c{round}-{k}"), "all")
                .await?;
            group_log.push(ack.conv_seq);
        }
        let head = carol_saw.last().map_or(0, |e| e.seq);
        let fresh = svc.sync_all(&carol, head).await?;
        assert_eq!(
            fresh.len(),
            3,
            "round {round}: carol's new entries, once each"
        );
        carol_saw.extend(fresh);

        svc = svc.restart()?;

        let all = svc.sync_all(&carol, 0).await?;
        assert_eq!(
            all, carol_saw,
            "round {round}: an entry was lost or changed"
        );
        assert!(strictly_increasing(&seqs(&all)));
        let retry = svc.send(&alice, &bob, "first", "hello").await?;
        assert_eq!(retry, first, "round {round}: a retry returns the first ack");
    }
    assert!(
        strictly_increasing(&group_log),
        "conv_seqs went back: {group_log:?}"
    );
    let history = svc.full_history(&alice, &group).await?;
    let listed: Vec<Seq> = history.iter().map(|m| m.conv_seq).collect();
    assert_eq!(listed, group_log, "history lists every group message once");
    let dms = svc.full_history(&alice, &dm(&alice, &bob)).await?;
    assert_eq!(dms.len(), 1 + 3 * ROUNDS, "every DM is in the log once");
    Ok(())
}

/// Runs `msg-service audit` (which opens the store with the same flags as
/// serving) on the scratch keyspace over an empty time range: its exit
/// code, and its stderr.
fn audit_on(scratch: &ScratchKeyspace, flags: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let options = scratch.options();
    let nodes = options.nodes.join(",");
    let keyspace = options.keyspace.to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_msg-service"))
        .args(["audit", "--from", "0", "--to", "0", "--store", "scylla"])
        .args(["--scylla-nodes", &nodes, "--scylla-keyspace", &keyspace])
        .args(flags)
        .env_remove("CHAT_PRODUCTION")
        .env_remove("CHAT_SCYLLA_ALLOW_SINGLE_REPLICA")
        .env_remove("CHAT_SCYLLA_ALLOW_WEAK_CONSISTENCY")
        .env_remove("CHAT_SCYLLA_CONSISTENCY")
        .output()
        .context("running msg-service audit")?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok((output.status.code(), stderr))
}

#[tokio::test]
#[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p msg-service --test api scylla_needs_node -- --ignored"]
async fn on_scylla_production_mode_refuses_a_single_replica_keyspace_unless_allowed()
-> anyhow::Result<()> {
    let scratch = ScratchKeyspace::from_env();
    // The scratch keyspace is SimpleStrategy:1.
    drop(scratch.connect().await.context("creating the keyspace")?);

    let (code, stderr) = audit_on(&scratch, &["--production"])?;
    assert_eq!(code, Some(2), "refused in production mode: {stderr}");
    assert!(stderr.contains("replication factor 1"), "{stderr}");

    let allowed = ["--production", "--scylla-allow-single-replica"];
    let (code, stderr) = audit_on(&scratch, &allowed)?;
    assert_eq!(code, Some(0), "allowed by the override: {stderr}");

    let (code, stderr) = audit_on(&scratch, &[])?;
    assert_eq!(code, Some(0), "allowed outside production mode: {stderr}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a ScyllaDB/Cassandra node: SCYLLA_NODES=host:port cargo test -p msg-service --test api scylla_needs_node -- --ignored"]
async fn on_scylla_consistency_one_is_refused_at_start_up_unless_explicitly_allowed()
-> anyhow::Result<()> {
    let scratch = ScratchKeyspace::from_env();
    let one = ["--scylla-consistency", "ONE"];
    let (code, stderr) = audit_on(&scratch, &one)?;
    assert_eq!(code, Some(2), "refused: {stderr}");
    assert!(stderr.contains("below a quorum"), "{stderr}");

    let allowed = [&one[..], &["--scylla-allow-weak-consistency"]].concat();
    let (code, stderr) = audit_on(&scratch, &allowed)?;
    assert_eq!(code, Some(0), "allowed explicitly: {stderr}");
    Ok(())
}

//! Replicas over gRPC: a gateway may call any replica; a call about a log
//! runs at the replica that serves its shard (forwarded in one hop), and a
//! send's fan-out reaches the inboxes other replicas own through their
//! owners, each message once.

use std::sync::Arc;
use std::time::Duration;

use msg_service::grpc::{ClientConfig, GrpcService, RemoteMessageService};
use msg_service::ownership::{KeeperClock, LeaseKeeper, conversation_shard, inbox_shard};
use msg_service::{Backends, MessageApi, MessageService, RetryConfig, ServiceConfig};
use proto::{ConvId, MessageKind, SendRequest, UserId};
use storage::{EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, Page};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{bodies, user};
use crate::ownership::{CONFIG, ManualClock};

/// One replica: its keeper, its service, and a client of its gRPC as a
/// gateway has; dropping `stop` stops its gRPC server.
struct Replica {
    addr: String,
    keeper: Arc<LeaseKeeper>,
    service: MessageService,
    client: RemoteMessageService,
    stop: oneshot::Sender<()>,
}

/// What the replicas share: the store, the cache, bus and presence (Redis
/// in production), and the clock their keepers read.
struct Cluster {
    _dir: TempDir,
    store: EmbeddedStore,
    backends: Backends,
    clock: Arc<ManualClock>,
}

impl Cluster {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(dir.path(), storage::Durability::Fsync)?;
        let backends = Backends {
            store: Arc::new(store.clone()),
            cache: Arc::new(InProcessCache::default()),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        };
        Ok(Cluster {
            _dir: dir,
            store,
            backends,
            clock: Arc::default(),
        })
    }

    /// A replica named `name`, registered with the address it serves on.
    async fn replica(&self, name: &str) -> anyhow::Result<Replica> {
        self.replica_with(name, ServiceConfig::default()).await
    }

    async fn replica_with(&self, name: &str, config: ServiceConfig) -> anyhow::Result<Replica> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let clock: Arc<dyn KeeperClock> = self.clock.clone();
        let keeper = Arc::new(
            LeaseKeeper::register(Arc::new(self.store.clone()), clock, CONFIG, name, &addr).await?,
        );
        let service =
            MessageService::serving(self.backends.clone(), config, Some(Arc::clone(&keeper)));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(msg_service::grpc::serve_with(
            listener,
            GrpcService::replica(service.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let config = ClientConfig::new(format!("http://{addr}"), Duration::from_secs(5));
        let client = RemoteMessageService::new(&config)?;
        Ok(Replica {
            addr,
            keeper,
            service,
            client,
            stop,
        })
    }
}

/// The clock passes the other replica's lease while `a` renews (the other
/// is dead or paused): `a` then holds every shard.
async fn outlive_the_other(cluster: &Cluster, a: &Replica) -> anyhow::Result<()> {
    for at in [3, 6, 9, 11] {
        cluster
            .clock
            .advance(Duration::from_secs(at) - cluster.clock.monotonic());
        a.keeper.tick().await?;
    }
    assert_eq!(
        a.keeper.held_shards(),
        usize::from(msg_service::ownership::SHARDS)
    );
    Ok(())
}

/// Two replicas, each holding its share of the shards.
async fn two_replicas(cluster: &Cluster) -> anyhow::Result<(Replica, Replica)> {
    let a = cluster.replica("a").await?;
    let b = cluster.replica("b").await?;
    share_the_shards(a, b).await
}

async fn share_the_shards(a: Replica, b: Replica) -> anyhow::Result<(Replica, Replica)> {
    // Each tick sees the other's registration only from its second round.
    for _ in 0..2 {
        a.keeper.tick().await?;
        b.keeper.tick().await?;
    }
    assert!(a.keeper.serves_its_shards() && b.keeper.serves_its_shards());
    Ok((a, b))
}

/// Two users whose direct conversation and first inbox `owner` serves
/// and whose second inbox it does not.
fn split_pair(owner: &LeaseKeeper) -> (UserId, UserId) {
    for i in 0..100_000 {
        let (a, b) = (user(&format!("s{i}")), user(&format!("r{i}")));
        let conv = ConvId::dm(&a, &b).expect("a dm");
        if owner.serves(conversation_shard(&conv)).is_some()
            && owner.serves(inbox_shard(&a)).is_some()
            && owner.serves(inbox_shard(&b)).is_none()
        {
            return (a, b);
        }
    }
    panic!("no such pair in 100,000 tries");
}

fn to_peer(id: &str, to: &UserId, body: &str) -> SendRequest {
    SendRequest::new(Some(id), None, Some(to.as_str()), None, Some(body.into()))
        .expect("a valid send")
}

#[tokio::test]
async fn a_send_at_any_replica_reaches_every_inbox_once_through_their_owners() -> anyhow::Result<()>
{
    let cluster = Cluster::new()?;
    let (a, b) = two_replicas(&cluster).await?;
    // The conversation and alice's inbox are a's, bob's inbox is b's.
    let (alice, bob) = split_pair(&a.keeper);

    // Sent through b, which forwards it to a; a appends to bob's inbox at b.
    let ack = b.client.send(&alice, to_peer("m1", &bob, "hello")).await?;
    let again = a.client.send(&alice, to_peer("m1", &bob, "hello")).await?;
    assert_eq!(again, ack, "a resend is acked as the first send");
    b.client.send(&alice, to_peer("m2", &bob, "again")).await?;

    for replica in [&a, &b] {
        for (reader, seqs) in [(&alice, [1, 2]), (&bob, [1, 2])] {
            let synced = replica.client.sync(reader, 0, 10).await?;
            let got: Vec<_> = synced.entries.iter().map(|e| e.seq).collect();
            assert_eq!(got, seqs, "{reader}'s inbox through either replica");
            assert_eq!(bodies(&synced.entries), ["hello", "again"]);
        }
        let page = replica
            .client
            .history(&bob, &ack.conv_id, Page::Before(u64::MAX), 10)
            .await?;
        assert_eq!(page.messages.len(), 2, "history through either replica");
    }
    Ok(())
}

#[tokio::test]
async fn a_send_whose_peers_inbox_is_on_its_way_to_a_new_replica_reaches_it_there_not_later()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let a = cluster.replica("a").await?;
    a.keeper.tick().await?; // alone: a holds every shard
    let b = cluster.replica("b").await?;
    b.keeper.tick().await?; // b's share is assigned to b, still held by a
    a.keeper.tick().await?; // a sees b: gives b's share up, routes it there
    let (alice, bob) = split_pair(&a.keeper);

    // a appends to bob's inbox at b, which takes the shard meanwhile.
    let (ack, claimed) = tokio::join!(
        a.service.send(&alice, to_peer("m1", &bob, "hello")),
        b.keeper.tick()
    );
    claimed?;
    ack?;

    // No retry worker runs here: bob has it from the send's own fan-out.
    let synced = b.service.sync(&bob, 0, 10).await?;
    assert_eq!(
        bodies(&synced.entries),
        ["hello"],
        "appended at b once it held bob's inbox"
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_that_left_forwards_the_calls_it_still_gets_to_the_new_owners()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let (a, b) = two_replicas(&cluster).await?;
    let (alice, bob) = split_pair(&a.keeper); // bob's inbox is b's
    a.client.send(&alice, to_peer("m1", &bob, "hello")).await?;

    b.keeper.release_all().await?; // b leaves; a takes its shards at its tick
    let (synced, taken) = tokio::join!(b.client.sync(&bob, 0, 10), a.keeper.tick());
    taken?;
    let synced = synced?;
    assert_eq!(
        bodies(&synced.entries),
        ["hello"],
        "answered by a through b"
    );

    // b serves no shard to pick a new group's id in: a picks it.
    let group = b.client.create_group(&alice, vec![bob], None).await?;
    assert!(
        a.keeper
            .serves(conversation_shard(&group.conv_id))
            .is_some()
    );
    Ok(())
}

#[tokio::test]
async fn a_read_and_a_recall_at_any_replica_reach_the_peers_inbox_at_its_owner()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let (a, b) = two_replicas(&cluster).await?;
    // The conversation and alice's inbox are a's, bob's inbox is b's.
    let (alice, bob) = split_pair(&a.keeper);
    let ack = a.client.send(&alice, to_peer("m1", &bob, "secret")).await?;

    // Bob's read goes through b, runs at a (the conversation's owner) and
    // its receipt is appended to alice's inbox there and bob's at b.
    let marker = b.client.mark_read(&bob, &ack.conv_id, ack.conv_seq).await?;
    assert_eq!(marker, ack.conv_seq);
    let recall = SendRequest::recall(Some("r1"), Some(ack.conv_id.as_str()), Some(ack.conv_seq))?;
    b.client.send(&alice, recall).await?;

    for replica in [&a, &b] {
        for reader in [&alice, &bob] {
            let entries = replica.client.sync(reader, 0, 10).await?.entries;
            let kinds: Vec<_> = entries.iter().map(|e| e.message.kind).collect();
            assert_eq!(
                kinds,
                [MessageKind::Text, MessageKind::Read, MessageKind::Recall],
                "{reader}'s inbox through either replica"
            );
            assert!(entries[0].message.recalled && entries[0].message.body.is_empty());
            assert_eq!(entries[1].message.refers_to, Some(ack.conv_seq));
            assert_eq!(entries[1].message.from, bob);
        }
        let view = replica.client.conversation(&bob, &ack.conv_id).await?;
        assert_eq!((view.read_up_to, view.unread), (ack.conv_seq, 0));
    }
    Ok(())
}

#[tokio::test]
async fn membership_changes_run_at_the_owner_whichever_replica_is_called() -> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let (a, b) = two_replicas(&cluster).await?;
    let members: Vec<UserId> = (0..12).map(|i| user(&format!("g{i}"))).collect();
    let creator = user("creator");
    // Created where the call lands, in a shard that replica serves.
    let group = b
        .client
        .create_group(&creator, members[..6].to_vec(), None)
        .await?;
    assert!(
        b.keeper
            .serves(conversation_shard(&group.conv_id))
            .is_some()
    );
    // Added and removed through the other replica: forwarded to b.
    a.client
        .add_members(&creator, &group.conv_id, members[6..].to_vec())
        .await?;
    a.client
        .remove_member(&creator, &group.conv_id, &members[0])
        .await?;
    let target = SendRequest::new(
        Some("g-1"),
        Some(group.conv_id.as_str()),
        None,
        None,
        Some("to all".into()),
    )?;
    a.client.send(&creator, target).await?;

    // Twelve inboxes in both replicas' shards: each got it once, but the
    // removed member.
    let owners: Vec<bool> = members
        .iter()
        .map(|m| a.keeper.serves(inbox_shard(m)).is_some())
        .collect();
    assert!(
        owners.contains(&true) && owners.contains(&false),
        "inboxes on both replicas"
    );
    for member in &members {
        let synced = a.client.sync(member, 0, 10).await?;
        let expected = usize::from(member != &members[0]);
        assert_eq!(synced.entries.len(), expected, "{member}'s inbox");
    }
    let seen = b.client.conversation(&members[7], &group.conv_id).await?;
    assert_eq!(seen.members.len(), 12, "11 members and the creator");
    assert_eq!(seen.last_conv_seq, 1);
    Ok(())
}

/// Waits until the retry worker of `service` has completed `count` passes.
async fn passes(service: &MessageService, count: u64) -> anyhow::Result<()> {
    let mut passes = service.retry_passes();
    let reached = passes.wait_for(|done| *done >= count);
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .map_err(|_| anyhow::anyhow!("the retry worker did not reach {count} passes"))??;
    Ok(())
}

#[tokio::test]
async fn a_fan_out_that_failed_for_a_dead_replica_is_retried_once_its_shards_move_not_after_its_backoff()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    // Backoff and polling of an hour: only the move can bring a retry on.
    let hour = Duration::from_secs(3600);
    let config = ServiceConfig {
        retry: RetryConfig {
            backoff: hour,
            max_backoff: hour,
            poll: hour,
        },
        ..ServiceConfig::default()
    };
    let a = cluster.replica_with("a", config).await?;
    let b = cluster.replica("b").await?;
    let (a, b) = share_the_shards(a, b).await?;
    let _worker = a.service.start_retry_worker();
    passes(&a.service, 1).await?;
    let (alice, bob) = split_pair(&a.keeper);

    // b dies: the send is stored at a, bob's inbox (b's) is not reached.
    drop(b.stop);
    let sent = a.client.send(&alice, to_peer("m1", &bob, "hello")).await;
    assert!(sent.is_err(), "answered unavailable: {sent:?}");
    // The queued fan-out is tried once (it fails again) and waits an hour.
    passes(&a.service, 2).await?;

    // b's lease runs out while a renews; a takes b's shards.
    outlive_the_other(&cluster, &a).await?;
    passes(&a.service, 3).await?;
    let synced = a.client.sync(&bob, 0, 10).await?;
    assert_eq!(
        bodies(&synced.entries),
        ["hello"],
        "bob has it, before the hour is up"
    );
    Ok(())
}

/// A replica paused mid-call (SIGSTOP): its gRPC connections stay up and
/// calls reach it, but none is ever answered. Its keeper is registered at
/// its address and ticks only while the test ticks it.
struct PausedReplica {
    keeper: Arc<LeaseKeeper>,
    /// Turns true once a call reached it: another replica routed it there.
    called: tokio::sync::watch::Receiver<bool>,
    _stop: oneshot::Sender<()>,
}

/// The paused replica's calls: each says it came, then never answers.
struct Frozen {
    called: tokio::sync::watch::Sender<bool>,
}

impl Frozen {
    async fn hang<T>(&self) -> msg_service::Result<T> {
        self.called.send_replace(true);
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl MessageApi for Frozen {
    async fn send(&self, _: &UserId, _: SendRequest) -> msg_service::Result<proto::Ack> {
        self.hang().await
    }
    async fn sync(&self, _: &UserId, _: u64, _: usize) -> msg_service::Result<proto::SyncResult> {
        self.hang().await
    }
    async fn inbox_head(&self, _: &UserId) -> msg_service::Result<u64> {
        self.hang().await
    }
    async fn history(
        &self,
        _: &UserId,
        _: &ConvId,
        _: Page,
        _: usize,
    ) -> msg_service::Result<msg_service::HistoryPage> {
        self.hang().await
    }
    async fn conversations(
        &self,
        _: &UserId,
    ) -> msg_service::Result<Vec<msg_service::Conversation>> {
        self.hang().await
    }
    async fn conversation(
        &self,
        _: &UserId,
        _: &ConvId,
    ) -> msg_service::Result<msg_service::Conversation> {
        self.hang().await
    }
    async fn create_group(
        &self,
        _: &UserId,
        _: Vec<UserId>,
        _: Option<String>,
    ) -> msg_service::Result<msg_service::Conversation> {
        self.hang().await
    }
    async fn add_members(
        &self,
        _: &UserId,
        _: &ConvId,
        _: Vec<UserId>,
    ) -> msg_service::Result<msg_service::Conversation> {
        self.hang().await
    }
    async fn remove_member(
        &self,
        _: &UserId,
        _: &ConvId,
        _: &UserId,
    ) -> msg_service::Result<msg_service::Conversation> {
        self.hang().await
    }
    async fn mark_read(&self, _: &UserId, _: &ConvId, _: u64) -> msg_service::Result<u64> {
        self.hang().await
    }
    async fn flush(&self) -> msg_service::Result<()> {
        self.hang().await
    }
}

impl Cluster {
    async fn paused_replica(&self, name: &str) -> anyhow::Result<PausedReplica> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let clock: Arc<dyn KeeperClock> = self.clock.clone();
        let keeper = Arc::new(
            LeaseKeeper::register(Arc::new(self.store.clone()), clock, CONFIG, name, &addr).await?,
        );
        let (tell, called) = tokio::sync::watch::channel(false);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(msg_service::grpc::serve_with(
            listener,
            GrpcService::new(Arc::new(Frozen { called: tell })),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(PausedReplica {
            keeper,
            called,
            _stop: stop,
        })
    }
}

/// Replica `a` (forwarded calls waiting up to an hour) and a paused one,
/// sharing the shards.
async fn a_replica_and_a_paused_one(cluster: &Cluster) -> anyhow::Result<(Replica, PausedReplica)> {
    let config = ServiceConfig {
        peer_timeout: Duration::from_secs(3600),
        ..ServiceConfig::default()
    };
    let a = cluster.replica_with("a", config).await?;
    let paused = cluster.paused_replica("b").await?;
    for _ in 0..2 {
        a.keeper.tick().await?;
        paused.keeper.tick().await?;
    }
    assert!(a.keeper.serves_its_shards() && paused.keeper.serves_its_shards());
    Ok((a, paused))
}

/// A gateway's client of `replica` that waits for an answer as long as
/// it takes and never retries: only the replica itself can answer it.
fn patient_client(replica: &Replica) -> anyhow::Result<RemoteMessageService> {
    let config = ClientConfig {
        retry: storage::resilience::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
        ..ClientConfig::new(
            format!("http://{}", replica.addr),
            Duration::from_secs(3600),
        )
    };
    Ok(RemoteMessageService::new(&config)?)
}

/// Its answer, or an error once it has waited far longer than a take-over.
async fn answered<T>(call: tokio::task::JoinHandle<msg_service::Result<T>>) -> anyhow::Result<T> {
    let outcome = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| anyhow::anyhow!("not answered: the call still waits at the paused replica"))?;
    Ok(outcome??)
}

/// Waits until `a` has routed a call to the paused replica, then lets its
/// lease run out while `a` renews: `a` takes its shards.
async fn take_over_once_called(
    cluster: &Cluster,
    a: &Replica,
    paused: &mut PausedReplica,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), paused.called.wait_for(|c| *c))
        .await
        .map_err(|_| anyhow::anyhow!("no call reached the paused replica"))??;
    outlive_the_other(cluster, a).await
}

#[tokio::test]
async fn a_sync_forwarded_to_a_paused_owner_is_answered_once_its_shard_moves_not_at_its_deadline()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let (a, mut paused) = a_replica_and_a_paused_one(&cluster).await?;
    let bob = (0..10_000)
        .map(|i| user(&format!("b{i}")))
        .find(|u| paused.keeper.serves(inbox_shard(u)).is_some())
        .expect("an inbox of the paused replica");

    // a forwards the sync to the paused owner, which never answers; the
    // forward's deadline and the client's are an hour, and it never retries.
    let client = patient_client(&a)?;
    let reader = bob.clone();
    let sync = tokio::spawn(async move { client.sync(&reader, 0, 10).await });
    take_over_once_called(&cluster, &a, &mut paused).await?;

    let synced = answered(sync).await?;
    assert!(synced.entries.is_empty(), "answered by a, the new owner");
    Ok(())
}

#[tokio::test]
async fn a_send_forwarded_to_a_paused_owner_is_made_again_at_the_new_owner_once_its_shard_moves()
-> anyhow::Result<()> {
    let cluster = Cluster::new()?;
    let (a, mut paused) = a_replica_and_a_paused_one(&cluster).await?;
    let (alice, bob) = (0..100_000)
        .map(|i| (user(&format!("s{i}")), user(&format!("r{i}"))))
        .find(|(s, r)| {
            let conv = ConvId::dm(s, r).expect("a dm");
            paused.keeper.serves(conversation_shard(&conv)).is_some()
        })
        .expect("a conversation of the paused replica");

    let client = patient_client(&a)?;
    let sender = alice.clone();
    let request = to_peer("m1", &bob, "hello");
    let send = tokio::spawn(async move { client.send(&sender, request).await });
    take_over_once_called(&cluster, &a, &mut paused).await?;

    let ack = answered(send).await?;
    assert_eq!(ack.conv_seq, 1);
    let synced = a.client.sync(&bob, 0, 10).await?;
    assert_eq!(
        bodies(&synced.entries),
        ["hello"],
        "bob has it from the new owner"
    );
    Ok(())
}

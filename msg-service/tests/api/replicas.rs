//! Replicas over gRPC: a gateway may call any replica; a call about a log
//! runs at the replica that serves its shard (forwarded in one hop), and a
//! send's fan-out reaches the inboxes other replicas own through their
//! owners, each message once.

use std::sync::Arc;
use std::time::Duration;

use msg_service::grpc::{ClientConfig, GrpcService, RemoteMessageService};
use msg_service::ownership::{KeeperClock, LeaseKeeper, conversation_shard, inbox_shard};
use msg_service::{Backends, MessageApi, MessageService, ServiceConfig};
use proto::{ConvId, SendRequest, UserId};
use storage::{EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, Page};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::user;
use crate::ownership::{CONFIG, ManualClock};

/// One replica: its keeper, and a client of its gRPC as a gateway has.
struct Replica {
    keeper: Arc<LeaseKeeper>,
    client: RemoteMessageService,
    _stop: oneshot::Sender<()>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let clock: Arc<dyn KeeperClock> = self.clock.clone();
        let keeper = Arc::new(
            LeaseKeeper::register(Arc::new(self.store.clone()), clock, CONFIG, name, &addr).await?,
        );
        let service = MessageService::serving(
            self.backends.clone(),
            ServiceConfig::default(),
            Some(Arc::clone(&keeper)),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(msg_service::grpc::serve_with(
            listener,
            GrpcService::replica(service),
            async {
                let _ = stopped.await;
            },
        ));
        let config = ClientConfig::new(format!("http://{addr}"), Duration::from_secs(5));
        Ok(Replica {
            keeper,
            client: RemoteMessageService::new(&config)?,
            _stop: stop,
        })
    }
}

/// Two replicas, each holding its share of the shards.
async fn two_replicas(cluster: &Cluster) -> anyhow::Result<(Replica, Replica)> {
    let a = cluster.replica("a").await?;
    let b = cluster.replica("b").await?;
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
            let bodies: Vec<_> = synced
                .entries
                .iter()
                .map(|e| e.message.body.as_str())
                .collect();
            assert_eq!(bodies, ["hello", "again"]);
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

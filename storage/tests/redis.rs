//! The trait-level suites against the Redis cache, bus and presence, each
//! test with its own real `redis-server`, plus what is particular to Redis:
//! restarts and outages, TTLs, key names, one subscription per gateway.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::{ConvId, Seq, UserId};
use storage::resilience::{BreakerConfig, BreakerState};
use storage::suite::{entry, user};
use storage::{
    BusMessage, GatewayId, InboxCache, Notification, NotifyBus, Presence, RedisBackends,
    RedisOptions, Subscription,
};
use support::{FreezingProxy, RedisServer};

/// Every test's Redis: its own server and the backends connected to it.
async fn spawn_redis(options: RedisOptions) -> (RedisBackends, RedisServer) {
    let server = RedisServer::start();
    let backends = connect(&server, options).await;
    (backends, server)
}

async fn connect(server: &RedisServer, options: RedisOptions) -> RedisBackends {
    RedisBackends::connect(&server.url(), options)
        .await
        .expect("connect to redis-server")
}

/// A plain connection for looking at what the backends wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn gateway(name: &str) -> GatewayId {
    GatewayId(format!("gw-{}", user(name)))
}

fn note(user: &UserId, head: Seq) -> BusMessage {
    Notification::head(user.clone(), head).into()
}

/// Options whose bus repairs itself quickly, for outage tests.
fn impatient() -> RedisOptions {
    RedisOptions {
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        reconnect_retries: 1,
        bus_reconnect_retries: 1,
        health_interval: Duration::from_millis(200),
        ..RedisOptions::default()
    }
}

/// Publishes `note` to `gw` until `sub` receives it (publishes in between
/// may fail or go unheard while Redis comes back).
async fn published_until_received(
    bus: &dyn NotifyBus,
    gw: &GatewayId,
    sub: &mut Subscription,
    note: &BusMessage,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let _ = bus.publish(gw, note.clone()).await;
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            assert_eq!(got.as_ref(), Some(note), "the subscription is alive");
            return;
        }
    }
    panic!("no notification arrived within 15 s: the bus did not resubscribe");
}

mod cache_suite {
    use super::*;
    async fn open_cache() -> (Arc<dyn InboxCache>, RedisServer) {
        let (backends, server) = spawn_redis(RedisOptions::default()).await;
        (Arc::new(backends.cache), server)
    }
    storage::cache_suite!(open_cache().await);
}

#[tokio::test]
async fn redis_cache_keeps_only_the_newest_entries_of_an_inbox() {
    let options = RedisOptions {
        cache_per_inbox: 3,
        ..RedisOptions::default()
    };
    let (backends, _server) = spawn_redis(options).await;
    storage::suite::cache::only_the_newest_entries_stay_and_the_covered_range_follows(
        &backends.cache,
    )
    .await;
}

#[tokio::test]
async fn redis_bus_routes_to_the_gateways_holding_the_user() {
    let (backends, _server) = spawn_redis(RedisOptions::default()).await;
    let (bus, presence) = (&backends.bus, &backends.presence);
    storage::suite::bus::a_gateway_receives_what_is_published_to_it(bus, presence).await;
    storage::suite::bus::a_second_subscribe_replaces_the_first(bus).await;
    storage::suite::bus::publishing_to_a_gateway_nobody_listens_on_succeeds(bus).await;
    storage::suite::bus::a_notify_carries_its_entries_as_they_were_published(bus).await;
    storage::suite::bus::a_typing_indicator_reaches_the_gateway_as_it_was_published(bus).await;
    storage::suite::bus::a_broadcast_reaches_every_gateway(bus).await;
}

#[tokio::test]
async fn redis_presence_lists_the_gateways_holding_a_user() {
    let (backends, _server) = spawn_redis(RedisOptions::default()).await;
    storage::suite::bus::presence_lists_the_gateways_holding_a_user(&backends.presence).await;
    storage::suite::bus::last_seen_is_what_was_set_last_and_nothing_for_a_user_never_seen(
        &backends.presence,
    )
    .await;
}

#[tokio::test]
async fn redis_presence_keeps_refreshed_users_and_lets_the_others_lapse() {
    let ttl = Duration::from_secs(1);
    let options = RedisOptions {
        presence_ttl: ttl,
        ..RedisOptions::default()
    };
    let (backends, _server) = spawn_redis(options).await;
    storage::suite::bus::refreshed_users_stay_and_the_others_lapse(&backends.presence, Some(ttl))
        .await;
}

#[tokio::test]
async fn the_bus_resubscribes_by_itself_after_redis_restarts() {
    // The watchdog stays out of it: only the connection's own resubscription
    // can bring the notifications back within the deadline.
    let options = RedisOptions {
        health_interval: Duration::from_secs(600),
        ..RedisOptions::default()
    };
    let (backends, mut server) = spawn_redis(options).await;
    let (gw, u) = (gateway("g"), user("u"));
    let mut sub = backends.bus.subscribe(&gw).await.expect("subscribe");
    published_until_received(&backends.bus, &gw, &mut sub, &note(&u, 1)).await;

    server.start_again();
    published_until_received(&backends.bus, &gw, &mut sub, &note(&u, 2)).await;
}

#[tokio::test]
async fn the_bus_resubscribes_after_an_outage_longer_than_its_reconnect_attempts() {
    let (backends, mut server) = spawn_redis(impatient()).await;
    let (gw, u) = (gateway("g"), user("u"));
    let mut sub = backends.bus.subscribe(&gw).await.expect("subscribe");
    published_until_received(&backends.bus, &gw, &mut sub, &note(&u, 1)).await;

    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start_again();
    published_until_received(&backends.bus, &gw, &mut sub, &note(&u, 2)).await;
}

#[tokio::test]
async fn connections_that_went_silent_are_replaced() {
    let server = RedisServer::start();
    let proxy = FreezingProxy::start(server.port()).await;
    let gateway_side = RedisBackends::connect(&proxy.url(), impatient())
        .await
        .expect("connect through the proxy");
    let sender = connect(&server, RedisOptions::default()).await;
    let (gw, u) = (gateway("g"), user("u"));
    let mut sub = gateway_side.bus.subscribe(&gw).await.expect("subscribe");
    published_until_received(&sender.bus, &gw, &mut sub, &note(&u, 1)).await;

    proxy.freeze_connections();
    published_until_received(&sender.bus, &gw, &mut sub, &note(&u, 2)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway_side.presence.connected(&u, &gw).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the command connection stayed silent"
        );
    }
}

#[tokio::test]
async fn a_subscription_made_while_redis_is_down_starts_when_it_returns() {
    let (backends, mut server) = spawn_redis(impatient()).await;
    let (gw, u) = (gateway("g"), user("u"));
    server.stop();
    let mut sub = backends
        .bus
        .subscribe(&gw)
        .await
        .expect("subscribe succeeds while Redis is down");
    server.start_again();
    published_until_received(&backends.bus, &gw, &mut sub, &note(&u, 1)).await;
}

#[tokio::test]
async fn two_gateways_each_get_only_their_own_notifies_over_one_connection_each() {
    let server = RedisServer::start();
    let (gateway_a, gateway_b, sender) = (
        connect(&server, RedisOptions::default()).await,
        connect(&server, RedisOptions::default()).await,
        connect(&server, RedisOptions::default()).await,
    );
    let (gw_a, gw_b, u) = (gateway("a"), gateway("b"), user("u"));
    let mut sub_a = gateway_a.bus.subscribe(&gw_a).await.expect("subscribe a");
    let mut sub_b = gateway_b.bus.subscribe(&gw_b).await.expect("subscribe b");

    for (gw, head) in [(&gw_a, 1), (&gw_b, 2), (&gw_a, 3)] {
        sender
            .bus
            .publish(gw, note(&u, head))
            .await
            .expect("publish");
    }
    let within = Duration::from_secs(5);
    for (sub, heads) in [(&mut sub_a, [1, 3].as_slice()), (&mut sub_b, &[2])] {
        for &head in heads {
            let got = tokio::time::timeout(within, sub.recv()).await;
            assert_eq!(got.expect("in time"), Some(note(&u, head)));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sub_a.try_recv().is_err() && sub_b.try_recv().is_err());

    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw(&server).await)
        .await
        .expect("client list");
    let subscribed = clients.lines().filter(|c| !c.contains(" sub=0 ")).count();
    assert_eq!(
        subscribed, 2,
        "one subscriber connection per gateway:\n{clients}"
    );
}

#[tokio::test]
async fn cached_inboxes_leave_redis_after_their_ttl() {
    let options = RedisOptions {
        cache_ttl: Duration::from_secs(1),
        ..RedisOptions::default()
    };
    let (backends, server) = spawn_redis(options).await;
    let (u, peer) = (user("u"), user("p"));
    let conv = ConvId::dm(&u, &peer).expect("dm");
    let cache = &backends.cache;
    cache
        .append(&u, 0, &entry(1, &conv, &peer))
        .await
        .expect("append");
    let key = format!("chat:inbox:{{{u}}}");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw(&server).await)
        .await
        .expect("pttl");
    assert!(0 < ttl_ms && ttl_ms <= 1000, "{key} has a ttl: {ttl_ms} ms");
    assert!(cache.read(&u, 0, 1, 10).await.expect("read").is_some());

    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.read(&u, 0, 1, 10).await.expect("read").is_some() {
        assert!(Instant::now() < deadline, "the cached inbox never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn refresh_restores_presence_that_redis_lost() {
    let (backends, mut server) = spawn_redis(impatient()).await;
    let (gw, u, v) = (gateway("g"), user("u"), user("v"));
    let presence = &backends.presence;
    presence.connected(&u, &gw).await.expect("connected");
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while presence
        .refresh(&gw, &[u.clone(), v.clone()])
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "refresh never got through");
    }
    for user in [&u, &v] {
        let held = presence.gateways(user).await.expect("gateways");
        assert_eq!(held, std::slice::from_ref(&gw));
    }
}

#[tokio::test]
async fn calls_fail_fast_and_retryable_while_redis_is_down() {
    let options = impatient();
    let limit = options.command_timeout + Duration::from_millis(500);
    let (backends, mut server) = spawn_redis(options).await;
    let (gw, u) = (gateway("g"), user("u"));
    server.stop();

    let started = Instant::now();
    let read = backends.cache.read(&u, 0, 1, 10).await;
    assert!(read.expect_err("no redis").is_retryable());
    let held = backends.presence.gateways(&u).await;
    assert!(held.expect_err("no redis").is_retryable());
    let published = backends.bus.publish(&gw, note(&u, 1)).await;
    assert!(published.expect_err("no redis").is_retryable());
    assert!(
        started.elapsed() < limit * 3,
        "took {:?}",
        started.elapsed()
    );

    let nowhere = RedisBackends::connect(&server.url(), impatient()).await;
    assert!(nowhere.err().expect("nothing listens").is_retryable());
}

#[tokio::test]
async fn the_redis_breaker_opens_while_redis_is_down_and_closes_when_it_returns() {
    let options = RedisOptions {
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(300),
            half_open_probes: 1,
        },
        ..impatient()
    };
    let (backends, mut server) = spawn_redis(options).await;
    let breaker = backends
        .breaker
        .clone()
        .expect("the command connection has a breaker");
    let u = user("u");
    server.stop();
    for _ in 0..2 {
        assert!(backends.cache.read(&u, 0, 1, 10).await.is_err());
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    let started = Instant::now();
    let err = backends
        .presence
        .gateways(&u)
        .await
        .expect_err("breaker open");
    assert!(err.breaker_retry_after().is_some(), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "took {:?}",
        started.elapsed()
    );

    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends.presence.gateways(&u).await.is_err() {
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// The breaker's pause (5 s by default) is not what decides when calls work
/// again: Redis answering is. Before, the first probe after the pause got the
/// connection manager's stale "connection refused" and re-opened it.
#[tokio::test]
async fn calls_succeed_within_a_second_of_redis_answering_again_after_the_breaker_opened() {
    let options = RedisOptions {
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        },
        ..impatient()
    };
    let (backends, mut server) = spawn_redis(options).await;
    let breaker = backends.breaker.clone().expect("a breaker");
    let u = user("u");
    server.stop();
    while breaker.state() != BreakerState::Open {
        assert!(backends.presence.gateways(&u).await.is_err());
    }

    server.start_again();
    let answering = Instant::now();
    while backends.presence.gateways(&u).await.is_err() {
        assert!(
            answering.elapsed() < Duration::from_secs(1),
            "calls still failed {:?} after Redis answered again (breaker {:?})",
            answering.elapsed(),
            breaker.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_carry_the_prefix_and_the_user_as_hash_tag() {
    let options = RedisOptions {
        key_prefix: "t9:".into(),
        ..RedisOptions::default()
    };
    let (backends, server) = spawn_redis(options).await;
    let (u, peer, gw) = (user("u"), user("p"), gateway("g"));
    let conv = ConvId::dm(&u, &peer).expect("dm");
    backends
        .cache
        .append(&u, 0, &entry(1, &conv, &peer))
        .await
        .expect("append");
    backends
        .presence
        .connected(&u, &gw)
        .await
        .expect("connected");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw(&server).await)
        .await
        .expect("keys");
    keys.sort();
    assert_eq!(
        keys,
        [format!("t9:inbox:{{{u}}}"), format!("t9:presence:{{{u}}}")]
    );
}

#[tokio::test]
async fn seqs_too_large_for_exact_scores_are_not_cached() {
    let (backends, _server) = spawn_redis(RedisOptions::default()).await;
    let (u, peer) = (user("u"), user("p"));
    let conv = ConvId::dm(&u, &peer).expect("dm");
    let cache = &backends.cache;
    cache
        .append(&u, 0, &entry(1, &conv, &peer))
        .await
        .expect("append");
    cache
        .append(&u, 0, &entry(1 << 53, &conv, &peer))
        .await
        .expect("append");
    assert_eq!(cache.read(&u, 0, 1, 10).await.expect("read"), None);
    assert_eq!(cache.read(&u, 1, 1 << 53, 10).await.expect("read"), None);
}

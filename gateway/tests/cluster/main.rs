//! Integration tests of the distributed mode with real processes: every test
//! starts its own local cluster (`deploy/local/cluster.sh up`: redis-server,
//! msg-service, gateways gw1 and gw2, HAProxy) in a fresh state dir, drives it
//! over WebSocket and HTTP like a client, and stops it (`down`) when done.

mod bad_input;
mod cross_gateway;
mod dedup;
mod failover;
mod harness;
mod helpers;
mod rate_limit;
#[path = "../api/raw_http.rs"]
mod raw_http;
mod redis_restart;
mod startup;
#[allow(
    dead_code,
    reason = "shared with the api tests; not every helper is used here"
)]
#[path = "../api/ws_client.rs"]
mod ws_client;

//! Presence in Redis: per user a sorted set of gateways scored by the time
//! (Redis's clock, in ms) their claim lapses. Gateways announce a user when
//! their first socket of it opens, withdraw it when the last closes, and
//! refresh all their users well within the TTL; a gateway that dies simply
//! stops refreshing, and its claims lapse.

use async_trait::async_trait;
use proto::UserId;
use redis::Script;

use super::conn::Conn;
use super::{Keys, RedisOptions, millis};
use crate::model::GatewayId;
use crate::presence::LAST_SEEN_KEPT;
use crate::{Presence, Result};

/// Redis's clock in ms, shared by both scripts so every process agrees on
/// what has lapsed whatever its own clock says.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Claims `user` for a gateway until now + ttl (KEYS[1]; ARGV: gateway, ttl
/// ms), trims lapsed claims, and lets the key expire with the last claim.
const ANNOUNCE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(last[2])))
return 1
";

/// The gateways whose claim on the user has not lapsed.
const LIVE: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
";

/// Users re-announced per round trip by `refresh`.
const REFRESH_BATCH: usize = 500;

/// Presence in Redis, written by gateways and read by msg-service.
pub struct RedisPresence {
    conn: Conn,
    keys: Keys,
    ttl_ms: u64,
    /// `ANNOUNCE`'s source, which `refresh` loads ahead of its pipelines.
    announce_code: String,
    announce: Script,
    live: Script,
}

impl RedisPresence {
    pub(super) fn new(conn: Conn, keys: Keys, options: &RedisOptions) -> Self {
        let announce_code = format!("{NOW}{ANNOUNCE}");
        RedisPresence {
            conn,
            keys,
            ttl_ms: millis(options.presence_ttl),
            announce: Script::new(&announce_code),
            announce_code,
            live: Script::new(&format!("{NOW}{LIVE}")),
        }
    }

    /// One pipeline re-announcing `users`. A pipeline cannot fall back from
    /// EVALSHA to EVAL, so it loads the script first (a no-op when cached).
    fn announce_pipeline(&self, gateway: &GatewayId, users: &[UserId]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.announce_code)
            .ignore();
        for user in users {
            pipe.cmd("EVALSHA")
                .arg(self.announce.get_hash())
                .arg(1)
                .arg(self.keys.presence(user))
                .arg(&gateway.0)
                .arg(self.ttl_ms)
                .ignore();
        }
        pipe
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
        let mut invocation = self.announce.key(self.keys.presence(user));
        invocation.arg(&gateway.0).arg(self.ttl_ms);
        let mut con = self.conn.manager();
        let _: i64 = self.conn.call(invocation.invoke_async(&mut con)).await?;
        Ok(())
    }

    async fn disconnected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
        let mut con = self.conn.manager();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.keys.presence(user)).arg(&gateway.0);
        self.conn.call(zrem.exec_async(&mut con)).await
    }

    async fn gateways(&self, user: &UserId) -> Result<Vec<GatewayId>> {
        let invocation = self.live.key(self.keys.presence(user));
        let mut con = self.conn.manager();
        let names: Vec<String> = self.conn.call(invocation.invoke_async(&mut con)).await?;
        Ok(names.into_iter().map(GatewayId).collect())
    }

    /// Redis's `run_id`, which a restart changes (and with `--save ""` the
    /// presence claims are gone with it).
    async fn instance(&self) -> Result<String> {
        let mut con = self.conn.manager();
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let text: String = self.conn.call(info.query_async(&mut con)).await?;
        text.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| crate::Error::BadData("INFO server without run_id".into()))
    }

    async fn set_last_seen(&self, user: &UserId, at_ms: u64) -> Result<()> {
        let mut con = self.conn.manager();
        let mut set = redis::cmd("SET");
        set.arg(self.keys.last_seen(user))
            .arg(at_ms)
            .arg("PX")
            .arg(millis(LAST_SEEN_KEPT));
        self.conn.call(set.exec_async(&mut con)).await
    }

    async fn last_seen(&self, user: &UserId) -> Result<Option<u64>> {
        let mut con = self.conn.manager();
        let mut get = redis::cmd("GET");
        get.arg(self.keys.last_seen(user));
        self.conn.call(get.query_async(&mut con)).await
    }

    async fn refresh(&self, gateway: &GatewayId, users: &[UserId]) -> Result<()> {
        for batch in users.chunks(REFRESH_BATCH) {
            let mut con = self.conn.manager();
            let pipe = self.announce_pipeline(gateway, batch);
            self.conn.call(pipe.exec_async(&mut con)).await?;
        }
        Ok(())
    }
}

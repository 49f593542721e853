//! The Redis inbox cache: per inbox one sorted set holding the newest entries
//! (scored by seq) and one bound member (score -1) saying where the cached
//! run starts. One key per inbox, so an eviction under memory pressure or an
//! expiry takes the whole run or nothing, and can never leave a hole.

use async_trait::async_trait;
use proto::{Entry, Seq, UserId};
use redis::Script;

use super::conn::Conn;
use super::{Keys, RedisOptions, millis};
use crate::{Error, InboxCache, Result};

/// Appends one entry, extending the run when its newest entry is the seq
/// handed out just before (ARGV[5]), else starting a new run at this entry;
/// evicts the oldest beyond the cap and moves the bound; sets the TTL.
/// Members are `<seq>|<entry json>`, bounds `from:<seq>` (covers seqs from
/// there) or `after:<seq>` (covers seqs above the last evicted one). Seqs are
/// copied as strings, never formatted from Lua's doubles.
const APPEND: &str = r"
local key, seq, previous = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[5])
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local newest = tonumber(top[2] or '-1')
local extended = 1
if newest ~= previous or newest >= seq then
  redis.call('DEL', key)
  redis.call('ZADD', key, -1, 'from:' .. ARGV[1])
  extended = 0
end
redis.call('ZADD', key, seq, ARGV[2])
local excess = redis.call('ZCARD', key) - 1 - tonumber(ARGV[3])
if excess > 0 then
  local last_gone = redis.call('ZRANGE', key, excess, excess)[1]
  redis.call('ZREMRANGEBYRANK', key, 0, excess)
  redis.call('ZADD', key, -1, 'after:' .. string.match(last_gone, '^%d+'))
end
redis.call('PEXPIRE', key, ARGV[4])
return extended
";

/// Sorted-set scores are doubles: seqs above this cannot be ordered exactly,
/// so such entries are not cached (no inbox gets anywhere near it).
const MAX_CACHED_SEQ: Seq = (1 << 53) - 1;

/// The inbox cache in Redis, shared by every msg-service process.
pub struct RedisCache {
    conn: Conn,
    keys: Keys,
    per_inbox: usize,
    ttl_ms: u64,
    append: Script,
}

impl RedisCache {
    pub(super) fn new(conn: Conn, keys: Keys, options: &RedisOptions) -> Self {
        RedisCache {
            conn,
            keys,
            per_inbox: options.cache_per_inbox.max(1),
            ttl_ms: millis(options.cache_ttl),
            append: Script::new(APPEND),
        }
    }
}

#[async_trait]
impl InboxCache for RedisCache {
    async fn append(&self, user: &UserId, previous: Seq, entry: &Entry) -> Result<()> {
        if entry.seq > MAX_CACHED_SEQ {
            return self.invalidate(user).await;
        }
        let member = format!("{}|{}", entry.seq, serde_json::to_string(entry)?);
        let mut invocation = self.append.key(self.keys.inbox(user));
        invocation
            .arg(entry.seq)
            .arg(member)
            .arg(self.per_inbox)
            .arg(self.ttl_ms)
            .arg(previous);
        let mut con = self.conn.manager();
        let appended: i64 = self.conn.call(invocation.invoke_async(&mut con)).await?;
        if appended == 0 {
            tracing::debug!(%user, seq = entry.seq, "the append did not follow the cached run; a new run starts");
        }
        Ok(())
    }

    async fn read(
        &self,
        user: &UserId,
        after: Seq,
        up_to: Seq,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>> {
        let key = self.keys.inbox(user);
        let mut con = self.conn.manager();
        // One transaction: the bound, whether the newest cached seq reaches
        // `up_to`, and the entries in range.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrange(&key, 0, 0)
            .zcount(&key, up_to, "+inf")
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(format!("({after}"))
            .arg(up_to)
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let (bound, reaching, members): (Vec<String>, u64, Vec<String>) =
            self.conn.call(pipe.query_async(&mut con)).await?;
        let Some(covers_from) = bound.first().map(|b| parse_bound(b)).transpose()? else {
            return Ok(None);
        };
        if after.saturating_add(1) < covers_from || reaching == 0 {
            return Ok(None);
        }
        members
            .iter()
            .map(|m| parse_member(m))
            .collect::<Result<_>>()
            .map(Some)
    }

    async fn newest(&self, user: &UserId, up_to: Seq, limit: usize) -> Result<Vec<Entry>> {
        let mut con = self.conn.manager();
        // Entries score their seq (>= 1); the bound member scores -1.
        let mut newest = redis::cmd("ZREVRANGEBYSCORE");
        newest
            .arg(self.keys.inbox(user))
            .arg(up_to.min(MAX_CACHED_SEQ))
            .arg(1)
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let members: Vec<String> = self.conn.call(newest.query_async(&mut con)).await?;
        members.iter().map(|m| parse_member(m)).collect()
    }

    async fn invalidate(&self, user: &UserId) -> Result<()> {
        let mut con = self.conn.manager();
        let key = self.keys.inbox(user);
        self.conn
            .call(redis::cmd("DEL").arg(key).exec_async(&mut con))
            .await
    }
}

/// The lowest seq the cached run covers.
fn parse_bound(bound: &str) -> Result<Seq> {
    let parsed = if let Some(from) = bound.strip_prefix("from:") {
        from.parse::<Seq>().ok()
    } else if let Some(evicted) = bound.strip_prefix("after:") {
        evicted.parse::<Seq>().ok().map(|s| s.saturating_add(1))
    } else {
        None
    };
    parsed.ok_or_else(|| Error::BadData(format!("inbox cache bound {bound:?}")))
}

fn parse_member(member: &str) -> Result<Entry> {
    let (_seq, json) = member
        .split_once('|')
        .ok_or_else(|| Error::BadData("inbox cache member without a seq".into()))?;
    Ok(serde_json::from_str(json)?)
}

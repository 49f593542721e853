//! Query strings of the REST routes, parsed by pure functions (no request,
//! no state) so the fuzz targets and property tests reach exactly the code
//! the handlers run.

use proto::{MAX_SYNC_LIMIT, ProtoError, Seq, clamp_sync_limit};
use serde::Deserialize;
use storage::Page;

use crate::error::{Error, Result};

/// History pages hold at most this many messages.
pub const MAX_HISTORY_LIMIT: u64 = 200;
const DEFAULT_HISTORY_LIMIT: u64 = 50;

/// A validated history query (`before` | `after`, `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryParams {
    /// Which page.
    pub page: Page,
    /// At most this many messages (1..=200).
    pub limit: usize,
}

/// A validated `GET /v1/sync` query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncParams {
    /// Entries after this seq.
    pub since: Seq,
    /// At most this many entries (already clamped to 500).
    pub limit: usize,
    /// How long the caller asks to long-poll, not yet capped.
    pub wait_ms: u64,
}

/// Every value is read as a string first, so a bad number is this API's
/// own 400 with the field's name rather than a deserializer message.
#[derive(Deserialize)]
struct RawHistory {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Deserialize)]
struct RawPresence {
    users: Option<String>,
}

#[derive(Deserialize)]
struct RawSync {
    since: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
}

fn decode<'a, T: Deserialize<'a>>(raw: Option<&'a str>) -> Result<T> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::BadRequest(format!("invalid query string: {e}")))
}

/// Parses the query of `GET /v1/conversations/{id}/messages`.
pub fn history_params(raw: Option<&str>) -> Result<HistoryParams> {
    let q: RawHistory = decode(raw)?;
    let before = query_u64(q.before.as_deref(), "before")?;
    let after = query_u64(q.after.as_deref(), "after")?;
    let limit = match query_u64(q.limit.as_deref(), "limit")? {
        Some(0) => {
            return Err(Error::BadRequest(
                "`limit` must be a positive integer".into(),
            ));
        }
        limit => limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(MAX_HISTORY_LIMIT),
    };
    let page = match (before, after) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "give `before` or `after`, not both".into(),
            ));
        }
        (_, Some(after)) => Page::After(after),
        (before, None) => Page::Before(before.unwrap_or(u64::MAX)),
    };
    let limit = usize::try_from(limit).unwrap_or(MAX_SYNC_LIMIT);
    Ok(HistoryParams { page, limit })
}

/// Parses the query of `GET /v1/sync`.
pub fn sync_params(raw: Option<&str>) -> Result<SyncParams> {
    let q: RawSync = decode(raw)?;
    Ok(SyncParams {
        since: query_u64(q.since.as_deref(), "since")?.unwrap_or(0),
        limit: clamp_sync_limit(query_u64(q.limit.as_deref(), "limit")?)?,
        wait_ms: query_u64(q.wait_ms.as_deref(), "wait_ms")?.unwrap_or(0),
    })
}

/// Parses the query of `GET /v1/presence`: `users`, comma-separated, at
/// most 100 (protocol 1.1).
pub fn presence_params(raw: Option<&str>) -> Result<Vec<proto::UserId>> {
    let q: RawPresence = decode(raw)?;
    let users = q
        .users
        .ok_or(Error::Invalid(ProtoError::MissingField("users")))?;
    Ok(proto::presence_users(
        users.split(',').filter(|user| !user.is_empty()).map(Ok),
    )?)
}

/// An optional non-negative integer query parameter.
fn query_u64(value: Option<&str>, name: &'static str) -> Result<Option<Seq>> {
    value
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                Error::Invalid(ProtoError::InvalidField {
                    field: name,
                    reason: "must be a non-negative integer".into(),
                })
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_takes_up_to_a_hundred_distinct_valid_users() {
        let users = presence_params(Some("users=bob,carol,bob")).expect("valid");
        let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
        assert_eq!(names, ["bob", "carol"]);
        let hundred: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
        let query = format!("users={}", hundred.join(","));
        assert_eq!(
            presence_params(Some(&query)).expect("100 is fine").len(),
            100
        );
        let query = format!("users={},u100", hundred.join(","));
        assert!(presence_params(Some(&query)).is_err(), "101 is refused");
        assert!(presence_params(None).is_err(), "users is required");
        assert!(presence_params(Some("users=bad%20id")).is_err());
    }

    #[test]
    fn history_defaults_to_the_newest_fifty_and_caps_the_limit_at_two_hundred() {
        let default = history_params(None).expect("no query is valid");
        assert_eq!(default.page, Page::Before(u64::MAX));
        assert_eq!(default.limit, 50);
        let capped = history_params(Some("after=3&limit=100000")).expect("valid");
        assert_eq!(capped.page, Page::After(3));
        assert_eq!(capped.limit, 200);
    }

    #[test]
    fn bad_history_queries_are_bad_requests() {
        for raw in [
            "before=-1",
            "limit=0",
            "limit=abc",
            "before=1&after=2",
            "after=18446744073709551616",
            "limit=1&limit=2",
            "before=%FF",
        ] {
            let err = history_params(Some(raw)).expect_err(raw);
            assert_eq!(err.code(), proto::ErrorCode::BadRequest, "{raw}: {err}");
        }
    }

    #[test]
    fn sync_queries_clamp_the_limit_and_refuse_non_integers() {
        let params = sync_params(Some("since=7&limit=9999&wait_ms=5")).expect("valid");
        assert_eq!(
            params,
            SyncParams {
                since: 7,
                limit: 500,
                wait_ms: 5
            }
        );
        for raw in ["since=1.5", "limit=0", "wait_ms=-3", "since=%00"] {
            let err = sync_params(Some(raw)).expect_err(raw);
            assert_eq!(err.code(), proto::ErrorCode::BadRequest, "{raw}: {err}");
        }
    }

    #[test]
    fn unknown_query_fields_are_ignored() {
        assert!(sync_params(Some("token=x&foo=bar")).is_ok());
        assert!(history_params(Some("&&=&x")).is_ok());
    }
}

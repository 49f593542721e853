//! The REST routes of PROTOCOL.md: conversations, members, history, send
//! over HTTP, long-poll sync, and dev tokens.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use msg_service::Conversation;
use proto::{Ack, ConvId, ErrorCode, SendRequest, SyncResult, UserId};
use storage::Page;

use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, JsonBody};
use crate::query::{history_params, sync_params};
use crate::schema::*;
use crate::state::AppState;

/// A send with its metrics, shared by REST and WebSocket.
pub async fn send_checked(state: &AppState, user: &UserId, request: SendRequest) -> Result<Ack> {
    let started = std::time::Instant::now();
    let result = state.api.send(user, request).await;
    state
        .hot_metrics
        .send_answered(started.elapsed(), result.is_ok());
    Ok(result?)
}

fn parse_conv(conv_id: &str) -> Result<ConvId> {
    Ok(ConvId::parse(conv_id)?)
}

fn parse_users(users: &[String]) -> Result<Vec<UserId>> {
    users.iter().map(|u| Ok(UserId::parse(u)?)).collect()
}

/// The caller's conversations.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
    responses((status = 200, body = ConversationList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_conversations(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<ConversationList>> {
    let conversations = state.api.conversations(&user).await?;
    Ok(Json(ConversationList { conversations }))
}

/// Who of these users is online, as the caller may see them (protocol
/// 1.1): users who share no conversation with the caller always come back
/// offline with no `last_seen`.
#[utoipa::path(get, path = "/v1/presence", tag = "presence",
    params(("users" = String, Query, description = "user ids, comma-separated, at most 100")),
    responses((status = 200, body = PresenceList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn presence(
    State(state): State<AppState>,
    Caller(user): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PresenceList>> {
    let users = crate::query::presence_params(raw.as_deref())?;
    let answer = state.presences.query(&state.api, &user, &users).await?;
    Ok(Json(PresenceList {
        presence: answer.into_iter().map(|(seen, _)| seen).collect(),
    }))
}

/// Creates a group; the caller is a member.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = CreateGroup,
    responses((status = 201, body = ConversationSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_group(
    State(state): State<AppState>,
    Caller(user): Caller,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<(StatusCode, Json<Conversation>)> {
    let members = parse_users(&body.members)?;
    let conv = state.api.create_group(&user, members, body.title).await?;
    Ok((StatusCode::CREATED, Json(conv)))
}

/// One conversation, for a member.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}", tag = "conversations",
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>")),
    responses((status = 200, body = ConversationSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(conv_id): Path<String>,
) -> Result<Json<Conversation>> {
    let conv = state
        .api
        .conversation(&user, &parse_conv(&conv_id)?)
        .await?;
    Ok(Json(conv))
}

/// Adds members to a group (any member may).
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/members", tag = "conversations", request_body = AddMembers,
    params(("conv_id" = String, Path, description = "g:<id>")),
    responses((status = 200, body = ConversationSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_members(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<AddMembers>,
) -> Result<Json<Conversation>> {
    let conv = parse_conv(&conv_id)?;
    let members = parse_users(&body.members)?;
    Ok(Json(state.api.add_members(&user, &conv, members).await?))
}

/// Removes a member from a group (any member may).
#[utoipa::path(delete, path = "/v1/conversations/{conv_id}/members/{user}", tag = "conversations",
    params(("conv_id" = String, Path, description = "g:<id>"), ("user" = String, Path, description = "the member to remove")),
    responses((status = 200, body = ConversationSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((conv_id, member)): Path<(String, String)>,
) -> Result<Json<Conversation>> {
    let conv = parse_conv(&conv_id)?;
    let member = UserId::parse(&member)?;
    Ok(Json(state.api.remove_member(&user, &conv, &member).await?))
}

/// A page of history: newest first (`before`), or oldest first (`after`).
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages", tag = "messages",
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>"),
        ("before" = Option<u64>, Query, description = "conv_seq < before, newest first"),
        ("after" = Option<u64>, Query, description = "conv_seq > after, oldest first"),
        ("limit" = Option<u64>, Query, description = "default 50, at most 200")),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "the user already has 4 history reads in flight, or read more pages per second than `--history-rate` allows (answered after a one-second delay)")),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(conv_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<HistoryResponse>> {
    let params = history_params(raw.as_deref())?;
    let conv = parse_conv(&conv_id)?;
    state
        .history_rate
        .admit(&user)
        .await
        .map_err(|wait| Error::ReadRate {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        })?;
    let _slot = state
        .history_slots
        .try_take(&user)
        .ok_or(Error::TooManyReads {
            limit: state.history_slots.max_per_user(),
        })?;
    let result = match state
        .api
        .history(&user, &conv, params.page, params.limit)
        .await
    {
        Ok(result) => result,
        Err(err) => {
            if err.code() == ErrorCode::Unavailable {
                state.history_rate.delay_refusal().await;
            }
            return Err(err.into());
        }
    };
    let (next_before, next_after) = match params.page {
        Page::Before(_) => (Some(result.next), None),
        Page::After(_) => (None, Some(result.next)),
    };
    Ok(Json(HistoryResponse {
        messages: result.messages,
        next_before,
        next_after,
        degraded: result.degraded,
    }))
}

/// Sends a message over HTTP; answers the fields of an `ack`.
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/messages", tag = "messages", request_body = SendBody,
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>")),
    responses((status = 200, body = AckSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<Json<Ack>> {
    let request = SendRequest::new(
        body.client_msg_id.as_deref(),
        Some(&conv_id),
        None,
        body.kind.as_deref(),
        body.body,
    )?;
    Ok(Json(admitted_send(&state, &user, request).await?))
}

/// Recalls one's own message (protocol 1.1): stored and fanned out like a
/// message; answers the fields of an `ack`.
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/messages/{conv_seq}/recall", tag = "messages",
    request_body = RecallBody,
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>"),
        ("conv_seq" = u64, Path, description = "the message to recall")),
    responses((status = 200, body = AckSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not a member, not the sender, not a text message, or past the recall window"),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn recall(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((conv_id, conv_seq)): Path<(String, String)>,
    JsonBody(body): JsonBody<RecallBody>,
) -> Result<Json<Ack>> {
    let refers_to = parse_conv_seq(&conv_seq)?;
    let request = SendRequest::recall(
        body.client_msg_id.as_deref(),
        Some(&conv_id),
        Some(refers_to),
    )?;
    Ok(Json(admitted_send(&state, &user, request).await?))
}

/// Edits one's own message (protocol 1.1): an `edit` entry with the new
/// body, stored and fanned out like a message; answers the fields of an `ack`.
#[utoipa::path(patch, path = "/v1/conversations/{conv_id}/messages/{conv_seq}", tag = "messages",
    request_body = EditBody,
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>"),
        ("conv_seq" = u64, Path, description = "the message to edit")),
    responses((status = 200, body = AckSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not a member, not the sender, not a text message, recalled, or past the edit window"),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn edit(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((conv_id, conv_seq)): Path<(String, String)>,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<Json<Ack>> {
    let refers_to = parse_conv_seq(&conv_seq)?;
    let request = SendRequest::edit(
        body.client_msg_id.as_deref(),
        Some(&conv_id),
        Some(refers_to),
        body.body,
    )?;
    Ok(Json(admitted_send(&state, &user, request).await?))
}

/// Moves the caller's read marker (protocol 1.1): never back, at most to
/// the conversation's last message; answers the marker as it now stands.
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/read", tag = "conversations",
    request_body = ReadBody,
    params(("conv_id" = String, Path, description = "dm:<a>:<b> or g:<id>")),
    responses((status = 200, body = ReadSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<ReadBody>,
) -> Result<Json<ReadSchema>> {
    let conv = parse_conv(&conv_id)?;
    let conv_seq = body
        .conv_seq
        .ok_or(proto::ProtoError::MissingField("conv_seq"))?;
    let marker = state.api.mark_read(&user, &conv, conv_seq).await?;
    Ok(Json(ReadSchema {
        conv_id: conv.to_string(),
        conv_seq: marker,
    }))
}

/// A message's conv_seq from a path segment.
fn parse_conv_seq(segment: &str) -> Result<u64> {
    match segment.parse::<u64>() {
        Ok(seq) if seq > 0 => Ok(seq),
        _ => Err(proto::ProtoError::InvalidField {
            field: "conv_seq",
            reason: "must be a positive integer".into(),
        }
        .into()),
    }
}

/// A send, a recall or an edit over REST: charged to the send rate, then made.
async fn admitted_send(state: &AppState, user: &UserId, request: SendRequest) -> Result<Ack> {
    admit_send(state, user)?;
    send_checked(state, user, request).await
}

/// Charges one send to `user`'s send rate on this gateway (WebSocket frames
/// are charged as they arrive, REST requests here: one budget for both).
pub fn admit_send(state: &AppState, user: &UserId) -> Result<()> {
    state.send_admission.check(user).map_err(|wait| {
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Error::from(msg_service::Error::RateLimited { retry_after_ms })
    })
}

/// Inbox entries after `since`; long-polls up to `wait_ms` when none is newer.
#[utoipa::path(get, path = "/v1/sync", tag = "sync",
    params(("since" = Option<u64>, Query, description = "entries with seq > since (default 0)"),
        ("limit" = Option<u64>, Query, description = "default 100, at most 500"),
        ("wait_ms" = Option<u64>, Query, description = "long-poll up to this many ms (at most 30000)")),
    responses((status = 200, body = SyncSchema), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "the user's connection slots are all in use (long polls)")),
    security(("bearer" = [])))]
pub async fn sync(
    State(state): State<AppState>,
    Caller(user): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<SyncResult>> {
    let params = sync_params(raw.as_deref())?;
    let wait = Duration::from_millis(params.wait_ms).min(state.limits.max_wait);
    Ok(Json(
        long_poll(&state, &user, params.since, params.limit, wait).await?,
    ))
}

async fn long_poll(
    state: &AppState,
    user: &UserId,
    since: u64,
    limit: usize,
    wait: Duration,
) -> Result<SyncResult> {
    if wait.is_zero() {
        return Ok(state.api.sync(user, since, limit).await?);
    }
    // A waiting poll holds a connection like a socket does.
    let _slot = state
        .slots
        .try_take(user)
        .ok_or(Error::TooManyConnections {
            limit: state.slots.max_per_user(),
        })?;
    // Listen before reading, so a message landing in between still wakes us.
    let mut registration = state.hub.register(user).await;
    let first = state.api.sync(user, since, limit).await?;
    if !first.entries.is_empty() {
        return Ok(first);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(state.api.sync(user, since, limit).await?),
            () = state.draining.cancelled() => return Ok(first),
            changed = registration.head.changed() => {
                if changed.is_err() {
                    return Ok(first);
                }
                let next = state.api.sync(user, since, limit).await?;
                if !next.entries.is_empty() {
                    return Ok(next);
                }
            }
        }
    }
}

/// Mints a token for any user (only when dev auth is on).
#[utoipa::path(post, path = "/v1/dev/token", tag = "dev", request_body = DevTokenRequest,
    responses((status = 200, body = DevToken), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn dev_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DevTokenRequest>,
) -> Result<Json<DevToken>> {
    let user = UserId::parse(&body.user)?;
    Ok(Json(DevToken {
        token: state.auth.mint(&user)?,
    }))
}

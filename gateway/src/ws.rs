//! `GET /v1/ws`: authenticates before the upgrade, then hands the socket
//! to a session tracked for graceful shutdown.

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use proto::DeviceId;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::extract::bearer_token;
use crate::state::AppState;

/// Query parameters of the upgrade.
#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    device: Option<String>,
}

/// Upgrades to a WebSocket session for the token's user.
pub async fn upgrade(
    State(state): State<AppState>,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    if !state.is_ready() {
        return Err(Error::Draining);
    }
    let query = query.ok().map(|Query(q)| q);
    // The header decides when present: an invalid one is never rescued by the query.
    let token = match bearer_token(&headers)? {
        Some(token) => token.to_owned(),
        None => query
            .as_ref()
            .and_then(|q| q.token.clone())
            .ok_or(Error::Unauthorized("missing token"))?,
    };
    let identity = state.auth.verify(&token)?;
    let device = query.and_then(|q| q.device).or(identity.device);
    let device = device
        .as_deref()
        .map(DeviceId::parse)
        .transpose()?
        .unwrap_or_default();
    let ws = ws.map_err(|e| Error::BadRequest(e.body_text()))?;
    let user = identity.user;
    // Taken before the upgrade, so the refusal is a plain 429 the client can read.
    let slot = state
        .slots
        .try_take(&user)
        .ok_or(Error::TooManyConnections {
            limit: state.slots.max_per_user(),
        })?;
    tracing::debug!(%user, %device, "websocket upgrade");
    let limit = state.limits.max_frame_bytes;
    let ws = ws
        // Frames up to 4x the limit are read so the client gets `too_large`
        // instead of a bare close; anything larger is cut off by tungstenite.
        .max_message_size(limit * 4)
        .max_frame_size(limit * 4)
        // tungstenite zero-fills its whole read buffer on every read, so
        // its size is resident memory of every idle socket (4 KiB -> 1 KiB
        // took ~3 KiB off each); a larger frame grows it as needed. The
        // bench's relay (loadtest/src/relay.rs) uses the same two sizes.
        .read_buffer_size(1024)
        .write_buffer_size(4096);
    let sockets = state.sockets.clone();
    Ok(ws
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            let span = tracing::info_span!("ws", %user, %device);
            let session = crate::session::run(sink, stream, state, user, slot);
            sockets.track_future(tracing::Instrument::instrument(session, span))
        })
        .into_response())
}

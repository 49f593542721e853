//! Operational endpoints: liveness, readiness, metrics, and the demo client
//! (the single-page chat of `static/`, embedded in the binary).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");

/// The page may load only its own script and style and talk only to its own
/// origin (REST and the WebSocket).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded asset, served only while dev auth is on (the client signs in
/// with dev tokens); otherwise 404.
fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    if !state.dev_auth {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "code": "not_found",
                "message": "the demo client is served only when dev auth is on",
            })),
        )
            .into_response();
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    if content_type.starts_with("text/html") {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        response.headers_mut().insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// The demo chat client's page (plain HTML, CSS and JavaScript, no build step).
pub async fn demo_page(State(state): State<AppState>) -> Response {
    asset(&state, "text/html; charset=utf-8", INDEX_HTML)
}

/// The demo client's script.
pub async fn demo_script(State(state): State<AppState>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", APP_JS)
}

/// The demo client's style sheet.
pub async fn demo_style(State(state): State<AppState>) -> Response {
    asset(&state, "text/css; charset=utf-8", APP_CSS)
}

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"ok": true}))
}

/// Readiness: false while draining or while a required dependency's breaker
/// is open; the breakers' states are in the body,
/// `{"ready":false,"breakers":{"msg_service":"open","redis":"closed"}}`.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = state.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let breakers: serde_json::Map<_, _> = readiness
        .breakers
        .iter()
        .map(|(name, state)| ((*name).to_owned(), json!(state.as_str())))
        .collect();
    (
        status,
        Json(json!({"ready": readiness.ready, "breakers": breakers})),
    )
}

/// The load balancer's check: 200 while ready; 404 while alive but not
/// taking new sockets (draining, or a required dependency down), which
/// HAProxy's `http-check disable-on-404` reads as "send nothing new, keep
/// the sockets" (a drain stays graceful). No answer at all means the
/// process is dead or paused: HAProxy marks it down and, with
/// `on-marked-down shutdown-sessions`, cuts its sockets, so their clients
/// reconnect to another gateway instead of waiting on a frozen one.
pub async fn lbz(State(state): State<AppState>) -> StatusCode {
    match state.readiness().ready {
        true => StatusCode::OK,
        false => StatusCode::NOT_FOUND,
    }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

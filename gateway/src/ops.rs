//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// The demo chat page (plain HTML and JavaScript, no build step).
pub async fn demo_page() -> impl IntoResponse {
    axum::response::Html(include_str!("../static/index.html"))
}

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"ok": true}))
}

/// Readiness: false while draining.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready})))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

//! The router: REST routes collected with their OpenAPI documentation,
//! the WebSocket route, and the operational endpoints.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use crate::{ops, rest, ws};

/// The OpenAPI document and the REST router, from the same handlers.
fn rest_routes(dev_auth: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut router = OpenApiRouter::new()
        .routes(routes!(rest::list_conversations, rest::create_group))
        .routes(routes!(rest::get_conversation))
        .routes(routes!(rest::add_members))
        .routes(routes!(rest::remove_member))
        .routes(routes!(rest::history, rest::send))
        .routes(routes!(rest::sync));
    if dev_auth {
        router = router.routes(routes!(rest::dev_token));
    }
    let (router, mut api) = router.split_for_parts();
    api.info.title = "chat backend REST API".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    let bearer = SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .build(),
    );
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", bearer);
    (router, api)
}

/// Every route of the gateway.
pub fn router(state: AppState) -> Router {
    let (rest, api) = rest_routes(state.dev_auth);
    // Rendered once into shared bytes: axum clones the router for every
    // connection, and a `serde_json::Value` here cost ~4 KiB per socket.
    let api_json = Bytes::from(serde_json::to_vec(&api).unwrap_or_default());
    rest.route("/v1/ws", get(ws::upgrade))
        .route("/", get(ops::demo_page))
        .route("/app.js", get(ops::demo_script))
        .route("/app.css", get(ops::demo_style))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], api_json) }),
        )
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of one request: method and path only. Never the query string
/// (the WebSocket upgrade carries `?token=<jwt>`) and never headers
/// (`Authorization`), so no log level writes a token.
fn request_span(request: &Request<Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

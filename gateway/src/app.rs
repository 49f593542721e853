//! The router: REST routes collected with their OpenAPI documentation,
//! the WebSocket route, and the operational endpoints.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, Uri, header};
use axum::middleware;
use axum::routing::get;
use proto::excerpt;
use tower_http::trace::TraceLayer;
use utoipa::openapi::info::{Info, InfoBuilder, LicenseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::state::AppState;
use crate::{background, ops, rest, unread, ws};

/// The OpenAPI document and the REST router, from the same handlers.
fn rest_routes(dev_auth: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut router = OpenApiRouter::new()
        .routes(routes!(rest::list_conversations, rest::create_group))
        .routes(routes!(rest::get_conversation))
        .routes(routes!(rest::add_members))
        .routes(routes!(rest::remove_member))
        .routes(routes!(rest::history, rest::send))
        .routes(routes!(rest::recall))
        .routes(routes!(rest::edit))
        .routes(routes!(rest::mark_read))
        .routes(routes!(rest::sync))
        .routes(routes!(rest::presence));
    if dev_auth {
        router = router.routes(routes!(rest::dev_token));
    }
    let (router, mut api) = router.split_for_parts();
    // Set whole: `OpenApiRouter::new()` starts from utoipa-axum's own
    // package metadata (its description, authors and license).
    api.info = product_info();
    api.servers = Some(vec![Server::new("/")]);
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

/// What `/openapi.json` says about this product.
fn product_info() -> Info {
    let license = LicenseBuilder::new()
        .name(env!("CARGO_PKG_LICENSE"))
        .identifier(Some(env!("CARGO_PKG_LICENSE")))
        .build();
    InfoBuilder::new()
        .title("chat backend REST API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(license))
        .build()
}

/// The description of the REST API in `/openapi.json`.
const DESCRIPTION: &str = "The REST API of the chat backend: conversations and their members, \
    history, sending over HTTP, long-poll sync and presence. Real-time delivery uses the WebSocket \
    protocol at GET /v1/ws (PROTOCOL.md). Errors are {\"code\",\"message\"} bodies.";

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
        .route("/lbz", get(ops::lbz))
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], api_json) }),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            background::history_in_background,
        ))
        .layer(middleware::from_fn(unread::drain_body))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// A path no route has: 404 with this API's error body.
async fn no_route(uri: Uri) -> Error {
    Error::NoRoute(excerpt(uri.path()))
}

/// A route that exists, called with a method it does not take: 405 with
/// this API's error body (axum adds the `Allow` header).
async fn method_not_allowed(method: Method) -> Error {
    Error::MethodNotAllowed(excerpt(method.as_str()))
}

/// The span of one request: method and path only. Never the query string
/// (the WebSocket upgrade carries `?token=<jwt>`) and never headers
/// (`Authorization`), so no log level writes a token.
fn request_span(request: &Request<Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

//! JWT authentication at the edge: every refused token is HTTP 401 with no
//! upgrade (WebSocket) or a `{"code":"unauthorized"}` body (REST); the
//! header decides over `?token=`; a bad device id is 400; EdDSA keys work
//! only where configured.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, http};

use crate::helpers::{
    SECRET, TestApp, WAIT, WsClient, mint_hs256, spawn_app, spawn_app_with, unix_now,
};

/// `{"alg":"none","typ":"JWT"}`, base64url without padding.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// The Ed25519 key pair of RFC 8032, section 7.1, test 1 (a published test
/// vector, not a secret): the private key as PKCS#8, the public key as SPKI.
const ED25519_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";
const ED25519_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PUBLIC KEY-----
";

/// The HTTP status of a WebSocket handshake: 101 when upgraded.
pub async fn upgrade_status<R: IntoClientRequest + Unpin>(request: R) -> u16 {
    let handshake = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake finishes in time");
    match handshake {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("the handshake failed without an HTTP answer: {err}"),
    }
}

/// `GET /v1/sync` with `bearer`: the status and the JSON body.
pub async fn rest_sync(app: &TestApp, bearer: Option<&str>) -> (u16, Value) {
    let response = app.get("/v1/sync", bearer).await;
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Asserts that `token` (None: no token at all) is refused on both edges.
pub async fn assert_refused(app: &TestApp, what: &str, token: Option<&str>) {
    let query = token.map(|t| format!("token={t}&")).unwrap_or_default();
    let url = app.ws_url(&format!("{query}device=phone"));
    assert_eq!(upgrade_status(url).await, 401, "WebSocket, {what}");
    let (status, body) = rest_sync(app, token).await;
    assert_eq!(status, 401, "REST, {what}: {body}");
    assert_eq!(body["code"], "unauthorized", "REST, {what}: {body}");
    assert!(body["message"].is_string(), "REST, {what}: {body}");
}

/// A valid token with its signature segment cut off and `alg: none` instead.
pub fn alg_none(valid: &str) -> String {
    let payload = valid.split('.').nth(1).expect("a JWT has a payload");
    format!("{ALG_NONE_HEADER}.{payload}.")
}

#[tokio::test]
async fn every_invalid_token_is_refused_with_401_and_no_upgrade() {
    let app = spawn_app().await;
    let valid = app.token("alice");
    // The control: the same calls succeed with a valid token.
    assert_eq!(
        upgrade_status(app.ws_url(&format!("token={valid}"))).await,
        101
    );
    assert_eq!(rest_sync(&app, Some(&valid)).await.0, 200);

    let in_an_hour = unix_now() + 3600;
    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        ("alg none", alg_none(&valid)),
        (
            "another secret",
            mint_hs256(
                &json!({"sub": "alice", "exp": in_an_hour}),
                "not-the-secret",
            ),
        ),
        (
            "expired an hour ago",
            mint_hs256(&json!({"sub": "alice", "exp": unix_now() - 3600}), SECRET),
        ),
        ("no exp", mint_hs256(&json!({"sub": "alice"}), SECRET)),
        (
            "sub outside the alphabet",
            mint_hs256(&json!({"sub": "bad user!", "exp": in_an_hour}), SECRET),
        ),
        ("no sub", mint_hs256(&json!({"exp": in_an_hour}), SECRET)),
    ];
    assert_refused(&app, "no token", None).await;
    for (what, token) in &cases {
        assert_refused(&app, what, Some(token)).await;
    }
}

#[tokio::test]
async fn a_valid_query_token_does_not_rescue_an_invalid_authorization_header() {
    let app = spawn_app().await;
    let valid = app.token("alice");
    let url = app.ws_url(&format!("token={valid}&device=phone"));
    for header in ["Bearer not-a-jwt", "Basic YWxpY2U6cHc=", "Bearer"] {
        let mut request = url.as_str().into_client_request().expect("a request");
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(header).expect("a header value"),
        );
        assert_eq!(upgrade_status(request).await, 401, "header {header:?}");
    }
    // A valid header with no query token upgrades.
    let mut request = app
        .ws_url("device=phone")
        .into_client_request()
        .expect("a request");
    let bearer = HeaderValue::from_str(&format!("Bearer {valid}")).expect("a header value");
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, bearer);
    assert_eq!(upgrade_status(request).await, 101);
}

#[tokio::test]
async fn rest_calls_do_not_accept_a_query_token() {
    let app = spawn_app().await;
    let path = format!("/v1/sync?token={}", app.token("alice"));
    let response = app.get(&path, None).await;
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn an_invalid_device_id_is_refused_with_400() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let too_long = "d".repeat(65);
    for device in ["bad%20device%21", "caf%C3%A9", too_long.as_str(), ""] {
        let url = app.ws_url(&format!("token={token}&device={device}"));
        assert_eq!(upgrade_status(url).await, 400, "device {device:?}");
    }
    // A device id in the `did` claim is checked the same way.
    let claims = json!({"sub": "alice", "exp": unix_now() + 3600, "did": "bad device!"});
    let url = app.ws_url(&format!("token={}", mint_hs256(&claims, SECRET)));
    assert_eq!(upgrade_status(url).await, 400, "did claim");
}

/// An EdDSA token for `user` signed with the RFC 8032 test key.
fn eddsa_token(user: &str) -> String {
    let key = EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()).expect("the test key");
    let claims = json!({"sub": user, "exp": unix_now() + 3600});
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).expect("signing")
}

#[tokio::test]
async fn an_eddsa_token_is_accepted_where_its_public_key_is_configured() {
    let keys = tempfile::tempdir().expect("a key dir");
    let pem = keys.path().join("ed25519.pem");
    std::fs::write(&pem, ED25519_PUBLIC_PEM).expect("writing the public key");
    let pem = pem.to_str().expect("a UTF-8 path");
    let app = spawn_app_with(&["--jwt-eddsa-public-key", pem]).await;

    let token = eddsa_token("erin");
    let (status, body) = rest_sync(&app, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let mut erin = WsClient::connect(app.ws_url(&format!("token={token}&device=phone")))
        .await
        .expect("an EdDSA token upgrades");
    assert_eq!(erin.sync(0).await["head"], 0);
    // HS256 still works next to it, and the public key is no HMAC secret.
    assert_eq!(rest_sync(&app, Some(&app.token("alice"))).await.0, 200);
    let confused = mint_hs256(
        &json!({"sub": "erin", "exp": unix_now() + 3600}),
        ED25519_PUBLIC_PEM,
    );
    assert_refused(&app, "HS256 signed with the public key", Some(&confused)).await;
}

#[tokio::test]
async fn an_eddsa_token_is_refused_where_no_eddsa_key_is_configured() {
    let app = spawn_app().await;
    assert_refused(&app, "EdDSA without a key", Some(&eddsa_token("erin"))).await;
}

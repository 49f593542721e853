//! Clear answers to bad input (issue 16): every refusal carries the error
//! body of PROTOCOL.md, an oversized request is answered instead of reset,
//! and a broken frame keeps its `rid`.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, status_and_json};
use crate::raw_http::post_large;
use crate::ws_client::oversized_frame;

/// How often an oversized request is repeated: the reset it used to get
/// came in 4 to 31 of 40 tries.
const TRIES: usize = 40;

/// The size of the oversized REST bodies.
const TWO_MB: usize = 2 * 1024 * 1024;

/// Asserts `body` is `{"code": code, "message": <non-empty string>}`.
fn assert_error_body(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a message: {body}");
}

#[tokio::test]
async fn an_unknown_rest_path_answers_404_with_a_json_error() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for path in [
        "/v1/nowhere",
        "/v1/conversations/dm:alice:bob/nothing",
        "/x",
    ] {
        let response = app.get(path, Some(&token)).await;
        let json = response.headers()["content-type"] == "application/json";
        let (status, body) = status_and_json(response).await;
        assert_eq!((status, json), (404, true), "{path}: {body}");
        assert_error_body(&body, "not_found");
    }
    let (status, body) =
        status_and_json(app.post_json("/v1/nowhere", &token, &json!({})).await).await;
    assert_eq!(status, 404, "{body}");
    assert_error_body(&body, "not_found");
}

#[tokio::test]
async fn a_method_a_route_does_not_take_answers_405_with_a_json_error() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for path in ["/healthz", "/v1/sync", "/v1/ws"] {
        let response = app.post_json(path, &token, &json!({})).await;
        let allow = response.headers().get("allow").cloned();
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 405, "{path}: {body}");
        assert_error_body(&body, "bad_request");
        let allow = allow.map(|v| v.to_str().unwrap_or_default().to_owned());
        assert!(
            allow.as_deref().is_some_and(|a| a.contains("GET")),
            "{path}: Allow {allow:?}"
        );
    }
}

#[tokio::test]
async fn a_2_mb_body_is_answered_413_with_a_json_error_every_time() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let path = "/v1/conversations/dm:alice:bob/messages";
    for _ in 0..TRIES {
        post_large(app.addr, path, &token, TWO_MB)
            .await
            .assert_error(413, "too_large");
    }
}

#[tokio::test]
async fn a_2_mb_body_to_an_unknown_path_or_without_a_token_is_answered_not_reset() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for _ in 0..TRIES / 4 {
        post_large(app.addr, "/v1/nowhere", &token, TWO_MB)
            .await
            .assert_error(404, "not_found");
        post_large(app.addr, "/v1/conversations", "not-a-jwt", TWO_MB)
            .await
            .assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_1_mb_frame_gets_too_large_then_close_1009_every_time() {
    let app = spawn_app().await;
    let frame = oversized_frame();
    for attempt in 1..=TRIES / 4 {
        let mut client = app.ws("alice", &format!("d{attempt}")).await;
        client.assert_refused_as_too_large(&frame).await;
    }
}

#[tokio::test]
async fn a_frame_with_a_number_beyond_f64_gets_an_error_with_its_rid() {
    let app = spawn_app().await;
    let mut client = app.ws("alice", "phone").await;
    for (text, rid) in [
        (r#"{"type":"sync","rid":1,"since":1e309}"#, json!(1)),
        (
            r#"{"type":"send","rid":"s","to":"bob","x":-1e400}"#,
            json!("s"),
        ),
    ] {
        client
            .send_message(Message::text(text))
            .await
            .expect("sent");
        let error = client.try_next_frame().await.expect("an error frame");
        assert_eq!(
            (&error["type"], &error["rid"]),
            (&json!("error"), &rid),
            "{text}: {error}"
        );
        assert_error_body(&error, "bad_request");
    }
}

#[tokio::test]
async fn a_null_since_or_limit_is_a_bad_request_not_a_default() {
    let app = spawn_app().await;
    let mut client = app.ws("alice", "phone").await;
    for field in ["since", "limit"] {
        let reply = client.request(json!({"type": "sync", field: null})).await;
        assert_eq!(reply["type"], "error", "{field}: {reply}");
        assert_error_body(&reply, "bad_request");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {reply}");
    }
}

#[tokio::test]
async fn openapi_json_describes_this_product_not_the_utoipa_crate() {
    let app = spawn_app().await;
    let (status, api) = status_and_json(app.get("/openapi.json", None).await).await;
    assert_eq!(status, 200, "{api}");
    let info = &api["info"];
    assert_eq!(info["title"], "chat backend REST API", "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{info}");
    assert_eq!(info["license"]["name"], "Apache-2.0", "{info}");
    assert_eq!(info["license"]["identifier"], "Apache-2.0", "{info}");
    assert!(info.get("contact").is_none(), "no borrowed contact: {info}");
    let description = info["description"].as_str().unwrap_or_default();
    assert!(description.contains("chat backend"), "{info}");
    assert!(!description.to_lowercase().contains("utoipa"), "{info}");
    assert_eq!(api["servers"], json!([{"url": "/"}]), "{api}");
}

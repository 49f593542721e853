//! The JWT attack matrix: forged, confused, stale, early, foreign, bloated
//! and malformed tokens are all HTTP 401 on REST and refused before the
//! WebSocket upgrade, and the server keeps serving after every one of them.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::auth::{alg_none, assert_refused, rest_sync, upgrade_status};
use crate::helpers::{SECRET, TestApp, mint_hs256, spawn_app, spawn_app_with, unix_now};

/// A 2048-bit RSA key pair generated for these tests only (it guards nothing).
const RS256_PRIVATE_PEM: &str = include_str!("fixtures/rs256-test-private.pem");
const RS256_PUBLIC_PEM: &str = include_str!("fixtures/rs256-test-public.pem");

fn in_an_hour() -> u64 {
    unix_now() + 3600
}

fn rs256_token(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RS256_PRIVATE_PEM.as_bytes()).expect("the test key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("signing")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with a hand-written header, signed with HS256 under `secret`
/// whatever the header claims (how forged headers are built).
fn with_header(header: &Value, claims: &Value, secret: &str) -> String {
    use hmac::Mac;
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A gateway that accepts RS256 tokens from the test key next to HS256.
async fn spawn_with_rs256() -> (TestApp, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("a key dir");
    let pem = keys.path().join("rs256.pem");
    std::fs::write(&pem, RS256_PUBLIC_PEM).expect("writing the public key");
    let app = spawn_app_with(&["--jwt-rs256-public-key", pem.to_str().expect("UTF-8")]).await;
    (app, keys)
}

/// The server still answers after the attacks: nothing crashed.
async fn assert_still_serving(app: &TestApp) {
    let (status, _) = rest_sync(app, Some(&app.token("alice"))).await;
    assert_eq!(status, 200, "a valid token still works after the attacks");
    assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
}

#[tokio::test]
async fn alg_none_tokens_in_every_spelling_are_refused() {
    let app = spawn_app().await;
    let claims = json!({"sub": "alice", "exp": in_an_hour()});
    let payload = b64(claims.to_string().as_bytes());
    let mut cases = vec![(
        "alg none, no signature".to_owned(),
        alg_none(&app.token("alice")),
    )];
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        cases.push((
            format!("alg {alg:?}, empty signature"),
            format!("{header}.{payload}."),
        ));
        // A "none" token that carries a real HS256 signature of itself.
        let signed = with_header(&json!({"alg": alg, "typ": "JWT"}), &claims, SECRET);
        cases.push((format!("alg {alg:?}, HMAC-signed"), signed));
    }
    for (what, token) in &cases {
        assert_refused(&app, what, Some(token)).await;
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rs256_public_key_is_refused() {
    let (app, _keys) = spawn_with_rs256().await;
    let claims = json!({"sub": "mallory", "exp": in_an_hour()});
    // The control: a real RS256 token of the configured key is accepted.
    assert_eq!(rest_sync(&app, Some(&rs256_token(&claims))).await.0, 200);
    let url = app.ws_url(&format!("token={}", rs256_token(&claims)));
    assert_eq!(upgrade_status(url).await, 101);

    let confused = mint_hs256(&claims, RS256_PUBLIC_PEM);
    assert_refused(
        &app,
        "HS256 keyed with the RS256 public PEM",
        Some(&confused),
    )
    .await;
    let trimmed = mint_hs256(&claims, RS256_PUBLIC_PEM.trim());
    assert_refused(&app, "HS256 keyed with the trimmed PEM", Some(&trimmed)).await;
    // An RS256 header over an HMAC signature is checked as RSA, and fails.
    let relabelled = with_header(&json!({"alg": "RS256"}), &claims, RS256_PUBLIC_PEM);
    assert_refused(&app, "RS256 header, HMAC signature", Some(&relabelled)).await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_rs256_token_is_refused_where_no_rs256_key_is_configured() {
    let app = spawn_app().await;
    let token = rs256_token(&json!({"sub": "alice", "exp": in_an_hour()}));
    assert_refused(&app, "RS256 without a key", Some(&token)).await;
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_or_audience_is_refused_when_configured() {
    let app = spawn_app_with(&[
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "chat",
    ])
    .await;
    let exp = in_an_hour();
    let good = json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "chat"});
    assert_eq!(
        rest_sync(&app, Some(&mint_hs256(&good, SECRET))).await.0,
        200
    );
    let list_aud =
        json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": ["other", "chat"]});
    assert_eq!(
        rest_sync(&app, Some(&mint_hs256(&list_aud, SECRET)))
            .await
            .0,
        200,
        "an audience list that contains ours is accepted"
    );
    let cases = [
        (
            "wrong iss",
            json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "chat"}),
        ),
        (
            "wrong aud",
            json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "billing"}),
        ),
        ("no iss", json!({"sub": "alice", "exp": exp, "aud": "chat"})),
        (
            "no aud",
            json!({"sub": "alice", "exp": exp, "iss": "https://id.example"}),
        ),
        (
            "iss of the wrong type",
            json!({"sub": "alice", "exp": exp, "iss": 7, "aud": "chat"}),
        ),
    ];
    for (what, claims) in &cases {
        assert_refused(&app, what, Some(&mint_hs256(claims, SECRET))).await;
    }
    assert_refused(
        &app,
        "a plain token without iss/aud",
        Some(&app.token("alice")),
    )
    .await;
}

#[tokio::test]
async fn stale_early_and_exp_less_tokens_are_refused() {
    let app = spawn_app().await;
    let now = unix_now();
    let cases = [
        (
            "expired an hour ago",
            json!({"sub": "alice", "exp": now - 3600}),
        ),
        (
            "expired past the 30 s leeway",
            json!({"sub": "alice", "exp": now - 120}),
        ),
        (
            "not valid for an hour (nbf)",
            json!({"sub": "alice", "exp": now + 7200, "nbf": now + 3600}),
        ),
        ("no exp", json!({"sub": "alice"})),
        (
            "exp as a string",
            json!({"sub": "alice", "exp": (now + 3600).to_string()}),
        ),
        ("exp negative", json!({"sub": "alice", "exp": -1})),
        ("exp beyond u64", json!({"sub": "alice", "exp": 1e30})),
    ];
    for (what, claims) in &cases {
        assert_refused(&app, what, Some(&mint_hs256(claims, SECRET))).await;
    }
    // The control: a token whose nbf has passed is accepted.
    let valid_now = json!({"sub": "alice", "exp": now + 3600, "nbf": now - 10});
    assert_eq!(
        rest_sync(&app, Some(&mint_hs256(&valid_now, SECRET)))
            .await
            .0,
        200
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn oversized_tokens_are_refused_without_being_parsed() {
    let app = spawn_app().await;
    let padding = "p".repeat(10 * 1024);
    let big = mint_hs256(
        &json!({"sub": "alice", "exp": in_an_hour(), "pad": padding}),
        SECRET,
    );
    assert!(big.len() > 8 * 1024);
    assert_refused(&app, "a validly signed 13 KiB token", Some(&big)).await;
    let junk = "a".repeat(32 * 1024);
    assert_refused(&app, "32 KiB of junk", Some(&junk)).await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn tokens_for_user_ids_outside_the_alphabet_are_refused() {
    let app = spawn_app().await;
    let too_long = "a".repeat(65);
    let subjects: [Value; 10] = [
        json!("bad user!"),
        json!(""),
        json!("-alice"),
        json!(too_long),
        json!("caf\u{e9}"),
        json!("alice\n"),
        json!("alice/../bob"),
        json!(42),
        json!(null),
        json!(["alice"]),
    ];
    for sub in &subjects {
        let token = mint_hs256(&json!({"sub": sub, "exp": in_an_hour()}), SECRET);
        assert_refused(&app, &format!("sub {sub}"), Some(&token)).await;
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn tampered_and_malformed_tokens_are_refused() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let parts: Vec<&str> = alice.split('.').collect();
    let bob_parts: Vec<&str> = bob.split('.').collect();
    let cases = [
        (
            "bob's payload under alice's signature",
            format!("{}.{}.{}", parts[0], bob_parts[1], parts[2]),
        ),
        (
            "signature cut short",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..10]),
        ),
        ("no signature segment", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{alice}.x")),
        (
            "payload not base64",
            format!("{}.!!!.{}", parts[0], parts[2]),
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64(b"nope"), parts[1], parts[2]),
        ),
        (
            "a kid and jku pointing elsewhere, another secret",
            with_header(
                &json!({"alg": "HS256", "kid": "../../dev/null", "jku": "https://evil.example/keys"}),
                &json!({"sub": "alice", "exp": in_an_hour()}),
                "",
            ),
        ),
        (
            "an empty HMAC key",
            mint_hs256(&json!({"sub": "alice", "exp": in_an_hour()}), ""),
        ),
        ("only dots", "..".to_owned()),
    ];
    for (what, token) in &cases {
        assert_refused(&app, what, Some(token)).await;
    }
    assert_still_serving(&app).await;
}

//! Secrets stay secret: the real binary, logging at debug level for every
//! crate, is sent tokens every way a client can (header, `?token=`, dev
//! token minting, refused tokens) and its whole log is searched for them
//! and for the generated HS256 secret; that secret's file is mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};

use crate::helpers::{WAIT, WsClient, mint_hs256, unix_now};
use crate::kill9::free_port;

/// Starts the binary with no `--jwt-secret` (so it generates one), dev auth
/// on, and `RUST_LOG=debug`, its stdout and stderr going to `log`.
fn start(data_dir: &Path, log: &Path, addr: std::net::SocketAddr) -> Child {
    let out = std::fs::File::create(log).expect("creating the log file");
    let err = out.try_clone().expect("cloning the log handle");
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--dev-auth", "true"])
        .env("RUST_LOG", "debug")
        .env_remove("CHAT_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("starting the gateway binary")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway was not ready within 10 s");
}

/// SIGTERM, then wait: a graceful exit writes every log line.
async fn stop(mut child: Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the gateway exits in time")
        .expect("waiting for the gateway");
    assert!(exit.success(), "graceful exit: {exit}");
}

#[tokio::test]
async fn no_token_or_secret_appears_in_a_debug_log_and_the_secret_file_is_0600() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let log = dir.path().join("gateway.log");
    let addr = free_port();
    let base = format!("http://{addr}");
    let child = start(&dir.path().join("data"), &log, addr);
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let secret_file = dir.path().join("data").join("jwt-secret");
    let mode = std::fs::metadata(&secret_file)
        .expect("the secret file exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let secret = std::fs::read_to_string(&secret_file).expect("reading the secret");

    let minted = http
        .post(format!("{base}/v1/dev/token"))
        .json(&json!({"user": "alice"}))
        .timeout(WAIT)
        .send()
        .await
        .expect("minting");
    let dev_token = minted.json::<serde_json::Value>().await.expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let own_token = mint_hs256(
        &json!({"sub": "bob", "exp": unix_now() + 3600}),
        secret.trim(),
    );
    let refused = mint_hs256(
        &json!({"sub": "bob", "exp": unix_now() + 3600}),
        "wrong-secret",
    );

    for token in [&dev_token, &own_token, &refused] {
        let response = http
            .get(format!("{base}/v1/sync?since=0"))
            .bearer_auth(token)
            .timeout(WAIT)
            .send()
            .await
            .expect("a sync");
        assert!(response.status().is_success() || response.status().as_u16() == 401);
    }
    let mut alice = WsClient::connect(format!("ws://{addr}/v1/ws?token={dev_token}&device=phone"))
        .await
        .expect("a query-token upgrade");
    alice.send("bob", "c-1", "hello").await;
    alice.close().await;
    let mut bob = WsClient::connect(format!("ws://{addr}/v1/ws?token={own_token}"))
        .await
        .expect("a second upgrade");
    assert_eq!(bob.sync_all(0).await.len(), 1);
    bob.close().await;
    stop(child).await;

    let log = std::fs::read_to_string(&log).expect("reading the log");
    // The control: requests were logged at debug level, so the search below can fail.
    assert!(
        log.contains("/v1/ws") && log.contains("/v1/sync"),
        "debug request logs:\n{log}"
    );
    assert!(
        !log.contains(secret.trim()),
        "the HS256 secret is in the log"
    );
    for token in [&dev_token, &own_token, &refused] {
        let signature = token.rsplit('.').next().expect("a signature");
        assert!(
            !log.contains(signature),
            "a token signature is in the log:\n{log}"
        );
        assert!(!log.contains(token.as_str()), "a token is in the log");
    }
}

//! The harness: the real gateway on port 0 with a fresh data dir, tokens
//! minted with the test secret, HTTP calls. Every wait for the server is
//! bounded by [`WAIT`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use gateway::state::AppState;
use gateway::{App, Config};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::ws_client::{Ended, WsClient};

/// The HS256 secret every test gateway is started with.
pub const SECRET: &str = "gateway-integration-tests-secret";
/// The longest a single wait for the server may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a whole graceful shutdown may take (drain window plus margins).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A gateway serving on a tokio task, stopped through a oneshot.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A plain HTTP client for the REST routes.
    pub http: reqwest::Client,
    /// A clone of the server's state, dropped before the server is awaited
    /// (it holds the store, which a restart must be able to reopen).
    state: Option<AppState>,
    dir: TempDir,
    extra: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<gateway::Result<()>>,
}

/// A gateway with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A gateway with extra command-line flags (`["--drain-secs", "1"]`).
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("creating a temporary data dir");
    start(dir, extra.iter().map(ToString::to_string).collect()).await
}

/// The configuration of a test gateway on `data_dir`: the flags a binary would get.
pub fn config(data_dir: &Path, extra: &[String]) -> Config {
    let dir = data_dir.to_str().expect("the temporary dir is UTF-8");
    let base = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--jwt-secret",
        SECRET,
        "--dev-auth",
        "false",
    ];
    let args = base.into_iter().chain(extra.iter().map(String::as_str));
    Config::try_parse_from(args).expect("the test flags parse")
}

async fn start(dir: TempDir, extra: Vec<String>) -> TestApp {
    let app = App::build(&config(dir.path(), &extra))
        .await
        .expect("building the gateway");
    let addr = app.local_addr().expect("reading the bound address");
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    // A dropped sender also stops the server, so a finished test cleans up.
    let server = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        state: Some(state),
        dir,
        extra,
        stop: Some(stop),
        server,
    }
}

impl TestApp {
    /// An HS256 token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        mint_hs256(&json!({"sub": user, "exp": unix_now() + 3600}), SECRET)
    }

    /// The WebSocket URL with the given query string.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// An HTTP URL of this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A connected, registered WebSocket client of `user` on `device`.
    pub async fn ws(&self, user: &str, device: &str) -> WsClient {
        let url = self.ws_url(&format!("token={}&device={device}", self.token(user)));
        WsClient::connect(url)
            .await
            .unwrap_or_else(|err| panic!("{user}/{device} could not connect: {err}"))
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path)).timeout(WAIT);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the HTTP request completes")
    }

    /// A group of `creator` and `members`, made over REST: the conversation.
    pub async fn create_group(&self, creator: &str, members: &[&str]) -> Value {
        let body = serde_json::json!({ "members": members });
        let token = self.token(creator);
        let response = self.post_json("/v1/conversations", &token, &body).await;
        let (status, group) = status_and_json(response).await;
        assert_eq!(status, 201, "{group}");
        group
    }

    /// The id of a new group of `creator` and `members`.
    pub async fn group(&self, creator: &str, members: &[&str]) -> String {
        let group = self.create_group(creator, members).await;
        group["conv_id"].as_str().expect("a conv_id").to_owned()
    }

    /// `PATCH path` with a JSON body and a bearer token.
    pub async fn patch_json(&self, path: &str, bearer: &str, body: &Value) -> reqwest::Response {
        self.with_json(reqwest::Method::PATCH, path, bearer, body)
            .await
    }

    /// `POST path` with a JSON body and a bearer token.
    pub async fn post_json(&self, path: &str, bearer: &str, body: &Value) -> reqwest::Response {
        self.with_json(reqwest::Method::POST, path, bearer, body)
            .await
    }

    async fn with_json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .timeout(WAIT)
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .expect("the HTTP request completes")
    }

    /// `DELETE path` with a bearer token.
    pub async fn delete(&self, path: &str, bearer: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .timeout(WAIT)
            .bearer_auth(bearer)
            .send()
            .await
            .expect("the HTTP request completes")
    }

    /// The server's shared state (to hold its per-user limits in a test).
    pub fn state(&self) -> &AppState {
        self.state
            .as_ref()
            .expect("the state is kept until shutdown")
    }

    /// Whether the server says it takes new work (read from its state).
    pub fn is_ready(&self) -> bool {
        self.state.as_ref().is_some_and(AppState::is_ready)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down (if not begun yet), asserts `run` returned `Ok`, and hands
    /// back the data dir.
    pub async fn stop(mut self) -> TempDir {
        self.begin_shutdown();
        drop(self.state.take());
        let result = tokio::time::timeout(STOP_WAIT, self.server)
            .await
            .expect("run() returns within the drain window")
            .expect("the server task does not panic");
        if let Err(err) = result {
            panic!("run() failed: {err:?}");
        }
        self.dir
    }

    /// Stops gracefully, then starts a new gateway on the same data dir and flags.
    pub async fn restart(self) -> TestApp {
        let extra = self.extra.clone();
        let dir = self.stop().await;
        start(dir, extra).await
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// An HS256 token with arbitrary claims.
pub fn mint_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encoding a token")
}

/// A response's status and JSON body (`Null` when the body is not JSON).
pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The `client_msg_id`s of inbox entries, in order.
pub fn msg_ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["client_msg_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A frame's integer field.
pub fn u64_of(frame: &Value, field: &str) -> u64 {
    frame[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an integer in {frame}"))
}

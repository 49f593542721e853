//! One local cluster per test: `deploy/local/cluster.sh up` with a fresh
//! `CLUSTER_DIR`, debug binaries and a random JWT secret; `down` when the
//! [`Cluster`] is dropped (a panicking test included, which also prints the
//! tail of every process log and keeps the state dir).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use rand::Rng;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::Command;

use crate::helpers::WAIT;
use crate::ws_client::WsClient;

/// The cluster script of the repository.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/cluster.sh");
/// `up` runs `cargo build` first: generous, for a build that waits on a lock.
const UP_WAIT: Duration = Duration::from_secs(900);
/// The processes `cluster.sh` starts, by the names of their pid and log files.
const PROCESSES: [&str; 5] = ["redis", "msg-service", "gateway1", "gateway2", "haproxy"];

/// A running local cluster; stopped with `cluster.sh down` when dropped.
pub struct Cluster {
    dir: Option<TempDir>,
    secret: String,
    /// The load balancer's base URL (`http://127.0.0.1:port`).
    pub lb: String,
    /// Gateway 1's base URL, bypassing the load balancer.
    pub gw1: String,
    /// Gateway 2's base URL, bypassing the load balancer.
    pub gw2: String,
    /// A plain HTTP client.
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts a cluster and waits until `up` says it is ready.
    pub async fn up() -> Cluster {
        Cluster::try_up(&[])
            .await
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Runs `up` with `env` added to its environment: the cluster once it is
    /// ready, or how `up` failed (its status and stderr; what it started is
    /// stopped).
    pub async fn try_up(env: &[(&str, &str)]) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("chat-cluster-")
            .tempdir()
            .expect("creating the cluster dir");
        let secret = hex(&rand::rng().random::<[u8; 32]>());
        // Built before `up` runs, so that a failing `up` is cleaned up too.
        let mut cluster = Cluster {
            dir: Some(dir),
            secret,
            lb: String::new(),
            gw1: String::new(),
            gw2: String::new(),
            http: reqwest::Client::new(),
        };
        let up = Command::new(SCRIPT)
            .arg("up")
            .env("CLUSTER_DIR", cluster.dir())
            .env("CLUSTER_PROFILE", "debug")
            .env("CHAT_JWT_SECRET", &cluster.secret)
            .env("CLUSTER_DEV_AUTH", "false")
            // One msg-service on its embedded store: these tests kill and
            // restart it (the replicas are tested by scripts/faults.sh).
            .env("CLUSTER_STORE", "embedded")
            // Free ports for parallel clusters, and msg-service's default limits.
            .env_remove("CLUSTER_PORT")
            .env_remove("CLUSTER_MSG_FLAGS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(UP_WAIT, up)
            .await
            .expect("cluster.sh up finishes in time")
            .expect("running cluster.sh up");
        if !output.status.success() {
            return Err(format!(
                "cluster.sh up failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let lb = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let endpoints = std::fs::read_to_string(cluster.dir().join("endpoints"))
            .expect("reading the endpoints file");
        let endpoints: HashMap<&str, &str> = endpoints
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        assert!(
            lb.starts_with("http://"),
            "up prints the balancer's URL: {lb}"
        );
        cluster.gw1 = endpoints["gw1"].to_owned();
        cluster.gw2 = endpoints["gw2"].to_owned();
        cluster.lb = lb;
        Ok(cluster)
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the dir is kept until drop")
            .path()
    }

    /// An HS256 token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs()
            + 3600;
        jsonwebtoken::encode(
            &Header::default(),
            &json!({"sub": user, "exp": exp}),
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("encoding a token")
    }

    /// The WebSocket URL of `base` (the balancer or a gateway) for `user` on `device`.
    pub fn ws_url(&self, base: &str, user: &str, device: &str) -> String {
        let host = base
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("an http:// base URL: {base}"));
        format!(
            "ws://{host}/v1/ws?token={}&device={device}",
            self.token(user)
        )
    }

    /// A connected, registered client of `user` on `device` through `base`.
    pub async fn ws(&self, base: &str, user: &str, device: &str) -> WsClient {
        WsClient::connect(self.ws_url(base, user, device))
            .await
            .unwrap_or_else(|err| panic!("{user}/{device} could not connect to {base}: {err}"))
    }

    /// The store writes msg-service counted so far (its `/metrics`), but
    /// the retry worker's own bookkeeping (its checkpoint and watermark,
    /// saved on its timer).
    pub async fn store_writes(&self) -> f64 {
        let urls = std::fs::read_to_string(self.dir().join("replica-metrics"))
            .expect("reading the replicas' metrics addresses");
        let url = urls
            .lines()
            .find_map(|line| line.strip_prefix("msg-service="))
            .expect("msg-service's metrics address");
        let text = self
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("reading /metrics");
        text.lines()
            .filter(|line| line.starts_with("chat_store_writes_total"))
            .filter(|line| {
                !line.contains("save_fanout_watermark") && !line.contains("save_retry_checkpoint")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The number of open WebSocket sessions `base` reports on `/metrics`.
    pub async fn ws_connections(&self, base: &str) -> u64 {
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .timeout(WAIT)
            .send()
            .await
            .expect("GET /metrics")
            .error_for_status()
            .expect("/metrics answers 200")
            .text()
            .await
            .expect("reading /metrics");
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("chat_ws_connections "))
            // The gauge appears with the first session.
            .unwrap_or("0");
        let value: f64 = value.trim().parse().expect("the gauge is a number");
        assert!(value >= 0.0 && value.fract() == 0.0, "a count: {value}");
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be a small non-negative integer"
        )]
        let count = value as u64;
        count
    }

    /// Runs `cluster.sh ACTION NAME` (`kill9` or `restart` one part).
    pub async fn part(&self, action: &str, name: &str) {
        let output = Command::new(SCRIPT)
            .args([action, name])
            .env("CLUSTER_DIR", self.dir())
            .env("CLUSTER_PROFILE", "debug")
            .env("CHAT_JWT_SECRET", &self.secret)
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(UP_WAIT, output)
            .await
            .expect("cluster.sh finishes in time")
            .expect("running cluster.sh");
        assert!(
            output.status.success(),
            "cluster.sh {action} {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The pid `cluster.sh` recorded for `name` (`gateway1`, ...).
    pub fn pid(&self, name: &str) -> u32 {
        let path = self.dir().join(format!("{name}.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Sends SIGTERM to `name`.
    pub async fn terminate(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid(name).to_string()])
            .status()
            .await
            .expect("running kill");
        assert!(status.success(), "kill -TERM {name}: {status}");
    }

    /// Polls until `name` has exited, at most `within`.
    pub async fn wait_exited(&self, name: &str, within: Duration) {
        let pid = self.pid(name);
        let deadline = Instant::now() + within;
        while !has_exited(pid) {
            assert!(
                Instant::now() < deadline,
                "{name} (pid {pid}) still runs after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What `down` does, for when it fails: no process of this test outlives it.
    fn stop_by_pid_files(&self) {
        for name in PROCESSES.iter().rev() {
            let Ok(pid) = std::fs::read_to_string(self.dir().join(format!("{name}.pid"))) else {
                continue;
            };
            let pid = pid.trim();
            let Ok(number) = pid.parse::<u32>() else {
                continue;
            };
            let kill = |signal: &str| {
                let _ = std::process::Command::new("kill")
                    .args([signal, pid])
                    .stderr(Stdio::null())
                    .status();
            };
            kill("-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !has_exited(number) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !has_exited(number) {
                kill("-KILL");
            }
        }
    }

    fn print_logs(&self) {
        for name in PROCESSES {
            let path = self.dir().join(format!("{name}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("----- {} (last 40 lines) -----\n{tail}", path.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = std::process::Command::new(SCRIPT)
            .arg("down")
            .env("CLUSTER_DIR", self.dir())
            .env("CLUSTER_PROFILE", "debug")
            .stdin(Stdio::null())
            .output();
        let stopped = match down {
            Ok(output) if output.status.success() => true,
            Ok(output) => {
                eprintln!(
                    "cluster.sh down failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
                false
            }
            Err(err) => {
                eprintln!("running cluster.sh down: {err}");
                false
            }
        };
        if !stopped {
            self.stop_by_pid_files();
        }
        if std::thread::panicking() {
            self.print_logs();
            if let Some(dir) = self.dir.take() {
                let kept: PathBuf = dir.keep();
                eprintln!(
                    "the cluster's state and logs are kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// Whether `pid` is gone or a zombie (nobody may reap it soon: in some
/// containers the init process does not, or does so late).
fn has_exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "pid (comm) S ...": the state follows the last ')', comm may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

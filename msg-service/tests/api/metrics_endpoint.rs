//! `msg-service --metrics-listen`: the process exports its own metrics
//! (store breaker, bulkheads, retry queue), which the gateways cannot show
//! in the distributed mode.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cache_support::RedisServer;

/// Kills the server when the test ends, whatever happens.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /metrics` once; `None` while nothing listens yet.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[tokio::test]
async fn msg_service_serves_its_metrics_on_the_metrics_address() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir()?;
    let (grpc, metrics) = (free_port()?, free_port()?);
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_msg-service"))
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(["--redis", &redis.url()])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting msg-service")?,
    );
    // The endpoint answers from the start; the store's breaker appears once
    // the store is open.
    let gauge = r#"chat_breaker_state{breaker="store"} 0"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = tokio::task::spawn_blocking(move || scrape(metrics)).await?;
        if last.as_deref().is_some_and(|a| a.contains(gauge)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(answer) = last else {
        bail!("no /metrics on port {metrics} within 30 s");
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(gauge),
        "the store breaker's gauge, closed: {answer}"
    );
    Ok(())
}

//! The gateway binary: parse flags, set up logging, build, serve until SIGTERM or ctrl-c.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use gateway::{App, Config};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

// glibc's malloc took a quarter of the gateway's CPU under load (free-list
// splitting and consolidation across worker threads); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colour codes only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let app = App::build(&config).await.context("building the server")?;
    let addr = app.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "listening on http://{addr}");
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested");
    };
    app.run(shutdown).await.context("serving")?;
    Ok(())
}

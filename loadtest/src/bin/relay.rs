//! `relay`: the baseline WebSocket relay (see `loadtest::relay`).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Minimal WebSocket relay: the baseline the chat server is measured against")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// HS256 secret the tokens are signed with.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    loadtest::relay::run(args.listen, args.jwt_secret).await
}

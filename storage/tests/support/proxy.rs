//! A TCP proxy whose existing connections can be frozen: kept open, but no
//! byte passes any more (a dead peer or a NAT that dropped the flow, where
//! no FIN or RST ever arrives). New connections pass again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:<port> to a local upstream port.
pub struct FreezingProxy {
    port: u16,
    /// Connections accepted in an earlier epoch are frozen.
    epoch: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl FreezingProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let epoch = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept(listener, upstream, Arc::clone(&epoch)));
        FreezingProxy {
            port,
            epoch,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every connection open now stops passing bytes, for good.
    pub fn freeze_connections(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, upstream: u16, epoch: Arc<AtomicU64>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
            continue;
        };
        let born = epoch.load(Ordering::SeqCst);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pipe(client_read, server_write, born, Arc::clone(&epoch)));
        tokio::spawn(pipe(server_read, client_write, born, Arc::clone(&epoch)));
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, born: u64, epoch: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born {
            // Frozen: hold both sockets open and pass nothing, ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

//! Connections that end without a reset. When the server is done with a
//! connection while the client is still sending (a WebSocket message cut
//! off as too large, a request body past its bound), closing the socket
//! with that input unread makes the kernel answer with a reset, which can
//! destroy the last frames before the client reads them (a balancer in
//! between aborts the client's side outright). So a connection the server
//! drops is shut down for writing (the client reads to the end of what was
//! sent) and its input read and dropped until the client closes too, within
//! a bound of bytes and time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// At most this much input is read and dropped after the server is done.
const MAX_LINGER_BYTES: usize = 8 * 1024 * 1024;

/// At most this long a connection is kept after the server is done.
const MAX_LINGER_TIME: Duration = Duration::from_secs(5);

/// A listener whose connections linger when dropped.
pub struct Lingering<L>(pub L);

impl<L: Listener<Io = TcpStream>> Listener for Lingering<L> {
    type Io = LingeringStream;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = self.0.accept().await;
        (LingeringStream(Some(stream)), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP connection that lingers when dropped (always `Some` until then).
pub struct LingeringStream(Option<TcpStream>);

impl LingeringStream {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

/// Runs `op` on the stream, or fails when it is gone.
fn with_stream<T>(
    this: Pin<&mut LingeringStream>,
    op: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match this.get_mut().stream() {
        Ok(stream) => op(stream),
        Err(err) => Poll::Ready(Err(err)),
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream(self, |s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream(self, |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_stream(self, |s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream(self, |s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream(self, |s| s.poll_shutdown(cx))
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.0.take() else {
            return;
        };
        // Outside a runtime (the process is ending) the socket just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Shuts the write side, then reads and drops input until the client
/// closes, for at most the bounds.
async fn linger(mut stream: TcpStream) {
    // Already shut down by hyper on most paths; a second shutdown is harmless.
    let _ = stream.shutdown().await;
    let read = async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut total = 0;
        while total <= MAX_LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(MAX_LINGER_TIME, read).await;
}

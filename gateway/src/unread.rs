//! Request bodies a handler left unread (a refusal answered before the
//! body was read: 413, 401, 404) are read to their end, up to a bound,
//! before the answer goes out. A connection closed with unread input makes
//! the kernel send a reset, and the client (or a balancer in between) then
//! loses the answer it was about to read.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

/// At most this much of an unread body is read and dropped; past it the
/// connection is closed as before.
const MAX_DRAIN_BYTES: usize = 8 * 1024 * 1024;

/// At most this long is spent reading an unread body (a client that sends
/// slowly gets its answer after this instead of holding the request).
const MAX_DRAIN_TIME: Duration = Duration::from_secs(5);

/// Middleware: runs the request, then reads what is left of its body.
pub async fn drain_body(request: Request, next: Next) -> Response {
    // A client waiting for `100 Continue` has not sent its body: reading
    // would only invite it to.
    if request.headers().contains_key(header::EXPECT) || request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let (body, mut unread) = GivenBack::wrap(body);
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Ok(rest) = unread.try_recv() {
        discard(rest).await;
    }
    response
}

/// Reads and drops `rest`, within the bounds.
async fn discard(mut rest: BodyDataStream) {
    let read = async {
        let mut total = 0;
        while let Some(Ok(chunk)) = rest.next().await {
            total += chunk.len();
            if total > MAX_DRAIN_BYTES {
                tracing::debug!(total, "an unread request body is over the drain bound");
                return;
            }
        }
    };
    if tokio::time::timeout(MAX_DRAIN_TIME, read).await.is_err() {
        tracing::debug!("an unread request body did not end within the drain time");
    }
}

/// The body a handler gets: the request's, handed back when dropped before
/// its end.
struct GivenBack {
    data: Option<BodyDataStream>,
    back: Option<oneshot::Sender<BodyDataStream>>,
}

impl GivenBack {
    fn wrap(body: Body) -> (Body, oneshot::Receiver<BodyDataStream>) {
        let (back, unread) = oneshot::channel();
        let given = GivenBack {
            data: Some(body.into_data_stream()),
            back: Some(back),
        };
        (Body::from_stream(given), unread)
    }
}

impl Stream for GivenBack {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(data) = self.data.as_mut() else {
            return Poll::Ready(None);
        };
        let next = data.poll_next_unpin(cx);
        if matches!(next, Poll::Ready(None)) {
            // Read to its end: nothing to give back.
            self.data = None;
        }
        next
    }
}

impl Drop for GivenBack {
    fn drop(&mut self) {
        if let (Some(data), Some(back)) = (self.data.take(), self.back.take()) {
            // The middleware may be gone (its request cancelled): then the
            // body just drops.
            let _ = back.send(data);
        }
    }
}

//! A WebSocket client of the protocol: one typed helper per call, replies
//! matched by `rid`, every other frame (notify, goaway) kept for
//! `next_frame_of_type`. Every read is bounded by [`WAIT`].

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{WAIT, u64_of};

/// Why a socket stopped giving frames.
#[derive(Debug)]
pub enum Ended {
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The stream ended or failed without a close frame, and why.
    Dropped(#[allow(dead_code, reason = "shown through Debug in failures")] String),
}

/// A WebSocket client that answers by `rid` and keeps every other frame
/// (notify, goaway) for the `next_frame_of_type` calls.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_rid: u64,
}

impl WsClient {
    /// Connects, then pings: the reply proves the session is registered for notifies.
    pub async fn connect<R>(request: R) -> Result<Self, tungstenite::Error>
    where
        R: IntoClientRequest + Unpin,
    {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the WebSocket handshake finishes in time")?;
        let mut client = WsClient {
            stream,
            pending: VecDeque::new(),
            next_rid: 1,
        };
        let pong = client.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong", "a ping is answered: {pong}");
        Ok(client)
    }

    /// Sends one JSON frame.
    pub async fn send_frame(&mut self, frame: &Value) {
        tokio::time::timeout(WAIT, self.stream.send(Message::text(frame.to_string())))
            .await
            .expect("sending a frame finishes in time")
            .expect("sending a frame");
    }

    /// Sends one WebSocket message of any kind (binary, ping, raw text).
    pub async fn send_message(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(WAIT, self.stream.send(message))
            .await
            .expect("sending a message finishes in time")
    }

    /// The next text frame from the socket (not from the kept frames), or why there is none.
    pub async fn try_next_frame(&mut self) -> Result<Value, Ended> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame or the end of the socket arrives in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("server frames are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ended::Closed(frame.map(|f| f.code.into())));
                }
                Some(Ok(other)) => assert!(
                    matches!(other, Message::Ping(_) | Message::Pong(_)),
                    "unexpected message {other:?}"
                ),
                Some(Err(err)) => return Err(Ended::Dropped(err.to_string())),
                None => return Err(Ended::Dropped("end of stream".into())),
            }
        }
    }

    async fn next_frame(&mut self) -> Value {
        self.try_next_frame()
            .await
            .unwrap_or_else(|ended| panic!("the socket ended: {ended:?}"))
    }

    /// Sends `frame` with a fresh `rid` and returns the reply carrying it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let rid = self.next_rid;
        self.next_rid += 1;
        frame["rid"] = json!(rid);
        self.send_frame(&frame).await;
        loop {
            let reply = self.next_frame().await;
            if reply["rid"] == json!(rid) {
                return reply;
            }
            self.pending.push_back(reply);
        }
    }

    /// Sends a direct message to `to`; panics unless it is acked.
    pub async fn send(&mut self, to: &str, client_msg_id: &str, body: &str) -> Value {
        let frame = json!({"type": "send", "to": to, "client_msg_id": client_msg_id, "body": body});
        let ack = self.request(frame).await;
        assert_eq!(ack["type"], "ack", "send {client_msg_id} is acked: {ack}");
        ack
    }

    /// One `sync` call.
    pub async fn sync(&mut self, since: u64) -> Value {
        let result = self.request(json!({"type": "sync", "since": since})).await;
        assert_eq!(result["type"], "sync_result", "a sync result: {result}");
        result
    }

    /// Every entry after `since`, paging while `more`.
    pub async fn sync_all(&mut self, mut since: u64) -> Vec<Value> {
        let mut entries = Vec::new();
        loop {
            let page = self.sync(since).await;
            let batch = page["entries"].as_array().expect("entries is an array");
            if let Some(last) = batch.last() {
                since = u64_of(last, "seq");
            }
            entries.extend(batch.iter().cloned());
            if page["more"] != json!(true) {
                return entries;
            }
        }
    }

    /// The next frame of type `kind`, kept or new; other frames are kept.
    pub async fn next_frame_of_type(&mut self, kind: &str) -> Value {
        if let Some(at) = self.pending.iter().position(|f| f["type"] == kind) {
            return self.pending.remove(at).expect("the position is in range");
        }
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == kind {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Waits for a `notify` whose head is at least `head` (notifies may be
    /// coalesced or repeated, so lower ones are skipped).
    pub async fn wait_notify(&mut self, head: u64) -> u64 {
        u64_of(&self.wait_notify_frame(head).await, "head")
    }

    /// [`Self::wait_notify`], answering the whole frame.
    pub async fn wait_notify_frame(&mut self, head: u64) -> Value {
        loop {
            let notify = self.next_frame_of_type("notify").await;
            if u64_of(&notify, "head") >= head {
                return notify;
            }
        }
    }

    /// Reads until the server closes the socket, skipping frames; the close code.
    pub async fn closed_by_server(&mut self) -> Ended {
        loop {
            if let Err(ended) = self.try_next_frame().await {
                return ended;
            }
        }
    }

    /// Sends `text`, a message over the size limit, and asserts the answer:
    /// a `too_large` error, then close 1009.
    pub async fn assert_refused_as_too_large(&mut self, text: &str) {
        self.send_message(Message::text(text))
            .await
            .expect("sending the oversized message");
        let error = self.try_next_frame().await;
        let error = error.unwrap_or_else(|ended| panic!("no error frame: {ended:?}"));
        assert_eq!(error["code"], "too_large", "{error}");
        let ended = self.closed_by_server().await;
        assert!(matches!(ended, Ended::Closed(Some(1009))), "{ended:?}");
    }

    /// Closes from the client side and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let _ = self.closed_by_server().await;
    }
}

/// A `send` frame of over 1 MB: far over the 64 KiB limit, so the WebSocket
/// layer cuts it off unread.
pub fn oversized_frame() -> String {
    json!({"type": "send", "to": "bob", "client_msg_id": "big", "body": "x".repeat(1024 * 1024)})
        .to_string()
}

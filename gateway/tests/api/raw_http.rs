//! A plain TCP HTTP/1.1 client for bodies larger than the server reads: it
//! writes the whole request, then reads the answer, and reports a reset on
//! either side instead of hiding it behind retries.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::WAIT;

/// The client's send buffer, in bytes.
const SEND_BUFFER: u32 = 64 * 1024;

/// What the server answered: status and body.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code.
    pub status: u16,
    /// The body, parsed as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// `POST path` with a JSON content type, a bearer token and a body of
/// `body_len` bytes; `Connection: close`, so the answer ends with the stream.
/// Panics on a reset (or any other failure) while writing or reading.
pub async fn post_large(addr: SocketAddr, path: &str, token: &str, body_len: usize) -> RawAnswer {
    exchange(addr, path, token, body_len)
        .await
        .unwrap_or_else(|err| panic!("POST {path}: no answer: {err}"))
}

async fn exchange(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body_len: usize,
) -> std::io::Result<RawAnswer> {
    let mut stream = tokio::time::timeout(WAIT, connect(addr))
        .await
        .expect("connecting in time")?;
    let body = large_json(body_len);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // Like a simple client: the whole request first, then the answer.
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map(|_| answer)
    };
    let answer = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the exchange finishes in time");
    parse(&answer?)
}

impl RawAnswer {
    /// Asserts the answer is `status` with the error body `{"code": code, "message": ...}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.json["code"].as_str()),
            (status, Some(code)),
            "{self:?}"
        );
        assert!(self.json["message"].is_string(), "a message: {self:?}");
    }
}

/// A connection with a small send buffer: the request goes out about as
/// fast as the server takes it, as over a real network (on loopback a 2 MB
/// request otherwise sits whole in the kernel's buffers before the server
/// reads any of it, and a server that stops reading goes unnoticed).
async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.connect(addr).await
}

/// A JSON send body of `len` bytes (more when `len` is under 34).
fn large_json(len: usize) -> Vec<u8> {
    let (start, end) = (br#"{"client_msg_id":"big","body":""#, br#""}"#);
    let filler = len.saturating_sub(start.len() + end.len());
    let mut body = start.to_vec();
    body.extend(std::iter::repeat_n(b'x', filler));
    body.extend_from_slice(end);
    body
}

fn parse(answer: &[u8]) -> std::io::Result<RawAnswer> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    Ok(RawAnswer {
        status,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    })
}

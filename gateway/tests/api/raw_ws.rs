//! A WebSocket client written over plain TCP, frame by frame: it sends what
//! a WebSocket library refuses to (a text frame that is not UTF-8) and stays
//! truly silent (no automatic pong), to see what the server does with both.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::WAIT;

/// Frame opcodes of RFC 6455.
pub mod opcode {
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
}

/// A client-side WebSocket on a raw TCP stream.
pub struct RawWs {
    tcp: TcpStream,
}

/// A frame the server sent.
#[derive(Debug)]
pub struct Frame {
    /// Its opcode.
    pub opcode: u8,
    /// Its (unmasked) payload.
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Upgrades `GET path_and_query` and checks the 101.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.expect("connecting");
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("writing the upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(WAIT, tcp.read_u8())
                .await
                .expect("the upgrade answer arrives in time")
                .expect("reading the upgrade answer");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        RawWs { tcp }
    }

    /// Sends one final frame, masked as a client must.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | u8::try_from(len).expect("under 126"));
        } else {
            frame.push(0x80 | 126);
            frame.extend(
                u16::try_from(len)
                    .expect("a test frame under 64 KiB")
                    .to_be_bytes(),
            );
        }
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.expect("writing a frame");
    }

    /// The next frame from the server (None once the connection ends).
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.read_frame())
            .await
            .expect("a frame or the end arrives in time")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 2];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.tcp.read_u16().await.ok()?),
            127 => self.tcp.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).expect("a frame that fits in memory")];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            opcode: head[0] & 0x0f,
            payload,
        })
    }

    /// Reads (never answering pings) until the server's close frame; the
    /// frames before it and the close code and reason.
    pub async fn until_close(&mut self) -> (Vec<Frame>, Option<(u16, String)>) {
        let mut before = Vec::new();
        while let Some(frame) = self.next().await {
            if frame.opcode == opcode::CLOSE {
                let close = (frame.payload.len() >= 2).then(|| {
                    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                    (
                        code,
                        String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
                    )
                });
                return (before, close);
            }
            before.push(frame);
        }
        (before, None)
    }
}

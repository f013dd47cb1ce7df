//! A WebSocket client built by hand on a TCP socket, for hostile-input tests.
//!
//! [`crate::Client`] speaks through tungstenite, which refuses to produce broken frames.
//! [`RawWs`] writes whatever it is told: any FIN/RSV/opcode combination, masked or not,
//! any length field (including one that lies), any HTTP upgrade request. It reads the
//! server's frames just enough to see how the connection ended ([`Ending`]).
//!
//! Frame layout (RFC 6455 §5.2), as [`frame`] encodes it:
//!
//! ```text
//!  byte 0: FIN | RSV1 | RSV2 | RSV3 | opcode(4)
//!  byte 1: MASK | len7          len7 = 126 → u16 follows, 127 → u64 follows
//!  [extended length] [masking key, 4 bytes, if MASK] [payload, XORed with the key]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parley_protocol::ids::RequestId;
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{self, ClientFrame, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::TestAccount;

/// Opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text data.
    pub const TEXT: u8 = 0x1;
    /// Binary data.
    pub const BINARY: u8 = 0x2;
    /// Close control frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping control frame.
    pub const PING: u8 = 0x9;
    /// Pong control frame.
    pub const PONG: u8 = 0xA;
}

/// The masking key every masked frame of this kit uses.
const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame to write, field by field.
#[derive(Clone, Debug)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (0b100 is RSV1).
    pub rsv: u8,
    /// The 4-bit opcode.
    pub opcode: u8,
    /// Whether to mask the payload (clients must).
    pub masked: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// A length to announce instead of the payload's real length.
    pub announced_len: Option<u64>,
}

impl RawFrame {
    /// A final, masked frame with no RSV bits: what a correct client sends.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> RawFrame {
        RawFrame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            payload: payload.into(),
            announced_len: None,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        frame(self)
    }
}

/// Encodes `f` on the wire.
pub fn frame(f: &RawFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.payload.len() + 14);
    out.push((u8::from(f.fin) << 7) | ((f.rsv & 0b111) << 4) | (f.opcode & 0x0f));
    let mask_bit = u8::from(f.masked) << 7;
    let len = f.announced_len.unwrap_or(f.payload.len() as u64);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if f.masked {
        out.extend_from_slice(&MASK_KEY);
        out.extend(
            f.payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ MASK_KEY[i % 4]),
        );
    } else {
        out.extend_from_slice(&f.payload);
    }
    out
}

/// How the server ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (1005 if it carried none).
    Close(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

/// The HTTP upgrade request a browser would send (no extensions).
pub fn upgrade_request(addr: SocketAddr, extra_headers: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extra_headers}\r\n"
    )
}

/// A raw WebSocket connection.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// The server's `101` response head, as text.
    pub response_head: String,
    buffered: Vec<u8>,
}

impl RawWs {
    /// Opens a TCP connection without upgrading it.
    pub async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
        RawWs::tcp_from(addr, None).await
    }

    /// Opens a TCP connection from `source` (another loopback address, to look like
    /// another client machine), without upgrading it.
    pub async fn tcp_from(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects and upgrades with [`upgrade_request`] plus `extra_headers` (each ending
    /// in `\r\n`); fails unless the answer is `101`.
    pub async fn connect_with(addr: SocketAddr, extra_headers: &str) -> anyhow::Result<RawWs> {
        RawWs::connect_from(addr, None, extra_headers).await
    }

    /// [`RawWs::connect_with`] from another source address.
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        extra_headers: &str,
    ) -> anyhow::Result<RawWs> {
        let mut stream = RawWs::tcp_from(addr, source).await?;
        stream
            .write_all(upgrade_request(addr, extra_headers).as_bytes())
            .await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await? == 0 {
                    bail!("connection closed during the upgrade");
                }
                head.push(byte[0]);
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), read_head)
            .await
            .context("no upgrade response")??;
        let response_head = String::from_utf8_lossy(&head).into_owned();
        if !response_head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {response_head}");
        }
        Ok(RawWs {
            stream,
            response_head,
            buffered: Vec::new(),
        })
    }

    /// Connects and upgrades with a plain request.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawWs> {
        RawWs::connect_with(addr, "").await
    }

    /// Writes `bytes` as they are.
    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes one frame.
    pub async fn send(&mut self, f: &RawFrame) -> anyhow::Result<()> {
        self.write(&f.encode()).await
    }

    /// Authenticates as `account`: reads `hello`, answers with a signed `auth` in a
    /// correct binary frame, and checks the reply.
    pub async fn login(&mut self, account: &TestAccount) -> anyhow::Result<()> {
        let hello = loop {
            match self.read_parley().await?.body {
                ServerBody::Hello(hello) => break hello,
                _ => continue,
            }
        };
        let frame = ClientFrame::new(RequestId(1), account.auth_body(&hello));
        self.send(&RawFrame::new(opcode::BINARY, wire::encode_client(&frame)?))
            .await?;
        match self.read_parley().await?.body {
            ServerBody::Authenticated(_) => Ok(()),
            other => bail!("login refused: {other:?}"),
        }
    }

    /// Reads the next Parley frame, skipping control frames.
    pub async fn read_parley(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            match self.read_frame().await? {
                Some((opcode::BINARY, payload)) => return Ok(wire::decode_server(&payload)?),
                Some((opcode::CLOSE, payload)) => bail!("closed: {payload:02x?}"),
                Some(_) => continue,
                None => bail!("connection ended"),
            }
        }
    }

    /// Reads the next server frame: (opcode, payload); `None` at end of stream.
    pub async fn read_frame(&mut self) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some((opcode, payload, used)) = parse_server_frame(&self.buffered)? {
                self.buffered.drain(..used);
                return Ok(Some((opcode, payload)));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server ends the connection (skipping data and control frames),
    /// waiting at most `limit`; returns how it ended and when.
    pub async fn ending(&mut self, limit: Duration) -> anyhow::Result<(Ending, Duration)> {
        let started = Instant::now();
        let wait = async {
            loop {
                match self.read_frame().await? {
                    None => return Ok::<_, anyhow::Error>(Ending::Dropped),
                    Some((opcode::CLOSE, payload)) => {
                        let code = match payload.get(..2) {
                            Some(code) => u16::from_be_bytes([code[0], code[1]]),
                            None => 1005,
                        };
                        return Ok(Ending::Close(code));
                    }
                    Some(_) => continue,
                }
            }
        };
        let ending = tokio::time::timeout(limit, wait)
            .await
            .with_context(|| format!("the server did not end the connection within {limit:?}"))??;
        Ok((ending, started.elapsed()))
    }
}

/// Parses one unmasked server frame from the front of `buf`.
/// Returns (opcode, payload, bytes used).
fn parse_server_frame(buf: &[u8]) -> anyhow::Result<Option<(u8, Vec<u8>, usize)>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        bail!("the server masked a frame");
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into()?), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)?;
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    at += len;
    Ok(Some((b0 & 0x0f, payload.to_vec(), at)))
}

/// Sends `request` (a complete or partial HTTP request) on a fresh TCP connection and
/// returns what the server answered before it closed or `limit` passed: the response
/// head, or an empty string if it closed without answering.
pub async fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let mut stream = RawWs::tcp(addr).await?;
    // The server may close before it has read everything; that is an answer too.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .with_context(|| format!("the server kept the connection open past {limit:?}"))?;
    Ok((
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    ))
}

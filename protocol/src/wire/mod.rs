//! Wire protocol v1: typed frames carried as WebSocket binary messages.
//!
//! * [`client`]: frames a client sends; [`server`]: frames the server sends.
//! * [`codec`]: the MessagePack encoding and the never-panicking decoders.
//! * [`error_code`]: stable error codes and close codes.
//!
//! The complete description, with byte-level examples, is `docs/protocol.md`.

pub mod client;
pub mod codec;
pub mod error_code;
pub mod server;

pub use client::{ClientBody, ClientFrame};
pub use codec::{decode_client, decode_server, encode_client, encode_server, DecodeError};
pub use error_code::{CloseCode, ErrorCode};
pub use server::{ServerBody, ServerFrame};

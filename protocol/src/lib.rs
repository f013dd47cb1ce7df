//! # parley-protocol
//!
//! Everything two Parley peers must agree on, with no I/O: no sockets, no clocks, no
//! thread-local randomness. Time and randomness are parameters.
//!
//! * [`ids`]: newtype identifiers (`AccountId`, `DeviceAddress`, `Seq`, ...).
//! * [`identity`], [`prekeys`]: identity keys and prekeys, public and secret halves.
//! * [`signature`]: domain-separated Ed25519 signatures; every label lives there.
//! * [`auth`]: the login and registration transcripts.
//! * [`devices`]: linked devices: the owner-signed device list and the linking code.
//! * [`business`]: business certificates, consent grants and revocations, categories,
//!   confusable names.
//! * [`wire`]: frames of wire protocol v1 and their MessagePack codec.
//! * [`limits`]: every protocol limit, in one place.
//! * [`duration`]: durations in settings (`10s`, `30d`), for every binary; no wire meaning.
//!
//! The server uses only the wire, id and verification parts (including the ML-KEM-768
//! encapsulation-key check on published KEM prekeys); end-to-end session cryptography is
//! for clients.
//!
//! ```
//! use parley_protocol::wire::{self, client::{Ack, ClientBody}, ClientFrame};
//! use parley_protocol::ids::{RequestId, Seq};
//!
//! let frame = ClientFrame::new(RequestId(1), ClientBody::Ack(Ack { through: Seq(42) }));
//! let bytes = wire::encode_client(&frame).unwrap();
//! assert_eq!(wire::decode_client(&bytes).unwrap(), frame);
//! ```

pub mod auth;
pub mod business;
pub mod devices;
pub mod duration;
pub mod e2e;
pub(crate) mod fixed_bytes;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod prekeys;
pub mod signature;
pub mod wire;

pub use fixed_bytes::to_hex;
pub use ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId, RequestId, Seq};
pub use limits::PROTOCOL_VERSION;

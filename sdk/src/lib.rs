//! # parley-sdk
//!
//! The client engine behind the `parley` CLI and business bots: it owns the connection,
//! the keys and the end-to-end sessions, and keeps everything in a local SQLite database
//! so that a client killed at any moment loses nothing it sent or acknowledged and shows
//! nothing twice.
//!
//! * [`Client`]: register, start, [`Client::send_text`], [`Client::next_event`].
//! * [`store::ClientStore`]: the local database (a file, or in memory for tests).
//! * [`Event`]: messages, cards, identity changes, connection state, and for businesses
//!   card answers, statuses and consent changes.
//! * [`link`]: linking a new device to the account (the existing device's
//!   [`link::LinkInvite`], the new device's [`link::NewDevice`]).
//! * [`person`]: consent grants and revocations, block, report, card answers.
//! * [`consent`]: the consent ledger's meaning, its export and offline verification.
//! * [`business_info`]: checking a business certificate against the pinned authority.
//! * [`bot`]: [`bot::BusinessBot`], the business side: categorised, idempotent sends
//!   with typed outcomes, broadcasts paced within the relay's limits.
//! * [`wire`]: the client side of wire protocol v1 with typed states (unauthenticated,
//!   then authenticated), shared with the test kit and the load generator.
//! * [`failover`]: several servers of one deployment ([`ServerList`]) and how the
//!   engine moves between them ([`Failover`]).
//!
//! Two clients talking through a server at `ws://127.0.0.1:7878` (compiled here, run
//! against a real server by `tests/tests/sdk_engine.rs`, since the SDK does not depend
//! on the server crate):
//!
//! ```no_run
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use parley_sdk::{Client, ClientConfig, Event, store::ClientStore};
//! use parley_protocol::Handle;
//! let config = ClientConfig::new("ws://127.0.0.1:7878");
//! let (alice_store, bob_store) = (Arc::new(ClientStore::in_memory()?), Arc::new(ClientStore::in_memory()?));
//! Client::register(&config, alice_store.clone(), Some(Handle::parse("alice")?)).await?;
//! Client::register(&config, bob_store.clone(), Some(Handle::parse("bob")?)).await?;
//!
//! let alice = Client::start(config.clone(), alice_store).await?;
//! let mut bob = Client::start(config, bob_store).await?;
//! alice.send_text(&Handle::parse("bob")?, "hello Bob").await?;
//!
//! loop {
//!     match bob.next_event().await {
//!         Some(Event::Message { text, handle, .. }) => {
//!             assert_eq!(text, "hello Bob");
//!             assert_eq!(handle, Some(Handle::parse("alice")?));
//!             break;
//!         }
//!         Some(_) => continue,
//!         None => panic!("bob stopped"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod bot;
pub mod business_info;
mod certificate_error;
pub mod client;
pub mod connection;
pub mod consent;
mod devices;
mod engine;
pub mod error;
pub mod events;
pub mod failover;
pub mod keys;
pub mod link;
pub mod person;
#[cfg(test)]
mod scripted_relay;
pub mod store;
pub mod tls;
mod transport;
pub mod wire;

pub use business_info::{BusinessInfo, CertificateStatus};
pub use client::{check_text, safety_number, Client, ClientConfig, EventStream};
pub use engine::{Outgoing, Peer};
pub use error::SdkError;
pub use events::{ConnectionState, Event};
pub use failover::{Failover, ServerList};
pub use person::{ConsentChange, ConsentSummary};
pub use tls::TlsTrust;

//! # parley-tests
//!
//! The kit the end-to-end tests share, and (in `tests/`) the tests themselves. Everything
//! here talks to a real server over real WebSockets on loopback:
//!
//! * [`admin`]: HTTP requests to a server's admin listener, and a strict reader of the
//!   Prometheus text format.
//! * [`business`]: the operator's business commands (the real binary), consent records,
//!   business sends.
//! * [`account`]: test identities with real keys and the frames to register or log in.
//! * [`cli`]: the `parley` binary run as a process, one profile each.
//! * [`client`]: a raw-frame client that can send what a well-behaved client never would.
//! * [`server`]: an in-process server on `127.0.0.1:0`, and a server *process* that
//!   tests can SIGKILL and restart.
//! * [`tls`]: a test certificate authority and a client connector that trusts it.
//! * [`history`]: a recorder and checker for lost, duplicated and reordered messages.

// A test kit: a panic here is a failed test, which is what it should be.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod account;
pub mod admin;
pub mod business;
pub mod cli;
pub mod client;
pub mod history;
pub mod server;
pub mod tls;

pub use account::TestAccount;
pub use client::Client;
pub use history::History;
pub use server::{ServerProcess, TestServer};

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
//! * [`chat`]: a `parley chat` process typed into through a pipe.
//! * [`mitm`]: a misbehaving relay, a WebSocket man-in-the-middle between real clients
//!   and a real server that replays, tampers with, re-addresses and withholds deliveries
//!   and substitutes prekey bundles and handle lookups.
//! * [`client`]: a Parley client that can also send wrong Parley frames.
//! * [`raw_ws`]: a hand-built WebSocket client that sends what tungstenite never would
//!   (reserved bits, unmasked frames, lying length fields, broken upgrades).
//! * [`canary`]: a well-behaved client measuring round trips while others attack.
//! * [`server`]: an in-process server on `127.0.0.1:0`, and a server *process* that
//!   tests can SIGKILL and restart.
//! * [`tls`]: a test certificate authority and a client connector that trusts it.
//! * [`history`]: a recorder and checker for lost, duplicated and reordered messages.
//! * [`tmpfs`]: a small tmpfs for disk-full and read-only tests.
//! * [`store_contract`]: the rules every `Store` implementation keeps, as one suite of
//!   cases run against each store.
//! * [`postgres`]: a throwaway PostgreSQL server of the test's own (from the installed
//!   binaries) that the test can stop, SIGKILL, pause and restart on the same port.
//! * [`nats`]: the same for a `nats-server`.
//! * [`services`]: what those two share, including the rule for a service that is not
//!   installed: `SKIPPED: ...` and a pass, or a failure when `PARLEY_REQUIRE_SERVICES=1`.
//! * [`cluster`]: several `parley-server` processes on one [`postgres`] and one [`nats`]
//!   of the test's own, any of which a test can SIGKILL, pause or restart.
//! * [`deployment`]: one switch that runs an end-to-end test against one server or a
//!   two-node cluster.
//! * [`burst`]: senders that retry through server faults, and the drain that checks them.
//! * [`terminal`]: a program in a pseudo-terminal, its screen read through a terminal
//!   emulator (for the full-screen `parley tui`).
//!
//! Tests run in two tiers: the PR tier (every `cargo test`) and a longer tier, with more
//! kills, bigger bursts and longer replays, when `PARLEY_LONG_TESTS=1` ([`long_tests`]).

// A test kit: a panic here is a failed test, which is what it should be.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod account;
pub mod admin;
pub mod burst;
pub mod business;
pub mod canary;
pub mod chat;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod deployment;
pub mod history;
pub mod mitm;
pub mod nats;
pub mod postgres;
pub mod raw_ws;
pub mod server;
pub mod services;
pub mod store_contract;
pub mod terminal;
pub mod tls;
pub mod tmpfs;

pub use account::TestAccount;
pub use client::Client;
pub use history::History;
pub use server::{ServerProcess, TestServer};

/// Whether the long test tier was asked for (`PARLEY_LONG_TESTS=1`).
pub fn long_tests() -> bool {
    std::env::var_os("PARLEY_LONG_TESTS").is_some_and(|v| v == "1")
}

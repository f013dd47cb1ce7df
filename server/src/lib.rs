//! # parley-server
//!
//! The Parley relay: accounts, authentication, prekeys, and durable store-and-forward of
//! opaque end-to-end encrypted envelopes over WebSockets.
//!
//! * [`server`]: listener, connection limits, graceful shutdown ([`run`]).
//! * [`connection`]: one client, from upgrade to close, as typed states.
//! * [`presence`]: which devices are connected here; wake-ups and displacement.
//! * [`store`]: the durable state behind a narrow interface; SQLite by default.
//! * [`admin`]: the operators' HTTP listener (`/healthz`, `/readyz`, `/metrics`).
//! * [`cli`]: subcommands, the configuration file and `print-config`.
//! * [`metrics`]: counters and histograms in the Prometheus text format.
//! * [`tls`]: rustls for `wss://`.
//! * [`topology`]: where state lives and how nodes meet (`--store`, `--bus`, `--node-id`).
//! * [`data_dir`]: a running server's exclusive hold on its data directory.
//! * [`rate_limit`], [`config`], [`clock`], [`error`], [`housekeeping`].
//!
//! `main.rs` only parses the configuration and calls [`run`]. Tests do the same on
//! `127.0.0.1:0` with a temporary data directory.

pub mod admin;
pub mod authority;
pub mod business_commands;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod context;
pub mod data_dir;
pub mod error;
pub mod housekeeping;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod rate_limit;
pub mod ready;
pub mod self_signed;
pub mod server;
pub mod store;
#[cfg(test)]
mod test_ids;
pub mod tls;
pub mod topology;

pub use config::Config;
pub use server::{run, run_with_admin};

/// The server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store failed to open or close.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Another server holds the data directory, or it cannot be locked.
    #[error(transparent)]
    DataDir(#[from] data_dir::DataDirError),
    /// The data directory is on a read-only file system.
    #[error("database is read-only: {} is on a read-only file system", .0.display())]
    ReadOnly(std::path::PathBuf),
    /// This node may not join its PostgreSQL database.
    #[error(transparent)]
    Node(#[from] store::postgres::NodeRefused),
    /// The bus between nodes could not be set up.
    #[error(transparent)]
    Bus(#[from] presence::nats::BusError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The verification authority key could not be loaded or created.
    #[error(transparent)]
    Authority(#[from] authority::AuthorityError),
}

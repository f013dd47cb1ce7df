//! The server's configuration: every limit, named, with a default, a flag, a
//! `PARLEY_*` environment variable and a configuration file key (see [`crate::cli`]).
//! `parley-server --help` prints this documentation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use parley_protocol::devices::list::MAX_DEVICE_LIST_ENTRIES;
use parley_protocol::limits::{MAX_ENVELOPE_BYTES, MAX_STORED_ONE_TIME_PREKEYS};

use crate::store::sqlite::{Durability, HoldLimits, SqliteOptions};
pub use crate::store::ReachTiers;
use crate::store::SendPolicy;
use crate::topology::{BusLocation, ClusterKey, StoreLocation};

/// The longest `--hold-deadline`: a sender whose recipient is connected but does not ack
/// waits this long for `accepted`.
pub const HOLD_DEADLINE_MAX: Duration = Duration::from_secs(60);

/// Parley relay: carries end-to-end encrypted envelopes between accounts over WebSockets,
/// storing them durably (SQLite) until the recipient acknowledges them.
#[derive(Clone, Debug, Parser)]
#[command(name = "parley-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for WebSocket clients.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,

    /// Directory holding the database (parley.db) and other server state.
    #[arg(
        long,
        env = "PARLEY_DATA_DIR",
        default_value = "./parley-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Where durable state lives: `sqlite` (parley.db in --data-dir), `sqlite:DIR`, or
    /// `postgres://user:password@host:port/database` for cluster mode. A password in the
    /// URL is never printed or logged (prefer the PARLEY_STORE variable for it).
    #[arg(
        long,
        env = "PARLEY_STORE",
        default_value = "sqlite",
        hide_env_values = true,
        global = true
    )]
    pub store: StoreLocation,

    /// How the nodes of a cluster wake each other: `local` (one node) or
    /// `nats://host:4222` (NATS core, no JetStream; commas between the servers of one
    /// NATS cluster). Cluster mode needs --store postgres://… and --cluster-key.
    #[arg(
        long,
        env = "PARLEY_BUS",
        default_value = "local",
        hide_env_values = true
    )]
    pub bus: BusLocation,

    /// This node's name in a cluster (logs, metrics, and the tie-break between two
    /// connections of one device); a random `node-xxxxxxxx` when not set.
    #[arg(long, env = "PARLEY_NODE_ID", value_parser = crate::topology::parse_node_id)]
    pub node_id: Option<String>,

    /// A secret every node of a cluster shares (at least 16 characters, e.g. `openssl
    /// rand -hex 32`): bus subjects are an HMAC of each device id under it. Required with
    /// --bus nats://…; never printed.
    #[arg(long, env = "PARLEY_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<ClusterKey>,

    /// PostgreSQL store: writer lanes, each committing its group of sends in one
    /// transaction (one sender's sends always use the same lane, so they commit in
    /// order). The node opens one connection per lane and 4 more.
    #[arg(long, env = "PARLEY_DB_LANES", default_value_t = 4)]
    pub db_lanes: usize,

    /// Cluster mode: messages to other nodes (wakes, announcements) waiting for the NATS
    /// client; when full, wakes are dropped and every node reads its devices' queues
    /// again.
    #[arg(long, env = "PARLEY_BUS_QUEUE_CAPACITY", default_value_t = 65_536)]
    pub bus_queue_capacity: usize,

    /// Cluster mode: messages the NATS client buffers per connected device before it
    /// reports a slow consumer (this node then reads its devices' queues again).
    #[arg(
        long,
        env = "PARLEY_BUS_SUBSCRIPTION_CAPACITY",
        default_value_t = 1_024
    )]
    pub bus_subscription_capacity: usize,

    /// The node id when --node-id is not set: chosen once, when the configuration is made.
    #[arg(skip = crate::topology::random_node_id())]
    random_node_id: String,

    /// Most simultaneous connections; further clients wait in the kernel's backlog.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,

    /// Most simultaneous connections from one IP address; more are closed at once.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Time a client has to complete the WebSocket upgrade (e.g. 10s, 500ms).
    #[arg(long, env = "PARLEY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time a client has to authenticate (or register) after the upgrade.
    #[arg(long, env = "PARLEY_AUTH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Interval between server pings; a client silent for two intervals is closed.
    #[arg(long, env = "PARLEY_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// Longest a write to one client may stall before that client is closed as a slow
    /// consumer (its envelopes stay queued and are delivered when it reconnects).
    #[arg(long, env = "PARLEY_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Requests (`send`, `ack`) one connection may have waiting for their commit while
    /// the server keeps reading its frames; at this depth it stops reading that socket
    /// until a commit answers some. Lets one group commit carry many envelopes of one
    /// sender. Also bounds the memory one connection holds in the writer's queue.
    #[arg(long, env = "PARLEY_PIPELINE_DEPTH", default_value_t = 64)]
    pub pipeline_depth: usize,

    /// Read buffer per connection, allocated when the WebSocket opens: most of an idle
    /// connection's memory. Larger frames are still accepted (read in more steps).
    #[arg(long, env = "PARLEY_READ_BUFFER_BYTES", default_value_t = crate::connection::transport::READ_BUFFER_BYTES)]
    pub read_buffer_bytes: usize,

    /// Bytes of outgoing frames buffered per connection before writes wait for the socket.
    #[arg(long, env = "PARLEY_WRITE_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub write_buffer_bytes: usize,

    /// On SIGINT/SIGTERM, how long open connections get to finish before the store closes.
    #[arg(long, env = "PARLEY_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Hold, then persist (ADR 0005): how long a person's envelope for a connected
    /// device may wait in memory for the recipient's ack before it is committed to the
    /// queue; the sender's `accepted` comes at the first of the two. `0s` turns holding
    /// off (every envelope is committed before `accepted`); at most 60s. In a cluster
    /// (`--bus nats://…`) the envelope rides its wake to the recipient's node, which
    /// tells the sender's node of the ack.
    #[arg(long, env = "PARLEY_HOLD_DEADLINE", default_value = "50ms", value_parser = parse_duration)]
    pub hold_deadline: Duration,

    /// Cluster only: how much longer than `--hold-deadline` a held envelope may still
    /// be committed (a slow lane, a slow commit). Past it the commit is refused and the
    /// sender asked to send again; a read of the recipient's queue waits at most this
    /// long beyond the deadline for a seq held on another node.
    #[arg(long, env = "PARLEY_HOLD_COMMIT_GRACE", default_value = "1s", value_parser = parse_duration)]
    pub hold_commit_grace: Duration,

    /// Most envelopes held for one device; past it, sends to it are committed first (in
    /// a cluster: held on its node awaiting its ack).
    #[arg(long, env = "PARLEY_HOLD_MAX_PER_DEVICE", default_value_t = 256)]
    pub hold_max_per_device: usize,

    /// Most ciphertext bytes held in all; past it, sends are committed first.
    #[arg(long, env = "PARLEY_HOLD_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub hold_max_bytes: usize,

    /// How long undelivered envelopes are kept.
    #[arg(long, env = "PARLEY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,

    /// How long a send's retry dedup entry is kept: within it, a retry (same id, bytes and
    /// recipient) gets the first `accepted`; after it, the retry is stored and delivered
    /// again (the recipient's client drops it as seen). `parley-sdk` resends its outbox
    /// at every reconnection, within seconds to minutes; the entry names no recipient,
    /// but says that the sending device sent, and when.
    #[arg(long, env = "PARLEY_DEDUP_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub dedup_window: Duration,

    /// How often expired envelopes are swept.
    #[arg(long, env = "PARLEY_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// Largest ciphertext accepted in one envelope, in bytes (at most 65536).
    #[arg(long, env = "PARLEY_MAX_ENVELOPE_BYTES", default_value_t = MAX_ENVELOPE_BYTES)]
    pub max_envelope_bytes: usize,

    /// Most one-time prekeys kept per device (at most 1000).
    #[arg(long, env = "PARLEY_MAX_ONE_TIME_PREKEYS", default_value_t = MAX_STORED_ONE_TIME_PREKEYS)]
    pub max_one_time_prekeys: u32,

    /// A device is told to upload more one-time prekeys when fewer than this remain.
    #[arg(long, env = "PARLEY_PREKEYS_LOW_THRESHOLD", default_value_t = 20)]
    pub prekeys_low_threshold: u32,

    /// Most devices one account may list (linked devices; at most 32).
    #[arg(long, env = "PARLEY_MAX_DEVICES_PER_ACCOUNT", default_value_t = 6)]
    pub max_devices_per_account: usize,

    /// How long a linking code's rendezvous stays open on the server (`parley link`).
    #[arg(long, env = "PARLEY_LINK_LIFETIME", default_value = "10m", value_parser = parse_duration)]
    pub link_lifetime: Duration,

    /// Linking codes an account may open per hour.
    #[arg(
        long,
        env = "PARLEY_LINK_CODES_PER_ACCOUNT_PER_HOUR",
        default_value_t = 10
    )]
    pub link_codes_per_account_per_hour: u32,

    /// Joins of linking codes allowed per source IP address per hour.
    #[arg(long, env = "PARLEY_LINK_JOINS_PER_IP_PER_HOUR", default_value_t = 20)]
    pub link_joins_per_ip_per_hour: u32,

    /// Registrations allowed per source IP address per hour.
    #[arg(
        long,
        env = "PARLEY_REGISTRATIONS_PER_IP_PER_HOUR",
        default_value_t = 20
    )]
    pub registrations_per_ip_per_hour: u32,

    /// Failed authentications allowed per source IP address per hour; past it, `auth` from
    /// that address is refused with `rate_limited` before any signature is checked.
    #[arg(
        long,
        env = "PARLEY_AUTH_FAILURES_PER_IP_PER_HOUR",
        default_value_t = 60
    )]
    pub auth_failures_per_ip_per_hour: u32,

    /// Prekey bundle fetches allowed per requesting account per minute.
    #[arg(long, env = "PARLEY_BUNDLE_FETCHES_PER_MINUTE", default_value_t = 120)]
    pub bundle_fetches_per_minute: u32,

    /// Lookups of handles that do not exist (`resolve_handle` answered `not_found`)
    /// allowed per account per minute; bounds how fast anyone can enumerate handles,
    /// while lookups of existing handles (a bot addressing its customers) are free.
    #[arg(
        long,
        env = "PARLEY_FAILED_HANDLE_LOOKUPS_PER_MINUTE",
        default_value_t = 60
    )]
    pub failed_handle_lookups_per_minute: u32,

    /// Prekey bundle fetches allowed per (requester, target device) per minute.
    #[arg(
        long,
        env = "PARLEY_BUNDLE_FETCHES_PER_TARGET_PER_MINUTE",
        default_value_t = 10
    )]
    pub bundle_fetches_per_target_per_minute: u32,

    /// Commit durability: `full` survives power loss (default); `normal` survives a
    /// crash of the server process only.
    #[arg(long, env = "PARLEY_DURABILITY", value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,

    /// Most write requests committed together in one transaction (group commit).
    #[arg(long, env = "PARLEY_GROUP_COMMIT_MAX", default_value_t = 512)]
    pub group_commit_max: usize,

    /// Database reader threads.
    #[arg(long, env = "PARLEY_DB_READERS", default_value_t = 2)]
    pub db_readers: usize,

    /// Capacity of each database job queue; callers wait when it is full.
    #[arg(long, env = "PARLEY_DB_QUEUE_CAPACITY", default_value_t = 4096)]
    pub db_queue_capacity: usize,

    /// PEM file with the TLS certificate chain; with --tls-key, clients connect with
    /// `wss://`. Without both, the listener speaks plain `ws://`.
    #[arg(long, env = "PARLEY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the TLS private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "PARLEY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Address of the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`), or `off`.
    /// Must be a loopback address unless `--admin-allow-remote` is given.
    #[arg(long, env = "PARLEY_ADMIN_LISTEN", default_value = "127.0.0.1:7879")]
    pub admin_listen: AdminListen,

    /// Allow the admin listener on a non-loopback address (it reveals traffic volumes:
    /// put it behind a firewall).
    #[arg(long, env = "PARLEY_ADMIN_ALLOW_REMOTE")]
    pub admin_allow_remote: bool,

    /// After a person writes to a business, how long the business may reply in category
    /// `conversation` without a standing consent grant.
    #[arg(long, env = "PARLEY_CARE_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub care_window: Duration,

    /// Messages per second each business may send (a burst of this many is allowed).
    #[arg(long, env = "PARLEY_BUSINESS_SENDS_PER_SECOND", default_value_t = 80)]
    pub business_sends_per_second: u32,

    /// Unique recipients per rolling 24 h a business may reach outside conversations, by
    /// tier (tier 0 first); a tier beyond the list is unlimited. Set a business's tier
    /// with `parley-server admin set-tier`.
    #[arg(
        long,
        env = "PARLEY_BUSINESS_REACH_TIERS",
        default_value = "250,2000,10000,100000"
    )]
    pub business_reach_tiers: ReachTiers,

    /// A business reported by this many distinct people within --report-window is
    /// suspended until the operator lifts it (`admin unsuspend`).
    #[arg(long, env = "PARLEY_SUSPEND_AFTER_REPORTS", default_value_t = 25)]
    pub suspend_after_reports: u32,

    /// The window in which reports count towards suspension.
    #[arg(long, env = "PARLEY_REPORT_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub report_window: Duration,

    /// For tests only: shifts the server's clock by this much (e.g. 25h), to exercise
    /// time windows without waiting. Leave at 0 in production.
    #[arg(long, env = "PARLEY_TEST_CLOCK_OFFSET", default_value = "0s", value_parser = parse_duration)]
    pub test_clock_offset: Duration,

    /// Log format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing` syntax (e.g. `info`, `parley_server=debug`).
    #[arg(long, env = "PARLEY_LOG", default_value = "info")]
    pub log: String,
}

/// Where the admin listener listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

impl std::str::FromStr for AdminListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(AdminListen(None));
        }
        text.parse()
            .map(|addr| AdminListen(Some(addr)))
            .map_err(|_| format!("'{text}' is not an address (e.g. 127.0.0.1:7879) or 'off'"))
    }
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// How logs are written to standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration value is out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An invalid configuration, explained.
    pub fn new(message: String) -> ConfigError {
        ConfigError(message)
    }
}

impl Config {
    /// The defaults, as if no flag or variable were given, with `data_dir` set.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::parse_from(["parley-server"]);
        config.data_dir = data_dir.into();
        config
    }

    /// Checks values that clap cannot check alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max-connections", self.max_connections),
            ("max-connections-per-ip", self.max_connections_per_ip),
            ("group-commit-max", self.group_commit_max),
            ("db-readers", self.db_readers),
            ("db-queue-capacity", self.db_queue_capacity),
            ("write-buffer-bytes", self.write_buffer_bytes),
            ("read-buffer-bytes", self.read_buffer_bytes),
            ("pipeline-depth", self.pipeline_depth),
            ("bus-queue-capacity", self.bus_queue_capacity),
            ("db-lanes", self.db_lanes),
            ("bus-subscription-capacity", self.bus_subscription_capacity),
            (
                "business-sends-per-second",
                usize::try_from(self.business_sends_per_second).unwrap_or(usize::MAX),
            ),
            (
                "suspend-after-reports",
                usize::try_from(self.suspend_after_reports).unwrap_or(usize::MAX),
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{} must be at least 1", setting(name))));
            }
        }
        if self.max_envelope_bytes == 0 || self.max_envelope_bytes > MAX_ENVELOPE_BYTES {
            return Err(ConfigError(format!(
                "{} must be between 1 and {MAX_ENVELOPE_BYTES}",
                setting("max-envelope-bytes")
            )));
        }
        if self.max_devices_per_account == 0
            || self.max_devices_per_account > MAX_DEVICE_LIST_ENTRIES
        {
            return Err(ConfigError(format!(
                "{} must be between 1 and {MAX_DEVICE_LIST_ENTRIES}",
                setting("max-devices-per-account")
            )));
        }
        if self.max_one_time_prekeys > MAX_STORED_ONE_TIME_PREKEYS {
            return Err(ConfigError(format!(
                "{} must be at most {MAX_STORED_ONE_TIME_PREKEYS}",
                setting("max-one-time-prekeys")
            )));
        }
        for (name, value) in [
            ("handshake-timeout", self.handshake_timeout),
            ("auth-timeout", self.auth_timeout),
            ("keepalive-interval", self.keepalive_interval),
            ("write-timeout", self.write_timeout),
            ("sweep-interval", self.sweep_interval),
            ("dedup-window", self.dedup_window),
            ("care-window", self.care_window),
            ("report-window", self.report_window),
            ("link-lifetime", self.link_lifetime),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!(
                    "{} must be longer than 0",
                    setting(name)
                )));
            }
        }
        if self.hold_deadline > HOLD_DEADLINE_MAX {
            return Err(ConfigError(format!(
                "{} must be at most {}s: a sender may wait that long for `accepted`",
                setting("hold-deadline"),
                HOLD_DEADLINE_MAX.as_secs()
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(format!(
                "{} and {} go together: give both or neither",
                setting("tls-cert"),
                setting("tls-key")
            )));
        }
        if let Some(addr) = self.admin_listen.0 {
            if !addr.ip().is_loopback() && !self.admin_allow_remote {
                return Err(ConfigError(format!(
                    "{} = {addr} is not a loopback address; the admin listener \
                     reveals traffic volumes, so allow it with --admin-allow-remote \
                     (behind a firewall) or use 127.0.0.1",
                    setting("admin-listen")
                )));
            }
        }
        if let BusLocation::Nats(_) = self.bus {
            if !self.store.is_postgres() {
                return Err(ConfigError(format!(
                    "{} = nats://… joins a cluster, whose nodes share one database: \
                     set {} = postgres://… (SQLite is one machine's database)",
                    setting("bus"),
                    setting("store")
                )));
            }
            if self.cluster_key.is_none() {
                return Err(ConfigError(format!(
                    "{} = nats://… needs {}: a secret every node shares, which names \
                     the bus subjects (e.g. PARLEY_CLUSTER_KEY=$(openssl rand -hex 32))",
                    setting("bus"),
                    setting("cluster-key")
                )));
            }
        }
        Ok(())
    }

    /// Options of a PostgreSQL store derived from this configuration.
    pub fn postgres_options(&self) -> crate::store::postgres::PostgresOptions {
        crate::store::postgres::PostgresOptions {
            lanes: self.db_lanes,
            lane_capacity: self.db_queue_capacity,
            group_commit_max: self.group_commit_max,
            // Held envelopes ride the bus; without one there is nowhere to carry them.
            hold: match self.bus {
                BusLocation::Nats(_) => crate::store::postgres::HoldWindow {
                    deadline: self.hold_deadline,
                    commit_grace: self.hold_commit_grace,
                },
                BusLocation::Local => crate::store::postgres::HoldWindow::OFF,
            },
            hold_max_bytes: self.hold_max_bytes,
            // Without a bus this is the only node (it holds the node lock): nothing held
            // elsewhere to fence against.
            fenced_reads: matches!(self.bus, BusLocation::Nats(_)),
            ..Default::default()
        }
    }

    /// The SQLite database's directory: `--store sqlite:DIR`, else `--data-dir`.
    pub fn sqlite_dir(&self) -> &std::path::Path {
        match &self.store {
            StoreLocation::Sqlite(Some(dir)) => dir,
            _ => &self.data_dir,
        }
    }

    /// The bus, for logs (never with a password).
    pub fn bus_description(&self) -> String {
        match &self.bus {
            BusLocation::Local => "local".to_owned(),
            BusLocation::Nats(url) => url.redacted(),
        }
    }

    /// Settings of the bus between nodes.
    pub fn bus_options(&self) -> crate::presence::nats::BusOptions {
        crate::presence::nats::BusOptions {
            outgoing_capacity: self.bus_queue_capacity,
            subscription_capacity: self.bus_subscription_capacity,
            held_per_device: self.hold_max_per_device,
        }
    }

    /// This node's id: `--node-id`, else a random one chosen once per configuration.
    pub fn node_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or(&self.random_node_id)
    }

    /// Store options derived from this configuration.
    pub fn sqlite_options(&self) -> SqliteOptions {
        SqliteOptions {
            durability: self.durability,
            group_commit_max: self.group_commit_max,
            readers: self.db_readers,
            queue_capacity: self.db_queue_capacity,
            hold: HoldLimits {
                deadline: self.hold_deadline,
                max_per_device: self.hold_max_per_device,
                max_device_bytes: crate::presence::FRESH_MAX_BYTES,
                max_total_bytes: self.hold_max_bytes,
            },
        }
    }

    /// The rules every send is checked against (given to the store when it opens).
    pub fn send_policy(&self) -> SendPolicy {
        SendPolicy {
            care_window_ms: u64::try_from(self.care_window.as_millis()).unwrap_or(u64::MAX),
            reach_tiers: self.business_reach_tiers.clone(),
            business_sends_per_second: self.business_sends_per_second,
        }
    }
}

/// How an error names a setting: its file key and its flag.
fn setting(flag: &str) -> String {
    format!("{} (--{flag})", flag.replace('-', "_"))
}

/// Parses a duration setting: `250ms`, `10s`, `5m`, `2h` or `30d`; a bare number is
/// refused (see [`parley_protocol::duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parley_protocol::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_setting_requires_a_unit() {
        for flag in [
            "--handshake-timeout",
            "--auth-timeout",
            "--keepalive-interval",
            "--write-timeout",
            "--shutdown-grace",
            "--retention",
            "--dedup-window",
            "--sweep-interval",
            "--care-window",
            "--report-window",
            "--test-clock-offset",
        ] {
            let err = Config::try_parse_from(["parley-server", flag, "30"])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("has no unit") && err.contains("30d"),
                "{flag}: {err}"
            );
            assert!(Config::try_parse_from(["parley-server", flag, "30s"]).is_ok());
        }
        let config = Config::try_parse_from(["parley-server", "--retention", "30d"]).unwrap();
        assert_eq!(config.retention, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        let mut config = Config::with_data_dir("/tmp/x");
        assert!(config.validate().is_ok());
        config.max_envelope_bytes = MAX_ENVELOPE_BYTES + 1;
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_admin_listener_stays_on_loopback_unless_allowed() {
        let mut config = Config::with_data_dir("/tmp/x");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:7879");
        config.admin_listen = "0.0.0.0:7879".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin-listen"), "{err}");
        config.admin_allow_remote = true;
        assert!(config.validate().is_ok());
        config.admin_listen = "off".parse().unwrap();
        assert_eq!(config.admin_listen, AdminListen(None));
    }
}

//! The scenarios, and what they share: options every scenario takes, starting the
//! servers, registering accounts, measuring a window of server and generator CPU time.

mod acking;
pub mod cluster;
mod cluster_soak;
pub mod connect;
pub mod devices;
pub mod fanout;
pub mod idle;
pub mod offline;
mod phase;
pub mod relay;
pub mod soak;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;

use crate::account::Account;
use crate::conn::{self, Auth, Session, Ws};
use crate::server_proc::{Launch, ServerProcess};
use crate::sys;

/// Connections opened at once while setting up (registration, logins).
pub const SETUP_CONCURRENCY: usize = 64;

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Total measured time of the scenario, split evenly over its phases (warm-up not
    /// included). A unit is required: ms, s, m (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before each measured phase; its messages and samples are discarded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Also measure the bare tokio-tungstenite relay, alternating with the product in
    /// the same invocation, and report product / baseline ratios.
    #[arg(long)]
    pub compare_baseline: bool,
    /// Print one JSON object as the last line of stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw latency percentiles (or memory) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The parley-server binary (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// The product's durability mode (`full`: fsync before `accepted`; `normal`: WAL
    /// with synchronous=NORMAL, crash-safe but not power-loss durable).
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    pub durability: String,
    /// Extra argument for parley-server (repeatable), e.g. `--server-arg=--db-readers=4`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Do not pin the server to the last CPU and the generator to the others.
    #[arg(long)]
    pub no_pin: bool,
}

impl Common {
    /// How to start servers, given where the generator was pinned.
    pub fn launch(&self, pinned: bool) -> anyhow::Result<Launch> {
        let server_bin = match &self.server_bin {
            Some(path) => path.clone(),
            None => crate::server_proc::default_server_bin()?,
        };
        crate::server_proc::check_bin(&server_bin)?;
        Ok(Launch {
            server_bin,
            server_cpu: pinned.then(|| sys::cpu_count() - 1),
            durability: self.durability.clone(),
            server_args: self.server_args.clone(),
        })
    }

    /// The common options as JSON parameters.
    pub fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "compare_baseline": self.compare_baseline,
            "durability": self.durability,
            "server_args": self.server_args,
            "pinned": !self.no_pin,
        })
    }
}

/// Parses `250ms`, `10s` or `2m` (a unit is required: [`parley_protocol::duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parley_protocol::duration::parse(text)
}

/// Registers `n` fresh accounts, keeping each authenticated connection open.
pub async fn register_accounts(
    server: SocketAddr,
    n: usize,
    first_index: usize,
) -> anyhow::Result<Vec<(Account, Session)>> {
    let results: Vec<anyhow::Result<(Account, Session)>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let account = Account::generate();
            let session = conn::parley_session(
                server,
                sys::source_ip(first_index + i),
                &account,
                Auth::Register,
            )
            .await
            .with_context(|| format!("registering account {i}"))?;
            Ok((account, session))
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Registers `n` fresh accounts, closing each connection as soon as it registered (so
/// at most [`SETUP_CONCURRENCY`] are open at once).
pub async fn register_only(
    server: SocketAddr,
    n: usize,
    first_index: usize,
) -> anyhow::Result<Vec<Account>> {
    let results: Vec<anyhow::Result<Account>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let account = Account::generate();
            let session = conn::parley_session(
                server,
                sys::source_ip(first_index + i),
                &account,
                Auth::Register,
            )
            .await
            .with_context(|| format!("registering account {i}"))?;
            drop(session);
            Ok(account)
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Logs in every account, each from its own connection.
pub async fn login_all(
    server: SocketAddr,
    accounts: &[Account],
    first_index: usize,
) -> anyhow::Result<Vec<Ws>> {
    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(accounts.iter().enumerate())
        .map(|(i, account)| async move {
            conn::parley_ws(
                server,
                sys::source_ip(first_index + i),
                account,
                Auth::Login,
            )
            .await
            .with_context(|| format!("logging in account {i}"))
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Opens baseline connections with ids `first_id..first_id + n`.
pub async fn connect_baseline(
    server: SocketAddr,
    n: usize,
    first_id: u32,
) -> anyhow::Result<Vec<Ws>> {
    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let id = first_id + i as u32;
            conn::connect(server, &format!("/{id}"), sys::source_ip(i)).await
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// CPU time of the server and of the generator over a measured window.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    server: Duration,
    generator: Duration,
}

impl CpuSample {
    /// Now.
    pub fn take(server: &ServerProcess) -> anyhow::Result<CpuSample> {
        Ok(CpuSample {
            at: Instant::now(),
            server: server.cpu_time()?,
            generator: sys::cpu_time(std::process::id())?,
        })
    }

    /// What was used between `self` and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuWindow {
        CpuWindow {
            wall: later.at.saturating_duration_since(self.at),
            server: later.server.saturating_sub(self.server),
            generator: later.generator.saturating_sub(self.generator),
        }
    }
}

/// CPU used over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    /// Wall-clock length.
    pub wall: Duration,
    /// Server CPU time.
    pub server: Duration,
    /// Generator CPU time.
    pub generator: Duration,
}

impl CpuWindow {
    /// Server CPU in % of one core.
    pub fn server_pct(&self) -> f64 {
        100.0 * self.server.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Generator CPU in % of one core.
    pub fn generator_pct(&self) -> f64 {
        100.0 * self.generator.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per unit of work.
    pub fn server_us_per(&self, units: u64) -> f64 {
        if units == 0 {
            f64::NAN
        } else {
            self.server.as_secs_f64() * 1e6 / units as f64
        }
    }
}

/// A counter shared with the progress line.
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").is_err(), "a unit is required");
        assert!(parse_duration("x").is_err());
    }
}

//! S1, idle authenticated connections: server memory per connection.
//!
//! Registers N accounts (at most 64 connections at a time, each closed once
//! registered), then logs in the first half and measures the server's RSS, logs in the
//! second half and measures again after the warm-up. Memory per connection is the
//! slope between the two: (RSS(N) − RSS(N/2)) / (N/2), which leaves out one-time costs
//! (runtime, database cache) and memory the allocator kept from setup. The baseline
//! does the same with bare WebSockets. Then the connections stay idle for
//! `--duration`, and the server's CPU and RSS drift over that time are reported.
//!
//! RSS is user-space memory only; the kernel's socket memory (about 4.6 KB per
//! loopback socket here) shows in the machine-wide `Slab` delta, reported separately
//! and noisy when other work runs.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::{counter, CpuSample};
use crate::conn::Ws;
use crate::progress::Progress;
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::sys;

/// Pause after setup and between the halves, so the server has settled.
const SETTLE: Duration = Duration::from_secs(1);

/// Options of the idle scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Idle connections (one process holds about 19.9k file descriptors here, so at most
    /// about 19k).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// What one relay measured.
#[derive(Debug)]
struct Measured {
    rss_before: u64,
    rss_half: u64,
    rss_connected: u64,
    rss_after_hold: u64,
    slab_delta: i64,
    cpu_pct: f64,
    fds: usize,
    half: usize,
    connections: usize,
}

impl Measured {
    /// The slope between N/2 and N connections.
    fn per_connection(&self) -> f64 {
        let added = (self.connections - self.half).max(1) as f64;
        (self.rss_connected as f64 - self.rss_half as f64) / added
    }

    fn to_json(&self) -> Value {
        let n = self.connections.max(1) as f64;
        json!({
            "bytes_per_connection": round(self.per_connection()),
            "kib_per_connection": round(self.per_connection() / 1024.0),
            "bytes_per_connection_incl_one_time": round((self.rss_connected as f64 - self.rss_before as f64) / n),
            "rss_before_bytes": self.rss_before,
            "rss_half_bytes": self.rss_half,
            "rss_connected_bytes": self.rss_connected,
            "rss_after_hold_bytes": self.rss_after_hold,
            "rss_drift_pct": round(100.0 * (self.rss_after_hold as f64 - self.rss_connected as f64) / self.rss_connected.max(1) as f64),
            "kernel_slab_bytes_per_connection": round(self.slab_delta as f64 / n),
            "idle_cpu_pct": round(self.cpu_pct),
            "server_fds": self.fds,
            "lost": 0,
        })
    }
}

/// Opens connections `range` to `server` (logins for the product).
async fn open(
    server: &ServerProcess,
    accounts: &[crate::account::Account],
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<Ws>> {
    match server.target {
        Target::Product => {
            super::login_all(server.addr, &accounts[range.clone()], range.start).await
        }
        Target::Baseline => {
            super::connect_baseline(server.addr, range.len(), range.start as u32).await
        }
    }
}

async fn measure(args: &IdleArgs, launch: &Launch, target: Target) -> anyhow::Result<Measured> {
    let n = args.connections;
    let half = n / 2;
    let server = ServerProcess::start(launch, target, n)?;
    let accounts = match target {
        Target::Product => super::register_only(server.addr, n, 0).await?,
        Target::Baseline => {
            // Warm the same way: as many short-lived connections as registration uses.
            drop(super::connect_baseline(server.addr, super::SETUP_CONCURRENCY, 0).await?);
            Vec::new()
        }
    };
    tokio::time::sleep(SETTLE).await;
    let (rss_before, slab_before) = (server.rss()?, sys::meminfo_bytes("Slab")?);
    let mut conns = open(&server, &accounts, 0..half).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_half = server.rss()?;
    conns.extend(open(&server, &accounts, half..n).await?);
    if conns.len() != n {
        bail!("only {} of {n} connections opened", conns.len());
    }
    let shown = counter();
    shown.store(conns.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let progress = Progress::start(
        format!("{} idle", target.name()),
        args.common.warmup + args.common.duration,
        shown,
        "connections",
    );
    tokio::time::sleep(args.common.warmup).await;
    let rss_connected = server.rss()?;
    let slab_delta = sys::meminfo_bytes("Slab")? as i64 - slab_before as i64;
    let start = CpuSample::take(&server)?;
    tokio::time::sleep(args.common.duration).await;
    let end = CpuSample::take(&server)?;
    progress.finish();
    let measured = Measured {
        rss_before,
        rss_half,
        rss_connected,
        rss_after_hold: server.rss()?,
        slab_delta,
        cpu_pct: start.until(&end).server_pct(),
        fds: server.fd_count()?,
        half,
        connections: n,
    };
    drop(conns);
    Ok(measured)
}

/// Runs the idle scenario.
pub async fn run(args: &IdleArgs, launch: &Launch) -> anyhow::Result<Report> {
    if args.connections < 2 {
        bail!("--connections must be at least 2");
    }
    let baseline = match args.common.compare_baseline {
        true => Some(measure(args, launch, Target::Baseline).await?),
        false => None,
    };
    let product = measure(args, launch, Target::Product).await?;
    let mut parameters = args.common.parameters();
    parameters["connections"] = json!(args.connections);
    let mut report = Report::new("idle", parameters);
    report.product = product.to_json();
    report.ratio_meaning = "product bytes per connection / baseline bytes per connection";
    if let Some(baseline) = &baseline {
        report.baseline = Some(baseline.to_json());
        report.ratio = Some(product.per_connection() / baseline.per_connection());
    }
    report.envelopes = "none (idle)";
    report.notes.push(
        "bytes_per_connection = server VmRSS slope between N/2 and N authenticated connections; kernel socket memory is not in RSS (kernel_slab_bytes_per_connection is machine-wide)".into(),
    );
    Ok(report)
}

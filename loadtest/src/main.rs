//! `parley-loadtest`: load scenarios against a real `parley-server` process, with a
//! bare tokio-tungstenite relay measured in the same run as the baseline.
//!
//! Each scenario starts its servers as child processes on a temporary data directory
//! (the server pinned to the last CPU, the generator to the others, when `taskset` is
//! available), runs for a bounded time, and prints a table, or with `--json` one JSON
//! object as the last line of stdout. See `docs/benchmarks.md`.

mod account;
mod baseline;
mod cluster_env;
mod conn;
mod payload;
mod plot;
mod progress;
mod report;
mod scenario;
mod server_proc;
mod stats;
mod sys;

use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::report::Report;
use crate::scenario::cluster::ClusterArgs;
use crate::scenario::connect::ConnectArgs;
use crate::scenario::devices::DevicesArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::idle::IdleArgs;
use crate::scenario::offline::OfflineArgs;
use crate::scenario::relay::RelayArgs;
use crate::scenario::soak::SoakArgs;
use crate::scenario::store::StoreArgs;
use crate::scenario::Common;

/// Load tests for the Parley relay, with a same-run bare-relay baseline.
///
/// Every scenario starts parley-server (and, with --compare-baseline, the bare relay)
/// as separate processes on 127.0.0.1, runs for a bounded time, and reports server CPU
/// time per message (utime + stime from /proc), memory, throughput and latency
/// percentiles (HDR, open loop, measured from intended send times).
#[derive(Debug, Parser)]
#[command(name = "parley-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// S1: N authenticated idle connections; server memory per connection, idle CPU.
    Idle(IdleArgs),
    /// S2: 1:1 relay between pairs: saturated msg/s (closed loop), then latency
    /// percentiles at fractions of that rate (open loop).
    Relay(RelayArgs),
    /// S3: store envelopes for offline recipients (durable), then drain on reconnect.
    Offline(OfflineArgs),
    /// S5: connect + authenticate rate under open-loop arrivals.
    Connect(ConnectArgs),
    /// S6 (short form): idle connections plus pairs at a fixed rate; RSS and fd drift.
    Soak(SoakArgs),
    /// S4: business fan-out: one verified business sends to K opted-in online users;
    /// per-user delivery latency from the intended send time.
    Fanout(FanoutArgs),
    /// The storage floor: the server's SQLite store driven in-process (no network), to
    /// show how much of the relay's cost is storage.
    Store(StoreArgs),
    /// C10: a cluster (own PostgreSQL, own NATS, 1-3 nodes, each under the same cgroup
    /// CPU quota): saturated cross-node msg/s, per-tier CPU per message, WAL bytes per
    /// message, light-load p99; optionally the SQLite node and the bare relay under the
    /// same quota in the same run.
    Cluster(ClusterArgs),
    /// Linked devices (issue 15): `send_to_all` to every device of multi-device accounts
    /// (3 by default) against the single-device relay in the same run; messages/s,
    /// deliveries/s, server CPU per message and per device copy, latency, and the
    /// per-device cost of fan-out.
    Devices(DevicesArgs),
    /// The bare relay used as the baseline (started by the scenarios themselves).
    #[command(hide = true)]
    BaselineServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

impl Command {
    fn common(&self) -> Option<&Common> {
        match self {
            Command::Idle(a) => Some(&a.common),
            Command::Relay(a) => Some(&a.common),
            Command::Offline(a) => Some(&a.common),
            Command::Connect(a) => Some(&a.common),
            Command::Soak(a) => Some(&a.common),
            Command::Fanout(a) => Some(&a.common),
            Command::Store(a) => Some(&a.common),
            Command::Cluster(a) => Some(&a.common),
            Command::Devices(a) => Some(&a.common),
            Command::BaselineServer { .. } => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::BaselineServer { listen } => return baseline::serve(*listen),
        other => other.common().context("scenario without options")?.clone(),
    };
    let cpus = sys::cpu_count();
    let pinned = !common.no_pin && cpus >= 2 && sys::have_taskset();
    if pinned {
        // Before the runtime exists, so every worker thread inherits it.
        let generator_cpus = if matches!(cli.command, Command::Store(_)) {
            // The store runs in this process: one CPU, the one a server would get.
            (cpus - 1).to_string()
        } else if cpus == 2 {
            "0".to_owned()
        } else {
            format!("0-{}", cpus - 2)
        };
        sys::pin_self(&generator_cpus)?;
    }
    let workers = match (pinned, &cli.command) {
        (true, Command::Store(_)) => 1,
        (true, _) => cpus - 1,
        (false, _) => cpus,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let loadavg_before = sys::load_average();
    let (mut report, plots) = runtime.block_on(run(&cli.command, &common, pinned))?;
    report.loadavg_before = loadavg_before;
    if loadavg_before > 0.5 {
        report.notes.push(format!(
            "the machine was busy when the run started (load average {loadavg_before:.2}); treat the figures as indicative"
        ));
    }
    if let Some(path) = &common.plot {
        write_plot(path, &report, &plots)?;
    }
    if common.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    // Connections still open in spawned tasks must not delay the exit.
    runtime.shutdown_background();
    Ok(())
}

type Plots = Vec<(String, stats::Latency)>;

async fn run(command: &Command, common: &Common, pinned: bool) -> anyhow::Result<(Report, Plots)> {
    // Every scenario but `store` starts servers (and needs their binary).
    let launch = || common.launch(pinned);
    match command {
        Command::Idle(args) => Ok((scenario::idle::run(args, &launch()?).await?, Vec::new())),
        Command::Relay(args) => scenario::relay::run(args, &launch()?).await,
        Command::Offline(args) => Ok((scenario::offline::run(args, &launch()?).await?, Vec::new())),
        Command::Connect(args) => scenario::connect::run(args, &launch()?).await,
        Command::Soak(args) => scenario::soak::run(args, &launch()?).await,
        Command::Fanout(args) => scenario::fanout::run(args, &launch()?).await,
        Command::Store(args) => scenario::store::run(args).await,
        Command::Cluster(args) => scenario::cluster::run(args, &launch()?).await,
        Command::Devices(args) => scenario::devices::run(args, &launch()?).await,
        Command::BaselineServer { .. } => bail!("not a scenario"),
    }
}

fn write_plot(path: &std::path::Path, report: &Report, plots: &Plots) -> anyhow::Result<()> {
    if !plots.is_empty() {
        let title = format!("parley-loadtest {}: latency percentiles", report.scenario);
        return plot::latency_svg(path, &title, plots);
    }
    let value =
        |side: &serde_json::Value, key: &str| side.get(key).and_then(serde_json::Value::as_f64);
    let mut bars = Vec::new();
    if let Some(v) = value(&report.product, "kib_per_connection") {
        bars.push(("product".to_owned(), v));
        if let Some(b) = report
            .baseline
            .as_ref()
            .and_then(|b| value(b, "kib_per_connection"))
        {
            bars.push(("baseline".to_owned(), b));
        }
        return plot::bars_svg(path, "server memory per idle connection", "KiB", &bars);
    }
    for key in ["stored_msgs_per_s", "drained_msgs_per_s"] {
        if let Some(v) = value(&report.product, key) {
            bars.push((key.to_owned(), v));
        }
    }
    plot::bars_svg(
        path,
        &format!("parley-loadtest {}", report.scenario),
        "msg/s",
        &bars,
    )
}

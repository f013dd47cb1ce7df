//! C10, cluster mode: PostgreSQL + NATS + N `parley-server` nodes, each held to the
//! same CPU quota (cgroup v1 `cpu`, `--node-cpu` of a core), with 1:1 traffic whose two
//! sides are on different nodes when N > 1 (pair `i` sends from node `i % N` to node
//! `(i + 1) % N`).
//!
//! The scenario starts everything itself: a throwaway PostgreSQL (initdb into a
//! temporary directory, `fsync` on, default `synchronous_commit`), a throwaway
//! `nats-server`, then the nodes one after the other (the first creates the
//! `authority.key`, the others get a copy). Phases:
//! 1. **Light load** (open loop at `--rate` msg/s): cross-node latency p50/p99 from the
//!    intended send time. It runs first, so that it does not share the database with
//!    the vacuuming of what a saturation phase left behind.
//! 2. **Saturation** (closed loop, `--window` in flight per sender), `--reps` times:
//!    delivered msg/s, CPU µs per delivered message of every node, of PostgreSQL (the
//!    postmaster and its children, utime + stime from `/proc`) and of NATS, PostgreSQL's
//!    CPU in % of a core, WAL bytes per message (`pg_current_wal_lsn()` before and after
//!    the phase, over every message delivered in it).
//! 3. With `--soak 10m`, a **soak** (open loop at `--soak-rate`) sampled every
//!    `--soak-interval`: latency, PostgreSQL's dead tuples, queue rows and size
//!    (`cluster_soak.rs`).
//!
//! With `--compare-sqlite` the embedded SQLite node, and with `--compare-baseline` the
//! bare relay, are then measured under the same quota (saturation only), so the ratios
//! are same-run. If cgroups cannot be written, the relays are only pinned with `taskset`
//! and the throughput is reported as not measured (only the per-message CPU costs
//! mean something then).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::phase::{run_phase, Acking, Fleet, Framing, Mode, Phase, Probe, ACK_EVERY};
use crate::cluster_env::{CpuGroup, Nats, Postgres};
use crate::payload::Envelopes;
use crate::report::{round, Report};
use crate::server_proc::{Extra, Launch, ServerProcess, Target};
use crate::stats::{median, Latency};

/// Options of the cluster scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Nodes of the cluster (1, 2 or 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub nodes: u8,
    /// CPU quota of every relay process, in cores (cgroup v1 cfs_quota / cfs_period).
    #[arg(long, default_value_t = 0.25)]
    pub node_cpu: f64,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 60)]
    pub pairs: usize,
    /// Envelopes in flight per sender in the saturation phases.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Light-load open-loop rate, msg/s for all pairs together (0: no light-load phase).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Saturation phases of the cluster (and of each comparison); medians are reported.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// `--db-lanes` of every node (the server's default when not given).
    #[arg(long)]
    pub db_lanes: Option<usize>,
    /// Also measure the embedded SQLite node under the same quota.
    #[arg(long)]
    pub compare_sqlite: bool,
    /// Also count the rows PostgreSQL wrote per message (inserted, updated, deleted;
    /// `pg_stat_database`). Each phase then waits 11 s for the statistics to settle.
    #[arg(long)]
    pub pg_rows: bool,
    /// When receivers ack (cumulatively): after this many deliveries, or `idle`, by
    /// `parley-sdk`'s rule (see `relay --help`). Held envelopes
    /// (`--hold-deadline`, on by default) are settled by an ack only if it comes within
    /// the deadline; later, by a commit.
    #[arg(long, default_value_t = ACK_EVERY)]
    pub ack_every: Acking,
    #[command(flatten)]
    pub soak: super::cluster_soak::SoakArgs,
    #[command(flatten)]
    pub common: super::Common,
}

/// Runs the cluster scenario.
pub async fn run(
    args: &ClusterArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if !(args.node_cpu.is_finite() && args.node_cpu > 0.0) {
        bail!("--node-cpu must be a positive number of cores");
    }
    let nodes = usize::from(args.nodes);
    let reps = args.reps.max(1);
    let light = args.rate > 0.0;
    let phases = reps
        + usize::from(light)
        + if args.compare_sqlite { reps } else { 0 }
        + if args.common.compare_baseline {
            reps
        } else {
            0
        };
    let window = args.common.duration / phases as u32;
    let warmup = args.common.warmup;
    let envelopes = Arc::new(Envelopes::new(args.payload));
    let product_len = envelopes
        .product_frame(1, crate::account::Account::generate().address(), 0, 0)?
        .len();
    let framing = |target| Framing {
        target,
        envelopes: envelopes.clone(),
        baseline_len: product_len,
        batch: 1,
        fan_out: None,
        acking: args.ack_every,
    };
    let saturation = Mode::Saturation {
        window: args.window.max(1) as u64,
    };
    let mut report = Report::new("cluster", json!({}));
    let cgroups = match CpuGroup::available() {
        Ok(()) => true,
        Err(why) => {
            report.notes.push(format!(
                "no cgroup ({why}): relays only pinned with taskset; throughput not measured (no cgroup), only CPU per message is meaningful"
            ));
            false
        }
    };
    let tag = std::process::id();
    let group = |name: String| -> anyhow::Result<Option<CpuGroup>> {
        match cgroups {
            true => Ok(Some(CpuGroup::create(&name, args.node_cpu)?)),
            false => Ok(None),
        }
    };

    // The cluster.
    let pg = Arc::new(Postgres::start().context("starting PostgreSQL")?);
    let nats = Nats::start().context("starting NATS")?;
    let cluster_key = format!("parley-loadtest-cluster-key-{tag}");
    let mut servers: Vec<ServerProcess> = Vec::new();
    let mut first_dir: Option<std::path::PathBuf> = None;
    for k in 1..=nodes {
        let dir = tempfile::tempdir()?;
        if let Some(first) = &first_dir {
            std::fs::copy(
                first.join("authority.key"),
                dir.path().join("authority.key"),
            )
            .context("sharing the authority key")?;
        }
        let mut node_args = vec![
            "--store".to_owned(),
            pg.url(),
            "--bus".to_owned(),
            nats.url(),
            "--cluster-key".to_owned(),
            cluster_key.clone(),
            "--node-id".to_owned(),
            format!("n{k}"),
        ];
        if let Some(lanes) = args.db_lanes {
            node_args.extend(["--db-lanes".to_owned(), lanes.to_string()]);
        }
        let server = ServerProcess::start_with(
            launch,
            Target::Product,
            2 * args.pairs + 64,
            Extra {
                args: node_args,
                data_dir: Some(dir),
                cgroup: group(format!("parley-node-{k}-{tag}"))?,
            },
        )
        .with_context(|| format!("starting node n{k}"))?;
        if first_dir.is_none() {
            first_dir = server.data_dir().map(std::path::Path::to_path_buf);
        }
        servers.push(server);
    }
    let node_pids: Vec<(String, u32)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("n{}", i + 1), s.pid()))
        .collect();
    let probe: Probe = {
        let pg = pg.clone();
        let nats_pid = nats.pid();
        let node_pids = node_pids.clone();
        Arc::new(move || {
            let mut out = Vec::new();
            for (name, pid) in &node_pids {
                out.push((name.clone(), crate::sys::cpu_time(*pid)?));
            }
            out.push(("postgres".to_owned(), pg.cpu_time()?));
            out.push(("nats".to_owned(), crate::sys::cpu_time(nats_pid)?));
            Ok(out)
        })
    };
    let mut fleet = Fleet::across(servers, args.pairs, probe).await?;
    // Rows written so far (None: not counted), and per phase, in phase order.
    let rows_now = || -> anyhow::Result<Option<u64>> {
        match args.pg_rows {
            true => Ok(Some(pg.rows_written()?)),
            false => Ok(None),
        }
    };
    let mut rows_before = rows_now()?;
    let mut rows_of = |after: Option<u64>| {
        let rows = after.zip(rows_before).map(|(a, b)| a.saturating_sub(b));
        rows_before = after;
        rows
    };
    let mut open = None;
    if light {
        let before = pg.wal_lsn()?;
        let phase = run_phase(
            &mut fleet,
            Mode::Open { rate: args.rate },
            warmup,
            window,
            &framing(Target::Product),
            format!("cluster n={nodes} light {:.0}/s", args.rate),
        )
        .await?;
        let wal = PgWrites {
            wal_bytes: pg.wal_lsn()?.saturating_sub(before),
            rows: rows_of(rows_now()?),
        };
        open = Some((phase, wal));
    }
    let mut sat = Vec::new();
    for rep in 0..reps {
        let before = pg.wal_lsn()?;
        let phase = run_phase(
            &mut fleet,
            saturation,
            warmup,
            window,
            &framing(Target::Product),
            format!("cluster n={nodes} saturation {}", rep + 1),
        )
        .await?;
        let wal = PgWrites {
            wal_bytes: pg.wal_lsn()?.saturating_sub(before),
            rows: rows_of(rows_now()?),
        };
        sat.push((phase, wal));
    }
    let soak = if args.soak.soak.is_zero() {
        None
    } else {
        Some(
            super::cluster_soak::run(
                &mut fleet,
                &pg,
                &args.soak,
                warmup,
                &framing(Target::Product),
            )
            .await?,
        )
    };
    let dead_tuples = pg
        .psql(
            "parley",
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables",
        )
        .ok()
        .and_then(|text| text.parse::<u64>().ok());
    drop(fleet);
    drop(nats);
    drop(pg);

    let cluster_rate = median(&sat.iter().map(|(p, _)| p.rate()).collect::<Vec<_>>());
    let mut product = json!({
        "nodes": nodes,
        "saturated_msgs_per_s": if cgroups { round(cluster_rate) } else { Value::Null },
        "saturated_msgs_per_s_range": spread(&sat.iter().map(|(p, _)| p.rate()).collect::<Vec<_>>()),
        "saturation_runs": sat.iter().map(|(p, wal)| cluster_phase_json(p, *wal)).collect::<Vec<_>>(),
        "dead_tuples_at_end": dead_tuples,
    });
    if let Some(soak) = soak {
        product["soak"] = soak;
    }
    for key in [
        "node_cpu_us_per_msg_sum",
        "postgres_cpu_us_per_msg",
        "postgres_cpu_pct",
        "nats_cpu_us_per_msg",
        "wal_bytes_per_msg",
        "rows_per_msg",
    ] {
        let values: Vec<f64> = sat
            .iter()
            .filter_map(|(p, wal)| cluster_phase_json(p, *wal)[key].as_f64())
            .collect();
        product[key] = round(median(&values));
    }
    if let Some((phase, wal)) = &open {
        product["light_load"] = cluster_phase_json(phase, *wal);
        if args.rate > cluster_rate {
            report.notes.push(format!(
                "light load {:.0} msg/s is above the saturated {cluster_rate:.0} msg/s: its latency is queueing",
                args.rate
            ));
        }
    }
    let lost: u64 = sat
        .iter()
        .map(|(p, _)| p)
        .chain(open.iter().map(|(p, _)| p))
        .map(Phase::lost)
        .sum();
    let errors: u64 = sat
        .iter()
        .map(|(p, _)| p)
        .chain(open.iter().map(|(p, _)| p))
        .map(|p| p.errors)
        .sum();
    product["lost"] = json!(lost);
    product["errors"] = json!(errors);

    // The embedded SQLite node under the same quota.
    if args.compare_sqlite {
        let runs = single_relay_runs(
            launch,
            Target::Product,
            group(format!("parley-sqlite-{tag}"))?,
            args.pairs,
            reps,
            (saturation, warmup, window),
            &framing(Target::Product),
            "sqlite node",
        )
        .await?;
        let side = single_json(&runs, cgroups);
        product["lost"] = json!(lost + side["lost"].as_u64().unwrap_or(0));
        let sqlite_rate = median(&runs.iter().map(Phase::rate).collect::<Vec<_>>());
        report.ratios.insert(
            "cluster / sqlite node (saturated msg/s)".into(),
            round(cluster_rate / sqlite_rate),
        );
        product["sqlite_node"] = side;
    }
    // The bare relay under the same quota.
    if args.common.compare_baseline {
        let runs = single_relay_runs(
            launch,
            Target::Baseline,
            group(format!("parley-baseline-{tag}"))?,
            args.pairs,
            reps,
            (saturation, warmup, window),
            &framing(Target::Baseline),
            "baseline",
        )
        .await?;
        let baseline_rate = median(&runs.iter().map(Phase::rate).collect::<Vec<_>>());
        report.baseline = Some(single_json(&runs, cgroups));
        report.ratio = Some(cluster_rate / baseline_rate);
    }

    let mut parameters = args.common.parameters();
    parameters["nodes"] = json!(nodes);
    parameters["node_cpu_cores"] = json!(args.node_cpu);
    parameters["cgroup_quota"] = json!(cgroups);
    parameters["pairs"] = json!(args.pairs);
    parameters["window"] = json!(args.window);
    parameters["light_rate"] = json!(args.rate);
    parameters["reps"] = json!(reps);
    parameters["payload_bytes"] = json!(args.payload);
    parameters["ack_every"] = json!(args.ack_every.to_string());
    parameters["pg_rows"] = json!(args.pg_rows);
    parameters["db_lanes"] = json!(args.db_lanes);
    parameters["compare_sqlite"] = json!(args.compare_sqlite);
    parameters["phase_window_s"] = json!(window.as_secs_f64());
    parameters["pairs_cross_node"] = json!(nodes > 1);
    report.parameters = parameters;
    report.ratio_meaning =
        "cluster saturated msg/s / bare relay saturated msg/s (same quota per process)";
    report.product = product;
    report.notes.push(
        "PostgreSQL and NATS are not held to a quota: they share what the relays and the generator leave; postgres CPU is the postmaster and its live children".into(),
    );
    report.notes.push(format!(
        "latency is measured from each envelope's intended send time; the warm-up ({:.1} s per phase) is excluded; WAL bytes per message count every message delivered in the phase (warm-up and drain included)",
        warmup.as_secs_f64()
    ));
    let plots = open
        .map(|(p, _)| vec![(format!("cluster n={nodes} {:.0}/s", args.rate), p.latency)])
        .unwrap_or_default();
    Ok((report, plots))
}

/// One relay process (the SQLite node or the bare relay) under `cgroup`, saturated
/// `reps` times by `pairs` pairs: the runs.
#[allow(clippy::too_many_arguments)]
async fn single_relay_runs(
    launch: &Launch,
    target: Target,
    cgroup: Option<CpuGroup>,
    pairs: usize,
    reps: usize,
    (saturation, warmup, window): (Mode, Duration, Duration),
    framing: &Framing,
    label: &str,
) -> anyhow::Result<Vec<Phase>> {
    // The product needs a few more descriptors than its clients (its database).
    let files = 2 * pairs + if target == Target::Product { 64 } else { 0 };
    let server = ServerProcess::start_with(
        launch,
        target,
        files,
        Extra {
            cgroup,
            ..Extra::default()
        },
    )?;
    let mut fleet = Fleet::on(server, pairs, 0).await?;
    let mut runs = Vec::with_capacity(reps);
    for rep in 0..reps {
        runs.push(
            run_phase(
                &mut fleet,
                saturation,
                warmup,
                window,
                framing,
                format!("{label} saturation {}", rep + 1),
            )
            .await?,
        );
    }
    Ok(runs)
}

fn spread(values: &[f64]) -> Value {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!([round(min), round(max)])
}

/// What PostgreSQL wrote during a phase.
#[derive(Clone, Copy, Debug)]
struct PgWrites {
    /// WAL bytes.
    wal_bytes: u64,
    /// Rows inserted, updated and deleted (when counted: `--pg-rows`).
    rows: Option<u64>,
}

/// One cluster phase: rate, latency, and the probe's CPU per delivered message.
fn cluster_phase_json(phase: &Phase, writes: PgWrites) -> Value {
    let PgWrites { wal_bytes, rows } = writes;
    let delivered = phase.delivered_in_window.max(1) as f64;
    let wall = phase.cpu.wall.as_secs_f64().max(1e-9);
    let us = |d: Duration| d.as_secs_f64() * 1e6 / delivered;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall;
    let mut nodes = serde_json::Map::new();
    let mut node_sum = Duration::ZERO;
    let mut value = phase.to_json();
    for (name, cpu) in &phase.probed {
        match name.as_str() {
            "postgres" => {
                value["postgres_cpu_us_per_msg"] = round(us(*cpu));
                value["postgres_cpu_pct"] = round(pct(*cpu));
            }
            "nats" => {
                value["nats_cpu_us_per_msg"] = round(us(*cpu));
                value["nats_cpu_pct"] = round(pct(*cpu));
            }
            node => {
                node_sum += *cpu;
                nodes.insert(
                    node.to_owned(),
                    json!({"cpu_us_per_msg": round(us(*cpu)), "cpu_pct": round(pct(*cpu))}),
                );
            }
        }
    }
    value["nodes"] = Value::Object(nodes);
    value["node_cpu_us_per_msg_sum"] = round(us(node_sum));
    value["wal_bytes"] = json!(wal_bytes);
    value["wal_bytes_per_msg"] = round(wal_bytes as f64 / phase.delivered.max(1) as f64);
    if let Some(rows) = rows {
        value["rows"] = json!(rows);
        value["rows_per_msg"] = round(rows as f64 / phase.delivered.max(1) as f64);
    }
    if phase.latency.count() > 0 {
        value["latency"] = json!(phase.latency.summary());
    }
    value
}

/// A single relay's saturation runs (the SQLite node or the bare relay).
fn single_json(runs: &[Phase], cgroups: bool) -> Value {
    let rates: Vec<f64> = runs.iter().map(Phase::rate).collect();
    let cpu: Vec<f64> = runs
        .iter()
        .map(|p| p.cpu.server_us_per(p.delivered_in_window))
        .collect();
    json!({
        "saturated_msgs_per_s": if cgroups { round(median(&rates)) } else { Value::Null },
        "saturated_msgs_per_s_range": spread(&rates),
        "server_cpu_us_per_msg": round(median(&cpu)),
        "lost": runs.iter().map(Phase::lost).sum::<u64>(),
        "errors": runs.iter().map(|p| p.errors).sum::<u64>(),
        "saturation_runs": runs.iter().map(Phase::to_json).collect::<Vec<_>>(),
    })
}

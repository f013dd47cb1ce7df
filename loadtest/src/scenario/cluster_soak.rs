//! The cluster soak (`cluster --soak 10m`): an open-loop load for a long time, cut into
//! intervals, with PostgreSQL's dead tuples, live queue rows and database size and the
//! interval's latency sampled after each one. What it shows is whether the cluster is
//! *flat*: whether vacuum keeps up with the queue's delete churn and latency stays where
//! it started (scaleout.md §7, C10; docs/benchmarks.md).

use std::time::Duration;

use serde_json::{json, Value};

use super::phase::{run_phase, Fleet, Framing, Mode, Phase};
use crate::cluster_env::Postgres;
use crate::report::round;
use crate::stats::median;

/// Options of the soak, part of the cluster scenario's.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Also run a soak this long after the other phases (0: none), e.g. `10m`.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    pub soak: Duration,
    /// Open-loop rate of the soak, msg/s for all pairs together.
    #[arg(long, default_value_t = 2000.0)]
    pub soak_rate: f64,
    /// Length of one soak interval (one sample).
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub soak_interval: Duration,
}

/// One interval's sample.
struct Sample {
    phase: Phase,
    dead_tuples: Option<u64>,
    queue_rows: Option<u64>,
    database_bytes: Option<u64>,
}

/// Runs the soak on `fleet` and reports its samples and its drift: the last interval's
/// p99 over the median interval's (the first one also pays for vacuuming what the
/// phases before it left), and the most dead tuples of the second half over the first
/// half's.
pub(super) async fn run(
    fleet: &mut Fleet,
    pg: &Postgres,
    args: &SoakArgs,
    warmup: Duration,
    framing: &Framing,
) -> anyhow::Result<Value> {
    let interval = args.soak_interval.max(Duration::from_secs(1));
    let count = (args.soak.as_secs_f64() / interval.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let phase = run_phase(
            fleet,
            Mode::Open {
                rate: args.soak_rate,
            },
            if i == 0 { warmup } else { Duration::ZERO },
            interval,
            framing,
            format!("cluster soak {}/{count}", i + 1),
        )
        .await?;
        let number = |sql: &str| {
            pg.psql("parley", sql)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        samples.push(Sample {
            phase,
            dead_tuples: number("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"),
            queue_rows: number("SELECT count(*) FROM queue"),
            database_bytes: number("SELECT pg_database_size('parley')"),
        });
    }
    let p99 = |s: &Sample| s.phase.latency.summary().map(|l| l.p99_us);
    let halves = samples.split_at(samples.len() / 2);
    let most_dead = |half: &[Sample]| half.iter().filter_map(|s| s.dead_tuples).max();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => round(a / b),
        _ => Value::Null,
    };
    Ok(json!({
        "rate": args.soak_rate,
        "interval_s": interval.as_secs_f64(),
        "lost": samples.iter().map(|s| s.phase.lost()).sum::<u64>(),
        "errors": samples.iter().map(|s| s.phase.errors).sum::<u64>(),
        "p99_last_over_median": ratio(
            samples.last().and_then(p99),
            Some(median(&samples.iter().filter_map(p99).collect::<Vec<_>>())),
        ),
        "dead_tuples_second_half_over_first": ratio(
            most_dead(halves.1).map(|d| d as f64),
            most_dead(halves.0).map(|d| d as f64),
        ),
        "samples": samples.iter().enumerate().map(|(i, s)| json!({
            "end_s": round(interval.as_secs_f64() * (i + 1) as f64),
            "msgs_per_s": round(s.phase.rate()),
            "p50_us": s.phase.latency.summary().map(|l| l.p50_us),
            "p99_us": p99(s),
            "dead_tuples": s.dead_tuples,
            "queue_rows": s.queue_rows,
            "database_bytes": s.database_bytes,
        })).collect::<Vec<_>>(),
    }))
}

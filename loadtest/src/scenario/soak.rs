//! S6, mixed soak (short form): idle connections plus active pairs at a fixed open-loop
//! rate for `--duration`, sampling the server's RSS and open file descriptors every
//! [`SAMPLE_EVERY`]. Reports their drift between the first and last sample after the
//! warm-up, latency, server CPU, and lost envelopes.
//!
//! The brief's soak runs 10 to 30 minutes nightly with churn and offline traffic; this
//! one has neither churn nor offline recipients yet, and is meant for short runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::phase::{run_phase, Fleet, Framing, Mode};
use crate::payload::Envelopes;
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::Latency;
use crate::sys;

/// How often RSS and file descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Options of the soak scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Idle authenticated connections held during the run.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Active sender/receiver pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Open-loop rate of the pairs together, msg/s.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// One sample: seconds since the start, RSS bytes, open fds.
type Sample = (f64, u64, usize);

/// Runs the soak scenario.
pub async fn run(
    args: &SoakArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.pairs == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--pairs and --rate must be above 0");
    }
    let server = ServerProcess::start(launch, Target::Product, args.idle + 2 * args.pairs)?;
    let pid = server.pid();
    let addr = server.addr;
    let accounts = super::register_only(addr, args.idle, 0).await?;
    let idle = super::login_all(addr, &accounts, 0).await?;
    let mut fleet = Fleet::on(server, args.pairs, args.idle).await?;

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let rss = sys::status_bytes(pid, "VmRSS").unwrap_or(0);
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((started.elapsed().as_secs_f64(), rss, fds));
            }
        })
    };
    let framing = Framing::product(Arc::new(Envelopes::new(args.payload)), 1);
    let warmup = args.common.warmup;
    let phase = run_phase(
        &mut fleet,
        Mode::Open { rate: args.rate },
        warmup,
        args.common.duration,
        &framing,
        "product soak".into(),
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    drop(idle);

    let samples = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _, _)| *t >= warmup.as_secs_f64())
        .collect();
    let (first, last) = match (steady.first(), steady.last()) {
        (Some(f), Some(l)) => (**f, **l),
        _ => bail!("no samples after the warm-up; raise --duration"),
    };
    let drift = |a: f64, b: f64| 100.0 * (b - a) / a.max(1.0);
    let mut parameters = args.common.parameters();
    parameters["idle"] = json!(args.idle);
    parameters["pairs"] = json!(args.pairs);
    parameters["rate"] = json!(args.rate);
    parameters["payload_bytes"] = json!(args.payload);
    let mut report = Report::new("soak", parameters);
    let mut product = phase.to_json();
    product["rss_first_bytes"] = json!(first.1);
    product["rss_last_bytes"] = json!(last.1);
    product["rss_drift_pct"] = round(drift(first.1 as f64, last.1 as f64));
    product["fds_first"] = json!(first.2);
    product["fds_last"] = json!(last.2);
    product["fd_drift"] = json!(last.2 as i64 - first.2 as i64);
    product["lost"] = json!(phase.lost());
    product["samples"] = json!(steady.len());
    report.product = product;
    report.ratio_meaning = "none: the soak has no baseline";
    report.notes.push(
        "short soak: no connection churn and no offline traffic yet; the brief's S6 runs 10-30 minutes nightly".into(),
    );
    if phase.rate() < 0.95 * args.rate {
        report
            .notes
            .push("the product did not keep up with --rate: lower it for a soak".into());
    }
    Ok((report, vec![("product".into(), phase.latency.clone())]))
}

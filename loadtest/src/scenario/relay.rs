//! S2, 1:1 online relay: P pairs, A sends to B.
//!
//! Phases, each on the same connections:
//! 1. **Saturation** (closed loop): each sender keeps at most `--window` envelopes in
//!    flight (sent but not yet delivered to its receiver). Reports delivered msg/s and
//!    server CPU per message.
//! 2. **Latency** (open loop) at each `--load` fraction of the saturated rate (the
//!    *baseline's* with `--compare-baseline`, so both relays get the same offered rate).
//!    Every envelope carries its intended send time from a fixed schedule, and latency is
//!    measured from that time, so a stalled sender cannot hide queueing (no coordinated
//!    omission).
//!
//! With `--compare-baseline` the phases alternate baseline, product, baseline, product.
//! Product receivers acknowledge cumulatively, every `--ack-every` deliveries (default
//! [`ACK_EVERY`]) or, with `--ack-every idle`, by `parley-sdk`'s rule (what arrived
//! together, in one ack); the baseline has no acks. A phase ends with a bounded drain; whatever
//! was sent but not delivered by then is reported as `lost`, except in an open-loop
//! phase offered more than the relay's saturated rate, where it is reported as
//! `undelivered_when_overloaded` (the product still holds it stored).
//!
//! The load engine itself is in `phase.rs`.

use std::sync::Arc;

use anyhow::bail;
use serde_json::{json, Value};

use super::phase::{run_phase, Acking, Fleet, Framing, Mode, Phase, ACK_EVERY, DRAIN_LIMIT};
use crate::payload::{self, Envelopes};
use crate::report::{round, Report};
use crate::server_proc::{Launch, Target};
use crate::stats::{median, Latency};

/// Options of the relay scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Sender/receiver pairs (2 × this many connections per relay).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Envelopes in flight per sender in the saturation phase.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Open-loop load points, as fractions of the saturated rate (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    pub load: Vec<f64>,
    /// Whose saturated rate the `--load` fractions refer to. `baseline` (with
    /// `--compare-baseline`) offers both relays the same rate, as the brief's latency
    /// target is defined; `product` keeps the product below its own capacity.
    #[arg(long, value_enum, default_value = "baseline")]
    pub load_of: LoadOf,
    /// Open-loop rate in msg/s for all pairs together, instead of `--load` fractions.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Frames the generator coalesces into one write (1 = one frame per write, like a
    /// phone; larger values measure server cost per message, not realistic clients).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// When product receivers ack (cumulatively): after this many deliveries, or `idle`,
    /// by `parley-sdk`'s rule: once the next frame is not already readable, after 64
    /// deliveries, or 20 ms after the first not acked (one ack per delivery at a
    /// moderate rate, one per burst under load; the generator stores nothing, so its
    /// bursts can be longer than an SDK's). A held envelope not acked within the
    /// server's `--hold-deadline` is settled by a commit instead.
    #[arg(long, default_value_t = ACK_EVERY)]
    pub ack_every: Acking,
    /// Saturation phases per relay (alternating); the median is reported.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// Whose saturated rate the open-loop load fractions refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadOf {
    /// The bare relay's (the product's without `--compare-baseline`).
    Baseline,
    /// The product's.
    Product,
}

/// Runs the relay scenario.
pub async fn run(
    args: &RelayArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    let envelopes = Arc::new(Envelopes::new(args.payload));
    let product_len = envelopes
        .product_frame(1, crate::account::Account::generate().address(), 0, 0)?
        .len();
    let compare = args.common.compare_baseline;
    let loads: Vec<f64> = match args.rate {
        Some(rate) => vec![rate],
        None => args.load.clone(),
    };
    let reps = args.reps.max(1);
    let relays = if compare { 2 } else { 1 };
    let phases = relays * (reps + loads.len());
    let window = args.common.duration / phases as u32;
    let warmup = args.common.warmup;

    let mut product = Fleet::start(launch, Target::Product, args.pairs).await?;
    let mut baseline = match compare {
        true => Some(Fleet::start(launch, Target::Baseline, args.pairs).await?),
        false => None,
    };
    let framing = |target| Framing {
        target,
        envelopes: envelopes.clone(),
        baseline_len: product_len,
        batch: args.batch,
        fan_out: None,
        acking: args.ack_every,
    };
    let saturation = Mode::Saturation {
        window: args.window.max(1) as u64,
    };
    let mut sat_product = Vec::new();
    let mut sat_baseline = Vec::new();
    for rep in 0..reps {
        if let Some(fleet) = baseline.as_mut() {
            let label = format!("baseline saturation {}", rep + 1);
            sat_baseline.push(
                run_phase(
                    fleet,
                    saturation,
                    warmup,
                    window,
                    &framing(Target::Baseline),
                    label,
                )
                .await?,
            );
        }
        let label = format!("product saturation {}", rep + 1);
        sat_product.push(
            run_phase(
                &mut product,
                saturation,
                warmup,
                window,
                &framing(Target::Product),
                label,
            )
            .await?,
        );
    }
    let rate_of = |phases: &[Phase]| median(&phases.iter().map(Phase::rate).collect::<Vec<_>>());
    let product_sat = rate_of(&sat_product);
    let baseline_sat = rate_of(&sat_baseline);
    let reference = match (compare, args.load_of) {
        (true, LoadOf::Baseline) => baseline_sat,
        _ => product_sat,
    };
    let mut open_product = Vec::new();
    let mut open_baseline = Vec::new();
    for &load in &loads {
        let rate = match args.rate {
            Some(rate) => rate,
            None => load * reference,
        };
        if !(rate.is_finite() && rate > 0.0) {
            bail!("saturated rate was {reference}: cannot derive an open-loop rate");
        }
        let mode = Mode::Open { rate };
        if let Some(fleet) = baseline.as_mut() {
            let label = format!("baseline open {rate:.0}/s");
            open_baseline.push((
                load,
                run_phase(
                    fleet,
                    mode,
                    warmup,
                    window,
                    &framing(Target::Baseline),
                    label,
                )
                .await?,
            ));
        }
        let label = format!("product open {rate:.0}/s");
        open_product.push((
            load,
            run_phase(
                &mut product,
                mode,
                warmup,
                window,
                &framing(Target::Product),
                label,
            )
            .await?,
        ));
    }
    let product_rss = product.server.rss().unwrap_or(0);

    let mut report = Report::new("relay", json!({}));
    let mut parameters = args.common.parameters();
    parameters["pairs"] = json!(args.pairs);
    parameters["window"] = json!(args.window);
    parameters["load"] = json!(loads);
    parameters["rate"] = json!(args.rate);
    parameters["load_of"] = json!(match (compare, args.load_of) {
        (true, LoadOf::Baseline) => "baseline",
        _ => "product",
    });
    parameters["batch"] = json!(args.batch);
    parameters["payload_bytes"] = json!(args.payload);
    parameters["reps"] = json!(reps);
    parameters["phase_window_s"] = json!(window.as_secs_f64());
    parameters["ack_every"] = json!(args.ack_every.to_string());
    parameters["wire_bytes_per_client_frame"] = json!(product_len);
    report.parameters = parameters;
    report.client_writes_batched = args.batch > 1;
    report.ratio_meaning = "product saturated msg/s / baseline saturated msg/s";
    report.product = side_json(&sat_product, &open_product, Some(product_rss));
    let mut plots = Vec::new();
    for (load, phase) in &open_product {
        plots.push((
            format!("product {:.0}/s ({load})", phase_rate(phase)),
            phase.latency.clone(),
        ));
    }
    if compare {
        report.baseline = Some(side_json(
            &sat_baseline,
            &open_baseline,
            baseline.as_ref().and_then(|b| b.server.rss().ok()),
        ));
        report.ratio = Some(product_sat / baseline_sat);
        let cpu = |phases: &[Phase]| {
            median(
                &phases
                    .iter()
                    .map(|p| p.cpu.server_us_per(p.delivered_in_window))
                    .collect::<Vec<_>>(),
            )
        };
        report.ratios.insert(
            "server_cpu_per_msg (product / baseline)".into(),
            round(cpu(&sat_product) / cpu(&sat_baseline)),
        );
        for ((load, p), (_, b)) in open_product.iter().zip(&open_baseline) {
            let (p99, p999) = match (p.latency.summary(), b.latency.summary()) {
                (Some(ps), Some(bs)) => (ps.p99_us / bs.p99_us, ps.p999_us / bs.p999_us),
                _ => (f64::NAN, f64::NAN),
            };
            report
                .ratios
                .insert(format!("p99_at_{load} (product / baseline)"), round(p99));
            report
                .ratios
                .insert(format!("p999_at_{load} (product / baseline)"), round(p999));
        }
        for (load, phase) in &open_baseline {
            plots.push((
                format!("baseline {:.0}/s ({load})", phase_rate(phase)),
                phase.latency.clone(),
            ));
        }
    }
    let all: Vec<&Phase> = sat_product
        .iter()
        .chain(&sat_baseline)
        .chain(open_product.iter().map(|(_, p)| p))
        .chain(open_baseline.iter().map(|(_, p)| p))
        .collect();
    for phase in &all {
        if phase.cpu.generator_pct() > 90.0 * generator_cores(launch)
            && phase.cpu.server_pct() < 90.0
        {
            report.notes.push(format!(
                "{} {:?}: generator-bound (generator {:.0} % CPU, server {:.0} %): the figure is the harness's limit, not the relay's",
                phase.target.name(),
                phase.mode,
                phase.cpu.generator_pct(),
                phase.cpu.server_pct()
            ));
        }
    }
    for (_, phase) in &open_product {
        if let Mode::Open { rate } = phase.mode {
            if rate > product_sat {
                report.notes.push(format!(
                    "product overloaded: offered {rate:.0} msg/s is above its saturated {product_sat:.0} msg/s, so its latency there is queueing; envelopes still queued after the {}-s drain are reported as undelivered_when_overloaded, not lost (they stay stored on the server)",
                    DRAIN_LIMIT.as_secs()
                ));
            }
        }
    }
    report.notes.push(format!(
        "latency is measured from each envelope's intended send time on an open-loop schedule; the warm-up ({:.1} s per phase) is excluded",
        warmup.as_secs_f64()
    ));
    if product_len > 0 && args.payload < payload::STAMP_BYTES {
        report
            .notes
            .push("payload smaller than the stamp; raised to 16 bytes".into());
    }
    drop(baseline);
    Ok((report, plots))
}

fn phase_rate(phase: &Phase) -> f64 {
    match phase.mode {
        Mode::Open { rate } => rate,
        Mode::Saturation { .. } => phase.rate(),
    }
}

fn generator_cores(launch: &Launch) -> f64 {
    let cpus = crate::sys::cpu_count();
    match launch.server_cpu {
        Some(_) if cpus > 1 => (cpus - 1) as f64,
        _ => cpus as f64,
    }
}

fn side_json(saturation: &[Phase], open: &[(f64, Phase)], rss: Option<u64>) -> Value {
    let rates: Vec<f64> = saturation.iter().map(Phase::rate).collect();
    let cpu: Vec<f64> = saturation
        .iter()
        .map(|p| p.cpu.server_us_per(p.delivered_in_window))
        .collect();
    let spread = |values: &[f64]| {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!([round(min), round(max)])
    };
    // An open-loop phase offered more than this relay's saturated rate cannot drain
    // within the phase's bounded drain; what it still holds is reported apart, not as
    // lost (the product keeps it stored).
    let capacity = median(&rates);
    let overloaded = |p: &Phase| matches!(p.mode, Mode::Open { rate } if rate > capacity);
    let lost: u64 = saturation
        .iter()
        .chain(open.iter().map(|(_, p)| p).filter(|p| !overloaded(p)))
        .map(Phase::lost)
        .sum();
    let undelivered_overloaded: u64 = open
        .iter()
        .map(|(_, p)| p)
        .filter(|p| overloaded(p))
        .map(Phase::lost)
        .sum();
    let errors: u64 = saturation
        .iter()
        .map(|p| p.errors)
        .chain(open.iter().map(|(_, p)| p.errors))
        .sum();
    json!({
        "saturated_msgs_per_s": round(median(&rates)),
        "saturated_msgs_per_s_range": spread(&rates),
        "server_cpu_us_per_msg": round(median(&cpu)),
        "lost": lost,
        "undelivered_when_overloaded": undelivered_overloaded,
        "errors": errors,
        "server_rss_bytes": rss,
        "saturation_runs": saturation.iter().map(Phase::to_json).collect::<Vec<_>>(),
        "latency_runs": open.iter().map(|(load, p)| {
            let mut v = p.to_json();
            v["load_fraction"] = json!(load);
            v
        }).collect::<Vec<_>>(),
    })
}

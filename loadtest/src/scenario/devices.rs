//! Linked devices (issue 15): what one message to every device of an account costs the
//! relay, against the single-device relay measured in the same run.
//!
//! Two product servers, each with its own data directory, and the same number of users
//! on each (2 × `--pairs`):
//!
//! * **single device**: every user has one device; the sender of each pair writes to its
//!   recipient with plain `send`, as in `relay` (S2);
//! * **fan-out**: every user has published a signed list of devices 1 to `--devices`
//!   (version 1) and every one of those devices is logged in; the sender's device 1
//!   writes with one `send_to_all` carrying one copy per device of the recipient's list
//!   (and, with `--own-copies`, one per other device of its own), and every receiving
//!   device acknowledges its own queue. The sender's other devices stay connected (idle
//!   without `--own-copies`).
//!
//! Phases, alternating single device then fan-out: `--reps` saturation phases each
//! (closed loop, `--window` messages in flight per sender, a message being in flight
//! until every device has its copy), then one open-loop phase each at the same offered
//! message rate (`--rate`, or `--load` × the fan-out's saturated message rate), for
//! latency and CPU at equal load. Every copy carries its intended send time; latency is
//! per device copy, from that time to its delivery.
//!
//! The figure the issue asks for, from the saturation medians and again at the equal
//! rate: the **per-device cost of fan-out**, `(CPU per send_to_all − CPU per single send)
//! / (copies − 1)`, as a fraction of the CPU of a separate single-device send (target
//! ≤ 0.5). Ciphertexts are opaque random bytes of `--payload` bytes per copy: the relay's
//! cost only, no client crypto.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use parley_protocol::ids::DeviceId;
use parley_protocol::wire::client::{ClientBody, PublishDevices};
use parley_protocol::wire::server::ServerBody;
use serde_json::{json, Value};

use super::phase::{run_phase, DeviceUser, Fleet, Framing, Mode, Phase, ACK_EVERY};
use super::SETUP_CONCURRENCY;
use crate::conn::{self, Auth};
use crate::payload::{Envelopes, FanOut};
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::{median, Latency};
use crate::sys;

/// The version of the list every fan-out account publishes.
const LIST_VERSION: u64 = 1;

/// Options of the linked-devices scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct DevicesArgs {
    /// Sender/recipient pairs (2 × this many users on each server).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Devices per user in the fan-out (all on the published list, all connected).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=6))]
    pub devices: u32,
    /// Also send a copy to each of the sender's other devices (`own_copies`).
    #[arg(long)]
    pub own_copies: bool,
    /// Messages in flight per sender in the saturation phases.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Saturation phases per configuration (alternating); medians are reported.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Open-loop phase at this fraction of the fan-out's saturated message rate, offered
    /// to both configurations; 0 skips it.
    #[arg(long, default_value_t = 0.5)]
    pub load: f64,
    /// Open-loop message rate (msg/s, all senders together) instead of `--load`.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes of each device's ciphertext (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// Runs the linked-devices scenario.
pub async fn run(
    args: &DevicesArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if args.common.compare_baseline {
        bail!("devices measures the single-device relay as its baseline; --compare-baseline (the bare relay) does not apply");
    }
    let fan_out = Arc::new(FanOut {
        version: LIST_VERSION,
        to: (1..=args.devices).map(DeviceId).collect(),
        own: match args.own_copies {
            true => (2..=args.devices).map(DeviceId).collect(),
            false => Vec::new(),
        },
    });
    let copies = fan_out.copies() as f64;
    let users = 2 * args.pairs;
    let reps = args.reps.max(1);
    let open = args.rate.is_some() || args.load > 0.0;
    let phases = 2 * (reps + usize::from(open));
    let window = args.common.duration / phases as u32;
    let warmup = args.common.warmup;
    let envelopes = Arc::new(Envelopes::new(args.payload));

    let mut single = Fleet::start(launch, Target::Product, args.pairs).await?;
    let server = ServerProcess::start(launch, Target::Product, users * args.devices as usize)?;
    let device_users = setup_users(server.addr, users, args.devices).await?;
    let mut multi = Fleet::multi_device(server, device_users, args.own_copies)?;

    let single_framing = Framing::product(envelopes.clone(), 1);
    let multi_framing = Framing {
        fan_out: Some(fan_out.clone()),
        ..Framing::product(envelopes.clone(), 1)
    };
    let saturation = Mode::Saturation {
        window: args.window.max(1) as u64,
    };
    let mut sat_single = Vec::new();
    let mut sat_multi = Vec::new();
    for rep in 1..=reps {
        let label = format!("single device saturation {rep}");
        sat_single.push(
            run_phase(
                &mut single,
                saturation,
                warmup,
                window,
                &single_framing,
                label,
            )
            .await?,
        );
        let label = format!("fan-out saturation {rep}");
        sat_multi.push(
            run_phase(
                &mut multi,
                saturation,
                warmup,
                window,
                &multi_framing,
                label,
            )
            .await?,
        );
    }
    let mut open_single = None;
    let mut open_multi = None;
    if open {
        let rate = match args.rate {
            Some(rate) => rate,
            None => {
                args.load
                    * median(
                        &sat_multi
                            .iter()
                            .map(Phase::accepted_rate)
                            .collect::<Vec<_>>(),
                    )
            }
        };
        if !(rate.is_finite() && rate > 0.0) {
            bail!("cannot derive an open-loop rate (fan-out saturated at {rate} msg/s)");
        }
        let mode = Mode::Open { rate };
        let label = format!("single device open {rate:.0} msg/s");
        open_single =
            Some(run_phase(&mut single, mode, warmup, window, &single_framing, label).await?);
        let label = format!("fan-out open {rate:.0} msg/s");
        open_multi =
            Some(run_phase(&mut multi, mode, warmup, window, &multi_framing, label).await?);
    }

    let mut report = Report::new("devices", json!({}));
    let mut parameters = args.common.parameters();
    parameters["pairs"] = json!(args.pairs);
    parameters["users_per_server"] = json!(users);
    parameters["devices"] = json!(args.devices);
    parameters["own_copies"] = json!(args.own_copies);
    parameters["copies_per_fan_out_message"] = json!(fan_out.copies());
    parameters["window"] = json!(args.window);
    parameters["reps"] = json!(reps);
    parameters["load"] = json!(args.load);
    parameters["rate"] = json!(args.rate);
    parameters["payload_bytes_per_copy"] = json!(args.payload);
    parameters["phase_window_s"] = json!(window.as_secs_f64());
    parameters["ack_every"] = json!(ACK_EVERY.to_string());
    report.parameters = parameters;
    report.product = side_json(&sat_multi, open_multi.as_ref());
    report.baseline = Some(side_json(&sat_single, open_single.as_ref()));
    report.ratio_meaning = "per-device cost of fan-out: (server CPU per send_to_all − per single-device send) / (copies − 1), over the CPU of a single-device send, saturated medians (target ≤ 0.5)";
    let cpu_per_msg =
        |phases: &[Phase]| median(&phases.iter().map(cpu_per_message).collect::<Vec<_>>());
    let (multi_cpu, single_cpu) = (cpu_per_msg(&sat_multi), cpu_per_msg(&sat_single));
    let per_device = (multi_cpu - single_cpu) / (copies - 1.0);
    report.ratio = Some(per_device / single_cpu);
    report
        .ratios
        .insert("per_device_cpu_us (saturated)".into(), round(per_device));
    report.ratios.insert(
        "server_cpu_per_msg (fan-out / single device, saturated)".into(),
        round(multi_cpu / single_cpu),
    );
    let accepted =
        |phases: &[Phase]| median(&phases.iter().map(Phase::accepted_rate).collect::<Vec<_>>());
    report.ratios.insert(
        "msgs_per_s (fan-out / single device, saturated)".into(),
        round(accepted(&sat_multi) / accepted(&sat_single)),
    );
    if let (Some(m), Some(s)) = (&open_multi, &open_single) {
        let (m_cpu, s_cpu) = (cpu_per_message(m), cpu_per_message(s));
        let per_device = (m_cpu - s_cpu) / (copies - 1.0);
        report
            .ratios
            .insert("per_device_cpu_us (equal rate)".into(), round(per_device));
        report.ratios.insert(
            "per_device_cost (equal rate, same formula as the ratio)".into(),
            round(per_device / s_cpu),
        );
        if let (Some(ms), Some(ss)) = (m.latency.summary(), s.latency.summary()) {
            report.ratios.insert(
                "p99 (fan-out / single device, equal rate)".into(),
                round(ms.p99_us / ss.p99_us),
            );
        }
    }
    let mut plots = Vec::new();
    for phase in sat_single
        .iter()
        .chain(&sat_multi)
        .chain(&open_single)
        .chain(&open_multi)
    {
        if phase.cpu.generator_pct() > 90.0 * generator_cores(launch)
            && phase.cpu.server_pct() < 90.0
        {
            report.notes.push(format!(
                "{} copies/msg {:?}: generator-bound (generator {:.0} % CPU, server {:.0} %)",
                phase.copies,
                phase.mode,
                phase.cpu.generator_pct(),
                phase.cpu.server_pct()
            ));
        }
    }
    for (name, phase) in [("single device", &open_single), ("fan-out", &open_multi)] {
        if let Some(phase) = phase {
            plots.push((
                format!("{name} {:.0} msg/s", phase_rate(phase)),
                phase.latency.clone(),
            ));
        }
    }
    report.notes.push(format!(
        "product = fan-out ({} copies per send_to_all), baseline = the single-device relay (plain send) on its own server in the same run; CPU per message divides by accepted requests, per copy by device copies delivered",
        fan_out.copies()
    ));
    report.notes.push(format!(
        "latency is per device copy, from its intended send time; saturation latency is closed-loop queueing ({} messages in flight per sender); the warm-up ({:.1} s per phase) is excluded",
        args.window,
        warmup.as_secs_f64()
    ));
    drop(multi);
    drop(single);
    Ok((report, plots))
}

/// Registers `users` accounts, publishes on each a list of devices `1..=devices`, and
/// logs in every device (device 1 on the registering connection).
async fn setup_users(
    server: SocketAddr,
    users: usize,
    devices: u32,
) -> anyhow::Result<Vec<DeviceUser>> {
    // Source addresses: device 1 of user i at index i, device d at (d − 1) × users + i.
    let registered = super::register_accounts(server, users, 0).await?;
    let results: Vec<anyhow::Result<DeviceUser>> =
        futures_util::stream::iter(registered.into_iter().enumerate())
            .map(|(i, (account, mut session))| async move {
                let list = account.device_list(LIST_VERSION, devices)?;
                match session
                    .request(ClientBody::PublishDevices(PublishDevices { list }))
                    .await?
                {
                    Ok(ServerBody::Devices(_)) => {}
                    other => bail!("publish_devices refused: {other:?}"),
                }
                let mut connections = vec![conn::into_ws(session)?];
                for device in 2..=devices {
                    let source = sys::source_ip((device as usize - 1) * users + i);
                    let ws =
                        conn::parley_ws(server, source, &account, Auth::LoginAs(DeviceId(device)))
                            .await
                            .with_context(|| format!("logging in device {device} of user {i}"))?;
                    connections.push(ws);
                }
                Ok(DeviceUser {
                    address: account.address(),
                    devices: connections,
                })
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
    results.into_iter().collect()
}

/// Server CPU per accepted request.
fn cpu_per_message(phase: &Phase) -> f64 {
    phase.cpu.server_us_per(phase.accepted_in_window)
}

fn phase_rate(phase: &Phase) -> f64 {
    match phase.mode {
        Mode::Open { rate } => rate,
        Mode::Saturation { .. } => phase.accepted_rate(),
    }
}

fn generator_cores(launch: &Launch) -> f64 {
    let cpus = sys::cpu_count();
    match launch.server_cpu {
        Some(_) if cpus > 1 => (cpus - 1) as f64,
        _ => cpus as f64,
    }
}

/// One phase's figures.
fn phase_json(phase: &Phase) -> Value {
    let mut value = json!({
        "msgs_per_s": round(phase.accepted_rate()),
        "deliveries_per_s": round(phase.rate()),
        "server_cpu_us_per_msg": round(cpu_per_message(phase)),
        "server_cpu_us_per_copy": round(phase.cpu.server_us_per(phase.delivered_in_window)),
        "server_cpu_pct": round(phase.cpu.server_pct()),
        "generator_cpu_pct": round(phase.cpu.generator_pct()),
        "copies_sent": phase.sent,
        "copies_delivered": phase.delivered,
        "fewest_copies_per_device": phase.fewest_per_device,
        "undelivered_after_drain": phase.lost(),
        "errors": phase.errors,
        "latency": phase.latency.summary(),
    });
    if let Mode::Open { rate } = phase.mode {
        value["offered_msgs_per_s"] = round(rate);
    }
    value
}

/// One configuration's figures: saturation medians, every phase, the open-loop phase.
fn side_json(saturation: &[Phase], open: Option<&Phase>) -> Value {
    let med =
        |f: &dyn Fn(&Phase) -> f64| round(median(&saturation.iter().map(f).collect::<Vec<_>>()));
    let all = saturation.iter().chain(open);
    json!({
        "copies_per_msg": saturation.first().map(|p| p.copies),
        "saturated_msgs_per_s": med(&Phase::accepted_rate),
        "saturated_deliveries_per_s": med(&Phase::rate),
        "server_cpu_us_per_msg": med(&cpu_per_message),
        "server_cpu_us_per_copy": med(&|p: &Phase| p.cpu.server_us_per(p.delivered_in_window)),
        "lost": all.clone().map(Phase::lost).sum::<u64>(),
        "errors": all.map(|p| p.errors).sum::<u64>(),
        "saturation_runs": saturation.iter().map(phase_json).collect::<Vec<_>>(),
        "open_loop": open.map(phase_json),
    })
}

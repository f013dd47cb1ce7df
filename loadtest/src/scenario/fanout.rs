//! S4, business fan-out: one verified business sends to K opted-in users, all online.
//!
//! Setup, on a fresh server whose data directory the harness owns:
//! 1. a business account registers with a handle; the real `parley-server admin
//!    verify-business HANDLE ... --data-dir DIR` verifies it (categories
//!    `transactional`), and `admin set-tier HANDLE` lifts its daily reach (a tier beyond
//!    `--business-reach-tiers` is unlimited); the server also gets
//!    `--business-sends-per-second` above the send rate, so neither limit shapes the run;
//! 2. `--users` people register (source addresses spread over 127.0.0.x) and each sends
//!    a signed `grant_consent` for `transactional`, then stays connected.
//!
//! Then, `--rounds` times, the business sends one `transactional` envelope to every
//! user, open loop at `--rate` sends/s from one connection, each stamped with its
//! intended send time. Every user records the latency from that intended time to the
//! delivery (no coordinated omission: a slow server shows as latency, not as fewer
//! samples) and acknowledges. A round ends when every envelope arrived or
//! [`DRAIN_LIMIT`] passed. Reported: per-user delivery latency (p50/p99/max over all
//! rounds), each round's completion time (first intended send → last delivery), server
//! CPU per delivery, refusals and lost envelopes.
//!
//! There is no bare-relay equivalent (the baseline has no business accounts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use parley_protocol::business::{Category, CategorySet};
use parley_protocol::ids::{DeviceAddress, RequestId, Seq};
use parley_protocol::wire::client::{Ack, ClientBody, GrantConsent, Send};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ClientFrame;
use parley_sdk::wire;
use serde_json::json;

use super::{counter, CpuSample, SETUP_CONCURRENCY};
use crate::account::Account;
use crate::conn::{self, Auth, Ws};
use crate::payload::{self, Envelopes};
use crate::progress::Progress;
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::Latency;
use crate::sys;

/// Longest wait for a round's envelopes after its last send.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The tier the business is set to: beyond any sensible `--business-reach-tiers` list,
/// so its daily reach is unlimited.
const UNLIMITED_TIER: &str = "1000";

/// Options of the fan-out scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Opted-in users, all online (one connection each).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Broadcasts: each sends one envelope to every user.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The business's send rate, sends/s (open loop, one connection).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Pause between rounds.
    #[arg(long, default_value = "500ms", value_parser = super::parse_duration)]
    pub pause: Duration,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// What all user tasks share.
#[derive(Debug)]
struct Deliveries {
    epoch: Instant,
    latency: Mutex<Latency>,
    count: AtomicU64,
    last_ns: AtomicU64,
    errors: AtomicU64,
    progress: Arc<AtomicU64>,
}

/// Runs the fan-out scenario.
pub async fn run(
    args: &FanoutArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.users == 0 || args.rounds == 0 || !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--users, --rounds and --rate must be above 0");
    }
    let mut launch = launch.clone();
    let sends_per_second = (args.rate.ceil() as u64).max(args.users as u64) * 4;
    launch.server_args.push(format!(
        "--business-sends-per-second={}",
        sends_per_second.min(u64::from(u32::MAX))
    ));
    let server = ServerProcess::start(&launch, Target::Product, args.users + 8)?;
    let data_dir = server
        .data_dir()
        .context("the product server has a data directory")?
        .to_path_buf();
    let addr = server.addr;

    // The business: register with a handle, verify, lift the reach.
    let handle = format!("loadbiz{}", std::process::id());
    let business = Account::generate().with_handle(&handle)?;
    let business_ws = conn::parley_ws(addr, sys::source_ip(0), &business, Auth::Register)
        .await
        .context("registering the business")?;
    admin(
        &launch,
        &data_dir,
        &[
            "verify-business",
            &handle,
            "--legal-name",
            "Load Test Ltd",
            "--display-name",
            "Load Test",
            "--domain",
            "loadtest.example",
            "--categories",
            "transactional",
        ],
    )?;
    admin(&launch, &data_dir, &["set-tier", &handle, UNLIMITED_TIER])?;

    // The users: register, grant consent, stay connected.
    let users = super::register_accounts(addr, args.users, 1).await?;
    let business_id = business.address().account;
    let granted: Vec<anyhow::Result<(DeviceAddress, Ws)>> = futures_util::stream::iter(users)
        .map(|(account, mut session)| async move {
            let grant =
                account.consent_grant(business_id, CategorySet::of([Category::Transactional]))?;
            let body = ClientBody::GrantConsent(GrantConsent { grant });
            match session.request(body).await? {
                Ok(ServerBody::ConsentUpdated(_)) => {
                    Ok((account.address(), conn::into_ws(session)?))
                }
                other => bail!("grant_consent refused: {other:?}"),
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let users: Vec<(DeviceAddress, Ws)> = granted.into_iter().collect::<anyhow::Result<_>>()?;
    let addresses: Arc<Vec<DeviceAddress>> = Arc::new(users.iter().map(|(a, _)| *a).collect());

    let progress = counter();
    let deliveries = Arc::new(Deliveries {
        epoch: Instant::now(),
        latency: Mutex::new(Latency::new()),
        count: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        progress: progress.clone(),
    });
    let receivers: Vec<_> = users
        .into_iter()
        .map(|(_, ws)| tokio::spawn(receive(ws, deliveries.clone())))
        .collect();

    let (mut sink, stream) = business_ws.split();
    let replies = Arc::new(Replies::default());
    let reader = tokio::spawn(read_replies(stream, replies.clone()));
    let envelopes = Envelopes::new(args.payload);
    let total = (args.users * args.rounds) as u64;
    let bar = Progress::start(
        "product fan-out".into(),
        Duration::from_secs_f64(total as f64 / args.rate),
        progress.clone(),
        "delivered",
    );
    let before = CpuSample::take(&server)?;
    let mut completions = Vec::with_capacity(args.rounds);
    let mut rid = 10u32;
    for r in 0..args.rounds {
        let delivered_before = deliveries.count.load(Ordering::Relaxed);
        let start_ns = deliveries.epoch.elapsed().as_nanos() as u64 + 1_000_000;
        for (i, to) in addresses.iter().enumerate() {
            let intended_ns = start_ns + (i as f64 * 1e9 / args.rate) as u64;
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                deliveries.epoch + Duration::from_nanos(intended_ns),
            ))
            .await;
            let seq = (r * args.users + i) as u64;
            let body = ClientBody::Send(Send {
                to: *to,
                id: crate::payload::client_message_id(),
                ciphertext: envelopes.stamped(intended_ns, seq),
                category: Some(Category::Transactional),
                receipt: false,
            });
            rid = rid.wrapping_add(1);
            sink.send(wire::frame_message(&ClientFrame::new(
                RequestId(rid),
                body,
            ))?)
            .await?;
        }
        let expected = delivered_before + args.users as u64;
        let deadline = Instant::now() + DRAIN_LIMIT;
        while deliveries.count.load(Ordering::Relaxed) < expected
            && replies.refused.load(Ordering::Relaxed) == 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last_ns = deliveries.last_ns.load(Ordering::Relaxed);
        completions.push(last_ns.saturating_sub(start_ns) as f64 / 1e6);
        if r + 1 < args.rounds {
            tokio::time::sleep(args.pause).await;
        }
    }
    let after = CpuSample::take(&server)?;
    bar.finish();
    drop(sink);
    reader.abort();
    for receiver in &receivers {
        receiver.abort();
    }

    let cpu = before.until(&after);
    let delivered = deliveries.count.load(Ordering::Relaxed);
    let latency = deliveries
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut parameters = args.common.parameters();
    parameters["users"] = json!(args.users);
    parameters["rounds"] = json!(args.rounds);
    parameters["rate"] = json!(args.rate);
    parameters["payload_bytes"] = json!(args.payload);
    let mut report = Report::new("fanout", parameters);
    report.product = json!({
        "users": args.users,
        "sent": total,
        "accepted": replies.accepted.load(Ordering::Relaxed),
        "refused": replies.refused.load(Ordering::Relaxed),
        "first_refusal": replies.first_refusal.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        "delivered": delivered,
        "lost": total.saturating_sub(delivered),
        "receiver_errors": deliveries.errors.load(Ordering::Relaxed),
        "latency": latency.summary(),
        "completion_ms": completions.iter().map(|c| round(*c)).collect::<Vec<_>>(),
        "completion_ms_median": round(crate::stats::median(&completions)),
        "deliveries_per_s": round(delivered as f64 / cpu.wall.as_secs_f64().max(1e-9)),
        "server_cpu_us_per_delivery": round(cpu.server_us_per(delivered)),
        "server_cpu_pct": round(cpu.server_pct()),
        "generator_cpu_pct": round(cpu.generator_pct()),
    });
    report.ratio_meaning = "none: the bare relay has no business accounts";
    report.notes.push(format!(
        "one business connection sending open loop at {} sends/s; latency from each envelope's intended send time to its delivery",
        args.rate
    ));
    Ok((report, vec![("product".into(), latency)]))
}

/// Runs `parley-server admin ARGS --data-dir DIR`.
fn admin(launch: &Launch, data_dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(&launch.server_bin)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("running parley-server admin")?;
    if !out.status.success() {
        bail!(
            "parley-server admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What the business's replies said.
#[derive(Debug, Default)]
struct Replies {
    accepted: AtomicU64,
    refused: AtomicU64,
    first_refusal: Mutex<Option<String>>,
}

async fn read_replies(mut stream: SplitStream<Ws>, replies: Arc<Replies>) {
    loop {
        let frame = match wire::next_frame(&mut stream, || {}).await {
            Err(e) if e.is_connection_error() => break,
            frame => frame,
        };
        match frame.map(|f| f.body) {
            Ok(ServerBody::Accepted(_)) => {
                replies.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ServerBody::Drained(_)) => {}
            other => {
                replies.refused.fetch_add(1, Ordering::Relaxed);
                let mut first = replies
                    .first_refusal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.is_none() {
                    *first = Some(format!("{other:?}"));
                }
            }
        }
    }
}

/// One user: records each delivery's latency and acknowledges it.
async fn receive(mut ws: Ws, shared: Arc<Deliveries>) {
    let mut rid = 100u32;
    loop {
        let frame = match wire::next_frame(&mut ws, || {}).await {
            Ok(frame) => frame,
            Err(e) if e.is_connection_error() => break,
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let ServerBody::Deliver(d) = frame.body else {
            continue;
        };
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        match payload::read_stamp(&d.ciphertext) {
            Ok((intended_ns, _)) => {
                shared
                    .latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(now_ns.saturating_sub(intended_ns));
                shared.last_ns.fetch_max(now_ns, Ordering::Relaxed);
                shared.count.fetch_add(1, Ordering::Relaxed);
                shared.progress.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        rid = rid.wrapping_add(1);
        let ack = ClientBody::Ack(Ack {
            through: Seq(d.seq.0),
        });
        if conn::send_frame(&mut ws, rid, ack).await.is_err() {
            break;
        }
    }
}

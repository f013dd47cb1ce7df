//! S5, connect + authenticate: handshakes per second under open-loop arrivals.
//!
//! Arrivals follow a fixed schedule at `--rate` per second. Each does TCP connect (from
//! a rotating 127.0.0.x source) → WebSocket upgrade → `hello` → signed `auth` →
//! `authenticated` → `drained` (the first, empty, sync), then closes; the server ends
//! the TCP connection, so TIME_WAIT stays off the client's ports. Latency runs from the
//! arrival's intended start to `drained`, so a backlog of arrivals counts against the
//! server. The baseline does upgrade → one message to itself through the relay → close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::SinkExt;
use parley_protocol::wire::server::ServerBody;
use parley_sdk::wire;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::{counter, CpuSample, CpuWindow};
use crate::account::Account;
use crate::conn::{self, Auth};
use crate::progress::Progress;
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::Latency;
use crate::sys;

/// Longest a handshake may take before it counts as failed.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Options of the connect scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Connection arrivals per second (open loop).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Accounts the arrivals log in as, in turn.
    #[arg(long, default_value_t = 500)]
    pub accounts: usize,
    /// Handshakes in progress at most (bounds the generator's file descriptors).
    #[arg(long, default_value_t = 4000)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub common: super::Common,
}

#[derive(Debug)]
struct Measured {
    cpu: CpuWindow,
    succeeded: u64,
    failed: u64,
    attempted: u64,
    latency: Latency,
    first_error: Option<String>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.succeeded as f64 / self.cpu.wall.as_secs_f64().max(1e-9)
    }

    fn to_json(&self, offered: f64) -> Value {
        json!({
            "handshakes_per_s": round(self.rate()),
            "offered_per_s": round(offered),
            "attempted": self.attempted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failure_pct": round(100.0 * self.failed as f64 / self.attempted.max(1) as f64),
            "first_error": self.first_error,
            "latency": self.latency.summary(),
            "server_cpu_us_per_handshake": round(self.cpu.server_us_per(self.succeeded)),
            "server_cpu_pct": round(self.cpu.server_pct()),
            "generator_cpu_pct": round(self.cpu.generator_pct()),
            "lost": self.failed,
        })
    }
}

/// One handshake against `target`.
async fn handshake(
    target: Target,
    server: SocketAddr,
    index: u64,
    account: Option<&Account>,
) -> anyhow::Result<()> {
    let source = sys::source_ip(index as usize);
    match (target, account) {
        (Target::Product, Some(account)) => {
            let mut session = conn::parley_session(server, source, account, Auth::Login).await?;
            loop {
                let push = tokio::time::timeout(conn::STEP_TIMEOUT, session.next_push())
                    .await
                    .context("no drained")??;
                match push {
                    ServerBody::Drained(_) => break,
                    ServerBody::Error(e) => bail!("error {:?}", e.code),
                    _ => continue,
                }
            }
            let _ = session.close().await;
        }
        (Target::Product, None) => bail!("no account"),
        (Target::Baseline, _) => {
            // Ids above the relay scenario's range; unique per arrival.
            let id = 0x8000_0000u32 | (index as u32 & 0x7fff_ffff);
            let mut ws = conn::connect(server, &format!("/{id}"), source).await?;
            let mut message = id.to_le_bytes().to_vec();
            message.extend_from_slice(&[0u8; 32]);
            ws.send(Message::Binary(Bytes::from(message))).await?;
            wire::next_binary(&mut ws, || {}).await?;
            conn::close(ws).await;
        }
    }
    Ok(())
}

async fn measure(
    args: &ConnectArgs,
    launch: &Launch,
    target: Target,
    window: Duration,
) -> anyhow::Result<Measured> {
    let server = ServerProcess::start(launch, target, args.max_in_flight + args.accounts)?;
    let accounts: Arc<Vec<Account>> = Arc::new(match target {
        Target::Product => super::register_only(server.addr, args.accounts.max(1), 0).await?,
        Target::Baseline => Vec::new(),
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let epoch = Instant::now();
    let warm = args.common.warmup;
    let end = warm + window;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1e-3));
    let slots = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let succeeded = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let shown = counter();
    let latency = Arc::new(Mutex::new(Latency::new()));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let progress = Progress::start(
        format!("{} connect", target.name()),
        end,
        shown.clone(),
        "handshakes",
    );
    let mut tasks = Vec::new();
    let mut attempted = 0u64;
    let mut start_sample = None;
    let addr = server.addr;
    for index in 0u64.. {
        let intended = interval.mul_f64(index as f64);
        if intended >= end {
            break;
        }
        if start_sample.is_none() && intended >= warm {
            tokio::time::sleep_until(tokio::time::Instant::from_std(epoch + warm)).await;
            start_sample = Some(CpuSample::take(&server)?);
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(epoch + intended)).await;
        let permit = slots.clone().acquire_owned().await?;
        let measured = intended >= warm;
        if measured {
            attempted += 1;
        }
        let accounts = accounts.clone();
        let (succeeded, failed, shown, latency, first_error) = (
            succeeded.clone(),
            failed.clone(),
            shown.clone(),
            latency.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let account = accounts.get(index as usize % accounts.len().max(1));
            let result =
                tokio::time::timeout(HANDSHAKE_LIMIT, handshake(target, addr, index, account))
                    .await;
            let done = epoch.elapsed();
            drop(permit);
            shown.fetch_add(1, Ordering::Relaxed);
            if !measured {
                return;
            }
            match result {
                Ok(Ok(())) if done <= end => {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                    let nanos = done.saturating_sub(intended).as_nanos() as u64;
                    latency
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(nanos);
                }
                // Completed after the window: counted in latency, not in the rate.
                Ok(Ok(())) => {
                    let nanos = done.saturating_sub(intended).as_nanos() as u64;
                    latency
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(nanos);
                }
                Ok(Err(e)) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(format!("{e:#}"));
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert("timed out".into());
                }
            }
        }));
        // Forget finished tasks now and then (not on every arrival: that would cost the
        // generator O(in flight) per arrival).
        if index % 256 == 0 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(epoch + end)).await;
    let end_sample = CpuSample::take(&server)?;
    for task in tasks {
        let _ = task.await;
    }
    progress.finish();
    let start_sample = match start_sample {
        Some(s) => s,
        None => bail!("the window had no arrivals; raise --rate or --duration"),
    };
    let latency = latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let first_error = first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(Measured {
        cpu: start_sample.until(&end_sample),
        succeeded: succeeded.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        attempted,
        latency,
        first_error,
    })
}

/// Runs the connect scenario; also returns latency histograms for plotting.
pub async fn run(
    args: &ConnectArgs,
    launch: &Launch,
) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    let compare = args.common.compare_baseline;
    let window = args.common.duration / if compare { 2 } else { 1 };
    let baseline = match compare {
        true => Some(measure(args, launch, Target::Baseline, window).await?),
        false => None,
    };
    let product = measure(args, launch, Target::Product, window).await?;
    let mut parameters = args.common.parameters();
    parameters["rate"] = json!(args.rate);
    parameters["accounts"] = json!(args.accounts);
    parameters["max_in_flight"] = json!(args.max_in_flight);
    parameters["phase_window_s"] = json!(window.as_secs_f64());
    let mut report = Report::new("connect", parameters);
    report.envelopes = "none (handshakes)";
    report.product = product.to_json(args.rate);
    report.ratio_meaning = "product handshakes/s / baseline handshakes/s at the same offered rate";
    let mut plots = vec![("product".to_owned(), product.latency.clone())];
    if let Some(baseline) = &baseline {
        report.baseline = Some(baseline.to_json(args.rate));
        report.ratio = Some(product.rate() / baseline.rate());
        plots.push(("baseline".to_owned(), baseline.latency.clone()));
    }
    if product.rate() < 0.95 * args.rate {
        report.notes.push("the product did not keep up with the offered rate: its handshakes/s is its capacity here".into());
    } else {
        report.notes.push(
            "the product kept up with the offered rate: raise --rate to find its capacity".into(),
        );
    }
    Ok((report, plots))
}

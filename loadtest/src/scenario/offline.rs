//! S3, offline store and drain.
//!
//! Recipients are registered and disconnected. `--senders` connections then send
//! `--messages` envelopes spread round-robin over the recipients, each keeping
//! `--window` sends outstanding (the server answers `accepted` only after the durable
//! commit, in order per connection); the store rate is accepted envelopes per second,
//! and the sender-ack latency is send → `accepted`. Then every recipient logs in at
//! once and reads its backlog, acknowledging every page; the drain rate is envelopes
//! delivered per second from the first login to the last envelope, and each
//! recipient's count is checked against what was accepted for it (lost = missing).
//!
//! There is no bare-relay equivalent (the baseline stores nothing); compare with the
//! brief's targets instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use parley_protocol::ids::DeviceAddress;
use parley_protocol::wire::server::ServerBody;
use parley_sdk::wire;
use serde_json::json;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::{counter, CpuSample};
use crate::account::Account;
use crate::conn::{self, Auth, Ws};
use crate::payload::{self, Envelopes, Pushed};
use crate::progress::Progress;
use crate::report::{round, Report};
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::Latency;
use crate::sys;

/// A recipient acknowledges after this many deliveries (one delivery page).
const ACK_EVERY: u64 = 256;

/// Options of the offline scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    /// Sending connections.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Offline recipients the envelopes are spread over.
    #[arg(long, default_value_t = 100)]
    pub recipients: usize,
    /// Envelopes to store in total (the store phase also stops at --duration).
    #[arg(long, default_value_t = 50_000)]
    pub messages: u64,
    /// Sends outstanding per sender (awaiting `accepted`).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    #[command(flatten)]
    pub common: super::Common,
}

/// One sender's share of the store phase.
struct StoreJob {
    count: u64,
    recipients: Arc<Vec<DeviceAddress>>,
    first: usize,
    envelopes: Arc<Envelopes>,
    window: u64,
    deadline: Instant,
    progress: Arc<AtomicU64>,
}

/// Stores `job.count` envelopes (or as many as fit before the deadline); returns how
/// many went to each recipient and the send → `accepted` latencies.
async fn store(ws: Ws, job: StoreJob) -> anyhow::Result<(Vec<u64>, Latency)> {
    let StoreJob {
        count,
        recipients,
        first,
        envelopes,
        window,
        deadline,
        progress,
    } = job;
    let (mut sink, mut stream) = ws.split();
    let accepted = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());
    let sent_at: Arc<std::sync::Mutex<VecDeque<Instant>>> = Arc::default();
    let reader = {
        let (accepted, wake, sent_at, progress) = (
            accepted.clone(),
            wake.clone(),
            sent_at.clone(),
            progress.clone(),
        );
        tokio::spawn(async move {
            let mut latency = Latency::new();
            let mut errors = 0u64;
            loop {
                let bytes = match wire::next_binary(&mut stream, || {}).await {
                    Ok(bytes) => bytes,
                    Err(e) if e.is_connection_error() => break,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                match payload::parse_product(&bytes) {
                    Ok(Pushed::Accepted) => {
                        let sent = sent_at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop_front();
                        if let Some(sent) = sent {
                            latency.record(sent.elapsed().as_nanos() as u64);
                        }
                        accepted.fetch_add(1, Ordering::Relaxed);
                        progress.fetch_add(1, Ordering::Relaxed);
                        wake.notify_one();
                    }
                    Ok(Pushed::Drained) => {}
                    _ => errors += 1,
                }
            }
            (latency, errors)
        })
    };
    let mut per_recipient = vec![0u64; recipients.len()];
    let mut sent = 0u64;
    while sent < count && Instant::now() < deadline {
        if sent - accepted.load(Ordering::Relaxed) >= window {
            let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
            continue;
        }
        let r = (first + sent as usize) % recipients.len();
        let frame = envelopes.product_frame((sent + 1) as u32, recipients[r], 0, sent)?;
        sent_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Instant::now());
        sink.send(Message::Binary(Bytes::from(frame))).await?;
        per_recipient[r] += 1;
        sent += 1;
    }
    let limit = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::Relaxed) < sent && Instant::now() < limit {
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
    }
    if accepted.load(Ordering::Relaxed) < sent {
        bail!(
            "{} sends never accepted",
            sent - accepted.load(Ordering::Relaxed)
        );
    }
    let _ = sink.close().await;
    let (latency, errors) = reader.await.context("reader task")?;
    if errors > 0 {
        bail!("{errors} unexpected replies while storing");
    }
    Ok((per_recipient, latency))
}

/// One recipient's drain: returns (delivered, time to first envelope, time done).
async fn drain(
    server: std::net::SocketAddr,
    index: usize,
    account: &Account,
    expected: u64,
    epoch: Instant,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<(u64, Option<Duration>, Duration)> {
    let mut session =
        conn::parley_session(server, sys::source_ip(index), account, Auth::Login).await?;
    let mut delivered = 0u64;
    let mut first = None;
    let mut unacked = 0u64;
    let mut last_seq = 0u64;
    let mut drained = false;
    while !(drained && delivered >= expected) {
        let push = tokio::time::timeout(conn::STEP_TIMEOUT, session.next_push())
            .await
            .context("nothing while draining")?
            .context("draining")?;
        match push {
            ServerBody::Deliver(d) => {
                payload::read_stamp(&d.ciphertext)?;
                first.get_or_insert_with(|| epoch.elapsed());
                delivered += 1;
                unacked += 1;
                last_seq = d.seq.0;
                progress.fetch_add(1, Ordering::Relaxed);
                if unacked >= ACK_EVERY {
                    session.send(ack_body(last_seq)).await?;
                    unacked = 0;
                }
            }
            ServerBody::Drained(_) => drained = true,
            other => bail!("unexpected frame while draining: {other:?}"),
        }
    }
    let done = epoch.elapsed();
    if unacked > 0 {
        session.send(ack_body(last_seq)).await?;
    }
    let _ = session.close().await;
    Ok((delivered, first, done))
}

fn ack_body(through: u64) -> parley_protocol::wire::client::ClientBody {
    parley_protocol::wire::client::ClientBody::Ack(parley_protocol::wire::client::Ack {
        through: parley_protocol::ids::Seq(through),
    })
}

/// Runs the offline scenario.
pub async fn run(args: &OfflineArgs, launch: &Launch) -> anyhow::Result<Report> {
    if args.senders == 0 || args.recipients == 0 {
        bail!("--senders and --recipients must be at least 1");
    }
    let server = ServerProcess::start(launch, Target::Product, args.senders + args.recipients)?;
    let recipients: Vec<Account> = super::register_only(server.addr, args.recipients, 0).await?;
    let senders = super::register_accounts(server.addr, args.senders, args.recipients).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addresses = Arc::new(recipients.iter().map(Account::address).collect::<Vec<_>>());
    let envelopes = Arc::new(Envelopes::new(args.payload));

    // Store.
    let stored = counter();
    let progress = Progress::start(
        "product store".into(),
        args.common.duration,
        stored.clone(),
        "accepted",
    );
    let started = Instant::now();
    let deadline = started + args.common.duration;
    let cpu_start = CpuSample::take(&server)?;
    let share = args.messages / args.senders as u64;
    let extra = args.messages % args.senders as u64;
    let mut tasks = Vec::new();
    for (i, (_, ws)) in senders.into_iter().enumerate() {
        let count = share + u64::from((i as u64) < extra);
        let job = StoreJob {
            count,
            recipients: addresses.clone(),
            first: i,
            envelopes: envelopes.clone(),
            window: args.window.max(1) as u64,
            deadline,
            progress: stored.clone(),
        };
        tasks.push(tokio::spawn(store(conn::into_ws(ws)?, job)));
    }
    let mut expected = vec![0u64; args.recipients];
    let mut ack_latency = Latency::new();
    for task in tasks {
        let (per_recipient, latency) = task.await.context("sender task")??;
        for (total, n) in expected.iter_mut().zip(per_recipient) {
            *total += n;
        }
        ack_latency.merge(&latency);
    }
    let store_time = started.elapsed();
    let cpu_store = cpu_start.until(&CpuSample::take(&server)?);
    progress.finish();
    let total: u64 = expected.iter().sum();
    let data_bytes = server.data_bytes();

    // Drain.
    let drained = counter();
    let progress = Progress::start(
        "product drain".into(),
        Duration::from_secs(5),
        drained.clone(),
        "delivered",
    );
    let cpu_start = CpuSample::take(&server)?;
    let epoch = Instant::now();
    let addr = server.addr;
    let results: Vec<anyhow::Result<(u64, Option<Duration>, Duration)>> =
        futures_util::stream::iter(recipients.iter().zip(&expected).enumerate())
            .map(|(i, (account, &n))| drain(addr, i, account, n, epoch, drained.clone()))
            .buffer_unordered(args.recipients)
            .collect()
            .await;
    let cpu_drain = cpu_start.until(&CpuSample::take(&server)?);
    progress.finish();
    let mut delivered = 0u64;
    let mut firsts = Vec::new();
    let mut last_done = Duration::ZERO;
    for result in results {
        let (n, first, done) = result?;
        delivered += n;
        if let Some(first) = first {
            firsts.push(first.as_secs_f64() * 1e3);
        }
        last_done = last_done.max(done);
    }
    let store_rate = total as f64 / store_time.as_secs_f64().max(1e-9);
    let drain_rate = delivered as f64 / last_done.as_secs_f64().max(1e-9);

    let mut parameters = args.common.parameters();
    parameters["senders"] = json!(args.senders);
    parameters["recipients"] = json!(args.recipients);
    parameters["messages"] = json!(args.messages);
    parameters["window"] = json!(args.window);
    parameters["payload_bytes"] = json!(args.payload);
    let mut report = Report::new("offline", parameters);
    report.product = json!({
        "stored": total,
        "stored_msgs_per_s": round(store_rate),
        "store_seconds": round(store_time.as_secs_f64()),
        "sender_ack_latency": ack_latency.summary(),
        "server_cpu_us_per_stored_msg": round(cpu_store.server_us_per(total)),
        "server_cpu_pct_store": round(cpu_store.server_pct()),
        "generator_cpu_pct_store": round(cpu_store.generator_pct()),
        "data_dir_bytes_after_store": data_bytes,
        "delivered": delivered,
        "drained_msgs_per_s": round(drain_rate),
        "drain_seconds": round(last_done.as_secs_f64()),
        "time_to_first_envelope_ms_median": round(crate::stats::median(&firsts)),
        "server_cpu_us_per_drained_msg": round(cpu_drain.server_us_per(delivered)),
        "server_cpu_pct_drain": round(cpu_drain.server_pct()),
        "lost": total.saturating_sub(delivered),
        "duplicated": delivered.saturating_sub(total),
    });
    report.ratio_meaning = "none: the bare relay stores nothing";
    report.notes.push(format!(
        "durability {}: targets (brief S3, durable) are >= 40k msg/s stored and >= 100k msg/s drained",
        args.common.durability
    ));
    report.notes.push(
        "no warm-up is excluded here: the store and drain rates include the first (cold) envelopes"
            .into(),
    );
    if total < args.messages {
        report.notes.push(format!(
            "the store phase hit --duration after {total} of {} envelopes",
            args.messages
        ));
    }
    Ok(report)
}

//! One measured phase over pairs of connections: the load engine shared by `relay`,
//! `soak`, `cluster` and `devices`.
//!
//! Each pair has a sender task (closed loop with a window, or open loop on a fixed
//! schedule that stamps every envelope with its intended send time), a task reading the
//! sender's replies (`accepted` from the product), and a receiver task per receiving
//! device (one, or with a `send_to_all` every device that gets a copy) that records
//! latency from the intended time for envelopes sent inside the measured window and
//! acknowledges cumulatively (product). A pair's counters count device copies: a
//! message to three devices is three sent and, once every device got its copy, three
//! delivered. The phase samples server and generator CPU at
//! the window's edges, then waits a bounded time for in-flight envelopes, and hands the
//! connections back for the next phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use parley_protocol::ids::{DeviceAddress, Seq};
use parley_protocol::wire::client::{Ack, ClientBody};
use parley_sdk::wire;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::{CpuSample, CpuWindow};
use crate::conn::{self, Session, Ws};
use crate::payload::{self, Envelopes, FanOut, Pushed};
use crate::progress::Progress;
use crate::report::round;
use crate::server_proc::{Launch, ServerProcess, Target};
use crate::stats::Latency;

pub(super) use super::acking::{Acking, ACK_EVERY};
/// Longest wait for in-flight envelopes after a phase's sending stops.
pub(super) const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// One pair: a sender and the connections that receive what it sends.
struct Pair {
    sender: Ws,
    /// One connection per device that gets a copy of each message (one without
    /// fan-out).
    receivers: Vec<Ws>,
    /// The receiver's Parley address (product) — unused by the baseline.
    to: Option<DeviceAddress>,
    /// The receiver's baseline id.
    dest: u32,
}

/// CPU time of named processes (cluster nodes, PostgreSQL, NATS), sampled at a phase's
/// window edges next to the server's.
pub(super) type Probe = Arc<dyn Fn() -> anyhow::Result<Vec<(String, Duration)>> + Send + Sync>;

/// A relay under test and its pairs.
pub(super) struct Fleet {
    pub(super) server: ServerProcess,
    /// Further nodes of a cluster (senders on one node, receivers on another), kept
    /// running as long as the fleet.
    pub(super) _others: Vec<ServerProcess>,
    /// What else to sample CPU time of.
    pub(super) probe: Option<Probe>,
    pairs: Vec<Pair>,
    next_rid: u32,
    /// Connections of devices that get no copy, read (and so answering the server's
    /// pings) by their own tasks for as long as the fleet lives.
    idle: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.idle {
            task.abort();
        }
    }
}

impl Fleet {
    pub(super) async fn start(
        launch: &Launch,
        target: Target,
        pairs: usize,
    ) -> anyhow::Result<Fleet> {
        let server = ServerProcess::start(launch, target, 2 * pairs)?;
        Fleet::on(server, pairs, 0).await
    }

    /// Pairs on a running server; client source addresses start at `first_index`.
    pub(super) async fn on(
        server: ServerProcess,
        pairs: usize,
        first_index: usize,
    ) -> anyhow::Result<Fleet> {
        let target = server.target;
        let pairs = match target {
            Target::Product => {
                let mut accounts =
                    super::register_accounts(server.addr, 2 * pairs, first_index).await?;
                let mut out = Vec::with_capacity(pairs);
                while accounts.len() >= 2 {
                    let (receiver_account, receiver) = accounts.pop().context("odd count")?;
                    let (_, sender) = accounts.pop().context("odd count")?;
                    out.push(Pair {
                        sender: conn::into_ws(sender)?,
                        receivers: vec![conn::into_ws(receiver)?],
                        to: Some(receiver_account.address()),
                        dest: 0,
                    });
                }
                out
            }
            Target::Baseline => {
                let mut conns = super::connect_baseline(server.addr, 2 * pairs, 0).await?;
                let mut out = Vec::with_capacity(pairs);
                let mut id = 2 * pairs as u32;
                while conns.len() >= 2 {
                    let receiver = conns.pop().context("odd count")?;
                    let sender = conns.pop().context("odd count")?;
                    id -= 2;
                    out.push(Pair {
                        sender,
                        receivers: vec![receiver],
                        to: None,
                        dest: id + 1,
                    });
                }
                out
            }
        };
        Ok(Fleet {
            server,
            _others: Vec::new(),
            probe: None,
            pairs,
            next_rid: 1,
            idle: Vec::new(),
        })
    }

    /// Pairs of multi-device accounts on a running server: every account has published
    /// its device list and all of its devices are logged in (`devices.rs`). The sender
    /// is device 1 of one account; the receivers are every device of the other and,
    /// with `own_copies`, the sender's devices 2 and up; the devices that receive
    /// nothing stay connected and idle.
    pub(super) fn multi_device(
        server: ServerProcess,
        users: Vec<DeviceUser>,
        own_copies: bool,
    ) -> anyhow::Result<Fleet> {
        let mut pairs = Vec::with_capacity(users.len() / 2);
        let mut idle = Vec::new();
        let mut users = users;
        while users.len() >= 2 {
            let recipient = users.pop().context("odd count")?;
            let sender = users.pop().context("odd count")?;
            let mut sender_devices = sender.devices.into_iter();
            let sending = sender_devices.next().context("a user without devices")?;
            let mut receivers = recipient.devices;
            for other in sender_devices {
                if own_copies {
                    receivers.push(other);
                } else {
                    idle.push(tokio::spawn(keep_reading(other)));
                }
            }
            pairs.push(Pair {
                sender: sending,
                receivers,
                to: Some(recipient.address),
                dest: 0,
            });
        }
        Ok(Fleet {
            server,
            _others: Vec::new(),
            probe: None,
            pairs,
            next_rid: 1,
            idle,
        })
    }

    /// Product pairs across the nodes of a cluster: pair `i` sends from node `i % N`
    /// to a receiver on node `(i + 1) % N` (the same node when N = 1).
    pub(super) async fn across(
        mut nodes: Vec<ServerProcess>,
        pairs: usize,
        probe: Probe,
    ) -> anyhow::Result<Fleet> {
        let n = nodes.len();
        if n == 0 {
            bail!("no nodes");
        }
        let mut per_node: Vec<Vec<(crate::account::Account, Session)>> = Vec::new();
        let mut index = 0;
        for (k, node) in nodes.iter().enumerate() {
            let senders = (0..pairs).filter(|i| i % n == k).count();
            let receivers = (0..pairs).filter(|i| (i + 1) % n == k).count();
            let count = senders + receivers;
            per_node.push(super::register_accounts(node.addr, count, index).await?);
            index += count;
        }
        let mut out = Vec::with_capacity(pairs);
        for i in 0..pairs {
            let (_, sender) = per_node[i % n].pop().context("too few accounts")?;
            let (receiver_account, receiver) =
                per_node[(i + 1) % n].pop().context("too few accounts")?;
            out.push(Pair {
                sender: conn::into_ws(sender)?,
                receivers: vec![conn::into_ws(receiver)?],
                to: Some(receiver_account.address()),
                dest: 0,
            });
        }
        let server = nodes.remove(0);
        Ok(Fleet {
            server,
            _others: nodes,
            probe: Some(probe),
            pairs: out,
            next_rid: 1,
            idle: Vec::new(),
        })
    }
}

/// An account with every one of its devices logged in, device 1 first.
pub(super) struct DeviceUser {
    /// Device 1's address (a `send_to_all` names only the account).
    pub(super) address: DeviceAddress,
    /// One connection per device, in device order.
    pub(super) devices: Vec<Ws>,
}

/// Reads a connection that gets no envelopes until it closes, so its pings are
/// answered.
async fn keep_reading(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// How a phase generates load.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Closed loop with this many envelopes in flight per sender.
    Saturation { window: u64 },
    /// Open loop at this total rate (msg/s).
    Open { rate: f64 },
}

/// What one phase measured.
#[derive(Debug)]
pub(super) struct Phase {
    pub(super) target: Target,
    pub(super) mode: Mode,
    pub(super) cpu: CpuWindow,
    /// CPU time of the probe's processes over the same window.
    pub(super) probed: Vec<(String, Duration)>,
    /// Device copies delivered inside the window.
    pub(super) delivered_in_window: u64,
    /// `accepted` replies inside the window (product): requests, whatever their copies.
    pub(super) accepted_in_window: u64,
    /// Device copies each message makes (1 without fan-out).
    pub(super) copies: u64,
    /// The fewest envelopes any receiving device got in the phase.
    pub(super) fewest_per_device: u64,
    /// Device copies sent (messages × copies).
    pub(super) sent: u64,
    /// Device copies delivered.
    pub(super) delivered: u64,
    pub(super) errors: u64,
    pub(super) latency: Latency,
}

impl Phase {
    /// Device copies delivered per second in the window (messages per second without
    /// fan-out).
    pub(super) fn rate(&self) -> f64 {
        self.delivered_in_window as f64 / self.cpu.wall.as_secs_f64().max(1e-9)
    }

    /// Requests accepted per second in the window (product).
    pub(super) fn accepted_rate(&self) -> f64 {
        self.accepted_in_window as f64 / self.cpu.wall.as_secs_f64().max(1e-9)
    }

    pub(super) fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }

    pub(super) fn to_json(&self) -> Value {
        let mut value = json!({
            "msgs_per_s": round(self.rate()),
            "server_cpu_us_per_msg": round(self.cpu.server_us_per(self.delivered_in_window)),
            "server_cpu_pct": round(self.cpu.server_pct()),
            "generator_cpu_pct": round(self.cpu.generator_pct()),
            "sent": self.sent,
            "delivered": self.delivered,
            "undelivered_after_drain": self.lost(),
            "errors": self.errors,
        });
        if let Mode::Open { rate } = self.mode {
            value["offered_msgs_per_s"] = round(rate);
            value["latency"] = json!(self.latency.summary());
        }
        value
    }
}

/// Per-pair counters shared by its sender and receiver.
#[derive(Debug, Default)]
struct PairCounters {
    sent: AtomicU64,
    delivered: AtomicU64,
    wake: Notify,
}

/// Counters shared by every task of a phase.
#[derive(Debug, Default)]
struct PhaseCounters {
    in_window: AtomicU64,
    accepted_in_window: AtomicU64,
    errors: AtomicU64,
    delivered: Arc<AtomicU64>,
}

/// Times of a phase, in ns since its epoch.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
    warm_ns: u64,
    end_ns: u64,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn at(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_nanos(ns))
    }

    fn measured(&self, ns: u64) -> bool {
        ns >= self.warm_ns && ns < self.end_ns
    }
}

/// What a sender needs to frame its envelopes.
#[derive(Clone)]
pub(super) struct Framing {
    pub(super) target: Target,
    pub(super) envelopes: Arc<Envelopes>,
    pub(super) baseline_len: usize,
    pub(super) batch: usize,
    /// Product: send each message to every device with `send_to_all` instead of `send`.
    pub(super) fan_out: Option<Arc<FanOut>>,
    /// Product: when receivers ack (cumulatively).
    pub(super) acking: Acking,
}

impl Framing {
    /// Product framing of `envelopes`, `batch` frames per write.
    pub(super) fn product(envelopes: Arc<Envelopes>, batch: usize) -> Framing {
        Framing {
            target: Target::Product,
            envelopes,
            baseline_len: 0,
            batch,
            fan_out: None,
            acking: ACK_EVERY,
        }
    }

    fn frame(
        &self,
        pair_to: Option<DeviceAddress>,
        dest: u32,
        rid: u32,
        intended_ns: u64,
        seq: u64,
    ) -> anyhow::Result<Message> {
        let bytes = match (self.target, pair_to) {
            (Target::Product, Some(to)) => match &self.fan_out {
                Some(fan_out) => {
                    self.envelopes
                        .fan_out_frame(rid, to.account, fan_out, intended_ns, seq)?
                }
                None => self.envelopes.product_frame(rid, to, intended_ns, seq)?,
            },
            (Target::Product, None) => bail!("product pair without an address"),
            (Target::Baseline, _) => {
                self.envelopes
                    .baseline_message(dest, intended_ns, seq, self.baseline_len)
            }
        };
        Ok(Message::Binary(Bytes::from(bytes)))
    }
}

/// A receiving device's task: its connection back, the latency it recorded, and how
/// many envelopes it got.
type ReceiverTask = JoinHandle<anyhow::Result<(Ws, Latency, u64)>>;

/// Runs one phase on `fleet`.
pub(super) async fn run_phase(
    fleet: &mut Fleet,
    mode: Mode,
    warmup: Duration,
    window: Duration,
    framing: &Framing,
    label: String,
) -> anyhow::Result<Phase> {
    let target = fleet.server.target;
    let pair_count = fleet.pairs.len().max(1);
    let epoch = Instant::now();
    let clock = Clock {
        epoch,
        warm_ns: warmup.as_nanos() as u64,
        end_ns: (warmup + window).as_nanos() as u64,
    };
    let shared = Arc::new(PhaseCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Progress::start(
        label,
        warmup + window,
        shared.delivered.clone(),
        "delivered",
    );
    let mut senders: Vec<JoinHandle<anyhow::Result<SplitSink<Ws, Message>>>> = Vec::new();
    let mut readers: Vec<JoinHandle<anyhow::Result<SplitStream<Ws>>>> = Vec::new();
    let mut receivers: Vec<Vec<ReceiverTask>> = Vec::new();
    let mut pair_counters = Vec::new();
    let mut meta = Vec::new();
    let mut copies = 1;
    for (index, pair) in std::mem::take(&mut fleet.pairs).into_iter().enumerate() {
        copies = pair.receivers.len().max(1) as u64;
        let counters = Arc::new(PairCounters::default());
        pair_counters.push(counters.clone());
        meta.push((pair.to, pair.dest));
        let (sink, stream) = pair.sender.split();
        let first_rid = fleet.next_rid;
        let schedule = match mode {
            Mode::Saturation { window } => Schedule::Closed { window },
            Mode::Open { rate } => {
                let interval = 1e9 * pair_count as f64 / rate.max(1e-9);
                Schedule::Open {
                    interval_ns: interval,
                    offset_ns: interval * index as f64 / pair_count as f64,
                }
            }
        };
        senders.push(tokio::spawn(sender(
            sink,
            SenderPlan {
                to: pair.to,
                dest: pair.dest,
                first_rid,
                schedule,
                copies,
            },
            framing.clone(),
            counters.clone(),
            clock,
        )));
        readers.push(tokio::spawn(sender_reader(
            stream,
            target,
            shared.clone(),
            clock,
            stop_rx.clone(),
        )));
        receivers.push(
            pair.receivers
                .into_iter()
                .map(|ws| {
                    tokio::spawn(receiver(
                        ws,
                        target,
                        framing.acking,
                        counters.clone(),
                        shared.clone(),
                        clock,
                        stop_rx.clone(),
                    ))
                })
                .collect(),
        );
    }
    tokio::time::sleep_until(clock.at(clock.warm_ns)).await;
    let start = CpuSample::take(&fleet.server)?;
    let probe_start = match &fleet.probe {
        Some(probe) => probe()?,
        None => Vec::new(),
    };
    tokio::time::sleep_until(clock.at(clock.end_ns)).await;
    let end = CpuSample::take(&fleet.server)?;
    let probe_end = match &fleet.probe {
        Some(probe) => probe()?,
        None => Vec::new(),
    };
    let probed = probe_end
        .into_iter()
        .map(|(name, end)| {
            let start = probe_start
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Duration::ZERO, |(_, d)| *d);
            (name, end.saturating_sub(start))
        })
        .collect();
    // Senders stop at the end of the window; wait for them, then for the drain.
    let mut sinks = Vec::new();
    for task in senders {
        sinks.push(task.await.context("sender task")??);
    }
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    while Instant::now() < drain_deadline
        && pair_counters
            .iter()
            .any(|c| c.delivered.load(Ordering::Relaxed) < c.sent.load(Ordering::Relaxed))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut latency = Latency::new();
    let mut fewest_per_device = u64::MAX;
    let mut pairs = Vec::new();
    for (((sink, reader), tasks), (to, dest)) in
        sinks.into_iter().zip(readers).zip(receivers).zip(meta)
    {
        let stream = reader.await.context("reader task")??;
        let mut receivers = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (receiver, histogram, got) = task.await.context("receiver task")??;
            latency.merge(&histogram);
            fewest_per_device = fewest_per_device.min(got);
            receivers.push(receiver);
        }
        let sender = sink.reunite(stream).context("reuniting a sender")?;
        pairs.push(Pair {
            sender,
            receivers,
            to,
            dest,
        });
    }
    fleet.pairs = pairs;
    fleet.next_rid = fleet.next_rid.wrapping_add(1 << 24);
    progress.finish();
    let sent = pair_counters
        .iter()
        .map(|c| c.sent.load(Ordering::Relaxed))
        .sum();
    let delivered = pair_counters
        .iter()
        .map(|c| c.delivered.load(Ordering::Relaxed))
        .sum();
    Ok(Phase {
        target,
        mode,
        cpu: start.until(&end),
        probed,
        delivered_in_window: shared.in_window.load(Ordering::Relaxed),
        accepted_in_window: shared.accepted_in_window.load(Ordering::Relaxed),
        copies,
        fewest_per_device,
        sent,
        delivered,
        errors: shared.errors.load(Ordering::Relaxed),
        latency,
    })
}

#[derive(Debug, Clone, Copy)]
enum Schedule {
    Closed { window: u64 },
    Open { interval_ns: f64, offset_ns: f64 },
}

#[derive(Debug, Clone, Copy)]
struct SenderPlan {
    to: Option<DeviceAddress>,
    dest: u32,
    first_rid: u32,
    schedule: Schedule,
    /// Device copies each message makes.
    copies: u64,
}

/// Sends until the end of the window; returns the sink for the next phase.
async fn sender(
    mut sink: SplitSink<Ws, Message>,
    plan: SenderPlan,
    framing: Framing,
    counters: Arc<PairCounters>,
    clock: Clock,
) -> anyhow::Result<SplitSink<Ws, Message>> {
    let batch = framing.batch.max(1) as u64;
    let copies = plan.copies.max(1);
    let mut seq: u64 = 0;
    let mut rid = plan.first_rid;
    match plan.schedule {
        Schedule::Closed { window } => loop {
            let now = clock.now_ns();
            if now >= clock.end_ns {
                break;
            }
            let in_flight = counters
                .sent
                .load(Ordering::Relaxed)
                .saturating_sub(counters.delivered.load(Ordering::Relaxed));
            // In device copies: a message is in flight until every device got it.
            if in_flight + batch * copies > window.max(batch) * copies {
                let wait = counters.wake.notified();
                let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
                continue;
            }
            counters.sent.fetch_add(batch * copies, Ordering::Relaxed);
            for _ in 0..batch {
                let frame = framing.frame(plan.to, plan.dest, rid, now, seq)?;
                sink.feed(frame).await?;
                seq += 1;
                rid = rid.wrapping_add(1);
            }
            sink.flush().await?;
        },
        Schedule::Open {
            interval_ns,
            offset_ns,
        } => loop {
            let intended = (offset_ns + seq as f64 * interval_ns) as u64;
            if intended >= clock.end_ns {
                break;
            }
            if intended > clock.now_ns() {
                tokio::time::sleep_until(clock.at(intended)).await;
            }
            // Everything due by now goes out, each with its own intended time; with
            // `--batch 1` each is its own write.
            let now = clock.now_ns();
            let mut in_batch = 0;
            loop {
                let intended = (offset_ns + seq as f64 * interval_ns) as u64;
                if intended > now || intended >= clock.end_ns {
                    break;
                }
                counters.sent.fetch_add(copies, Ordering::Relaxed);
                let frame = framing.frame(plan.to, plan.dest, rid, intended, seq)?;
                sink.feed(frame).await?;
                seq += 1;
                rid = rid.wrapping_add(1);
                in_batch += 1;
                if in_batch >= batch {
                    sink.flush().await?;
                    in_batch = 0;
                }
            }
            if in_batch > 0 {
                sink.flush().await?;
            }
        },
    }
    Ok(sink)
}

/// Reads the sender's replies (`accepted` from the product; nothing from the baseline)
/// so the server never stalls on them, and counts those that arrive in the window.
async fn sender_reader(
    mut stream: SplitStream<Ws>,
    target: Target,
    shared: Arc<PhaseCounters>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SplitStream<Ws>> {
    loop {
        let bytes = tokio::select! {
            _ = stop.changed() => break,
            message = wire::next_binary(&mut stream, || {}) => {
                message.context("the sender's connection")?
            }
        };
        if target == Target::Product {
            match payload::parse_product(&bytes) {
                Ok(Pushed::Accepted) => {
                    if clock.measured(clock.now_ns()) {
                        shared.accepted_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Pushed::Drained) => {}
                _ => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(stream)
}

/// Receives envelopes, records latency of those sent in the window, acknowledges
/// (product), and returns the connection, its histogram and how many it got.
async fn receiver(
    mut ws: Ws,
    target: Target,
    acking: Acking,
    counters: Arc<PairCounters>,
    shared: Arc<PhaseCounters>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Ws, Latency, u64)> {
    let mut latency = Latency::new();
    let mut got = 0u64;
    let mut last_seq = 0u64;
    let mut unacked = 0u64;
    // When the first delivery not acked yet arrived.
    let mut gathering_since: Option<Instant> = None;
    // A frame read ahead while deciding whether to ack (`Acking::WhenIdle`).
    let mut read_ahead: Option<Bytes> = None;
    loop {
        let bytes = match read_ahead.take() {
            Some(bytes) => bytes,
            None => tokio::select! {
                _ = stop.changed() => break,
                message = wire::next_binary(&mut ws, || {}) => {
                    message.context("the receiver's connection")?
                }
            },
        };
        let now = clock.now_ns();
        let intended = match target {
            Target::Baseline => Some(payload::parse_baseline(&bytes)?),
            Target::Product => match payload::parse_product(&bytes)? {
                Pushed::Deliver { seq, intended_ns } => {
                    last_seq = seq;
                    unacked += 1;
                    gathering_since.get_or_insert_with(Instant::now);
                    Some(intended_ns)
                }
                Pushed::Drained => None,
                Pushed::Accepted | Pushed::Other => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        };
        if let Some(intended) = intended {
            if clock.measured(intended) {
                latency.record(now.saturating_sub(intended));
            }
            if clock.measured(now) {
                shared.in_window.fetch_add(1, Ordering::Relaxed);
            }
            got += 1;
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            counters.wake.notify_one();
        }
        // Reading ahead without waiting is cancel-safe: a message not yet complete stays
        // in the WebSocket's buffer.
        let mut read = None;
        let gathered_for = gathering_since.map_or(Duration::ZERO, |since| since.elapsed());
        let due = acking.due(unacked, gathered_for, || {
            read = wire::next_binary(&mut ws, || {}).now_or_never();
            read.is_some()
        });
        if let Some(message) = read {
            read_ahead = Some(message.context("the receiver's connection")?);
        }
        if due {
            ack(&mut ws, last_seq).await?;
            unacked = 0;
            gathering_since = None;
        }
    }
    if unacked > 0 {
        ack(&mut ws, last_seq).await?;
    }
    Ok((ws, latency, got))
}

async fn ack(ws: &mut Ws, through: u64) -> anyhow::Result<()> {
    let body = ClientBody::Ack(Ack {
        through: Seq(through),
    });
    conn::send_frame(ws, 0, body).await
}

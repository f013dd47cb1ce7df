//! The storage floor: the server's own SQLite store (`parley_server::store::SqliteStore`,
//! its schema, writer thread and group commit, with the server's default settings) driven
//! in-process, without network, WebSocket or protocol. It answers "how fast can the relay
//! be if everything but storage were free?": the research's `bare_sqlite_writer`
//! comparison for S3, and the upper bound for S2 on one core.
//!
//! Each sender keeps `--window` envelopes waiting for their commit, like a connection with
//! that pipeline depth, to its own recipient; with `--ack-every N` the recipient's
//! cumulative ack goes to the writer after every N-th accepted envelope, as the relay's
//! clients do, so the figure covers store + dedup + delete. `--ack-every 0` stores for
//! offline recipients (S3).
//!
//! The store's threads run in this process, which is pinned to one CPU (the one a server
//! gets): the CPU per envelope is this whole process's (writer, readers and the driving
//! tasks).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use parley_protocol::ids::{DeviceAddress, MessageId, ServerId};
use parley_server::store::postgres::{redact_url, PostgresOptions, PostgresStore};
use parley_server::store::sqlite::SqliteStore;
use parley_server::store::{
    EnqueueOutcome, NewEnvelope, Pending, RegisterOutcome, Store, StoreHooks,
};
use rand_core::{OsRng, RngCore};
use serde_json::json;

use crate::account::Account;
use crate::payload::client_message_id;
use crate::report::{round, Report};
use crate::stats::Latency;
use crate::sys;

/// Options of the store scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Senders, each writing to its own recipient.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    /// Envelopes each sender keeps waiting for their commit (as `relay` keeps in flight
    /// per sender; at most the server's `--pipeline-depth` per connection).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// The recipient acks after every N-th accepted envelope; 0: never (offline store).
    #[arg(long, default_value_t = 64)]
    pub ack_every: u64,
    /// Envelope size in bytes (opaque random bytes).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Fully random message ids instead of the SDK's time-ordered ones (to measure what
    /// the ids' order costs the dedup index).
    #[arg(long)]
    pub random_ids: bool,
    /// Drive the PostgreSQL store on this database instead of the embedded one (the
    /// database server runs outside this process; it needs a database of its own, which
    /// the run fills with accounts and envelopes).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    #[command(flatten)]
    pub common: super::Common,
}

/// What the senders counted while `recording` was set.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    acks: AtomicU64,
}

/// What one sender did over the whole run (warm-up and drain included).
struct SenderTotals {
    latency: Latency,
    /// Envelopes accepted.
    accepted: u64,
    /// Envelopes the recipient's last ack covered: the sender's envelopes are accepted
    /// in order and its recipient gets nobody else's, so an ack through the seq of its
    /// n-th accepted envelope covers n (seqs increase; they need not be dense).
    acked: u64,
    /// Envelopes refused or taken for duplicates: none are expected.
    not_accepted: u64,
}

/// Runs the store scenario.
pub async fn run(args: &StoreArgs) -> anyhow::Result<(Report, Vec<(String, Latency)>)> {
    if args.senders == 0 || args.window == 0 {
        bail!("--senders and --window must be at least 1");
    }
    if args.common.compare_baseline
        || !args.common.server_args.is_empty()
        || args.common.server_bin.is_some()
    {
        bail!(
            "the store scenario starts no server and has no baseline: \
             --compare-baseline, --server-bin and --server-arg do not apply"
        );
    }
    let config = parley_server::Config::try_parse_from([
        "parley-server",
        "--durability",
        args.common.durability.as_str(),
    ])
    .context("the server's default configuration")?;
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let mut server_id = [0u8; 32];
    OsRng.fill_bytes(&mut server_id);
    // The relay's hand-off to online recipients is not part of the floor: nobody
    // listens to commits.
    let hooks = StoreHooks::new(config.send_policy());
    let store: Arc<dyn Store> = match &args.postgres {
        Some(url) => Arc::new(
            PostgresStore::open(url, &PostgresOptions::default(), ServerId(server_id), hooks)
                .await?,
        ),
        None => Arc::new(SqliteStore::open(
            dir.path(),
            &config.sqlite_options(),
            ServerId(server_id),
            hooks,
        )?),
    };
    let mut pairs = Vec::with_capacity(args.senders);
    for _ in 0..args.senders {
        pairs.push((register(&*store).await?, register(&*store).await?));
    }

    let counts = Arc::new(Counts::default());
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (from, to) in pairs {
        let sender = Sender {
            store: store.clone(),
            from,
            to,
            payload: args.payload,
            window: args.window,
            ack_every: args.ack_every,
            random_ids: args.random_ids,
            counts: counts.clone(),
            recording: recording.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(sender.run()));
    }
    tokio::time::sleep(args.common.warmup).await;
    recording.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let cpu_before = sys::cpu_time(std::process::id())?;
    tokio::time::sleep(args.common.duration).await;
    let cpu = sys::cpu_time(std::process::id())?.saturating_sub(cpu_before);
    let wall = started.elapsed();
    recording.store(false, Ordering::SeqCst);
    let accepted = counts.accepted.load(Ordering::SeqCst);
    let acks = counts.acks.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut latency = Latency::new();
    let (mut accepted_total, mut acked_total, mut not_accepted) = (0u64, 0u64, 0u64);
    for task in tasks {
        let totals = task.await.context("a sender task panicked")??;
        latency.merge(&totals.latency);
        accepted_total += totals.accepted;
        acked_total += totals.acked;
        not_accepted += totals.not_accepted;
    }
    let queued = store.queue_depth().await?;
    store.close().await?;
    if not_accepted > 0 {
        bail!("{not_accepted} envelopes were refused or taken for duplicates; the floor is void");
    }
    // Every accepted envelope is either acknowledged or still queued; more than that
    // would be an accounting error of this scenario, not a figure.
    let accounted = acked_total + queued;
    if accounted > accepted_total {
        bail!("{accounted} envelopes acknowledged or queued but only {accepted_total} accepted");
    }
    let lost = accepted_total - accounted;
    let mut parameters = args.common.parameters();
    parameters["senders"] = json!(args.senders);
    parameters["window"] = json!(args.window);
    parameters["ack_every"] = json!(args.ack_every);
    parameters["payload_bytes"] = json!(args.payload);
    parameters["message_ids"] = json!(if args.random_ids {
        "random"
    } else {
        "time-ordered, as the SDK makes them"
    });
    parameters["store"] = json!(match &args.postgres {
        Some(url) => format!("PostgreSQL at {}", redact_url(url)),
        None => "SQLite".to_owned(),
    });
    parameters["group_commit_max"] = json!(config.group_commit_max);
    parameters["db_queue_capacity"] = json!(config.db_queue_capacity);
    let mut report = Report::new("store", parameters);
    let seconds = wall.as_secs_f64().max(1e-9);
    report.product = json!({
        "stored": accepted,
        "stored_msgs_per_s": (accepted as f64 / seconds).round(),
        "acks": acks,
        "cpu_pct": round(100.0 * cpu.as_secs_f64() / seconds),
        "cpu_us_per_msg": round(cpu.as_secs_f64() * 1e6 / (accepted.max(1) as f64)),
        "commit_latency": latency.summary(),
        "accepted_total": accepted_total,
        "acked_total": acked_total,
        "queued_after": queued,
        "lost": lost,
    });
    report.ratio_meaning = "none: the storage floor has no baseline of its own";
    report.envelopes = "opaque random bytes, handed to the store in-process (no network)";
    report.notes.push(match &args.postgres {
        Some(_) => {
            let options = PostgresOptions::default();
            format!(
                "in-process: the server's PostgresStore with its default options ({} writer lanes, group commit ≤ {}), no WebSocket, no protocol, no hand-off to recipients; CPU is this whole process's, pinned to one CPU; the database server's CPU is not counted",
                options.lanes, options.group_commit_max
            )
        }
        None => format!(
            "in-process: the server's SqliteStore with its default settings (and any PARLEY_* environment variables, as the server would read them; durability {}, group commit ≤ {}), no WebSocket, no protocol, no hand-off to recipients; CPU is this whole process's, pinned to one CPU",
            args.common.durability, config.group_commit_max
        ),
    });
    if args.ack_every == 0 {
        report
            .notes
            .push("no acks: every envelope stays queued (the offline store)".into());
    }
    Ok((report, vec![("store".into(), latency)]))
}

/// Registers a fresh account directly in the store; returns its device.
async fn register(store: &dyn Store) -> anyhow::Result<DeviceAddress> {
    match store.register(Account::generate().new_account()).await? {
        RegisterOutcome::Created { address, .. } => Ok(address),
        other => bail!("registration failed: {other:?}"),
    }
}

/// One sender and its recipient's acks.
struct Sender {
    store: Arc<dyn Store>,
    from: DeviceAddress,
    to: DeviceAddress,
    payload: usize,
    window: usize,
    ack_every: u64,
    random_ids: bool,
    counts: Arc<Counts>,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Sender {
    /// Sends until told to stop, keeping `window` envelopes waiting, then waits for
    /// every envelope and ack to be committed.
    async fn run(self) -> anyhow::Result<SenderTotals> {
        let mut totals = SenderTotals {
            latency: Latency::new(),
            accepted: 0,
            acked: 0,
            not_accepted: 0,
        };
        let mut waiting: FuturesOrdered<Timed> = FuturesOrdered::new();
        let mut acks: FuturesOrdered<Pending<u64>> = FuturesOrdered::new();
        let mut ciphertext = vec![0u8; self.payload];
        OsRng.fill_bytes(&mut ciphertext);
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if !stopping && waiting.len() < self.window {
                let envelope = NewEnvelope {
                    from: self.from,
                    to: self.to,
                    id: if self.random_ids {
                        let mut id = [0u8; 16];
                        OsRng.fill_bytes(&mut id);
                        MessageId(id)
                    } else {
                        client_message_id()
                    },
                    ciphertext: ciphertext.clone(),
                    now_ms: sys::now_ms(),
                    category: None,
                    receipt: false,
                    fan_out: None,
                };
                let sent = Instant::now();
                let pending = self.store.submit_enqueue(envelope).await?;
                waiting.push_back(Box::pin(async move { (sent, pending.await) }));
                continue;
            }
            let (sent, outcome) = tokio::select! {
                next = waiting.next() => match next {
                    Some(done) => done,
                    None => break,
                },
                Some(ack) = acks.next() => {
                    ack?;
                    continue;
                }
            };
            let recording = self.recording.load(Ordering::Relaxed);
            match outcome? {
                EnqueueOutcome::Accepted { seq, .. } => {
                    totals.accepted += 1;
                    if recording {
                        let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        totals.latency.record(nanos);
                        self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.ack_every > 0 && totals.accepted.is_multiple_of(self.ack_every) {
                        // Pipelined like the relay's connections do: it takes its place in
                        // the writer's order now and is committed with a later batch.
                        acks.push_back(self.store.submit_ack_through(self.to, seq).await?);
                        totals.acked = totals.accepted;
                        if recording {
                            self.counts.acks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => totals.not_accepted += 1,
            }
        }
        while let Some(ack) = acks.next().await {
            ack?;
        }
        Ok(totals)
    }
}

/// An envelope waiting for its commit, with when it was handed to the store.
type Timed = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Instant,
                    Result<EnqueueOutcome, parley_server::store::StoreError>,
                ),
            > + Send,
    >,
>;

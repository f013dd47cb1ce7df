//! What an operator scrapes: counters, gauges and one latency histogram, rendered in the
//! Prometheus text exposition format (version 0.0.4) by [`Metrics::render`].
//!
//! Everything on a hot path is a relaxed atomic: a frame, an envelope or a commit costs
//! one `fetch_add`. Counters keyed by a label (refusals by error code, closes by reason)
//! take an uncontended mutex over a short list; they count failures, not traffic.
//!
//! This module owns the names, help texts and labels; it knows nothing about sockets
//! or the store. Values that are read from the store at scrape time (queue depth) are
//! passed to [`Metrics::render`] by the admin listener.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{CloseCode, ErrorCode};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one now and subtracts it again when the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> GaugeGuard {
        self.inc();
        GaugeGuard(self.clone())
    }
}

/// Holds one unit of a [`Gauge`] until dropped.
#[derive(Debug)]
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counters keyed by one label whose values are known at compile time.
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<Vec<(&'static str, u64)>>);

impl LabeledCounter {
    /// Adds one to the count of `label`.
    pub fn inc(&self, label: &'static str) {
        self.add(label, 1);
    }

    /// Adds `n` to the count of `label`.
    pub fn add(&self, label: &'static str, n: u64) {
        let mut values = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match values.iter_mut().find(|(l, _)| *l == label) {
            Some((_, count)) => *count += n,
            None => values.push((label, n)),
        }
    }

    /// The count of `label`.
    pub fn get(&self, label: &str) -> u64 {
        let values = self.0.lock().unwrap_or_else(|p| p.into_inner());
        values
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, n)| *n)
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut values = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        values.sort_unstable();
        values
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds: 100 µs to 2.5 s, which
/// spans a group commit on a fast NVMe disk to one on a struggling network volume.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKETS_SECONDS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the last slot is `+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// What the store's writer reports. Shared with the store's thread, so it lives in its
/// own `Arc`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Time from `BEGIN` to the end of `COMMIT` of each group commit (the fsync).
    pub commit_seconds: Histogram,
    /// Write jobs committed (several per group commit under load).
    pub committed_jobs: Counter,
    /// Group commits that failed (every job in them was answered with the error).
    pub failed_commits: Counter,
    /// Envelopes held in memory for a connected recipient (`--hold-deadline`).
    pub held_envelopes: Gauge,
    /// Their ciphertext bytes.
    pub held_bytes: Gauge,
    /// Held envelopes settled, by how (`ack`: the recipient acked it; `commit`: it was
    /// committed to the queue at its deadline or before a read of the queue).
    pub held_settled: LabeledCounter,
    /// Envelopes persisted first because a hold bound was reached, by bound.
    pub hold_refused: LabeledCounter,
}

/// What the bus between nodes reports (cluster mode; all zero on one node). Shared with
/// the bus's tasks, so it lives in its own `Arc`.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// 1 while connected to the bus (NATS), else 0; 1 on one node.
    pub connected: Gauge,
    /// Wakes published for committed envelopes.
    pub wakes_sent: Counter,
    /// Wakes received for devices connected here.
    pub wakes_received: Counter,
    /// Wakes not published because the bus's outgoing queue was full (every node then
    /// resyncs).
    pub wakes_dropped: Counter,
    /// Times every local device was told to read its queue again (reconnect, slow
    /// consumer, a node's dropped wakes, safety poll while disconnected).
    pub resyncs: Counter,
    /// Local connections closed because the same device connected on another node.
    pub displacements: Counter,
    /// Times the NATS client dropped messages for this node (a slow consumer).
    pub slow_consumer_events: Counter,
}

/// The kinds of client frames, in the order of [`client_kind`].
pub const CLIENT_FRAME_KINDS: [&str; 22] = [
    "auth",
    "register",
    "upload_prekeys",
    "fetch_bundle",
    "resolve_handle",
    "send",
    "ack",
    "delete_account",
    "grant_consent",
    "revoke_consent",
    "block",
    "unblock",
    "report",
    "fetch_business",
    "set_display_name",
    "publish_devices",
    "fetch_devices",
    "open_link",
    "seal_link",
    "join_link",
    "send_to_all",
    "malformed",
];

/// Index of a client frame's kind in [`CLIENT_FRAME_KINDS`].
fn client_kind(body: &ClientBody) -> usize {
    match body {
        ClientBody::Auth(_) => 0,
        ClientBody::Register(_) => 1,
        ClientBody::UploadPrekeys(_) => 2,
        ClientBody::FetchBundle(_) => 3,
        ClientBody::ResolveHandle(_) => 4,
        ClientBody::Send(_) => 5,
        ClientBody::Ack(_) => 6,
        ClientBody::DeleteAccount(_) => 7,
        ClientBody::GrantConsent(_) => 8,
        ClientBody::RevokeConsent(_) => 9,
        ClientBody::Block(_) => 10,
        ClientBody::Unblock(_) => 11,
        ClientBody::Report(_) => 12,
        ClientBody::FetchBusiness(_) => 13,
        ClientBody::SetDisplayName(_) => 14,
        ClientBody::PublishDevices(_) => 15,
        ClientBody::FetchDevices(_) => 16,
        ClientBody::OpenLink(_) => 17,
        ClientBody::SealLink(_) => 18,
        ClientBody::JoinLink(_) => 19,
        ClientBody::SendToAll(_) => 20,
    }
}

/// The kinds of server frames, in the order of [`server_kind`].
pub const SERVER_FRAME_KINDS: [&str; 18] = [
    "hello",
    "authenticated",
    "prekeys_stored",
    "bundle",
    "resolved",
    "accepted",
    "deliver",
    "drained",
    "prekeys_low",
    "account_deleted",
    "error",
    "consent_updated",
    "business",
    "done",
    "devices",
    "link_opened",
    "link_joined",
    "link_sealed",
];

/// Index of a server frame's kind in [`SERVER_FRAME_KINDS`].
fn server_kind(body: &ServerBody) -> usize {
    match body {
        ServerBody::Hello(_) => 0,
        ServerBody::Authenticated(_) => 1,
        ServerBody::PrekeysStored(_) => 2,
        ServerBody::Bundle(_) => 3,
        ServerBody::Resolved(_) => 4,
        ServerBody::Accepted(_) => 5,
        ServerBody::Deliver(_) => 6,
        ServerBody::Drained(_) => 7,
        ServerBody::PrekeysLow(_) => 8,
        ServerBody::AccountDeleted(_) => 9,
        ServerBody::Error(_) => 10,
        ServerBody::ConsentUpdated(_) => 11,
        ServerBody::Business(_) => 12,
        ServerBody::Done(_) => 13,
        ServerBody::Devices(_) => 14,
        ServerBody::LinkOpened(_) => 15,
        ServerBody::LinkJoined(_) => 16,
        ServerBody::LinkSealed(_) => 17,
    }
}

/// Why a connection ended, as a metric label.
pub fn close_label(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Normal => "normal",
        CloseCode::GoingAway => "going_away",
        CloseCode::ProtocolError => "protocol_error",
        CloseCode::UnsupportedData => "unsupported_data",
        CloseCode::InvalidPayload => "invalid_payload",
        CloseCode::PolicyViolation => "policy_violation",
        CloseCode::MessageTooBig => "message_too_big",
        CloseCode::InternalError => "internal_error",
        CloseCode::AuthTimeout => "auth_timeout",
        CloseCode::AuthFailed => "auth_failed",
        CloseCode::Displaced => "displaced",
        CloseCode::SlowConsumer => "slow_consumer",
        CloseCode::KeepaliveTimeout => "keepalive_timeout",
        CloseCode::DeviceRemoved => "device_removed",
    }
}

/// Every metric of one server. Owned by [`crate::context::Shared`].
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Open client connections (TCP accepted, not yet closed).
    pub connections: Arc<Gauge>,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections dropped at accept because their address had too many open.
    pub connections_refused_per_ip: Counter,
    /// How connections ended, by reason.
    pub connections_closed: LabeledCounter,
    /// Connections currently authenticated as a device.
    pub sessions: Arc<Gauge>,
    /// Client frames received, by kind.
    frames_in: [Counter; CLIENT_FRAME_KINDS.len()],
    /// Server frames written, by kind.
    frames_out: [Counter; SERVER_FRAME_KINDS.len()],
    /// Requests refused with an error frame, by error code.
    pub refusals: LabeledCounter,
    /// Envelopes durably queued (retries not counted).
    pub envelopes_accepted: Counter,
    /// Retries answered with the first result.
    pub envelopes_duplicate: Counter,
    /// Envelopes written to their recipient's connection (redeliveries counted again).
    pub envelopes_delivered: Counter,
    /// Envelopes deleted because their recipient acknowledged them.
    pub envelopes_acknowledged: Counter,
    /// Undelivered envelopes deleted by retention.
    pub envelopes_expired: Counter,
    /// Dedup entries deleted by retention.
    pub dedup_entries_expired: Counter,
    /// Connections closed because they did not read their writes in time.
    pub slow_consumer_evictions: Counter,
    /// Housekeeping sweeps that ran to the end.
    pub sweeps: Counter,
    /// When the last sweep finished, seconds since the Unix epoch (0: none yet).
    pub last_sweep_unix_seconds: Gauge,
    /// Housekeeping sweeps that failed.
    pub sweep_failures: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// Business sends, by outcome (`accepted`, `refused`, `rate_limited`,
    /// `reach_exhausted`, `suspended`, `category_not_allowed`).
    pub business_sends: LabeledCounter,
    /// Queued business envelopes deleted by consent revocations.
    pub envelopes_purged: Counter,
    /// Reports received.
    pub reports: Counter,
    /// Businesses suspended automatically after reports.
    pub business_suspensions: Counter,
    /// Reach entries, care windows and expired consents deleted by housekeeping.
    pub business_rows_expired: Counter,
    /// The store's writer.
    pub store: Arc<StoreMetrics>,
    /// The bus between nodes.
    pub bus: Arc<BusMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            connections: Arc::default(),
            connections_accepted: Counter::default(),
            connections_refused_per_ip: Counter::default(),
            connections_closed: LabeledCounter::default(),
            sessions: Arc::default(),
            frames_in: Default::default(),
            frames_out: Default::default(),
            refusals: LabeledCounter::default(),
            envelopes_accepted: Counter::default(),
            envelopes_duplicate: Counter::default(),
            envelopes_delivered: Counter::default(),
            envelopes_acknowledged: Counter::default(),
            envelopes_expired: Counter::default(),
            dedup_entries_expired: Counter::default(),
            slow_consumer_evictions: Counter::default(),
            sweeps: Counter::default(),
            last_sweep_unix_seconds: Gauge::default(),
            sweep_failures: Counter::default(),
            tls_handshake_failures: Counter::default(),
            business_sends: LabeledCounter::default(),
            envelopes_purged: Counter::default(),
            reports: Counter::default(),
            business_suspensions: Counter::default(),
            business_rows_expired: Counter::default(),
            store: Arc::default(),
            bus: Arc::default(),
        }
    }
}

/// Values read at scrape time rather than counted.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    /// Envelopes waiting in all queues, if the store answered.
    pub queued_envelopes: Option<u64>,
    /// A clustered store's pool and lanes.
    pub store_load: Option<crate::store::StoreLoad>,
}

impl Metrics {
    /// Counts a frame received from a client.
    pub fn frame_in(&self, body: &ClientBody) {
        if let Some(counter) = self.frames_in.get(client_kind(body)) {
            counter.inc();
        }
    }

    /// Counts a binary message that was not a valid frame.
    pub fn malformed_frame_in(&self) {
        if let Some(counter) = self.frames_in.last() {
            counter.inc();
        }
    }

    /// Counts a frame written to a client (and the refusal, for an error frame).
    pub fn frame_out(&self, body: &ServerBody) {
        if let Some(counter) = self.frames_out.get(server_kind(body)) {
            counter.inc();
        }
        match body {
            ServerBody::Deliver(_) => self.envelopes_delivered.inc(),
            ServerBody::Error(error) => self.refusals.inc(error.code.as_str()),
            _ => {}
        }
    }

    /// Client frames of `kind` (one of [`CLIENT_FRAME_KINDS`]) received so far.
    pub fn frames_in(&self, kind: &str) -> u64 {
        CLIENT_FRAME_KINDS
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.frames_in.get(i))
            .map_or(0, Counter::get)
    }

    /// Server frames of `kind` (one of [`SERVER_FRAME_KINDS`]) written so far.
    pub fn frames_out(&self, kind: &str) -> u64 {
        SERVER_FRAME_KINDS
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.frames_out.get(i))
            .map_or(0, Counter::get)
    }

    /// Counts the end of a connection the server closed with `code`.
    pub fn closed(&self, code: CloseCode) {
        if code == CloseCode::SlowConsumer {
            self.slow_consumer_evictions.inc();
        }
        self.connections_closed.inc(close_label(code));
    }

    /// Counts a refusal that is not sent as an error frame (e.g. counted elsewhere).
    pub fn refused(&self, code: ErrorCode) {
        self.refusals.inc(code.as_str());
    }

    /// The exposition text: every metric, with `# HELP` and `# TYPE` lines.
    pub fn render(&self, sampled: Sampled) -> String {
        let mut out = Exposition::default();
        out.gauge(
            "parley_build_info",
            "Always 1; the version label names the running build.",
            &[(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        );
        out.gauge(
            "parley_uptime_seconds",
            "Seconds since the server started.",
            &[(&[], self.started.elapsed().as_secs_f64())],
        );
        out.gauge(
            "parley_connections",
            "Open client connections.",
            &[(&[], self.connections.get() as f64)],
        );
        out.counter(
            "parley_connections_accepted_total",
            "Client connections accepted.",
            self.connections_accepted.get(),
        );
        out.counter(
            "parley_connections_refused_per_ip_total",
            "Connections dropped at accept because their address had too many open.",
            self.connections_refused_per_ip.get(),
        );
        out.labeled_counter(
            "parley_connections_closed_total",
            "Connections ended, by reason.",
            "reason",
            &self.connections_closed.snapshot(),
        );
        out.gauge(
            "parley_sessions",
            "Connections authenticated as a device.",
            &[(&[], self.sessions.get() as f64)],
        );
        out.fixed_counters(
            "parley_frames_in_total",
            "Client frames received, by kind (malformed: not a valid frame).",
            &CLIENT_FRAME_KINDS,
            &self.frames_in,
        );
        out.fixed_counters(
            "parley_frames_out_total",
            "Server frames written, by kind.",
            &SERVER_FRAME_KINDS,
            &self.frames_out,
        );
        out.labeled_counter(
            "parley_refusals_total",
            "Requests answered with an error frame, by error code.",
            "code",
            &self.refusals.snapshot(),
        );
        out.counter(
            "parley_envelopes_accepted_total",
            "Envelopes durably queued (retries not counted).",
            self.envelopes_accepted.get(),
        );
        out.counter(
            "parley_envelopes_duplicate_total",
            "Retried sends answered with the first result.",
            self.envelopes_duplicate.get(),
        );
        out.counter(
            "parley_envelopes_delivered_total",
            "Envelopes written to their recipient (a redelivery counts again).",
            self.envelopes_delivered.get(),
        );
        out.counter(
            "parley_envelopes_acknowledged_total",
            "Envelopes deleted because their recipient acknowledged them.",
            self.envelopes_acknowledged.get(),
        );
        out.counter(
            "parley_envelopes_expired_total",
            "Undelivered envelopes deleted by retention.",
            self.envelopes_expired.get(),
        );
        out.counter(
            "parley_dedup_entries_expired_total",
            "Retry dedup entries deleted by retention.",
            self.dedup_entries_expired.get(),
        );
        if let Some(load) = &sampled.store_load {
            out.gauge(
                "parley_store_pool_connections",
                "Database connections of this node, by state (PostgreSQL store).",
                &[
                    (&[("state", "open")], load.connections_open as f64),
                    (&[("state", "idle")], load.connections_idle as f64),
                ],
            );
            out.gauge(
                "parley_store_pool_waiting",
                "Requests waiting for a database connection (PostgreSQL store).",
                &[(&[], load.connections_waited_for as f64)],
            );
            let lanes: Vec<String> = (0..load.lane_waiting.len())
                .map(|i| i.to_string())
                .collect();
            let mut samples: Vec<(Labels<'_>, f64)> = Vec::new();
            let labels: Vec<[(&str, &str); 1]> =
                lanes.iter().map(|l| [("lane", l.as_str())]).collect();
            for (label, waiting) in labels.iter().zip(&load.lane_waiting) {
                samples.push((label.as_slice(), *waiting as f64));
            }
            out.gauge(
                "parley_store_lane_waiting",
                "Sends and acks waiting in each writer lane (PostgreSQL store).",
                &samples,
            );
        }
        if let Some(queued) = sampled.queued_envelopes {
            out.gauge(
                "parley_queue_depth",
                "Envelopes waiting in all queues (read from the store at scrape time).",
                &[(&[], queued as f64)],
            );
        }
        out.counter(
            "parley_slow_consumer_evictions_total",
            "Connections closed because they did not read their writes in time.",
            self.slow_consumer_evictions.get(),
        );
        out.counter(
            "parley_sweeps_total",
            "Retention sweeps that ran to the end.",
            self.sweeps.get(),
        );
        out.gauge(
            "parley_last_sweep_timestamp_seconds",
            "When the last retention sweep finished (Unix time; 0 before the first).",
            &[(&[], self.last_sweep_unix_seconds.get() as f64)],
        );
        out.counter(
            "parley_sweep_failures_total",
            "Retention sweeps that failed.",
            self.sweep_failures.get(),
        );
        out.counter(
            "parley_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            self.tls_handshake_failures.get(),
        );
        out.labeled_counter(
            "parley_business_sends_total",
            "Sends by business accounts, by outcome.",
            "outcome",
            &self.business_sends.snapshot(),
        );
        out.counter(
            "parley_envelopes_purged_total",
            "Queued business envelopes deleted by consent revocations.",
            self.envelopes_purged.get(),
        );
        out.counter(
            "parley_reports_total",
            "Reports of accounts received.",
            self.reports.get(),
        );
        out.counter(
            "parley_business_suspensions_total",
            "Businesses suspended automatically after reports.",
            self.business_suspensions.get(),
        );
        out.counter(
            "parley_business_rows_expired_total",
            "Reach entries, closed care windows and expired consents deleted by housekeeping.",
            self.business_rows_expired.get(),
        );
        out.histogram(
            "parley_store_commit_seconds",
            "Duration of each group commit, from BEGIN to the end of COMMIT (fsync).",
            &self.store.commit_seconds,
        );
        out.counter(
            "parley_store_committed_jobs_total",
            "Write jobs committed (several per group commit under load).",
            self.store.committed_jobs.get(),
        );
        out.counter(
            "parley_store_failed_commits_total",
            "Group commits that failed.",
            self.store.failed_commits.get(),
        );
        out.gauge(
            "parley_held_envelopes",
            "Envelopes held in memory for a connected recipient, neither acked nor committed yet.",
            &[(&[], self.store.held_envelopes.get() as f64)],
        );
        out.gauge(
            "parley_held_bytes",
            "Ciphertext bytes of the held envelopes.",
            &[(&[], self.store.held_bytes.get() as f64)],
        );
        out.labeled_counter(
            "parley_held_settled_total",
            "Held envelopes settled: by the recipient's ack, or by a commit to the queue.",
            "by",
            &self.store.held_settled.snapshot(),
        );
        out.labeled_counter(
            "parley_hold_refused_total",
            "Envelopes persisted first because a hold bound was reached.",
            "reason",
            &self.store.hold_refused.snapshot(),
        );
        out.gauge(
            "parley_bus_connected",
            "1 while this node is connected to the bus between nodes (always 1 on one node).",
            &[(&[], self.bus.connected.get() as f64)],
        );
        for (name, help, counter) in [
            (
                "parley_bus_wakes_sent_total",
                "Wakes published to other nodes for committed envelopes.",
                &self.bus.wakes_sent,
            ),
            (
                "parley_bus_wakes_received_total",
                "Wakes received from other nodes for devices connected here.",
                &self.bus.wakes_received,
            ),
            (
                "parley_bus_wakes_dropped_total",
                "Wakes not published because the outgoing bus queue was full.",
                &self.bus.wakes_dropped,
            ),
            (
                "parley_bus_resyncs_total",
                "Times every local device was told to read its queue from the store again.",
                &self.bus.resyncs,
            ),
            (
                "parley_bus_displacements_total",
                "Local connections closed because their device connected on another node.",
                &self.bus.displacements,
            ),
            (
                "parley_bus_slow_consumer_events_total",
                "Times the bus client dropped messages for this node (then it resyncs).",
                &self.bus.slow_consumer_events,
            ),
        ] {
            out.counter(name, help, counter.get());
        }
        out.text
    }
}

/// Writes the exposition format.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, label)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape(label));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    fn fixed_counters(&mut self, name: &str, help: &str, kinds: &[&str], counters: &[Counter]) {
        self.header(name, help, "counter");
        for (kind, counter) in kinds.iter().zip(counters) {
            self.sample(name, &[("type", kind)], counter.get() as f64);
        }
    }

    fn labeled_counter(&mut self, name: &str, help: &str, key: &str, values: &[(&str, u64)]) {
        self.header(name, help, "counter");
        for (label, value) in values {
            self.sample(name, &[(key, label)], *value as f64);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(&histogram.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let le = bound.to_string();
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        if let Some(last) = histogram.buckets.last() {
            cumulative += last.load(Ordering::Relaxed);
        }
        self.sample(&bucket, &[("le", "+Inf")], cumulative as f64);
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let metrics = Metrics::default();
        let h = &metrics.store.commit_seconds;
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let text = metrics.render(Sampled::default());
        assert!(text.contains("parley_store_commit_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("parley_store_commit_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("parley_store_commit_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("parley_store_commit_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("parley_store_commit_seconds_count 3\n"));
    }

    #[test]
    fn labeled_counters_and_frames_render_with_labels() {
        let metrics = Metrics::default();
        metrics.refused(ErrorCode::RateLimited);
        metrics.refused(ErrorCode::RateLimited);
        metrics.closed(CloseCode::SlowConsumer);
        metrics.malformed_frame_in();
        let text = metrics.render(Sampled {
            queued_envelopes: Some(7),
            store_load: Some(crate::store::StoreLoad {
                connections_open: 6,
                connections_idle: 5,
                connections_waited_for: 0,
                lane_waiting: vec![3, 0],
            }),
        });
        assert!(text.contains("parley_store_pool_connections{state=\"open\"} 6\n"));
        assert!(text.contains("parley_store_lane_waiting{lane=\"0\"} 3\n"));
        assert!(text.contains("parley_refusals_total{code=\"rate_limited\"} 2\n"));
        assert!(text.contains("parley_connections_closed_total{reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("parley_slow_consumer_evictions_total 1\n"));
        assert!(text.contains("parley_frames_in_total{type=\"malformed\"} 1\n"));
        assert!(text.contains("parley_queue_depth 7\n"));
        assert_eq!(metrics.frames_in("malformed"), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

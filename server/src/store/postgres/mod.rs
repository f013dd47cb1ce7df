//! The clustered store: PostgreSQL 15, shared by every node of a cluster.
//!
//! Several relay nodes open the same database; the database is the truth and its row
//! locks order what the nodes do (see `policy.rs`). Nothing is cached across calls, so a
//! node sees every other node's commits.
//!
//! * Sends and acks go through **writer lanes** (`lanes.rs`): per lane one task, one
//!   connection at a time, group commits of up to `group_commit_max` jobs, committed
//!   with `synchronous_commit = on` before anyone is answered.
//! * Everything else runs in its own transaction on a pooled connection (`pool.rs`),
//!   run again from the start after a deadlock, a serialization failure or a concurrent
//!   insert of the same key; reads run without a transaction.
//! * Opening migrates the schema (`schema.rs`) under an advisory lock and reads the
//!   cluster's server id from it.
//!
//! The SQL is in `queue.rs` (envelopes), `policy.rs` (the send policy's facts and
//! effects), `accounts.rs`, `business.rs`, `maintenance.rs` and, for the operator's
//! commands, `admin.rs`; the rules they keep are the shared ones of `crate::store`.
//! The URL's password is never shown: see [`redact_url`].

mod accounts;
mod admin;
mod business;
mod devices;
mod enqueue;
mod errors;
mod fence;
mod held;
mod lanes;
mod limits;
mod maintenance;
mod node;
mod policy;
mod pool;
mod queue;
mod schema;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Pool};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, Seq, ServerId};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

pub use self::admin::{list_businesses, revoke_business, set_suspended, set_tier, verify_business};
use self::errors::pool_error;
pub use self::errors::redact_url;
use self::held::HeldBytes;
pub use self::held::HoldWindow;
use self::lanes::{LaneContext, LaneJob, Lanes};
pub use self::node::{check_authority, NodeLock, NodeRefused};
use self::policy::SendRules;
use self::pool::{in_transaction, JobFuture, TxJob};
use crate::store::{
    AuthRecord, BundleOutcome, BusinessRecord, BusinessWindows, CommitListener, ConsentChange,
    ConsentOutcome, DeviceListLookup, EnqueueOutcome, NewAccount, NewDeviceList, NewEnvelope,
    Pending, PrekeyUpload, PublishOutcome, RegisterOutcome, ReportOutcome, ReportPolicy, Store,
    StoreError, StoreFuture, StoreHooks, StoreLoad, StoredEnvelope, SweepReport, UploadOutcome,
};

/// How to open the store.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Writer lanes: concurrent group commits of one node.
    pub lanes: usize,
    /// Jobs waiting per lane before callers wait for room.
    pub lane_capacity: usize,
    /// Most jobs committed together by one lane.
    pub group_commit_max: usize,
    /// Most connections of this node; `None`: one per lane and 4 more (reads and the
    /// other writes).
    pub pool_max_size: Option<usize>,
    /// How long a request waits for a free connection; opening a new one may take the
    /// longer of this and 5 s (less if the URL sets a shorter `connect_timeout`). After
    /// it the store is [`StoreError::Unavailable`].
    pub pool_wait: Duration,
    /// Hold, then persist (`held.rs`); [`HoldWindow::OFF`] persists every envelope first.
    pub hold: HoldWindow,
    /// Most ciphertext bytes of the held sends of this node at once; past it, sends are
    /// persisted first.
    pub hold_max_bytes: usize,
    /// Whether reads of a queue are fenced against seqs held on any node (`fence.rs`).
    /// Only a node that knows no other node can hold (one node, without a bus between
    /// nodes) may read without.
    pub fenced_reads: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            lanes: 4,
            lane_capacity: 4096,
            group_commit_max: 256,
            pool_max_size: None,
            pool_wait: Duration::from_secs(5),
            hold: HoldWindow::OFF,
            hold_max_bytes: 64 * 1024 * 1024,
            fenced_reads: true,
        }
    }
}

impl PostgresOptions {
    /// The pool's size.
    fn pool_size(&self) -> usize {
        self.pool_max_size
            .unwrap_or(self.lanes.max(1).saturating_add(4))
    }
}

/// Handle to the clustered store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    /// The URL with its password hidden, for logs and `Debug`.
    shown_url: String,
    server_id: ServerId,
    pool: Pool,
    lanes: Lanes,
    /// For what the store stamps itself ([`StoreHooks::clock`]).
    clock: crate::clock::Clock,
    /// Told of commits; carries held envelopes and hears of their acks.
    listener: Arc<dyn CommitListener>,
    /// Holding (`held.rs`).
    hold: HoldWindow,
    /// Reads fenced against held seqs ([`PostgresOptions::fenced_reads`]).
    fenced_reads: bool,
    /// What the lanes share, for closing: held sends settle before the lanes stop.
    lane_context: Arc<LaneContext>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown_url)
            .field("server_id", &self.server_id)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// A job that reads without a transaction.
type ReadJob<I, T> = for<'a> fn(&'a ClientWrapper, &'a I) -> JobFuture<'a, T>;

impl PostgresStore {
    /// Connects to `url`, applies missing migrations, reads the cluster's server id
    /// (storing `new_server_id` if the database is new) and starts the writer lanes on
    /// the current runtime. `hooks` are the send policy, the commit listener and the
    /// metrics.
    pub async fn open(
        url: &str,
        options: &PostgresOptions,
        new_server_id: ServerId,
        hooks: StoreHooks,
    ) -> Result<PostgresStore, StoreError> {
        let shown_url = redact_url(url);
        let pool = pool::build(url, options.pool_size(), options.pool_wait)?;
        migrate_with(&pool).await.inspect_err(|e| {
            tracing::warn!(url = %shown_url, error = %e, "cannot open the PostgreSQL store");
        })?;
        let server_id = in_transaction(&pool, &new_server_id, |tx, fresh| {
            Box::pin(schema::server_id(tx, *fresh))
        })
        .await?;
        let clock = hooks.clock;
        let listener = hooks.on_commit.clone();
        let context = LaneContext {
            pool: pool.clone(),
            rules: Arc::new(SendRules::new(hooks.send_policy)),
            on_commit: hooks.on_commit,
            metrics: hooks.metrics.clone(),
            group_commit_max: options.group_commit_max,
            hold: options.hold,
            lanes: OnceLock::new(),
            held_sends: Arc::default(),
            held_bytes: Arc::new(HeldBytes::new(options.hold_max_bytes, hooks.metrics)),
            settlements: TaskTracker::new(),
            closing: AtomicBool::new(false),
        };
        let context = Arc::new(context);
        let lanes = Lanes::start(options.lanes, options.lane_capacity, context.clone());
        tracing::info!(url = %shown_url, lanes = options.lanes, "PostgreSQL store open");
        Ok(PostgresStore {
            shown_url,
            server_id,
            pool,
            lanes,
            clock,
            listener,
            hold: options.hold,
            fenced_reads: options.fenced_reads,
            lane_context: context,
        })
    }

    /// This cluster's server id (created with the database).
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    async fn write<I: Sync, T>(&self, input: I, job: TxJob<I, T>) -> Result<T, StoreError> {
        in_transaction(&self.pool, &input, job).await
    }

    async fn read<I: Sync, T>(&self, input: I, job: ReadJob<I, T>) -> Result<T, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(job(&client, &input).await?)
    }

    async fn submit_envelope(
        &self,
        envelope: NewEnvelope,
    ) -> Result<Pending<EnqueueOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.lanes
            .submit(LaneJob::Enqueue { envelope, reply })
            .await?;
        Ok(pending(answer))
    }

    async fn submit_ack(
        &self,
        device: DeviceAddress,
        through: Seq,
    ) -> Result<Pending<u64>, StoreError> {
        // What was carried here and acked is on the device's disk: its senders' nodes
        // may answer `accepted` (the queue rows the ack deletes are another matter).
        self.listener.acked(&device, through);
        let (reply, answer) = oneshot::channel();
        self.lanes
            .submit(LaneJob::Ack {
                device,
                through,
                reply,
            })
            .await?;
        Ok(pending(answer))
    }
}

/// The answer of a lane job, once its batch committed (`Unavailable` if the lane is
/// gone).
fn pending<T: Send + 'static>(answer: oneshot::Receiver<Result<T, StoreError>>) -> Pending<T> {
    Box::pin(async move { answer.await.map_err(|_| StoreError::Unavailable)? })
}

/// Applies missing migrations to the database at `url`; returns its schema version. For
/// `parley-server admin migrate`: opening the store does the same.
pub async fn migrate(url: &str) -> Result<u32, StoreError> {
    let pool = pool::build(url, 1, PostgresOptions::default().pool_wait)?;
    migrate_with(&pool).await
}

async fn migrate_with(pool: &Pool) -> Result<u32, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    Ok(schema::migrate(&mut client).await?)
}

impl Store for PostgresStore {
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome> {
        Box::pin(self.write(account, |tx, a| Box::pin(accounts::register(tx, a))))
    }

    fn auth_record(&self, device: DeviceAddress) -> StoreFuture<'_, Option<AuthRecord>> {
        Box::pin(self.read(device, |c, d| Box::pin(accounts::auth_record(c, d))))
    }

    fn upload_prekeys(
        &self,
        device: DeviceAddress,
        upload: PrekeyUpload,
    ) -> StoreFuture<'_, UploadOutcome> {
        Box::pin(self.write((device, upload), |tx, input| {
            Box::pin(accounts::upload_prekeys(tx, input))
        }))
    }

    fn take_bundle(&self, device: DeviceAddress) -> StoreFuture<'_, BundleOutcome> {
        Box::pin(self.write(device, |tx, d| Box::pin(accounts::take_bundle(tx, d))))
    }

    fn resolve_handle(
        &self,
        handle: Handle,
    ) -> StoreFuture<'_, Option<(AccountId, Option<String>)>> {
        Box::pin(self.read(handle, |c, h| Box::pin(accounts::resolve_handle(c, h))))
    }

    fn submit_enqueue(&self, envelope: NewEnvelope) -> StoreFuture<'_, Pending<EnqueueOutcome>> {
        Box::pin(self.submit_envelope(envelope))
    }

    fn submit_ack_through(
        &self,
        device: DeviceAddress,
        through: Seq,
    ) -> StoreFuture<'_, Pending<u64>> {
        Box::pin(self.submit_ack(device, through))
    }

    fn page(
        &self,
        device: DeviceAddress,
        after: Seq,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEnvelope>> {
        if self.fenced_reads {
            // Whatever this node's own settings: another node may hold seqs of the
            // device (`fence.rs`).
            return Box::pin(fence::fenced_page(
                &self.pool,
                &*self.listener,
                self.hold,
                device,
                after,
                limit,
            ));
        }
        Box::pin(self.read((device, after, limit), |c, (d, after, limit)| {
            Box::pin(queue::page(c, d, *after, *limit))
        }))
    }

    fn delete_account(&self, account: AccountId) -> StoreFuture<'_, bool> {
        Box::pin(self.write(account, |tx, a| Box::pin(accounts::delete_account(tx, a))))
    }

    fn sweep_expired(
        &self,
        queue_cutoff_ms: u64,
        dedup_cutoff_ms: u64,
    ) -> StoreFuture<'_, SweepReport> {
        Box::pin(
            self.write((queue_cutoff_ms, dedup_cutoff_ms), |tx, cutoffs| {
                Box::pin(queue::sweep(tx, cutoffs))
            }),
        )
    }

    fn change_consent(
        &self,
        user: AccountId,
        change: ConsentChange,
        now_ms: u64,
    ) -> StoreFuture<'_, ConsentOutcome> {
        Box::pin(self.write((user, change, now_ms), |tx, input| {
            Box::pin(business::change_consent(tx, input))
        }))
    }

    fn set_blocked(
        &self,
        user: AccountId,
        blocked: AccountId,
        block: bool,
        now_ms: u64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write((user, blocked, block, now_ms), |tx, input| {
            Box::pin(business::set_blocked(tx, input))
        }))
    }

    fn report(
        &self,
        reporter: AccountId,
        account: AccountId,
        policy: ReportPolicy,
        now_ms: u64,
    ) -> StoreFuture<'_, ReportOutcome> {
        Box::pin(
            self.write((reporter, account, policy, now_ms), |tx, input| {
                Box::pin(business::report(tx, input))
            }),
        )
    }

    fn business(&self, account: AccountId) -> StoreFuture<'_, Option<BusinessRecord>> {
        Box::pin(self.read(account, |c, a| Box::pin(business::business(c, a))))
    }

    fn set_display_name(
        &self,
        account: AccountId,
        display_name: Option<String>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(self.write((account, display_name), |tx, input| {
            Box::pin(business::set_display_name(tx, input))
        }))
    }

    fn sweep_business(&self, now_ms: u64, windows: BusinessWindows) -> StoreFuture<'_, u64> {
        Box::pin(self.write((now_ms, windows), |tx, input| {
            Box::pin(business::sweep(tx, input))
        }))
    }

    fn publish_device_list(&self, list: NewDeviceList) -> StoreFuture<'_, PublishOutcome> {
        Box::pin(self.write(list, |tx, list| Box::pin(devices::publish(tx, list))))
    }

    fn device_list(&self, account: AccountId) -> StoreFuture<'_, DeviceListLookup> {
        Box::pin(self.read(account, |c, a| Box::pin(devices::lookup(c, a))))
    }

    fn device_seen(&self, device: DeviceAddress, now_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.read((device, now_ms), |c, (d, now)| {
            Box::pin(devices::seen(c, d, *now))
        }))
    }

    fn devices_seen(&self, account: AccountId) -> StoreFuture<'_, Vec<(DeviceId, Option<u64>)>> {
        Box::pin(self.read(account, |c, a| Box::pin(devices::last_seen(c, a))))
    }

    fn check_writable(&self) -> StoreFuture<'_, ()> {
        let now = self.clock.now_ms();
        Box::pin(self.write(now, |tx, now| Box::pin(maintenance::probe_write(tx, now))))
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read((), |c, ()| Box::pin(maintenance::queue_depth(c))))
    }

    fn shared_rate(
        &self,
        limit: &'static str,
        subject: Vec<u8>,
        rate: crate::rate_limit::BucketRate,
        cost: u32,
        take: bool,
    ) -> Option<StoreFuture<'_, Result<(), crate::rate_limit::RetryAfter>>> {
        Some(Box::pin(self.rate(limit, subject, rate, cost, take)))
    }

    fn load(&self) -> Option<StoreLoad> {
        let status = self.pool.status();
        Some(StoreLoad {
            connections_open: status.size,
            connections_idle: status.available,
            connections_waited_for: status.waiting,
            lane_waiting: self.lanes.waiting(),
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Hold nothing more; the lanes finish their jobs, then serve the commits of
            // what is still held until every settlement has ended, then stop.
            let context = &self.lane_context;
            context.closing.store(true, Ordering::Release);
            context.settlements.close();
            self.lanes.close().await;
            self.pool.close();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SendPolicy;

    #[tokio::test]
    async fn errors_never_show_the_password_of_the_url() {
        let options = PostgresOptions {
            pool_wait: Duration::from_millis(500),
            ..PostgresOptions::default()
        };
        let secret = "pa55-w0rd-never-shown";
        // Nothing listens on port 1; an unknown parameter makes the URL invalid.
        for url in [
            format!("postgres://parley:{secret}@127.0.0.1:1/parley?connect_timeout=1"),
            format!("postgres://parley:{secret}@127.0.0.1:1/parley?no_such_setting=1"),
            format!("postgres://parley:{secret}@127.0.0.1:notaport/parley"),
            format!("host=127.0.0.1 port=1 user=parley password={secret} bogus"),
        ] {
            let hooks = StoreHooks::new(SendPolicy::default());
            let err = PostgresStore::open(&url, &options, ServerId([1; 32]), hooks)
                .await
                .expect_err("nothing to connect to");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{url}: {shown}");
            let migrated = migrate(&url).await.expect_err("nothing to migrate");
            assert!(!format!("{migrated} {migrated:?}").contains(secret));
        }
    }
}

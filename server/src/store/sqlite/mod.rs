//! The embedded store: one SQLite database in WAL mode.
//!
//! Threads, never async workers, touch the database:
//! * one **writer** thread owns the only write connection. It takes the first pending
//!   job, then every job already waiting (up to `group_commit_max`), runs them all in one
//!   transaction, commits once (`synchronous=FULL` by default: the commit is on disk when
//!   `COMMIT` returns), and only then answers all of them. This is group commit: one fsync
//!   for many envelopes, and no reply before durability. A job that fails (an exceptional
//!   store error; refusals are values) rolls the whole batch back, and every job of it is
//!   answered with that error. The writer also hands out the recipients' seqs, from
//!   reservations committed with the batch that makes them (`seqs`): they increase per
//!   device and skip the rest of a reservation after a restart.
//! * `readers` reader threads, each with a read-only connection, serve lookups and queue
//!   pages. WAL lets them read committed data while the writer writes.
//!
//! Both job queues are bounded; a caller waits for room (backpressure), never grows them.

mod business;
mod business_admin;
mod devices;
mod held;
mod holds;
mod maintenance;
mod policy;
mod queries;
mod queued;
mod reaper;
mod schema;
mod seqs;
mod threads;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, Seq, ServerId};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub use self::business_admin::{
    list_businesses, revoke_business, set_suspended, set_tier, verify_business,
};
pub use self::holds::HoldLimits;
use self::holds::Holds;
pub use self::maintenance::{backup, migrate, stats, BackupReport, DatabaseStats};
use self::policy::SendRules;
use self::queries::HoldHere;
use self::seqs::SeqBlocks;
use self::threads::{ReadJob, WriteJob, WriterMsg};
pub use crate::store::admin::{AdminError, BusinessListing, Verification};
use crate::store::types::announce;
use crate::store::{
    AuthRecord, BundleOutcome, BusinessRecord, BusinessWindows, CommitListener, ConsentChange,
    ConsentOutcome, DeviceListLookup, EnqueueOutcome, NewAccount, NewDeviceList, NewEnvelope,
    Pending, PrekeyUpload, PublishOutcome, RegisterOutcome, ReportOutcome, ReportPolicy, Store,
    StoreError, StoreFuture, StoreHooks, StoredEnvelope, SweepReport, UploadOutcome,
};

/// How durable a commit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous=FULL`: an accepted envelope survives power loss. The default.
    Full,
    /// `synchronous=NORMAL`: survives a crash of the server process, but the last
    /// commits may be lost on power failure or an OS crash. Faster; not the default.
    Normal,
}

/// How to open the store.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Most jobs committed together.
    pub group_commit_max: usize,
    /// Number of reader threads.
    pub readers: usize,
    /// Capacity of each job queue.
    pub queue_capacity: usize,
    /// Holding envelopes for connected recipients (off: persist first).
    pub hold: HoldLimits,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            group_commit_max: 512,
            readers: 2,
            queue_capacity: 4096,
            hold: HoldLimits::OFF,
        }
    }
}

/// Handle to the embedded store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    server_id: ServerId,
    writer: mpsc::Sender<WriterMsg>,
    readers: Vec<mpsc::Sender<Option<ReadJob>>>,
    next_reader: AtomicUsize,
    rules: Arc<SendRules>,
    on_commit: Arc<dyn CommitListener>,
    /// For what the store stamps itself ([`StoreHooks::clock`]).
    clock: crate::clock::Clock,
    /// Envelopes held for connected recipients, when holding is on.
    holds: Option<Arc<Holds>>,
}

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "parley.db";

impl SqliteStore {
    /// Opens (creating if needed) `parley.db` in `data_dir`, applies migrations and starts
    /// the database threads. `new_server_id` is used only when the database is new;
    /// `hooks` are the send policy, the commit listener and the metrics.
    pub fn open(
        data_dir: &Path,
        options: &SqliteOptions,
        new_server_id: ServerId,
        hooks: StoreHooks,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Database(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = open_connection(&path, options.durability, false)?;
        schema::migrate(&mut conn)?;
        let server_id = queries::server_id(&conn, new_server_id)?;

        let (writer, writer_rx) = mpsc::channel(options.queue_capacity.max(1));
        let holds = match options.hold.is_on() && tokio::runtime::Handle::try_current().is_ok() {
            true => Some(Arc::new(Holds::new(options.hold, hooks.metrics.clone()))),
            false => None,
        };
        threads::spawn_writer(threads::Writer {
            conn,
            jobs: writer_rx,
            group_commit_max: options.group_commit_max.max(1),
            durability: options.durability,
            answerer: threads::Answerer::start(),
            metrics: hooks.metrics,
            holds: holds.clone(),
        })?;
        if let Some(holds) = &holds {
            tokio::spawn(reaper::run(writer.clone(), holds.clone()));
        }
        let mut readers = Vec::new();
        for index in 0..options.readers.max(1) {
            let conn = open_connection(&path, options.durability, true)?;
            let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
            threads::spawn_reader(index, conn, rx)?;
            readers.push(tx);
        }
        Ok(SqliteStore {
            path,
            server_id,
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
            rules: Arc::new(SendRules::new(hooks.send_policy)),
            on_commit: hooks.on_commit,
            clock: hooks.clock,
            holds,
        })
    }

    /// This deployment's server id (created with the database).
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(job).await?.await
    }

    /// Queues `job` for the writer (waiting for room); the result comes after the commit.
    async fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Pending<T>, StoreError> {
        self.submit_with_seqs(move |c, _| job(c)).await
    }

    /// [`SqliteStore::write`] for a job that takes seqs or deletes device rows, and so
    /// needs the writer's [`SeqBlocks`].
    async fn write_with_seqs<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit_with_seqs(job).await?.await
    }

    async fn submit_with_seqs<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Pending<T>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(threads::write_job(job, reply), answer)
            .await
    }

    /// Queues an envelope; once committed, its listener gets it (in commit order, where
    /// the answers are delivered: `threads::Answerer`) before the outcome is answered.
    async fn submit_envelope(
        &self,
        envelope: NewEnvelope,
    ) -> Result<Pending<EnqueueOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let rules = self.rules.clone();
        let listener = self.on_commit.clone();
        let holds = self.holds.clone();
        let job_listener = listener.clone();
        let job = move |c: &Connection, seqs: &mut SeqBlocks| {
            let hold = holds.as_deref().map(|holds| HoldHere {
                holds,
                listener: &*job_listener,
                now: Instant::now(),
            });
            let (decided, held) = queries::enqueue(c, seqs, &envelope, &rules, hold.as_ref())?;
            Ok((decided, envelope, held))
        };
        let committed =
            move |(decided, envelope, held)| (announce(decided, envelope, &*listener), held);
        let pending = self
            .submit_job(threads::write_job_then(job, committed, reply), answer)
            .await?;
        Ok(Box::pin(async move {
            let (outcome, held): (EnqueueOutcome, Option<holds::Settlement>) = pending.await?;
            if let Some(settlement) = held {
                // Held: `accepted` once the recipient acked it or it was committed.
                settlement.await.map_err(|_| StoreError::Unavailable)??;
            }
            Ok(outcome)
        }))
    }

    /// Acks `through` for `device`. What was held up to there is settled (it is on the
    /// device's disk; its dedup rows are written a deadline later), and the writer
    /// deletes the queue through there only if it may hold something there.
    async fn submit_ack(
        &self,
        device: DeviceAddress,
        through: Seq,
    ) -> Result<Pending<u64>, StoreError> {
        let Some(holds) = &self.holds else {
            return self
                .submit(move |c| queries::ack_through(c, &device, through, false).map(|(n, _)| n))
                .await;
        };
        let (acked, needs) = holds.acked(&device, through, Instant::now());
        acked.settle();
        if !needs.delete && !needs.flush {
            return Ok(Box::pin(std::future::ready(Ok(0))));
        }
        let learn = holds.clone();
        self.submit(move |c| {
            if needs.flush {
                held::record_acked(c, &learn)?;
            }
            if !needs.delete {
                return Ok(0);
            }
            let (deleted, lowest) = queries::ack_through(c, &device, through, true)?;
            learn.learned(device, lowest);
            Ok(deleted)
        })
        .await
    }

    /// A page of `device`'s queue. While envelopes are held, read by the writer in its
    /// order, after committing what is held for the device: no read passes a held seq.
    async fn read_page(
        &self,
        device: DeviceAddress,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let Some(holds) = self.holds.clone() else {
            return self
                .read(move |c| queries::page(c, &device, after, limit))
                .await;
        };
        self.write_settling(holds, move |c, _, holds| {
            let taken = held::commit_devices(c, holds, &[device])?;
            let page = queries::page(c, &device, after, limit)?;
            Ok((page, taken))
        })
        .await
    }

    /// Runs a job that deletes device rows (and says which devices are gone). While
    /// holding is on, what is held for those devices is taken in the same job and
    /// committed as at a deadline: no queue row (the device is gone, as its queue is),
    /// its dedup rows written; its senders are answered after the commit, as for an
    /// envelope purged with its device's queue.
    async fn write_removing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection, &mut SeqBlocks) -> Result<(T, Vec<DeviceAddress>), StoreError>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let Some(holds) = self.holds.clone() else {
            return self
                .write_with_seqs(move |c, seqs| job(c, seqs).map(|(value, _)| value))
                .await;
        };
        self.write_settling(holds, move |c, seqs, holds| {
            let (value, gone) = job(c, seqs)?;
            let taken = held::commit_devices(c, holds, &gone)?;
            Ok((value, taken))
        })
        .await
    }

    /// Runs `job` on the writer with the held envelopes; what it took out of them (and
    /// committed) is settled once its batch committed. If the batch fails, their senders
    /// get the error (`Holds::batch_failed`, and the dropped answers).
    async fn write_settling<T: Send + 'static>(
        &self,
        holds: Arc<Holds>,
        job: impl FnOnce(
                &Connection,
                &mut SeqBlocks,
                &Holds,
            ) -> Result<(T, Vec<holds::Taken>), StoreError>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let taking = holds.clone();
        let job = move |c: &Connection, seqs: &mut SeqBlocks| job(c, seqs, &taking);
        let settled = move |(value, taken)| {
            holds.settle_taken(taken, &Ok(()));
            value
        };
        self.submit_job(threads::write_job_then(job, settled, reply), answer)
            .await?
            .await
    }

    async fn submit_job<T: Send + 'static>(
        &self,
        job: WriteJob,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<Pending<T>, StoreError> {
        self.writer
            .send(WriterMsg::Job(job))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        Ok(Box::pin(async move {
            answer.await.map_err(|_| StoreError::Unavailable)?
        }))
    }

    async fn read<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: &Connection| {
            let _ = reply.send(job(conn));
        });
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let reader = self.readers.get(index).ok_or(StoreError::Unavailable)?;
        reader
            .send(Some(job))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }
}

pub(super) fn open_connection(
    path: &Path,
    durability: Durability,
    read_only: bool,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_error)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_error)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(sql_error)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)
            .map_err(sql_error)?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Compiled statements kept per connection: every statement the server runs (about 80,
/// with the business policy and the transaction control of the writer) stays compiled.
const STATEMENT_CACHE: usize = 128;

/// Maps a SQLite error to a [`StoreError`], keeping "disk full" apart.
pub(crate) fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full
        }
        _ => StoreError::Database(e.to_string()),
    }
}

impl Store for SqliteStore {
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome> {
        Box::pin(self.write(move |c| queries::register(c, &account)))
    }

    fn auth_record(&self, device: DeviceAddress) -> StoreFuture<'_, Option<AuthRecord>> {
        Box::pin(self.read(move |c| queries::auth_record(c, &device)))
    }

    fn upload_prekeys(
        &self,
        device: DeviceAddress,
        upload: PrekeyUpload,
    ) -> StoreFuture<'_, UploadOutcome> {
        Box::pin(self.write(move |c| queries::upload_prekeys(c, &device, &upload)))
    }

    fn take_bundle(&self, device: DeviceAddress) -> StoreFuture<'_, BundleOutcome> {
        Box::pin(self.write(move |c| queries::take_bundle(c, &device)))
    }

    fn resolve_handle(
        &self,
        handle: Handle,
    ) -> StoreFuture<'_, Option<(AccountId, Option<String>)>> {
        Box::pin(self.read(move |c| queries::resolve_handle(c, &handle)))
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
        Box::pin(self.read_page(device, after, limit))
    }

    fn delete_account(&self, account: AccountId) -> StoreFuture<'_, bool> {
        Box::pin(self.write_removing(move |c, seqs| {
            let gone = devices::current_devices(c, account.as_bytes().as_slice())?
                .into_iter()
                .map(|device| DeviceAddress { account, device })
                .collect();
            Ok((queries::delete_account(c, seqs, &account)?, gone))
        }))
    }

    fn sweep_expired(
        &self,
        queue_cutoff_ms: u64,
        dedup_cutoff_ms: u64,
    ) -> StoreFuture<'_, SweepReport> {
        Box::pin(self.write(move |c| queries::sweep(c, queue_cutoff_ms, dedup_cutoff_ms)))
    }

    fn change_consent(
        &self,
        user: AccountId,
        change: ConsentChange,
        now_ms: u64,
    ) -> StoreFuture<'_, ConsentOutcome> {
        Box::pin(self.write(move |c| business::change_consent(c, &user, &change, now_ms)))
    }

    fn set_blocked(
        &self,
        user: AccountId,
        blocked: AccountId,
        block: bool,
        now_ms: u64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| business::set_blocked(c, &user, &blocked, block, now_ms)))
    }

    fn report(
        &self,
        reporter: AccountId,
        account: AccountId,
        policy: ReportPolicy,
        now_ms: u64,
    ) -> StoreFuture<'_, ReportOutcome> {
        Box::pin(self.write(move |c| business::report(c, &reporter, &account, policy, now_ms)))
    }

    fn business(&self, account: AccountId) -> StoreFuture<'_, Option<BusinessRecord>> {
        Box::pin(self.read(move |c| business::business(c, &account)))
    }

    fn set_display_name(
        &self,
        account: AccountId,
        display_name: Option<String>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(
            self.write(move |c| business::set_display_name(c, &account, display_name.as_deref())),
        )
    }

    fn sweep_business(&self, now_ms: u64, windows: BusinessWindows) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |c| business::sweep(c, now_ms, windows)))
    }

    fn publish_device_list(&self, list: NewDeviceList) -> StoreFuture<'_, PublishOutcome> {
        Box::pin(self.write_removing(move |c, seqs| {
            let outcome = devices::publish(c, seqs, &list)?;
            let gone = match &outcome {
                PublishOutcome::Stored { removed, .. } => removed
                    .iter()
                    .map(|&device| DeviceAddress {
                        account: list.account(),
                        device,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok((outcome, gone))
        }))
    }

    fn device_list(&self, account: AccountId) -> StoreFuture<'_, DeviceListLookup> {
        Box::pin(self.read(move |c| devices::lookup(c, &account)))
    }

    fn device_seen(&self, device: DeviceAddress, now_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| devices::seen(c, &device, now_ms)))
    }

    fn devices_seen(&self, account: AccountId) -> StoreFuture<'_, Vec<(DeviceId, Option<u64>)>> {
        Box::pin(self.read(move |c| devices::last_seen(c, &account)))
    }

    fn check_writable(&self) -> StoreFuture<'_, ()> {
        let now = self.clock.now_ms();
        Box::pin(self.write(move |c| maintenance::probe_write(c, now)))
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read(maintenance::queue_depth))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if let Some(holds) = &self.holds {
                // Everything held is committed before the writer stops.
                let _ = reaper::commit_expired(&self.writer, holds, None).await;
            }
            for reader in &self.readers {
                let _ = reader.send(None).await;
            }
            let (done, finished) = oneshot::channel();
            self.writer
                .send(WriterMsg::Close(done))
                .await
                .map_err(|_| StoreError::Unavailable)?;
            finished.await.map_err(|_| StoreError::Unavailable)
        })
    }
}

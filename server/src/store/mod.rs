//! Durable state behind a narrow interface: accounts, prekeys, per-device queues of
//! envelopes, and the sender-side dedup index.
//!
//! [`Store`] is what the rest of the server sees. [`sqlite::SqliteStore`] is the embedded
//! implementation; [`postgres::PostgresStore`] the clustered one, shared by several
//! relay nodes. Both pass one contract suite (`parley-tests`, `store_contract`). Every method returns `Result`: "not found" is a value inside `Ok`, and
//! [`StoreError`] always means the store itself failed.
//!
//! The rules every implementation keeps:
//! * `enqueue` returns only after the envelope is durably committed or, held (ADR 0005),
//!   acknowledged by its recipient (`Accepted` survives `kill -9` either way), and a
//!   retry with the same `(sender, message id)` returns the first result without storing
//!   anything (but in the crash window of a held envelope: protocol.md §11).
//! * Sequence numbers are per recipient device, starting at 1, assigned in commit order,
//!   and increasing: never given twice, also across a restart or `kill -9`, but not
//!   dense. SQLite hands them out of durable reservations and skips the rest of a
//!   reservation after a restart (`sqlite::seqs`); PostgreSQL's are dense but for a held
//!   envelope whose commit came too late (`postgres::held`). So a cumulative
//!   `ack_through` never deletes what was not delivered, and a reader never expects
//!   `seq + 1`.
//! * `take_bundle` hands each one-time prekey out exactly once, also under concurrency.
//! * `publish_device_list` changes the list and the device rows together, and only to a
//!   newer version (`store::devices`).
//! * A send to every device (`NewEnvelope::fan_out`) stores all its copies in one
//!   transaction, or none when the device lists it was made for are not the current
//!   ones; policy and retry dedup count it once.
//! * `enqueue` checks the business policy (blocks, consent, care window, limits) in the
//!   same transaction that stores the envelope, so a revocation, block or suspension is
//!   in force for every send committed after it.

pub mod admin;
mod bundle;
mod business;
pub mod devices;
pub mod policy;
pub mod postgres;
pub mod retry;
pub mod sqlite;
mod types;
pub(crate) mod values;

use std::future::Future;
use std::pin::Pin;

pub use admin::{AdminError, BusinessListing, Verification};
pub use business::{
    BusinessRecord, BusinessWindows, ConsentChange, ConsentOutcome, ReportOutcome, ReportPolicy,
};
pub use devices::{CurrentDevices, DeviceListLookup, NewDeviceList, PublishOutcome};
pub use policy::{ReachTiers, SendPolicy};
pub use types::{
    AuthRecord, BundleOutcome, CommitListener, EnqueueOutcome, EnvelopeCopy, FanOut, HeldWord,
    NewAccount, NewEnvelope, PrekeyUpload, RegisterOutcome, StoreHooks, StoreLoad, StoredEnvelope,
    SweepReport, UploadOutcome,
};

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, Seq};

/// The store failed; nothing the request asked for was done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk or file system is full.
    #[error("storage full")]
    Full,
    /// The store is closed (server shutting down) or its worker is gone.
    #[error("store unavailable")]
    Unavailable,
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

/// A boxed future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A write that has its place in the writer's order but is not committed yet: it
/// resolves after the commit (see [`Store::submit_enqueue`]).
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The durable state of a relay.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates an account with its first device (device 1) and prekeys.
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome>;

    /// What authentication needs to know about a device: whether it exists, and how many
    /// one-time prekeys it has left.
    fn auth_record(&self, device: DeviceAddress) -> StoreFuture<'_, Option<AuthRecord>>;

    /// Replaces signed prekeys and adds one-time prekeys of a device.
    fn upload_prekeys(
        &self,
        device: DeviceAddress,
        upload: PrekeyUpload,
    ) -> StoreFuture<'_, UploadOutcome>;

    /// A prekey bundle of `device`, removing the one-time prekey it hands out.
    fn take_bundle(&self, device: DeviceAddress) -> StoreFuture<'_, BundleOutcome>;

    /// The account behind a handle.
    fn resolve_handle(
        &self,
        handle: Handle,
    ) -> StoreFuture<'_, Option<(AccountId, Option<String>)>>;

    /// Durably appends an envelope to its recipient's queue (or finds the earlier result
    /// of the same `(sender, id)`): [`Store::submit_enqueue`], then its outcome.
    fn enqueue(&self, envelope: NewEnvelope) -> StoreFuture<'_, EnqueueOutcome> {
        Box::pin(async move { self.submit_enqueue(envelope).await?.await })
    }

    /// [`Store::enqueue`] in two steps, so that a connection can pipeline its sends: the
    /// returned future completes once the envelope is queued for the writer behind every
    /// write submitted before it (waiting while the writer's queue is full), and yields
    /// the outcome as a [`Pending`] that resolves after the commit. Envelopes submitted
    /// one after the other are stored in that order.
    fn submit_enqueue(&self, envelope: NewEnvelope) -> StoreFuture<'_, Pending<EnqueueOutcome>>;

    /// [`Store::ack_through`] in two steps, like [`Store::submit_enqueue`].
    fn submit_ack_through(
        &self,
        device: DeviceAddress,
        through: Seq,
    ) -> StoreFuture<'_, Pending<u64>>;

    /// Up to `limit` queued envelopes of `device` with `seq > after`, in order.
    fn page(
        &self,
        device: DeviceAddress,
        after: Seq,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEnvelope>>;

    /// Deletes every queued envelope of `device` with `seq <= through`; returns how many:
    /// [`Store::submit_ack_through`], then its outcome.
    fn ack_through(&self, device: DeviceAddress, through: Seq) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.submit_ack_through(device, through).await?.await })
    }

    /// Deletes an account with its devices, prekeys, queued envelopes and dedup entries
    /// (the embedded store leaves those to expire with the dedup window: they name a
    /// device key that no longer resolves, so no retry finds them); its handle becomes
    /// free. Returns whether it existed.
    fn delete_account(&self, account: AccountId) -> StoreFuture<'_, bool>;

    /// Deletes envelopes accepted before `queue_cutoff_ms` and dedup entries older than
    /// `dedup_cutoff_ms` (both milliseconds since the Unix epoch).
    fn sweep_expired(
        &self,
        queue_cutoff_ms: u64,
        dedup_cutoff_ms: u64,
    ) -> StoreFuture<'_, SweepReport>;

    /// Stores a consent grant or revocation signed by `user` (already verified), after
    /// checking its nonce, its order against revocations, and that the business exists.
    fn change_consent(
        &self,
        user: AccountId,
        change: ConsentChange,
        now_ms: u64,
    ) -> StoreFuture<'_, ConsentOutcome>;

    /// Blocks (`true`) or unblocks `blocked` for `user`.
    fn set_blocked(
        &self,
        user: AccountId,
        blocked: AccountId,
        block: bool,
        now_ms: u64,
    ) -> StoreFuture<'_, ()>;

    /// Records `reporter`'s report of `account`; may suspend a business.
    fn report(
        &self,
        reporter: AccountId,
        account: AccountId,
        policy: ReportPolicy,
        now_ms: u64,
    ) -> StoreFuture<'_, ReportOutcome>;

    /// The account's business certificate and standing; `None` if it never was one.
    fn business(&self, account: AccountId) -> StoreFuture<'_, Option<BusinessRecord>>;

    /// Sets or clears `account`'s display name; `false` if the name is reserved
    /// (confusable with another verified business's, or a badge look-alike).
    fn set_display_name(
        &self,
        account: AccountId,
        display_name: Option<String>,
    ) -> StoreFuture<'_, bool>;

    /// Deletes business bookkeeping that no longer counts (old reach entries, closed
    /// care windows, expired consents, reports outside the report window unless their
    /// business is suspended), in a bounded batch; returns the rows deleted.
    fn sweep_business(&self, now_ms: u64, windows: BusinessWindows) -> StoreFuture<'_, u64>;

    /// Stores a newer device list (verified by the caller) and, in the same transaction,
    /// makes the account's device rows match it: rows for new devices; row, prekeys,
    /// queue and retry entries deleted for devices no longer listed (retry entries as in
    /// [`Store::delete_account`]). A list whose version
    /// does not exceed the stored one (0 without a list) is `Stale` and changes nothing.
    fn publish_device_list(&self, list: NewDeviceList) -> StoreFuture<'_, PublishOutcome>;

    /// The account's latest device list.
    fn device_list(&self, account: AccountId) -> StoreFuture<'_, DeviceListLookup>;

    /// Records that `device` logged in on the day of `now_ms` (kept to the day).
    fn device_seen(&self, device: DeviceAddress, now_ms: u64) -> StoreFuture<'_, ()>;

    /// The day each of the account's devices last logged in (`None`: not since the
    /// relay keeps it), ascending by device.
    fn devices_seen(&self, account: AccountId) -> StoreFuture<'_, Vec<(DeviceId, Option<u64>)>>;

    /// Commits a tiny write (a probe row): `Ok` proves the store can commit right now.
    /// For readiness checks.
    fn check_writable(&self) -> StoreFuture<'_, ()>;

    /// Envelopes waiting in all queues. For metrics; may cost a scan.
    fn queue_depth(&self) -> StoreFuture<'_, u64>;

    /// Counts against a limit that every node of the deployment shares: takes `cost`
    /// (or, without `take`, checks for one) from `subject`'s bucket of `limit`, refilled
    /// at `rate`. `None` when this store keeps no shared limits (one node: the node's own
    /// buckets are the deployment's).
    fn shared_rate(
        &self,
        limit: &'static str,
        subject: Vec<u8>,
        rate: crate::rate_limit::BucketRate,
        cost: u32,
        take: bool,
    ) -> Option<StoreFuture<'_, Result<(), crate::rate_limit::RetryAfter>>> {
        let _ = (limit, subject, rate, cost, take);
        None
    }

    /// The store's connections and writer queues right now, for metrics (`None` where
    /// the store has no pool: SQLite's threads are fixed).
    fn load(&self) -> Option<StoreLoad> {
        None
    }

    /// Finishes pending writes, checkpoints and closes. Later calls fail with
    /// [`StoreError::Unavailable`].
    fn close(&self) -> StoreFuture<'_, ()>;
}

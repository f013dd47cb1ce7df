//! The store contract: what every implementation of `parley_server::store::Store` must do,
//! as one suite of cases that `tests/store_contract.rs` runs against each store.
//!
//! A case takes an [`OpenStore`], opens a fresh, empty store with the send policy it
//! needs, and checks one rule of the `Store` documentation (increasing per-recipient seqs,
//! retry dedup, one-time prekeys served once, the send policy inside the storing
//! transaction, revocation purging in the same transaction, commit listener order,
//! sweeps). The operator's business commands differ per store, so the opener also hands
//! out a [`StoreAdmin`], and a [`ReopenStore`] to open the same store again after closing
//! it (as a restarted server does).
//!
//! [`store_contract_cases!`](crate::store_contract_cases) expands to one `#[tokio::test]`
//! per case for an opener, so a new store gets the whole suite with one line.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context};
use parley_protocol::business::{Category, CategorySet};
use parley_protocol::devices::{DeviceEntry, DeviceList, SignedDeviceList};
use parley_protocol::ids::{DeviceAddress, DeviceId, Handle, MessageId, Seq};
use parley_server::store::{
    BundleOutcome, BusinessWindows, CommitListener, ConsentChange, ConsentOutcome,
    DeviceListLookup, EnqueueOutcome, EnvelopeCopy, FanOut, NewAccount, NewDeviceList, NewEnvelope,
    Pending, PrekeyUpload, PublishOutcome, RegisterOutcome, ReportPolicy, SendPolicy, Store,
    StoreError, StoredEnvelope, UploadOutcome,
};
use rand_core::{OsRng, RngCore};

use crate::account::TestAccount;
use crate::business::{grant, now_ms, revocation};

/// A fresh store for one case.
#[derive(Debug)]
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Everything its listener was told, in order.
    pub commits: Arc<Commits>,
    /// The operator's business commands on it.
    pub admin: Box<dyn StoreAdmin>,
    /// Opens the same store again.
    pub reopen: Box<dyn ReopenStore>,
    /// Whatever must live as long as the store (a directory, a database server).
    pub _keep: Box<dyn std::fmt::Debug + Send + Sync>,
}

/// A boxed future of the kit.
pub type KitFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Opens fresh stores of one implementation.
pub trait OpenStore: Sync {
    /// A new, empty store checking sends against `policy` and telling `commits` of every
    /// commit; `None` when this implementation cannot run here (the opener said why).
    fn open(&self, policy: SendPolicy, commits: Arc<Commits>) -> KitFuture<'_, Option<Subject>>;
}

/// The operator's business commands, per store.
pub trait StoreAdmin: std::fmt::Debug + Send + Sync {
    /// Verifies the account with `handle` as a business allowed `categories`.
    fn verify_business(&self, handle: &Handle, categories: CategorySet) -> anyhow::Result<()>;
    /// Suspends or restores the business `handle`.
    fn set_suspended(&self, handle: &Handle, suspended: bool) -> anyhow::Result<()>;
    /// Sets the reach tier of the business `handle`.
    fn set_tier(&self, handle: &Handle, tier: u32) -> anyhow::Result<()>;
}

/// Opens a store again on the same data (directory, database), with the same hooks.
pub trait ReopenStore: std::fmt::Debug + Send + Sync {
    /// The store reopened; the caller closed the first one.
    fn reopen(&self) -> KitFuture<'_, Arc<dyn Store>>;
}

/// A commit listener that remembers what it was told.
#[derive(Debug, Default)]
pub struct Commits(Mutex<Vec<(DeviceAddress, Seq, MessageId)>>);

impl Commits {
    /// Every commit so far: recipient, seq, message id.
    pub fn seen(&self) -> Vec<(DeviceAddress, Seq, MessageId)> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl CommitListener for Commits {
    fn committed(&self, to: DeviceAddress, envelope: StoredEnvelope) {
        self.0
            .lock()
            .expect("not poisoned")
            .push((to, envelope.seq, envelope.id));
    }
}

/// Expands to one `#[tokio::test]` per contract case, each opening its store with
/// `$open` (an expression of a type implementing [`OpenStore`]).
#[macro_export]
macro_rules! store_contract_cases {
    ($open:expr) => {
        $crate::store_contract_cases!(@cases $open;
            registration_is_unique_by_identity_and_handle,
            seqs_increase_per_recipient_and_acks_are_cumulative,
            seqs_are_never_reused_after_reopen,
            retries_get_the_first_seq_and_reused_ids_are_refused,
            pipelined_sends_get_the_answers_of_sends_one_by_one,
            the_listener_hears_each_commit_once_in_seq_order,
            one_time_prekeys_are_served_once_under_concurrency,
            people_reach_people_unless_blocked,
            a_business_needs_consent_and_a_revocation_purges_its_queue,
            a_business_answers_within_the_care_window,
            a_persons_receipt_opens_no_care_window,
            the_daily_reach_accepts_exactly_the_tier,
            a_suspended_business_is_refused,
            a_person_may_not_send_in_a_category,
            sweeps_delete_expired_envelopes,
            the_dedup_window_is_separate_from_retention,
            reports_are_swept_once_they_no_longer_count,
            deleting_an_account_frees_its_handle,
            concurrent_senders_to_one_recipient_get_increasing_seqs,
            concurrent_registrations_create_one_account,
            a_revocation_racing_business_sends_leaves_nothing_queued,
            a_block_is_in_force_for_every_send_after_it,
            the_store_reports_writability_and_queue_depth,
            closing_finishes_pending_writes_then_refuses,
            a_device_list_only_moves_forward_and_the_devices_follow_it,
            a_send_to_every_device_is_stored_whole_or_refused_as_stale,
            a_send_from_a_removed_device_is_refused_alone,
        );
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> anyhow::Result<()> {
                $crate::store_contract::$case(&$open).await
            }
        )*
    };
}

/// Opens a subject, or `None` to skip (the opener printed why).
async fn open(
    opener: &dyn OpenStore,
    policy: SendPolicy,
) -> anyhow::Result<Option<(Subject, Arc<Commits>)>> {
    let commits = Arc::new(Commits::default());
    Ok(opener
        .open(policy, commits.clone())
        .await?
        .map(|s| (s, commits)))
}

/// Registers `account` (its prekeys included) and returns its device.
pub async fn register(store: &dyn Store, account: &TestAccount) -> anyhow::Result<DeviceAddress> {
    match store.register(new_account(account)).await? {
        RegisterOutcome::Created { address, .. } => Ok(address),
        other => bail!("registering {:?} gave {other:?}", account.handle),
    }
}

fn new_account(account: &TestAccount) -> NewAccount {
    NewAccount {
        identity: account.identity.public(),
        handle: account.handle.clone(),
        signed_prekey: account.signed_prekey.signed_by(&account.identity),
        kem_prekey: None,
        one_time_prekeys: account.one_time.iter().map(|p| p.one_time()).collect(),
        now_ms: now_ms(),
    }
}

/// A fresh random message id.
fn message_id() -> MessageId {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    MessageId(id)
}

/// An envelope of `body` from `from` to `to`, sent now.
pub fn envelope(
    from: DeviceAddress,
    to: DeviceAddress,
    id: MessageId,
    body: &[u8],
    category: Option<Category>,
) -> NewEnvelope {
    NewEnvelope {
        from,
        to,
        id,
        ciphertext: body.to_vec(),
        now_ms: now_ms(),
        category,
        receipt: false,
        fan_out: None,
    }
}

async fn send(
    store: &dyn Store,
    from: DeviceAddress,
    to: DeviceAddress,
    category: Option<Category>,
) -> anyhow::Result<EnqueueOutcome> {
    Ok(store
        .enqueue(envelope(from, to, message_id(), b"ciphertext", category))
        .await?)
}

fn seq_of(outcome: EnqueueOutcome) -> anyhow::Result<Seq> {
    match outcome {
        EnqueueOutcome::Accepted { seq, .. } => Ok(seq),
        other => bail!("expected accepted, got {other:?}"),
    }
}

/// Submits `count` envelopes from `from` to `to` one after the other without waiting
/// for their commits (as a connection pipelines them); their outcomes, in order.
async fn pipeline(
    store: &dyn Store,
    from: DeviceAddress,
    to: DeviceAddress,
    count: u8,
) -> anyhow::Result<Vec<Pending<EnqueueOutcome>>> {
    let mut pending = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let e = envelope(from, to, message_id(), &[i], None);
        pending.push(store.submit_enqueue(e).await?);
    }
    Ok(pending)
}

/// The seqs of pipelined envelopes that must all be accepted.
async fn accepted_seqs(pending: Vec<Pending<EnqueueOutcome>>) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(pending.len());
    for p in pending {
        seqs.push(seq_of(p.await?)?.0);
    }
    Ok(seqs)
}

/// The address of an account nobody registered.
fn unregistered_device() -> DeviceAddress {
    DeviceAddress {
        account: TestAccount::new(None, 0).identity.account_id(),
        device: DeviceId::PRIMARY,
    }
}

fn handle(name: &str) -> Handle {
    Handle::parse(name).expect("test handles are valid")
}

/// Unique handles per case, so that cases sharing a database server never collide.
fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", OsRng.next_u32())
}

/// `register` refuses a second account with the same identity or handle.
pub async fn registration_is_unique_by_identity_and_handle(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let name = unique("ann");
    let ann = TestAccount::new(Some(&name), 2);
    let address = register(&*s.store, &ann).await?;
    assert_eq!(address.device, DeviceId::PRIMARY);
    assert_eq!(
        s.store.register(new_account(&ann)).await?,
        RegisterOutcome::AccountExists
    );
    let other = TestAccount::new(Some(&name), 0);
    assert_eq!(
        s.store.register(new_account(&other)).await?,
        RegisterOutcome::HandleTaken
    );
    let (account, _) = s
        .store
        .resolve_handle(handle(&name))
        .await?
        .context("the handle resolves")?;
    assert_eq!(account, ann.identity.account_id());
    let auth = s.store.auth_record(address).await?.context("auth record")?;
    assert_eq!(auth.one_time_prekeys, 2);
    assert!(s
        .store
        .resolve_handle(handle(&unique("nobody")))
        .await?
        .is_none());
    Ok(())
}

/// Whether `seqs` strictly increase.
fn increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

/// Seqs are at least 1 and increase per recipient, each sender's in the order it sent
/// (they need not be dense); `page` reads after a seq in order; `ack_through` deletes
/// up to a seq, cumulatively, and never makes a seq given again.
pub async fn seqs_increase_per_recipient_and_acks_are_cumulative(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let c = register(store, &TestAccount::new(None, 0)).await?;
    // Pipelined from two senders at once: every recipient's seqs increase.
    let mut pending = Vec::new();
    for i in 0..40u8 {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (c, b) };
        let e = envelope(from, to, message_id(), &[i], None);
        pending.push(store.submit_enqueue(e).await?);
    }
    let seqs = accepted_seqs(pending).await?;
    let from_a: Vec<u64> = seqs.iter().step_by(2).copied().collect();
    let from_c: Vec<u64> = seqs.iter().skip(1).step_by(2).copied().collect();
    ensure!(
        increasing(&from_a) && increasing(&from_c),
        "each sender's order is kept: {seqs:?}"
    );
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    ensure!(
        sorted.first() >= Some(&1) && increasing(&sorted),
        "distinct and from 1 up: {sorted:?}"
    );
    ensure!(
        seq_of(send(store, b, a, None).await?)? >= Seq(1),
        "another recipient's seqs are at least 1 too"
    );

    let page = store.page(b, Seq(0), 25).await?;
    let paged: Vec<u64> = page.iter().map(|e| e.seq.0).collect();
    assert_eq!(paged, sorted[..25], "in seq order");
    let rest = store.page(b, Seq(sorted[24]), 100).await?;
    let rest: Vec<u64> = rest.iter().map(|e| e.seq.0).collect();
    assert_eq!(rest, sorted[25..], "after a seq");

    assert_eq!(store.ack_through(b, Seq(sorted[29])).await?, 30);
    assert_eq!(store.page(b, Seq(0), 100).await?.len(), 10);
    assert_eq!(
        store.ack_through(b, Seq(sorted[29])).await?,
        0,
        "acks are idempotent"
    );
    let next = seq_of(send(store, a, b, None).await?)?;
    ensure!(
        next.0 > sorted[39],
        "acks never make seqs reused: {next:?} after {}",
        sorted[39]
    );
    Ok(())
}

/// Seqs are never given twice, also across a restart: a store closed and opened again
/// gives each recipient seqs above every seq it gave before (it may skip some: SQLite
/// starts again at the end of its last reservation), and `page` and cumulative acks
/// work across the gap.
pub async fn seqs_are_never_reused_after_reopen(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let a = register(&*s.store, &TestAccount::new(None, 0)).await?;
    let b = register(&*s.store, &TestAccount::new(None, 0)).await?;
    let before = accepted_seqs(pipeline(&*s.store, a, b, 5).await?).await?;
    assert_eq!(s.store.ack_through(b, Seq(before[1])).await?, 2);
    s.store.close().await?;

    let store = s.reopen.reopen().await?;
    let after = accepted_seqs(pipeline(&*store, a, b, 5).await?).await?;
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    ensure!(
        increasing(&all),
        "seqs after the reopen are above the ones before: {before:?} then {after:?}"
    );
    // A new recipient after the reopen starts like any other.
    let c = register(&*store, &TestAccount::new(None, 0)).await?;
    ensure!(seq_of(send(&*store, a, c, None).await?)? >= Seq(1));

    let queued: Vec<u64> = store
        .page(b, Seq(before[1]), 100)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(queued, all[2..], "the page reads across the gap");
    let paged: Vec<u64> = store
        .page(b, Seq(before[4]), 100)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(paged, after, "after the last seq before the reopen");
    assert_eq!(
        store.ack_through(b, Seq(after[0])).await?,
        4,
        "a cumulative ack covers the old seqs and the first new one"
    );
    let left: Vec<u64> = store
        .page(b, Seq(0), 100)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(left, after[1..]);
    store.close().await?;
    Ok(())
}

/// A retry (same id, bytes and recipient) gets the first seq and stores nothing; the
/// same id with other bytes or for another recipient is refused.
pub async fn retries_get_the_first_seq_and_reused_ids_are_refused(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let c = register(store, &TestAccount::new(None, 0)).await?;
    let id = message_id();
    let first = seq_of(store.enqueue(envelope(a, b, id, b"one", None)).await?)?;
    assert_eq!(
        store.enqueue(envelope(a, b, id, b"one", None)).await?,
        EnqueueOutcome::Duplicate(first)
    );
    assert_eq!(
        store.enqueue(envelope(a, b, id, b"two", None)).await?,
        EnqueueOutcome::IdReused
    );
    assert_eq!(
        store.enqueue(envelope(a, c, id, b"one", None)).await?,
        EnqueueOutcome::IdReused
    );
    assert_eq!(store.page(b, Seq(0), 10).await?.len(), 1);
    assert!(store.page(c, Seq(0), 10).await?.is_empty());
    // Still a retry after the envelope was delivered and acknowledged.
    store.ack_through(b, first).await?;
    assert_eq!(
        store.enqueue(envelope(a, b, id, b"one", None)).await?,
        EnqueueOutcome::Duplicate(first)
    );
    // Another sender may use the same id.
    assert!(matches!(
        store.enqueue(envelope(c, b, id, b"one", None)).await?,
        EnqueueOutcome::Accepted { .. }
    ));
    assert_eq!(
        commits.seen().len(),
        2,
        "duplicates and refusals are not announced"
    );
    Ok(())
}

/// Sends submitted together, without waiting for each other's commits (a store may
/// run them in one group commit), get the answers they would get one by one: a retry
/// of an id stored just before gets its seq, a reused id is refused, a blocked sender
/// and an unknown recipient are refused, and refusals store nothing.
pub async fn pipelined_sends_get_the_answers_of_sends_one_by_one(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let c = register(store, &TestAccount::new(None, 0)).await?;
    let nobody = unregistered_device();
    store
        .set_blocked(b.account, c.account, true, now_ms())
        .await?;
    let id = message_id();
    let sends = [
        envelope(a, b, id, b"one", None),
        envelope(c, b, message_id(), b"blocked", None),
        envelope(a, b, id, b"one", None),
        envelope(a, nobody, message_id(), b"nobody", None),
        envelope(a, b, id, b"two", None),
        envelope(a, c, id, b"one", None),
        envelope(a, b, message_id(), b"second", None),
        envelope(c, a, message_id(), b"to a", None),
        envelope(a, b, message_id(), b"third", None),
    ];
    let mut pending = Vec::with_capacity(sends.len());
    for e in sends {
        pending.push(store.submit_enqueue(e).await?);
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for p in pending {
        outcomes.push(p.await?);
    }
    let seq_at = |i: usize| match outcomes.get(i) {
        Some(EnqueueOutcome::Accepted {
            seq,
            from_business: false,
        }) => Ok(seq.0),
        other => Err(anyhow::anyhow!(
            "send {i}: expected accepted, got {other:?}"
        )),
    };
    let (one, second, to_a, third) = (seq_at(0)?, seq_at(6)?, seq_at(7)?, seq_at(8)?);
    ensure!(
        one < second && second < third && to_a >= 1,
        "seqs {one}, {second}, {third} to b; {to_a} to a"
    );
    assert_eq!(
        outcomes[1..6],
        [
            EnqueueOutcome::Blocked,
            EnqueueOutcome::Duplicate(Seq(one)),
            EnqueueOutcome::UnknownRecipient,
            EnqueueOutcome::IdReused,
            EnqueueOutcome::IdReused,
        ]
    );
    let queued: Vec<(u64, Vec<u8>)> = store
        .page(b, Seq(0), 10)
        .await?
        .into_iter()
        .map(|e| (e.seq.0, e.ciphertext))
        .collect();
    assert_eq!(
        queued,
        vec![
            (one, b"one".to_vec()),
            (second, b"second".to_vec()),
            (third, b"third".to_vec())
        ]
    );
    assert_eq!(commits.seen().len(), 4, "only what was stored is announced");
    Ok(())
}

/// The commit listener hears each accepted envelope once, per recipient in seq order,
/// before its `accepted` is answered.
pub async fn the_listener_hears_each_commit_once_in_seq_order(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let mut answered = Vec::new();
    for p in pipeline(store, a, b, 50).await? {
        let seq = seq_of(p.await?)?;
        answered.push(seq.0);
        assert!(
            commits
                .seen()
                .iter()
                .any(|(to, s, _)| *to == b && *s == seq),
            "seq {seq:?} was announced before it was answered"
        );
    }
    let seen: Vec<u64> = commits.seen().iter().map(|(_, s, _)| s.0).collect();
    assert_eq!(seen, answered, "once each, in seq order");
    ensure!(increasing(&seen), "{seen:?}");
    Ok(())
}

/// Concurrent bundle fetches get distinct one-time prekeys, each once; then bundles come
/// without one.
pub async fn one_time_prekeys_are_served_once_under_concurrency(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let target = register(&*s.store, &TestAccount::new(None, 15)).await?;
    let mut fetches = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = s.store.clone();
        fetches.spawn(async move { store.take_bundle(target).await });
    }
    let mut served = Vec::new();
    let mut without = 0;
    while let Some(fetched) = fetches.join_next().await {
        match fetched?? {
            BundleOutcome::Found { bundle, .. } => match bundle.one_time_prekey {
                Some(key) => served.push(key.id),
                None => without += 1,
            },
            BundleOutcome::NotFound => bail!("the device exists"),
        }
    }
    let mut distinct = served.clone();
    distinct.sort_unstable_by_key(|id| id.0);
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        served.len(),
        "a one-time prekey was served twice"
    );
    assert_eq!(served.len(), 15);
    assert_eq!(without, 5);
    let record = s.store.auth_record(target).await?.context("exists")?;
    assert_eq!(record.one_time_prekeys, 0);
    Ok(())
}

/// People write to any registered device unless it blocks them.
pub async fn people_reach_people_unless_blocked(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let nobody = unregistered_device();
    assert_eq!(
        send(store, a, nobody, None).await?,
        EnqueueOutcome::UnknownRecipient
    );
    seq_of(send(store, a, b, None).await?)?;
    store
        .set_blocked(b.account, a.account, true, now_ms())
        .await?;
    assert_eq!(send(store, a, b, None).await?, EnqueueOutcome::Blocked);
    seq_of(send(store, b, a, None).await?).context("a block is one-way")?;
    store
        .set_blocked(b.account, a.account, false, now_ms())
        .await?;
    seq_of(send(store, a, b, None).await?).context("unblocked")?;
    Ok(())
}

/// A business with `categories`, and a person.
struct BusinessWorld {
    business: DeviceAddress,
    business_handle: Handle,
    person: TestAccount,
    person_address: DeviceAddress,
}

async fn business_world(s: &Subject, categories: CategorySet) -> anyhow::Result<BusinessWorld> {
    let name = unique("bank");
    let business = register(&*s.store, &TestAccount::new(Some(&name), 0)).await?;
    let business_handle = handle(&name);
    s.admin.verify_business(&business_handle, categories)?;
    let person = TestAccount::new(None, 0);
    let person_address = register(&*s.store, &person).await?;
    Ok(BusinessWorld {
        business,
        business_handle,
        person,
        person_address,
    })
}

/// A business send needs a grant for its category; a revocation refuses the next send
/// and purges what was queued in that category, in one transaction.
pub async fn a_business_needs_consent_and_a_revocation_purges_its_queue(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let alerts = CategorySet::of([Category::SecurityAlert, Category::Transactional]);
    let w = business_world(&s, alerts).await?;
    let alert = Some(Category::SecurityAlert);
    assert_eq!(
        send(store, w.business, w.person_address, alert).await?,
        EnqueueOutcome::Refused,
        "no consent yet"
    );
    assert_eq!(
        send(
            store,
            w.business,
            w.person_address,
            Some(Category::Marketing)
        )
        .await?,
        EnqueueOutcome::CategoryNotAllowed
    );
    assert_eq!(
        send(store, w.business, w.person_address, None).await?,
        EnqueueOutcome::CategoryNotAllowed
    );
    let granted = store
        .change_consent(
            w.person_address.account,
            ConsentChange::Grant(grant(&w.person, w.business.account, alerts)),
            now_ms(),
        )
        .await?;
    assert!(matches!(granted, ConsentOutcome::Updated { .. }));
    for _ in 0..3 {
        match send(store, w.business, w.person_address, alert).await? {
            EnqueueOutcome::Accepted { from_business, .. } => assert!(from_business),
            other => bail!("consented send refused: {other:?}"),
        }
    }
    seq_of(
        send(
            store,
            w.business,
            w.person_address,
            Some(Category::Transactional),
        )
        .await?,
    )?;
    let queued = store.page(w.person_address, Seq(0), 10).await?;
    assert_eq!(queued.len(), 4);
    assert!(queued.iter().all(|e| e.category.is_some()));

    let revoked = store
        .change_consent(
            w.person_address.account,
            ConsentChange::Revoke(revocation(
                &w.person,
                w.business.account,
                CategorySet::of([Category::SecurityAlert]),
            )),
            now_ms(),
        )
        .await?;
    assert_eq!(
        revoked,
        ConsentOutcome::Updated {
            categories: CategorySet::of([Category::Transactional]),
            purged: 3
        }
    );
    assert_eq!(
        send(store, w.business, w.person_address, alert).await?,
        EnqueueOutcome::Refused
    );
    let left = store.page(w.person_address, Seq(0), 10).await?;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].category, Some(Category::Transactional));
    Ok(())
}

/// `conversation` is allowed only within the care window after the person wrote.
pub async fn a_business_answers_within_the_care_window(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let w = business_world(&s, CategorySet::of([Category::SecurityAlert])).await?;
    let conversation = Some(Category::Conversation);
    assert_eq!(
        send(store, w.business, w.person_address, conversation).await?,
        EnqueueOutcome::Refused
    );
    seq_of(send(store, w.person_address, w.business, None).await?)?;
    seq_of(send(store, w.business, w.person_address, conversation).await?)?;
    // Outside the window: the same facts, judged a window later.
    let late = NewEnvelope {
        now_ms: now_ms() + SendPolicy::default().care_window_ms + 1000,
        ..envelope(
            w.business,
            w.person_address,
            message_id(),
            b"x",
            conversation,
        )
    };
    assert_eq!(store.enqueue(late).await?, EnqueueOutcome::Refused);
    Ok(())
}

/// An envelope the person marks as a receipt is accepted but opens no care window; the
/// person's message after it does.
pub async fn a_persons_receipt_opens_no_care_window(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let w = business_world(&s, CategorySet::of([Category::SecurityAlert])).await?;
    let conversation = Some(Category::Conversation);
    let receipt = NewEnvelope {
        receipt: true,
        ..envelope(w.person_address, w.business, message_id(), b"receipt", None)
    };
    seq_of(store.enqueue(receipt).await?)?;
    assert_eq!(
        send(store, w.business, w.person_address, conversation).await?,
        EnqueueOutcome::Refused,
        "a receipt opened the care window"
    );
    seq_of(send(store, w.person_address, w.business, None).await?)?;
    seq_of(send(store, w.business, w.person_address, conversation).await?)?;
    Ok(())
}

/// A business of tier 0 reaches exactly the tier's number of distinct people a day;
/// people already reached cost nothing.
pub async fn the_daily_reach_accepts_exactly_the_tier(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let policy = SendPolicy {
        reach_tiers: "3,10".parse().map_err(anyhow::Error::msg)?,
        ..SendPolicy::default()
    };
    let Some((s, _)) = open(opener, policy).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let alerts = CategorySet::of([Category::SecurityAlert]);
    let w = business_world(&s, alerts).await?;
    let mut people = vec![(w.person, w.person_address)];
    for _ in 0..4 {
        let p = TestAccount::new(None, 0);
        let address = register(store, &p).await?;
        people.push((p, address));
    }
    let mut outcomes = Vec::new();
    for (person, address) in &people {
        store
            .change_consent(
                address.account,
                ConsentChange::Grant(grant(person, w.business.account, alerts)),
                now_ms(),
            )
            .await?;
        outcomes.push(send(store, w.business, *address, Some(Category::SecurityAlert)).await?);
    }
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, EnqueueOutcome::Accepted { .. }))
        .count();
    assert_eq!(accepted, 3, "{outcomes:?}");
    assert!(matches!(outcomes[3], EnqueueOutcome::ReachExhausted(ms) if ms > 0));
    seq_of(
        send(
            store,
            w.business,
            people[0].1,
            Some(Category::SecurityAlert),
        )
        .await?,
    )
    .context("someone already reached costs nothing")?;
    s.admin.set_tier(&w.business_handle, 1)?;
    seq_of(
        send(
            store,
            w.business,
            people[4].1,
            Some(Category::SecurityAlert),
        )
        .await?,
    )
    .context("a higher tier reaches more")?;
    Ok(())
}

/// A suspended business is refused until restored.
pub async fn a_suspended_business_is_refused(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let alerts = CategorySet::of([Category::SecurityAlert]);
    let w = business_world(&s, alerts).await?;
    store
        .change_consent(
            w.person_address.account,
            ConsentChange::Grant(grant(&w.person, w.business.account, alerts)),
            now_ms(),
        )
        .await?;
    let alert = Some(Category::SecurityAlert);
    seq_of(send(store, w.business, w.person_address, alert).await?)?;
    s.admin.set_suspended(&w.business_handle, true)?;
    assert_eq!(
        send(store, w.business, w.person_address, alert).await?,
        EnqueueOutcome::Suspended
    );
    s.admin.set_suspended(&w.business_handle, false)?;
    seq_of(send(store, w.business, w.person_address, alert).await?)?;
    Ok(())
}

/// A send with a category from an account that is not a business is refused with
/// `NotABusiness` and stores nothing, to a person or to a business, whatever the
/// person granted; the same person's send without a category goes through.
pub async fn a_person_may_not_send_in_a_category(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let w = business_world(&s, CategorySet::ALL).await?;
    let friend = register(store, &TestAccount::new(None, 0)).await?;
    let granted = store
        .change_consent(
            w.person_address.account,
            ConsentChange::Grant(grant(&w.person, w.business.account, CategorySet::ALL)),
            now_ms(),
        )
        .await?;
    assert!(matches!(granted, ConsentOutcome::Updated { .. }));
    for (to, category) in [
        (friend, Category::Marketing),
        (friend, Category::SecurityAlert),
        (w.business, Category::Conversation),
        (w.business, Category::Transactional),
    ] {
        assert_eq!(
            send(store, w.person_address, to, Some(category)).await?,
            EnqueueOutcome::NotABusiness,
            "{category:?} to {to:?}"
        );
    }
    assert!(store.page(friend, Seq(0), 10).await?.is_empty());
    assert!(store.page(w.business, Seq(0), 10).await?.is_empty());
    assert!(commits.seen().is_empty(), "nothing was committed");
    seq_of(send(store, w.person_address, friend, None).await?).context("without a category")?;
    Ok(())
}

/// `sweep_expired` deletes envelopes accepted before the cutoff and keeps the rest.
pub async fn sweeps_delete_expired_envelopes(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let now = now_ms();
    let old = NewEnvelope {
        now_ms: now - 10_000,
        ..envelope(a, b, message_id(), b"old", None)
    };
    seq_of(store.enqueue(old).await?)?;
    let fresh = seq_of(send(store, a, b, None).await?)?;
    let report = store.sweep_expired(now - 5_000, now - 5_000).await?;
    assert_eq!(report.envelopes, 1);
    let left = store.page(b, Seq(0), 10).await?;
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![fresh]);
    Ok(())
}

/// `sweep_expired` forgets dedup entries by their own cutoff: an entry outlives the
/// envelope it answers for (a retry of an expired envelope is still a retry), and an
/// envelope outlives its entry (a retry after the window is a new send; the queued
/// envelope stays).
pub async fn the_dedup_window_is_separate_from_retention(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let now = now_ms();
    let hour = 3_600_000;
    let (expired_id, kept_id) = (message_id(), message_id());
    let expired = NewEnvelope {
        now_ms: now - 3 * hour,
        ..envelope(a, b, expired_id, b"expired", None)
    };
    let kept = NewEnvelope {
        now_ms: now - 3 * hour,
        ..envelope(a, b, kept_id, b"kept", None)
    };
    let expired_seq = seq_of(store.enqueue(expired.clone()).await?)?;
    let kept_seq = seq_of(store.enqueue(kept.clone()).await?)?;

    // Envelopes older than 2 h expire; dedup entries are kept for 4 h.
    let report = store.sweep_expired(now - 2 * hour, now - 4 * hour).await?;
    assert_eq!((report.envelopes, report.dedup_entries), (2, 0));
    assert_eq!(
        store
            .enqueue(NewEnvelope {
                now_ms: now,
                ..expired
            })
            .await?,
        EnqueueOutcome::Duplicate(expired_seq),
        "the entry outlives its envelope"
    );

    // A retry after the dedup window (1 h) is stored as a new send.
    let queued = seq_of(send(store, a, b, None).await?)?;
    let report = store.sweep_expired(now - 4 * hour, now - hour).await?;
    assert_eq!((report.envelopes, report.dedup_entries), (0, 2));
    let again = seq_of(
        store
            .enqueue(NewEnvelope {
                now_ms: now,
                ..kept
            })
            .await?,
    )?;
    assert!(again > kept_seq, "{again:?} after {kept_seq:?}");
    let left: Vec<Seq> = store
        .page(b, Seq(0), 10)
        .await?
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        left,
        vec![queued, again],
        "the sweep kept the queued envelope"
    );
    Ok(())
}

/// `sweep_business` deletes the reports that no longer count: older than the report
/// window, of a business or of a person, or from before a business's standing was
/// restored; a suspended business's reports stay for the operator's review.
pub async fn reports_are_swept_once_they_no_longer_count(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let open_business = business_world(&s, CategorySet::ALL).await?;
    let suspended = business_world(&s, CategorySet::ALL).await?;
    s.admin.set_suspended(&suspended.business_handle, true)?;
    let reporter = register(store, &TestAccount::new(None, 0)).await?.account;
    let day = 86_400_000;
    let (now, long_ago) = (now_ms(), now_ms() - 2 * day);
    let policy = ReportPolicy {
        suspend_after: 100,
        window_ms: day,
    };
    let windows = BusinessWindows {
        care_window_ms: day,
        report_window_ms: day,
    };
    for (account, at) in [
        (open_business.business.account, long_ago),
        (suspended.business.account, long_ago),
        (open_business.person_address.account, long_ago),
        (suspended.person_address.account, now),
    ] {
        store.report(reporter, account, policy, at).await?;
    }
    assert_eq!(
        store.sweep_business(now, windows).await?,
        2,
        "the old reports of the open business and of the person"
    );
    assert_eq!(store.sweep_business(now, windows).await?, 0);
    s.admin.set_suspended(&suspended.business_handle, false)?;
    assert_eq!(
        store.sweep_business(now, windows).await?,
        1,
        "restored: its old report no longer counts"
    );
    Ok(())
}

/// Deleting an account removes its devices and queue and frees its handle.
pub async fn deleting_an_account_frees_its_handle(opener: &dyn OpenStore) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let name = unique("gone");
    let gone = TestAccount::new(Some(&name), 1);
    let address = register(store, &gone).await?;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    seq_of(send(store, a, address, None).await?)?;
    assert!(store.delete_account(address.account).await?);
    assert!(!store.delete_account(address.account).await?);
    assert!(store.auth_record(address).await?.is_none());
    assert!(store.resolve_handle(handle(&name)).await?.is_none());
    assert!(store.page(address, Seq(0), 10).await?.is_empty());
    assert_eq!(
        send(store, a, address, None).await?,
        EnqueueOutcome::UnknownRecipient
    );
    ensure!(
        matches!(
            store
                .register(new_account(&TestAccount::new(Some(&name), 0)))
                .await?,
            RegisterOutcome::Created { .. }
        ),
        "the handle is free again"
    );
    Ok(())
}

/// Many senders pipelining to one recipient at once (in a clustered store: through
/// different writer lanes) get distinct, increasing seqs, each sender's in the order it
/// sent.
pub async fn concurrent_senders_to_one_recipient_get_increasing_seqs(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    const SENDERS: usize = 8;
    const EACH: u8 = 40;
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let to = register(&*s.store, &TestAccount::new(None, 0)).await?;
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let store = s.store.clone();
        let from = register(&*store, &TestAccount::new(None, 0)).await?;
        senders.spawn(async move {
            let pending = pipeline(&*store, from, to, EACH).await?;
            anyhow::Ok((from, accepted_seqs(pending).await?))
        });
    }
    let mut all = Vec::new();
    while let Some(sent) = senders.join_next().await {
        let (from, seqs) = sent??;
        ensure!(
            increasing(&seqs),
            "{from:?}'s envelopes were stored out of order: {seqs:?}"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all.len(), SENDERS * usize::from(EACH));
    ensure!(
        all.first() >= Some(&1) && increasing(&all),
        "no seq given twice"
    );
    let page: Vec<u64> = s
        .store
        .page(to, Seq(0), 1000)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(page, all, "every envelope queued, in seq order");
    let mut heard: Vec<u64> = commits.seen().iter().map(|(_, seq, _)| seq.0).collect();
    heard.sort_unstable();
    assert_eq!(heard, all, "each heard once");
    Ok(())
}

/// Registrations racing for one handle or one identity create one account.
pub async fn concurrent_registrations_create_one_account(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let name = unique("race");
    let twin = TestAccount::new(Some(&unique("twin")), 3);
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..12 {
        let store = s.store.clone();
        let account = if i % 2 == 0 {
            new_account(&TestAccount::new(Some(&name), 3))
        } else {
            new_account(&twin)
        };
        racers.spawn(async move { store.register(account).await });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = racers.join_next().await {
        outcomes.push(outcome??);
    }
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, RegisterOutcome::Created { .. }))
        .count();
    assert_eq!(
        created, 2,
        "one per handle and one per identity: {outcomes:?}"
    );
    let taken = outcomes
        .iter()
        .filter(|o| **o == RegisterOutcome::HandleTaken)
        .count();
    let exists = outcomes
        .iter()
        .filter(|o| **o == RegisterOutcome::AccountExists)
        .count();
    assert_eq!((taken, exists), (5, 5), "{outcomes:?}");
    Ok(())
}

/// Envelopes a racing stream has accepted before the race starts.
const WARM_UP: usize = 30;
/// Envelopes a racing stream submits after the racing change returned.
const AFTER: usize = 40;

/// What a racing stream sent: each outcome, with whether the racing change had returned
/// when the send was submitted.
#[derive(Debug, Default)]
struct Raced(Vec<(bool, EnqueueOutcome)>);

impl Raced {
    /// Sends accepted.
    fn accepted(&self) -> usize {
        self.0
            .iter()
            .filter(|(_, o)| matches!(o, EnqueueOutcome::Accepted { .. }))
            .count()
    }

    /// Outcomes of the sends submitted after the change returned.
    fn after(&self) -> Vec<EnqueueOutcome> {
        self.0
            .iter()
            .filter(|(after, _)| *after)
            .map(|(_, o)| *o)
            .collect()
    }
}

/// Sends from `from` to `to` (a business's in `category`), pipelined a few at a time;
/// says on `warmed_up` when [`WARM_UP`] were accepted, and stops [`AFTER`] sends after
/// `after` was set.
async fn stream_of_sends(
    store: Arc<dyn Store>,
    (from, to, category): (DeviceAddress, DeviceAddress, Option<Category>),
    after: Arc<AtomicBool>,
    warmed_up: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Raced> {
    const WINDOW: usize = 8;
    const MOST: u32 = 50_000;
    let mut warmed_up = Some(warmed_up);
    let mut outcomes = Raced::default();
    let mut window = std::collections::VecDeque::new();
    let mut accepted = 0;
    let mut sent_after = 0;
    for i in 0..MOST {
        let submitted_after = after.load(Ordering::SeqCst);
        if submitted_after {
            sent_after += 1;
            if sent_after > AFTER {
                break;
            }
        }
        let e = envelope(from, to, message_id(), &i.to_le_bytes(), category);
        window.push_back((submitted_after, store.submit_enqueue(e).await?));
        if window.len() < WINDOW {
            continue;
        }
        if let Some((flag, pending)) = window.pop_front() {
            let outcome = pending.await?;
            if matches!(outcome, EnqueueOutcome::Accepted { .. }) {
                accepted += 1;
            }
            outcomes.0.push((flag, outcome));
        }
        if accepted >= WARM_UP {
            if let Some(warmed_up) = warmed_up.take() {
                let _ = warmed_up.send(());
            }
        }
    }
    for (flag, pending) in window {
        outcomes.0.push((flag, pending.await?));
    }
    Ok(outcomes)
}

/// Starts [`stream_of_sends`] and waits until it warmed up.
async fn start_stream(
    store: Arc<dyn Store>,
    route: (DeviceAddress, DeviceAddress, Option<Category>),
    after: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Raced>>> {
    let (warmed_up, warm) = tokio::sync::oneshot::channel();
    let stream = tokio::spawn(stream_of_sends(store, route, after, warmed_up));
    tokio::time::timeout(std::time::Duration::from_secs(30), warm)
        .await
        .context("the stream did not warm up in time")?
        .context("the stream ended before it warmed up")?;
    Ok(stream)
}

/// A revocation that races a stream of business sends in its category: the sends
/// accepted before it are all purged by it, none is accepted after it, and every send
/// submitted after it returned is refused.
pub async fn a_revocation_racing_business_sends_leaves_nothing_queued(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let policy = SendPolicy {
        business_sends_per_second: 1_000_000,
        ..SendPolicy::default()
    };
    let Some((s, _)) = open(opener, policy).await? else {
        return Ok(());
    };
    let alerts = CategorySet::of([Category::SecurityAlert]);
    let w = business_world(&s, alerts).await?;
    s.store
        .change_consent(
            w.person_address.account,
            ConsentChange::Grant(grant(&w.person, w.business.account, alerts)),
            now_ms(),
        )
        .await?;
    let revoked = Arc::new(AtomicBool::new(false));
    let route = (w.business, w.person_address, Some(Category::SecurityAlert));
    let stream = start_stream(s.store.clone(), route, revoked.clone()).await?;
    let outcome = s
        .store
        .change_consent(
            w.person_address.account,
            ConsentChange::Revoke(revocation(&w.person, w.business.account, alerts)),
            now_ms(),
        )
        .await?;
    revoked.store(true, Ordering::SeqCst);
    let outcomes = stream.await??;
    let ConsentOutcome::Updated { purged, .. } = outcome else {
        bail!("the revocation was refused: {outcome:?}");
    };
    assert!(outcomes.accepted() >= WARM_UP);
    assert_eq!(
        purged as usize,
        outcomes.accepted(),
        "every accepted send was purged by the revocation, none committed after it"
    );
    assert_eq!(outcomes.after(), vec![EnqueueOutcome::Refused; AFTER]);
    assert!(s.store.page(w.person_address, Seq(0), 10).await?.is_empty());
    Ok(())
}

/// A block racing a stream of sends: every send submitted after it returned is refused,
/// and what was accepted before stays queued (a block does not purge).
pub async fn a_block_is_in_force_for_every_send_after_it(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let a = register(&*s.store, &TestAccount::new(None, 0)).await?;
    let b = register(&*s.store, &TestAccount::new(None, 0)).await?;
    let blocked = Arc::new(AtomicBool::new(false));
    let stream = start_stream(s.store.clone(), (a, b, None), blocked.clone()).await?;
    s.store
        .set_blocked(b.account, a.account, true, now_ms())
        .await?;
    blocked.store(true, Ordering::SeqCst);
    let outcomes = stream.await??;
    assert_eq!(outcomes.after(), vec![EnqueueOutcome::Blocked; AFTER]);
    assert_eq!(
        s.store.page(b, Seq(0), 1000).await?.len(),
        outcomes.accepted()
    );
    Ok(())
}

/// `check_writable` commits; `queue_depth` counts what waits in every queue.
pub async fn the_store_reports_writability_and_queue_depth(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    store.check_writable().await?;
    store.check_writable().await?;
    assert_eq!(store.queue_depth().await?, 0);
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(seq_of(send(store, a, b, None).await?)?);
    }
    seq_of(send(store, b, a, None).await?)?;
    assert_eq!(store.queue_depth().await?, 4);
    let pending = store.submit_ack_through(b, seqs[1]).await?;
    assert_eq!(pending.await?, 2);
    assert_eq!(store.queue_depth().await?, 2);
    Ok(())
}

/// `close` answers every write submitted before it; after it the store refuses with
/// `Unavailable`.
pub async fn closing_finishes_pending_writes_then_refuses(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let a = register(store, &TestAccount::new(None, 0)).await?;
    let b = register(store, &TestAccount::new(None, 0)).await?;
    let pending = pipeline(store, a, b, 30).await?;
    store.close().await?;
    let seqs = accepted_seqs(pending).await?;
    ensure!(
        seqs.len() == 30 && increasing(&seqs),
        "every write before the close was answered, in order: {seqs:?}"
    );
    assert_eq!(
        store
            .enqueue(envelope(a, b, message_id(), b"late", None))
            .await,
        Err(StoreError::Unavailable)
    );
    assert_eq!(
        store.page(b, Seq(0), 10).await,
        Err(StoreError::Unavailable)
    );
    Ok(())
}

/// `account`'s list at `version` naming `devices`, signed.
pub fn device_list(account: &TestAccount, version: u64, devices: &[u32]) -> SignedDeviceList {
    DeviceList {
        account: account.identity.account_id(),
        version,
        devices: devices
            .iter()
            .map(|d| DeviceEntry {
                device: DeviceId(*d),
                name: format!("device {d}"),
                linked_at_ms: now_ms(),
            })
            .collect(),
    }
    .sign(&account.identity)
    .expect("a well-formed list of the signer")
}

/// Alice (two one-time prekeys) and Bob, registered: Alice's phone (device 1) and the
/// address her laptop (device 2) gets once a list names it.
#[derive(Debug)]
pub struct Registered {
    pub alice: TestAccount,
    pub phone: DeviceAddress,
    pub laptop: DeviceAddress,
    pub bob: DeviceAddress,
}

/// Publishes `account`'s device list of `version` naming `devices`.
pub async fn publish_list(
    store: &dyn Store,
    account: &TestAccount,
    version: u64,
    devices: &[u32],
) -> anyhow::Result<PublishOutcome> {
    let list = NewDeviceList {
        list: device_list(account, version, devices),
        now_ms: now_ms(),
    };
    Ok(store.publish_device_list(list).await?)
}

/// Registers Alice and Bob ([`Registered`]).
pub async fn alice_and_bob(store: &dyn Store) -> anyhow::Result<Registered> {
    let alice = TestAccount::new(None, 2);
    let phone = register(store, &alice).await?;
    let bob = register(store, &TestAccount::new(None, 0)).await?;
    let laptop = DeviceAddress {
        account: phone.account,
        device: DeviceId(2),
    };
    Ok(Registered {
        alice,
        phone,
        laptop,
        bob,
    })
}

/// Publishing a device list: only a newer version is stored; a device new on the list can
/// authenticate and upload prekeys; a device dropped from it loses its row, prekeys and
/// queue, and sends to it are refused as to an unknown device.
pub async fn a_device_list_only_moves_forward_and_the_devices_follow_it(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let Registered {
        alice,
        phone,
        laptop,
        bob,
    } = alice_and_bob(store).await?;
    ensure!(
        store.device_list(phone.account).await? == DeviceListLookup::Implicit,
        "an account without a list has the implicit one"
    );
    let publish = |list: SignedDeviceList| NewDeviceList {
        list,
        now_ms: now_ms(),
    };

    // Version 0 is the implicit list's: not newer.
    assert_eq!(
        store
            .publish_device_list(publish(device_list(&alice, 0, &[1, 2])))
            .await?,
        PublishOutcome::Stale { stored_version: 0 }
    );
    ensure!(store.auth_record(laptop).await?.is_none(), "nothing stored");

    let v1 = device_list(&alice, 1, &[1, 2]);
    assert_eq!(
        store.publish_device_list(publish(v1.clone())).await?,
        PublishOutcome::Stored {
            added: vec![DeviceId(2)],
            removed: vec![]
        }
    );
    assert_eq!(
        store.device_list(phone.account).await?,
        DeviceListLookup::Published(v1.clone())
    );
    ensure!(
        store.auth_record(laptop).await?.is_some(),
        "a listed device can authenticate"
    );
    ensure!(
        matches!(store.take_bundle(laptop).await?, BundleOutcome::NotFound),
        "no bundle before the new device uploads its prekeys"
    );
    let uploaded = store
        .upload_prekeys(
            laptop,
            PrekeyUpload {
                signed_prekey: Some(alice.signed_prekey.signed_by(&alice.identity)),
                kem_prekey: None,
                one_time_prekeys: alice.one_time.iter().map(|p| p.one_time()).collect(),
                max_one_time_prekeys: 100,
            },
        )
        .await?;
    assert_eq!(
        uploaded,
        UploadOutcome::Stored {
            one_time_prekeys: 2
        }
    );
    ensure!(
        matches!(
            store.take_bundle(laptop).await?,
            BundleOutcome::Found { .. }
        ),
        "the new device's bundle is served"
    );
    // The day a device logs in is kept, to the day, for its own account's listing.
    store.device_seen(laptop, now_ms()).await?;
    let seen = store.devices_seen(phone.account).await?;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, DeviceId(1));
    let day = seen[1].1.context("the laptop was seen")?;
    ensure!(
        day % 86_400_000 == 0 && now_ms() - day < 86_400_000,
        "{day}"
    );
    seq_of(send(store, bob, laptop, None).await?)?;
    seq_of(send(store, bob, phone, None).await?)?;

    // The same version again, or an older one: refused, nothing changes.
    for stale in [device_list(&alice, 1, &[1]), device_list(&alice, 0, &[1])] {
        assert_eq!(
            store.publish_device_list(publish(stale)).await?,
            PublishOutcome::Stale { stored_version: 1 }
        );
    }
    ensure!(store.auth_record(laptop).await?.is_some());

    // Version 2 drops the phone: its row, prekeys and queue go; the laptop keeps its own.
    assert_eq!(
        store
            .publish_device_list(publish(device_list(&alice, 2, &[2, 3])))
            .await?,
        PublishOutcome::Stored {
            added: vec![DeviceId(3)],
            removed: vec![DeviceId(1)]
        }
    );
    ensure!(
        store.auth_record(phone).await?.is_none(),
        "the removed device cannot log in"
    );
    ensure!(
        store.page(phone, Seq(0), 10).await?.is_empty(),
        "the removed device's queue is gone"
    );
    assert_eq!(
        send(store, bob, phone, None).await?,
        EnqueueOutcome::UnknownRecipient
    );
    assert_eq!(store.page(laptop, Seq(0), 10).await?.len(), 1);

    // Another account's list is the caller's to refuse; the store answers for unknown ones.
    let stranger = TestAccount::new(None, 0);
    assert_eq!(
        store
            .publish_device_list(publish(device_list(&stranger, 1, &[1])))
            .await?,
        PublishOutcome::UnknownAccount
    );
    assert_eq!(
        store.device_list(stranger.identity.account_id()).await?,
        DeviceListLookup::UnknownAccount
    );

    // Deleting the account deletes its list.
    assert!(store.delete_account(phone.account).await?);
    assert_eq!(
        store.device_list(phone.account).await?,
        DeviceListLookup::UnknownAccount
    );
    Ok(())
}

/// A send submitted by a device that a device list then removed is refused on its own
/// (`SenderRemoved`), and the sends submitted around it, which may share its batch, are
/// stored.
pub async fn a_send_from_a_removed_device_is_refused_alone(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, _)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let Registered {
        alice,
        phone,
        laptop,
        bob,
    } = alice_and_bob(store).await?;
    let publish = |version, devices: &[u32]| NewDeviceList {
        list: device_list(&alice, version, devices),
        now_ms: now_ms(),
    };
    ensure!(matches!(
        store.publish_device_list(publish(1, &[1, 2])).await?,
        PublishOutcome::Stored { .. }
    ));
    ensure!(
        seq_of(send(store, laptop, bob, None).await?).is_ok(),
        "the laptop sends while listed"
    );
    let removal = store.submit_enqueue(envelope(phone, bob, message_id(), b"1", None));
    let removal = removal.await?;
    let published = store.publish_device_list(publish(2, &[1]));
    let from_laptop = store.submit_enqueue(envelope(laptop, bob, message_id(), b"2", None));
    let (published, from_laptop) = tokio::join!(published, from_laptop);
    let after = store
        .submit_enqueue(envelope(phone, bob, message_id(), b"3", None))
        .await?;
    assert_eq!(
        published?,
        PublishOutcome::Stored {
            added: vec![],
            removed: vec![DeviceId(2)]
        }
    );
    let from_laptop = from_laptop?.await?;
    ensure!(
        matches!(
            from_laptop,
            EnqueueOutcome::SenderRemoved | EnqueueOutcome::Accepted { .. }
        ),
        "submitted with the removal: refused, or stored before it; got {from_laptop:?}"
    );
    seq_of(removal.await?)?;
    seq_of(after.await?)?;
    assert_eq!(
        send(store, laptop, bob, None).await?,
        EnqueueOutcome::SenderRemoved,
        "after the removal the laptop's sends are refused"
    );
    seq_of(send(store, phone, bob, None).await?)?;
    Ok(())
}

/// A send to every device (ADR 0007): stored on every device it has a copy for, in one
/// transaction, under one retry entry and one policy decision; refused whole, storing
/// nothing, when the lists it was made for are not the current ones.
pub async fn a_send_to_every_device_is_stored_whole_or_refused_as_stale(
    opener: &dyn OpenStore,
) -> anyhow::Result<()> {
    let Some((s, commits)) = open(opener, SendPolicy::default()).await? else {
        return Ok(());
    };
    let store = &*s.store;
    let (alice, bob) = (TestAccount::new(None, 0), TestAccount::new(None, 0));
    let alice_phone = register(store, &alice).await?;
    let bob_phone = register(store, &bob).await?;
    for (account, devices) in [(&alice, [1, 2]), (&bob, [1, 3])] {
        let list = NewDeviceList {
            list: device_list(account, 1, &devices),
            now_ms: now_ms(),
        };
        ensure!(matches!(
            store.publish_device_list(list).await?,
            PublishOutcome::Stored { .. }
        ));
    }
    let device = |of: DeviceAddress, device: u32| DeviceAddress {
        account: of.account,
        device: DeviceId(device),
    };
    let (alice_laptop, bob_tablet) = (device(alice_phone, 2), device(bob_phone, 3));
    // Bob's phone to Alice's phone and laptop, and to Bob's tablet.
    let fan_out = |id, versions: (u64, u64), copies: &[(DeviceAddress, &[u8])]| NewEnvelope {
        fan_out: Some(FanOut {
            to_version: versions.0,
            own_version: versions.1,
            copies: copies
                .iter()
                .map(|(to, ciphertext)| EnvelopeCopy {
                    to: *to,
                    ciphertext: ciphertext.to_vec(),
                })
                .collect(),
        }),
        ..envelope(bob_phone, alice_phone, id, b"for alice's phone", None)
    };
    let all: [(DeviceAddress, &[u8]); 2] = [
        (alice_laptop, b"for alice's laptop"),
        (bob_tablet, b"for bob's tablet"),
    ];
    let queued = |to| async move { store.page(to, Seq(0), 10).await };

    // Made for old or wrong lists: refused, nothing stored anywhere.
    let stale_ones = [
        fan_out(message_id(), (0, 1), &all),
        fan_out(message_id(), (1, 0), &all),
        fan_out(message_id(), (1, 1), &all[1..]),
        fan_out(message_id(), (1, 1), &[all[1], all[1]]),
        fan_out(
            message_id(),
            (1, 1),
            &[all[0], all[1], (device(alice_phone, 9), b"injected")],
        ),
    ];
    for stale in stale_ones {
        assert_eq!(store.enqueue(stale).await?, EnqueueOutcome::StaleDevices);
    }
    for to in [alice_phone, alice_laptop, bob_tablet] {
        ensure!(queued(to).await?.is_empty(), "a stale send stored nothing");
    }

    // Made for the current lists: one copy on each device, the same id everywhere.
    let id = message_id();
    let seq = seq_of(store.enqueue(fan_out(id, (1, 1), &all)).await?)?;
    for (to, body) in [
        (alice_phone, b"for alice's phone".as_slice()),
        (alice_laptop, b"for alice's laptop"),
        (bob_tablet, b"for bob's tablet"),
    ] {
        let page = queued(to).await?;
        ensure!(
            page.len() == 1 && page[0].ciphertext == body && page[0].id == id,
            "{to:?} holds its own copy: {page:?}"
        );
        ensure!(page[0].from == bob_phone);
    }
    assert_eq!(queued(alice_phone).await?[0].seq, seq);
    let heard: Vec<DeviceAddress> = commits
        .seen()
        .into_iter()
        .filter(|(_, _, heard)| *heard == id)
        .map(|(to, _, _)| to)
        .collect();
    assert_eq!(heard, vec![alice_phone, alice_laptop, bob_tablet]);

    // A retry is answered once, storing nothing; the same id with other bytes is refused.
    assert_eq!(
        store.enqueue(fan_out(id, (1, 1), &all)).await?,
        EnqueueOutcome::Duplicate(seq)
    );
    let other_bytes = [all[0], (bob_tablet, b"other bytes".as_slice())];
    assert_eq!(
        store.enqueue(fan_out(id, (1, 1), &other_bytes)).await?,
        EnqueueOutcome::IdReused
    );
    ensure!(
        queued(alice_laptop).await?.len() == 1,
        "nothing stored twice"
    );

    // Alice links a tablet: the lists Bob used are stale now.
    let v2 = NewDeviceList {
        list: device_list(&alice, 2, &[1, 2, 4]),
        now_ms: now_ms(),
    };
    ensure!(matches!(
        store.publish_device_list(v2).await?,
        PublishOutcome::Stored { .. }
    ));
    assert_eq!(
        store.enqueue(fan_out(message_id(), (1, 1), &all)).await?,
        EnqueueOutcome::StaleDevices
    );
    let alice_tablet = device(alice_phone, 4);
    let with_tablet = [
        all[0],
        (alice_tablet, b"for alice's tablet".as_slice()),
        all[1],
    ];
    seq_of(
        store
            .enqueue(fan_out(message_id(), (2, 1), &with_tablet))
            .await?,
    )?;
    assert_eq!(queued(alice_tablet).await?.len(), 1);

    // Copies for the recipient only (a receipt, say): the sender's list is not checked.
    seq_of(
        store
            .enqueue(fan_out(message_id(), (2, 0), &with_tablet[..2]))
            .await?,
    )?;
    assert_eq!(
        queued(bob_tablet).await?.len(),
        2,
        "no copy for Bob's tablet"
    );
    assert_eq!(queued(alice_tablet).await?.len(), 2);

    // Each copy took its device's next seq, and a plain send after them takes a later
    // one: no seq is given twice.
    let tablet_seqs: Vec<u64> = queued(alice_tablet)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    let plain = envelope(bob_phone, alice_tablet, message_id(), b"plain", None);
    let plain_seq = seq_of(store.enqueue(plain).await?)?;
    ensure!(
        tablet_seqs.len() == 2 && tablet_seqs[0] < tablet_seqs[1] && plain_seq.0 > tablet_seqs[1],
        "seqs {tablet_seqs:?} then {plain_seq:?}"
    );

    // The policy decides once for the whole send: a block refuses every copy.
    store
        .set_blocked(alice_phone.account, bob_phone.account, true, now_ms())
        .await?;
    assert_eq!(
        store
            .enqueue(fan_out(message_id(), (2, 1), &with_tablet))
            .await?,
        EnqueueOutcome::Blocked
    );
    assert_eq!(
        queued(bob_tablet).await?.len(),
        2,
        "not even Bob's own copy"
    );

    // A sync: to Bob's own other devices, checked against his list, not policed.
    let sync = |version| NewEnvelope {
        fan_out: Some(FanOut {
            to_version: version,
            own_version: 0,
            copies: Vec::new(),
        }),
        ..envelope(bob_phone, bob_tablet, message_id(), b"sync", None)
    };
    assert_eq!(store.enqueue(sync(0)).await?, EnqueueOutcome::StaleDevices);
    seq_of(store.enqueue(sync(1)).await?)?;
    assert_eq!(queued(bob_tablet).await?.len(), 3);
    Ok(())
}

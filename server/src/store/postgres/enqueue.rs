//! Storing a lane's batch of envelopes in bulk statements: a few round trips and a few
//! statements per batch, whatever its size, instead of a few statements per envelope
//! (PostgreSQL's CPU per statement, not per row, is what a primary spends most on).
//!
//! In one transaction (the lane's), in this order:
//!
//! 1. **lock** the `queue_head` rows of every recipient of the batch, in (account,
//!    device) order, and read their next seqs; then, in the same pipeline and so under
//!    those locks, **read the facts** every send needs, one row per envelope: the
//!    sender's device key, any earlier send of its message id, whether the recipient
//!    blocks the sender, whether either is a business (`policy.rs`);
//! 2. **decide** each envelope in turn with the shared
//!    [`decide`](crate::store::policy::decide). A retry of an id stored earlier (or
//!    earlier in this batch) gets the first answer. An envelope from a business first
//!    reads its standing, consent or care window, reach and rate bucket (one round trip
//!    each, behind the effects of the envelopes decided before it, so it sees them).
//!    An accepted envelope takes its recipient's next seq, counted here: only accepted
//!    envelopes take one, so seqs stay dense (denser than the store contract asks: it
//!    promises only increasing seqs, `store/mod.rs`). A send to every device is first checked
//!    against its accounts' list versions and devices (read in step 1, for batches that
//!    hold one) and, accepted, takes a seq on every device it has a copy for;
//! 3. **write**, in one pipeline: the decisions' effects, the new heads, the queue rows
//!    and the dedup rows, each as one statement over arrays (`unnest`). A person's send
//!    that can be held (`held.rs`) writes only its heads (with `decided_at_ms`, the
//!    database's time read after the locks); the held sends that settled in this batch
//!    (`LaneJob::CommitHeld`) add their queue rows, if still inside their window, and
//!    their dedup rows.
//!
//! Plans. Every lookup of a row by its key is a `LATERAL` subquery with `LIMIT 1` (or
//! `= ANY` of an array), so that it stays an index probe per row whatever the planner
//! believes of the table sizes: a generic plan made while a table was empty would
//! otherwise join by a scan of the whole table (measured: a plan that probed `sent` by
//! sender only, reading a thousand rows per envelope).
//!
//! Seq order is commit order per recipient because the head rows stay locked until the
//! lane commits; one sender's envelopes to one recipient take seqs in the order the
//! lane got them (a batch runs in the order its jobs came).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use futures_util::future::{try_join, try_join4, try_join_all};
use futures_util::TryFutureExt;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Seq};
use tokio::sync::watch;
use tokio_postgres::Statement;

use super::errors::Failure;
use super::held::{
    self, AfterCommit, HeldBytes, HeldCommit, HeldCopy, HeldSend, HeldSends, HoldWindow, Settled,
};
use super::policy::{self, PolicyStatements, SendRules, PEOPLE_FACTS};
use super::pool::JobFuture;
use crate::store::policy::{category_code, decide, Decision, Effects};
use crate::store::retry::{dedup_time, RetryKey};
use crate::store::types::Decided;
use crate::store::values::{to_i64, to_u64};
use crate::store::{
    CommitListener, CurrentDevices, EnqueueOutcome, FanOut, NewEnvelope, StoreError,
};

/// The statements of [`store_envelopes`], prepared once per batch (from each
/// connection's cache).
#[derive(Debug)]
pub(super) struct EnqueueStatements {
    lock_heads: Statement,
    facts: Statement,
    current_devices: Statement,
    put_heads: Statement,
    insert_queue: Statement,
    insert_sent: Statement,
    policy: PolicyStatements,
}

impl EnqueueStatements {
    pub(super) async fn prepare(tx: &Transaction<'_>) -> Result<EnqueueStatements, Failure> {
        Ok(EnqueueStatements {
            // Locks in the order of the arrays (a nested loop over them; the caller
            // sorts them). Each lookup is a lateral index probe, whatever the planner
            // guesses of the table sizes.
            lock_heads: tx
                .prepare_cached(
                    "SELECT r.n, h.recipient, h.next_seq
                     FROM unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS r(account, device, n)
                     JOIN LATERAL (SELECT id FROM devices
                                   WHERE account = r.account AND device = r.device
                                   LIMIT 1) AS d ON true
                     JOIN LATERAL (SELECT recipient, next_seq FROM queue_head
                                   WHERE recipient = d.id FOR UPDATE) AS h ON true",
                )
                .await?,
            facts: tx
                .prepare_cached(&format!(
                    "SELECT d.id, s.digest, s.sealed_seq, {PEOPLE_FACTS}
                     FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[])
                            WITH ORDINALITY AS i(from_account, from_device, message_id,
                                                 to_account, n)
                     LEFT JOIN LATERAL (SELECT id FROM devices
                                        WHERE account = i.from_account
                                          AND device = i.from_device
                                        LIMIT 1) AS d ON true
                     LEFT JOIN LATERAL (SELECT digest, sealed_seq FROM sent
                                        WHERE sender = d.id AND message_id = i.message_id
                                        LIMIT 1) AS s ON true
                     ORDER BY i.n"
                ))
                .await?,
            // For a send to every device: each account's list version and device rows.
            current_devices: tx
                .prepare_cached(
                    "SELECT a.n,
                            COALESCE((SELECT version FROM device_lists
                                      WHERE account = a.account), 0),
                            ARRAY(SELECT device FROM devices
                                  WHERE account = a.account ORDER BY device)
                     FROM unnest($1::bytea[]) WITH ORDINALITY AS a(account, n)
                     ORDER BY a.n",
                )
                .await?,
            put_heads: tx
                .prepare_cached(
                    "UPDATE queue_head
                     SET next_seq = ($2::bigint[])[array_position($1::bigint[], recipient)],
                         decided_at_ms = GREATEST(decided_at_ms,
                             ($3::bigint[])[array_position($1::bigint[], recipient)]),
                         held_until_ms = GREATEST(held_until_ms,
                             ($4::bigint[])[array_position($1::bigint[], recipient)])
                     WHERE recipient = ANY($1::bigint[])",
                )
                .await?,
            insert_queue: tx
                .prepare_cached(
                    "INSERT INTO queue (recipient, seq, sender_account, sender_device,
                                        message_id, accepted_at_ms, ciphertext, category)
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[],
                                          $4::bigint[], $5::bytea[], $6::bigint[],
                                          $7::bytea[], $8::bigint[])",
                )
                .await?,
            insert_sent: tx
                .prepare_cached(
                    // A held send's row may meet a retry's, stored while it was held.
                    "INSERT INTO sent (sender, message_id, sealed_seq, digest, accepted_at_ms)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[],
                                          $4::bytea[], $5::bigint[])
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            policy: PolicyStatements::prepare(tx).await?,
        })
    }
}

/// A recipient of the batch whose head row is locked.
#[derive(Debug)]
struct Head {
    /// `devices.id`.
    key: i64,
    /// Its next seq when the batch read it.
    read: i64,
    /// Its next seq after the envelopes decided so far.
    next: i64,
    /// One of them was held (`queue_head.decided_at_ms` is stamped).
    held: bool,
}

/// The dedup entry of a message id stored earlier in this batch: its key and sealed seq.
#[derive(Clone, Debug)]
struct StoredHere {
    key: RetryKey,
    sealed_seq: i64,
    /// Held: how it ends, for a retry in the same batch.
    held: Option<Settled>,
}

/// The rows of the accepted envelopes, column by column (for `unnest`): a queue row per
/// copy, a `sent` row per envelope.
#[derive(Debug, Default)]
struct Rows<'a> {
    recipient: Vec<i64>,
    seq: Vec<i64>,
    sender_account: Vec<&'a [u8]>,
    sender_device: Vec<i64>,
    message_id: Vec<&'a [u8]>,
    accepted_at_ms: Vec<i64>,
    ciphertext: Vec<&'a [u8]>,
    category: Vec<Option<i64>>,
    sender_key: Vec<i64>,
    sent_id: Vec<&'a [u8]>,
    sealed_seq: Vec<i64>,
    digest: Vec<Vec<u8>>,
    dedup_time: Vec<i64>,
}

impl<'a> Rows<'a> {
    /// A queue row: one copy of `e` for the device whose head key is `recipient`.
    fn queue(
        &mut self,
        e: &'a NewEnvelope,
        recipient: i64,
        seq: i64,
        ciphertext: &'a [u8],
        category: Option<i64>,
    ) {
        self.recipient.push(recipient);
        self.seq.push(seq);
        self.sender_account
            .push(e.from.account.as_bytes().as_slice());
        self.sender_device.push(i64::from(e.from.device.0));
        self.message_id.push(e.id.as_bytes().as_slice());
        self.accepted_at_ms.push(to_i64(e.now_ms));
        self.ciphertext.push(ciphertext);
        self.category.push(category);
    }

    /// The dedup row of a send by the device whose key is `sender_key`.
    fn sent(
        &mut self,
        sender_key: i64,
        id: &'a [u8],
        sealed_seq: i64,
        digest: Vec<u8>,
        dedup_time: i64,
    ) {
        self.sender_key.push(sender_key);
        self.sent_id.push(id);
        self.sealed_seq.push(sealed_seq);
        self.digest.push(digest);
        self.dedup_time.push(dedup_time);
    }
}

/// The devices a send to every device has copies for beyond its own.
fn copy_recipients(fan_out: &FanOut) -> impl Iterator<Item = &DeviceAddress> {
    fan_out.copies.iter().map(|c| &c.to)
}

/// Whether and how this batch may hold envelopes (`held.rs`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Holding<'a> {
    /// The deadline and the commit window; off: nothing is held.
    pub window: HoldWindow,
    /// False once the store is closing: nothing more is held.
    pub may_hold: bool,
    /// Says which recipients a held envelope can be carried to.
    pub listener: &'a dyn CommitListener,
    /// The held sends that have not ended, where a retry finds its first attempt.
    pub held_sends: &'a HeldSends,
    /// The bound on the ciphertext of held sends (`--hold-max-bytes`).
    pub held_bytes: &'a Arc<HeldBytes>,
}

/// What a batch of envelopes and held commits did: per envelope its outcome (and, if
/// it was held, what its settlement needs), per held commit whether it was written (not:
/// its window had passed).
pub(super) type Stored = (Vec<(Decided, AfterCommit)>, Vec<bool>);

/// Stores `envelopes` (or finds the earlier result of their ids), holding those that
/// `hold` allows, and writes the rows of the held sends in `commits`, in the caller's
/// transaction. Nothing is final before the caller commits.
pub(super) async fn store_envelopes<'a>(
    tx: &'a Transaction<'a>,
    st: &'a EnqueueStatements,
    rules: &'a SendRules,
    hold: Holding<'_>,
    envelopes: &[&'a NewEnvelope],
    commits: &[&'a HeldCommit],
) -> Result<Stored, Failure> {
    if envelopes.is_empty() && commits.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // The distinct recipients in (account, device) order, the order their heads are
    // locked in, and each envelope's index among them.
    let mut recipient_index: BTreeMap<(&[u8], i64), usize> = envelopes
        .iter()
        .flat_map(|e| std::iter::once(&e.to).chain(e.fan_out.iter().flat_map(copy_recipients)))
        .chain(
            commits
                .iter()
                .flat_map(|c| c.send.copies.iter().map(|copy| &copy.to)),
        )
        .map(|to| {
            (
                (to.account.as_bytes().as_slice(), i64::from(to.device.0)),
                0,
            )
        })
        .collect();
    let (mut head_accounts, mut head_devices) = (Vec::new(), Vec::new());
    for (index, (to, slot)) in recipient_index.iter_mut().enumerate() {
        head_accounts.push(to.0);
        head_devices.push(to.1);
        *slot = index;
    }
    let head_of = |to: &'a DeviceAddress| {
        let to = (to.account.as_bytes().as_slice(), i64::from(to.device.0));
        recipient_index.get(&to).copied().unwrap_or(usize::MAX)
    };
    let index_of: Vec<usize> = envelopes.iter().map(|e| head_of(&e.to)).collect();
    // The accounts whose devices a send to every device is checked against.
    let fan_out_accounts: Vec<&[u8]> = envelopes
        .iter()
        .filter(|e| e.fan_out.is_some())
        .flat_map(|e| {
            let own = e
                .has_own_copies()
                .then_some(e.from.account.as_bytes().as_slice());
            std::iter::once(e.to.account.as_bytes().as_slice()).chain(own)
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let from_accounts: Vec<&[u8]> = envelopes
        .iter()
        .map(|e| e.from.account.as_bytes().as_slice())
        .collect();
    let from_devices: Vec<i64> = envelopes
        .iter()
        .map(|e| i64::from(e.from.device.0))
        .collect();
    let ids: Vec<&[u8]> = envelopes
        .iter()
        .map(|e| e.id.as_bytes().as_slice())
        .collect();
    let to_accounts: Vec<&[u8]> = envelopes
        .iter()
        .map(|e| e.to.account.as_bytes().as_slice())
        .collect();

    // 1. The locks first, then the facts under them (one pipeline).
    let current_devices = async {
        if fan_out_accounts.is_empty() {
            return Ok(Vec::new());
        }
        tx.query(&st.current_devices, &[&fan_out_accounts]).await
    };
    // The database's time after the locks (the statements run in this order): what
    // held decisions are stamped with and held commits are checked against.
    let database_now = async {
        if !hold.window.is_on() && commits.is_empty() {
            return Ok(0);
        }
        tx.query_one(held::DATABASE_NOW, &[]).await?.try_get(0)
    };
    // No later than the database's time above: how long ago a held decision was made,
    // at least, by this node's clock (`HeldSend::decided_after`).
    let before_database_now = std::time::Instant::now();
    let (head_rows, now_ms, fact_rows, device_rows) = try_join4(
        tx.query(&st.lock_heads, &[&head_accounts, &head_devices]),
        database_now,
        tx.query(
            &st.facts,
            &[&from_accounts, &from_devices, &ids, &to_accounts],
        ),
        current_devices,
    )
    .await?;
    let now_ms: i64 = now_ms;
    let mut devices_of: HashMap<&[u8], CurrentDevices> = HashMap::new();
    for (account, row) in fan_out_accounts.iter().zip(&device_rows) {
        let version: i64 = row.try_get(1)?;
        let devices: Vec<i64> = row.try_get(2)?;
        let devices = devices
            .into_iter()
            .map(|d| u32::try_from(d).map(DeviceId))
            .collect::<Result<_, _>>()
            .map_err(|_| StoreError::Database("devices.device out of range".into()))?;
        devices_of.insert(
            account,
            CurrentDevices {
                version: to_u64(version),
                devices,
            },
        );
    }
    let mut heads: Vec<Option<Head>> = (0..head_accounts.len()).map(|_| None).collect();
    for row in head_rows {
        let n: i64 = row.try_get(0)?;
        let next: i64 = row.try_get(2)?;
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| heads.get_mut(i)) {
            *slot = Some(Head {
                key: row.try_get(1)?,
                read: next,
                next,
                held: false,
            });
        }
    }
    if fact_rows.len() != envelopes.len() {
        return Err(StoreError::Database("the facts of a batch lost a row".into()).into());
    }

    // 2. Decide each envelope in turn.
    let mut outcomes = Vec::with_capacity(envelopes.len());
    let mut rows = Rows::default();
    let mut stored_here: HashMap<(i64, &[u8]), StoredHere> = HashMap::new();
    let mut effects: Vec<JobFuture<'a, ()>> = Vec::new();
    for ((e, fact), index) in envelopes.iter().copied().zip(&fact_rows).zip(index_of) {
        let Some(sender_key) = fact.try_get::<_, Option<i64>>(0)? else {
            // Removed by a device list published after this send was submitted: refused,
            // not an error that would fail the batch it shares with other senders.
            outcomes.push((EnqueueOutcome::SenderRemoved.into(), AfterCommit::Answer));
            continue;
        };
        let id = e.id.as_bytes().as_slice();
        let key = RetryKey::of_envelope(e);
        // An earlier send of the id: in this batch, committed, or held and not ended
        // (then its answer waits for that send's end).
        let earlier = match stored_here.get(&(sender_key, id)) {
            Some(here) => Some((
                here.key.digest().to_vec(),
                here.sealed_seq,
                here.held.clone(),
            )),
            None => match fact
                .try_get::<_, Option<Vec<u8>>>(1)?
                .zip(fact.try_get::<_, Option<i64>>(2)?)
            {
                Some((digest, sealed_seq)) => Some((digest, sealed_seq, None)),
                None => hold
                    .held_sends
                    .get(sender_key, e.id)
                    .map(|h| (h.digest, h.sealed_seq, Some(h.settled))),
            },
        };
        if let Some((digest, sealed_seq, held)) = earlier {
            let outcome = key.answer(&digest, sealed_seq);
            let after = match (held, outcome) {
                (Some(settled), EnqueueOutcome::Duplicate(_)) => AfterCommit::WaitFor(settled),
                _ => AfterCommit::Answer,
            };
            outcomes.push((outcome.into(), after));
            continue;
        }
        if let Some(fan_out) = &e.fan_out {
            let current = |account: &AccountId| {
                devices_of
                    .get(account.as_bytes().as_slice())
                    .cloned()
                    .unwrap_or_default()
            };
            // A listed device whose head is gone was removed by a list committed after
            // this batch read the lists: stale too.
            let heads_held = copy_recipients(fan_out)
                .all(|to| heads.get(head_of(to)).is_some_and(Option::is_some));
            if !heads_held
                || !CurrentDevices::match_fan_out(
                    e,
                    &current(&e.to.account),
                    &current(&e.from.account),
                )
            {
                outcomes.push((EnqueueOutcome::StaleDevices.into(), AfterCommit::Answer));
                continue;
            }
        }
        let (mut facts, from_a_business) = policy::people_facts(fact, 3)?;
        facts.recipient_exists = heads.get(index).is_some_and(Option::is_some);
        facts.receipt = e.receipt;
        let bucket = if from_a_business && !e.is_sync() {
            // Behind the effects decided so far: the reads see them.
            let before = try_join_all(std::mem::take(&mut effects));
            let read = policy::read_business_facts(tx, &st.policy, rules, e, &mut facts);
            Some(try_join(before, read).await?.1)
        } else {
            None
        };
        let decision = match e.is_sync() {
            true => Decision::Accept {
                from_business: false,
                effects: Effects::default(),
            },
            false => decide(&facts, e.category, e.now_ms, &rules.policy),
        };
        let (from_business, decided) = match decision {
            Decision::Refuse(outcome) => {
                outcomes.push((outcome.into(), AfterCommit::Answer));
                continue;
            }
            Decision::Accept {
                from_business,
                effects,
            } => (from_business, effects),
        };
        let Some(head) = heads.get_mut(index).and_then(Option::as_mut) else {
            outcomes.push((EnqueueOutcome::UnknownRecipient.into(), AfterCommit::Answer));
            continue;
        };
        let seq = head.next;
        head.next += 1;
        let head_key = head.key;
        if decided != Effects::default() {
            effects.push(Box::pin(policy::write_effects(
                tx, &st.policy, rules, e, decided, bucket,
            )));
        }
        let sealed_seq = key.seal(Seq(to_u64(seq)));
        let category = e.category.filter(|_| from_business).map(category_code);
        // Held: every copy can be carried to its device's node (a person's send only;
        // a business's effects and purges stay persist-first).
        // Within `--hold-max-bytes`: the reservation lives with the held send (a batch
        // that fails drops it) until its settlement's commit is done.
        let sizes = || {
            std::iter::once((&e.to, e.ciphertext.len())).chain(
                e.fan_out
                    .iter()
                    .flat_map(|f| &f.copies)
                    .map(|c| (&c.to, c.ciphertext.len())),
            )
        };
        let reserved = (hold.window.is_on()
            && hold.may_hold
            && !from_business
            && sizes().all(|(to, size)| hold.listener.can_carry(to, size)))
        .then(|| hold.held_bytes.reserve(sizes().map(|(_, size)| size).sum()))
        .flatten();
        let held = reserved.is_some();
        let mut copies = vec![HeldCopy {
            to: e.to,
            recipient: head_key,
            seq,
            ciphertext: Vec::new(),
        }];
        for copy in e.fan_out.iter().flat_map(|f| &f.copies) {
            let Some(copy_head) = heads.get_mut(head_of(&copy.to)).and_then(Option::as_mut) else {
                return Err(StoreError::Database("a checked head vanished".into()).into());
            };
            copies.push(HeldCopy {
                to: copy.to,
                recipient: copy_head.key,
                seq: copy_head.next,
                ciphertext: Vec::new(),
            });
            copy_head.next += 1;
            copy_head.held |= held;
        }
        if let Some(head) = heads.get_mut(index).and_then(Option::as_mut) {
            head.held |= held;
        }
        let copy_seqs = copies.iter().skip(1).map(|c| Seq(to_u64(c.seq))).collect();
        let decided = Decided {
            outcome: EnqueueOutcome::Accepted {
                seq: Seq(to_u64(seq)),
                from_business,
            },
            copy_seqs,
        };
        let digest = key.digest().to_vec();
        let dedup_time = to_i64(dedup_time(e.now_ms));
        let ended = held.then(|| watch::channel(None));
        stored_here.insert(
            (sender_key, id),
            StoredHere {
                key,
                sealed_seq,
                held: ended.as_ref().map(|(_, settled)| settled.clone()),
            },
        );
        if let Some((ended, _)) = ended {
            // The ciphertexts are the envelope's: the lane fills them in when it settles.
            let send = HeldSend {
                decided_at_ms: now_ms,
                decided_after: before_database_now,
                sender_key,
                sealed_seq,
                digest,
                dedup_time,
                copies,
                _reserved: reserved,
            };
            outcomes.push((decided, AfterCommit::Settle(send, ended)));
            continue;
        }
        let ciphertexts = std::iter::once(&e.ciphertext).chain(
            e.fan_out
                .iter()
                .flat_map(|f| &f.copies)
                .map(|c| &c.ciphertext),
        );
        for (copy, ciphertext) in copies.iter().zip(ciphertexts) {
            rows.queue(e, copy.recipient, copy.seq, ciphertext, category);
        }
        rows.sent(sender_key, id, sealed_seq, digest, dedup_time);
        outcomes.push((decided, AfterCommit::Answer));
    }

    // Held sends settled: the rows of the copies not acked, and the dedup row, while
    // their window lasts (the dedup row alone once every copy was acked).
    let mut committed = Vec::with_capacity(commits.len());
    for commit in commits {
        let send = &commit.send;
        let writes =
            send.copies.is_empty() || held::within_window(hold.window, send.decided_at_ms, now_ms);
        committed.push(writes);
        if !writes {
            continue;
        }
        // A device removed meanwhile has no head any more, or (linked again with the
        // same id) a head of another row: its copy goes with its queue (as a queued
        // envelope would have).
        for copy in &send.copies {
            let head = heads.get(head_of(&copy.to)).and_then(Option::as_ref);
            if head.is_none_or(|head| head.key != copy.recipient) {
                continue;
            }
            rows.queue(
                &commit.envelope,
                copy.recipient,
                copy.seq,
                &copy.ciphertext,
                None,
            );
        }
        rows.sent(
            send.sender_key,
            commit.envelope.id.as_bytes().as_slice(),
            send.sealed_seq,
            send.digest.clone(),
            send.dedup_time,
        );
    }

    // 3. Everything written in one pipeline.
    let (moved_keys, moved): (Vec<i64>, Vec<(i64, i64)>) = heads
        .iter()
        .flatten()
        .filter(|h| h.next != h.read)
        .map(|h| (h.key, (h.next, if h.held { now_ms } else { 0 })))
        .unzip();
    let (moved_next, moved_decided_at): (Vec<i64>, Vec<i64>) = moved.into_iter().unzip();
    let moved_held_until: Vec<i64> = moved_decided_at
        .iter()
        .map(|&decided_at| match decided_at {
            0 => 0,
            at => held::commit_deadline_ms(hold.window, at),
        })
        .collect();
    let put_heads = async {
        if moved_keys.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &st.put_heads,
            &[
                &moved_keys,
                &moved_next,
                &moved_decided_at,
                &moved_held_until,
            ],
        )
        .await
    };
    let insert_queue = async {
        if rows.seq.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &st.insert_queue,
            &[
                &rows.recipient,
                &rows.seq,
                &rows.sender_account,
                &rows.sender_device,
                &rows.message_id,
                &rows.accepted_at_ms,
                &rows.ciphertext,
                &rows.category,
            ],
        )
        .await
    };
    let insert_sent = async {
        if rows.sender_key.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &st.insert_sent,
            &[
                &rows.sender_key,
                &rows.sent_id,
                &rows.sealed_seq,
                &rows.digest,
                &rows.dedup_time,
            ],
        )
        .await
    };
    try_join4(
        try_join_all(std::mem::take(&mut effects)),
        put_heads.err_into::<Failure>(),
        insert_queue.err_into::<Failure>(),
        insert_sent.err_into::<Failure>(),
    )
    .await?;
    Ok((outcomes, committed))
}

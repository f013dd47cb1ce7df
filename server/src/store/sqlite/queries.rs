//! The SQL behind each [`crate::store::Store`] operation. Each function runs on the
//! connection it is given; the caller (writer or reader thread) owns transactions.

use parley_protocol::ids::{
    AccountId, DeviceAddress, DeviceId, Handle, MessageId, PrekeyId, Seq, ServerId,
};
use parley_protocol::prekeys::{OneTimePrekey, SignedKemPrekey, SignedPrekey};
use parley_protocol::signature::Signature;
use rusqlite::{params, Connection, OptionalExtension};

use std::time::Instant;

use super::holds::{DedupRow, HeldCopy, Holds, Settlement};
use super::policy::{self, SendRules};
use super::seqs::SeqBlocks;
use super::{business, devices, sql_error};
use crate::store::bundle::{SignedRow, StoredBundle, KIND_KEM, KIND_SIGNED};
use crate::store::policy::{category_code, category_from_code, Decision};
use crate::store::retry::{dedup_time, RetryKey};
use crate::store::types::Decided;
use crate::store::values::{corrupt, to_day, to_i64, to_u64};
use crate::store::{
    AuthRecord, BundleOutcome, CommitListener, CurrentDevices, EnqueueOutcome, NewAccount,
    NewEnvelope, PrekeyUpload, RegisterOutcome, StoreError, StoredEnvelope, SweepReport,
    UploadOutcome,
};

/// Rows deleted per sweep call, so one sweep never holds the writer for long.
pub(super) const SWEEP_BATCH: i64 = 5_000;

/// Reads the server id, storing `fresh` if the database has none yet.
pub(super) fn server_id(conn: &Connection, fresh: ServerId) -> Result<ServerId, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('server_id', ?1)",
        params![fresh.as_bytes().as_slice()],
    )
    .map_err(sql_error)?;
    let bytes: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'server_id'", [], |r| {
            r.get(0)
        })
        .map_err(sql_error)?;
    ServerId::from_slice(&bytes).ok_or_else(|| corrupt("meta.server_id"))
}

pub(super) fn register(conn: &Connection, a: &NewAccount) -> Result<RegisterOutcome, StoreError> {
    let account = a.identity.account;
    let exists = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE account = ?1")
        .and_then(|mut s| s.exists(params![account.as_bytes().as_slice()]))
        .map_err(sql_error)?;
    if exists {
        return Ok(RegisterOutcome::AccountExists);
    }
    if let Some(handle) = &a.handle {
        let taken = conn
            .prepare_cached("SELECT 1 FROM accounts WHERE handle = ?1")
            .and_then(|mut s| s.exists(params![handle.as_str()]))
            .map_err(sql_error)?;
        if taken {
            return Ok(RegisterOutcome::HandleTaken);
        }
        if business::name_reserved(conn, &account, handle.as_str())? {
            return Ok(RegisterOutcome::NameReserved);
        }
    }
    conn.prepare_cached(
        "INSERT INTO accounts (account, identity_dh, dh_signature, handle, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            account.as_bytes().as_slice(),
            a.identity.dh.as_bytes().as_slice(),
            a.identity.dh_signature.as_bytes().as_slice(),
            a.handle.as_ref().map(Handle::as_str),
            to_i64(to_day(a.now_ms)),
        ])
    })
    .map_err(sql_error)?;
    let address = DeviceAddress {
        account,
        device: DeviceId::PRIMARY,
    };
    let key = devices::insert_device(
        conn,
        account.as_bytes().as_slice(),
        address.device,
        to_i64(to_day(a.now_ms)),
    )?;
    put_signed_prekey(conn, key, &a.signed_prekey)?;
    if let Some(kem) = &a.kem_prekey {
        put_kem_prekey(conn, key, kem)?;
    }
    put_one_time_prekeys(conn, key, &a.one_time_prekeys)?;
    Ok(RegisterOutcome::Created {
        address,
        one_time_prekeys: one_time_count(conn, key)?,
    })
}

pub(super) fn auth_record(
    conn: &Connection,
    device: &DeviceAddress,
) -> Result<Option<AuthRecord>, StoreError> {
    match device_key(conn, device)? {
        None => Ok(None),
        Some(key) => Ok(Some(AuthRecord {
            one_time_prekeys: one_time_count(conn, key)?,
        })),
    }
}

pub(super) fn upload_prekeys(
    conn: &Connection,
    device: &DeviceAddress,
    u: &PrekeyUpload,
) -> Result<UploadOutcome, StoreError> {
    let Some(key) = device_key(conn, device)? else {
        return Ok(UploadOutcome::UnknownDevice);
    };
    conn.execute_batch("SAVEPOINT upload").map_err(sql_error)?;
    let result = (|| {
        if let Some(spk) = &u.signed_prekey {
            put_signed_prekey(conn, key, spk)?;
        }
        if let Some(kem) = &u.kem_prekey {
            put_kem_prekey(conn, key, kem)?;
        }
        put_one_time_prekeys(conn, key, &u.one_time_prekeys)?;
        one_time_count(conn, key)
    })();
    match result {
        Ok(count) if count <= u.max_one_time_prekeys => {
            conn.execute_batch("RELEASE upload").map_err(sql_error)?;
            Ok(UploadOutcome::Stored {
                one_time_prekeys: count,
            })
        }
        other => {
            conn.execute_batch("ROLLBACK TO upload; RELEASE upload")
                .map_err(sql_error)?;
            other.map(|_| UploadOutcome::TooMany)
        }
    }
}

pub(super) fn take_bundle(
    conn: &Connection,
    device: &DeviceAddress,
) -> Result<BundleOutcome, StoreError> {
    let Some(key) = device_key(conn, device)? else {
        return Ok(BundleOutcome::NotFound);
    };
    let identity = conn
        .prepare_cached("SELECT identity_dh, dh_signature FROM accounts WHERE account = ?1")
        .and_then(|mut s| {
            s.query_row(params![device.account.as_bytes().as_slice()], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    let Some((identity_dh, dh_signature)) = identity else {
        return Ok(BundleOutcome::NotFound);
    };
    let Some(signed) = signed_row(conn, key, KIND_SIGNED)? else {
        return Ok(BundleOutcome::NotFound);
    };
    let kem = signed_row(conn, key, KIND_KEM)?;
    let one_time = conn
        .prepare_cached(
            "DELETE FROM one_time_prekeys WHERE device_key = ?1 AND key_id =
               (SELECT key_id FROM one_time_prekeys WHERE device_key = ?1
                ORDER BY key_id LIMIT 1)
             RETURNING key_id, public",
        )
        .and_then(|mut s| {
            s.query_row(params![key], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    StoredBundle {
        identity_dh,
        dh_signature,
        signed,
        kem,
        one_time,
        remaining: one_time_count(conn, key)?,
    }
    .decode(device)
}

pub(super) fn resolve_handle(
    conn: &Connection,
    handle: &Handle,
) -> Result<Option<(AccountId, Option<String>)>, StoreError> {
    let row = conn
        .prepare_cached("SELECT account, display_name FROM accounts WHERE handle = ?1")
        .and_then(|mut s| {
            s.query_row(params![handle.as_str()], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    row.map(|(b, name)| {
        AccountId::from_slice(&b)
            .map(|account| (account, name))
            .ok_or_else(|| corrupt("accounts.account"))
    })
    .transpose()
}

/// What the writer needs to hold a person's envelope for a connected device instead of
/// queueing it (`holds`; `--hold-deadline`).
pub(super) struct HoldHere<'a> {
    /// The process's held envelopes.
    pub holds: &'a Holds,
    /// Knows which devices are connected to this process.
    pub listener: &'a dyn CommitListener,
    /// For the deadline.
    pub now: Instant,
}

/// Decides and stores one envelope. With `hold`, a person's send whose every copy is for
/// a device connected here is held instead of queued: its settlement (the sender's `accepted`
/// waits for it after the commit) comes back beside the decision, as it does for a
/// retry of an envelope still held.
pub(super) fn enqueue(
    conn: &Connection,
    seqs: &mut SeqBlocks,
    e: &NewEnvelope,
    rules: &SendRules,
    hold: Option<&HoldHere<'_>>,
) -> Result<(Decided, Option<Settlement>), StoreError> {
    // One statement (it runs for every envelope): the sender's device key, the dedup
    // entry of an earlier send with the same id, the recipient's device key.
    let found = conn
        .prepare_cached(
            "SELECT d.id, s.digest, s.sealed_seq,
                    (SELECT id FROM devices WHERE account = ?4 AND device = ?5)
             FROM devices AS d
             LEFT JOIN sent AS s ON s.sender = d.id AND s.message_id = ?3
             WHERE d.account = ?1 AND d.device = ?2",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    e.from.account.as_bytes().as_slice(),
                    e.from.device.0,
                    e.id.as_bytes().as_slice(),
                    e.to.account.as_bytes().as_slice(),
                    e.to.device.0,
                ],
                |r| {
                    let digest = r.get::<_, Option<Vec<u8>>>(1)?;
                    let sealed = r.get::<_, Option<i64>>(2)?;
                    Ok((
                        r.get::<_, i64>(0)?,
                        digest.zip(sealed),
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
        })
        .map_err(sql_error)?;
    let Some((sender, earlier, recipient)) = found else {
        // Removed by a device list published after this send was submitted: refused,
        // not an error that would fail the batch it shares with other senders.
        return Ok((EnqueueOutcome::SenderRemoved.into(), None));
    };
    let key = RetryKey::of_envelope(e);
    if let Some((digest, sealed_seq)) = earlier {
        return Ok((key.answer(&digest, sealed_seq).into(), None));
    }
    if let Some(held) = hold.and_then(|h| h.holds.held_retry(sender, e.id)) {
        // A retry of an envelope still held: answered as the original, once it settles.
        let (digest, sealed_seq, settlement) = held;
        let outcome = key.answer(&digest, sealed_seq);
        let settled = settlement.filter(|_| matches!(outcome, EnqueueOutcome::Duplicate(_)));
        return Ok((outcome.into(), settled));
    }
    // For a send to every device: each listed device's row key.
    let mut listed = Vec::new();
    if e.fan_out.is_some() {
        let (to, to_listed) = devices::current(conn, &e.to.account)?;
        let (own, own_listed) = match e.has_own_copies() {
            true => devices::current(conn, &e.from.account)?,
            false => Default::default(),
        };
        if !CurrentDevices::match_fan_out(e, &to, &own) {
            return Ok((EnqueueOutcome::StaleDevices.into(), None));
        }
        listed = to_listed;
        listed.extend(own_listed);
    }
    let from_business = match e.is_sync() {
        true => false,
        false => match policy::check(conn, e, recipient.is_some(), rules)? {
            Decision::Refuse(outcome) => return Ok((outcome.into(), None)),
            Decision::Accept { from_business, .. } => from_business,
        },
    };
    let Some(recipient) = recipient else {
        return Ok((EnqueueOutcome::UnknownRecipient.into(), None));
    };
    let copies = copies(e, recipient, &listed)?;
    if let Some(hold) = hold.filter(|_| !from_business) {
        if held_here(hold, &copies) {
            let mut held = Vec::with_capacity(copies.len());
            for CopyFor {
                to,
                device,
                ciphertext,
            } in copies
            {
                let seq = Seq(to_u64(seqs.take(conn, device)?));
                let envelope = StoredEnvelope {
                    seq,
                    from: e.from,
                    id: e.id,
                    accepted_at_ms: e.now_ms,
                    ciphertext: ciphertext.to_vec(),
                    category: None,
                };
                held.push(HeldCopy { to, envelope });
            }
            let seq = held[0].envelope.seq;
            let copy_seqs = held[1..].iter().map(|c| c.envelope.seq).collect();
            let dedup = DedupRow {
                sender,
                id: e.id,
                sealed_seq: key.seal(seq),
                digest: key.digest().to_vec(),
                at_ms: to_i64(dedup_time(e.now_ms)),
            };
            let settlement = hold.holds.hold(held, dedup, hold.now);
            let decided = Decided {
                outcome: EnqueueOutcome::Accepted { seq, from_business },
                copy_seqs,
            };
            return Ok((decided, Some(settlement)));
        }
    }
    let category = e.category.filter(|_| from_business).map(category_code);
    let mut queue = QueueAppend::prepare(conn, seqs, hold.map(|h| h.holds))?;
    let mut queued = Vec::with_capacity(copies.len());
    for copy in &copies {
        queued.push(queue.push(copy.device, &copy.to, e, copy.ciphertext, category)?);
    }
    let (seq, copy_seqs) = (queued[0], queued[1..].to_vec());
    drop(queue);
    conn.prepare_cached(
        "INSERT INTO sent (sender, message_id, sealed_seq, digest, accepted_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            sender,
            e.id.as_bytes().as_slice(),
            key.seal(seq),
            key.digest().as_slice(),
            to_i64(dedup_time(e.now_ms)),
        ])
    })
    .map_err(sql_error)?;
    let decided = Decided {
        outcome: EnqueueOutcome::Accepted { seq, from_business },
        copy_seqs,
    };
    Ok((decided, None))
}

/// Every copy of `e` with its device's row key, the recipient's first: one for a `send`
/// (`recipient`); for a `send_to_all`, one for every device of the recipient's account
/// and, with own copies, every device of the sender's but the sending one (matched
/// against the lists in `listed` before), each to be queued at its device's next seq.
fn copies<'a>(
    e: &'a NewEnvelope,
    recipient: i64,
    listed: &[devices::Listed],
) -> Result<Vec<CopyFor<'a>>, StoreError> {
    let copy = |to, device, ciphertext: &'a [u8]| CopyFor {
        to,
        device,
        ciphertext,
    };
    let Some(fan_out) = &e.fan_out else {
        return Ok(vec![copy(e.to, recipient, &e.ciphertext)]);
    };
    let row_key = |to: DeviceAddress| {
        listed
            .iter()
            .find(|l| l.address == to)
            .map(|l| l.key)
            .ok_or_else(|| StoreError::Database("a listed device has no row".into()))
    };
    let mut copies = vec![copy(e.to, row_key(e.to)?, &e.ciphertext)];
    for c in &fan_out.copies {
        copies.push(copy(c.to, row_key(c.to)?, &c.ciphertext));
    }
    Ok(copies)
}

/// One copy of an envelope to store: its device, the device's row key, its ciphertext.
struct CopyFor<'a> {
    to: DeviceAddress,
    device: i64,
    ciphertext: &'a [u8],
}

/// Whether a person's send (decided, accepted; business sends write their effects and
/// are never held) is held rather than queued: every copy's device is connected here,
/// within the hold bounds. All or nothing, so that one answer covers the send.
fn held_here(hold: &HoldHere<'_>, copies: &[CopyFor<'_>]) -> bool {
    copies.iter().all(|c| hold.listener.connected_here(&c.to))
        && hold.holds.room(
            &copies
                .iter()
                .map(|c| (c.to, c.ciphertext.len()))
                .collect::<Vec<_>>(),
        )
}

/// Appends copies of an envelope to device queues, each at its device's next seq from
/// the writer's [`SeqBlocks`] (which writes the device row only when it reserves a new
/// block). The insert is prepared once for all the copies of one envelope. While
/// holding is on, each write is noted in `holds`, so acks know the queue holds it.
struct QueueAppend<'a> {
    conn: &'a Connection,
    seqs: &'a mut SeqBlocks,
    holds: Option<&'a Holds>,
    insert: rusqlite::CachedStatement<'a>,
}

impl<'a> QueueAppend<'a> {
    fn prepare(
        conn: &'a Connection,
        seqs: &'a mut SeqBlocks,
        holds: Option<&'a Holds>,
    ) -> Result<QueueAppend<'a>, StoreError> {
        let insert = conn
            .prepare_cached(
                "INSERT INTO queue (recipient, seq, sender_account, sender_device, message_id,
                                    accepted_at_ms, ciphertext, category)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(sql_error)?;
        Ok(QueueAppend {
            conn,
            seqs,
            holds,
            insert,
        })
    }

    /// Appends `ciphertext`, a copy of `e`, to the queue of device `to`, whose row is
    /// `recipient`, at its next seq; returns the seq.
    fn push(
        &mut self,
        recipient: i64,
        to: &DeviceAddress,
        e: &NewEnvelope,
        ciphertext: &[u8],
        category: Option<i64>,
    ) -> Result<Seq, StoreError> {
        let seq = self.seqs.take(self.conn, recipient)?;
        self.insert
            .execute(params![
                recipient,
                seq,
                e.from.account.as_bytes().as_slice(),
                e.from.device.0,
                e.id.as_bytes().as_slice(),
                to_i64(e.now_ms),
                ciphertext,
                category,
            ])
            .map_err(sql_error)?;
        let seq = Seq(to_u64(seq));
        if let Some(holds) = self.holds {
            holds.queued(to, seq);
        }
        Ok(seq)
    }
}

pub(super) fn page(
    conn: &Connection,
    device: &DeviceAddress,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEnvelope>, StoreError> {
    // The limit is part of the SQL text, not a bound parameter: with a parameter, SQLite
    // re-prepared this statement on every run (measured by parley-loadtest). Callers use
    // one page size, so the statement cache holds one entry.
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT seq, sender_account, sender_device, message_id, accepted_at_ms, ciphertext,
                    category
             FROM queue
             WHERE recipient = (SELECT id FROM devices WHERE account = ?1 AND device = ?2)
               AND seq > ?3
             ORDER BY seq LIMIT {limit}"
        ))
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(
            params![
                device.account.as_bytes().as_slice(),
                device.device.0,
                to_i64(after.0),
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, account, sender_device, id, at, ciphertext, category) = row.map_err(sql_error)?;
        out.push(StoredEnvelope {
            seq: Seq(to_u64(seq)),
            from: DeviceAddress {
                account: AccountId::from_slice(&account)
                    .ok_or_else(|| corrupt("queue.sender_account"))?,
                device: DeviceId(sender_device),
            },
            id: MessageId::from_slice(&id).ok_or_else(|| corrupt("queue.message_id"))?,
            accepted_at_ms: to_u64(at),
            ciphertext,
            category: category.and_then(category_from_code),
        });
    }
    Ok(out)
}

/// Deletes `device`'s queue through `through`; with `learn`, also reads the lowest seq
/// left (`None`: nothing is left, or the device is gone). Returns how many rows went.
pub(super) fn ack_through(
    conn: &Connection,
    device: &DeviceAddress,
    through: Seq,
    learn: bool,
) -> Result<(u64, Option<Seq>), StoreError> {
    let Some(key) = device_key(conn, device)? else {
        return Ok((0, None));
    };
    let deleted = conn
        .prepare_cached("DELETE FROM queue WHERE recipient = ?1 AND seq <= ?2")
        .and_then(|mut s| s.execute(params![key, to_i64(through.0)]))
        .map_err(sql_error)?;
    let deleted = u64::try_from(deleted).unwrap_or(u64::MAX);
    if !learn {
        return Ok((deleted, None));
    }
    let lowest = conn
        .prepare_cached("SELECT min(seq) FROM queue WHERE recipient = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get::<_, Option<i64>>(0)))
        .map_err(sql_error)?;
    Ok((deleted, lowest.map(|seq| Seq(to_u64(seq)))))
}

/// Deletes an account and everything keyed by it or its devices, except their retry
/// entries, which expire with the dedup window (`schema`, migration 8).
pub(super) fn delete_account(
    conn: &Connection,
    seqs: &mut SeqBlocks,
    account: &AccountId,
) -> Result<bool, StoreError> {
    let account = account.as_bytes().as_slice();
    let devices = "(SELECT id FROM devices WHERE account = ?1)";
    let keys = conn
        .prepare_cached("SELECT id FROM devices WHERE account = ?1")
        .and_then(|mut s| {
            s.query_map(params![account], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_error)?;
    for key in keys {
        seqs.forget(key);
    }
    for sql in [
        format!("DELETE FROM queue WHERE recipient IN {devices}"),
        format!("DELETE FROM one_time_prekeys WHERE device_key IN {devices}"),
        format!("DELETE FROM signed_prekeys WHERE device_key IN {devices}"),
        "DELETE FROM devices WHERE account = ?1".to_owned(),
        "DELETE FROM consents WHERE user = ?1 OR business = ?1".to_owned(),
        "DELETE FROM care_windows WHERE user = ?1 OR business = ?1".to_owned(),
        "DELETE FROM reach WHERE business = ?1 OR recipient = ?1".to_owned(),
        "DELETE FROM blocks WHERE user = ?1 OR blocked = ?1".to_owned(),
        "DELETE FROM reports WHERE reporter = ?1 OR account = ?1".to_owned(),
        "DELETE FROM consent_log WHERE user = ?1 OR business = ?1".to_owned(),
        "DELETE FROM businesses WHERE account = ?1".to_owned(),
        "DELETE FROM device_lists WHERE account = ?1".to_owned(),
    ] {
        conn.prepare_cached(&sql)
            .and_then(|mut s| s.execute(params![account]))
            .map_err(sql_error)?;
    }
    let deleted = conn
        .prepare_cached("DELETE FROM accounts WHERE account = ?1")
        .and_then(|mut s| s.execute(params![account]))
        .map_err(sql_error)?;
    Ok(deleted > 0)
}

pub(super) fn sweep(
    conn: &Connection,
    queue_cutoff_ms: u64,
    dedup_cutoff_ms: u64,
) -> Result<SweepReport, StoreError> {
    // Both tables are appended in commit order, so their oldest rows have the lowest
    // ids: look only at the first SWEEP_BATCH rows and delete the expired ones among them
    // (no index on time needed). The caller repeats until nothing is deleted.
    let envelopes = conn
        .prepare_cached(
            "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?2)
               AND accepted_at_ms < ?1",
        )
        .and_then(|mut s| s.execute(params![to_i64(queue_cutoff_ms), SWEEP_BATCH]))
        .map_err(sql_error)?;
    let dedup_entries = conn
        .prepare_cached(
            "DELETE FROM sent WHERE id IN (SELECT id FROM sent ORDER BY id LIMIT ?2)
               AND accepted_at_ms < ?1",
        )
        .and_then(|mut s| s.execute(params![to_i64(dedup_cutoff_ms), SWEEP_BATCH]))
        .map_err(sql_error)?;
    Ok(SweepReport {
        envelopes: u64::try_from(envelopes).unwrap_or(0),
        dedup_entries: u64::try_from(dedup_entries).unwrap_or(0),
    })
}

fn device_key(conn: &Connection, device: &DeviceAddress) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT id FROM devices WHERE account = ?1 AND device = ?2")
        .and_then(|mut s| {
            s.query_row(
                params![device.account.as_bytes().as_slice(), device.device.0],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(sql_error)
}

fn one_time_count(conn: &Connection, key: i64) -> Result<u32, StoreError> {
    conn.prepare_cached("SELECT COUNT(*) FROM one_time_prekeys WHERE device_key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get::<_, u32>(0)))
        .map_err(sql_error)
}

fn signed_row(conn: &Connection, key: i64, kind: i64) -> Result<Option<SignedRow>, StoreError> {
    conn.prepare_cached(
        "SELECT key_id, public, signature FROM signed_prekeys
         WHERE device_key = ?1 AND kind = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![key, kind], |r| {
            Ok(SignedRow(r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
    })
    .map_err(sql_error)
}

fn put_signed_prekey(conn: &Connection, key: i64, spk: &SignedPrekey) -> Result<(), StoreError> {
    put_signed_row(
        conn,
        key,
        KIND_SIGNED,
        spk.id,
        spk.public.as_bytes(),
        &spk.signature,
    )
}

fn put_kem_prekey(conn: &Connection, key: i64, kem: &SignedKemPrekey) -> Result<(), StoreError> {
    put_signed_row(conn, key, KIND_KEM, kem.id, &kem.public, &kem.signature)
}

fn put_signed_row(
    conn: &Connection,
    key: i64,
    kind: i64,
    id: PrekeyId,
    public: &[u8],
    signature: &Signature,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO signed_prekeys (device_key, kind, key_id, public, signature)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key,
            kind,
            id.0,
            public,
            signature.as_bytes().as_slice()
        ])
    })
    .map(|_| ())
    .map_err(sql_error)
}

fn put_one_time_prekeys(
    conn: &Connection,
    key: i64,
    prekeys: &[OneTimePrekey],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO one_time_prekeys (device_key, key_id, public)
             VALUES (?1, ?2, ?3)",
        )
        .map_err(sql_error)?;
    for p in prekeys {
        stmt.execute(params![key, p.id.0, p.public.as_bytes().as_slice()])
            .map_err(sql_error)?;
    }
    Ok(())
}

//! The client's durable state: its identity, prekey secrets, sessions, contacts, what it
//! has seen, what it still has to send, and the conversation history ([`history`]).
//!
//! [`ClientStore`] is one SQLite database (a file, or in memory for tests). Every method
//! is synchronous and must be called off the async workers (the engine uses
//! `spawn_blocking`). The two methods that matter for "nothing lost, nothing twice" are
//! atomic: [`ClientStore::commit_send`] stores the advanced session together with the
//! ciphertext to send, and [`ClientStore::commit_receive`] stores the advanced session,
//! the consumed prekey, the seen id and the message together, before the engine acks.

mod business;
mod consent;
mod device_lists;
pub mod file;
pub mod history;
mod names;
mod schema;

pub use business::{CachedBusiness, SendStatus, SentCard};
pub use file::Damaged;
pub use history::{Conversation, Forget, HistoryEntry, MessageState, ReceiptsDue, SentMessage};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Card, ReceiptKind};
use parley_protocol::identity::IdentityPublic;
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId, PrekeyId};
use rusqlite::{params, Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::SdkError;

/// The local account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The account id.
    pub account: AccountId,
    /// Its handle, if registered with one.
    pub handle: Option<Handle>,
    /// This device's id within the account: 1 for the device that registered it, the id
    /// it was given for a linked one (ADR 0007).
    pub device: DeviceId,
}

/// The local identity as stored: its secret seed and profile.
pub struct StoredIdentity {
    /// `IdentityKeyPair::to_secret_bytes`.
    pub secret: Zeroizing<Vec<u8>>,
    /// The profile.
    pub profile: Profile,
    /// Generated and stored, but the server has not confirmed the registration yet.
    pub pending: bool,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("profile", &self.profile)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A peer this client has talked to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Their account.
    pub account: AccountId,
    /// Their handle, if known (resolved by this client, not just claimed).
    pub handle: Option<Handle>,
    /// The identity last seen for them.
    pub identity: IdentityPublic,
    /// Whether the user compared safety numbers and marked it verified.
    pub verified: bool,
}

/// A message waiting for the server's `accepted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its id (retries reuse it).
    pub id: MessageId,
    /// The recipient (for a send to every device, its lowest device).
    pub to: DeviceAddress,
    /// The encrypted payload for `to`.
    pub ciphertext: Vec<u8>,
    /// The category a business sends it in (`None` between people).
    pub category: Option<Category>,
    /// It carries a receipt: the send frame says so, and the relay does not count it as
    /// the person writing to a business (protocol §14).
    pub receipt: bool,
    /// For a send to every device (`send_to_all`): the other copies, and what they were
    /// made from. `None` for a message queued before linked devices, which goes to
    /// device 1 alone.
    pub fan_out: Option<OutboxFanOut>,
}

/// The rest of a send to every device, as the outbox keeps it until it is accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxFanOut {
    /// The version of the recipient's list the copies were made for.
    pub to_version: u64,
    /// The version of this account's list the own copies were made for.
    pub own_version: u64,
    /// The copies for the recipient's other devices, then for this account's other
    /// devices.
    pub copies: Vec<OutboxCopy>,
    /// The encoded content encrypted for the recipient's devices: kept to encrypt it for
    /// a device that appears before the relay accepts the message.
    pub content: Vec<u8>,
    /// The same for this account's other devices (a `sent` copy); `None`: they get none.
    pub own_content: Option<Vec<u8>>,
}

/// One device's copy in an [`OutboxFanOut`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxCopy {
    /// The device.
    pub to: DeviceAddress,
    /// Encrypted for it.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A received message, as stored (in the history, [`history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxEntry {
    /// Position in the local inbox (0 until stored).
    pub n: i64,
    /// The sender.
    pub from: DeviceAddress,
    /// Its id.
    pub id: MessageId,
    /// Server acceptance time, ms since the epoch.
    pub sent_at_ms: u64,
    /// The text (a card's title for a card).
    pub text: String,
    /// The category a business sent it in, if any.
    pub category: Option<Category>,
    /// The card, when the message is one.
    pub card: Option<Card>,
}

/// Prekey secrets of the local device, as stored bytes.
#[derive(Default)]
pub struct PrekeyRecords {
    /// Signed X25519 prekeys: (id, secret).
    pub signed: Vec<(PrekeyId, Zeroizing<[u8; 32]>)>,
    /// KEM prekeys: (id, secret bytes).
    pub kem: Vec<(PrekeyId, Zeroizing<Vec<u8>>)>,
    /// One-time prekeys: (id, secret).
    pub one_time: Vec<(PrekeyId, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for PrekeyRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrekeyRecords")
            .field("signed", &self.signed.len())
            .field("kem", &self.kem.len())
            .field("one_time", &self.one_time.len())
            .finish()
    }
}

/// Everything a received message changes, stored in one transaction.
#[derive(Debug)]
pub struct ReceiveCommit<'a> {
    /// The sender.
    pub from: DeviceAddress,
    /// The message id.
    pub id: MessageId,
    /// The advanced (or new) session record, if the message decrypted.
    pub session: Option<&'a [u8]>,
    /// Whether `session` replaces the current session, which is then kept as the
    /// previous one (a session the peer started, or the previous one promoted back).
    pub replaces_current: bool,
    /// The handshake guard, if a session was accepted.
    pub guard: Option<&'a [u8]>,
    /// The one-time prekey the setup consumed.
    pub used_one_time_prekey: Option<PrekeyId>,
    /// The message to keep, if it was a text or a card.
    pub inbox: Option<InboxEntry>,
    /// A text or card this account sent from another device: kept in the history as
    /// sent to that address.
    pub sent_elsewhere: Option<(DeviceAddress, SentMessage)>,
    /// Owe the sender a delivered receipt for the kept message.
    pub owe_delivered_receipt: bool,
    /// The contact to record or update.
    pub contact: Option<Contact>,
}

/// The client database.
#[derive(Debug)]
pub struct ClientStore {
    conn: Mutex<Connection>,
    /// Held for the store's lifetime: one process per profile (see [`ClientStore::open`]).
    _lock: Option<std::fs::File>,
    /// Opened with [`ClientStore::open_read_only`]: no engine may run on it.
    read_only: bool,
}

impl ClientStore {
    /// Opens the profile database at `path`, creating a new profile if there is no file.
    ///
    /// The profile is locked for this process: two engines on one profile would displace
    /// each other's connection and race on the same sessions, so a second opener gets
    /// [`SdkError::ProfileInUse`]. Its files, and the directory holding them (give each
    /// profile a directory of its own), are made private to the user, and a damaged
    /// database is refused with [`SdkError::DamagedProfile`] rather than replaced by a
    /// new identity (see [`file`]).
    pub fn open(path: &Path) -> Result<ClientStore, SdkError> {
        ClientStore::open_with(path, Damaged::Refuse)
    }

    /// [`ClientStore::open`], saying what to do with a damaged database:
    /// [`Damaged::SetAside`] moves it aside and starts a new profile.
    pub fn open_with(path: &Path, damaged: Damaged) -> Result<ClientStore, SdkError> {
        let lock = file::lock(path)?;
        let conn = file::open(path, damaged)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        let mut store = ClientStore::with_connection(conn)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens the profile database at `path` for reading only, without its lock: for a
    /// command that only reads the local store (contacts, a safety number) while
    /// another process holds the profile (a running `parley chat`). SQLite in WAL mode
    /// lets readers see the last committed state while that process writes, and a
    /// read-only connection cannot write: nothing here can race the holder's sessions
    /// or connection. [`crate::Client::start`] and [`crate::Client::register`] refuse
    /// such a store ([`SdkError::ProfileInUse`]). The schema must be this version's
    /// (no migration is possible read-only).
    pub fn open_read_only(path: &Path) -> Result<ClientStore, SdkError> {
        let conn = file::open_read_only(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        schema::check_current(&conn)?;
        Ok(ClientStore {
            conn: Mutex::new(conn),
            _lock: None,
            read_only: true,
        })
    }

    /// Whether the store was opened with [`ClientStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<ClientStore, SdkError> {
        ClientStore::with_connection(Connection::open_in_memory().map_err(db)?)
    }

    fn with_connection(mut conn: Connection) -> Result<ClientStore, SdkError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        schema::migrate(&mut conn)?;
        Ok(ClientStore {
            conn: Mutex::new(conn),
            _lock: None,
            read_only: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SdkError> {
        self.lock()
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)
    }

    /// The local identity secret and profile, if registered.
    pub fn identity(&self) -> Result<Option<StoredIdentity>, SdkError> {
        let Some(secret) = self.get("identity")? else {
            return Ok(None);
        };
        let account = self
            .get("account")?
            .and_then(|b| AccountId::from_slice(&b))
            .ok_or_else(|| SdkError::Storage("profile without account".into()))?;
        let handle = match self.get("handle")? {
            Some(h) => Some(
                Handle::parse(&String::from_utf8_lossy(&h))
                    .map_err(|e| SdkError::Storage(e.to_string()))?,
            ),
            None => None,
        };
        let device = self
            .get("device")?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(|b| DeviceId(u32::from_be_bytes(b)))
            .ok_or_else(|| SdkError::Storage("profile without device id".into()))?;
        Ok(Some(StoredIdentity {
            secret: Zeroizing::new(secret),
            profile: Profile {
                account,
                handle,
                device,
            },
            pending: self.get("pending")?.is_some(),
        }))
    }

    /// Stores a new identity with its first prekeys, before registering it, marked
    /// pending (see [`ClientStore::registered`]); replaces any earlier profile and forgets
    /// its sessions. Storing first means a lost registration reply never orphans an
    /// account whose key nobody has.
    pub fn save_identity(
        &self,
        secret: &[u8],
        profile: &Profile,
        prekeys: &PrekeyRecords,
    ) -> Result<(), SdkError> {
        self.put_identity(secret, profile, prekeys, true)
    }

    /// Stores the identity of an account this device was linked to (ADR 0007), its
    /// device id and its first prekeys, all at once and confirmed: the server already
    /// has the device and its prekeys. Replaces any earlier profile.
    pub fn save_linked(
        &self,
        secret: &[u8],
        profile: &Profile,
        prekeys: &PrekeyRecords,
    ) -> Result<(), SdkError> {
        self.put_identity(secret, profile, prekeys, false)
    }

    fn put_identity(
        &self,
        secret: &[u8],
        profile: &Profile,
        prekeys: &PrekeyRecords,
        pending: bool,
    ) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        clear_identity(&tx)?;
        let put = "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)";
        if pending {
            tx.execute(put, params!["pending", [1u8].as_slice()])
                .map_err(db)?;
        }
        tx.execute(put, params!["identity", secret]).map_err(db)?;
        tx.execute(
            put,
            params!["account", profile.account.as_bytes().as_slice()],
        )
        .map_err(db)?;
        tx.execute(
            put,
            params!["device", profile.device.0.to_be_bytes().as_slice()],
        )
        .map_err(db)?;
        if let Some(h) = &profile.handle {
            tx.execute(put, params!["handle", h.as_str().as_bytes()])
                .map_err(db)?;
        }
        insert_prekeys(&tx, prekeys)?;
        tx.commit().map_err(db)
    }

    /// The server confirmed the registration, with `handle`.
    pub fn registered(&self, handle: Option<&Handle>) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        tx.execute("DELETE FROM kv WHERE key IN ('pending', 'handle')", [])
            .map_err(db)?;
        if let Some(h) = handle {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES ('handle', ?1)",
                params![h.as_str().as_bytes()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Forgets the local identity, its prekeys and sessions (after the account was deleted).
    pub fn forget_identity(&self) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        clear_identity(&tx)?;
        tx.commit().map_err(db)
    }

    /// Adds prekey secrets (after uploading their public halves).
    pub fn add_prekeys(&self, prekeys: &PrekeyRecords) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        insert_prekeys(&tx, prekeys)?;
        tx.commit().map_err(db)
    }

    /// All prekey secrets.
    pub fn prekeys(&self) -> Result<PrekeyRecords, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT kind, id, secret FROM prekeys ORDER BY kind, id")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out = PrekeyRecords::default();
        for row in rows {
            let (kind, id, secret) = row.map_err(db)?;
            let secret = Zeroizing::new(secret);
            match kind {
                KIND_KEM => out.kem.push((PrekeyId(id), secret)),
                _ => {
                    let mut bytes = Zeroizing::new([0u8; 32]);
                    if secret.len() != 32 {
                        return Err(SdkError::Storage("corrupt prekey".into()));
                    }
                    bytes.copy_from_slice(&secret);
                    if kind == KIND_SIGNED {
                        out.signed.push((PrekeyId(id), bytes));
                    } else {
                        out.one_time.push((PrekeyId(id), bytes));
                    }
                }
            }
        }
        Ok(out)
    }
    /// The highest prekey id ever stored (ids are never reused, even after the prekey
    /// was consumed and deleted).
    pub fn max_prekey_id(&self) -> Result<u32, SdkError> {
        let high = self
            .get("prekey_id_high")?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        let stored: u32 = self
            .lock()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM prekeys", [], |r| r.get(0))
            .map_err(db)?;
        Ok(high.max(stored))
    }

    /// The stored session with `peer`.
    pub fn session(&self, peer: &DeviceAddress) -> Result<Option<Zeroizing<Vec<u8>>>, SdkError> {
        self.lock()
            .query_row(
                "SELECT record FROM sessions WHERE account = ?1 AND device = ?2",
                params![peer.account.as_bytes().as_slice(), peer.device.0],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|r| r.map(Zeroizing::new))
            .map_err(db)
    }

    /// The session with `peer` that the current one replaced, if any.
    pub fn previous_session(
        &self,
        peer: &DeviceAddress,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SdkError> {
        self.lock()
            .query_row(
                "SELECT previous FROM sessions WHERE account = ?1 AND device = ?2",
                params![peer.account.as_bytes().as_slice(), peer.device.0],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .map(|r| r.flatten().map(Zeroizing::new))
            .map_err(db)
    }

    /// The handshake guard.
    pub fn guard(&self) -> Result<Option<Vec<u8>>, SdkError> {
        self.get("guard")
    }

    /// Stores the advanced session and the ciphertext to send, together, and the message
    /// in the history when it is one a person sees (`shown`: a text or a card).
    pub fn commit_send(
        &self,
        sessions: &[(DeviceAddress, Zeroizing<Vec<u8>>)],
        entry: &OutboxEntry,
        shown: Option<&SentMessage>,
    ) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        for (peer, session) in sessions {
            put_session(&tx, peer, session, false)?;
        }
        tx.execute(
            "INSERT INTO outbox (message_id, account, device, ciphertext, category, receipt,
                                 fan_out)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                entry.id.as_bytes().as_slice(),
                entry.to.account.as_bytes().as_slice(),
                entry.to.device.0,
                entry.ciphertext,
                entry.category.map(Category::as_str),
                entry.receipt,
                encode_fan_out(entry.fan_out.as_ref())?
            ],
        )
        .map_err(db)?;
        if let Some(message) = shown {
            history::insert_sent(&tx, &entry.to, &entry.id, message)?;
        }
        tx.commit().map_err(db)
    }

    /// Replaces the copies of a queued message (made again for newer device lists), with
    /// the sessions that made them, together.
    pub fn reseal_outbox(
        &self,
        sessions: &[(DeviceAddress, Zeroizing<Vec<u8>>)],
        entry: &OutboxEntry,
    ) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        for (peer, session) in sessions {
            put_session(&tx, peer, session, false)?;
        }
        tx.execute(
            "UPDATE outbox SET device = ?2, ciphertext = ?3, fan_out = ?4 WHERE message_id = ?1",
            params![
                entry.id.as_bytes().as_slice(),
                entry.to.device.0,
                entry.ciphertext,
                encode_fan_out(entry.fan_out.as_ref())?
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Messages not yet accepted by the server, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT message_id, account, device, ciphertext, category, receipt, fan_out
                 FROM outbox ORDER BY n",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, account, device, ciphertext, category, receipt, fan_out) = row.map_err(db)?;
            out.push(OutboxEntry {
                id: MessageId::from_slice(&id).ok_or_else(|| corrupt("outbox"))?,
                to: DeviceAddress {
                    account: AccountId::from_slice(&account).ok_or_else(|| corrupt("outbox"))?,
                    device: DeviceId(device),
                },
                ciphertext,
                category: parse_category(category)?,
                receipt,
                fan_out: fan_out
                    .map(|bytes| rmp_serde::from_slice(&bytes).map_err(|_| corrupt("outbox")))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    /// The server accepted `id`.
    pub fn sent(&self, id: &MessageId) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "DELETE FROM outbox WHERE message_id = ?1",
                params![id.as_bytes().as_slice()],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// Whether `(from, id)` was already processed.
    pub fn seen(&self, from: &DeviceAddress, id: &MessageId) -> Result<bool, SdkError> {
        self.lock()
            .query_row(
                "SELECT 1 FROM seen WHERE account = ?1 AND device = ?2 AND message_id = ?3",
                params![
                    from.account.as_bytes().as_slice(),
                    from.device.0,
                    id.as_bytes().as_slice()
                ],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db)
    }
    /// Stores everything a received message changed, atomically. Returns `false` (and
    /// stores nothing) if `(from, id)` was already processed.
    pub fn commit_receive(&self, commit: &ReceiveCommit<'_>) -> Result<bool, SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let new = tx
            .execute(
                "INSERT OR IGNORE INTO seen (account, device, message_id) VALUES (?1, ?2, ?3)",
                params![
                    commit.from.account.as_bytes().as_slice(),
                    commit.from.device.0,
                    commit.id.as_bytes().as_slice()
                ],
            )
            .map_err(db)?;
        if new == 0 {
            return Ok(false);
        }
        if let Some(session) = commit.session {
            put_session(&tx, &commit.from, session, commit.replaces_current)?;
        }
        if let Some(guard) = commit.guard {
            tx.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('guard', ?1)",
                params![guard],
            )
            .map_err(db)?;
        }
        if let Some(id) = commit.used_one_time_prekey {
            tx.execute(
                "DELETE FROM prekeys WHERE kind = ?1 AND id = ?2",
                params![KIND_ONE_TIME, id.0],
            )
            .map_err(db)?;
        }
        if let Some((to, message)) = &commit.sent_elsewhere {
            history::insert_sent(&tx, to, &commit.id, message)?;
        }
        if let Some(m) = &commit.inbox {
            tx.execute(
                "INSERT OR IGNORE INTO messages
                 (account, device, outgoing, message_id, at_ms, text, category, card)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7)",
                params![
                    m.from.account.as_bytes().as_slice(),
                    m.from.device.0,
                    m.id.as_bytes().as_slice(),
                    i64::try_from(m.sent_at_ms).unwrap_or(i64::MAX),
                    m.text,
                    m.category.map(Category::as_str),
                    m.card.as_ref().map(encode_card).transpose()?
                ],
            )
            .map_err(db)?;
            if commit.owe_delivered_receipt {
                history::owe_receipt(&tx, &m.from, ReceiptKind::Delivered, &m.id)?;
            }
        }
        if let Some(contact) = &commit.contact {
            put_contact(&tx, contact)?;
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }

    /// Every stored message received, oldest first.
    pub fn inbox(&self) -> Result<Vec<InboxEntry>, SdkError> {
        self.inbox_where("1")
    }

    /// Stored messages not yet shown to the user, oldest first.
    pub fn unshown(&self) -> Result<Vec<InboxEntry>, SdkError> {
        self.inbox_where("shown = 0")
    }

    /// Marks every message up to `n` as shown.
    pub fn mark_shown(&self, n: i64) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "UPDATE messages SET shown = 1 WHERE n <= ?1 AND outgoing = 0",
                params![n],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// The action the card stored as inbox entry `n` was answered with, if it was.
    pub fn card_answer(&self, n: i64) -> Result<Option<String>, SdkError> {
        self.lock()
            .query_row(
                "SELECT answer FROM messages WHERE n = ?1",
                params![n],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(db)
    }

    /// Records that the card stored as inbox entry `n` was answered with `action`.
    pub fn set_card_answer(&self, n: i64, action: &str) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "UPDATE messages SET answer = ?2 WHERE n = ?1",
                params![n, action],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// The stored message with this id (from anyone), if any.
    pub fn inbox_message(&self, id: &MessageId) -> Result<Option<InboxEntry>, SdkError> {
        let hex = id.to_hex();
        Ok(self
            .inbox_where(&format!("hex(message_id) = upper('{hex}')"))?
            .into_iter()
            .next())
    }

    fn inbox_where(&self, condition: &str) -> Result<Vec<InboxEntry>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT n, account, device, message_id, at_ms, text, category, card FROM messages
                 WHERE outgoing = 0 AND {condition} ORDER BY n"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (n, account, device, id, at, text, category, card) = row.map_err(db)?;
            out.push(InboxEntry {
                n,
                from: DeviceAddress {
                    account: AccountId::from_slice(&account).ok_or_else(|| corrupt("inbox"))?,
                    device: DeviceId(device),
                },
                id: MessageId::from_slice(&id).ok_or_else(|| corrupt("inbox"))?,
                sent_at_ms: u64::try_from(at).unwrap_or(0),
                text,
                category: parse_category(category)?,
                card: card.as_deref().map(decode_card).transpose()?,
            });
        }
        Ok(out)
    }

    /// A contact by account.
    pub fn contact(&self, account: &AccountId) -> Result<Option<Contact>, SdkError> {
        Ok(self.contacts()?.into_iter().find(|c| &c.account == account))
    }

    /// A contact by handle.
    pub fn contact_by_handle(&self, handle: &Handle) -> Result<Option<Contact>, SdkError> {
        Ok(self
            .contacts()?
            .into_iter()
            .find(|c| c.handle.as_ref() == Some(handle)))
    }

    /// Records or updates a contact. A handle held by another contact moves to this one,
    /// unless that contact is verified: it keeps the handle (and this one is recorded
    /// without it) until the person takes the mark off.
    pub fn save_contact(&self, contact: &Contact) -> Result<(), SdkError> {
        let conn = self.lock();
        put_contact(&conn, contact)
    }

    /// Forgets the session with `peer` (after their identity changed).
    pub fn forget_session(&self, peer: &DeviceAddress) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "DELETE FROM sessions WHERE account = ?1 AND device = ?2",
                params![peer.account.as_bytes().as_slice(), peer.device.0],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// Every contact, by handle then account.
    pub fn contacts(&self) -> Result<Vec<Contact>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT account, handle, identity, verified FROM contacts ORDER BY handle, account",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (account, handle, identity, verified) = row.map_err(db)?;
            out.push(Contact {
                account: AccountId::from_slice(&account).ok_or_else(|| corrupt("contacts"))?,
                handle: handle.and_then(|h| Handle::parse(&h).ok()),
                identity: rmp_serde::from_slice(&identity).map_err(|_| corrupt("contacts"))?,
                verified,
            });
        }
        Ok(out)
    }
}

const KIND_SIGNED: i64 = 0;
const KIND_KEM: i64 = 1;
const KIND_ONE_TIME: i64 = 2;

/// Deletes the identity and everything tied to it; contacts and the history stay.
fn clear_identity(conn: &Connection) -> Result<(), SdkError> {
    for table in [
        "kv",
        "prekeys",
        "sessions",
        "seen",
        "outbox",
        "last_sent",
        "cards_sent",
        "sent_status",
        "businesses",
        "receipts_due",
    ] {
        conn.execute(&format!("DELETE FROM {table}"), [])
            .map_err(db)?;
    }
    Ok(())
}

fn insert_prekeys(conn: &Connection, prekeys: &PrekeyRecords) -> Result<(), SdkError> {
    let high = prekeys
        .signed
        .iter()
        .chain(prekeys.one_time.iter())
        .map(|(id, _)| id.0)
        .chain(prekeys.kem.iter().map(|(id, _)| id.0))
        .max()
        .unwrap_or(0);
    conn.execute(
        "INSERT INTO kv (key, value) VALUES ('prekey_id_high', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE excluded.value > kv.value",
        params![high.to_be_bytes().as_slice()],
    )
    .map_err(db)?;
    let sql = "INSERT OR REPLACE INTO prekeys (kind, id, secret) VALUES (?1, ?2, ?3)";
    for (id, secret) in &prekeys.signed {
        conn.execute(sql, params![KIND_SIGNED, id.0, secret.as_slice()])
            .map_err(db)?;
    }
    for (id, secret) in &prekeys.kem {
        conn.execute(sql, params![KIND_KEM, id.0, secret.as_slice()])
            .map_err(db)?;
    }
    for (id, secret) in &prekeys.one_time {
        conn.execute(sql, params![KIND_ONE_TIME, id.0, secret.as_slice()])
            .map_err(db)?;
    }
    Ok(())
}

/// Stores `record` as the session with `peer`; with `replaces_current`, the session it
/// replaces is kept as the previous one.
/// The stored form of an outbox entry's fan-out.
fn encode_fan_out(fan_out: Option<&OutboxFanOut>) -> Result<Option<Vec<u8>>, SdkError> {
    fan_out
        .map(|f| rmp_serde::to_vec_named(f).map_err(|e| SdkError::Storage(e.to_string())))
        .transpose()
}

fn put_session(
    conn: &Connection,
    peer: &DeviceAddress,
    record: &[u8],
    replaces_current: bool,
) -> Result<(), SdkError> {
    conn.execute(
        "INSERT INTO sessions (account, device, record) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, device) DO UPDATE SET
           previous = CASE WHEN ?4 THEN sessions.record ELSE sessions.previous END,
           record = excluded.record",
        params![
            peer.account.as_bytes().as_slice(),
            peer.device.0,
            record,
            replaces_current
        ],
    )
    .map(|_| ())
    .map_err(db)
}

fn put_contact(conn: &Connection, contact: &Contact) -> Result<(), SdkError> {
    let identity =
        rmp_serde::to_vec_named(&contact.identity).map_err(|e| SdkError::Storage(e.to_string()))?;
    let mut handle = contact.handle.as_ref();
    if let Some(h) = handle {
        let account = contact.account.as_bytes().as_slice();
        let held_by_verified: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM contacts
                                WHERE handle = ?1 AND account != ?2 AND verified)",
                params![h.as_str(), account],
                |r| r.get(0),
            )
            .map_err(db)?;
        if held_by_verified {
            // A verified contact keeps its handle until the person takes the mark off
            // (`unverify`), whichever side spoke first after the change: the account
            // the handle now names is recorded without it, so a send to the handle is
            // still refused (`IdentityChanged`) rather than going to the new account.
            handle = None;
        } else {
            // A handle names one account: an older contact with it lost it.
            conn.execute(
                "UPDATE contacts SET handle = NULL WHERE handle = ?1 AND account != ?2",
                params![h.as_str(), account],
            )
            .map_err(db)?;
        }
    }
    conn.execute(
        "INSERT OR REPLACE INTO contacts (account, handle, identity, verified) VALUES (?1, ?2, ?3, ?4)",
        params![
            contact.account.as_bytes().as_slice(),
            handle.map(Handle::as_str),
            identity,
            contact.verified
        ],
    )
    .map(|_| ())
    .map_err(db)
}

fn db(e: rusqlite::Error) -> SdkError {
    SdkError::Storage(e.to_string())
}

fn corrupt(table: &str) -> SdkError {
    SdkError::Storage(format!("corrupt row in {table}"))
}

fn parse_category(name: Option<String>) -> Result<Option<Category>, SdkError> {
    name.map(|n| Category::parse(&n).ok_or_else(|| corrupt("category")))
        .transpose()
}

fn encode_card(card: &Card) -> Result<Vec<u8>, SdkError> {
    rmp_serde::to_vec_named(card).map_err(|e| SdkError::Storage(e.to_string()))
}

fn decode_card(bytes: &[u8]) -> Result<Card, SdkError> {
    rmp_serde::from_slice(bytes).map_err(|_| corrupt("card"))
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::identity::IdentityKeyPair;

    fn contact(handle: &str, verified: bool) -> Contact {
        let identity = IdentityKeyPair::generate(&mut rand_core::OsRng);
        Contact {
            account: identity.account_id(),
            handle: Some(Handle::parse(handle).unwrap()),
            identity: identity.public(),
            verified,
        }
    }

    #[test]
    fn a_verified_contact_keeps_its_handle_until_the_mark_is_taken_off() {
        let store = ClientStore::in_memory().unwrap();
        let bob = Handle::parse("bob").unwrap();
        let mut old = contact("bob", true);
        let new = contact("bob", false);
        store.save_contact(&old).unwrap();
        store.save_contact(&new).unwrap();
        assert_eq!(store.contact_by_handle(&bob).unwrap(), Some(old.clone()));
        assert_eq!(store.contact(&new.account).unwrap().unwrap().handle, None);

        old.verified = false;
        store.save_contact(&old).unwrap();
        store.save_contact(&new).unwrap();
        assert_eq!(store.contact_by_handle(&bob).unwrap(), Some(new));
        assert_eq!(store.contact(&old.account).unwrap().unwrap().handle, None);
    }
}

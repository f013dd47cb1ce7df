//! The conversation history: every text and card this client sent or received, per
//! peer account, with its time and state, and the receipts it owes its peers.
//!
//! One table, `messages`, holds both directions (a received message is also what
//! [`ClientStore::unshown`] and the card commands read: there is no second copy). The
//! state of a message of mine is not stored here: it is derived from the outbox (not yet
//! accepted) and from `sent_status`, which [`ClientStore::advance_status`] moves forward
//! only, for people and bots alike. A received message is unread until the person views
//! the conversation ([`ClientStore::mark_read`]).
//!
//! Receipts owed are durable rows: a delivered receipt is owed from the transaction that
//! stores the message ([`ClientStore::commit_receive`]), a read receipt from
//! [`ClientStore::mark_read`] (unless the person turned read receipts off). The engine
//! sends them in batches of at most [`MAX_RECEIPT_MESSAGES`] ids and forgets them once
//! the receipt is in the outbox. Receipts, card answers and consent records are not
//! history: they are never shown as messages and never owed a receipt themselves.
//!
//! What this module does not know: handles beyond the contacts table, the network,
//! how entries are rendered.

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Card, ReceiptKind, MAX_RECEIPT_MESSAGES};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, Handle, MessageId};
use rusqlite::{params, Connection, Row};

use super::{corrupt, db, decode_card, encode_card, ms, parse_category, ClientStore, SendStatus};
use crate::error::SdkError;

/// The state of a message, as a conversation view shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Received; the person has not viewed the conversation since.
    Unread,
    /// Received and viewed.
    Seen,
    /// Mine, encrypted and waiting in the outbox for the relay's `accepted`.
    Queued,
    /// Mine, refused by the relay for good (blocked, unknown recipient...): not sent.
    NotSent,
    /// Mine, and this far along (sent, delivered, read; forward only).
    Sent(SendStatus),
}

impl MessageState {
    /// Whether the message is mine.
    pub fn is_mine(self) -> bool {
        !matches!(self, MessageState::Unread | MessageState::Seen)
    }

    /// One word for it: `unread`, `seen`, `queued`, `not sent`, `sent`, `delivered`,
    /// `read`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Unread => "unread",
            MessageState::Seen => "seen",
            MessageState::Queued => "queued",
            MessageState::NotSent => "not sent",
            MessageState::Sent(SendStatus::Accepted) => "sent",
            MessageState::Sent(SendStatus::Delivered) => "delivered",
            MessageState::Sent(SendStatus::Read) => "read",
        }
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Position in the local history: later entries were stored later.
    pub n: i64,
    /// The other side of the conversation (the sender, or the recipient of mine).
    pub peer: DeviceAddress,
    /// The message id.
    pub id: MessageId,
    /// Received: the relay's acceptance time; mine: when this client encrypted it
    /// (ms since the epoch).
    pub at_ms: u64,
    /// Its state (whether it is mine is part of it).
    pub state: MessageState,
    /// The text (a card's title for a card).
    pub text: String,
    /// The category a business sent it in, if any.
    pub category: Option<Category>,
    /// The card, when the message is one.
    pub card: Option<Card>,
    /// The action a received card was answered with, if it was.
    pub answer: Option<String>,
}

/// A message of mine to keep in the history, stored with the ciphertext that sends it
/// ([`ClientStore::commit_send`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// When it was encrypted (ms since the epoch).
    pub at_ms: u64,
    /// The text (a card's title for a card).
    pub text: String,
    /// The category, when a business sends it.
    pub category: Option<Category>,
    /// The card, when the message is one.
    pub card: Option<Card>,
}

/// One conversation, for a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The peer's account.
    pub peer: AccountId,
    /// Its handle, if this client knows it (from the contacts).
    pub handle: Option<Handle>,
    /// The time of its latest message (ms since the epoch).
    pub last_at_ms: u64,
    /// Received messages not viewed yet.
    pub unread: u32,
}

/// Receipts owed to one peer, one kind, at most [`MAX_RECEIPT_MESSAGES`] ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptsDue {
    /// The peer.
    pub to: DeviceAddress,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The receipted messages, oldest first.
    pub messages: Vec<MessageId>,
}

/// Whom a deletion is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forget<'a> {
    /// One conversation.
    Conversation(&'a AccountId),
    /// Every conversation.
    All,
}

/// Columns of an entry, in [`entry_from_row`]'s order. The state of mine comes from
/// `sent_status` (accepted and later) and the outbox (queued).
const ENTRY_COLUMNS: &str = "m.n, m.account, m.device, m.message_id, m.at_ms, m.outgoing, m.read,
     s.status, o.n IS NOT NULL, m.text, m.category, m.card, m.answer
     FROM messages m
     LEFT JOIN sent_status s ON m.outgoing = 1 AND s.message_id = m.message_id
     LEFT JOIN outbox o ON m.outgoing = 1 AND o.message_id = m.message_id";

/// Key of the read-receipt setting in `kv`: present when read receipts are off.
const READ_RECEIPTS_OFF: &str = "read_receipts_off";

impl ClientStore {
    /// The latest `limit` messages exchanged with `peer`, oldest first (in the order this
    /// client stored them).
    pub fn history(&self, peer: &AccountId, limit: usize) -> Result<Vec<HistoryEntry>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {ENTRY_COLUMNS} WHERE m.account = ?1 ORDER BY m.n DESC LIMIT ?2"
            ))
            .map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![peer.as_bytes().as_slice(), limit], entry_from_row)
            .map_err(db)?;
        let mut entries = rows
            .map(|row| row.map_err(db)?)
            .collect::<Result<Vec<_>, SdkError>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// Every conversation, the one with the latest message first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT m.account, MAX(m.at_ms), SUM(m.outgoing = 0 AND m.read = 0), c.handle
                 FROM messages m LEFT JOIN contacts c ON c.account = m.account
                 GROUP BY m.account ORDER BY MAX(m.n) DESC",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (account, at, unread, handle) = row.map_err(db)?;
            out.push(Conversation {
                peer: AccountId::from_slice(&account).ok_or_else(|| corrupt("messages"))?,
                handle: handle.and_then(|h| Handle::parse(&h).ok()),
                last_at_ms: u64::try_from(at).unwrap_or(0),
                unread: u32::try_from(unread).unwrap_or(u32::MAX),
            });
        }
        Ok(out)
    }

    /// The message of mine with this id, if it is in the history (to show a status
    /// change on it).
    pub fn sent_entry(&self, id: &MessageId) -> Result<Option<HistoryEntry>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {ENTRY_COLUMNS} WHERE m.outgoing = 1 AND m.message_id = ?1"
            ))
            .map_err(db)?;
        let mut rows = stmt
            .query_map(params![id.as_bytes().as_slice()], entry_from_row)
            .map_err(db)?;
        rows.next().transpose().map_err(db)?.transpose()
    }

    /// The person viewed the conversation with `peer`: its received messages are read
    /// (and count as shown).
    /// Owes a read receipt for each newly read one (in place of its delivered receipt,
    /// if that was still owed) unless read receipts are off. Returns the newly read ids.
    pub fn mark_read(&self, peer: &AccountId) -> Result<Vec<MessageId>, SdkError> {
        let receipts = self.read_receipts()?;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let unread = {
            let mut stmt = tx
                .prepare(
                    "SELECT device, message_id FROM messages
                     WHERE account = ?1 AND outgoing = 0 AND read = 0 ORDER BY n",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![peer.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(db)?;
            rows.map(|row| row.map_err(db))
                .collect::<Result<Vec<_>, SdkError>>()?
        };
        // Viewed is also shown: `inbox` does not print them again as new.
        tx.execute(
            "UPDATE messages SET read = 1, shown = 1
             WHERE account = ?1 AND outgoing = 0 AND read = 0",
            params![peer.as_bytes().as_slice()],
        )
        .map_err(db)?;
        let mut read = Vec::with_capacity(unread.len());
        for (device, id) in unread {
            let id = MessageId::from_slice(&id).ok_or_else(|| corrupt("messages"))?;
            if receipts {
                let from = DeviceAddress {
                    account: *peer,
                    device: DeviceId(device),
                };
                owe_receipt(&tx, &from, ReceiptKind::Read, &id)?;
            }
            read.push(id);
        }
        tx.commit().map_err(db)?;
        Ok(read)
    }

    /// Deletes the messages of one conversation or of all, with their receipts owed and
    /// the states of the messages sent in them. Contacts, sessions and the consent ledger
    /// stay. Returns how many messages were deleted. (On a business's profile the states
    /// are also what makes an idempotency key one message: a key used before the
    /// deletion sends again.)
    pub fn delete_history(&self, which: Forget<'_>) -> Result<usize, SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let deleted = match which {
            Forget::Conversation(peer) => {
                let account = peer.as_bytes().as_slice();
                for table in ["receipts_due", "sent_status"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE account = ?1"),
                        params![account],
                    )
                    .map_err(db)?;
                }
                tx.execute("DELETE FROM messages WHERE account = ?1", params![account])
                    .map_err(db)?
            }
            Forget::All => {
                for table in ["receipts_due", "sent_status"] {
                    tx.execute(&format!("DELETE FROM {table}"), [])
                        .map_err(db)?;
                }
                tx.execute("DELETE FROM messages", []).map_err(db)?
            }
        };
        tx.commit().map_err(db)?;
        Ok(deleted)
    }

    /// Whether this profile sends read receipts (the default).
    pub fn read_receipts(&self) -> Result<bool, SdkError> {
        Ok(self.get(READ_RECEIPTS_OFF)?.is_none())
    }

    /// Turns read receipts on or off for this profile (delivered receipts stay). Turning
    /// them off also forgets the read receipts still owed.
    pub fn set_read_receipts(&self, on: bool) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        if on {
            tx.execute("DELETE FROM kv WHERE key = ?1", params![READ_RECEIPTS_OFF])
                .map_err(db)?;
        } else {
            tx.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                params![READ_RECEIPTS_OFF, [1u8].as_slice()],
            )
            .map_err(db)?;
            tx.execute(
                "DELETE FROM receipts_due WHERE kind = ?1",
                params![kind_code(ReceiptKind::Read)],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The receipts owed, grouped by peer and kind, in batches of at most
    /// [`MAX_RECEIPT_MESSAGES`].
    pub fn receipts_due(&self) -> Result<Vec<ReceiptsDue>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT account, device, kind, message_id FROM receipts_due
                 ORDER BY account, device, kind, rowid",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(db)?;
        let mut out: Vec<ReceiptsDue> = Vec::new();
        for row in rows {
            let (account, device, kind, id) = row.map_err(db)?;
            let to = DeviceAddress {
                account: AccountId::from_slice(&account).ok_or_else(|| corrupt("receipts"))?,
                device: DeviceId(device),
            };
            let kind = kind_from_code(kind).ok_or_else(|| corrupt("receipts"))?;
            let id = MessageId::from_slice(&id).ok_or_else(|| corrupt("receipts"))?;
            match out.last_mut() {
                Some(batch)
                    if batch.to == to
                        && batch.kind == kind
                        && batch.messages.len() < MAX_RECEIPT_MESSAGES =>
                {
                    batch.messages.push(id);
                }
                _ => out.push(ReceiptsDue {
                    to,
                    kind,
                    messages: vec![id],
                }),
            }
        }
        Ok(out)
    }

    /// Forgets receipts owed (they are in the outbox now, or cannot be sent).
    pub fn receipts_sent(&self, sent: &ReceiptsDue) -> Result<(), SdkError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        for id in &sent.messages {
            tx.execute(
                "DELETE FROM receipts_due
                 WHERE account = ?1 AND device = ?2 AND kind = ?3 AND message_id = ?4",
                params![
                    sent.to.account.as_bytes().as_slice(),
                    sent.to.device.0,
                    kind_code(sent.kind),
                    id.as_bytes().as_slice()
                ],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}

/// Keeps a message of mine to `to` (in the transaction that puts it in the outbox).
pub(super) fn insert_sent(
    conn: &Connection,
    to: &DeviceAddress,
    id: &MessageId,
    message: &SentMessage,
) -> Result<(), SdkError> {
    conn.execute(
        "INSERT OR IGNORE INTO messages
         (account, device, outgoing, message_id, at_ms, text, category, card, shown, read)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, 1, 1)",
        params![
            to.account.as_bytes().as_slice(),
            to.device.0,
            id.as_bytes().as_slice(),
            ms(message.at_ms),
            message.text,
            message.category.map(Category::as_str),
            message.card.as_ref().map(encode_card).transpose()?
        ],
    )
    .map(|_| ())
    .map_err(db)
}

/// Owes `from` a receipt of `kind` for message `id`. A read receipt replaces a delivered
/// one still owed (read says delivered too).
pub(super) fn owe_receipt(
    conn: &Connection,
    from: &DeviceAddress,
    kind: ReceiptKind,
    id: &MessageId,
) -> Result<(), SdkError> {
    let (account, id_bytes) = (from.account.as_bytes().as_slice(), id.as_bytes().as_slice());
    if kind == ReceiptKind::Read {
        conn.execute(
            "DELETE FROM receipts_due
             WHERE account = ?1 AND device = ?2 AND kind = ?3 AND message_id = ?4",
            params![
                account,
                from.device.0,
                kind_code(ReceiptKind::Delivered),
                id_bytes
            ],
        )
        .map_err(db)?;
    }
    conn.execute(
        "INSERT OR IGNORE INTO receipts_due (account, device, kind, message_id)
         VALUES (?1, ?2, ?3, ?4)",
        params![account, from.device.0, kind_code(kind), id_bytes],
    )
    .map(|_| ())
    .map_err(db)
}

fn kind_code(kind: ReceiptKind) -> i64 {
    match kind {
        ReceiptKind::Delivered => 1,
        ReceiptKind::Read => 2,
    }
}

fn kind_from_code(code: i64) -> Option<ReceiptKind> {
    match code {
        1 => Some(ReceiptKind::Delivered),
        2 => Some(ReceiptKind::Read),
        _ => None,
    }
}

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<Result<HistoryEntry, SdkError>> {
    let n: i64 = r.get(0)?;
    let account: Vec<u8> = r.get(1)?;
    let device: u32 = r.get(2)?;
    let id: Vec<u8> = r.get(3)?;
    let at: i64 = r.get(4)?;
    let (outgoing, read): (bool, bool) = (r.get(5)?, r.get(6)?);
    let (status, queued): (Option<i64>, bool) = (r.get(7)?, r.get(8)?);
    let text: String = r.get(9)?;
    let category: Option<String> = r.get(10)?;
    let card: Option<Vec<u8>> = r.get(11)?;
    let answer: Option<String> = r.get(12)?;
    let state = match (outgoing, status.and_then(SendStatus::from_i64), queued) {
        (false, _, _) if read => MessageState::Seen,
        (false, _, _) => MessageState::Unread,
        (true, Some(status), _) => MessageState::Sent(status),
        (true, None, true) => MessageState::Queued,
        (true, None, false) => MessageState::NotSent,
    };
    let decoded = || -> Result<HistoryEntry, SdkError> {
        Ok(HistoryEntry {
            n,
            peer: DeviceAddress {
                account: AccountId::from_slice(&account).ok_or_else(|| corrupt("messages"))?,
                device: DeviceId(device),
            },
            id: MessageId::from_slice(&id).ok_or_else(|| corrupt("messages"))?,
            at_ms: u64::try_from(at).unwrap_or(0),
            state,
            text,
            category: parse_category(category)?,
            card: card.as_deref().map(decode_card).transpose()?,
            answer,
        })
    };
    Ok(decoded())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InboxEntry, OutboxEntry, ReceiveCommit};

    fn address(byte: u8) -> DeviceAddress {
        DeviceAddress {
            account: AccountId([byte; 32]),
            device: DeviceId::PRIMARY,
        }
    }

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    fn receive(store: &ClientStore, from: DeviceAddress, n: u8, text: &str) {
        let stored = store
            .commit_receive(&ReceiveCommit {
                from,
                id: id(n),
                session: None,
                replaces_current: false,
                guard: None,
                used_one_time_prekey: None,
                inbox: Some(InboxEntry {
                    n: 0,
                    from,
                    id: id(n),
                    sent_at_ms: 1_000 * u64::from(n),
                    text: text.into(),
                    category: None,
                    card: None,
                }),
                sent_elsewhere: None,
                owe_delivered_receipt: true,
                contact: None,
            })
            .unwrap();
        assert!(stored);
    }

    fn send(store: &ClientStore, to: DeviceAddress, n: u8, text: &str) {
        let entry = OutboxEntry {
            id: id(n),
            to,
            ciphertext: vec![n],
            category: None,
            receipt: false,
            fan_out: None,
        };
        let shown = SentMessage {
            at_ms: 1_000 * u64::from(n),
            text: text.into(),
            category: None,
            card: None,
        };
        let session = (to, zeroize::Zeroizing::new(b"session".to_vec()));
        store.commit_send(&[session], &entry, Some(&shown)).unwrap();
    }

    fn accepted(store: &ClientStore, to: DeviceAddress, n: u8) {
        store.sent(&id(n)).unwrap();
        store
            .advance_status(&id(n), &to.account, SendStatus::Accepted)
            .unwrap();
    }

    fn states(store: &ClientStore, peer: &AccountId) -> Vec<(String, MessageState)> {
        store
            .history(peer, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.text, e.state))
            .collect()
    }

    #[test]
    fn a_conversation_keeps_both_directions_in_order_with_the_states_of_mine() {
        let store = ClientStore::in_memory().unwrap();
        let bob = address(2);
        receive(&store, bob, 1, "hi");
        send(&store, bob, 2, "hello Bob");
        send(&store, bob, 3, "are you there?");
        send(&store, bob, 4, "refused");
        receive(&store, address(3), 5, "from carol");
        accepted(&store, bob, 2);
        accepted(&store, bob, 3);
        store.sent(&id(4)).unwrap(); // refused for good: out of the outbox, no status
        let sent = |text: &str, status| (text.to_owned(), MessageState::Sent(status));
        assert_eq!(
            states(&store, &bob.account),
            vec![
                ("hi".into(), MessageState::Unread),
                sent("hello Bob", SendStatus::Accepted),
                sent("are you there?", SendStatus::Accepted),
                ("refused".into(), MessageState::NotSent),
            ]
        );

        // Receipts move states forward only.
        let bob_account = bob.account;
        assert!(store
            .advance_status(&id(2), &bob_account, SendStatus::Read)
            .unwrap());
        assert!(!store
            .advance_status(&id(2), &bob_account, SendStatus::Delivered)
            .unwrap());
        assert!(store
            .advance_status(&id(3), &bob_account, SendStatus::Delivered)
            .unwrap());
        let history = store.history(&bob_account, 2).unwrap();
        assert_eq!(history.len(), 2, "the latest two, oldest first");
        assert_eq!(history[0].state, MessageState::Sent(SendStatus::Delivered));
        assert_eq!(history[1].state, MessageState::NotSent);
        assert_eq!(
            states(&store, &bob_account)[1].1,
            MessageState::Sent(SendStatus::Read)
        );
        assert!(history.iter().all(|e| e.state.is_mine() && e.peer == bob));

        // Queued until the relay accepts it.
        send(&store, bob, 6, "later");
        assert_eq!(
            store.history(&bob_account, 1).unwrap()[0].state,
            MessageState::Queued
        );
    }

    #[test]
    fn conversations_list_the_latest_first_with_unread_counts() {
        let store = ClientStore::in_memory().unwrap();
        let (bob, carol) = (address(2), address(3));
        receive(&store, bob, 1, "one");
        receive(&store, bob, 2, "two");
        receive(&store, carol, 3, "three");
        send(&store, bob, 4, "mine");
        let list = store.conversations().unwrap();
        let summary: Vec<(AccountId, u32, u64)> = list
            .iter()
            .map(|c| (c.peer, c.unread, c.last_at_ms))
            .collect();
        assert_eq!(
            summary,
            vec![(bob.account, 2, 4_000), (carol.account, 1, 3_000)]
        );
        assert_eq!(store.mark_read(&bob.account).unwrap(), vec![id(1), id(2)]);
        assert_eq!(store.conversations().unwrap()[0].unread, 0);
        assert!(store.mark_read(&bob.account).unwrap().is_empty(), "once");
    }

    #[test]
    fn receipts_are_owed_delivered_then_read_and_read_ones_only_when_on() {
        let store = ClientStore::in_memory().unwrap();
        let (bob, carol) = (address(2), address(3));
        receive(&store, bob, 1, "one");
        receive(&store, bob, 2, "two");
        receive(&store, carol, 3, "three");
        let due = store.receipts_due().unwrap();
        assert_eq!(
            due,
            vec![
                ReceiptsDue {
                    to: bob,
                    kind: ReceiptKind::Delivered,
                    messages: vec![id(1), id(2)],
                },
                ReceiptsDue {
                    to: carol,
                    kind: ReceiptKind::Delivered,
                    messages: vec![id(3)],
                },
            ]
        );
        // Bob's conversation is viewed before the delivered receipts went: read replaces them.
        store.mark_read(&bob.account).unwrap();
        let due = store.receipts_due().unwrap();
        assert_eq!(due[0].kind, ReceiptKind::Read);
        assert_eq!(due[0].messages, vec![id(1), id(2)]);
        assert_eq!(due.len(), 2);
        for batch in &due {
            store.receipts_sent(batch).unwrap();
        }
        assert!(store.receipts_due().unwrap().is_empty());

        // Read receipts off: viewing owes nothing more, delivered receipts stay.
        assert!(store.read_receipts().unwrap());
        store.set_read_receipts(false).unwrap();
        assert!(!store.read_receipts().unwrap());
        receive(&store, carol, 4, "four");
        assert_eq!(store.mark_read(&carol.account).unwrap(), vec![id(3), id(4)]);
        let due = store.receipts_due().unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, ReceiptKind::Delivered);
        assert_eq!(due[0].messages, vec![id(4)]);
    }

    #[test]
    fn receipts_go_in_batches_of_the_protocol_limit() {
        let store = ClientStore::in_memory().unwrap();
        let bob = address(2);
        let count = MAX_RECEIPT_MESSAGES + 3;
        for i in 0..count {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let from = bob;
            store
                .commit_receive(&ReceiveCommit {
                    from,
                    id: MessageId(bytes),
                    session: None,
                    replaces_current: false,
                    guard: None,
                    used_one_time_prekey: None,
                    inbox: Some(InboxEntry {
                        n: 0,
                        from,
                        id: MessageId(bytes),
                        sent_at_ms: 1,
                        text: "x".into(),
                        category: None,
                        card: None,
                    }),
                    sent_elsewhere: None,
                    owe_delivered_receipt: true,
                    contact: None,
                })
                .unwrap();
        }
        let sizes: Vec<usize> = store
            .receipts_due()
            .unwrap()
            .iter()
            .map(|b| b.messages.len())
            .collect();
        assert_eq!(sizes, vec![MAX_RECEIPT_MESSAGES, 3]);
    }

    #[test]
    fn deleting_a_conversation_leaves_the_others() {
        let store = ClientStore::in_memory().unwrap();
        let (bob, carol) = (address(2), address(3));
        receive(&store, bob, 1, "one");
        send(&store, bob, 2, "two");
        accepted(&store, bob, 2);
        receive(&store, carol, 3, "three");
        assert_eq!(
            store
                .delete_history(Forget::Conversation(&bob.account))
                .unwrap(),
            2
        );
        assert!(store.history(&bob.account, 10).unwrap().is_empty());
        assert!(store.receipts_due().unwrap().iter().all(|b| b.to == carol));
        assert_eq!(store.send_status(&id(2)).unwrap(), None);
        assert_eq!(store.history(&carol.account, 10).unwrap().len(), 1);
        assert_eq!(store.delete_history(Forget::All).unwrap(), 1);
        assert!(store.conversations().unwrap().is_empty());
        assert!(store.receipts_due().unwrap().is_empty());
    }
}

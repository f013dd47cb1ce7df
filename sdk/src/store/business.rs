//! What the client remembers about business accounts: the pinned verification
//! authority, certificates fetched from the relay, when the person last wrote to each
//! account (the care window), the cards a business sent (to verify answers), and how far
//! each sent message got (accepted, delivered, read).

use parley_protocol::business::{AuthorityKey, SignedCertificate};
use parley_protocol::e2e::content::{Card, CardId};
use parley_protocol::ids::{AccountId, DeviceId, MessageId};
use rusqlite::{params, OptionalExtension};

use super::{corrupt, db, decode_card, encode_card, ms, ClientStore};
use crate::error::SdkError;

/// A business reply from the relay, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedBusiness {
    /// The certificate the relay served (`None`: not a business, or revoked).
    pub certificate: Option<SignedCertificate>,
    /// Whether the relay said it is suspended.
    pub suspended: bool,
    /// When it was fetched (local clock, ms since the epoch).
    pub fetched_at_ms: u64,
}

/// How far a sent message got. Only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SendStatus {
    /// The relay stored it.
    Accepted = 1,
    /// The recipient's device received and decrypted it.
    Delivered = 2,
    /// The recipient saw it.
    Read = 3,
}

/// A card this account sent, kept to verify the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentCard {
    /// Its recipient.
    pub to: AccountId,
    /// The device of this account that sent it, to which the person signs the answer:
    /// this one, or another whose `sent` copy this one kept (a standby bot instance,
    /// docs/bots.md §9). `None` for a card kept before the store recorded it, which this
    /// device sent.
    pub sender: Option<DeviceId>,
    /// The card as sent.
    pub card: Card,
    /// Whether an answer was accepted already.
    pub answered: bool,
}

impl SendStatus {
    pub(super) fn from_i64(value: i64) -> Option<SendStatus> {
        match value {
            1 => Some(SendStatus::Accepted),
            2 => Some(SendStatus::Delivered),
            3 => Some(SendStatus::Read),
            _ => None,
        }
    }
}

impl ClientStore {
    /// The pinned verification authority key, if any.
    pub fn pinned_authority(&self) -> Result<Option<AuthorityKey>, SdkError> {
        match self.get("authority")? {
            Some(bytes) => AuthorityKey::from_slice(&bytes)
                .map(Some)
                .ok_or_else(|| corrupt("kv authority")),
            None => Ok(None),
        }
    }

    /// Pins the verification authority key (first contact).
    pub fn pin_authority(&self, key: &AuthorityKey) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('authority', ?1)",
                params![key.as_bytes().as_slice()],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// Caches the relay's answer about `account`.
    pub fn cache_business(
        &self,
        account: &AccountId,
        business: &CachedBusiness,
    ) -> Result<(), SdkError> {
        let certificate = business
            .certificate
            .as_ref()
            .map(rmp_serde::to_vec_named)
            .transpose()
            .map_err(|e| SdkError::Storage(e.to_string()))?;
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO businesses (account, certificate, suspended, fetched_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    account.as_bytes().as_slice(),
                    certificate,
                    business.suspended,
                    ms(business.fetched_at_ms)
                ],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// The cached answer about `account`, if any.
    pub fn cached_business(&self, account: &AccountId) -> Result<Option<CachedBusiness>, SdkError> {
        let row = self
            .lock()
            .query_row(
                "SELECT certificate, suspended, fetched_at_ms FROM businesses WHERE account = ?1",
                params![account.as_bytes().as_slice()],
                |r| {
                    Ok((
                        r.get::<_, Option<Vec<u8>>>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((certificate, suspended, at)) = row else {
            return Ok(None);
        };
        let certificate = certificate
            .map(|bytes| rmp_serde::from_slice(&bytes).map_err(|_| corrupt("businesses")))
            .transpose()?;
        Ok(Some(CachedBusiness {
            certificate,
            suspended,
            fetched_at_ms: u64::try_from(at).unwrap_or(0),
        }))
    }

    /// The person sent something to `account` at `at_ms` (opens the care window).
    pub fn note_sent_to(&self, account: &AccountId, at_ms: u64) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "INSERT INTO last_sent (account, at_ms) VALUES (?1, ?2)
                 ON CONFLICT (account) DO UPDATE SET at_ms = max(at_ms, excluded.at_ms)",
                params![account.as_bytes().as_slice(), ms(at_ms)],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// When the person last sent something to `account`.
    pub fn last_sent_to(&self, account: &AccountId) -> Result<Option<u64>, SdkError> {
        self.lock()
            .query_row(
                "SELECT at_ms FROM last_sent WHERE account = ?1",
                params![account.as_bytes().as_slice()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|at| at.map(|v| u64::try_from(v).unwrap_or(0)))
            .map_err(db)
    }

    /// Keeps a card that device `sender` of this account sends to `to`, to verify the
    /// answer later. A card kept already stays as it was.
    pub fn save_sent_card(
        &self,
        card: &Card,
        to: &AccountId,
        sender: DeviceId,
    ) -> Result<(), SdkError> {
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO cards_sent (card_id, account, card, device)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    card.id.as_bytes().as_slice(),
                    to.as_bytes().as_slice(),
                    encode_card(card)?,
                    sender.0
                ],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// A card this account sent, if this device kept it.
    pub fn sent_card(&self, id: &CardId) -> Result<Option<SentCard>, SdkError> {
        let row = self
            .lock()
            .query_row(
                "SELECT account, card, answered, device FROM cards_sent WHERE card_id = ?1",
                params![id.as_bytes().as_slice()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Option<u32>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((to, card, answered, sender)) = row else {
            return Ok(None);
        };
        Ok(Some(SentCard {
            to: AccountId::from_slice(&to).ok_or_else(|| corrupt("cards_sent"))?,
            sender: sender.map(DeviceId),
            card: decode_card(&card)?,
            answered,
        }))
    }

    /// Marks a sent card answered; `false` if it already was (answers are one-shot).
    pub fn mark_card_answered(&self, id: &CardId) -> Result<bool, SdkError> {
        self.lock()
            .execute(
                "UPDATE cards_sent SET answered = 1 WHERE card_id = ?1 AND answered = 0",
                params![id.as_bytes().as_slice()],
            )
            .map(|n| n > 0)
            .map_err(db)
    }

    /// Records that message `id` to `account` reached `status`, if that is further than
    /// it was (a receipt counts only from the message's recipient). Returns whether the
    /// status moved forward.
    pub fn advance_status(
        &self,
        id: &MessageId,
        account: &AccountId,
        status: SendStatus,
    ) -> Result<bool, SdkError> {
        let changed = if status == SendStatus::Accepted {
            self.lock().execute(
                "INSERT OR IGNORE INTO sent_status (message_id, account, status) VALUES (?1, ?2, ?3)",
                params![
                    id.as_bytes().as_slice(),
                    account.as_bytes().as_slice(),
                    status as i64
                ],
            )
        } else {
            self.lock().execute(
                "UPDATE sent_status SET status = ?3
                 WHERE message_id = ?1 AND account = ?2 AND status < ?3",
                params![
                    id.as_bytes().as_slice(),
                    account.as_bytes().as_slice(),
                    status as i64
                ],
            )
        };
        changed.map(|n| n > 0).map_err(db)
    }

    /// How far message `id` got, if this client sent it.
    pub fn send_status(&self, id: &MessageId) -> Result<Option<SendStatus>, SdkError> {
        self.lock()
            .query_row(
                "SELECT status FROM sent_status WHERE message_id = ?1",
                params![id.as_bytes().as_slice()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|s| s.and_then(SendStatus::from_i64))
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use parley_protocol::e2e::content::CardAction;

    use super::*;

    #[test]
    fn a_card_is_kept_with_the_device_that_sent_it_once() {
        let store = ClientStore::in_memory().unwrap();
        let to = AccountId::from_slice(&[5; 32]).unwrap();
        let card = Card {
            id: CardId([7; 16]),
            title: "Did you make this purchase?".into(),
            fields: Vec::new(),
            actions: vec![CardAction {
                id: "no".into(),
                label: "No".into(),
            }],
            expires_at_ms: None,
            category: None,
        };
        assert_eq!(store.sent_card(&card.id).unwrap(), None);
        store.save_sent_card(&card, &to, DeviceId(2)).unwrap();
        // A redelivered copy, or a send from elsewhere, changes nothing.
        store.save_sent_card(&card, &to, DeviceId(1)).unwrap();
        assert!(store.mark_card_answered(&card.id).unwrap());
        assert_eq!(
            store.sent_card(&card.id).unwrap(),
            Some(SentCard {
                to,
                sender: Some(DeviceId(2)),
                card,
                answered: true,
            })
        );
    }
}

//! What a decrypted message contains. The relay never sees any of it.
//!
//! Encoded like the wire frames: MessagePack, structs as maps with string keys, enums as
//! a one-entry map `{ "<kind>": body }`, byte strings as `bin`, absent optionals as `nil`.
//!
//! | kind          | body                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | `text`        | `{body: str}`                                                     |
//! | `card`        | `{id: bin 16, title, fields: [{label, value}], actions: [{id, label}], expires_at_ms: uint or nil}` |
//! | `card_answer` | `{card: bin 16, action: str, card_digest: bin 32, answered_at_ms, signature: bin 64}` |
//! | `receipt`     | `{kind: "delivered" or "read", messages: [bin 16]}`               |
//! | `consent`     | `{grant: {grant, signature}}` or `{revocation: {revocation, signature}}` |
//! | `sent`        | `{to: bin 32, to_handle: str (omitted when absent), message: {text: …} or {card: …}}` |
//! | `sync`        | `{consent: <as consent>}` or `{verified: {account: bin 32, identity: IdentityPublic, verified: bool}}` |
//!
//! `text` and `card` carry an optional `category` (omitted when absent) when a business
//! sends them.
//!
//! A card answer is signed by the answering device over what it saw
//! ([`SignatureDomain::CardAnswer`]):
//!
//! ```text
//! card_digest = SHA-256("parley/v1/card-digest" ‖ 0x00 ‖ id (16) ‖ var(title)
//!                ‖ count(fields) u32 ‖ (var(label) ‖ var(value))*
//!                ‖ count(actions) u32 ‖ (var(id) ‖ var(label))*
//!                ‖ has_expiry u8 ‖ expires_at_ms u64 (0 if none))
//! signature   = Ed25519(identity, "parley/v1/card-answer" ‖ 0x00 ‖ card id (16)
//!                ‖ card_digest (32) ‖ var(action) ‖ answerer.account (32)
//!                ‖ answerer.device u32 ‖ card_sender.account (32) ‖ card_sender.device u32
//!                ‖ answered_at_ms u64)
//! ```
//!
//! (`var(x)` = length as u32 BE ‖ bytes, as in [`Transcript`].) Decoding never panics and
//! enforces the limits below.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::limits::MAX_PLAINTEXT_BYTES;
use super::E2eError;
use crate::fixed_bytes::fixed_bytes;
use crate::identity::IdentityKeyPair;
use crate::ids::{AccountId, DeviceAddress, MessageId};
use crate::limits::MAX_NESTING_DEPTH;
use crate::signature::{self, Signature, SignatureDomain, Transcript};

/// Label of the card digest.
pub const CARD_DIGEST_LABEL: &[u8] = b"parley/v1/card-digest";
/// Most fields on a card.
pub const MAX_CARD_FIELDS: usize = 32;
/// Most actions on a card.
pub const MAX_CARD_ACTIONS: usize = 8;
/// Longest action id, in bytes.
pub const MAX_ACTION_ID_BYTES: usize = 64;
/// Most message ids in one receipt.
pub const MAX_RECEIPT_MESSAGES: usize = 256;
/// Longest text body a client sends, in bytes: the plaintext limit less 2 KiB for the
/// rest of the encoded content (field names, the sender's handle, a category), so that a
/// text this long always encrypts. Receivers do not enforce it (they enforce
/// [`MAX_PLAINTEXT_BYTES`]); senders check it to refuse a long text in words.
pub const MAX_TEXT_BYTES: usize = MAX_PLAINTEXT_BYTES - 2048;

fixed_bytes!(
    /// Names a card; chosen by its sender, unique per sender.
    CardId,
    16
);

fixed_bytes!(
    /// SHA-256 digest of a card, see the module documentation.
    CardDigest,
    32
);

/// The content of one end-to-end message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// A text message.
    Text(Text),
    /// A card with fields and actions.
    Card(Card),
    /// An answer to a card's action.
    CardAnswer(CardAnswer),
    /// Delivery or read receipt.
    Receipt(Receipt),
    /// A consent grant or revocation, sent by the person to the business so it learns
    /// (with the person's signature) what it may send. Also given to the relay.
    Consent(crate::business::ConsentRecord),
    /// What another device of the same account sent, so that this device shows it as the
    /// account's own message (ADR 0007). Taken only from the account's own devices.
    Sent(Sent),
    /// Account state one device changed, for the account's other devices (ADR 0007).
    /// Taken only from the account's own devices.
    Sync(Sync),
}

/// Account state a device shares with the account's other devices. Blocks and the
/// display name need none: the relay keeps them per account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    /// A consent grant or revocation the account made (and stored with the relay): kept
    /// in every device's ledger.
    Consent(crate::business::ConsentRecord),
    /// The person compared safety numbers with `account` (or took the mark away).
    Verified(VerifiedContact),
}

/// A contact marked verified or not, with the identity key that was compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedContact {
    /// The contact.
    pub account: AccountId,
    /// The identity key whose safety number was compared: a device that knows another
    /// key for the contact does not take the mark.
    pub identity: crate::identity::IdentityPublic,
    /// Verified, or no longer.
    pub verified: bool,
}

/// A copy of a text or card one device of an account sent, for its other devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Whom it was sent to.
    pub to: AccountId,
    /// Their handle, as the sending device resolved it (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_handle: Option<crate::ids::Handle>,
    /// What was sent: a text or a card.
    pub message: Box<Content>,
}

/// A text message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The text.
    pub body: String,
    /// The handle the sender claims. Unverified: a client shows it only after resolving
    /// it to the sender's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_handle: Option<crate::ids::Handle>,
    /// The category a business sent it in, covered by the encryption so that the
    /// recipient can check it against its own consent ledger. Omitted between people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<crate::business::Category>,
}

/// A card: a title, labelled fields and actions the recipient can answer with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// The card's id.
    pub id: CardId,
    /// Title.
    pub title: String,
    /// Labelled values, in display order.
    pub fields: Vec<CardField>,
    /// Possible answers, in display order, ids unique.
    pub actions: Vec<CardAction>,
    /// After this time (ms since the Unix epoch) the card cannot be answered.
    pub expires_at_ms: Option<u64>,
    /// The category a business sent it in (see [`Text::category`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<crate::business::Category>,
}

/// A labelled value on a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardField {
    /// Label.
    pub label: String,
    /// Value.
    pub value: String,
}

/// An action offered by a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAction {
    /// Id, unique within the card.
    pub id: String,
    /// What the button says.
    pub label: String,
}

/// A signed answer to a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAnswer {
    /// The card answered.
    pub card: CardId,
    /// The chosen action's id.
    pub action: String,
    /// Digest of the card as the answering device saw it.
    pub card_digest: CardDigest,
    /// When it was answered (ms since the Unix epoch).
    pub answered_at_ms: u64,
    /// The answering account's signature, see the module documentation.
    pub signature: Signature,
}

/// Which receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The messages were received and decrypted.
    Delivered,
    /// The messages were shown to the user.
    Read,
}

/// A receipt for some messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The envelopes' message ids.
    pub messages: Vec<MessageId>,
}

impl Content {
    /// Encodes the content (to pass to [`Session::encrypt`](super::Session::encrypt)).
    pub fn encode(&self) -> Result<Vec<u8>, E2eError> {
        self.validate()?;
        rmp_serde::to_vec_named(self).map_err(|e| E2eError::Encoding(e.to_string()))
    }

    /// Decodes and validates content. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Content, E2eError> {
        if bytes.len() > MAX_PLAINTEXT_BYTES {
            return Err(E2eError::Limit("content"));
        }
        let mut rest = bytes;
        let content = {
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            de.set_max_depth(MAX_NESTING_DEPTH);
            Content::deserialize(&mut de).map_err(|_| E2eError::Malformed("content"))?
        };
        if !rest.is_empty() {
            return Err(E2eError::Malformed("content"));
        }
        content.validate()?;
        Ok(content)
    }

    fn validate(&self) -> Result<(), E2eError> {
        match self {
            Content::Text(_) => Ok(()),
            Content::Card(card) => card.validate(),
            Content::CardAnswer(answer) if answer.action.len() > MAX_ACTION_ID_BYTES => {
                Err(E2eError::Limit("action id"))
            }
            Content::CardAnswer(_) => Ok(()),
            Content::Receipt(r) if r.messages.len() > MAX_RECEIPT_MESSAGES => {
                Err(E2eError::Limit("receipt messages"))
            }
            Content::Receipt(_) => Ok(()),
            Content::Consent(record) => record
                .verify_signature()
                .map_err(|_| E2eError::Malformed("consent record")),
            Content::Sync(Sync::Consent(record)) => record
                .verify_signature()
                .map_err(|_| E2eError::Malformed("consent record")),
            Content::Sync(Sync::Verified(_)) => Ok(()),
            Content::Sent(sent) => match &*sent.message {
                Content::Text(_) | Content::Card(_) => sent.message.validate(),
                _ => Err(E2eError::Malformed(
                    "a sent copy holds only a text or a card",
                )),
            },
        }
    }
}

impl Card {
    fn validate(&self) -> Result<(), E2eError> {
        if self.fields.len() > MAX_CARD_FIELDS {
            return Err(E2eError::Limit("card fields"));
        }
        if self.actions.len() > MAX_CARD_ACTIONS {
            return Err(E2eError::Limit("card actions"));
        }
        for (i, action) in self.actions.iter().enumerate() {
            if action.id.is_empty() || action.id.len() > MAX_ACTION_ID_BYTES {
                return Err(E2eError::Limit("action id"));
            }
            if self.actions[..i].iter().any(|a| a.id == action.id) {
                return Err(E2eError::Malformed("duplicate action id"));
            }
        }
        Ok(())
    }

    /// The card's digest, see the module documentation.
    pub fn digest(&self) -> CardDigest {
        let var = |h: &mut Sha256, bytes: &[u8]| {
            h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(bytes);
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        let mut h = Sha256::new();
        h.update(CARD_DIGEST_LABEL);
        h.update([0u8]);
        h.update(self.id.as_bytes());
        var(&mut h, self.title.as_bytes());
        h.update(count(self.fields.len()));
        for field in &self.fields {
            var(&mut h, field.label.as_bytes());
            var(&mut h, field.value.as_bytes());
        }
        h.update(count(self.actions.len()));
        for action in &self.actions {
            var(&mut h, action.id.as_bytes());
            var(&mut h, action.label.as_bytes());
        }
        h.update([u8::from(self.expires_at_ms.is_some())]);
        h.update(self.expires_at_ms.unwrap_or(0).to_be_bytes());
        CardDigest(h.finalize().into())
    }

    fn check_answerable(&self, action: &str, at_ms: u64) -> Result<(), E2eError> {
        if !self.actions.iter().any(|a| a.id == action) {
            return Err(E2eError::CardMismatch);
        }
        if self.expires_at_ms.is_some_and(|expiry| at_ms > expiry) {
            return Err(E2eError::Expired);
        }
        Ok(())
    }
}

/// The transcript a card answer's signature covers.
fn answer_transcript(
    card: &CardId,
    digest: &CardDigest,
    action: &str,
    answerer: &DeviceAddress,
    card_sender: &DeviceAddress,
    answered_at_ms: u64,
) -> Transcript {
    Transcript::new(SignatureDomain::CardAnswer)
        .fixed(card.as_bytes())
        .fixed(digest.as_bytes())
        .var(action.as_bytes())
        .fixed(answerer.account.as_bytes())
        .u32(answerer.device.0)
        .fixed(card_sender.account.as_bytes())
        .u32(card_sender.device.0)
        .u64(answered_at_ms)
}

impl CardAnswer {
    /// Answers `card` with `action`, as device `answerer` of `identity`, to the device
    /// that sent the card. Refuses an action the card does not offer and an expired card.
    pub fn sign(
        identity: &IdentityKeyPair,
        answerer: &DeviceAddress,
        card_sender: &DeviceAddress,
        card: &Card,
        action: &str,
        answered_at_ms: u64,
    ) -> Result<CardAnswer, E2eError> {
        if identity.account_id() != answerer.account {
            return Err(E2eError::AddressMismatch);
        }
        card.check_answerable(action, answered_at_ms)?;
        let digest = card.digest();
        let signature = identity.sign(&answer_transcript(
            &card.id,
            &digest,
            action,
            answerer,
            card_sender,
            answered_at_ms,
        ));
        Ok(CardAnswer {
            card: card.id,
            action: action.to_owned(),
            card_digest: digest,
            answered_at_ms,
            signature,
        })
    }

    /// Verifies an answer from `answerer` to the `card` that `card_sender` (we) sent:
    /// same card, same digest, an offered action, in time, and a valid signature.
    pub fn verify(
        &self,
        answerer: &DeviceAddress,
        card_sender: &DeviceAddress,
        card: &Card,
    ) -> Result<(), E2eError> {
        if self.card != card.id || self.card_digest != card.digest() {
            return Err(E2eError::CardMismatch);
        }
        card.check_answerable(&self.action, self.answered_at_ms)?;
        signature::verify(
            &answerer.account,
            &answer_transcript(
                &self.card,
                &self.card_digest,
                &self.action,
                answerer,
                card_sender,
                self.answered_at_ms,
            ),
            &self.signature,
        )
        .map_err(|_| E2eError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DeviceId;

    fn card() -> Card {
        Card {
            id: CardId([7; 16]),
            title: "Confirm payment".to_owned(),
            fields: vec![CardField {
                label: "Amount".to_owned(),
                value: "12.00 EUR".to_owned(),
            }],
            actions: vec![
                CardAction {
                    id: "yes".to_owned(),
                    label: "Confirm".to_owned(),
                },
                CardAction {
                    id: "no".to_owned(),
                    label: "Decline".to_owned(),
                },
            ],
            expires_at_ms: Some(1_000),
            category: None,
        }
    }

    #[test]
    fn the_longest_text_fits_with_the_longest_handle_and_a_category() {
        let text = Content::Text(Text {
            body: "é".repeat(MAX_TEXT_BYTES / 2),
            sender_handle: Some(crate::ids::Handle::parse(&"h".repeat(32)).unwrap()),
            category: Some(crate::business::Category::SecurityAlert),
        });
        assert!(text.encode().unwrap().len() <= MAX_PLAINTEXT_BYTES);
    }

    #[test]
    fn answers_verify_only_for_the_card_seen() {
        let user = IdentityKeyPair::from_secret_bytes(&[1; 64]);
        let bank = IdentityKeyPair::from_secret_bytes(&[2; 64]);
        let user_addr = DeviceAddress {
            account: user.account_id(),
            device: DeviceId(1),
        };
        let bank_addr = DeviceAddress {
            account: bank.account_id(),
            device: DeviceId(1),
        };
        let card = card();
        let answer = CardAnswer::sign(&user, &user_addr, &bank_addr, &card, "yes", 500).unwrap();
        assert_eq!(answer.verify(&user_addr, &bank_addr, &card), Ok(()));

        let mut altered = card.clone();
        altered.fields[0].value = "1200.00 EUR".to_owned();
        assert_eq!(
            answer.verify(&user_addr, &bank_addr, &altered),
            Err(E2eError::CardMismatch)
        );
        let mut forged = answer.clone();
        forged.action = "no".to_owned();
        assert_eq!(
            forged.verify(&user_addr, &bank_addr, &card),
            Err(E2eError::BadSignature)
        );
        assert_eq!(
            answer.verify(&user_addr, &user_addr, &card),
            Err(E2eError::BadSignature)
        );
        assert_eq!(
            CardAnswer::sign(&user, &user_addr, &bank_addr, &card, "maybe", 500),
            Err(E2eError::CardMismatch)
        );
        assert_eq!(
            CardAnswer::sign(&user, &user_addr, &bank_addr, &card, "yes", 1_001),
            Err(E2eError::Expired)
        );

        let content = Content::CardAnswer(answer);
        assert_eq!(Content::decode(&content.encode().unwrap()), Ok(content));
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let mut card = card();
        card.actions.push(card.actions[0].clone());
        let bytes = rmp_serde::to_vec_named(&Content::Card(card)).unwrap();
        assert!(Content::decode(&bytes).is_err());
        assert!(Content::decode(&[0xc1]).is_err());
        let text = Content::Text(Text {
            body: "hi".to_owned(),
            sender_handle: None,
            category: None,
        });
        let mut bytes = text.encode().unwrap();
        assert_eq!(Content::decode(&bytes), Ok(text));
        bytes.push(0);
        assert!(Content::decode(&bytes).is_err());
    }

    /// Regression: an unknown key nesting thousands of arrays overflowed the stack while
    /// the decoder skipped it (a peer could abort the recipient's process).
    #[test]
    fn regression_deep_nesting_is_refused_without_exhausting_the_stack() {
        let mut bytes = b"\x81\xa4text\x82\xa4body\xa2hi\xa1x".to_vec();
        bytes.extend(std::iter::repeat_n(
            0x91,
            MAX_PLAINTEXT_BYTES - bytes.len() - 1,
        ));
        bytes.push(0x00);
        assert_eq!(Content::decode(&bytes), Err(E2eError::Malformed("content")));
    }
}

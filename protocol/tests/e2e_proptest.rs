//! Property tests: every end-to-end encoding round-trips, and decoding arbitrary bytes
//! never panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, TestRng};
use parley_protocol::e2e::content::{
    Card, CardAction, CardAnswer, CardDigest, CardField, CardId, Content, Receipt, ReceiptKind,
    Text,
};
use parley_protocol::e2e::message::{
    E2eMessage, Header, NormalMessage, PrekeyMessage, SessionSetup,
};
use parley_protocol::e2e::{self, HandshakeGuard, Session};
use parley_protocol::identity::{IdentityPublic, X25519Public};
use parley_protocol::ids::{AccountId, MessageId, PrekeyId};
use parley_protocol::signature::Signature;
use proptest::prelude::*;

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn header() -> impl Strategy<Value = Header> {
    (bytes32(), any::<u32>(), any::<u32>()).prop_map(|(k, pn, n)| Header {
        ratchet_key: X25519Public(k),
        previous_counter: pn,
        counter: n,
    })
}

fn normal() -> impl Strategy<Value = NormalMessage> {
    (header(), proptest::collection::vec(any::<u8>(), 16..200))
        .prop_map(|(header, ciphertext)| NormalMessage { header, ciphertext })
}

fn setup() -> impl Strategy<Value = SessionSetup> {
    (
        bytes32(),
        bytes32(),
        bytes32(),
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(account, dh, base, spk, opk, kem, fill)| SessionSetup {
            identity: IdentityPublic {
                account: AccountId(account),
                dh: X25519Public(dh),
                dh_signature: Signature([fill; 64]),
            },
            base_key: X25519Public(base),
            signed_prekey: PrekeyId(spk),
            one_time_prekey: opk.map(PrekeyId),
            kem_prekey: PrekeyId(kem),
            kem_ciphertext: vec![fill; 1088],
        })
}

fn message() -> impl Strategy<Value = E2eMessage> {
    prop_oneof![
        normal().prop_map(E2eMessage::Normal),
        (setup(), normal())
            .prop_map(|(setup, message)| E2eMessage::Prekey(PrekeyMessage { setup, message })),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn content() -> impl Strategy<Value = Content> {
    let card = (
        any::<[u8; 16]>(),
        text(),
        proptest::collection::vec((text(), text()), 0..5),
        proptest::collection::btree_set("[a-z0-9_]{1,20}", 0..5),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(id, title, fields, actions, expires_at_ms)| Card {
            id: CardId(id),
            title,
            fields: fields
                .into_iter()
                .map(|(label, value)| CardField { label, value })
                .collect(),
            actions: actions
                .into_iter()
                .map(|id| CardAction {
                    label: id.to_uppercase(),
                    id,
                })
                .collect(),
            expires_at_ms,
            category: None,
        });
    prop_oneof![
        text().prop_map(|body| Content::Text(Text {
            body,
            sender_handle: None,
            category: None,
        })),
        card.prop_map(Content::Card),
        (
            any::<[u8; 16]>(),
            "[a-z]{1,64}",
            bytes32(),
            any::<u64>(),
            any::<u8>()
        )
            .prop_map(
                |(card, action, digest, at, fill)| Content::CardAnswer(CardAnswer {
                    card: CardId(card),
                    action,
                    card_digest: CardDigest(digest),
                    answered_at_ms: at,
                    signature: Signature([fill; 64]),
                })
            ),
        (
            any::<bool>(),
            proptest::collection::vec(any::<[u8; 16]>(), 0..20)
        )
            .prop_map(|(read, ids)| Content::Receipt(Receipt {
                kind: if read {
                    ReceiptKind::Read
                } else {
                    ReceiptKind::Delivered
                },
                messages: ids.into_iter().map(MessageId).collect(),
            })),
    ]
}

/// A session after a random exchange: `ops` bits choose who sends and whether the
/// message is delivered.
fn session_after(seed: u64, ops: &[u8]) -> (Session, Session) {
    let mut rng = TestRng::new(seed);
    let (_, _, mut a, mut b) = established(&mut rng, seed.is_multiple_of(2));
    for op in ops {
        let (from, to) = if op & 1 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let m = from.encrypt(&[*op; 10], &mut rng, u64::from(*op)).unwrap();
        if op & 2 == 0 {
            to.decrypt(&m, u64::from(*op)).unwrap();
        }
    }
    (a, b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn messages_round_trip(m in message()) {
        prop_assert_eq!(E2eMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn content_round_trips(c in content()) {
        prop_assert_eq!(Content::decode(&c.encode().unwrap()), Ok(c));
    }

    #[test]
    fn guards_round_trip(keys in proptest::collection::btree_set(bytes32(), 0..50)) {
        // Built through accept is expensive; the encoding is public, so build the bytes.
        let mut bytes = vec![1u8];
        for k in &keys {
            bytes.extend_from_slice(k);
        }
        let guard = HandshakeGuard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(guard.len(), keys.len());
        prop_assert_eq!(guard.to_bytes(), bytes);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = E2eMessage::decode(&bytes);
        let _ = Content::decode(&bytes);
        let _ = Session::from_record(&bytes);
        let _ = HandshakeGuard::from_bytes(&bytes);
        let mut with_version = vec![1u8];
        with_version.extend_from_slice(&bytes);
        let _ = E2eMessage::decode(&with_version);
        let _ = Session::from_record(&with_version);
    }

    #[test]
    fn mutated_messages_never_panic(seed in 0u64..4, at in any::<usize>(), byte in any::<u8>()) {
        let (mut a, mut b) = session_after(seed, &[0, 1, 0]);
        let mut m = a.encrypt(b"payload", &mut TestRng::new(seed), 0).unwrap();
        let i = at % m.len();
        m[i] = byte;
        let _ = b.decrypt(&m, 0);
        let before = a.to_record();
        let _ = a.decrypt(&m, 0);
        prop_assert_eq!(a.to_record(), before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn session_records_round_trip(seed in any::<u64>(), ops in proptest::collection::vec(any::<u8>(), 0..30)) {
        let (a, b) = session_after(seed, &ops);
        for s in [&a, &b] {
            let record = s.to_record();
            let restored = Session::from_record(&record).unwrap();
            prop_assert_eq!(&*restored.to_record(), &*record);
        }
    }

    #[test]
    fn mutated_records_never_panic(seed in 0u64..4, at in any::<usize>(), byte in any::<u8>()) {
        let (a, _) = session_after(seed, &[0, 1]);
        let mut record = a.to_record().to_vec();
        let i = at % record.len();
        record[i] = byte;
        if let Ok(mut s) = Session::from_record(&record) {
            let _ = s.encrypt(b"x", &mut TestRng::new(1), 0);
        }
        let _ = e2e::E2eError::Duplicate.is_replay();
    }
}

//! End-to-end sessions through the public API: setup, ordering, replays, limits, records,
//! and identity substitution.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, party, TestRng};
use parley_protocol::e2e::limits::{MAX_SKIP, SKIPPED_KEY_MAX_AGE_MS};
use parley_protocol::e2e::message::E2eMessage;
use parley_protocol::e2e::safety_number::SafetyNumber;
use parley_protocol::e2e::trust::{IdentityCheck, KnownIdentities};
use parley_protocol::e2e::{self, E2eError, Session};
use parley_protocol::ids::{DeviceId, Handle, PrekeyId};

#[test]
fn a_conversation_in_both_directions_with_one_time_prekey() {
    let mut rng = TestRng::new(1);
    let (_, _, mut a, mut b) = established(&mut rng, true);
    for round in 0..20u32 {
        for i in 0..(round % 3 + 1) {
            let text = format!("a{round}.{i}");
            let m = a.encrypt(text.as_bytes(), &mut rng, 0).unwrap();
            assert_eq!(b.decrypt(&m, 0).unwrap(), text.as_bytes());
        }
        let text = format!("b{round}");
        let m = b.encrypt(text.as_bytes(), &mut rng, 0).unwrap();
        assert_eq!(a.decrypt(&m, 0).unwrap(), text.as_bytes());
    }
    assert!(!a.awaiting_reply());
    assert_eq!(a.skipped_key_count() + b.skipped_key_count(), 0);
}

#[test]
fn initiator_sends_prekey_messages_until_the_first_reply() {
    let mut rng = TestRng::new(2);
    let (_, _, mut a, mut b) = established(&mut rng, false);
    let m1 = a.encrypt(b"again", &mut rng, 0).unwrap();
    assert!(matches!(
        E2eMessage::decode(&m1).unwrap(),
        E2eMessage::Prekey(_)
    ));
    assert!(b.belongs(&m1));
    assert_eq!(b.decrypt(&m1, 0).unwrap(), b"again");
    let reply = b.encrypt(b"ok", &mut rng, 0).unwrap();
    assert!(matches!(
        E2eMessage::decode(&reply).unwrap(),
        E2eMessage::Normal(_)
    ));
    a.decrypt(&reply, 0).unwrap();
    let m2 = a.encrypt(b"normal now", &mut rng, 0).unwrap();
    assert!(matches!(
        E2eMessage::decode(&m2).unwrap(),
        E2eMessage::Normal(_)
    ));
    assert_eq!(b.decrypt(&m2, 0).unwrap(), b"normal now");
}

#[test]
fn a_lost_first_message_does_not_prevent_setup() {
    let mut rng = TestRng::new(3);
    let alice = party(0xA1, false, &mut rng);
    let mut bob = party(0xB0, true, &mut rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut rng,
    )
    .unwrap();
    let lost = a.encrypt(b"lost", &mut rng, 0).unwrap();
    let second = a.encrypt(b"second", &mut rng, 0).unwrap();
    let accepted = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &second,
        &bob.prekeys,
        &mut bob.guard,
        0,
    )
    .unwrap();
    assert_eq!(accepted.plaintext, b"second");
    assert_eq!(accepted.used_one_time_prekey, Some(PrekeyId(3)));
    let mut b = accepted.session;
    // The "lost" one turns up late: same session, decrypted from a skipped key.
    assert!(b.belongs(&lost));
    assert_eq!(b.decrypt(&lost, 0).unwrap(), b"lost");
}

#[test]
fn a_replayed_first_message_creates_no_second_session() {
    let mut rng = TestRng::new(4);
    let alice = party(0xA1, false, &mut rng);
    let mut bob = party(0xB0, false, &mut rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut rng,
    )
    .unwrap();
    let first = a.encrypt(b"once", &mut rng, 0).unwrap();
    let accepted = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    )
    .unwrap();
    let guard_before = bob.guard.to_bytes();
    // Through accept: refused as a duplicate setup, guard unchanged.
    let replay = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    );
    assert_eq!(replay.err(), Some(E2eError::DuplicateSetup));
    assert_eq!(bob.guard.to_bytes(), guard_before);
    // Through the session: a duplicate message, state unchanged.
    let mut b = accepted.session;
    let before = b.to_record();
    assert_eq!(b.decrypt(&first, 0), Err(E2eError::Duplicate));
    assert_eq!(b.to_record(), before);
    // The guard survives a restart.
    let mut restored = e2e::HandshakeGuard::from_bytes(&guard_before).unwrap();
    let replay = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut restored,
        0,
    );
    assert_eq!(replay.err(), Some(E2eError::DuplicateSetup));
}

#[test]
fn a_used_one_time_prekey_is_reported_unknown_once_deleted() {
    let mut rng = TestRng::new(5);
    let alice = party(0xA1, false, &mut rng);
    let mut bob = party(0xB0, true, &mut rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut rng,
    )
    .unwrap();
    let first = a.encrypt(b"x", &mut rng, 0).unwrap();
    let accepted = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    )
    .unwrap();
    bob.prekeys
        .remove_one_time(accepted.used_one_time_prekey.unwrap());
    // A fresh guard (say the SDK lost it): the missing prekey still stops the replay.
    let mut fresh = e2e::HandshakeGuard::default();
    let replay = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut fresh,
        0,
    );
    assert_eq!(replay.err(), Some(E2eError::UnknownPrekey(PrekeyId(3))));
    assert!(fresh.is_empty());
}

#[test]
fn out_of_order_duplicates_and_skip_limit() {
    let mut rng = TestRng::new(6);
    let (_, _, mut a, mut b) = established(&mut rng, false);
    let msgs: Vec<Vec<u8>> = (0..10)
        .map(|i| a.encrypt(format!("m{i}").as_bytes(), &mut rng, 0).unwrap())
        .collect();
    for i in [9usize, 3, 0, 5, 1, 2, 8, 4, 7, 6] {
        assert_eq!(b.decrypt(&msgs[i], 0).unwrap(), format!("m{i}").as_bytes());
    }
    for m in &msgs {
        let before = b.to_record();
        assert_eq!(b.decrypt(m, 0), Err(E2eError::Duplicate));
        assert_eq!(b.to_record(), before);
    }
    // A jump of exactly MAX_SKIP is fine...
    for _ in 0..MAX_SKIP {
        a.encrypt(b"dropped", &mut rng, 0).unwrap();
    }
    let edge = a.encrypt(b"edge", &mut rng, 0).unwrap();
    assert_eq!(b.decrypt(&edge, 0).unwrap(), b"edge");
    assert_eq!(b.skipped_key_count(), MAX_SKIP as usize);
    // ...one more is refused before deriving anything.
    for _ in 0..=MAX_SKIP {
        a.encrypt(b"dropped", &mut rng, 0).unwrap();
    }
    let far = a.encrypt(b"far", &mut rng, 0).unwrap();
    let before = b.to_record();
    assert_eq!(b.decrypt(&far, 0), Err(E2eError::TooFarAhead));
    assert_eq!(b.to_record(), before);
}

#[test]
fn a_counter_of_u32_max_is_refused_immediately() {
    let mut rng = TestRng::new(7);
    let (_, _, mut a, mut b) = established(&mut rng, false);
    let reply = b.encrypt(b"r", &mut rng, 0).unwrap();
    a.decrypt(&reply, 0).unwrap();
    let m = a.encrypt(b"m", &mut rng, 0).unwrap();
    let mut forged = m.clone();
    forged[38..42].copy_from_slice(&u32::MAX.to_be_bytes());
    let before = b.to_record();
    assert_eq!(b.decrypt(&forged, 0), Err(E2eError::TooFarAhead));
    // previous_counter on a new chain is bounded too.
    let mut forged = m.clone();
    forged[34..38].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(b.decrypt(&forged, 0), Err(E2eError::TooFarAhead));
    assert_eq!(b.to_record(), before);
    assert_eq!(b.decrypt(&m, 0).unwrap(), b"m");
}

#[test]
fn tampering_anywhere_is_rejected_and_changes_nothing() {
    let mut rng = TestRng::new(8);
    let (_, _, mut a, mut b) = established(&mut rng, false);
    let m = a.encrypt(b"integrity", &mut rng, 0).unwrap();
    let before = b.to_record();
    for i in 0..m.len() {
        let mut bad = m.clone();
        bad[i] ^= 0x10;
        let err = b.decrypt(&bad, 0).unwrap_err();
        if i >= 1303 {
            assert_eq!(err, E2eError::AuthenticationFailed, "byte {i}");
        }
        assert_eq!(b.to_record(), before, "byte {i}");
    }
    for len in 0..m.len() {
        assert!(b.decrypt(&m[..len], 0).is_err());
    }
    assert_eq!(b.to_record(), before);
    assert_eq!(b.decrypt(&m, 0).unwrap(), b"integrity");
}

#[test]
fn messages_are_bound_to_both_addresses() {
    let mut rng = TestRng::new(9);
    let alice = party(0xA1, false, &mut rng);
    let mut bob = party(0xB0, false, &mut rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut rng,
    )
    .unwrap();
    let first = a.encrypt(b"for device 1", &mut rng, 0).unwrap();
    // The relay delivers it to another device of Bob's (same keys): the AD differs.
    let mut other_device = bob.address;
    other_device.device = DeviceId(2);
    let err = e2e::accept(
        &bob.identity,
        other_device,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    );
    assert_eq!(err.err(), Some(E2eError::AuthenticationFailed));
    // Or claims it came from another device of Alice's.
    let mut other_sender = alice.address;
    other_sender.device = DeviceId(7);
    let err = e2e::accept(
        &bob.identity,
        bob.address,
        other_sender,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    );
    assert_eq!(err.err(), Some(E2eError::AuthenticationFailed));
    assert!(bob.guard.is_empty());
    let ok = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    )
    .unwrap();
    assert_eq!(ok.plaintext, b"for device 1");
}

#[test]
fn bundles_are_verified_and_must_be_hybrid() {
    let mut rng = TestRng::new(10);
    let alice = party(0xA1, false, &mut rng);
    let bob = party(0xB0, false, &mut rng);
    let mallory = party(0x66, false, &mut rng);

    let mut no_kem = bob.bundle.clone();
    no_kem.kem_prekey = None;
    assert_eq!(
        e2e::initiate(
            &alice.identity,
            alice.address,
            &no_kem,
            bob.address,
            &mut rng
        )
        .err(),
        Some(E2eError::MissingKemPrekey)
    );
    let mut forged = bob.bundle.clone();
    forged.signed_prekey = mallory.bundle.signed_prekey.clone();
    assert_eq!(
        e2e::initiate(
            &alice.identity,
            alice.address,
            &forged,
            bob.address,
            &mut rng
        )
        .err(),
        Some(E2eError::BadSignature)
    );
    let mut forged = bob.bundle.clone();
    forged.kem_prekey = mallory.bundle.kem_prekey.clone();
    assert_eq!(
        e2e::initiate(
            &alice.identity,
            alice.address,
            &forged,
            bob.address,
            &mut rng
        )
        .err(),
        Some(E2eError::BadSignature)
    );
    assert_eq!(
        e2e::initiate(
            &alice.identity,
            alice.address,
            &mallory.bundle,
            bob.address,
            &mut rng
        )
        .err(),
        Some(E2eError::AddressMismatch)
    );
}

#[test]
fn accept_checks_the_sender_and_the_prekeys() {
    let mut rng = TestRng::new(11);
    let alice = party(0xA1, false, &mut rng);
    let mut bob = party(0xB0, false, &mut rng);
    let mallory = party(0x66, false, &mut rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut rng,
    )
    .unwrap();
    let first = a.encrypt(b"x", &mut rng, 0).unwrap();
    // The envelope claims another sender than the identity inside.
    let err = e2e::accept(
        &bob.identity,
        bob.address,
        mallory.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    );
    assert_eq!(err.err(), Some(E2eError::AddressMismatch));
    // Bob lost his prekeys.
    let empty = e2e::PrekeySecretStore::default();
    let err = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &empty,
        &mut bob.guard,
        0,
    );
    assert_eq!(err.err(), Some(E2eError::UnknownPrekey(PrekeyId(1))));
    assert!(bob.guard.is_empty());
    // A normal message is not a setup.
    let (_, _, mut a2, _) = established(&mut rng, false);
    let _ = a2.encrypt(b"", &mut rng, 0).unwrap();
}

#[test]
fn records_round_trip_and_refuse_unknown_versions() {
    let mut rng = TestRng::new(12);
    let (_, _, mut a, mut b) = established(&mut rng, true);
    let skipped = a.encrypt(b"later", &mut rng, 0).unwrap();
    let now = a.encrypt(b"now", &mut rng, 0).unwrap();
    b.decrypt(&now, 0).unwrap();
    for session in [&a, &b] {
        let record = session.to_record();
        let restored = Session::from_record(&record).unwrap();
        assert_eq!(*restored.to_record(), *record);
        let mut other = record.to_vec();
        other[0] = 2;
        assert_eq!(
            Session::from_record(&other).err(),
            Some(E2eError::UnsupportedVersion(2))
        );
        assert!(Session::from_record(&record[..record.len() - 1]).is_err());
    }
    let mut b2 = Session::from_record(&b.to_record()).unwrap();
    assert_eq!(b2.decrypt(&skipped, 0).unwrap(), b"later");
}

#[test]
fn skipped_keys_expire() {
    let mut rng = TestRng::new(13);
    let (_, _, mut a, mut b) = established(&mut rng, false);
    let late = a.encrypt(b"late", &mut rng, 0).unwrap();
    let first = a.encrypt(b"first", &mut rng, 0).unwrap();
    b.decrypt(&first, 1_000).unwrap();
    let before = b.to_record();
    assert_eq!(
        b.decrypt(&late, 1_000 + SKIPPED_KEY_MAX_AGE_MS + 1),
        Err(E2eError::Expired)
    );
    assert_eq!(b.to_record(), before);
    assert_eq!(
        b.decrypt(&late, 1_000 + SKIPPED_KEY_MAX_AGE_MS).unwrap(),
        b"late"
    );
}

#[test]
fn debug_output_is_redacted() {
    let mut rng = TestRng::new(14);
    let (_, bob, a, b) = established(&mut rng, false);
    let text = format!("{a:?} {b:?} {:?}", bob.prekeys);
    assert!(text.contains("redacted"));
    // The record is MessagePack with named fields: pick the root key and our ratchet
    // secret out of it (`<name> c4 20 <32 bytes>`) and look for them in the Debug output.
    let record = b.to_record();
    for name in [&b"root_key"[..], b"ratchet_key"] {
        let mut pattern = name.to_vec();
        pattern.extend_from_slice(&[0xc4, 0x20]);
        let at = record
            .windows(pattern.len())
            .position(|w| w == pattern.as_slice())
            .unwrap()
            + pattern.len();
        let secret = parley_protocol::to_hex(&record[at..at + 32]);
        assert!(!text.contains(&secret[..16]));
    }
}

/// The relay answers "who is @bob?" with Mallory's keys: the bundle verifies (Mallory
/// signed it), but the identity check reports the change and the safety number differs.
#[test]
fn prekey_substitution_is_detected() {
    let mut rng = TestRng::new(15);
    let alice = party(0xA1, false, &mut rng);
    let bob = party(0xB0, false, &mut rng);
    let mallory = party(0x66, false, &mut rng);
    let handle = Handle::parse("@bob").unwrap();

    let mut known = KnownIdentities::default();
    assert_eq!(
        known.check(handle.clone(), &bob.bundle.identity),
        Ok(IdentityCheck::New)
    );
    assert_eq!(
        known.check(handle.clone(), &bob.bundle.identity),
        Ok(IdentityCheck::Known)
    );
    let genuine = SafetyNumber::new(&alice.identity.public(), &bob.bundle.identity);

    // The substituted bundle is internally valid...
    assert_eq!(mallory.bundle.verify(), Ok(()));
    // ...but it is not the identity we know for @bob.
    assert_eq!(
        known.check(handle.clone(), &mallory.bundle.identity),
        Err(E2eError::IdentityChanged {
            previous: bob.address.account,
            presented: mallory.address.account,
        })
    );
    assert_eq!(
        known.get(&handle),
        Some(&bob.bundle.identity),
        "nothing stored"
    );
    let substituted = SafetyNumber::new(&alice.identity.public(), &mallory.bundle.identity);
    assert_ne!(genuine.digits(), substituted.digits());
    assert_eq!(genuine.matches_scanned(substituted.scannable()), Ok(false));
    // Bob's own view matches Alice's genuine number.
    let bobs_view = SafetyNumber::new(&bob.bundle.identity, &alice.identity.public());
    assert_eq!(genuine.matches_scanned(bobs_view.scannable()), Ok(true));
    assert_eq!(genuine.display(), bobs_view.display());

    // A substituted DH key under Bob's account does not even verify.
    let mut forged = bob.bundle.identity.clone();
    forged.dh = mallory.bundle.identity.dh;
    assert_eq!(known.check(handle, &forged), Err(E2eError::BadSignature));
}

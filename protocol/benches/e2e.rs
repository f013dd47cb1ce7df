//! Criterion benchmarks of end-to-end sessions: session setup (both sides), encryption and
//! decryption of a 200-byte message, and the safety number.
//!
//! `cargo bench -p parley-protocol --bench e2e -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use parley_protocol::e2e::safety_number::SafetyNumber;
use parley_protocol::e2e::{self, HandshakeGuard, KemPrekeySecret, PrekeySecretStore, Session};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, PrekeyId};
use parley_protocol::prekeys::{PrekeyBundle, PrekeySecret};
use rand_core::OsRng;

struct Device {
    identity: IdentityKeyPair,
    address: DeviceAddress,
    store: PrekeySecretStore,
    bundle: PrekeyBundle,
}

fn device() -> Device {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let address = DeviceAddress {
        account: identity.account_id(),
        device: DeviceId::PRIMARY,
    };
    let spk = PrekeySecret::generate(PrekeyId(1), &mut OsRng);
    let kem = KemPrekeySecret::generate(PrekeyId(2), &mut OsRng);
    let opk = PrekeySecret::generate(PrekeyId(3), &mut OsRng);
    let bundle = PrekeyBundle {
        identity: identity.public(),
        device: DeviceId::PRIMARY,
        signed_prekey: spk.signed_by(&identity),
        kem_prekey: Some(kem.signed_by(&identity)),
        one_time_prekey: Some(opk.one_time()),
    };
    let mut store = PrekeySecretStore::default();
    store.insert_signed(spk);
    store.insert_kem(kem);
    store.insert_one_time(opk);
    Device {
        identity,
        address,
        store,
        bundle,
    }
}

fn pair(alice: &Device, bob: &Device) -> (Session, Session) {
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        &mut OsRng,
    )
    .unwrap();
    let first = a.encrypt(b"hello", &mut OsRng, 0).unwrap();
    let accepted = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.store,
        &mut HandshakeGuard::default(),
        0,
    )
    .unwrap();
    let mut b = accepted.session;
    let reply = b.encrypt(b"hi", &mut OsRng, 0).unwrap();
    a.decrypt(&reply, 0).unwrap();
    (a, b)
}

fn benches(c: &mut Criterion) {
    let alice = device();
    let bob = device();
    let plaintext = [0x5a_u8; 200];

    c.bench_function(
        "setup/initiate (verify bundle, X3DH + ML-KEM encaps)",
        |bench| {
            bench.iter(|| {
                e2e::initiate(
                    &alice.identity,
                    alice.address,
                    &bob.bundle,
                    bob.address,
                    &mut OsRng,
                )
                .unwrap()
            })
        },
    );

    c.bench_function(
        "setup/accept (X3DH + ML-KEM decaps + first decrypt)",
        |bench| {
            bench.iter_batched(
                || {
                    let mut a = e2e::initiate(
                        &alice.identity,
                        alice.address,
                        &bob.bundle,
                        bob.address,
                        &mut OsRng,
                    )
                    .unwrap();
                    (
                        a.encrypt(&plaintext, &mut OsRng, 0).unwrap(),
                        HandshakeGuard::default(),
                    )
                },
                |(first, mut guard)| {
                    e2e::accept(
                        &bob.identity,
                        bob.address,
                        alice.address,
                        &first,
                        &bob.store,
                        &mut guard,
                        0,
                    )
                    .unwrap()
                },
                BatchSize::SmallInput,
            )
        },
    );

    // After `pair`, Bob's next message continues his chain, and Alice's next message
    // starts a new one (a DH ratchet step on both sides).
    let (a, b) = pair(&alice, &bob);
    let (a_record, b_record) = (a.to_record(), b.to_record());

    let mut sender = Session::from_record(&b_record).unwrap();
    c.bench_function("message/encrypt 200 B (same chain)", |bench| {
        bench.iter(|| {
            sender
                .encrypt(black_box(&plaintext), &mut OsRng, 0)
                .unwrap()
        })
    });

    c.bench_function("message/decrypt 200 B (same chain)", |bench| {
        bench.iter_batched(
            || {
                let mut b = Session::from_record(&b_record).unwrap();
                let m = b.encrypt(&plaintext, &mut OsRng, 0).unwrap();
                (Session::from_record(&a_record).unwrap(), m)
            },
            |(mut a, m)| a.decrypt(black_box(&m), 0).unwrap(),
            BatchSize::SmallInput,
        )
    });

    c.bench_function(
        "message/encrypt 200 B (new ratchet key: keygen + DH)",
        |bench| {
            bench.iter_batched(
                || Session::from_record(&a_record).unwrap(),
                |mut a| a.encrypt(black_box(&plaintext), &mut OsRng, 0).unwrap(),
                BatchSize::SmallInput,
            )
        },
    );

    c.bench_function("message/decrypt 200 B (DH ratchet step)", |bench| {
        bench.iter_batched(
            || {
                let mut a = Session::from_record(&a_record).unwrap();
                let m = a.encrypt(&plaintext, &mut OsRng, 0).unwrap();
                (Session::from_record(&b_record).unwrap(), m)
            },
            |(mut b, m)| b.decrypt(black_box(&m), 0).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let (alice_public, bob_public) = (alice.identity.public(), bob.identity.public());
    c.bench_function("safety_number (2 x 5200 SHA-512)", |bench| {
        bench.iter(|| SafetyNumber::new(black_box(&alice_public), black_box(&bob_public)))
    });
}

criterion_group!(e2e_benches, benches);
criterion_main!(e2e_benches);

//! Shared helpers for the end-to-end tests: a deterministic RNG, parties with prekeys, and
//! the vector file format.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use parley_protocol::e2e::{
    self, Accepted, HandshakeGuard, KemPrekeySecret, PrekeySecretStore, Session,
};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, PrekeyId};
use parley_protocol::prekeys::{PrekeyBundle, PrekeySecret};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// A deterministic RNG for tests and vectors (never for real keys):
/// block `i` = SHA-256("parley/test-rng" ‖ 0x00 ‖ seed (32) ‖ i (u64 BE)), consumed in order.
pub struct TestRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        let mut s = [0u8; 32];
        s[24..].copy_from_slice(&seed.to_be_bytes());
        TestRng::from_seed(s)
    }

    pub fn from_seed(seed: [u8; 32]) -> TestRng {
        TestRng {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == 32 {
                let mut h = Sha256::new();
                h.update(b"parley/test-rng\x00");
                h.update(self.seed);
                h.update(self.counter.to_be_bytes());
                self.block = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

/// One device with its identity and prekey secrets.
pub struct Party {
    pub identity: IdentityKeyPair,
    pub address: DeviceAddress,
    pub prekeys: PrekeySecretStore,
    pub guard: HandshakeGuard,
    pub bundle: PrekeyBundle,
}

/// A party from a one-byte seed: identity secret = `[seed; 64]`, signed prekey id 1,
/// KEM prekey id 2, one-time prekey id 3 (if `one_time`), secrets from `TestRng`.
pub fn party(seed: u8, one_time: bool, rng: &mut TestRng) -> Party {
    let identity = IdentityKeyPair::from_secret_bytes(&[seed; 64]);
    let address = DeviceAddress {
        account: identity.account_id(),
        device: DeviceId::PRIMARY,
    };
    let mut prekeys = PrekeySecretStore::default();
    let spk = PrekeySecret::generate(PrekeyId(1), rng);
    let kem = KemPrekeySecret::generate(PrekeyId(2), rng);
    let opk = PrekeySecret::generate(PrekeyId(3), rng);
    let bundle = PrekeyBundle {
        identity: identity.public(),
        device: DeviceId::PRIMARY,
        signed_prekey: spk.signed_by(&identity),
        kem_prekey: Some(kem.signed_by(&identity)),
        one_time_prekey: one_time.then(|| opk.one_time()),
    };
    prekeys.insert_signed(spk);
    prekeys.insert_kem(kem);
    if one_time {
        prekeys.insert_one_time(opk);
    }
    Party {
        identity,
        address,
        prekeys,
        guard: HandshakeGuard::default(),
        bundle,
    }
}

/// Alice initiates to Bob and Bob accepts her first message.
pub fn established(rng: &mut TestRng, one_time: bool) -> (Party, Party, Session, Session) {
    let alice = party(0xA1, false, rng);
    let mut bob = party(0xB0, one_time, rng);
    let mut a = e2e::initiate(
        &alice.identity,
        alice.address,
        &bob.bundle,
        bob.address,
        rng,
    )
    .unwrap();
    let first = a.encrypt(b"hello", rng, 0).unwrap();
    let Accepted {
        session, plaintext, ..
    } = e2e::accept(
        &bob.identity,
        bob.address,
        alice.address,
        &first,
        &bob.prekeys,
        &mut bob.guard,
        0,
    )
    .unwrap();
    assert_eq!(plaintext, b"hello");
    (alice, bob, a, session)
}

/// Parses the vector format: `[section]` lines and `key = hex` lines; `#` comments.
pub fn parse_vectors(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.to_owned(), Vec::new()));
        } else if let Some((k, v)) = line.split_once('=') {
            out.last_mut()
                .expect("field before section")
                .1
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// Path of a vector file.
pub fn vector_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Whether the generator should (re)write vector files.
pub fn regenerate() -> bool {
    std::env::var_os("PARLEY_REGENERATE_VECTORS").is_some_and(|v| v == "1")
}

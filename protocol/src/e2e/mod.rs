//! End-to-end sessions: hybrid X3DH (PQXDH-style) session setup and the Double Ratchet.
//!
//! This module owns everything a client needs to talk privately to one peer device:
//!
//! * [`initiate`] / [`accept`]: session setup from a [`PrekeyBundle`](crate::prekeys::PrekeyBundle)
//!   (X25519 ×3–4 plus one ML-KEM-768 encapsulation, PQXDH-style);
//! * [`Session`]: the Double Ratchet ([`Session::encrypt`], [`Session::decrypt`]) and its one
//!   versioned record ([`Session::to_record`], [`Session::from_record`]);
//! * [`message`]: the opaque bytes that travel inside a wire envelope;
//! * [`content`]: what is inside a decrypted message (text, cards, answers, receipts);
//! * [`safety_number`] and [`trust`]: detecting a relay that substitutes keys.
//!
//! It deliberately knows nothing about sockets, clocks, storage or the thread RNG: time is a
//! `now_ms` parameter (milliseconds since the Unix epoch) and randomness a
//! `&mut impl CryptoRngCore`. The server never uses this module.
//!
//! ```
//! use parley_protocol::e2e::{self, HandshakeGuard, KemPrekeySecret, PrekeySecretStore};
//! use parley_protocol::identity::IdentityKeyPair;
//! use parley_protocol::ids::{DeviceAddress, DeviceId, PrekeyId};
//! use parley_protocol::prekeys::{PrekeyBundle, PrekeySecret};
//! use rand_core::OsRng;
//!
//! # fn main() -> Result<(), e2e::E2eError> {
//! let (alice, bob) = (IdentityKeyPair::generate(&mut OsRng), IdentityKeyPair::generate(&mut OsRng));
//! let alice_addr = DeviceAddress { account: alice.account_id(), device: DeviceId::PRIMARY };
//! let bob_addr = DeviceAddress { account: bob.account_id(), device: DeviceId::PRIMARY };
//!
//! // Bob publishes prekeys and keeps their secrets.
//! let mut store = PrekeySecretStore::default();
//! let spk = PrekeySecret::generate(PrekeyId(1), &mut OsRng);
//! let kem = KemPrekeySecret::generate(PrekeyId(2), &mut OsRng);
//! let bundle = PrekeyBundle {
//!     identity: bob.public(),
//!     device: DeviceId::PRIMARY,
//!     signed_prekey: spk.signed_by(&bob),
//!     kem_prekey: Some(kem.signed_by(&bob)),
//!     one_time_prekey: None,
//! };
//! store.insert_signed(spk);
//! store.insert_kem(kem);
//!
//! // Alice starts a session and sends; her messages are prekey messages until Bob answers.
//! let mut to_bob = e2e::initiate(&alice, alice_addr, &bundle, bob_addr, &mut OsRng)?;
//! let first = to_bob.encrypt(b"hi Bob", &mut OsRng, 0)?;
//!
//! // Bob accepts the first message, which creates his session.
//! let mut guard = HandshakeGuard::default();
//! let accepted = e2e::accept(&bob, bob_addr, alice_addr, &first, &store, &mut guard, 0)?;
//! assert_eq!(accepted.plaintext, b"hi Bob");
//! let mut to_alice = accepted.session;
//!
//! let reply = to_alice.encrypt(b"hi Alice", &mut OsRng, 1)?;
//! assert_eq!(to_bob.decrypt(&reply, 1)?, b"hi Alice");
//!
//! // A replay is reported, and nothing changes.
//! assert_eq!(to_bob.decrypt(&reply, 2), Err(e2e::E2eError::Duplicate));
//! # Ok(())
//! # }
//! ```

mod associated_data;
mod chain_key;
pub mod content;
mod error;
mod handshake_guard;
mod kem;
pub mod limits;
pub mod message;
mod message_key;
mod ratchet;
mod ratchet_key;
mod receiver_chain;
pub mod record;
mod root_key;
pub mod safety_number;
mod session;
mod skipped_keys;
pub mod trust;
#[cfg(test)]
mod vectors;
mod x3dh;

pub use error::E2eError;
pub use handshake_guard::HandshakeGuard;
pub use kem::{check_encapsulation_key, InvalidKemKey, KemPrekeySecret};
pub use session::{accept, initiate, Accepted, PrekeySecretStore, PrekeySecrets, Session};

//! Key material of the local device: generating an identity with its first prekeys,
//! topping up one-time prekeys, and turning stored secrets back into prekey secrets for
//! session setup.

use parley_protocol::auth::register_transcript;
use parley_protocol::e2e::{KemPrekeySecret, PrekeySecretStore};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{Handle, PrekeyId};
use parley_protocol::prekeys::{OneTimePrekey, PrekeySecret};
use parley_protocol::wire::client::Register;
use parley_protocol::wire::server::Hello;
use rand_core::CryptoRngCore;

use crate::error::SdkError;
use crate::store::PrekeyRecords;

/// One-time prekeys generated at registration and at each top-up.
pub const ONE_TIME_PREKEY_BATCH: u32 = 100;

/// A new identity and everything its registration publishes.
#[derive(Debug)]
pub struct NewIdentity {
    /// The identity.
    pub identity: IdentityKeyPair,
    /// Secrets to store.
    pub records: PrekeyRecords,
    signed: PrekeySecret,
    kem: KemPrekeySecret,
    one_time: Vec<OneTimePrekey>,
}

impl NewIdentity {
    /// Generates an identity, a signed prekey, a KEM prekey and a batch of one-time
    /// prekeys.
    pub fn generate(rng: &mut impl CryptoRngCore) -> NewIdentity {
        let identity = IdentityKeyPair::generate(rng);
        let signed = PrekeySecret::generate(PrekeyId(1), rng);
        let kem = KemPrekeySecret::generate(PrekeyId(2), rng);
        let batch = one_time_batch(3, rng);
        let records = PrekeyRecords {
            signed: vec![(signed.id, signed.to_secret_bytes())],
            kem: vec![(kem.id(), kem.to_secret_bytes())],
            one_time: batch.secrets,
        };
        NewIdentity {
            identity,
            records,
            signed,
            kem,
            one_time: batch.publics,
        }
    }

    /// The signed `register` body for the challenge in `hello`.
    pub fn register_body(&self, hello: &Hello, handle: Option<&Handle>) -> Register {
        let public = self.identity.public();
        let transcript = register_transcript(&hello.server_id, &hello.nonce, &public, handle);
        Register {
            signature: self.identity.sign(&transcript),
            identity: public,
            handle: handle.cloned(),
            signed_prekey: self.signed.signed_by(&self.identity),
            kem_prekey: Some(self.kem.signed_by(&self.identity)),
            one_time_prekeys: self.one_time.clone(),
        }
    }
}

/// A batch of one-time prekeys.
#[derive(Debug)]
pub struct OneTimeBatch {
    /// Secrets to store.
    pub secrets: Vec<(PrekeyId, zeroize::Zeroizing<[u8; 32]>)>,
    /// Public halves to upload.
    pub publics: Vec<OneTimePrekey>,
}

/// A batch of one-time prekeys with ids from `first_id`.
pub fn one_time_batch(first_id: u32, rng: &mut impl CryptoRngCore) -> OneTimeBatch {
    let (secrets, publics) = (first_id..first_id.saturating_add(ONE_TIME_PREKEY_BATCH))
        .map(|id| {
            let secret = PrekeySecret::generate(PrekeyId(id), rng);
            ((secret.id, secret.to_secret_bytes()), secret.one_time())
        })
        .unzip();
    OneTimeBatch { secrets, publics }
}

/// The stored secrets as a prekey store for session setup.
pub fn prekey_store(records: &PrekeyRecords) -> Result<PrekeySecretStore, SdkError> {
    let mut store = PrekeySecretStore::default();
    for (id, secret) in &records.signed {
        store.insert_signed(PrekeySecret::from_secret_bytes(*id, **secret));
    }
    for (id, secret) in &records.one_time {
        store.insert_one_time(PrekeySecret::from_secret_bytes(*id, **secret));
    }
    for (id, secret) in &records.kem {
        store.insert_kem(KemPrekeySecret::from_secret_bytes(*id, secret)?);
    }
    Ok(store)
}

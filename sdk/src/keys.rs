//! Key material of the local device: generating an identity with its first prekeys (or,
//! for a linked device, only the prekeys), publishing them (in `register`, or in
//! `upload_prekeys` after linking), topping up one-time prekeys, and turning stored
//! secrets back into prekey secrets for session setup.

use parley_protocol::auth::register_transcript;
use parley_protocol::e2e::{KemPrekeySecret, PrekeySecretStore, PrekeySecrets};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{Handle, PrekeyId};
use parley_protocol::prekeys::{OneTimePrekey, PrekeySecret, SignedKemPrekey, SignedPrekey};
use parley_protocol::wire::client::{Register, UploadPrekeys};
use parley_protocol::wire::server::Hello;
use rand_core::CryptoRngCore;

use crate::error::SdkError;
use crate::store::PrekeyRecords;

/// One-time prekeys generated at registration and at each top-up.
pub const ONE_TIME_PREKEY_BATCH: u32 = 100;

/// A new identity with a signed prekey, a KEM prekey and a batch of one-time prekeys:
/// the secrets to store before registering.
pub fn generate_identity(rng: &mut impl CryptoRngCore) -> (IdentityKeyPair, PrekeyRecords) {
    let identity = IdentityKeyPair::generate(rng);
    (identity, generate_prekeys(rng))
}

/// A device's first prekeys: a signed prekey, a KEM prekey and a batch of one-time
/// prekeys. A new account's device 1 gets them with its identity; a linked device makes
/// its own for the account identity it received (they are signed when published).
pub fn generate_prekeys(rng: &mut impl CryptoRngCore) -> PrekeyRecords {
    let signed = PrekeySecret::generate(PrekeyId(1), rng);
    let kem = KemPrekeySecret::generate(PrekeyId(2), rng);
    let batch = one_time_batch(3, rng);
    PrekeyRecords {
        signed: vec![(signed.id, signed.to_secret_bytes())],
        kem: vec![(kem.id(), kem.to_secret_bytes())],
        one_time: batch.secrets,
    }
}

/// The public halves of a device's stored prekeys, signed by the account identity: what
/// `register` and a linked device's first `upload_prekeys` publish.
#[derive(Debug)]
pub struct PublishedPrekeys {
    /// The newest signed prekey.
    pub signed_prekey: SignedPrekey,
    /// The newest KEM prekey.
    pub kem_prekey: SignedKemPrekey,
    /// Every stored one-time prekey.
    pub one_time_prekeys: Vec<OneTimePrekey>,
}

/// Signs the public halves of `records` with `identity`.
pub fn published_prekeys(
    identity: &IdentityKeyPair,
    records: &PrekeyRecords,
) -> Result<PublishedPrekeys, SdkError> {
    let store = prekey_store(records)?;
    let (signed_id, _) = records
        .signed
        .last()
        .ok_or_else(|| SdkError::Storage("no signed prekey stored".into()))?;
    let (kem_id, _) = records
        .kem
        .last()
        .ok_or_else(|| SdkError::Storage("no KEM prekey stored".into()))?;
    let missing = || SdkError::Storage("stored prekeys are incomplete".into());
    let signed = store.signed_prekey(*signed_id).ok_or_else(missing)?;
    let kem = store.kem_prekey(*kem_id).ok_or_else(missing)?;
    Ok(PublishedPrekeys {
        signed_prekey: signed.signed_by(identity),
        kem_prekey: kem.signed_by(identity),
        one_time_prekeys: records
            .one_time
            .iter()
            .map(|(id, secret)| PrekeySecret::from_secret_bytes(*id, **secret).one_time())
            .collect(),
    })
}

/// The signed `register` body for the challenge in `hello`, publishing the stored
/// prekeys of `identity`.
pub fn register_body(
    identity: &IdentityKeyPair,
    records: &PrekeyRecords,
    hello: &Hello,
    handle: Option<&Handle>,
) -> Result<Register, SdkError> {
    let published = published_prekeys(identity, records)?;
    let public = identity.public();
    let transcript = register_transcript(&hello.server_id, &hello.nonce, &public, handle);
    Ok(Register {
        signature: identity.sign(&transcript),
        identity: public,
        handle: handle.cloned(),
        signed_prekey: published.signed_prekey,
        kem_prekey: Some(published.kem_prekey),
        one_time_prekeys: published.one_time_prekeys,
    })
}

/// The `upload_prekeys` body with which a linked device publishes its first prekeys
/// (the same ones [`register_body`] would publish).
pub fn first_upload_body(
    identity: &IdentityKeyPair,
    records: &PrekeyRecords,
) -> Result<UploadPrekeys, SdkError> {
    let published = published_prekeys(identity, records)?;
    Ok(UploadPrekeys {
        signed_prekey: Some(published.signed_prekey),
        kem_prekey: Some(published.kem_prekey),
        one_time_prekeys: published.one_time_prekeys,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::auth::register_transcript;
    use parley_protocol::ids::{Nonce, ServerId};
    use parley_protocol::signature;
    use rand_core::OsRng;

    fn hello() -> Hello {
        Hello {
            server_id: ServerId([0x11; 32]),
            nonce: Nonce([0x22; 32]),
            max_envelope_bytes: 65_536,
            auth_timeout_ms: 10_000,
        }
    }

    /// The relay refuses a registration without a KEM prekey, or with one no ML-KEM-768
    /// implementation accepts (`invalid_prekey`): the SDK never builds one.
    #[test]
    fn every_registration_carries_a_valid_signed_kem_prekey() {
        for _ in 0..16 {
            let (identity, records) = generate_identity(&mut OsRng);
            let register = register_body(&identity, &records, &hello(), None).unwrap();
            let account = identity.account_id();
            let kem = register.kem_prekey.expect("a KEM prekey");
            assert_eq!(kem.verify(&account), Ok(()));
            assert_eq!(kem.check_key(), Ok(()));
            assert_eq!(register.signed_prekey.verify(&account), Ok(()));
            let transcript =
                register_transcript(&hello().server_id, &hello().nonce, &register.identity, None);
            assert_eq!(
                signature::verify(&account, &transcript, &register.signature),
                Ok(())
            );
        }
    }

    #[test]
    fn a_linked_device_publishes_what_a_registration_would() {
        let (identity, records) = generate_identity(&mut OsRng);
        let register = register_body(&identity, &records, &hello(), None).unwrap();
        let upload = first_upload_body(&identity, &records).unwrap();
        assert_eq!(upload.signed_prekey, Some(register.signed_prekey));
        assert_eq!(upload.kem_prekey, register.kem_prekey);
        assert_eq!(upload.one_time_prekeys, register.one_time_prekeys);
        assert_eq!(
            upload.one_time_prekeys.len(),
            ONE_TIME_PREKEY_BATCH as usize
        );
    }

    #[test]
    fn without_a_stored_kem_prekey_no_registration_is_built() {
        let (identity, mut records) = generate_identity(&mut OsRng);
        records.kem.clear();
        assert!(register_body(&identity, &records, &hello(), None).is_err());
    }
}

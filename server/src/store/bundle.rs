//! A prekey bundle as the stores keep it (raw columns), and the one way it becomes a
//! [`PrekeyBundle`]: each store reads the rows with its SQL and calls
//! [`StoredBundle::decode`].

use parley_protocol::identity::{IdentityPublic, X25519Public};
use parley_protocol::ids::{DeviceAddress, PrekeyId};
use parley_protocol::prekeys::{OneTimePrekey, PrekeyBundle, SignedKemPrekey, SignedPrekey};
use parley_protocol::signature::Signature;

use super::values::corrupt;
use super::{BundleOutcome, StoreError};

/// `signed_prekeys.kind` of the signed X25519 prekey.
pub(crate) const KIND_SIGNED: i64 = 0;
/// `signed_prekeys.kind` of the signed ML-KEM prekey.
pub(crate) const KIND_KEM: i64 = 1;

/// A row of `signed_prekeys`: key id, public key, signature.
#[derive(Clone, Debug)]
pub(crate) struct SignedRow(pub u32, pub Vec<u8>, pub Vec<u8>);

/// What a store read for a bundle, undecoded.
#[derive(Clone, Debug)]
pub(crate) struct StoredBundle {
    /// `accounts.identity_dh`.
    pub identity_dh: Vec<u8>,
    /// `accounts.dh_signature`.
    pub dh_signature: Vec<u8>,
    /// The signed X25519 prekey.
    pub signed: SignedRow,
    /// The signed ML-KEM prekey, if the device has one.
    pub kem: Option<SignedRow>,
    /// The one-time prekey taken: id and public key.
    pub one_time: Option<(u32, Vec<u8>)>,
    /// One-time prekeys left.
    pub remaining: u32,
}

impl StoredBundle {
    /// The bundle of `device`.
    pub(crate) fn decode(self, device: &DeviceAddress) -> Result<BundleOutcome, StoreError> {
        let identity = IdentityPublic {
            account: device.account,
            dh: X25519Public::from_slice(&self.identity_dh)
                .ok_or_else(|| corrupt("accounts.identity_dh"))?,
            dh_signature: signature(&self.dh_signature, "accounts.dh_signature")?,
        };
        let SignedRow(id, public, sig) = self.signed;
        let signed_prekey = SignedPrekey {
            id: PrekeyId(id),
            public: X25519Public::from_slice(&public)
                .ok_or_else(|| corrupt("signed_prekeys.public"))?,
            signature: signature(&sig, "signed_prekeys.signature")?,
        };
        let kem_prekey = self
            .kem
            .map(|SignedRow(id, public, sig)| {
                Ok::<_, StoreError>(SignedKemPrekey {
                    id: PrekeyId(id),
                    public,
                    signature: signature(&sig, "signed_prekeys.signature")?,
                })
            })
            .transpose()?;
        let one_time_prekey = self
            .one_time
            .map(|(id, public)| {
                Ok::<_, StoreError>(OneTimePrekey {
                    id: PrekeyId(id),
                    public: X25519Public::from_slice(&public)
                        .ok_or_else(|| corrupt("one_time_prekeys.public"))?,
                })
            })
            .transpose()?;
        Ok(BundleOutcome::Found {
            bundle: PrekeyBundle {
                identity,
                device: device.device,
                signed_prekey,
                kem_prekey,
                one_time_prekey,
            },
            remaining: self.remaining,
        })
    }
}

fn signature(bytes: &[u8], what: &str) -> Result<Signature, StoreError> {
    Signature::from_slice(bytes).ok_or_else(|| corrupt(what))
}

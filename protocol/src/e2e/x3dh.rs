//! Session setup: X3DH with a post-quantum KEM share, in the manner of PQXDH.
//!
//! The initiator A, with identity `IK_A` and a fresh ephemeral key `EK_A`, and the
//! responder B's bundle (identity `IK_B`, signed prekey `SPK_B`, optional one-time prekey
//! `OPK_B`, signed ML-KEM-768 prekey `PQPK_B`):
//!
//! ```text
//! DH1 = X25519(IK_A.dh, SPK_B)      DH2 = X25519(EK_A, IK_B.dh)
//! DH3 = X25519(EK_A, SPK_B)         DH4 = X25519(EK_A, OPK_B)        (if OPK_B)
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
//!
//! KM   = 0xFF × 32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS
//! TH   = SHA-256(IK_A.account ‖ IK_A.dh ‖ IK_B.account ‖ IK_B.dh ‖ EK_A ‖ SPK_B [‖ OPK_B]
//!                ‖ PQPK_B (1184) ‖ CT (1088))
//! SK   = HKDF-SHA256(salt = 0x00 × 32, ikm = KM, info = "parley/v1/x3dh" ‖ 0x00 ‖ TH, L = 32)
//! ```
//!
//! Every DH output must be contributory (not all zeros). `TH` binds the keys and the KEM
//! ciphertext that went into `SK`, so neither side can be steered to the same `SK` with
//! different public values. `SK` becomes the Double Ratchet's first root key; the
//! responder's signed prekey is its first ratchet key (see [`ratchet`](super::ratchet)).
//!
//! This module does no signature checks and no lookups; [`initiate`](super::initiate) and
//! [`accept`](super::accept) do those first.

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::kem::{self, KemPrekeySecret};
use super::ratchet_key::diffie_hellman;
use super::root_key::RootKey;
use super::E2eError;
use crate::identity::{IdentityKeyPair, IdentityPublic, X25519Public};
use crate::prekeys::PrekeySecret;

/// HKDF info label of the handshake KDF (followed by `0x00 ‖ TH`).
pub(crate) const X3DH_INFO: &[u8] = b"parley/v1/x3dh";

/// The public values of one handshake, in `TH` order.
#[derive(Debug)]
pub(crate) struct HandshakePublics<'a> {
    pub(crate) initiator: &'a IdentityPublic,
    pub(crate) responder: &'a IdentityPublic,
    pub(crate) base_key: &'a X25519Public,
    pub(crate) signed_prekey: &'a X25519Public,
    pub(crate) one_time_prekey: Option<&'a X25519Public>,
    pub(crate) kem_public: &'a [u8],
    pub(crate) kem_ciphertext: &'a [u8],
}

impl HandshakePublics<'_> {
    /// `TH`.
    pub(crate) fn transcript_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.initiator.account.as_bytes());
        h.update(self.initiator.dh.as_bytes());
        h.update(self.responder.account.as_bytes());
        h.update(self.responder.dh.as_bytes());
        h.update(self.base_key.as_bytes());
        h.update(self.signed_prekey.as_bytes());
        if let Some(opk) = self.one_time_prekey {
            h.update(opk.as_bytes());
        }
        h.update(self.kem_public);
        h.update(self.kem_ciphertext);
        h.finalize().into()
    }
}

/// The secret inputs of the KDF, in `KM` order.
pub(crate) struct HandshakeSecrets {
    pub(crate) dh1: Zeroizing<[u8; 32]>,
    pub(crate) dh2: Zeroizing<[u8; 32]>,
    pub(crate) dh3: Zeroizing<[u8; 32]>,
    pub(crate) dh4: Option<Zeroizing<[u8; 32]>>,
    pub(crate) kem_shared: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for HandshakeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeSecrets(<redacted>)")
    }
}

/// The handshake KDF on its inputs: `SK`.
pub(crate) fn derive_shared_key(
    secrets: &HandshakeSecrets,
    publics: &HandshakePublics<'_>,
) -> Zeroizing<[u8; 32]> {
    let mut km = Zeroizing::new(Vec::with_capacity(32 * 6));
    km.extend_from_slice(&[0xFF; 32]);
    km.extend_from_slice(&*secrets.dh1);
    km.extend_from_slice(&*secrets.dh2);
    km.extend_from_slice(&*secrets.dh3);
    if let Some(dh4) = &secrets.dh4 {
        km.extend_from_slice(&**dh4);
    }
    km.extend_from_slice(&*secrets.kem_shared);
    let mut info = Vec::with_capacity(X3DH_INFO.len() + 33);
    info.extend_from_slice(X3DH_INFO);
    info.push(0);
    info.extend_from_slice(&publics.transcript_hash());
    let mut sk = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit, so `expand` cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &km).expand(&info, &mut *sk);
    sk
}

/// What the initiator computed: the first root key and what goes into the first message.
#[derive(Debug)]
pub(crate) struct InitiatorResult {
    pub(crate) root_key: RootKey,
    pub(crate) base_key: X25519Public,
    pub(crate) kem_ciphertext: Vec<u8>,
}

/// The initiator's side. The bundle's signatures must already be verified.
pub(crate) fn initiator(
    identity: &IdentityKeyPair,
    responder: &IdentityPublic,
    signed_prekey: &X25519Public,
    one_time_prekey: Option<&X25519Public>,
    kem_public: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<InitiatorResult, E2eError> {
    let ephemeral = StaticSecret::random_from_rng(&mut *rng);
    let base_key = X25519Public(x25519_dalek::PublicKey::from(&ephemeral).to_bytes());
    let (kem_ciphertext, kem_shared) = kem::encapsulate(kem_public, rng)?;
    let secrets = HandshakeSecrets {
        dh1: diffie_hellman(identity.dh_secret(), signed_prekey)?,
        dh2: diffie_hellman(&ephemeral, &responder.dh)?,
        dh3: diffie_hellman(&ephemeral, signed_prekey)?,
        dh4: one_time_prekey
            .map(|opk| diffie_hellman(&ephemeral, opk))
            .transpose()?,
        kem_shared,
    };
    let initiator_public = identity.public();
    let publics = HandshakePublics {
        initiator: &initiator_public,
        responder,
        base_key: &base_key,
        signed_prekey,
        one_time_prekey,
        kem_public,
        kem_ciphertext: &kem_ciphertext,
    };
    let sk = derive_shared_key(&secrets, &publics);
    Ok(InitiatorResult {
        root_key: RootKey::from_bytes(&sk),
        base_key,
        kem_ciphertext,
    })
}

/// The responder's secrets for one handshake, already looked up by id.
#[derive(Debug)]
pub(crate) struct ResponderKeys<'a> {
    pub(crate) identity: &'a IdentityKeyPair,
    pub(crate) signed_prekey: &'a PrekeySecret,
    pub(crate) one_time_prekey: Option<&'a PrekeySecret>,
    pub(crate) kem_prekey: &'a KemPrekeySecret,
}

/// The responder's side: `SK` from the initiator's identity, base key and KEM ciphertext.
pub(crate) fn responder(
    keys: &ResponderKeys<'_>,
    initiator: &IdentityPublic,
    base_key: &X25519Public,
    kem_ciphertext: &[u8],
) -> Result<RootKey, E2eError> {
    let secrets = HandshakeSecrets {
        dh1: diffie_hellman(keys.signed_prekey.secret(), &initiator.dh)?,
        dh2: diffie_hellman(keys.identity.dh_secret(), base_key)?,
        dh3: diffie_hellman(keys.signed_prekey.secret(), base_key)?,
        dh4: keys
            .one_time_prekey
            .map(|opk| diffie_hellman(opk.secret(), base_key))
            .transpose()?,
        kem_shared: keys.kem_prekey.decapsulate(kem_ciphertext)?,
    };
    let responder_public = keys.identity.public();
    let signed_public = keys.signed_prekey.public();
    let one_time_public = keys.one_time_prekey.map(PrekeySecret::public);
    let publics = HandshakePublics {
        initiator,
        responder: &responder_public,
        base_key,
        signed_prekey: &signed_public,
        one_time_prekey: one_time_public.as_ref(),
        kem_public: keys.kem_prekey.public(),
        kem_ciphertext,
    };
    Ok(RootKey::from_bytes(&derive_shared_key(&secrets, &publics)))
}

//! Linking a new device: the code the existing device shows, and the sealed hand-over of the
//! account secrets through the relay.
//!
//! ```text
//! code        = "parley-link:" ‖ base32(0x01 ‖ s (16) ‖ e_old (32))      Crockford, no padding
//! rendezvous  = HKDF-SHA256(salt = none, ikm = s, info = "parley/v1/link-rendezvous")[..16]
//! join mac    = HMAC-SHA256(HKDF(ikm = s, info = "parley/v1/link-join"), e_new)
//! secrets key = HKDF-SHA256(salt = s, ikm = X25519(e_old, e_new),
//!                           info = "parley/v1/link-secrets" ‖ e_old ‖ e_new)
//! sealed      = ChaCha20-Poly1305(secrets key, nonce = 0 (12), ad = rendezvous, LinkSecrets)
//! ```
//!
//! The relay sees the rendezvous id, both ephemeral public keys, the MAC and the sealed box.
//! Without `s` it cannot make a MAC for a key of its own (so it cannot stand in for the new
//! device), and without an ephemeral secret it cannot open the box. Each key is used for one
//! box only, so the fixed nonce is safe. The code is a bearer secret for its short lifetime
//! (ADR 0007).

use chacha20poly1305::aead::Aead;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::base32;
use super::list::SignedDeviceList;
use crate::fixed_bytes::fixed_bytes;
use crate::identity::{IdentityKeyPair, X25519Public};
use crate::ids::{DeviceId, Handle};
use crate::limits::MAX_NESTING_DEPTH;

/// What a linking code starts with, so that a person (and `parley link`) can tell it from
/// anything else pasted.
pub const LINK_CODE_PREFIX: &str = "parley-link:";

/// The format byte inside the code.
const LINK_CODE_FORMAT: u8 = 1;

const RENDEZVOUS_INFO: &[u8] = b"parley/v1/link-rendezvous";
const JOIN_MAC_INFO: &[u8] = b"parley/v1/link-join";
const SECRETS_INFO: &[u8] = b"parley/v1/link-secrets";

/// Largest sealed hand-over accepted: the secrets, a full device list and a handle, with room.
pub const MAX_SEALED_LINK_SECRETS_BYTES: usize = 4 * 1024;

fixed_bytes!(
    /// The random secret a linking code carries.
    LinkSecret,
    16
);

fixed_bytes!(
    /// The id under which the relay pairs the two ends of one linking exchange.
    RendezvousId,
    16
);

fixed_bytes!(
    /// The new device's proof that it read the code, over its ephemeral key.
    JoinMac,
    32
);

/// Why a linking step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a linking code (wrong prefix, characters, length or format).
    #[error("this is not a Parley linking code (it starts with '{LINK_CODE_PREFIX}')")]
    NotACode,
    /// The join's MAC does not match the code: someone without the code.
    #[error("the joining device did not prove it has the linking code")]
    BadJoin,
    /// The sealed secrets did not open or did not decode.
    #[error("the linked account's secrets could not be opened")]
    BadSeal,
}

/// What `parley link` shows: the secret and the existing device's ephemeral public key.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    /// Authenticates the exchange; never sent to the relay.
    pub secret: LinkSecret,
    /// The existing device's ephemeral X25519 key.
    pub public: X25519Public,
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCode")
            .field("secret", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

impl LinkCode {
    /// The text form, `parley-link:` and base32.
    pub fn encode(&self) -> String {
        let mut bytes = Zeroizing::new([0u8; 49]);
        bytes[0] = LINK_CODE_FORMAT;
        bytes[1..17].copy_from_slice(self.secret.as_bytes());
        bytes[17..].copy_from_slice(self.public.as_bytes());
        format!("{LINK_CODE_PREFIX}{}", base32::encode(&bytes[..]))
    }

    /// Parses the text form; case, spaces and dashes do not matter, nor `I`/`L` for `1` and
    /// `O` for `0` (Crockford).
    pub fn decode(text: &str) -> Result<LinkCode, LinkError> {
        let text = text.trim();
        let body = text
            .get(..LINK_CODE_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(LINK_CODE_PREFIX))
            .map(|_| &text[LINK_CODE_PREFIX.len()..])
            .ok_or(LinkError::NotACode)?;
        let bytes = Zeroizing::new(base32::decode(body).ok_or(LinkError::NotACode)?);
        if bytes.len() != 49 || bytes[0] != LINK_CODE_FORMAT {
            return Err(LinkError::NotACode);
        }
        Ok(LinkCode {
            secret: LinkSecret::from_slice(&bytes[1..17]).ok_or(LinkError::NotACode)?,
            public: X25519Public::from_slice(&bytes[17..]).ok_or(LinkError::NotACode)?,
        })
    }

    /// The rendezvous id both ends give the relay.
    pub fn rendezvous(&self) -> RendezvousId {
        rendezvous(&self.secret)
    }
}

fn rendezvous(secret: &LinkSecret) -> RendezvousId {
    let mut out = [0u8; 16];
    // 16 bytes is far below HKDF-SHA256's 8 160-byte ceiling: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, secret.as_bytes()).expand(RENDEZVOUS_INFO, &mut out);
    RendezvousId(out)
}

fn join_mac(secret: &LinkSecret, joiner: &X25519Public) -> Hmac<Sha256> {
    let mut key = Zeroizing::new([0u8; 32]);
    let _ = Hkdf::<Sha256>::new(None, secret.as_bytes()).expand(JOIN_MAC_INFO, &mut *key);
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*key).unwrap_or_else(|_| unreachable!());
    mac.update(joiner.as_bytes());
    mac
}

fn secrets_key(
    secret: &LinkSecret,
    shared: &x25519_dalek::SharedSecret,
    existing: &X25519Public,
    joiner: &X25519Public,
) -> Zeroizing<[u8; 32]> {
    let mut info = Vec::with_capacity(SECRETS_INFO.len() + 64);
    info.extend_from_slice(SECRETS_INFO);
    info.extend_from_slice(existing.as_bytes());
    info.extend_from_slice(joiner.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    let _ =
        Hkdf::<Sha256>::new(Some(secret.as_bytes()), shared.as_bytes()).expand(&info, &mut *key);
    key
}

/// The existing device's half of a linking exchange: made by `parley link`, kept in memory
/// until the new device joins or the code expires.
pub struct LinkOffer {
    code: LinkCode,
    ephemeral: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for LinkOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOffer")
            .field("code", &self.code)
            .finish()
    }
}

impl LinkOffer {
    /// A fresh secret and ephemeral key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> LinkOffer {
        let mut secret = [0u8; 16];
        rng.fill_bytes(&mut secret);
        let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rng);
        let public = X25519Public(x25519_dalek::PublicKey::from(&ephemeral).to_bytes());
        let code = LinkCode {
            secret: LinkSecret(secret),
            public,
        };
        secret.zeroize();
        LinkOffer { code, ephemeral }
    }

    /// The code to show.
    pub fn code(&self) -> &LinkCode {
        &self.code
    }

    /// Checks the new device's join: its MAC over `joiner` proves it read the code. The
    /// existing device checks this before it publishes a list naming the new device;
    /// [`LinkOffer::seal`] checks it again.
    pub fn check_join(&self, joiner: &X25519Public, mac: &JoinMac) -> Result<(), LinkError> {
        join_mac(&self.code.secret, joiner)
            .verify_slice(mac.as_bytes())
            .map_err(|_| LinkError::BadJoin)
    }

    /// Checks the new device's join and seals `secrets` for it.
    pub fn seal(
        &self,
        joiner: &X25519Public,
        mac: &JoinMac,
        secrets: &LinkSecrets,
    ) -> Result<Vec<u8>, LinkError> {
        self.check_join(joiner, mac)?;
        let shared = self
            .ephemeral
            .diffie_hellman(&x25519_dalek::PublicKey::from(joiner.0));
        if !shared.was_contributory() {
            return Err(LinkError::BadJoin);
        }
        let key = secrets_key(&self.code.secret, &shared, &self.code.public, joiner);
        let plaintext = secrets.encode();
        aead(&key)
            .encrypt(
                &chacha20poly1305::Nonce::default(),
                chacha20poly1305::aead::Payload {
                    msg: &plaintext,
                    aad: self.code.rendezvous().as_bytes(),
                },
            )
            .map_err(|_| LinkError::BadSeal)
    }
}

/// The new device's half: made from the code it was given.
pub struct LinkJoin {
    code: LinkCode,
    ephemeral: x25519_dalek::StaticSecret,
    public: X25519Public,
}

impl std::fmt::Debug for LinkJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkJoin")
            .field("code", &self.code)
            .field("public", &self.public)
            .finish()
    }
}

impl LinkJoin {
    /// A fresh ephemeral key for joining with `code`.
    pub fn new(code: LinkCode, rng: &mut impl CryptoRngCore) -> LinkJoin {
        let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rng);
        let public = X25519Public(x25519_dalek::PublicKey::from(&ephemeral).to_bytes());
        LinkJoin {
            code,
            ephemeral,
            public,
        }
    }

    /// The rendezvous id to present to the relay.
    pub fn rendezvous(&self) -> RendezvousId {
        self.code.rendezvous()
    }

    /// This device's ephemeral key, to send.
    pub fn public(&self) -> X25519Public {
        self.public
    }

    /// The proof that this device read the code, to send with the key.
    pub fn mac(&self) -> JoinMac {
        let tag = join_mac(&self.code.secret, &self.public)
            .finalize()
            .into_bytes();
        JoinMac(tag.into())
    }

    /// Opens what the existing device sealed.
    pub fn open(&self, sealed: &[u8]) -> Result<LinkSecrets, LinkError> {
        if sealed.len() > MAX_SEALED_LINK_SECRETS_BYTES {
            return Err(LinkError::BadSeal);
        }
        let shared = self
            .ephemeral
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.code.public.0));
        if !shared.was_contributory() {
            return Err(LinkError::BadSeal);
        }
        let key = secrets_key(&self.code.secret, &shared, &self.code.public, &self.public);
        let plaintext = Zeroizing::new(
            aead(&key)
                .decrypt(
                    &chacha20poly1305::Nonce::default(),
                    chacha20poly1305::aead::Payload {
                        msg: sealed,
                        aad: self.rendezvous().as_bytes(),
                    },
                )
                .map_err(|_| LinkError::BadSeal)?,
        );
        LinkSecrets::decode(&plaintext)
    }
}

fn aead(key: &[u8; 32]) -> chacha20poly1305::ChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    chacha20poly1305::ChaCha20Poly1305::new(key.into())
}

/// What the new device receives: the account identity, its device id, the signed list that
/// names it, and the account's handle.
pub struct LinkSecrets {
    /// [`IdentityKeyPair::to_secret_bytes`] of the account.
    pub identity: Zeroizing<[u8; 64]>,
    /// The id the new device takes.
    pub device: DeviceId,
    /// The list, signed by the account, on which `device` appears.
    pub list: SignedDeviceList,
    /// The account's handle, if it has one.
    pub handle: Option<Handle>,
}

impl std::fmt::Debug for LinkSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSecrets")
            .field("identity", &"<redacted>")
            .field("device", &self.device)
            .field("list", &self.list)
            .field("handle", &self.handle)
            .finish()
    }
}

#[derive(Serialize)]
struct SecretsOut<'a> {
    #[serde(with = "serde_bytes")]
    identity: &'a [u8],
    device: DeviceId,
    list: &'a SignedDeviceList,
    handle: Option<&'a Handle>,
}

#[derive(Deserialize)]
struct SecretsIn {
    identity: serde_bytes::ByteBuf,
    device: DeviceId,
    list: SignedDeviceList,
    handle: Option<Handle>,
}

impl LinkSecrets {
    /// Takes the account's identity for the hand-over.
    pub fn new(
        identity: &IdentityKeyPair,
        device: DeviceId,
        list: SignedDeviceList,
        handle: Option<Handle>,
    ) -> LinkSecrets {
        LinkSecrets {
            identity: identity.to_secret_bytes(),
            device,
            list,
            handle,
        }
    }

    /// The account identity.
    pub fn identity(&self) -> IdentityKeyPair {
        IdentityKeyPair::from_secret_bytes(&self.identity)
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let out = SecretsOut {
            identity: &self.identity[..],
            device: self.device,
            list: &self.list,
            handle: self.handle.as_ref(),
        };
        // Serializing a struct of plain fields into a Vec cannot fail.
        Zeroizing::new(rmp_serde::to_vec_named(&out).unwrap_or_default())
    }

    /// Decodes and checks: the identity is the list's account, and the device is on the
    /// list the account signed.
    fn decode(bytes: &[u8]) -> Result<LinkSecrets, LinkError> {
        let mut rest = bytes;
        let mut decoded = {
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            de.set_max_depth(MAX_NESTING_DEPTH);
            SecretsIn::deserialize(&mut de).map_err(|_| LinkError::BadSeal)?
        };
        let identity = <[u8; 64]>::try_from(&decoded.identity[..]).map(Zeroizing::new);
        decoded.identity.zeroize();
        let identity = identity.map_err(|_| LinkError::BadSeal)?;
        let secrets = LinkSecrets {
            identity,
            device: decoded.device,
            list: decoded.list,
            handle: decoded.handle,
        };
        let account = secrets.identity().account_id();
        if !rest.is_empty()
            || secrets.list.list.account != account
            || secrets.list.verify().is_err()
            || !secrets.list.list.contains(secrets.device)
        {
            return Err(LinkError::BadSeal);
        }
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;
    use crate::devices::list::{DeviceEntry, DeviceList};

    fn alice() -> IdentityKeyPair {
        IdentityKeyPair::from_secret_bytes(&[1; 64])
    }

    fn secrets_for(identity: &IdentityKeyPair) -> LinkSecrets {
        let list = DeviceList {
            account: identity.account_id(),
            version: 1,
            devices: vec![
                DeviceEntry {
                    device: DeviceId(1),
                    name: "phone".into(),
                    linked_at_ms: 1,
                },
                DeviceEntry {
                    device: DeviceId(2),
                    name: "laptop".into(),
                    linked_at_ms: 2,
                },
            ],
        }
        .sign(identity)
        .unwrap();
        LinkSecrets::new(identity, DeviceId(2), list, Handle::parse("alice").ok())
    }

    #[test]
    fn the_new_device_receives_the_account_secrets() {
        let offer = LinkOffer::generate(&mut OsRng);
        let code = LinkCode::decode(&offer.code().encode()).unwrap();
        assert_eq!(code, *offer.code());
        let join = LinkJoin::new(code, &mut OsRng);
        assert_eq!(join.rendezvous(), offer.code().rendezvous());

        let sealed = offer
            .seal(&join.public(), &join.mac(), &secrets_for(&alice()))
            .unwrap();
        let opened = join.open(&sealed).unwrap();
        assert_eq!(opened.identity().account_id(), alice().account_id());
        assert_eq!(opened.device, DeviceId(2));
        assert_eq!(opened.handle.as_ref().map(Handle::as_str), Some("alice"));
        assert!(
            !sealed
                .windows(32)
                .any(|w| w == &alice().to_secret_bytes()[..32]),
            "the identity seed is not in the sealed bytes"
        );
    }

    #[test]
    fn a_relay_without_the_code_cannot_join_in_the_new_devices_place() {
        let offer = LinkOffer::generate(&mut OsRng);
        let join = LinkJoin::new(offer.code().clone(), &mut OsRng);
        // The relay replaces the joiner's key with its own, keeping the MAC it saw.
        let relay = LinkJoin::new(
            LinkCode {
                secret: LinkSecret([9; 16]),
                public: offer.code().public,
            },
            &mut OsRng,
        );
        assert_eq!(
            offer
                .seal(&relay.public(), &join.mac(), &secrets_for(&alice()))
                .unwrap_err(),
            LinkError::BadJoin
        );
        assert_eq!(
            offer.check_join(&relay.public(), &join.mac()),
            Err(LinkError::BadJoin)
        );
        assert_eq!(offer.check_join(&join.public(), &join.mac()), Ok(()));
        // Or makes a MAC with a guessed secret.
        assert_eq!(
            offer
                .seal(&relay.public(), &relay.mac(), &secrets_for(&alice()))
                .unwrap_err(),
            LinkError::BadJoin
        );
    }

    #[test]
    fn only_the_joining_device_opens_the_seal() {
        let offer = LinkOffer::generate(&mut OsRng);
        let join = LinkJoin::new(offer.code().clone(), &mut OsRng);
        let sealed = offer
            .seal(&join.public(), &join.mac(), &secrets_for(&alice()))
            .unwrap();
        // Someone else who read the code, but not the joiner's ephemeral secret.
        let other = LinkJoin::new(offer.code().clone(), &mut OsRng);
        assert_eq!(other.open(&sealed).unwrap_err(), LinkError::BadSeal);
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(join.open(&flipped).unwrap_err(), LinkError::BadSeal);
    }

    #[test]
    fn secrets_naming_a_device_off_the_signed_list_are_refused() {
        let offer = LinkOffer::generate(&mut OsRng);
        let join = LinkJoin::new(offer.code().clone(), &mut OsRng);
        let mut secrets = secrets_for(&alice());
        secrets.device = DeviceId(7);
        let sealed = offer.seal(&join.public(), &join.mac(), &secrets).unwrap();
        assert_eq!(join.open(&sealed).unwrap_err(), LinkError::BadSeal);
    }

    #[test]
    fn codes_decode_leniently_and_refuse_what_is_not_a_code() {
        let offer = LinkOffer::generate(&mut OsRng);
        let text = offer.code().encode();
        let body = &text[LINK_CODE_PREFIX.len()..];
        let lowered = format!("  PARLEY-LINK:{}  ", body.to_lowercase());
        assert_eq!(LinkCode::decode(&lowered).unwrap(), *offer.code());
        let dashed: String = body
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i % 5 == 0 && i > 0).then_some('-').into_iter().chain([c]))
            .collect();
        assert_eq!(
            LinkCode::decode(&format!("{LINK_CODE_PREFIX}{dashed}")).unwrap(),
            *offer.code()
        );
        for bad in [
            "",
            "parley-link:",
            body,
            &text[..text.len() - 1],
            &format!("{text}00"),
            "parley-link:UUUU",
        ] {
            assert_eq!(LinkCode::decode(bad), Err(LinkError::NotACode), "{bad:?}");
        }
    }

    #[test]
    fn a_code_with_another_format_byte_is_refused() {
        let mut bytes = [0u8; 49];
        bytes[0] = 2;
        let text = format!("{LINK_CODE_PREFIX}{}", base32::encode(&bytes));
        assert_eq!(LinkCode::decode(&text), Err(LinkError::NotACode));
    }
}

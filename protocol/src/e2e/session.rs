//! A session with one peer device: setup ([`initiate`], [`accept`]), then
//! [`Session::encrypt`] and [`Session::decrypt`].
//!
//! * Until the initiator decrypts its first reply, every message it sends is a prekey
//!   message carrying the [`SessionSetup`], so the responder can set up the session from
//!   whichever of them arrives first.
//! * The responder routes a prekey message to the stored session whose
//!   [`Session::base_key`] it names (see [`Session::belongs`]), and otherwise to
//!   [`accept`]; a setup accepted before is refused with [`E2eError::DuplicateSetup`].
//! * Decryption is transactional: the ratchet is copied, moved forward on the copy, and
//!   swapped in only after the tag verified. Any error leaves the session byte-identical
//!   (as seen through [`Session::to_record`]).
//!
//! The SDK should persist, in one transaction and before acknowledging the envelope to the
//! relay: the session record, the [`HandshakeGuard`] after an [`accept`], and the deletion
//! of a used one-time prekey ([`Accepted::used_one_time_prekey`]).

use std::collections::BTreeMap;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::associated_data::{associated_data, Direction};
use super::handshake_guard::HandshakeGuard;
use super::kem::KemPrekeySecret;
use super::limits::MAX_PLAINTEXT_BYTES;
use super::message::{
    authenticated_prefix, E2eMessage, NormalMessage, PrekeyMessage, SessionSetup,
};
use super::ratchet::DoubleRatchet;
use super::ratchet_key::RatchetKeyPair;
use super::skipped_keys::SkippedKeys;
use super::x3dh::{self, ResponderKeys};
use super::E2eError;
use crate::identity::{IdentityKeyPair, IdentityPublic, X25519Public};
use crate::ids::{DeviceAddress, PrekeyId};
use crate::prekeys::{PrekeyBundle, PrekeySecret};

/// Where the responder's prekey secrets come from, looked up by the ids a prekey message
/// names. `None` means "not held" (used, retired or never published).
pub trait PrekeySecrets {
    /// A signed prekey secret.
    fn signed_prekey(&self, id: PrekeyId) -> Option<&PrekeySecret>;
    /// A one-time prekey secret that has not been used.
    fn one_time_prekey(&self, id: PrekeyId) -> Option<&PrekeySecret>;
    /// A KEM prekey secret.
    fn kem_prekey(&self, id: PrekeyId) -> Option<&KemPrekeySecret>;
}

/// A simple in-memory [`PrekeySecrets`].
#[derive(Debug, Default)]
pub struct PrekeySecretStore {
    signed: BTreeMap<PrekeyId, PrekeySecret>,
    one_time: BTreeMap<PrekeyId, PrekeySecret>,
    kem: BTreeMap<PrekeyId, KemPrekeySecret>,
}

impl PrekeySecretStore {
    /// Adds a signed prekey secret.
    pub fn insert_signed(&mut self, secret: PrekeySecret) {
        self.signed.insert(secret.id, secret);
    }
    /// Adds a one-time prekey secret.
    pub fn insert_one_time(&mut self, secret: PrekeySecret) {
        self.one_time.insert(secret.id, secret);
    }
    /// Adds a KEM prekey secret.
    pub fn insert_kem(&mut self, secret: KemPrekeySecret) {
        self.kem.insert(secret.id(), secret);
    }
    /// Deletes a used one-time prekey.
    pub fn remove_one_time(&mut self, id: PrekeyId) -> Option<PrekeySecret> {
        self.one_time.remove(&id)
    }
}

impl PrekeySecrets for PrekeySecretStore {
    fn signed_prekey(&self, id: PrekeyId) -> Option<&PrekeySecret> {
        self.signed.get(&id)
    }
    fn one_time_prekey(&self, id: PrekeyId) -> Option<&PrekeySecret> {
        self.one_time.get(&id)
    }
    fn kem_prekey(&self, id: PrekeyId) -> Option<&KemPrekeySecret> {
        self.kem.get(&id)
    }
}

/// Which side of the setup a session was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator,
    Responder,
}

/// An end-to-end session with one peer device.
#[derive(Debug)]
pub struct Session {
    pub(crate) role: Role,
    pub(crate) local_identity: IdentityPublic,
    pub(crate) remote_identity: IdentityPublic,
    pub(crate) local: DeviceAddress,
    pub(crate) remote: DeviceAddress,
    pub(crate) base_key: X25519Public,
    /// The initiator's setup, sent with every message until the first reply arrives.
    pub(crate) pending_setup: Option<SessionSetup>,
    pub(crate) ratchet: DoubleRatchet,
    pub(crate) skipped: SkippedKeys,
}

/// Starts a session with `remote` from its prekey bundle, as the initiator.
///
/// Verifies every signature in the bundle and that it belongs to `remote`, and requires a
/// KEM prekey (version 1 sessions are always hybrid). Check the bundle's identity against
/// the one you know first ([`trust`](super::trust)). The first [`Session::encrypt`] yields
/// the prekey message.
pub fn initiate(
    identity: &IdentityKeyPair,
    local: DeviceAddress,
    bundle: &PrekeyBundle,
    remote: DeviceAddress,
    rng: &mut impl CryptoRngCore,
) -> Result<Session, E2eError> {
    if bundle.identity.account != remote.account || bundle.device != remote.device {
        return Err(E2eError::AddressMismatch);
    }
    if identity.account_id() != local.account {
        return Err(E2eError::AddressMismatch);
    }
    bundle.verify().map_err(|_| E2eError::BadSignature)?;
    let kem = bundle
        .kem_prekey
        .as_ref()
        .ok_or(E2eError::MissingKemPrekey)?;
    let one_time = bundle.one_time_prekey.as_ref();
    let result = x3dh::initiator(
        identity,
        &bundle.identity,
        &bundle.signed_prekey.public,
        one_time.map(|k| &k.public),
        &kem.public,
        rng,
    )?;
    let ratchet = DoubleRatchet::initiator(&result.root_key, &bundle.signed_prekey.public, rng)?;
    let local_identity = identity.public();
    Ok(Session {
        role: Role::Initiator,
        pending_setup: Some(SessionSetup {
            identity: local_identity.clone(),
            base_key: result.base_key,
            signed_prekey: bundle.signed_prekey.id,
            one_time_prekey: one_time.map(|k| k.id),
            kem_prekey: kem.id,
            kem_ciphertext: result.kem_ciphertext,
        }),
        local_identity,
        remote_identity: bundle.identity.clone(),
        local,
        remote,
        base_key: result.base_key,
        ratchet,
        skipped: SkippedKeys::default(),
    })
}

/// A session created from a prekey message, and the message it carried.
#[derive(Debug)]
pub struct Accepted {
    /// The new session.
    pub session: Session,
    /// The first message's plaintext.
    pub plaintext: Vec<u8>,
    /// The one-time prekey the setup used: delete it (with the session and guard stored).
    pub used_one_time_prekey: Option<PrekeyId>,
}

/// Accepts a prekey message from `remote` (the envelope's authenticated sender), as the
/// responder, creating a session.
///
/// Refuses a setup already in `guard` ([`E2eError::DuplicateSetup`]), an identity that is
/// not `remote`'s or whose signature fails, unknown prekey ids, and a message whose tag
/// does not verify. Only on success is the base key added to `guard`.
pub fn accept(
    identity: &IdentityKeyPair,
    local: DeviceAddress,
    remote: DeviceAddress,
    message: &[u8],
    prekeys: &impl PrekeySecrets,
    guard: &mut HandshakeGuard,
    now_ms: u64,
) -> Result<Accepted, E2eError> {
    let E2eMessage::Prekey(PrekeyMessage { setup, message }) = E2eMessage::decode(message)? else {
        return Err(E2eError::Malformed("expected a prekey message"));
    };
    if identity.account_id() != local.account {
        return Err(E2eError::AddressMismatch);
    }
    if setup.identity.account != remote.account {
        return Err(E2eError::AddressMismatch);
    }
    if guard.contains(&setup.base_key) {
        return Err(E2eError::DuplicateSetup);
    }
    setup
        .identity
        .verify()
        .map_err(|_| E2eError::BadSignature)?;
    let signed_prekey = prekeys
        .signed_prekey(setup.signed_prekey)
        .ok_or(E2eError::UnknownPrekey(setup.signed_prekey))?;
    let one_time_prekey = match setup.one_time_prekey {
        Some(id) => Some(
            prekeys
                .one_time_prekey(id)
                .ok_or(E2eError::UnknownPrekey(id))?,
        ),
        None => None,
    };
    let kem_prekey = prekeys
        .kem_prekey(setup.kem_prekey)
        .ok_or(E2eError::UnknownPrekey(setup.kem_prekey))?;
    let keys = ResponderKeys {
        identity,
        signed_prekey,
        one_time_prekey,
        kem_prekey,
    };
    let root_key = x3dh::responder(
        &keys,
        &setup.identity,
        &setup.base_key,
        &setup.kem_ciphertext,
    )?;
    let ratchet = DoubleRatchet::responder(
        root_key,
        RatchetKeyPair::from_secret_bytes(&signed_prekey.to_secret_bytes()),
        message.header.ratchet_key,
    );
    let mut session = Session {
        role: Role::Responder,
        local_identity: identity.public(),
        remote_identity: setup.identity.clone(),
        local,
        remote,
        base_key: setup.base_key,
        pending_setup: None,
        ratchet,
        skipped: SkippedKeys::default(),
    };
    let used_one_time_prekey = setup.one_time_prekey;
    let plaintext = session.decrypt_parsed(Some(&setup), &message, now_ms)?;
    guard.insert(setup.base_key);
    Ok(Accepted {
        session,
        plaintext,
        used_one_time_prekey,
    })
}

impl Session {
    /// Encrypts `plaintext` (at most [`MAX_PLAINTEXT_BYTES`]) into the bytes for a wire
    /// envelope: a prekey message until the peer has answered, a normal message after.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
        now_ms: u64,
    ) -> Result<Vec<u8>, E2eError> {
        if plaintext.len() > MAX_PLAINTEXT_BYTES {
            return Err(E2eError::Limit("plaintext"));
        }
        let (header, key) = self.ratchet.next_sending_key(rng)?;
        let prefix = authenticated_prefix(self.pending_setup.as_ref(), &header);
        let ad = associated_data(self.sending_direction(), &prefix);
        let ciphertext = key.encrypt(&ad, plaintext)?;
        self.skipped.prune(now_ms);
        let mut out = prefix;
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a message from the peer. On any error the session is unchanged;
    /// [`E2eError::Duplicate`] means the message was already shown.
    pub fn decrypt(&mut self, message: &[u8], now_ms: u64) -> Result<Vec<u8>, E2eError> {
        match E2eMessage::decode(message)? {
            E2eMessage::Normal(normal) => self.decrypt_parsed(None, &normal, now_ms),
            E2eMessage::Prekey(PrekeyMessage { setup, message }) => {
                if !self.owns_setup(&setup) {
                    return Err(E2eError::SessionMismatch);
                }
                self.decrypt_parsed(Some(&setup), &message, now_ms)
            }
        }
    }

    /// Whether `message` is a prekey message for this session (or a normal message, which
    /// only a session can decrypt). A prekey message for another setup goes to [`accept`].
    pub fn belongs(&self, message: &[u8]) -> bool {
        match E2eMessage::decode(message) {
            Ok(E2eMessage::Prekey(p)) => self.owns_setup(&p.setup),
            Ok(E2eMessage::Normal(_)) => true,
            Err(_) => false,
        }
    }

    fn owns_setup(&self, setup: &SessionSetup) -> bool {
        self.role == Role::Responder
            && setup.base_key == self.base_key
            && setup.identity == self.remote_identity
    }

    fn decrypt_parsed(
        &mut self,
        setup: Option<&SessionSetup>,
        message: &NormalMessage,
        now_ms: u64,
    ) -> Result<Vec<u8>, E2eError> {
        let header = &message.header;
        let prefix = authenticated_prefix(setup, header);
        let ad = associated_data(self.receiving_direction(), &prefix);

        if let Some(position) = self
            .skipped
            .find(&header.ratchet_key, header.counter, now_ms)?
        {
            let key = self
                .skipped
                .get(position)
                .ok_or(E2eError::Encoding("skipped key vanished".to_owned()))?;
            let plaintext = key.decrypt(&ad, &message.ciphertext)?;
            self.skipped.remove(position);
            self.commit_received(now_ms);
            return Ok(plaintext);
        }

        let mut ratchet = self.ratchet.duplicate();
        let mut newly_skipped = Vec::new();
        let key = ratchet.receiving_key(header, &mut newly_skipped)?;
        let plaintext = key.decrypt(&ad, &message.ciphertext)?;
        self.ratchet = ratchet;
        self.skipped.extend(newly_skipped, now_ms);
        self.commit_received(now_ms);
        Ok(plaintext)
    }

    fn commit_received(&mut self, now_ms: u64) {
        self.pending_setup = None;
        self.skipped.prune(now_ms);
    }

    fn sending_direction(&self) -> Direction<'_> {
        Direction {
            sender: &self.local_identity,
            recipient: &self.remote_identity,
            sender_address: &self.local,
            recipient_address: &self.remote,
        }
    }

    fn receiving_direction(&self) -> Direction<'_> {
        Direction {
            sender: &self.remote_identity,
            recipient: &self.local_identity,
            sender_address: &self.remote,
            recipient_address: &self.local,
        }
    }

    /// The peer's identity, as verified at setup.
    pub fn remote_identity(&self) -> &IdentityPublic {
        &self.remote_identity
    }

    /// Our identity.
    pub fn local_identity(&self) -> &IdentityPublic {
        &self.local_identity
    }

    /// The peer device.
    pub fn remote_address(&self) -> DeviceAddress {
        self.remote
    }

    /// Our device.
    pub fn local_address(&self) -> DeviceAddress {
        self.local
    }

    /// The initiator's base key, which names this session's setup.
    pub fn base_key(&self) -> X25519Public {
        self.base_key
    }

    /// Whether we started this session (and, if so, whether the peer has answered yet:
    /// see [`Session::awaiting_reply`]).
    pub fn is_initiator(&self) -> bool {
        self.role == Role::Initiator
    }

    /// Whether our messages still carry the session setup (the peer has not answered).
    pub fn awaiting_reply(&self) -> bool {
        self.pending_setup.is_some()
    }

    /// The number of skipped message keys stored.
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.len()
    }

    /// The session record: the only serialization of session secrets. See
    /// [`record`](super::record) for the layout.
    pub fn to_record(&self) -> Zeroizing<Vec<u8>> {
        super::record::encode(self)
    }

    /// Restores a session from [`Session::to_record`]. Refuses unknown versions and
    /// records that break an invariant. Never panics.
    pub fn from_record(bytes: &[u8]) -> Result<Session, E2eError> {
        super::record::decode(bytes)
    }
}

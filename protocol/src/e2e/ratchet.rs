//! The Double Ratchet state machine (without skipped keys, which live in
//! [`skipped_keys`](super::skipped_keys)).
//!
//! ```text
//! initiator after setup:  RK, CKs = KDF_RK(SK, DH(DHs, SPK_B))   Sending::Active
//! responder after setup:  RK = SK, DHs = SPK_B                    Sending::AwaitingStep
//! ```
//!
//! Receiving a message with a new ratchet key `DHr'` stores the rest of the current
//! receiving chain up to `PN`, then `RK, CKr = KDF_RK(RK, DH(DHs, DHr'))`. Our own new
//! ratchet key is generated lazily, at the next send: `DHs' = new;
//! RK, CKs = KDF_RK(RK, DH(DHs', DHr'))`. This is the specification's order of KDF
//! steps, so decryption needs no randomness and is a pure function of state and input.
//!
//! Receiving never mutates the live state: the session works on
//! [`DoubleRatchet::duplicate`] and swaps it in only after the tag verified.

use std::collections::VecDeque;

use rand_core::CryptoRngCore;

use super::chain_key::ChainKey;
use super::limits::{MAX_RECEIVER_CHAINS, MAX_RETIRED_CHAINS, MAX_SKIP};
use super::message::Header;
use super::message_key::MessageKey;
use super::ratchet_key::RatchetKeyPair;
use super::receiver_chain::{ReceiverChain, Skipped};
use super::root_key::RootKey;
use super::E2eError;
use crate::identity::X25519Public;

/// The sending half.
#[derive(Debug)]
pub(crate) enum Sending {
    /// We can send on this chain with our current ratchet key.
    Active(ChainKey),
    /// The peer moved to `remote`; our next send first makes a new ratchet key.
    AwaitingStep {
        /// The peer's newest ratchet key.
        remote: X25519Public,
    },
}

/// Root key, our ratchet key, the sending state and the receiving chains (newest first).
#[derive(Debug)]
pub(crate) struct DoubleRatchet {
    pub(crate) root_key: RootKey,
    pub(crate) ratchet_key: RatchetKeyPair,
    pub(crate) sending: Sending,
    /// `PN`: the length of our previous sending chain.
    pub(crate) previous_counter: u32,
    pub(crate) receivers: VecDeque<ReceiverChain>,
    /// Ratchet keys of receiving chains dropped from `receivers`, newest first.
    pub(crate) retired: VecDeque<X25519Public>,
}

impl DoubleRatchet {
    /// The initiator's state after setup: a sending chain towards the responder's signed
    /// prekey, nothing received yet.
    pub(crate) fn initiator(
        shared_key: &RootKey,
        remote_signed_prekey: &X25519Public,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DoubleRatchet, E2eError> {
        let ratchet_key = RatchetKeyPair::generate(rng);
        let dh = ratchet_key.diffie_hellman(remote_signed_prekey)?;
        let (root_key, chain) = shared_key.advance(&dh);
        Ok(DoubleRatchet {
            root_key,
            ratchet_key,
            sending: Sending::Active(chain),
            previous_counter: 0,
            receivers: VecDeque::new(),
            retired: VecDeque::new(),
        })
    }

    /// The responder's state after setup: its signed prekey is the first ratchet key.
    pub(crate) fn responder(
        shared_key: RootKey,
        signed_prekey: RatchetKeyPair,
        remote_ratchet_key: X25519Public,
    ) -> DoubleRatchet {
        DoubleRatchet {
            root_key: shared_key,
            ratchet_key: signed_prekey,
            sending: Sending::AwaitingStep {
                remote: remote_ratchet_key,
            },
            previous_counter: 0,
            receivers: VecDeque::new(),
            retired: VecDeque::new(),
        }
    }

    /// The next message key and header for sending. Every fallible step runs before the
    /// state changes, so an error leaves it untouched.
    pub(crate) fn next_sending_key(
        &mut self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Header, MessageKey), E2eError> {
        if let Sending::AwaitingStep { remote } = &self.sending {
            let ratchet_key = RatchetKeyPair::generate(rng);
            let dh = ratchet_key.diffie_hellman(remote)?;
            let (root_key, chain) = self.root_key.advance(&dh);
            self.root_key = root_key;
            self.ratchet_key = ratchet_key;
            self.sending = Sending::Active(chain);
        }
        let Sending::Active(chain) = &mut self.sending else {
            return Err(E2eError::Encoding("sending chain missing".to_owned()));
        };
        let key = chain.step()?;
        let header = Header {
            ratchet_key: self.ratchet_key.public(),
            previous_counter: self.previous_counter,
            counter: key.index(),
        };
        Ok((header, key))
    }

    /// The message key for `header`, moving chains as needed and collecting skipped keys.
    /// Call it on a [`duplicate`](Self::duplicate); on error, drop the copy.
    pub(crate) fn receiving_key(
        &mut self,
        header: &Header,
        skipped: &mut Vec<Skipped>,
    ) -> Result<MessageKey, E2eError> {
        if let Some(chain) = self
            .receivers
            .iter_mut()
            .find(|c| c.ratchet_key() == &header.ratchet_key)
        {
            return chain.key_for(header.counter, skipped);
        }

        // A chain we forgot: its messages were decrypted or their keys discarded.
        if self.retired.contains(&header.ratchet_key) {
            return Err(E2eError::Duplicate);
        }

        // A new ratchet key. Check both jumps before deriving anything.
        if header.counter > MAX_SKIP {
            return Err(E2eError::TooFarAhead);
        }
        if let Some(current) = self.receivers.front() {
            if !current.within_skip_limit(header.previous_counter) {
                return Err(E2eError::TooFarAhead);
            }
        }
        if let Some(current) = self.receivers.front_mut() {
            current.skip_until(header.previous_counter, skipped)?;
        }
        let dh = self.ratchet_key.diffie_hellman(&header.ratchet_key)?;
        let (root_key, chain) = self.root_key.advance(&dh);
        let mut receiver = ReceiverChain::new(header.ratchet_key, chain);
        let key = receiver.key_for(header.counter, skipped)?;

        self.root_key = root_key;
        self.receivers.push_front(receiver);
        while self.receivers.len() > MAX_RECEIVER_CHAINS {
            if let Some(old) = self.receivers.pop_back() {
                self.retired.push_front(*old.ratchet_key());
            }
        }
        self.retired.truncate(MAX_RETIRED_CHAINS);
        if let Sending::Active(chain) = &self.sending {
            self.previous_counter = chain.index();
        }
        self.sending = Sending::AwaitingStep {
            remote: header.ratchet_key,
        };
        Ok(key)
    }

    /// A full copy, for decrypting transactionally.
    pub(crate) fn duplicate(&self) -> DoubleRatchet {
        DoubleRatchet {
            root_key: self.root_key.duplicate(),
            ratchet_key: self.ratchet_key.duplicate(),
            sending: match &self.sending {
                Sending::Active(chain) => Sending::Active(chain.duplicate()),
                Sending::AwaitingStep { remote } => Sending::AwaitingStep { remote: *remote },
            },
            previous_counter: self.previous_counter,
            receivers: self
                .receivers
                .iter()
                .map(ReceiverChain::duplicate)
                .collect(),
            retired: self.retired.clone(),
        }
    }
}

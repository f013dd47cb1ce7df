//! A receiving chain: the peer's ratchet public key and the chain key for its messages.
//!
//! Moving a chain forward to a counter yields the message key for that counter and the
//! keys of the messages it jumps over (to be stored as skipped keys). The jump is checked
//! against [`MAX_SKIP`] *before* anything is derived.

use super::chain_key::ChainKey;
use super::limits::MAX_SKIP;
use super::message_key::MessageKey;
use super::E2eError;
use crate::identity::X25519Public;

/// A message key that was derived ahead of its message, and the chain it belongs to.
#[derive(Debug)]
pub(crate) struct Skipped {
    pub(crate) ratchet_key: X25519Public,
    pub(crate) key: MessageKey,
}

/// One receiving chain.
#[derive(Debug)]
pub(crate) struct ReceiverChain {
    ratchet_key: X25519Public,
    chain_key: ChainKey,
}

impl ReceiverChain {
    pub(crate) fn new(ratchet_key: X25519Public, chain_key: ChainKey) -> ReceiverChain {
        ReceiverChain {
            ratchet_key,
            chain_key,
        }
    }

    pub(crate) fn ratchet_key(&self) -> &X25519Public {
        &self.ratchet_key
    }

    pub(crate) fn chain_key(&self) -> &ChainKey {
        &self.chain_key
    }

    /// Whether moving to `counter` stays within [`MAX_SKIP`]; counters already passed
    /// need no derivation and are always within.
    pub(crate) fn within_skip_limit(&self, counter: u32) -> bool {
        counter.saturating_sub(self.chain_key.index()) <= MAX_SKIP
    }

    /// Stores the keys of every message before `until` that this chain has not reached
    /// yet (the rest of a chain the peer has finished, `PN`).
    pub(crate) fn skip_until(
        &mut self,
        until: u32,
        skipped: &mut Vec<Skipped>,
    ) -> Result<(), E2eError> {
        if !self.within_skip_limit(until) {
            return Err(E2eError::TooFarAhead);
        }
        while self.chain_key.index() < until {
            skipped.push(Skipped {
                ratchet_key: self.ratchet_key,
                key: self.chain_key.step()?,
            });
        }
        Ok(())
    }

    /// The message key for `counter`, storing the keys of the messages jumped over.
    /// A counter this chain has already passed is a [`E2eError::Duplicate`] (the caller
    /// looked for a skipped key first).
    pub(crate) fn key_for(
        &mut self,
        counter: u32,
        skipped: &mut Vec<Skipped>,
    ) -> Result<MessageKey, E2eError> {
        if counter < self.chain_key.index() {
            return Err(E2eError::Duplicate);
        }
        self.skip_until(counter, skipped)?;
        self.chain_key.step()
    }

    pub(crate) fn duplicate(&self) -> ReceiverChain {
        ReceiverChain::new(self.ratchet_key, self.chain_key.duplicate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_past_max_skip_derives_nothing() {
        let mut chain = ReceiverChain::new(X25519Public([1; 32]), ChainKey::new(&[2; 32], 10));
        let mut skipped = Vec::new();
        assert_eq!(
            chain.key_for(10 + MAX_SKIP + 1, &mut skipped).err(),
            Some(E2eError::TooFarAhead)
        );
        assert_eq!(
            chain.key_for(u32::MAX, &mut skipped).err(),
            Some(E2eError::TooFarAhead)
        );
        assert!(skipped.is_empty());
        assert_eq!(chain.chain_key().index(), 10);
        // Exactly MAX_SKIP is allowed.
        let key = chain.key_for(10 + MAX_SKIP, &mut skipped).unwrap();
        assert_eq!(key.index(), 10 + MAX_SKIP);
        assert_eq!(skipped.len(), MAX_SKIP as usize);
        assert_eq!(
            chain.key_for(12, &mut Vec::new()).err(),
            Some(E2eError::Duplicate)
        );
    }
}

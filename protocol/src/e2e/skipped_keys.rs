//! Message keys kept for messages that have not arrived yet (out-of-order delivery).
//!
//! Keys are kept in arrival order, oldest first, with the time they were stored. Three
//! bounds apply: at most [`MAX_SKIPPED_KEYS`] keys (the oldest are dropped first), at most
//! [`SKIPPED_KEY_MAX_AGE_MS`] old (expired keys are dropped when the session next changes,
//! and refused with [`E2eError::Expired`] before that), and each key is used once.

use std::collections::VecDeque;

use super::limits::{MAX_SKIPPED_KEYS, SKIPPED_KEY_MAX_AGE_MS};
use super::message_key::MessageKey;
use super::receiver_chain::Skipped;
use super::E2eError;
use crate::identity::X25519Public;

/// One stored key.
#[derive(Debug)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: X25519Public,
    pub(crate) key: MessageKey,
    pub(crate) stored_at_ms: u64,
}

impl SkippedKey {
    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.stored_at_ms) > SKIPPED_KEY_MAX_AGE_MS
    }
}

/// The skipped keys of one session.
#[derive(Debug, Default)]
pub(crate) struct SkippedKeys {
    keys: VecDeque<SkippedKey>,
}

impl SkippedKeys {
    pub(crate) fn from_keys(keys: Vec<SkippedKey>) -> SkippedKeys {
        SkippedKeys { keys: keys.into() }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &SkippedKey> {
        self.keys.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The position of the key for `(ratchet_key, counter)`, refusing an expired one.
    pub(crate) fn find(
        &self,
        ratchet_key: &X25519Public,
        counter: u32,
        now_ms: u64,
    ) -> Result<Option<usize>, E2eError> {
        match self
            .keys
            .iter()
            .position(|k| k.key.index() == counter && &k.ratchet_key == ratchet_key)
        {
            Some(i) if self.keys.get(i).is_some_and(|k| k.expired(now_ms)) => {
                Err(E2eError::Expired)
            }
            found => Ok(found),
        }
    }

    pub(crate) fn get(&self, position: usize) -> Option<&MessageKey> {
        self.keys.get(position).map(|k| &k.key)
    }

    pub(crate) fn remove(&mut self, position: usize) {
        self.keys.remove(position);
    }

    /// Stores newly skipped keys, then enforces the count bound.
    pub(crate) fn extend(&mut self, skipped: Vec<Skipped>, now_ms: u64) {
        self.keys.extend(skipped.into_iter().map(|s| SkippedKey {
            ratchet_key: s.ratchet_key,
            key: s.key,
            stored_at_ms: now_ms,
        }));
        while self.keys.len() > MAX_SKIPPED_KEYS {
            self.keys.pop_front();
        }
    }

    /// Drops expired keys.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        self.keys.retain(|k| !k.expired(now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(counter: u32) -> Skipped {
        Skipped {
            ratchet_key: X25519Public([1; 32]),
            key: MessageKey::new(&[2; 32], counter),
        }
    }

    #[test]
    fn count_and_age_are_bounded() {
        let mut keys = SkippedKeys::default();
        keys.extend((0..MAX_SKIPPED_KEYS as u32 + 5).map(skipped).collect(), 0);
        assert_eq!(keys.len(), MAX_SKIPPED_KEYS);
        let k = X25519Public([1; 32]);
        assert_eq!(keys.find(&k, 0, 0), Ok(None), "oldest dropped first");
        assert_eq!(keys.find(&k, 5, 0), Ok(Some(0)));
        let late = SKIPPED_KEY_MAX_AGE_MS + 1;
        assert_eq!(keys.find(&k, 5, late), Err(E2eError::Expired));
        keys.prune(late);
        assert_eq!(keys.len(), 0);
    }
}

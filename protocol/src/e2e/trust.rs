//! Which identity we know for each peer, and the check that reports a change.
//!
//! Handles and contact lists come from the relay, so a relay can answer "who is @alice?"
//! with a key of its own. The SDK keeps the identity it first saw (trust on first use, or
//! one verified with a [`SafetyNumber`](super::safety_number::SafetyNumber)) and checks
//! every bundle and every prekey message against it. A different identity is
//! [`E2eError::IdentityChanged`]: nothing is stored and no session should be started
//! until the user (or a business policy) accepts the new identity.

use std::collections::BTreeMap;

use super::E2eError;
use crate::identity::IdentityPublic;

/// The outcome of a successful identity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityCheck {
    /// No identity was known for this peer.
    New,
    /// The presented identity is the known one.
    Known,
}

/// Compares a presented identity with the known one (if any). Verifies the presented
/// identity's own signature first.
pub fn check_identity(
    known: Option<&IdentityPublic>,
    presented: &IdentityPublic,
) -> Result<IdentityCheck, E2eError> {
    presented.verify().map_err(|_| E2eError::BadSignature)?;
    match known {
        None => Ok(IdentityCheck::New),
        Some(k) if k.account == presented.account && k.dh == presented.dh => {
            Ok(IdentityCheck::Known)
        }
        Some(k) => Err(E2eError::IdentityChanged {
            previous: k.account,
            presented: presented.account,
        }),
    }
}

/// Known identities by peer (a handle, a contact id: whatever the SDK names peers by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownIdentities<K: Ord> {
    known: BTreeMap<K, IdentityPublic>,
}

impl<K: Ord> Default for KnownIdentities<K> {
    fn default() -> Self {
        KnownIdentities {
            known: BTreeMap::new(),
        }
    }
}

impl<K: Ord> KnownIdentities<K> {
    /// The identity known for `peer`.
    pub fn get(&self, peer: &K) -> Option<&IdentityPublic> {
        self.known.get(peer)
    }

    /// Checks `presented` for `peer`, remembering it if the peer was new (trust on first
    /// use). A changed identity is refused and not stored.
    pub fn check(
        &mut self,
        peer: K,
        presented: &IdentityPublic,
    ) -> Result<IdentityCheck, E2eError> {
        let outcome = check_identity(self.known.get(&peer), presented)?;
        if outcome == IdentityCheck::New {
            self.known.insert(peer, presented.clone());
        }
        Ok(outcome)
    }

    /// Replaces the identity of `peer` after the user accepted the change.
    pub fn accept_change(&mut self, peer: K, presented: &IdentityPublic) -> Result<(), E2eError> {
        presented.verify().map_err(|_| E2eError::BadSignature)?;
        self.known.insert(peer, presented.clone());
        Ok(())
    }
}

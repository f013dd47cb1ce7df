//! Replay protection for session setup.
//!
//! A prekey message names its session by the initiator's base key. The responder
//! remembers the base key of every setup it accepted, so a replayed first message is
//! refused with [`E2eError::DuplicateSetup`] instead of creating a second session and
//! showing the message twice. One-time prekeys give the same protection while they
//! exist; the guard also covers setups that used only the signed prekey.
//!
//! The guard is public data (no secrets). It has its own small versioned encoding so the
//! SDK can store it in the same transaction as the new session:
//!
//! ```text
//! version (1) = 0x01 ‖ count × base_key (32), oldest first
//! ```

use std::collections::{HashSet, VecDeque};

use super::limits::MAX_REMEMBERED_HANDSHAKES;
use super::E2eError;
use crate::identity::X25519Public;

const GUARD_VERSION: u8 = 1;

/// The base keys of accepted session setups, bounded by [`MAX_REMEMBERED_HANDSHAKES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeGuard {
    order: VecDeque<X25519Public>,
    seen: HashSet<X25519Public>,
}

impl HandshakeGuard {
    /// Whether a setup with this base key was accepted.
    pub fn contains(&self, base_key: &X25519Public) -> bool {
        self.seen.contains(base_key)
    }

    /// Number of remembered setups.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no setup is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn insert(&mut self, base_key: X25519Public) {
        if self.seen.insert(base_key) {
            self.order.push_back(base_key);
        }
        while self.order.len() > MAX_REMEMBERED_HANDSHAKES {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// The versioned encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 * self.order.len());
        out.push(GUARD_VERSION);
        for key in &self.order {
            out.extend_from_slice(key.as_bytes());
        }
        out
    }

    /// Parses [`HandshakeGuard::to_bytes`]. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<HandshakeGuard, E2eError> {
        let (&version, keys) = bytes
            .split_first()
            .ok_or(E2eError::Malformed("handshake guard"))?;
        if version != GUARD_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        if keys.len() % 32 != 0 || keys.len() / 32 > MAX_REMEMBERED_HANDSHAKES {
            return Err(E2eError::Malformed("handshake guard"));
        }
        let mut guard = HandshakeGuard::default();
        for chunk in keys.chunks_exact(32) {
            let key =
                X25519Public::from_slice(chunk).ok_or(E2eError::Malformed("handshake guard"))?;
            if guard.contains(&key) {
                return Err(E2eError::Malformed("handshake guard"));
            }
            guard.insert(key);
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let mut guard = HandshakeGuard::default();
        guard.insert(X25519Public([1; 32]));
        guard.insert(X25519Public([2; 32]));
        guard.insert(X25519Public([1; 32]));
        assert_eq!(guard.len(), 2);
        let bytes = guard.to_bytes();
        assert_eq!(HandshakeGuard::from_bytes(&bytes), Ok(guard));
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            HandshakeGuard::from_bytes(&v2),
            Err(E2eError::UnsupportedVersion(2))
        );
        assert!(HandshakeGuard::from_bytes(&[1, 0]).is_err());
        assert!(HandshakeGuard::from_bytes(&[]).is_err());
    }
}

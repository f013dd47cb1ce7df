//! Safety numbers: a fingerprint of two identities that both people can compare, out of
//! band, to detect a relay that substituted keys.
//!
//! For each identity (Signal's iterated-hash construction, with our own label):
//!
//! ```text
//! h_0   = SHA-512("parley/v1/safety-number" ‖ 0x00 ‖ account (32) ‖ dh (32))
//! h_i+1 = SHA-512(h_i ‖ account ‖ dh)                     for i in 0..5200
//! fp    = first 32 bytes of h_5200
//! ```
//!
//! The two fingerprints are ordered by their bytes (so both sides get the same result):
//!
//! * **digits**: for each fingerprint in order, its first 30 bytes as six 5-byte
//!   big-endian integers, each `mod 100000`, written as 5 digits: 60 digits in all,
//!   shown as 12 groups of 5;
//! * **scannable** (for a QR code): `0x01 (version) ‖ fp_low (32) ‖ fp_high (32)`,
//!   compared in constant time.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::E2eError;
use crate::identity::IdentityPublic;

/// Label of the first hash.
pub const SAFETY_NUMBER_LABEL: &[u8] = b"parley/v1/safety-number";
/// Number of iterated hashes; makes a brute-force search for a colliding identity slow.
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;
/// Version byte of the scannable form.
pub const SCANNABLE_VERSION: u8 = 1;
/// Length of the scannable form.
pub const SCANNABLE_BYTES: usize = 65;

/// The safety number of two identities; equal on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    scannable: [u8; SCANNABLE_BYTES],
}

/// The 32-byte fingerprint of one identity.
pub fn fingerprint(identity: &IdentityPublic) -> [u8; 32] {
    let mut h = Sha512::new();
    h.update(SAFETY_NUMBER_LABEL);
    h.update([0u8]);
    h.update(identity.account.as_bytes());
    h.update(identity.dh.as_bytes());
    let mut hash = h.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(identity.account.as_bytes());
        h.update(identity.dh.as_bytes());
        hash = h.finalize();
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&hash[..32]);
    out
}

fn digits_of(fp: &[u8; 32], out: &mut String) {
    for chunk in fp[..30].chunks_exact(5) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", value % 100_000));
    }
}

impl SafetyNumber {
    /// The safety number of `ours` and `theirs` (order does not matter).
    pub fn new(ours: &IdentityPublic, theirs: &IdentityPublic) -> SafetyNumber {
        let (a, b) = (fingerprint(ours), fingerprint(theirs));
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut digits = String::with_capacity(60);
        digits_of(&low, &mut digits);
        digits_of(&high, &mut digits);
        let mut scannable = [0u8; SCANNABLE_BYTES];
        scannable[0] = SCANNABLE_VERSION;
        scannable[1..33].copy_from_slice(&low);
        scannable[33..].copy_from_slice(&high);
        SafetyNumber { digits, scannable }
    }

    /// The 60 digits, without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits in 12 groups of 5, separated by spaces, for display.
    pub fn display(&self) -> String {
        let groups: Vec<&str> = (0..12)
            .filter_map(|i| self.digits.get(i * 5..i * 5 + 5))
            .collect();
        groups.join(" ")
    }

    /// The compact form for a QR code.
    pub fn scannable(&self) -> &[u8; SCANNABLE_BYTES] {
        &self.scannable
    }

    /// Compares a scanned code with ours in constant time. `Ok(false)` means the keys
    /// differ (warn the user); an error means the code is not a Parley safety number.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool, E2eError> {
        match scanned.first() {
            None => Err(E2eError::Malformed("safety number")),
            Some(&v) if v != SCANNABLE_VERSION => Err(E2eError::UnsupportedVersion(v)),
            Some(_) if scanned.len() != SCANNABLE_BYTES => {
                Err(E2eError::Malformed("safety number"))
            }
            Some(_) => Ok(bool::from(self.scannable.ct_eq(scanned))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKeyPair;

    #[test]
    fn both_sides_agree_and_a_substitute_differs() {
        let alice = IdentityKeyPair::from_secret_bytes(&[1; 64]).public();
        let bob = IdentityKeyPair::from_secret_bytes(&[2; 64]).public();
        let mallory = IdentityKeyPair::from_secret_bytes(&[3; 64]).public();
        let ab = SafetyNumber::new(&alice, &bob);
        assert_eq!(ab, SafetyNumber::new(&bob, &alice));
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(ab.display().len(), 71);
        assert_ne!(ab, SafetyNumber::new(&alice, &mallory));
        assert_eq!(
            ab.matches_scanned(SafetyNumber::new(&bob, &alice).scannable()),
            Ok(true)
        );
        assert_eq!(
            ab.matches_scanned(SafetyNumber::new(&mallory, &alice).scannable()),
            Ok(false)
        );
        assert!(ab.matches_scanned(&[1, 2, 3]).is_err());
        assert_eq!(
            ab.matches_scanned(&[9; 65]),
            Err(E2eError::UnsupportedVersion(9))
        );
    }
}

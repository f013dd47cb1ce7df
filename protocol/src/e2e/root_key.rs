//! The root key of the Double Ratchet and its KDF, `KDF_RK`.
//!
//! ```text
//! KDF_RK(rk, dh) = HKDF-SHA256(salt = rk, ikm = dh, info = "parley/v1/ratchet", L = 64)
//!                = rk' (32) ‖ ck (32)
//! ```

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::chain_key::ChainKey;

/// HKDF info of `KDF_RK`.
pub(crate) const RATCHET_INFO: &[u8] = b"parley/v1/ratchet";

/// The root key: each DH ratchet step mixes a new DH output into it.
pub(crate) struct RootKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> RootKey {
        RootKey(Zeroizing::new(*bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// One `KDF_RK` step: the next root key and a new chain key (starting at counter 0).
    pub(crate) fn advance(&self, dh_output: &[u8; 32]) -> (RootKey, ChainKey) {
        let (root, chain) = kdf_rk(&self.0, dh_output);
        (RootKey(root), ChainKey::new(&chain, 0))
    }

    pub(crate) fn duplicate(&self) -> RootKey {
        RootKey::from_bytes(&self.0)
    }
}

/// `KDF_RK` on bytes.
pub(crate) fn kdf_rk(
    root_key: &[u8; 32],
    dh_output: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA256's 8160-byte limit, so `expand` cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(root_key), dh_output).expand(RATCHET_INFO, &mut *okm);
    let mut root = Zeroizing::new([0u8; 32]);
    let mut chain = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    (root, chain)
}

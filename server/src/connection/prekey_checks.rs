//! What the relay checks on a published KEM prekey, in `register` and `upload_prekeys`.
//!
//! Clients refuse a bundle without a KEM prekey they can encapsulate to (version 1
//! sessions are always hybrid), so a device publishing none, or one that fails FIPS 203's
//! encapsulation-key check, could never be written to and its owner would never learn
//! why. The relay refuses such a prekey up front: a bad signature is `invalid_signature`,
//! a key no ML-KEM-768 implementation accepts is `invalid_prekey`. The length is not
//! checked here: a key of another length does not decode (`malformed_frame`).

use parley_protocol::ids::AccountId;
use parley_protocol::prekeys::SignedKemPrekey;

use crate::error::RequestError;

/// Checks `kem`'s signature by `owner`, then that it is an ML-KEM-768 encapsulation key.
pub fn check_kem_prekey(kem: &SignedKemPrekey, owner: &AccountId) -> Result<(), RequestError> {
    kem.verify(owner)
        .map_err(|_| RequestError::InvalidSignature("KEM prekey"))?;
    kem.check_key()
        .map_err(|e| RequestError::InvalidPrekey(format!("KEM prekey: {e}")))
}

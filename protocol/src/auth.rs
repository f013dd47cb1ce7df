//! The transcripts signed to log in and to register.
//!
//! ```text
//! auth:     "parley/v1/auth"     0x00 ‖ server_id (32) ‖ nonce (32) ‖ account (32) ‖ device (u32 BE)
//! register: "parley/v1/register" 0x00 ‖ server_id (32) ‖ nonce (32) ‖ account (32) ‖ dh (32)
//!           ‖ handle_len (u32 BE) ‖ handle (UTF-8, normalized, empty when none)
//! ```
//!
//! Both bind the server's identity and the connection's single-use nonce, so a
//! signature cannot be replayed on another connection or at another server.

use crate::identity::IdentityPublic;
use crate::ids::{DeviceAddress, Handle, Nonce, ServerId};
use crate::signature::{SignatureDomain, Transcript};

/// What an `auth` signature covers.
pub fn auth_transcript(server: &ServerId, nonce: &Nonce, address: &DeviceAddress) -> Transcript {
    Transcript::new(SignatureDomain::Auth)
        .fixed(server.as_bytes())
        .fixed(nonce.as_bytes())
        .fixed(address.account.as_bytes())
        .u32(address.device.0)
}

/// What a `register` signature covers.
pub fn register_transcript(
    server: &ServerId,
    nonce: &Nonce,
    identity: &IdentityPublic,
    handle: Option<&Handle>,
) -> Transcript {
    Transcript::new(SignatureDomain::Register)
        .fixed(server.as_bytes())
        .fixed(nonce.as_bytes())
        .fixed(identity.account.as_bytes())
        .fixed(identity.dh.as_bytes())
        .var(handle.map(Handle::as_str).unwrap_or("").as_bytes())
}

//! The associated data every message's AEAD authenticates.
//!
//! ```text
//! AD = sender.account (32)    ‖ sender.dh (32)          sender's identity keys
//!    ‖ recipient.account (32) ‖ recipient.dh (32)       recipient's identity keys
//!    ‖ sender_address.account (32)    ‖ sender_address.device (u32 BE)
//!    ‖ recipient_address.account (32) ‖ recipient_address.device (u32 BE)
//!    ‖ authenticated prefix of the message (version, type, setup, header)
//! ```
//!
//! Binding both identities and both device addresses stops a relay from re-targeting a
//! message to another device or passing it off as another sender's (X3DH §4.8, Matrix
//! CVE-2022-39250); binding the prefix makes every header bit authenticated.

use crate::identity::IdentityPublic;
use crate::ids::DeviceAddress;

/// Who sent a message to whom.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Direction<'a> {
    pub(crate) sender: &'a IdentityPublic,
    pub(crate) recipient: &'a IdentityPublic,
    pub(crate) sender_address: &'a DeviceAddress,
    pub(crate) recipient_address: &'a DeviceAddress,
}

/// `AD` for one message.
pub(crate) fn associated_data(direction: Direction<'_>, prefix: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(4 * 32 + 2 * 36 + prefix.len());
    ad.extend_from_slice(direction.sender.account.as_bytes());
    ad.extend_from_slice(direction.sender.dh.as_bytes());
    ad.extend_from_slice(direction.recipient.account.as_bytes());
    ad.extend_from_slice(direction.recipient.dh.as_bytes());
    for address in [direction.sender_address, direction.recipient_address] {
        ad.extend_from_slice(address.account.as_bytes());
        ad.extend_from_slice(&address.device.0.to_be_bytes());
    }
    ad.extend_from_slice(prefix);
    ad
}

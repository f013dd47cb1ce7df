//! What the generator sends: opaque envelopes stamped with their intended send time,
//! framed for the product (a Parley `send`) or the baseline (destination ‖ bytes).
//!
//! ```text
//! envelope  intended send time (u64 LE, ns since the phase's epoch)
//!           ‖ sender's sequence number (u64 LE) ‖ random filler   (--payload bytes)
//! product   Parley `send { to, id, ciphertext = envelope }`, MessagePack, one WS message
//! fan-out   Parley `send_to_all { to, to_version, copies: [{device, envelope'}], own_version,
//!           own_copies: [{device, envelope'}], id }`: one envelope per device, each with
//!           the same stamp and its filler's byte 16 set to the device id (so no two copies
//!           are the same bytes, as no two ciphertexts for different sessions would be)
//! baseline  destination id (u32 LE) ‖ envelope ‖ zero padding     (same length as product)
//! ```
//!
//! The baseline message is padded to the product frame's length, so both relays read
//! the same number of bytes per message.

use anyhow::{bail, Context};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId};
use parley_protocol::wire::client::{ClientBody, DeviceCopy, Send, SendToAll};
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::{self, ClientFrame};
use rand_core::{OsRng, RngCore};

/// Bytes of the stamp at the start of every envelope.
pub const STAMP_BYTES: usize = 16;

/// Builds stamped envelopes of one size.
#[derive(Debug, Clone)]
pub struct Envelopes {
    filler: Vec<u8>,
}

impl Envelopes {
    /// Envelopes of `size` bytes (at least [`STAMP_BYTES`]).
    pub fn new(size: usize) -> Envelopes {
        let mut filler = vec![0u8; size.max(STAMP_BYTES)];
        OsRng.fill_bytes(&mut filler);
        Envelopes { filler }
    }

    /// Envelope length.
    pub fn len(&self) -> usize {
        self.filler.len()
    }

    /// An envelope stamped with `intended_ns` and `seq`.
    pub fn stamped(&self, intended_ns: u64, seq: u64) -> Vec<u8> {
        let mut bytes = self.filler.clone();
        bytes[..8].copy_from_slice(&intended_ns.to_le_bytes());
        bytes[8..16].copy_from_slice(&seq.to_le_bytes());
        bytes
    }

    /// A Parley `send` frame carrying a stamped envelope, with a message id made the way
    /// the SDK makes one.
    pub fn product_frame(
        &self,
        rid: u32,
        to: DeviceAddress,
        intended_ns: u64,
        seq: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let body = ClientBody::Send(Send {
            to,
            id: client_message_id(),
            ciphertext: self.stamped(intended_ns, seq),
            category: None,
            receipt: false,
        });
        Ok(wire::encode_client(&ClientFrame::new(
            parley_protocol::ids::RequestId(rid),
            body,
        ))?)
    }

    /// A Parley `send_to_all` frame to every device of `to` and, when `own` is not empty,
    /// the sender's other devices `own`, for device lists at `version` on both sides.
    pub fn fan_out_frame(
        &self,
        rid: u32,
        to: AccountId,
        copies: &FanOut,
        intended_ns: u64,
        seq: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let stamped = self.stamped(intended_ns, seq);
        let copy = |device: &DeviceId| {
            let mut ciphertext = stamped.clone();
            if let Some(byte) = ciphertext.get_mut(STAMP_BYTES) {
                *byte = device.0 as u8;
            }
            DeviceCopy {
                device: *device,
                ciphertext,
            }
        };
        let body = ClientBody::SendToAll(SendToAll {
            to,
            to_version: copies.version,
            copies: copies.to.iter().map(copy).collect(),
            own_version: copies.version,
            own_copies: copies.own.iter().map(copy).collect(),
            id: client_message_id(),
            category: None,
            receipt: false,
        });
        Ok(wire::encode_client(&ClientFrame::new(
            parley_protocol::ids::RequestId(rid),
            body,
        ))?)
    }

    /// A baseline message of `length` bytes to connection `dest`.
    pub fn baseline_message(
        &self,
        dest: u32,
        intended_ns: u64,
        seq: u64,
        length: usize,
    ) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(length.max(4 + self.len()));
        bytes.extend_from_slice(&dest.to_le_bytes());
        bytes.extend_from_slice(&self.stamped(intended_ns, seq));
        if bytes.len() < length {
            bytes.resize(length, 0);
        }
        bytes
    }
}

/// Which devices a `send_to_all` writes to: every account publishes the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    /// The version of every account's published list.
    pub version: u64,
    /// The recipient's devices (all of its list).
    pub to: Vec<DeviceId>,
    /// The sender's other devices that get a copy (empty: none).
    pub own: Vec<DeviceId>,
}

impl FanOut {
    /// Copies one message makes.
    pub fn copies(&self) -> usize {
        self.to.len() + self.own.len()
    }
}

/// The stamp of an envelope: (intended send time in ns, sequence number).
pub fn read_stamp(envelope: &[u8]) -> anyhow::Result<(u64, u64)> {
    let stamp = envelope.get(..STAMP_BYTES).context("envelope too short")?;
    let mut time = [0u8; 8];
    let mut seq = [0u8; 8];
    time.copy_from_slice(&stamp[..8]);
    seq.copy_from_slice(&stamp[8..]);
    Ok((u64::from_le_bytes(time), u64::from_le_bytes(seq)))
}

/// What a product receiver got in one WebSocket message.
#[derive(Debug)]
pub enum Pushed {
    /// A delivered envelope: its queue seq and stamp.
    Deliver {
        /// Queue position, for the cumulative ack.
        seq: u64,
        /// Intended send time.
        intended_ns: u64,
    },
    /// The backlog is drained.
    Drained,
    /// A send was accepted.
    Accepted,
    /// Anything else (errors are counted by the caller).
    Other,
}

/// Parses a product server frame.
pub fn parse_product(bytes: &[u8]) -> anyhow::Result<Pushed> {
    let frame = wire::decode_server(bytes)?;
    Ok(match frame.body {
        ServerBody::Deliver(d) => {
            let (intended_ns, _) = read_stamp(&d.ciphertext)?;
            Pushed::Deliver {
                seq: d.seq.0,
                intended_ns,
            }
        }
        ServerBody::Drained(_) => Pushed::Drained,
        ServerBody::Accepted(_) => Pushed::Accepted,
        _ => Pushed::Other,
    })
}

/// Parses a baseline message: the stamp after the destination.
pub fn parse_baseline(bytes: &[u8]) -> anyhow::Result<u64> {
    if bytes.len() < 4 + STAMP_BYTES {
        bail!("baseline message too short");
    }
    Ok(read_stamp(&bytes[4..])?.0)
}

/// A message id as `parley-sdk` makes one for each send (time-ordered, random low half),
/// so the server's dedup index sees what real clients give it.
pub fn client_message_id() -> MessageId {
    MessageId::time_ordered(crate::sys::now_micros(), &mut rand_core::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let envelopes = Envelopes::new(200);
        let e = envelopes.stamped(123, 7);
        assert_eq!(e.len(), 200);
        assert_eq!(read_stamp(&e).ok(), Some((123, 7)));
        let b = envelopes.baseline_message(9, 55, 1, 290);
        assert_eq!(b.len(), 290);
        assert_eq!(parse_baseline(&b).ok(), Some(55));
    }
}

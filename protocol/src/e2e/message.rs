//! The end-to-end message: the opaque bytes a wire envelope carries.
//!
//! Two kinds, both a fixed binary layout (integers big-endian) so that the header bytes
//! that the AEAD authenticates are canonical:
//!
//! ```text
//! Normal message (type 0x01)
//! offset  size  field
//! 0       1     version = 0x01
//! 1       1     type = 0x01
//! 2       32    ratchet_key         sender's current X25519 ratchet public key
//! 34      4     previous_counter    messages in the sender's previous sending chain (PN)
//! 38      4     counter             this message's number in its chain (N)
//! 42      ≥16   ciphertext          ChaCha20-Poly1305 output, tag last
//!
//! Prekey message (type 0x02): a normal message with what the responder needs to set up
//! the session in front of the ratchet header
//! offset  size  field
//! 0       1     version = 0x01
//! 1       1     type = 0x02
//! 2       32    identity.account    initiator's Ed25519 identity key
//! 34      32    identity.dh         initiator's X25519 identity key
//! 66      64    identity.dh_signature
//! 130     32    base_key            initiator's ephemeral X25519 key (EK_A)
//! 162     4     signed_prekey_id
//! 166     1     has_one_time_prekey 0x00 or 0x01
//! 167     4     one_time_prekey_id  0 when absent
//! 171     4     kem_prekey_id
//! 175     1088  kem_ciphertext      ML-KEM-768 ciphertext
//! 1263    32    ratchet_key
//! 1295    4     previous_counter
//! 1299    4     counter
//! 1303    ≥16   ciphertext
//! ```
//!
//! The *authenticated prefix* is every byte before `ciphertext`; it is part of the AEAD
//! associated data (see [`Session`](super::Session)). Decoding never panics and accepts
//! exactly one encoding of each message.

use super::limits::{KEM_CIPHERTEXT_BYTES, MAX_MESSAGE_BYTES};
use super::E2eError;
use crate::identity::{IdentityPublic, X25519Public};
use crate::ids::{AccountId, PrekeyId};
use crate::signature::Signature;

/// Version byte of every end-to-end message this implementation writes and reads.
pub const MESSAGE_VERSION: u8 = 1;
/// Type byte of a normal message.
pub const TYPE_NORMAL: u8 = 0x01;
/// Type byte of a prekey message.
pub const TYPE_PREKEY: u8 = 0x02;
/// Length of the AEAD tag at the end of every ciphertext.
pub const TAG_BYTES: usize = 16;

const HEADER_BYTES: usize = 32 + 4 + 4;
const SETUP_BYTES: usize = 32 + 32 + 64 + 32 + 4 + 1 + 4 + 4 + KEM_CIPHERTEXT_BYTES;

/// The Double Ratchet header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: X25519Public,
    /// Number of messages in the sender's previous sending chain.
    pub previous_counter: u32,
    /// Number of this message in its sending chain, from 0.
    pub counter: u32,
}

/// What the responder needs to set up a session: the initiator's identity, its ephemeral
/// key, which prekeys were used and the KEM ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSetup {
    /// The initiator's public identity (verified by the responder).
    pub identity: IdentityPublic,
    /// The initiator's ephemeral key, which also names the session (see
    /// [`Session::base_key`](super::Session::base_key)).
    pub base_key: X25519Public,
    /// The responder's signed prekey used.
    pub signed_prekey: PrekeyId,
    /// The responder's one-time prekey used, if the bundle had one.
    pub one_time_prekey: Option<PrekeyId>,
    /// The responder's KEM prekey encapsulated to.
    pub kem_prekey: PrekeyId,
    /// The ML-KEM-768 ciphertext, [`KEM_CIPHERTEXT_BYTES`] bytes.
    pub kem_ciphertext: Vec<u8>,
}

/// A message of an established ratchet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalMessage {
    /// The ratchet header.
    pub header: Header,
    /// The AEAD output (at least [`TAG_BYTES`]).
    pub ciphertext: Vec<u8>,
}

/// A message sent before the initiator heard back: a session setup and a ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyMessage {
    /// The session setup.
    pub setup: SessionSetup,
    /// The ratchet message.
    pub message: NormalMessage,
}

/// Any end-to-end message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum E2eMessage {
    /// Type 0x01.
    Normal(NormalMessage),
    /// Type 0x02.
    Prekey(PrekeyMessage),
}

impl E2eMessage {
    /// Parses an end-to-end message. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<E2eMessage, E2eError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(E2eError::Malformed("message too large"));
        }
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != MESSAGE_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        match r.u8()? {
            TYPE_NORMAL => Ok(E2eMessage::Normal(read_normal(&mut r)?)),
            TYPE_PREKEY => {
                let setup = read_setup(&mut r)?;
                let message = read_normal(&mut r)?;
                Ok(E2eMessage::Prekey(PrekeyMessage { setup, message }))
            }
            _ => Err(E2eError::Malformed("message type")),
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let (mut out, ciphertext) = match self {
            E2eMessage::Normal(m) => (authenticated_prefix(None, &m.header), &m.ciphertext),
            E2eMessage::Prekey(p) => (
                authenticated_prefix(Some(&p.setup), &p.message.header),
                &p.message.ciphertext,
            ),
        };
        out.extend_from_slice(ciphertext);
        out
    }

    /// The ratchet part of the message.
    pub fn normal(&self) -> &NormalMessage {
        match self {
            E2eMessage::Normal(m) => m,
            E2eMessage::Prekey(p) => &p.message,
        }
    }

    /// The session setup, for a prekey message.
    pub fn setup(&self) -> Option<&SessionSetup> {
        match self {
            E2eMessage::Normal(_) => None,
            E2eMessage::Prekey(p) => Some(&p.setup),
        }
    }
}

/// Every byte of the message before the ciphertext.
pub(crate) fn authenticated_prefix(setup: Option<&SessionSetup>, header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + SETUP_BYTES + HEADER_BYTES + 256);
    out.push(MESSAGE_VERSION);
    match setup {
        None => out.push(TYPE_NORMAL),
        Some(s) => {
            out.push(TYPE_PREKEY);
            out.extend_from_slice(s.identity.account.as_bytes());
            out.extend_from_slice(s.identity.dh.as_bytes());
            out.extend_from_slice(s.identity.dh_signature.as_bytes());
            out.extend_from_slice(s.base_key.as_bytes());
            out.extend_from_slice(&s.signed_prekey.0.to_be_bytes());
            out.push(u8::from(s.one_time_prekey.is_some()));
            out.extend_from_slice(&s.one_time_prekey.map_or(0, |id| id.0).to_be_bytes());
            out.extend_from_slice(&s.kem_prekey.0.to_be_bytes());
            out.extend_from_slice(&s.kem_ciphertext);
        }
    }
    out.extend_from_slice(header.ratchet_key.as_bytes());
    out.extend_from_slice(&header.previous_counter.to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out
}

fn read_setup(r: &mut Reader<'_>) -> Result<SessionSetup, E2eError> {
    let identity = IdentityPublic {
        account: AccountId(r.array()?),
        dh: X25519Public(r.array()?),
        dh_signature: Signature(r.array()?),
    };
    let base_key = X25519Public(r.array()?);
    let signed_prekey = PrekeyId(r.u32()?);
    let has_one_time = r.u8()?;
    let one_time_id = r.u32()?;
    let one_time_prekey = match (has_one_time, one_time_id) {
        (0, 0) => None,
        (1, id) => Some(PrekeyId(id)),
        _ => return Err(E2eError::Malformed("one-time prekey flag")),
    };
    let kem_prekey = PrekeyId(r.u32()?);
    let kem_ciphertext = r.take(KEM_CIPHERTEXT_BYTES)?.to_vec();
    Ok(SessionSetup {
        identity,
        base_key,
        signed_prekey,
        one_time_prekey,
        kem_prekey,
        kem_ciphertext,
    })
}

fn read_normal(r: &mut Reader<'_>) -> Result<NormalMessage, E2eError> {
    let header = Header {
        ratchet_key: X25519Public(r.array()?),
        previous_counter: r.u32()?,
        counter: r.u32()?,
    };
    let ciphertext = r.rest();
    if ciphertext.len() < TAG_BYTES {
        return Err(E2eError::Malformed("ciphertext shorter than the tag"));
    }
    Ok(NormalMessage {
        header,
        ciphertext: ciphertext.to_vec(),
    })
}

/// A cursor over input that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], E2eError> {
        if self.0.len() < n {
            return Err(E2eError::Malformed("truncated message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], E2eError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| E2eError::Malformed("truncated message"))
    }

    fn u8(&mut self) -> Result<u8, E2eError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, E2eError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal() -> E2eMessage {
        E2eMessage::Normal(NormalMessage {
            header: Header {
                ratchet_key: X25519Public([4; 32]),
                previous_counter: 7,
                counter: 9,
            },
            ciphertext: vec![5; 20],
        })
    }

    #[test]
    fn layout_matches_the_table() {
        let bytes = normal().encode();
        assert_eq!(bytes.len(), 2 + HEADER_BYTES + 20);
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(&bytes[34..42], &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(E2eMessage::decode(&bytes), Ok(normal()));
        assert_eq!(SETUP_BYTES + 2, 1263);
    }

    #[test]
    fn short_and_foreign_inputs_are_refused() {
        let bytes = normal().encode();
        assert!(matches!(
            E2eMessage::decode(&bytes[..bytes.len() - 5]),
            Err(E2eError::Malformed(_))
        ));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            E2eMessage::decode(&v2),
            Err(E2eError::UnsupportedVersion(2))
        );
        let mut t = bytes;
        t[1] = 9;
        assert!(matches!(
            E2eMessage::decode(&t),
            Err(E2eError::Malformed(_))
        ));
        assert!(E2eMessage::decode(&[]).is_err());
    }
}

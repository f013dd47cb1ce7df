//! Encoding and decoding of frames: MessagePack, structs as maps with string keys (as
//! `rmp_serde::to_vec_named` writes them), enums as a one-entry map `{ "<kind>": body }`,
//! byte strings as `bin`, absent optionals as `nil`.
//!
//! [`decode_client`] and [`decode_server`] are pure, never panic, and check the size
//! before looking at a single byte, then the shape and the version, then every per-field
//! limit. The frame size is the decoder's only limit on a `send`'s ciphertext: the
//! envelope limit is the server's (`max_envelope_bytes`, answered `too_large`).
//!
//! Optional fields: a decoder takes an absent key and `nil` alike, in both directions.
//!
//! For a frame that does not decode, [`request_id`] reads what it can of its header, so
//! that the `error` answering it carries its `rid` whenever it has a readable one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::devices::link::MAX_SEALED_LINK_SECRETS_BYTES;
use crate::ids::RequestId;
use crate::limits::{
    MAX_DISPLAY_NAME_BYTES, MAX_ENVELOPE_BYTES, MAX_ERROR_MESSAGE_LEN, MAX_FRAME_BYTES,
    MAX_NESTING_DEPTH, MAX_PREKEYS_PER_UPLOAD, PROTOCOL_VERSION,
};
use crate::wire::client::{ClientBody, ClientFrame, SetDisplayName};
use crate::wire::server::{ServerBody, ServerFrame};

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// Not MessagePack of the expected shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Bytes left over after one complete frame.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// A `v` this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A field breaks a protocol limit.
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
}

/// Encoding failed; this cannot happen for well-formed frame values and indicates a bug.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes a client frame.
pub fn encode_client(frame: &ClientFrame) -> Result<Vec<u8>, EncodeError> {
    encode(frame)
}

/// Encodes a server frame.
pub fn encode_server(frame: &ServerFrame) -> Result<Vec<u8>, EncodeError> {
    encode(frame)
}

/// Decodes and validates a client frame. A `send`'s ciphertext is bounded by the frame
/// size only: the envelope limit is the server's to answer (`too_large`).
pub fn decode_client(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    let frame: ClientFrame = decode(bytes)?;
    check_version(frame.v)?;
    match &frame.body {
        ClientBody::Register(r) if r.one_time_prekeys.len() > MAX_PREKEYS_PER_UPLOAD => {
            Err(DecodeError::Limit("one_time_prekeys"))
        }
        ClientBody::UploadPrekeys(u) if u.one_time_prekeys.len() > MAX_PREKEYS_PER_UPLOAD => {
            Err(DecodeError::Limit("one_time_prekeys"))
        }
        ClientBody::SetDisplayName(SetDisplayName {
            display_name: Some(name),
        }) if name.len() > MAX_DISPLAY_NAME_BYTES => Err(DecodeError::Limit("display_name")),
        ClientBody::SealLink(seal) if seal.sealed.len() > MAX_SEALED_LINK_SECRETS_BYTES => {
            Err(DecodeError::Limit("sealed"))
        }
        _ => Ok(frame),
    }
}

/// Decodes and validates a server frame.
pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    let frame: ServerFrame = decode(bytes)?;
    check_version(frame.v)?;
    match &frame.body {
        ServerBody::Deliver(d) if d.ciphertext.len() > MAX_ENVELOPE_BYTES => {
            Err(DecodeError::Limit("ciphertext"))
        }
        ServerBody::Error(e) if e.message.len() > MAX_ERROR_MESSAGE_LEN => {
            Err(DecodeError::Limit("message"))
        }
        _ => Ok(frame),
    }
}

/// The buffer a frame is encoded into starts at this size: most frames (an envelope of
/// a few hundred bytes, an ack, an `accepted`) fit without growing it, where an empty
/// buffer grew six times on the way to a 300-byte `deliver`.
const ENCODE_BUFFER_BYTES: usize = 512;

/// `rmp_serde::to_vec_named` into a buffer of [`ENCODE_BUFFER_BYTES`].
fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, EncodeError> {
    let mut bytes = Vec::with_capacity(ENCODE_BUFFER_BYTES);
    frame
        .serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(bytes)
}

/// The `rid` of a client frame that may not decode: read from the first MessagePack
/// value when it is a map with a uint32 `rid`; `None` when the bytes are over the frame
/// size, are not one such value, or have no such `rid`.
pub fn request_id(bytes: &[u8]) -> Option<RequestId> {
    header(bytes)?.rid
}

/// What can be read of a frame's header without its body: unknown keys (the body among
/// them) are skipped, and an absent or ill-typed `v` or `rid` is `None`.
#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "lenient")]
    v: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    rid: Option<RequestId>,
}

/// `Some` if the value is a `T`, `None` for anything else (skipped).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Either::<T>::deserialize(d)? {
        Either::Value(value) => Some(value),
        Either::Other(_) => None,
    })
}

fn header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() > MAX_FRAME_BYTES {
        return None;
    }
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_NESTING_DEPTH);
    Header::deserialize(&mut de).ok()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // Read in place: the reader over a slice hands out borrowed bytes, where a reader
    // over `io::Read` copies each byte string into a buffer of its own first (a `send`
    // decoded in half the time). It does not say where it stopped, so the end is checked
    // by reading one more marker, which fails only when no byte is left.
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_NESTING_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| malformed(bytes, e.to_string()))?;
    match NextMarker::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        // Counted with a second decode: this path costs twice, within the frame size.
        _ => Err(DecodeError::TrailingBytes(trailing_bytes::<T>(bytes))),
    }
}

/// Reads one MessagePack marker and nothing after it: whatever follows the marker (a
/// value, or the part of one that is there) is never read, so reading it fails only at
/// the end of input. (Reading a whole value instead would take a cut-off array as the
/// end: its missing element fails with the same end-of-input error.)
struct NextMarker;

impl<'de> Deserialize<'de> for NextMarker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NextMarker, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NextMarker;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any marker")
            }
            fn visit_none<E>(self) -> Result<NextMarker, E> {
                Ok(NextMarker)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, _: D) -> Result<NextMarker, D::Error> {
                Ok(NextMarker)
            }
        }
        // An option reads the marker to tell `nil` from a value, and stops there.
        d.deserialize_option(Visitor)
    }
}

/// How many bytes follow the first value of `bytes`, which decodes as a `T` (the error
/// path only: this reader copies, and says where it stopped).
fn trailing_bytes<T: DeserializeOwned>(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_NESTING_DEPTH);
    let _ = T::deserialize(&mut de);
    rest.len()
}

/// A frame that did not decode: another version's frame (whose body this version may not
/// know) is [`DecodeError::UnsupportedVersion`], anything else [`DecodeError::Malformed`].
fn malformed(bytes: &[u8], reason: String) -> DecodeError {
    match header(bytes).and_then(|h| h.v) {
        Some(v) if v != u64::from(PROTOCOL_VERSION) => {
            DecodeError::UnsupportedVersion(u8::try_from(v).unwrap_or(u8::MAX))
        }
        _ => DecodeError::Malformed(reason),
    }
}

fn check_version(v: u8) -> Result<(), DecodeError> {
    if v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, DeviceAddress, DeviceId, MessageId, RequestId, Seq};
    use crate::wire::client::{Ack, Send};

    fn send_frame(len: usize) -> ClientFrame {
        ClientFrame::new(
            RequestId(9),
            ClientBody::Send(Send {
                to: DeviceAddress {
                    account: AccountId([1; 32]),
                    device: DeviceId(1),
                },
                id: MessageId([2; 16]),
                ciphertext: vec![3; len],
                category: None,
                receipt: false,
            }),
        )
    }

    /// The decoder as it was before it read in place: the copying reader, which says
    /// where it stopped.
    fn decode_copying<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
        let mut rest = bytes;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_NESTING_DEPTH);
        let value = T::deserialize(&mut de).map_err(|e| malformed(bytes, e.to_string()))?;
        match rest.len() {
            0 => Ok(value),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Frames changed at random (bytes overwritten, cut short, followed by other
        /// bytes) decode in place exactly as the copying reader decodes them.
        #[test]
        fn decoding_in_place_agrees_with_the_copying_reader(
            len in 0usize..300,
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..400,
            suffix in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let frames = [
                encode_client(&send_frame(len)).unwrap(),
                encode_client(&ClientFrame::new(RequestId(1), ClientBody::Ack(Ack { through: Seq(4) }))).unwrap(),
            ];
            for mut bytes in frames {
                for (at, byte) in &flips {
                    if let Some(b) = bytes.get_mut(*at) {
                        *b = *byte;
                    }
                }
                bytes.truncate(cut.max(1));
                bytes.extend(&suffix);
                proptest::prop_assert_eq!(
                    decode::<ClientFrame>(&bytes),
                    decode_copying::<ClientFrame>(&bytes)
                );
            }
        }
    }

    #[test]
    fn client_frames_round_trip() {
        let frame = send_frame(100);
        let bytes = encode_client(&frame).unwrap();
        assert_eq!(decode_client(&bytes), Ok(frame));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = vec![0xc1; MAX_FRAME_BYTES + 1];
        assert_eq!(
            decode_client(&bytes),
            Err(DecodeError::TooLarge(MAX_FRAME_BYTES + 1))
        );
    }

    #[test]
    fn a_ciphertext_over_the_envelope_limit_decodes_the_server_answers_it() {
        let frame = send_frame(MAX_ENVELOPE_BYTES + 1);
        let bytes = encode_client(&frame).unwrap();
        assert!(bytes.len() < MAX_FRAME_BYTES);
        assert_eq!(decode_client(&bytes), Ok(frame));
    }

    #[test]
    fn the_request_id_of_an_undecodable_frame_is_read_when_it_can_be() {
        // An unknown kind with rid 7.
        let unknown = b"\x83\xa1v\x01\xa3rid\x07\xa4body\x81\xa4nope\x80";
        assert!(matches!(
            decode_client(unknown),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(request_id(unknown), Some(RequestId(7)));
        // rid first, then a broken body.
        let broken = b"\x83\xa3rid\xce\x00\x01\x00\x00\xa1v\x01\xa4body\xc1";
        assert_eq!(request_id(broken), None, "not one MessagePack value");
        let wrong_type = b"\x83\xa1v\x01\xa3rid\xa1x\xa4body\x80";
        assert_eq!(request_id(wrong_type), None);
        assert_eq!(request_id(&[0x93, 1, 2, 3]), None);
        assert_eq!(request_id(&[]), None);
        let mut trailing = encode_client(&send_frame(3)).unwrap();
        trailing.push(0);
        assert_eq!(request_id(&trailing), Some(RequestId(9)), "trailing bytes");
    }

    /// Regression: skipping an unknown key whose value nests 1 000 arrays deep overflowed
    /// the stack (rmp-serde's default depth limit is 1 024), aborting the process.
    #[test]
    fn regression_deep_nesting_is_refused_without_exhausting_the_stack() {
        for prefix in [
            &b"\x84\xa1v\x01\xa3rid\x01\xa4body\x81\xa3ack\x81\xa7through\x01\xa1x"[..],
            &b"\x83\xa1v\x01\xa4body\x80\xa3rid"[..],
            &b"\x83\xa1v\x01\xa3rid\x01\xa4body"[..],
        ] {
            let mut bytes = prefix.to_vec();
            bytes.extend(std::iter::repeat_n(0x91, MAX_FRAME_BYTES - bytes.len() - 1));
            bytes.push(0x00);
            assert!(matches!(
                decode_client(&bytes),
                Err(DecodeError::Malformed(_))
            ));
            assert!(matches!(
                decode_server(&bytes),
                Err(DecodeError::Malformed(_))
            ));
            assert!(request_id(&bytes).is_none_or(|rid| rid == RequestId(1)));
        }
    }

    #[test]
    fn another_version_is_unsupported_even_when_its_body_is_unknown() {
        let v2 = b"\x83\xa1v\x02\xa3rid\x05\xa4body\x81\xa8new_kind\x80";
        assert_eq!(decode_client(v2), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(request_id(v2), Some(RequestId(5)));
        let v300 = b"\x83\xa1v\xcd\x01\x2c\xa3rid\x05\xa4body\x80";
        assert_eq!(
            decode_client(v300),
            Err(DecodeError::UnsupportedVersion(u8::MAX))
        );
    }

    #[test]
    fn trailing_bytes_and_truncation_are_refused() {
        let mut bytes = encode_client(&send_frame(10)).unwrap();
        let frame_len = bytes.len();
        bytes.push(0);
        assert_eq!(decode_client(&bytes), Err(DecodeError::TrailingBytes(1)));
        // The start of a value that is cut short (a `bin 8` marker without its length),
        // and a whole second frame, are counted in bytes as well.
        bytes[frame_len] = 0xc4;
        assert_eq!(decode_client(&bytes), Err(DecodeError::TrailingBytes(1)));
        let twice = [&bytes[..frame_len], &bytes[..frame_len]].concat();
        assert_eq!(
            decode_client(&twice),
            Err(DecodeError::TrailingBytes(frame_len))
        );
        // A cut-off array or map after the frame: its missing element is an end of
        // input too, but not the frame's.
        for suffix in [
            &[0x91][..],
            &[0x81],
            &[0x92, 0x00],
            &[0xdc, 0x00, 0x01],
            &[0x81, 0xa1, b'x'],
        ] {
            let cut = [&bytes[..frame_len], suffix].concat();
            assert_eq!(
                decode_client(&cut),
                Err(DecodeError::TrailingBytes(suffix.len())),
                "{suffix:02x?}"
            );
        }
        bytes.truncate(frame_len - 5);
        assert!(matches!(
            decode_client(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut frame = ClientFrame::new(RequestId(1), ClientBody::Ack(Ack { through: Seq(4) }));
        frame.v = 2;
        let bytes = encode_client(&frame).unwrap();
        assert_eq!(
            decode_client(&bytes),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating() {
        // map32 with 2^32-1 entries, then nothing.
        let bytes = [0xdf, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_client(&bytes),
            Err(DecodeError::Malformed(_))
        ));
        // bin32 with a 4 GiB length inside a frame.
        let bytes = [0x81, 0xa1, b'v', 0xc6, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_client(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }
}

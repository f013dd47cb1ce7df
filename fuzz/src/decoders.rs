//! The fuzzed functions for every byte decoder of `parley-protocol`, one function per
//! fuzz target. Each one must never panic on any input, and checks a property on what
//! it accepts (re-encoding round-trips; a failed decrypt leaves the session unchanged).
//!
//! This file is also compiled into `protocol/tests/fuzz_corpus.rs`, which replays every
//! committed corpus file through these same functions under `cargo test`; so it uses
//! nothing but `parley-protocol` and `std`.

use parley_protocol::e2e::content::Content;
use parley_protocol::e2e::message::E2eMessage;
use parley_protocol::e2e::{HandshakeGuard, Session};
use parley_protocol::wire;

/// Bob's session right after accepting Alice's first message (test keys only), written
/// by `protocol/tests/fuzz_corpus.rs` with `PARLEY_REGENERATE_VECTORS=1`.
pub const SESSION_FIXTURE: &[u8] = include_bytes!("../fixtures/bob_session.record");

/// The time the decrypt target decrypts at (ms since the Unix epoch).
const NOW_MS: u64 = 1_764_000_000_000;

/// `fuzz_targets/wire_client.rs`: a frame from a client, as the server decodes it.
pub fn wire_client(data: &[u8]) {
    if let Ok(frame) = wire::decode_client(data) {
        let bytes = wire::encode_client(&frame);
        assert!(bytes.is_ok(), "a decoded client frame re-encodes");
        if let Ok(bytes) = bytes {
            assert_eq!(wire::decode_client(&bytes).ok(), Some(frame), "round trip");
        }
    }
}

/// `fuzz_targets/wire_server.rs`: a frame from the server, as a client decodes it.
pub fn wire_server(data: &[u8]) {
    if let Ok(frame) = wire::decode_server(data) {
        let bytes = wire::encode_server(&frame);
        assert!(bytes.is_ok(), "a decoded server frame re-encodes");
        if let Ok(bytes) = bytes {
            assert_eq!(wire::decode_server(&bytes).ok(), Some(frame), "round trip");
        }
    }
}

/// `fuzz_targets/e2e_message.rs`: an envelope's ciphertext (normal or prekey message).
pub fn e2e_message(data: &[u8]) {
    if let Ok(message) = E2eMessage::decode(data) {
        let bytes = message.encode();
        assert_eq!(E2eMessage::decode(&bytes).ok(), Some(message), "round trip");
    }
}

/// `fuzz_targets/e2e_content.rs`: a decrypted plaintext (text, card, answer, receipt).
pub fn e2e_content(data: &[u8]) {
    if let Ok(content) = Content::decode(data) {
        let bytes = content.encode();
        assert!(bytes.is_ok(), "decoded content re-encodes");
        if let Ok(bytes) = bytes {
            assert_eq!(Content::decode(&bytes).ok(), Some(content), "round trip");
        }
    }
}

/// `fuzz_targets/session_record.rs`: a session record read back from a client's disk.
pub fn session_record(data: &[u8]) {
    if let Ok(session) = Session::from_record(data) {
        let bytes = session.to_record();
        let again = Session::from_record(&bytes);
        assert!(again.is_ok(), "a re-encoded record decodes");
        if let Ok(again) = again {
            assert!(*again.to_record() == *bytes, "records are stable");
        }
    }
}

/// `fuzz_targets/handshake_guard.rs`: the replay guard read back from a client's disk.
pub fn handshake_guard(data: &[u8]) {
    if let Ok(guard) = HandshakeGuard::from_bytes(data) {
        let bytes = guard.to_bytes();
        let again = HandshakeGuard::from_bytes(&bytes).map(|g| g.to_bytes());
        assert_eq!(again.ok(), Some(bytes), "round trip");
    }
}

/// `fuzz_targets/session_decrypt.rs`: a hostile envelope decrypted by an established
/// session. On failure the session must be byte-for-byte unchanged.
pub fn session_decrypt(data: &[u8]) {
    let Ok(mut session) = Session::from_record(SESSION_FIXTURE) else {
        // A stale fixture is caught by the corpus test; nothing to fuzz without it.
        return;
    };
    let before = session.to_record();
    if session.decrypt(data, NOW_MS).is_err() {
        assert!(
            *session.to_record() == *before,
            "a failed decrypt changed the session"
        );
    }
}

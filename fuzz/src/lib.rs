//! # parley-fuzz
//!
//! cargo-fuzz targets for Parley (`cargo +nightly fuzz run TARGET`), kept out of the
//! workspace so that stable builds never see libFuzzer. Each target in `fuzz_targets/`
//! is one line calling a function here:
//!
//! * [`decoders`]: every byte decoder of `parley-protocol` (wire frames both ways,
//!   end-to-end messages, contents, session records, the handshake guard) and hostile
//!   envelopes decrypted by an established session.
//! * [`connection`]: the server's connection states, over a real loopback WebSocket.
//! * [`connection_core`]: the authenticated connection's state machine without I/O,
//!   driven by fuzzer-chosen frames, store results, wakes and clock steps.
//!
//! The committed corpora (`corpus/TARGET/`) are replayed by `cargo test`:
//! `protocol/tests/fuzz_corpus.rs` for the decoders, `tests/tests/fuzz_corpus.rs` for
//! the connection and its core. `docs/testing.md` records the fuzz runs.

pub mod connection;
pub mod connection_core;
pub mod decoders;

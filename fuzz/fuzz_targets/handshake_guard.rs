//! Fuzz target: [`parley_fuzz::decoders::handshake_guard`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::decoders::handshake_guard(data));

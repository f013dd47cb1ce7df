//! Fuzz target: [`parley_fuzz::decoders::wire_client`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::decoders::wire_client(data));

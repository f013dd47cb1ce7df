//! Fuzz target: [`parley_fuzz::decoders::wire_server`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::decoders::wire_server(data));

//! Fuzz target: [`parley_fuzz::decoders::e2e_content`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::decoders::e2e_content(data));

//! Fuzz target: [`parley_fuzz::decoders::session_record`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::decoders::session_record(data));

//! Fuzz target: [`parley_fuzz::connection_core::run`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_fuzz::connection_core::run(data));

//! Fuzz target: the server's connection states over loopback, see
//! [`parley_fuzz::connection`]. A server panic aborts (libFuzzer's panic hook); a server
//! that neither answers nor closes within the deadline is reported as a crash too.

#![no_main]

use std::sync::OnceLock;

use parley_fuzz::connection::Harness;

static HARNESS: OnceLock<Harness> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| match Harness::start() {
        Ok(harness) => harness,
        Err(e) => panic!("could not start the server: {e}"),
    });
    if let Err(e) = harness.run(data) {
        panic!("{e}");
    }
});

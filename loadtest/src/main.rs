//! `parley-loadtest` (filled by the load-test issue).
fn main() {}

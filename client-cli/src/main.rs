//! `parley`: the command-line chat client (filled by the SDK/CLI issue).
fn main() {}

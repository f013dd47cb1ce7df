//! `misbehaving_relay.rs` again, against a two-node cluster: the test binary's name ends in
//! `_on_cluster`, which switches [`parley_tests::deployment::Deployment`] to a cluster
//! (PostgreSQL and NATS of its own; skipped where they are not installed).

#[path = "misbehaving_relay.rs"]
mod misbehaving_relay;

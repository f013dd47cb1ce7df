//! A profile's database is held by one process at a time (no server needed).

#![allow(clippy::unwrap_used)]

use parley_sdk::store::ClientStore;

#[test]
fn a_profile_is_used_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.db");
    let first = ClientStore::open(&path).unwrap();
    assert!(matches!(
        ClientStore::open(&path),
        Err(parley_sdk::SdkError::ProfileInUse)
    ));
    drop(first);
    ClientStore::open(&path).unwrap();
}

//! Ids for the crate's unit tests.

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId};

/// Device 1 of the account whose 32 key bytes are all `n`: distinct addresses by number.
pub(crate) fn device(n: u8) -> DeviceAddress {
    DeviceAddress {
        account: AccountId([n; 32]),
        device: DeviceId(1),
    }
}

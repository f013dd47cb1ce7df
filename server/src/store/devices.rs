//! Device lists (ADR 0007), as both stores keep them: the latest signed list of each
//! account that published one, stored as the client sent it (MessagePack), with its
//! version beside it so that the "only newer" rule is one comparison.
//!
//! Publishing a list makes the account's device rows match it in the same transaction:
//! a device new on the list gets its row (so it can authenticate and upload prekeys), and
//! a device no longer on it loses its row, prekeys, queue and retry entries (so it cannot
//! authenticate, nothing more is queued for it, and what was queued is gone). The
//! connection verified the signature and the shape before the store sees the list.

use parley_protocol::devices::SignedDeviceList;
use parley_protocol::ids::{AccountId, DeviceId};

use super::values::corrupt;
use super::StoreError;

/// A verified list to store.
#[derive(Clone, Debug)]
pub struct NewDeviceList {
    /// The list, its signature checked and its account the publisher's.
    pub list: SignedDeviceList,
    /// When it was published, ms since the epoch (device rows it creates, to the day).
    pub now_ms: u64,
}

impl NewDeviceList {
    /// Whose list.
    pub fn account(&self) -> AccountId {
        self.list.list.account
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.list.list.version
    }

    /// The devices it names, ascending.
    pub fn devices(&self) -> Vec<DeviceId> {
        self.list.list.device_ids().collect()
    }
}

/// Result of [`super::Store::publish_device_list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored; the account's device rows now match it.
    Stored {
        /// Devices that got a row.
        added: Vec<DeviceId>,
        /// Devices whose row, prekeys and queue were deleted.
        removed: Vec<DeviceId>,
    },
    /// The stored list has this version, which the offered one does not exceed (an
    /// account without a list has version 0).
    Stale {
        /// The version held.
        stored_version: u64,
    },
    /// No such account.
    UnknownAccount,
}

/// Result of [`super::Store::device_list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceListLookup {
    /// No such account.
    UnknownAccount,
    /// The account never published a list: device 1, version 0.
    Implicit,
    /// The latest list it published.
    Published(SignedDeviceList),
}

/// The stored form of a list.
pub(crate) fn encode(list: &SignedDeviceList) -> Vec<u8> {
    // A struct of integers, strings and byte arrays always encodes.
    rmp_serde::to_vec_named(list).unwrap_or_default()
}

/// A stored list back.
pub(crate) fn decode(bytes: &[u8]) -> Result<SignedDeviceList, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|_| corrupt("device_lists.list"))
}

/// Which of the account's current device rows the list drops, and which it adds.
pub(crate) fn changes(current: &[DeviceId], listed: &[DeviceId]) -> (Vec<DeviceId>, Vec<DeviceId>) {
    let added = listed
        .iter()
        .filter(|d| !current.contains(d))
        .copied()
        .collect();
    let removed = current
        .iter()
        .filter(|d| !listed.contains(d))
        .copied()
        .collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_what_the_list_adds_and_drops() {
        let d = |ids: &[u32]| ids.iter().map(|i| DeviceId(*i)).collect::<Vec<_>>();
        assert_eq!(changes(&d(&[1]), &d(&[1, 2])), (d(&[2]), d(&[])));
        assert_eq!(changes(&d(&[1, 2, 3]), &d(&[2, 4])), (d(&[4]), d(&[1, 3])));
        assert_eq!(changes(&d(&[1]), &d(&[1])), (d(&[]), d(&[])));
    }
}

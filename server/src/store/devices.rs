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
use super::{NewEnvelope, StoreError};

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

/// An account's devices as a store sees them inside a transaction: the version of its
/// stored list (0 without one) and its device rows, ascending (publishing keeps the rows
/// equal to the list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentDevices {
    /// The stored list's version.
    pub version: u64,
    /// The account's devices, ascending; empty if there is no such account.
    pub devices: Vec<DeviceId>,
}

impl CurrentDevices {
    /// Whether a send to every device (`envelope.fan_out`) was made for the current lists:
    /// `to` is the recipient account's, `own` the sender's. The recipient's version must
    /// be the stored one and the envelope and its copies must name each of its devices
    /// once; a send with copies for the sender's own devices must likewise name each of
    /// them but the sending one, at the stored version (one without such copies, a
    /// receipt say, leaves them out altogether). A recipient without devices (no such
    /// account) matches: the send policy answers for it as for any send. A sync (the
    /// recipient is the sender's own account) must name every device of the account but
    /// the sending one. A send that is not a fan-out matches.
    pub fn match_fan_out(
        envelope: &NewEnvelope,
        to: &CurrentDevices,
        own: &CurrentDevices,
    ) -> bool {
        let Some(fan_out) = &envelope.fan_out else {
            return true;
        };
        if to.devices.is_empty() {
            return true;
        }
        let (to_account, own_account) = (envelope.to.account, envelope.from.account);
        if fan_out.to_version != to.version {
            return false;
        }
        if to_account == own_account {
            // A sync: every device of the account but the sending one.
            let mut named = vec![envelope.from.device, envelope.to.device];
            named.extend(fan_out.copies.iter().map(|c| c.to.device));
            named.sort_unstable();
            return fan_out.copies.iter().all(|c| c.to.account == own_account)
                && named == to.devices;
        }
        let mut to_named = vec![envelope.to.device];
        let mut own_named = vec![envelope.from.device];
        for copy in &fan_out.copies {
            match copy.to.account {
                account if account == to_account => to_named.push(copy.to.device),
                account if account == own_account => own_named.push(copy.to.device),
                _ => return false,
            }
        }
        to_named.sort_unstable();
        own_named.sort_unstable();
        let own_matches = own_named.len() == 1
            || (fan_out.own_version == own.version && own_named == own.devices);
        to_named == to.devices && own_matches
    }
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

//! The owner-signed device list: which devices an account has, at which version.
//!
//! ```text
//! "parley/v1/device-list" 0x00 ‖ account (32) ‖ version u64 ‖ count u32
//!     ‖ for each device, in ascending id order: device u32 ‖ linked_at_ms u64 ‖ len u32 ‖ name
//! ```
//!
//! Signed by the account's identity key, which the relay does not hold, so the relay can
//! store and serve a list but not make one. A client encrypts only to devices in a list the
//! account signed ([`SignedDeviceList::verify`]) and accepts a list only if it is newer than
//! the one it saw last ([`DeviceListView::accept`]); the relay refuses to store a list that
//! is not newer than its own. An account that never published a list has
//! [`DeviceList::implicit`]: device 1, version 0 (ADR 0007).

use serde::{Deserialize, Serialize};

use crate::identity::IdentityKeyPair;
use crate::ids::{AccountId, DeviceId};
use crate::signature::{self, Signature, SignatureDomain, Transcript};

/// Most devices a list may hold under the protocol; a relay configures a lower cap
/// (`devices per account`, 6 by default, as Signal's).
pub const MAX_DEVICE_LIST_ENTRIES: usize = 32;

/// Longest device name, in bytes of UTF-8 ("Alice's laptop", "bot standby").
pub const MAX_DEVICE_NAME_BYTES: usize = 32;

/// One device of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Its id within the account.
    pub device: DeviceId,
    /// What its owner called it; printable UTF-8, at most [`MAX_DEVICE_NAME_BYTES`].
    pub name: String,
    /// When it was linked (the account's registration for device 1), ms since the epoch.
    pub linked_at_ms: u64,
}

/// An account's devices at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    /// Whose devices (and the signer).
    pub account: AccountId,
    /// Grows with every change; never reused.
    pub version: u64,
    /// In strictly ascending `device` order; 1 to [`MAX_DEVICE_LIST_ENTRIES`] entries.
    pub devices: Vec<DeviceEntry>,
}

/// A list and its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDeviceList {
    /// The list.
    pub list: DeviceList,
    /// By `list.account`, see the module documentation.
    pub signature: Signature,
}

/// Why a device list is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceListError {
    /// The signature is not the account's.
    #[error("the device list is not signed by its account")]
    BadSignature,
    /// No device, too many, out of order or repeated, or a bad name.
    #[error("the device list is malformed: {0}")]
    Malformed(&'static str),
    /// Not newer than the list already known.
    #[error("the device list is version {offered}, not newer than the known version {known}")]
    Stale {
        /// The version offered.
        offered: u64,
        /// The version already known.
        known: u64,
    },
    /// The same version as the known list, with other contents: the account signed two
    /// lists with one version, or someone replays a list of another history.
    #[error("the device list contradicts the known list of the same version {0}")]
    Conflicting(u64),
}

impl DeviceList {
    /// The list of an account that never published one: device 1, version 0.
    pub fn implicit(account: AccountId) -> DeviceList {
        DeviceList {
            account,
            version: 0,
            devices: vec![DeviceEntry {
                device: DeviceId::PRIMARY,
                name: String::new(),
                linked_at_ms: 0,
            }],
        }
    }

    /// The transcript the account signs.
    pub fn transcript(&self) -> Transcript {
        let count = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        let mut transcript = Transcript::new(SignatureDomain::DeviceList)
            .fixed(self.account.as_bytes())
            .u64(self.version)
            .u32(count);
        for entry in &self.devices {
            transcript = transcript
                .u32(entry.device.0)
                .u64(entry.linked_at_ms)
                .var(entry.name.as_bytes());
        }
        transcript
    }

    /// Whether `device` is on the list.
    pub fn contains(&self, device: DeviceId) -> bool {
        self.devices.iter().any(|entry| entry.device == device)
    }

    /// The device ids, ascending.
    pub fn device_ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices.iter().map(|entry| entry.device)
    }

    /// The next version of this list without `device` (unsigned): what an account
    /// publishes to remove a device.
    pub fn without(&self, device: DeviceId) -> DeviceList {
        DeviceList {
            account: self.account,
            version: self.version.saturating_add(1),
            devices: self
                .devices
                .iter()
                .filter(|entry| entry.device != device)
                .cloned()
                .collect(),
        }
    }

    /// The id a newly linked device gets: one past the highest ever listed here. Ids are not
    /// reused while a list remembers them; a removed highest id may come back, which is
    /// harmless because the new device makes new prekeys and sessions.
    pub fn next_device_id(&self) -> Option<DeviceId> {
        let highest = self.devices.iter().map(|entry| entry.device.0).max()?;
        highest.checked_add(1).map(DeviceId)
    }

    /// Checks the shape every list must have, signed or not.
    pub fn check_shape(&self) -> Result<(), DeviceListError> {
        if self.devices.is_empty() {
            return Err(DeviceListError::Malformed("no device"));
        }
        if self.devices.len() > MAX_DEVICE_LIST_ENTRIES {
            return Err(DeviceListError::Malformed("too many devices"));
        }
        if self.devices.iter().any(|entry| entry.device.0 == 0) {
            return Err(DeviceListError::Malformed("device 0"));
        }
        if self
            .devices
            .windows(2)
            .any(|pair| pair[0].device >= pair[1].device)
        {
            return Err(DeviceListError::Malformed(
                "devices not in strictly ascending order",
            ));
        }
        for entry in &self.devices {
            if entry.name.len() > MAX_DEVICE_NAME_BYTES {
                return Err(DeviceListError::Malformed("device name too long"));
            }
            if entry.name.chars().any(char::is_control) {
                return Err(DeviceListError::Malformed(
                    "control character in a device name",
                ));
            }
        }
        Ok(())
    }

    /// Signs the list; `identity` must be `self.account`'s.
    pub fn sign(self, identity: &IdentityKeyPair) -> Result<SignedDeviceList, DeviceListError> {
        if identity.account_id() != self.account {
            return Err(DeviceListError::BadSignature);
        }
        self.check_shape()?;
        let signature = identity.sign(&self.transcript());
        Ok(SignedDeviceList {
            list: self,
            signature,
        })
    }
}

impl SignedDeviceList {
    /// Checks the shape and that `list.account` signed it. What the relay checks before it
    /// stores a list, and what a client checks before it uses one.
    pub fn verify(&self) -> Result<(), DeviceListError> {
        self.list.check_shape()?;
        signature::verify(&self.list.account, &self.list.transcript(), &self.signature)
            .map_err(|_| DeviceListError::BadSignature)
    }

    /// Whether this list may replace `known` (same account assumed): a strictly greater
    /// version. What the relay asks before it stores a list.
    pub fn supersedes(&self, known: &DeviceList) -> Result<(), DeviceListError> {
        if self.list.version > known.version {
            Ok(())
        } else {
            Err(DeviceListError::Stale {
                offered: self.list.version,
                known: known.version,
            })
        }
    }
}

/// What a client knows of one contact's devices: the newest list it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceListView {
    list: DeviceList,
}

/// What accepting a list served by the relay changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListChange {
    /// The same list as before.
    Unchanged,
    /// A newer list: the devices added and removed since the known one.
    Changed {
        /// On the new list, not on the old.
        added: Vec<DeviceId>,
        /// On the old list, not on the new.
        removed: Vec<DeviceId>,
    },
}

impl DeviceListView {
    /// Starts from a list verified earlier (or [`DeviceList::implicit`]).
    pub fn new(list: DeviceList) -> DeviceListView {
        DeviceListView { list }
    }

    /// The list in use.
    pub fn list(&self) -> &DeviceList {
        &self.list
    }

    /// Takes a list the relay served for `account`: refuses one the account did not sign,
    /// one of another account, an older one, and a different one of the same version;
    /// otherwise keeps the newer and says what changed.
    pub fn accept(
        &mut self,
        account: &AccountId,
        offered: &SignedDeviceList,
    ) -> Result<ListChange, DeviceListError> {
        if offered.list.account != *account {
            return Err(DeviceListError::BadSignature);
        }
        offered.verify()?;
        let known = &self.list;
        if offered.list.version == known.version {
            return if offered.list == *known {
                Ok(ListChange::Unchanged)
            } else {
                Err(DeviceListError::Conflicting(known.version))
            };
        }
        offered.supersedes(known)?;
        let added = offered
            .list
            .device_ids()
            .filter(|device| !known.contains(*device))
            .collect();
        let removed = known
            .device_ids()
            .filter(|device| !offered.list.contains(*device))
            .collect();
        self.list = offered.list.clone();
        Ok(ListChange::Changed { added, removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(seed: u8) -> IdentityKeyPair {
        IdentityKeyPair::from_secret_bytes(&[seed; 64])
    }

    fn entry(device: u32, name: &str) -> DeviceEntry {
        DeviceEntry {
            device: DeviceId(device),
            name: name.to_owned(),
            linked_at_ms: 1_700_000_000_000 + u64::from(device),
        }
    }

    fn list(owner: &IdentityKeyPair, version: u64, devices: &[u32]) -> DeviceList {
        DeviceList {
            account: owner.account_id(),
            version,
            devices: devices.iter().map(|d| entry(*d, "device")).collect(),
        }
    }

    #[test]
    fn a_signed_list_verifies_and_any_change_breaks_it() {
        let alice = identity(1);
        let signed = list(&alice, 3, &[1, 2]).sign(&alice).unwrap();
        assert_eq!(signed.verify(), Ok(()));

        let mut injected = signed.clone();
        injected.list.devices.push(entry(3, "relay's device"));
        assert_eq!(injected.verify(), Err(DeviceListError::BadSignature));

        let mut renamed = signed.clone();
        renamed.list.devices[1].name = "other".into();
        assert_eq!(renamed.verify(), Err(DeviceListError::BadSignature));

        let mut bumped = signed;
        bumped.list.version = 4;
        assert_eq!(bumped.verify(), Err(DeviceListError::BadSignature));
    }

    #[test]
    fn only_the_account_signs_its_list() {
        let alice = identity(1);
        let mallory = identity(2);
        assert_eq!(
            list(&alice, 1, &[1]).sign(&mallory),
            Err(DeviceListError::BadSignature)
        );
        let mut forged = list(&mallory, 1, &[1, 2]).sign(&mallory).unwrap();
        forged.list.account = alice.account_id();
        assert_eq!(forged.verify(), Err(DeviceListError::BadSignature));
    }

    #[test]
    fn a_signature_for_another_purpose_does_not_verify_as_a_list() {
        let alice = identity(1);
        let list = list(&alice, 1, &[1]);
        // The same fields under another label, as a careless signer might produce them.
        let label = SignatureDomain::DeviceList.label().len() + 1;
        let transcript = list.transcript();
        let fields = &transcript.as_bytes()[label..];
        let signature = alice.sign(&Transcript::new(SignatureDomain::CardAnswer).fixed(fields));
        let reused = SignedDeviceList { list, signature };
        assert_eq!(reused.verify(), Err(DeviceListError::BadSignature));
    }

    #[test]
    fn malformed_lists_are_refused_before_signing() {
        let alice = identity(1);
        for (devices, why) in [
            (vec![], "no device"),
            (vec![2, 1], "devices not in strictly ascending order"),
            (vec![1, 1], "devices not in strictly ascending order"),
            (vec![0, 1], "device 0"),
            ((1..=33).collect::<Vec<u32>>(), "too many devices"),
        ] {
            assert_eq!(
                list(&alice, 1, &devices).sign(&alice),
                Err(DeviceListError::Malformed(why)),
                "{devices:?}"
            );
        }
        let mut long_name = list(&alice, 1, &[1]);
        long_name.devices[0].name = "x".repeat(MAX_DEVICE_NAME_BYTES + 1);
        assert!(long_name.sign(&alice).is_err());
        let mut control = list(&alice, 1, &[1]);
        control.devices[0].name = "phone\u{1b}[2J".into();
        assert!(control.sign(&alice).is_err());
    }

    #[test]
    fn a_view_takes_newer_lists_and_refuses_older_or_conflicting_ones() {
        let alice = identity(1);
        let account = alice.account_id();
        let mut view = DeviceListView::new(DeviceList::implicit(account));

        let v1 = list(&alice, 1, &[1, 2]).sign(&alice).unwrap();
        assert_eq!(
            view.accept(&account, &v1),
            Ok(ListChange::Changed {
                added: vec![DeviceId(2)],
                removed: vec![]
            })
        );
        assert_eq!(view.accept(&account, &v1), Ok(ListChange::Unchanged));

        let v2 = list(&alice, 2, &[2, 3]).sign(&alice).unwrap();
        assert_eq!(
            view.accept(&account, &v2),
            Ok(ListChange::Changed {
                added: vec![DeviceId(3)],
                removed: vec![DeviceId(1)]
            })
        );
        assert_eq!(
            view.accept(&account, &v1),
            Err(DeviceListError::Stale {
                offered: 1,
                known: 2
            })
        );
        let other_v2 = list(&alice, 2, &[2]).sign(&alice).unwrap();
        assert_eq!(
            view.accept(&account, &other_v2),
            Err(DeviceListError::Conflicting(2))
        );
        assert_eq!(view.list(), &v2.list);
    }

    #[test]
    fn a_view_refuses_a_list_of_another_account() {
        let alice = identity(1);
        let bob = identity(2);
        let mut view = DeviceListView::new(DeviceList::implicit(alice.account_id()));
        let bobs = list(&bob, 5, &[1, 2]).sign(&bob).unwrap();
        assert_eq!(
            view.accept(&alice.account_id(), &bobs),
            Err(DeviceListError::BadSignature)
        );
    }

    #[test]
    fn the_next_device_id_is_past_the_highest() {
        let alice = identity(1);
        assert_eq!(
            DeviceList::implicit(alice.account_id()).next_device_id(),
            Some(DeviceId(2))
        );
        assert_eq!(list(&alice, 4, &[1, 5]).next_device_id(), Some(DeviceId(6)));
        assert_eq!(list(&alice, 4, &[u32::MAX]).next_device_id(), None);
    }
}

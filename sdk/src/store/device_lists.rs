//! The device lists this client verified (ADR 0007): per account (its contacts' and its
//! own), the newest list the account signed that this client accepted. A send encrypts
//! to the devices of that list and nothing else, and a list the relay serves later is
//! accepted only if it verifies and is not older (`DeviceListView::accept`).

use parley_protocol::devices::DeviceList;
use parley_protocol::ids::AccountId;
use rusqlite::{params, OptionalExtension};

use super::{db, ClientStore};
use crate::error::SdkError;

impl ClientStore {
    /// The newest list of `account` this client verified; `None` before it ever looked
    /// (the account then has the implicit list, device 1 at version 0, until it does).
    pub fn device_list(&self, account: &AccountId) -> Result<Option<DeviceList>, SdkError> {
        let stored: Option<Vec<u8>> = self
            .lock()
            .query_row(
                "SELECT list FROM device_lists WHERE account = ?1",
                params![account.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        stored
            .map(|bytes| {
                rmp_serde::from_slice(&bytes).map_err(|_| SdkError::Storage("device_lists".into()))
            })
            .transpose()
    }

    /// Remembers `list` (verified by the caller, and not older than the one kept).
    pub fn save_device_list(&self, list: &DeviceList) -> Result<(), SdkError> {
        let bytes = rmp_serde::to_vec_named(list).map_err(|e| SdkError::Storage(e.to_string()))?;
        self.lock()
            .execute(
                "INSERT INTO device_lists (account, version, list) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account) DO UPDATE SET version = excluded.version,
                                                     list = excluded.list
                 WHERE excluded.version >= device_lists.version",
                params![
                    list.account.as_bytes().as_slice(),
                    i64::try_from(list.version).unwrap_or(i64::MAX),
                    bytes
                ],
            )
            .map(|_| ())
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use parley_protocol::devices::DeviceEntry;
    use parley_protocol::ids::DeviceId;

    use super::*;

    #[test]
    fn the_newest_list_is_kept() {
        let store = ClientStore::in_memory().unwrap();
        let account = AccountId::from_slice(&[5; 32]).unwrap();
        assert_eq!(store.device_list(&account).unwrap(), None);
        let list = |version: u64, devices: &[u32]| DeviceList {
            account,
            version,
            devices: devices
                .iter()
                .map(|d| DeviceEntry {
                    device: DeviceId(*d),
                    name: format!("device {d}"),
                    linked_at_ms: 0,
                })
                .collect(),
        };
        store.save_device_list(&list(2, &[1, 2])).unwrap();
        store.save_device_list(&list(1, &[1])).unwrap();
        assert_eq!(store.device_list(&account).unwrap(), Some(list(2, &[1, 2])));
        store.save_device_list(&list(3, &[2])).unwrap();
        assert_eq!(store.device_list(&account).unwrap(), Some(list(3, &[2])));
    }
}

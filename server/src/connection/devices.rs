//! `publish_devices` and `fetch_devices`: the account's signed device list (ADR 0007).
//!
//! The relay checks what it can without trusting itself: the list is the publisher's,
//! signed by the account key, well formed, within `max_devices_per_account`, and newer
//! than the stored one. Clients check the signature again; the relay's word adds nothing.
//! A device dropped from the list is deleted by the store and closed here (4005).

use parley_protocol::ids::{AccountId, DeviceAddress};
use parley_protocol::wire::client::PublishDevices;
use parley_protocol::wire::server::{Devices, ServerBody};

use crate::context::{now_ms, Shared};
use crate::error::RequestError;
use crate::store::{DeviceListLookup, NewDeviceList, PublishOutcome};

/// `publish_devices` from a device of `account`.
pub async fn publish(
    shared: &Shared,
    account: AccountId,
    request: PublishDevices,
) -> Result<ServerBody, RequestError> {
    let list = request.list;
    if list.list.account != account {
        return Err(RequestError::InvalidDeviceList(
            "the list is another account's".into(),
        ));
    }
    list.verify()
        .map_err(|e| RequestError::InvalidDeviceList(e.to_string()))?;
    let max = shared.config.max_devices_per_account;
    if list.list.devices.len() > max {
        return Err(RequestError::TooManyDevices(max));
    }
    let new = NewDeviceList {
        list: list.clone(),
        now_ms: now_ms(),
    };
    match shared.store.publish_device_list(new).await? {
        PublishOutcome::Stored { added, removed } => {
            tracing::info!(
                account = %account,
                version = list.list.version,
                added = added.len(),
                removed = removed.len(),
                "device list published"
            );
            for device in removed {
                shared.presence.remove(&DeviceAddress { account, device });
            }
            Ok(ServerBody::Devices(Devices {
                account,
                list: Some(list),
            }))
        }
        PublishOutcome::Stale { stored_version } => {
            Err(RequestError::StaleDeviceList { stored_version })
        }
        PublishOutcome::UnknownAccount => Err(RequestError::NotFound("account")),
    }
}

/// `fetch_devices`.
pub async fn fetch(shared: &Shared, account: AccountId) -> Result<ServerBody, RequestError> {
    let list = match shared.store.device_list(account).await? {
        DeviceListLookup::Published(list) => Some(list),
        DeviceListLookup::Implicit => None,
        DeviceListLookup::UnknownAccount => return Err(RequestError::NotFound("account")),
    };
    Ok(ServerBody::Devices(Devices { account, list }))
}

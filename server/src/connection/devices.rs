//! `publish_devices` and `fetch_devices`: the account's signed device list (ADR 0007).
//!
//! The relay checks what it can without trusting itself: the list is the publisher's,
//! signed by the account key, well formed, within `max_devices_per_account`, and newer
//! than the stored one. Clients check the signature again; the relay's word adds nothing.
//! A device dropped from the list is deleted by the store and closed here (4005).

use parley_protocol::ids::{AccountId, DeviceAddress};
use parley_protocol::wire::client::PublishDevices;
use parley_protocol::wire::server::{DeviceSeen, Devices, ServerBody};

use crate::context::Shared;
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
        now_ms: shared.now_ms(),
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
                last_seen: Vec::new(),
            }))
        }
        PublishOutcome::Stale { stored_version } => {
            Err(RequestError::StaleDeviceList { stored_version })
        }
        PublishOutcome::UnknownAccount => Err(RequestError::NotFound("account")),
    }
}

/// `fetch_devices` from a device of `asker`: the account's list and, for the asker's own
/// account only, the day each device last logged in (nobody else learns when someone's
/// devices are used).
pub async fn fetch(
    shared: &Shared,
    asker: AccountId,
    account: AccountId,
) -> Result<ServerBody, RequestError> {
    let mut served = list(shared, account).await?;
    served.last_seen = match asker == account {
        true => shared
            .store
            .devices_seen(account)
            .await?
            .into_iter()
            .filter_map(|(device, day)| day.map(|day_ms| DeviceSeen { device, day_ms }))
            .collect(),
        false => Vec::new(),
    };
    Ok(ServerBody::Devices(served))
}

/// The account's list as the relay holds it (`not_found` for no such account).
pub async fn list(shared: &Shared, account: AccountId) -> Result<Devices, RequestError> {
    let list = match shared.store.device_list(account).await? {
        DeviceListLookup::Published(list) => Some(list),
        DeviceListLookup::Implicit => None,
        DeviceListLookup::UnknownAccount => return Err(RequestError::NotFound("account")),
    };
    Ok(Devices {
        account,
        list,
        last_seen: Vec::new(),
    })
}

/// Records, in the background, that `device` logged in today (a failure only costs the
/// day shown in its account's `parley devices`).
pub fn note_seen(shared: &Shared, device: DeviceAddress) {
    let store = shared.store.clone();
    let now = shared.now_ms();
    tokio::spawn(async move {
        if let Err(e) = store.device_seen(device, now).await {
            tracing::debug!(%device, error = %e, "could not record the day a device was seen");
        }
    });
}

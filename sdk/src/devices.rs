//! This account's devices (ADR 0007), as the account signed them.
//!
//! The relay serves the list ([`Client::devices`]); the client accepts it only if the
//! account key signed it ([`DeviceListView::accept`]). Removing a device publishes a newer
//! list without it, signed here; the relay then deletes that device and closes it (4005).
//! A device does not remove itself. Adding a device is linking ([`crate::link`]).

use parley_protocol::devices::{DeviceList, DeviceListView, SignedDeviceList};
use parley_protocol::ids::{AccountId, DeviceId};
use parley_protocol::wire::client::{ClientBody, FetchDevices, PublishDevices};
use parley_protocol::wire::server::{DeviceSeen, ServerBody};
use parley_protocol::wire::ErrorCode;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// The account's devices: the latest list the account signed (device 1 alone, version
    /// 0, if it never published one). A list the account did not sign is refused.
    pub async fn devices(&self) -> Result<DeviceList, SdkError> {
        Ok(self.devices_and_last_seen().await?.0)
    }

    /// [`Client::devices`], with the day the relay last saw each device log in (UTC
    /// midnight, ms since the epoch; the relay's word, not signed; absent for a device
    /// it has not seen since it keeps track).
    pub async fn devices_and_last_seen(&self) -> Result<(DeviceList, Vec<DeviceSeen>), SdkError> {
        let account = self.identity().await?.account_id();
        let reply = self
            .request(ClientBody::FetchDevices(FetchDevices { account }))
            .await?;
        let last_seen = match &reply {
            ServerBody::Devices(served) => served.last_seen.clone(),
            _ => Vec::new(),
        };
        Ok((verified_list(account, reply)?, last_seen))
    }

    /// Removes `device` from the account: signs and publishes a newer list without it (once
    /// more from the relay's current list if another device published meanwhile).
    pub async fn remove_device(&self, device: DeviceId) -> Result<DeviceList, SdkError> {
        if device == self.profile().device {
            return Err(SdkError::InvalidInput(format!(
                "device {} is this device: remove it from another device of the account",
                device.0
            )));
        }
        let identity = self.identity().await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.devices().await?;
            if !current.contains(device) {
                return Err(SdkError::InvalidInput(format!(
                    "this account has no device {}",
                    device.0
                )));
            }
            let signed: SignedDeviceList = current
                .without(device)
                .sign(&identity)
                .map_err(|e| SdkError::InvalidInput(e.to_string()))?;
            match self
                .request(ClientBody::PublishDevices(PublishDevices {
                    list: signed.clone(),
                }))
                .await
            {
                Ok(_) => {
                    let published = signed.list.clone();
                    crate::engine::blocking(self.store(), move |s| s.save_device_list(&published))
                        .await?;
                    return Ok(signed.list);
                }
                Err(SdkError::Refused {
                    code: ErrorCode::StaleDeviceList,
                    ..
                }) if attempts < 2 => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The list in the relay's answer to `fetch_devices` for `account`, if the account signed
/// it; the implicit list (device 1, version 0) when the account never published one.
pub(crate) fn verified_list(account: AccountId, reply: ServerBody) -> Result<DeviceList, SdkError> {
    let ServerBody::Devices(served) = reply else {
        return Err(SdkError::Protocol(format!("unexpected reply {reply:?}")));
    };
    let mut view = DeviceListView::new(DeviceList::implicit(account));
    if let Some(list) = served.list {
        view.accept(&account, &list)
            .map_err(|e| SdkError::Protocol(format!("the relay served a bad device list: {e}")))?;
    }
    Ok(view.list().clone())
}

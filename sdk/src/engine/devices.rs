//! The device lists a send encrypts to (ADR 0007): per account, the newest list the
//! account signed that this client verified, fetched once and then taken from the relay
//! only as a newer signed list (in a `stale_devices` refusal, or a fetch).
//!
//! A list the relay serves is checked against the one remembered
//! ([`DeviceListView::accept`]): not the account's signature, another account's, older,
//! or the same version with other devices, and it is refused, reported
//! ([`Event::DeviceListRefused`]) and never encrypted to. A newer list replaces the
//! remembered one and, when it changes a list seen before, is announced
//! ([`Event::DevicesChanged`]): a person should hear that their contact (or their own
//! account) has a device more.

use parley_protocol::devices::{DeviceList, DeviceListView, ListChange};
use parley_protocol::ids::AccountId;
use parley_protocol::wire::client::{ClientBody, FetchDevices};
use parley_protocol::wire::server::{Devices, ServerBody};

use super::Engine;
use crate::connection::Connection;
use crate::error::SdkError;
use crate::events::Event;

impl Engine {
    /// The devices of `account` to encrypt to: the newest list verified, fetched from the
    /// relay and verified the first time.
    pub(super) async fn devices_of(
        &self,
        conn: &mut Connection,
        account: AccountId,
    ) -> Result<DeviceList, SdkError> {
        if let Some(list) = self.stored(move |s| s.device_list(&account)).await? {
            return Ok(list);
        }
        let reply = conn
            .request(ClientBody::FetchDevices(FetchDevices { account }))
            .await?;
        let ServerBody::Devices(served) = reply else {
            return Err(SdkError::Protocol(format!("unexpected reply {reply:?}")));
        };
        self.take_list(served).await
    }

    /// Checks a list the relay served against the one remembered; remembers a newer one
    /// (announcing it when it changes a list seen before) and returns the list to use.
    pub(super) async fn take_list(&self, served: Devices) -> Result<DeviceList, SdkError> {
        let account = served.account;
        let known = self.stored(move |s| s.device_list(&account)).await?;
        let seen_before = known.is_some();
        let mut view = DeviceListView::new(known.unwrap_or_else(|| DeviceList::implicit(account)));
        let change = match &served.list {
            Some(list) => view.accept(&account, list).map_err(|e| e.to_string()),
            // No list: the implicit one, version 0, which a verified list supersedes.
            None if view.list().version == 0 => Ok(ListChange::Unchanged),
            None => Err(format!(
                "the relay served no list, but this client verified version {}",
                view.list().version
            )),
        };
        let list = view.list().clone();
        match change {
            Err(reason) => {
                tracing::warn!(%account, %reason, "refused a device list");
                self.emit(Event::DeviceListRefused {
                    account,
                    reason: reason.clone(),
                })
                .await;
                Err(SdkError::DeviceListRefused { account, reason })
            }
            Ok(ListChange::Unchanged) if seen_before => Ok(list),
            Ok(ListChange::Unchanged) => {
                let saved = list.clone();
                self.stored(move |s| s.save_device_list(&saved)).await?;
                Ok(list)
            }
            Ok(ListChange::Changed { added, removed }) => {
                let saved = list.clone();
                self.stored(move |s| s.save_device_list(&saved)).await?;
                if seen_before {
                    self.emit(Event::DevicesChanged {
                        account,
                        version: list.version,
                        added,
                        removed,
                    })
                    .await;
                }
                Ok(list)
            }
        }
    }
}

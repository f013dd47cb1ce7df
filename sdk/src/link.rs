//! Linking a new device to an account (ADR 0007, protocol §15): both ends of the exchange,
//! each on a connection of its own.
//!
//! ```text
//!  existing device                          relay                      new device
//!  LinkInvite::open ── open_link ─────────▶   │
//!    code(), expires_at_ms()                  │   ◀── join_link ─── NewDevice::join
//!  wait_for_join ◀─────── link_joined ─────   │        (waits, before auth)
//!  JoinRequest::approve(name)                 │
//!    publish_devices {list + new device} ──▶  │
//!    seal_link {sealed LinkSecrets} ───────▶  │ ─── link_sealed ──▶ opens the secrets,
//!                                             │   ◀── auth as the new device id
//!                                             │   ◀── upload_prekeys, stored in the profile
//! ```
//!
//! It owns the order of the steps, the checks a person cannot make (the join's MAC before
//! anything is published, the sealed list before anything is stored), the device id and
//! the list the new device gets, and the wording of the failures. The cryptography is
//! `parley_protocol::devices::link`; the relay only pairs the two ends.
//!
//! [`LinkInvite`] logs in as this device on a connection of its own (it must wait for a
//! pushed `link_joined`, which the engine does not hand out): do not run it beside a
//! running [`crate::Client`] of the same profile, whose connection it would displace.
//! While it waits it reads and drops what the relay pushes, without acknowledging
//! anything: queued messages stay on the relay for the profile's next session.

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::devices::link::{LinkCode, LinkJoin, LinkOffer, LinkSecrets};
use parley_protocol::devices::list::{MAX_DEVICE_LIST_ENTRIES, MAX_DEVICE_NAME_BYTES};
use parley_protocol::devices::{DeviceEntry, DeviceList, SignedDeviceList};
use parley_protocol::identity::IdentityKeyPair;
use parley_protocol::ids::{DeviceAddress, DeviceId, Handle};
use parley_protocol::wire::client::{
    ClientBody, FetchDevices, JoinLink, OpenLink, PublishDevices, SealLink,
};
use parley_protocol::wire::server::{LinkJoined, ServerBody};
use parley_protocol::wire::ErrorCode;
use rand_core::OsRng;
use tokio::time::Instant;

use crate::client::{identity_from, ClientConfig};
use crate::connection::{self, Connection};
use crate::devices::verified_list;
use crate::engine::{blocking, now_ms};
use crate::error::SdkError;
use crate::keys::{first_upload_body, generate_prekeys};
use crate::store::{ClientStore, PrekeyRecords, Profile};

/// Longest a new device waits for the existing device to approve it. The relay answers
/// `link_unavailable` when its link lifetime (10 minutes by default) runs out, so this
/// only bounds the wait on a relay that never answers.
pub const JOIN_WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Longest an existing device waits for a join, whatever expiry the relay announced (a
/// relay clock far ahead of this one must not keep it waiting for days).
pub const INVITE_WAIT_LIMIT: Duration = Duration::from_secs(60 * 60);

/// The existing device's open linking code, waiting for a new device to join.
#[derive(Debug)]
pub struct LinkInvite {
    conn: Connection,
    offer: LinkOffer,
    identity: IdentityKeyPair,
    me: DeviceAddress,
    handle: Option<Handle>,
    expires_at_ms: u64,
    deadline: Instant,
    /// The account's list when the code was opened: the new device's id-to-be.
    current: DeviceList,
    /// The profile, which remembers the list this device publishes (its own sends then
    /// copy to the new device at once).
    store: Arc<ClientStore>,
}

impl LinkInvite {
    /// Logs in as this profile's device and opens a linking code on the relay. Refuses
    /// when the account's list is already full under the protocol (the relay's own,
    /// lower, cap is learned when the new device is approved).
    pub async fn open(
        config: &ClientConfig,
        store: Arc<ClientStore>,
    ) -> Result<LinkInvite, SdkError> {
        if store.is_read_only() {
            return Err(SdkError::ProfileInUse);
        }
        let stored = blocking(&store, |s| s.identity())
            .await?
            .filter(|s| !s.pending)
            .ok_or(SdkError::NotRegistered)?;
        let identity = identity_from(&stored.secret)?;
        let profile = stored.profile;
        let me = DeviceAddress {
            account: profile.account,
            device: profile.device,
        };
        let (_, opened) = connection::open_first(&config.servers, &config.tls).await?;
        let mut conn = Connection::login(opened, &identity, me.device).await?;
        let current = fetch_list(&mut conn, &me).await?;
        if current.devices.len() >= MAX_DEVICE_LIST_ENTRIES {
            return Err(SdkError::TooManyDevices(format!(
                "the protocol's limit is {MAX_DEVICE_LIST_ENTRIES}"
            )));
        }
        let offer = LinkOffer::generate(&mut OsRng);
        let reply = conn
            .request(ClientBody::OpenLink(OpenLink {
                rendezvous: offer.code().rendezvous(),
            }))
            .await?;
        let ServerBody::LinkOpened(opened) = reply else {
            return Err(SdkError::Protocol(format!(
                "unexpected reply to open_link: {reply:?}"
            )));
        };
        let deadline = Instant::now() + time_left(opened.expires_at_ms, now_ms());
        Ok(LinkInvite {
            conn,
            offer,
            identity,
            me,
            handle: profile.handle,
            expires_at_ms: opened.expires_at_ms,
            deadline,
            current,
            store,
        })
    }

    /// The code to show the new device (`parley-link:...`): a bearer secret until it
    /// expires or is used.
    pub fn code(&self) -> String {
        self.offer.code().encode()
    }

    /// When the relay forgets the code (its clock, ms since the epoch).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The id the new device will get if the account's list does not change meanwhile.
    pub fn next_device(&self) -> Option<DeviceId> {
        self.current.next_device_id()
    }

    /// Waits until a device joins with the code, at most until it expires
    /// ([`SdkError::LinkExpired`]). A join whose MAC does not match the code (which only a
    /// relay forging one could send) ends the exchange with an error: nothing is published.
    pub async fn wait_for_join(mut self) -> Result<JoinRequest, SdkError> {
        loop {
            let push = tokio::time::timeout_at(self.deadline, self.conn.next_push())
                .await
                .map_err(|_| SdkError::LinkExpired)??;
            let ServerBody::LinkJoined(joined) = push else {
                // Deliveries stay queued for the profile's next session (not acknowledged).
                continue;
            };
            if joined.rendezvous != self.offer.code().rendezvous() {
                continue;
            }
            self.offer
                .check_join(&joined.public, &joined.mac)
                .map_err(|e| {
                    SdkError::Protocol(format!(
                        "{e}: the relay forwarded a join that was not made with this code; \
                         nothing was handed over"
                    ))
                })?;
            return Ok(JoinRequest {
                invite: self,
                joined,
            });
        }
    }
}

/// A device joined with the code and proved it read it: approve it (or drop this to
/// refuse; the new device is then told the code is no longer available).
#[derive(Debug)]
pub struct JoinRequest {
    invite: LinkInvite,
    joined: LinkJoined,
}

/// What linking added to the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedDevice {
    /// The new device's id.
    pub device: DeviceId,
    /// Its name on the list.
    pub name: String,
    /// The list now published, signed by the account.
    pub list: DeviceList,
}

impl JoinRequest {
    /// The id the new device will get if the account's list does not change meanwhile.
    pub fn next_device(&self) -> Option<DeviceId> {
        self.invite.next_device()
    }

    /// When the code expires; approving after that hands nothing over.
    pub fn expires_at_ms(&self) -> u64 {
        self.invite.expires_at_ms
    }

    /// Keeps the connection answered while a person decides (the relay closes a silent
    /// connection): reads and drops pushes until the code expires or the connection
    /// fails, and returns why it stopped. Cancel-safe: drop it to go on with
    /// [`JoinRequest::approve`].
    pub async fn keep_alive(&mut self) -> SdkError {
        loop {
            match tokio::time::timeout_at(self.invite.deadline, self.invite.conn.next_push()).await
            {
                Err(_) => return SdkError::LinkExpired,
                Ok(Err(e)) => return e,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Adds the device to the account under `name` (default `device N`): publishes the
    /// next list, signed by the account (once more from the relay's list if another
    /// device published meanwhile), then seals the account's secrets, its id and that
    /// list for the new device. If the code expired in between, the device is taken off
    /// the list again and [`SdkError::LinkExpired`] returned.
    pub async fn approve(mut self, name: Option<&str>) -> Result<LinkedDevice, SdkError> {
        if let Some(name) = name {
            check_device_name(name)?;
        }
        if Instant::now() >= self.invite.deadline {
            return Err(SdkError::LinkExpired);
        }
        let invite = &mut self.invite;
        let mut attempts = 0;
        let (device, signed) = loop {
            attempts += 1;
            let current = fetch_list(&mut invite.conn, &invite.me).await?;
            let (device, next) = list_with_new_device(&current, name, now_ms())?;
            let signed = next
                .sign(&invite.identity)
                .map_err(|e| SdkError::InvalidInput(e.to_string()))?;
            match invite
                .conn
                .request(ClientBody::PublishDevices(PublishDevices {
                    list: signed.clone(),
                }))
                .await
            {
                Ok(_) => break (device, signed),
                Err(SdkError::Refused {
                    code: ErrorCode::StaleDeviceList,
                    ..
                }) if attempts < 2 => continue,
                Err(SdkError::Refused {
                    code: ErrorCode::TooManyDevices,
                    message,
                    ..
                }) => return Err(SdkError::TooManyDevices(message)),
                Err(e) => return Err(e),
            }
        };
        let secrets = LinkSecrets::new(
            &invite.identity,
            device,
            signed.clone(),
            invite.handle.clone(),
        );
        let sealed = invite
            .offer
            .seal(&self.joined.public, &self.joined.mac, &secrets)
            .map_err(|e| SdkError::Protocol(e.to_string()))?;
        drop(secrets);
        let handed = invite
            .conn
            .request(ClientBody::SealLink(SealLink {
                rendezvous: self.joined.rendezvous,
                sealed,
            }))
            .await;
        match handed {
            Ok(_) => {
                let published = signed.list.clone();
                blocking(&invite.store, move |s| s.save_device_list(&published)).await?;
                Ok(LinkedDevice {
                    device,
                    name: entry_name(&signed, device),
                    list: signed.list,
                })
            }
            Err(SdkError::Refused {
                code: ErrorCode::LinkUnavailable,
                ..
            }) => {
                // Nobody received the secrets: the device on the list can never log in.
                if let Err(e) = unlist(invite, device).await {
                    tracing::warn!(device = device.0, error = %e, "could not unlist a device that was never linked");
                }
                Err(SdkError::LinkExpired)
            }
            Err(e) => Err(e),
        }
    }
}

/// Publishes the account's list without `device` (one attempt).
async fn unlist(invite: &mut LinkInvite, device: DeviceId) -> Result<(), SdkError> {
    let current = fetch_list(&mut invite.conn, &invite.me).await?;
    if !current.contains(device) {
        return Ok(());
    }
    let signed = current
        .without(device)
        .sign(&invite.identity)
        .map_err(|e| SdkError::InvalidInput(e.to_string()))?;
    invite
        .conn
        .request(ClientBody::PublishDevices(PublishDevices { list: signed }))
        .await
        .map(|_| ())
}

async fn fetch_list(conn: &mut Connection, me: &DeviceAddress) -> Result<DeviceList, SdkError> {
    let reply = conn
        .request(ClientBody::FetchDevices(FetchDevices {
            account: me.account,
        }))
        .await?;
    verified_list(me.account, reply)
}

fn entry_name(list: &SignedDeviceList, device: DeviceId) -> String {
    list.list
        .devices
        .iter()
        .find(|entry| entry.device == device)
        .map(|entry| entry.name.clone())
        .unwrap_or_default()
}

/// The list after `current` with one more device, named `name` (default `device N`),
/// linked at `now_ms`: the next id, the next version.
pub fn list_with_new_device(
    current: &DeviceList,
    name: Option<&str>,
    now_ms: u64,
) -> Result<(DeviceId, DeviceList), SdkError> {
    let too_many =
        || SdkError::TooManyDevices(format!("the protocol's limit is {MAX_DEVICE_LIST_ENTRIES}"));
    if current.devices.len() >= MAX_DEVICE_LIST_ENTRIES {
        return Err(too_many());
    }
    let device = current.next_device_id().ok_or_else(too_many)?;
    let name = match name {
        Some(name) => name.to_owned(),
        None => format!("device {}", device.0),
    };
    check_device_name(&name)?;
    let mut devices = current.devices.clone();
    devices.push(DeviceEntry {
        device,
        name,
        linked_at_ms: now_ms,
    });
    Ok((
        device,
        DeviceList {
            account: current.account,
            version: current.version.saturating_add(1),
            devices,
        },
    ))
}

/// Refuses a device name the list cannot carry: longer than 32 bytes, or with a control
/// character.
pub fn check_device_name(name: &str) -> Result<(), SdkError> {
    if name.len() > MAX_DEVICE_NAME_BYTES {
        return Err(SdkError::InvalidInput(format!(
            "the device name is {} bytes long and the limit is {MAX_DEVICE_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(SdkError::InvalidInput(
            "a device name cannot contain control characters".into(),
        ));
    }
    Ok(())
}

/// How long until `expires_at_ms` (relay clock) by this machine's clock, within
/// [`INVITE_WAIT_LIMIT`].
fn time_left(expires_at_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(expires_at_ms.saturating_sub(now_ms)).min(INVITE_WAIT_LIMIT)
}

/// A new device about to join an account with a linking code, on an empty profile.
#[derive(Debug)]
pub struct NewDevice {
    config: ClientConfig,
    store: Arc<ClientStore>,
    join: LinkJoin,
    /// Made before joining: the relay gives the device only its auth deadline after the
    /// seal arrives.
    prekeys: PrekeyRecords,
}

impl NewDevice {
    /// Checks the code and that `store` holds no account yet.
    pub async fn prepare(
        config: &ClientConfig,
        store: Arc<ClientStore>,
        code: &str,
    ) -> Result<NewDevice, SdkError> {
        let code = LinkCode::decode(code).map_err(|e| SdkError::InvalidInput(e.to_string()))?;
        if store.is_read_only() {
            return Err(SdkError::ProfileInUse);
        }
        if let Some(existing) = blocking(&store, |s| s.identity()).await? {
            let profile = existing.profile;
            let name = profile
                .handle
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| profile.account.to_string());
            return Err(SdkError::InvalidInput(format!(
                "this profile already holds an account ({name}); link the new device into a \
                 new profile, e.g. `parley --profile laptop link CODE`"
            )));
        }
        Ok(NewDevice {
            config: config.clone(),
            store,
            join: LinkJoin::new(code, &mut OsRng),
            prekeys: generate_prekeys(&mut OsRng),
        })
    }

    /// Joins: waits for the existing device to approve (at most [`JOIN_WAIT_LIMIT`]),
    /// opens and checks what it sealed, logs in as the device id it names, publishes this
    /// device's prekeys, and stores the account in the profile.
    pub async fn join(self) -> Result<Profile, SdkError> {
        let (_, mut opened) =
            connection::open_first(&self.config.servers, &self.config.tls).await?;
        let reply = opened
            .join_link(
                JoinLink {
                    rendezvous: self.join.rendezvous(),
                    public: self.join.public(),
                    mac: self.join.mac(),
                },
                JOIN_WAIT_LIMIT,
            )
            .await?;
        let sealed = match reply {
            Ok(ServerBody::LinkSealed(sealed)) => sealed.sealed,
            Ok(other) => {
                return Err(SdkError::Protocol(format!(
                    "unexpected reply to join_link: {other:?}"
                )))
            }
            Err(e) if e.code == ErrorCode::LinkUnavailable => {
                return Err(SdkError::LinkUnavailable)
            }
            Err(e) => return Err(e.into()),
        };
        let secrets = self.join.open(&sealed).map_err(|e| {
            SdkError::Protocol(format!(
                "{e}: what arrived was not sealed by the device that showed the code"
            ))
        })?;
        check_secrets(&secrets)?;
        let identity = secrets.identity();
        let profile = Profile {
            account: identity.account_id(),
            handle: secrets.handle.clone(),
            device: secrets.device,
        };
        let mut conn = Connection::login(opened, &identity, secrets.device).await?;
        conn.request(ClientBody::UploadPrekeys(first_upload_body(
            &identity,
            &self.prekeys,
        )?))
        .await?;
        let stored = profile.clone();
        let prekeys = self.prekeys;
        blocking(&self.store, move |s| {
            s.save_linked(&secrets.identity[..], &stored, &prekeys)?;
            s.save_device_list(&secrets.list.list)
        })
        .await?;
        Ok(profile)
    }
}

/// What the new device checks before it stores anything: the list verifies, is the
/// identity's account's, and names the device id it was given. (Opening the seal checks
/// the same; this says which failed.)
fn check_secrets(secrets: &LinkSecrets) -> Result<(), SdkError> {
    let account = secrets.identity().account_id();
    secrets
        .list
        .verify()
        .map_err(|e| SdkError::Protocol(format!("the linked account's device list: {e}")))?;
    if secrets.list.list.account != account {
        return Err(SdkError::Protocol(
            "the linked device list is another account's".into(),
        ));
    }
    if !secrets.list.list.contains(secrets.device) {
        return Err(SdkError::Protocol(format!(
            "the linked device list does not name device {}",
            secrets.device.0
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> IdentityKeyPair {
        IdentityKeyPair::from_secret_bytes(&[1; 64])
    }

    #[test]
    fn the_new_device_gets_the_next_id_and_version_and_a_default_name() {
        let account = alice().account_id();
        let (device, next) =
            list_with_new_device(&DeviceList::implicit(account), None, 1_764_000_000_000).unwrap();
        assert_eq!(device, DeviceId(2));
        assert_eq!(next.version, 1);
        assert_eq!(
            next.device_ids().collect::<Vec<_>>(),
            [DeviceId(1), DeviceId(2)]
        );
        assert_eq!(next.devices[1].name, "device 2");
        assert_eq!(next.devices[1].linked_at_ms, 1_764_000_000_000);
        assert!(next.clone().sign(&alice()).is_ok());

        let (device, named) = list_with_new_device(&next, Some("laptop"), 5).unwrap();
        assert_eq!(device, DeviceId(3));
        assert_eq!(named.version, 2);
        assert_eq!(named.devices[2].name, "laptop");
    }

    #[test]
    fn a_full_list_or_a_bad_name_is_refused() {
        let account = alice().account_id();
        let full = DeviceList {
            account,
            version: 9,
            devices: (1..=MAX_DEVICE_LIST_ENTRIES as u32)
                .map(|n| DeviceEntry {
                    device: DeviceId(n),
                    name: String::new(),
                    linked_at_ms: 0,
                })
                .collect(),
        };
        assert!(matches!(
            list_with_new_device(&full, None, 1),
            Err(SdkError::TooManyDevices(_))
        ));
        let implicit = DeviceList::implicit(account);
        assert!(list_with_new_device(&implicit, Some(&"x".repeat(33)), 1).is_err());
        assert!(list_with_new_device(&implicit, Some("tab\there"), 1).is_err());
        assert!(check_device_name(&"é".repeat(16)).is_ok());
    }

    #[test]
    fn the_wait_for_a_join_follows_the_relays_expiry_within_a_bound() {
        assert_eq!(time_left(10_000, 4_000), Duration::from_secs(6));
        assert_eq!(time_left(4_000, 10_000), Duration::ZERO);
        assert_eq!(time_left(u64::MAX, 0), INVITE_WAIT_LIMIT);
    }

    #[test]
    fn secrets_are_checked_against_the_account_and_the_device_id() {
        let identity = alice();
        let (_, list) =
            list_with_new_device(&DeviceList::implicit(identity.account_id()), None, 1).unwrap();
        let signed = list.sign(&identity).unwrap();
        let good = LinkSecrets::new(&identity, DeviceId(2), signed.clone(), None);
        assert!(check_secrets(&good).is_ok());
        let off_list = LinkSecrets::new(&identity, DeviceId(3), signed.clone(), None);
        assert!(check_secrets(&off_list).is_err());
        let other = IdentityKeyPair::from_secret_bytes(&[2; 64]);
        let foreign = LinkSecrets::new(&other, DeviceId(2), signed, None);
        assert!(check_secrets(&foreign).is_err());
    }
}

//! `send_to_all`: one message for every device of an account and the sender's other
//! devices (ADR 0007), turned into one [`NewEnvelope`] with a [`FanOut`].
//!
//! The connection checks what needs no store: there is a copy for at least one device of
//! the recipient (the sender's own account for a sync, with no `own_copies` then), no device is named twice, and the copies
//! together fit the envelope limit (one message, one envelope's budget). Whether the
//! copies name exactly the current devices is the store's check, made in the transaction
//! that stores them; when it fails, [`stale`] answers with the current lists.

use parley_protocol::ids::{AccountId, DeviceAddress};
use parley_protocol::wire::client::{DeviceCopy, SendToAll};

use super::devices;
use crate::context::Shared;
use crate::error::RequestError;
use crate::store::{EnvelopeCopy, FanOut, NewEnvelope};

/// The envelope a `send_to_all` from `from` asks to store, received at `now_ms`.
pub fn envelope(
    from: DeviceAddress,
    request: SendToAll,
    limit: usize,
    now_ms: u64,
) -> Result<NewEnvelope, RequestError> {
    let SendToAll {
        to,
        to_version,
        mut copies,
        own_version,
        mut own_copies,
        id,
        category,
        receipt,
    } = request;
    if to == from.account && !own_copies.is_empty() {
        return Err(RequestError::Malformed(
            "send_to_all: to the sender's own account (a sync), its other devices go in `copies`"
                .into(),
        ));
    }
    let size: usize = copies
        .iter()
        .chain(&own_copies)
        .map(|c| c.ciphertext.len())
        .sum();
    if size > limit {
        return Err(RequestError::TooLarge { size, limit });
    }
    copies.sort_by_key(|c| c.device);
    own_copies.sort_by_key(|c| c.device);
    let named_twice = |list: &[DeviceCopy]| list.windows(2).any(|w| w[0].device == w[1].device);
    if named_twice(&copies) || named_twice(&own_copies) {
        return Err(RequestError::Malformed(
            "send_to_all: a device has two copies".into(),
        ));
    }
    let mut copies = copies.into_iter();
    let first = copies
        .next()
        .ok_or_else(|| RequestError::Malformed("send_to_all: no copy for the recipient".into()))?;
    let address = |account: AccountId| {
        move |c: DeviceCopy| EnvelopeCopy {
            to: DeviceAddress {
                account,
                device: c.device,
            },
            ciphertext: c.ciphertext,
        }
    };
    Ok(NewEnvelope {
        from,
        to: DeviceAddress {
            account: to,
            device: first.device,
        },
        id,
        ciphertext: first.ciphertext,
        now_ms,
        category,
        receipt,
        fan_out: Some(FanOut {
            to_version,
            own_version,
            copies: copies
                .map(address(to))
                .chain(own_copies.into_iter().map(address(from.account)))
                .collect(),
        }),
    })
}

/// The refusal of a `send_to_all` made for old lists: `stale_devices` with the current
/// lists of `to` and of `own` (once for a sync), as `fetch_devices` serves them.
pub async fn stale(shared: &Shared, to: AccountId, own: AccountId) -> RequestError {
    let mut lists = Vec::with_capacity(2);
    let accounts = if to == own { vec![to] } else { vec![to, own] };
    for account in accounts {
        match devices::list(shared, account).await {
            Ok(list) => lists.push(list),
            Err(e) => return e,
        }
    }
    RequestError::StaleDevices(lists)
}

//! Linked devices (ADR 0007): the owner-signed device list and the linking exchange.
//!
//! * [`list`]: which devices an account has, signed by the account so that the relay can
//!   store and serve the list but not add a device to it.
//! * [`link`]: the code an existing device shows and the sealed hand-over of the account
//!   secrets to the new device through the relay.

mod base32;
pub mod link;
pub mod list;

pub use link::{LinkCode, LinkError, LinkJoin, LinkOffer, LinkSecrets, RendezvousId};
pub use list::{
    DeviceEntry, DeviceList, DeviceListError, DeviceListView, ListChange, SignedDeviceList,
};

//! Bus subject names: never a raw device id.
//!
//! NATS monitoring (`/subsz`, `/connz?subs=1`) shows every subject, so a device's subject
//! is an HMAC of its address under the cluster key:
//!
//! ```text
//! parley.<cluster>.d.<device>     one device: wakes, "connected", prekeys low
//! parley.<cluster>.ctl.resync     every node: read every local device's queue again
//! parley.<cluster>.l.<rendezvous> one linking rendezvous: a join, answered by request-reply
//!
//! <cluster> = hex(HMAC-SHA256(key, "parley/v1/bus/cluster"))[..16]
//! <device>  = hex(HMAC-SHA256(key, "parley/v1/bus/device" || account (32) || device (4, BE)))[..32]
//! <rendezvous> = hex(HMAC-SHA256(key, "parley/v1/bus/link" || rendezvous id (16)))[..32]
//! ```
//!
//! The labels keep the two uses of the key apart; the cluster part keeps two clusters on
//! one NATS from hearing each other.

use hmac::{Hmac, Mac};
use parley_protocol::devices::link::RendezvousId;
use parley_protocol::ids::DeviceAddress;
use sha2::Sha256;

use crate::topology::ClusterKey;

const CLUSTER_LABEL: &[u8] = b"parley/v1/bus/cluster";
const DEVICE_LABEL: &[u8] = b"parley/v1/bus/device";
const LINK_LABEL: &[u8] = b"parley/v1/bus/link";

/// Names the subjects of one cluster.
#[derive(Clone)]
pub struct Subjects {
    /// The HMAC keyed with the cluster key that has read [`DEVICE_LABEL`]: each device's
    /// subject clones it (half the hashing of keying it anew, on every wake).
    device_mac: Hmac<Sha256>,
    /// The same for [`LINK_LABEL`].
    link_mac: Hmac<Sha256>,
    prefix: String,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subjects")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Subjects {
    /// The subjects of the cluster keyed by `key`.
    pub fn new(key: ClusterKey) -> Subjects {
        let mut device_mac = keyed(&key);
        device_mac.update(DEVICE_LABEL);
        let mut link_mac = keyed(&key);
        link_mac.update(LINK_LABEL);
        Subjects {
            device_mac,
            link_mac,
            prefix: format!("parley.{}", hex_digits(keyed(&key), &[CLUSTER_LABEL], 16)),
        }
    }

    /// The subject of one device.
    pub fn device(&self, device: &DeviceAddress) -> String {
        let id = hex_digits(
            self.device_mac.clone(),
            &[device.account.as_bytes(), &device.device.0.to_be_bytes()],
            32,
        );
        format!("{}.d.{id}", self.prefix)
    }

    /// The subject of one linking rendezvous.
    pub fn link(&self, rendezvous: &RendezvousId) -> String {
        let id = hex_digits(self.link_mac.clone(), &[rendezvous.as_bytes()], 32);
        format!("{}.l.{id}", self.prefix)
    }

    /// The subject every node listens on for "resync every device".
    pub fn resync_all(&self) -> String {
        format!("{}.ctl.resync", self.prefix)
    }

    /// A subject no node listens on: the NATS server answers a request to it "no
    /// responders", after everything the requesting connection sent before it.
    /// The subject under which one node process hears the words about the envelopes it
    /// holds (`held.rs`): `<inbox>.<token>`; `process` is random per process, so a
    /// restarted node never takes an earlier process's words for its own.
    pub fn held_inbox(&self, process: &str) -> String {
        format!("{}.h.{process}", self.prefix)
    }

    pub fn probe(&self) -> String {
        format!("{}.ctl.probe", self.prefix)
    }
}

/// HMAC-SHA256 keyed with the cluster key.
fn keyed(key: &ClusterKey) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so neither can fail.
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => Hmac::<Sha256>::new(&Default::default()),
    }
}

/// The first `digits` hex digits of `mac` over `parts`.
fn hex_digits(mut mac: Hmac<Sha256>, parts: &[&[u8]], digits: usize) -> String {
    for part in parts {
        mac.update(part);
    }
    let mut text = hex::encode(mac.finalize().into_bytes());
    text.truncate(digits);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ids::{AccountId, DeviceId};

    fn key(text: &str) -> ClusterKey {
        text.parse().unwrap()
    }

    #[test]
    fn subjects_hide_the_device_and_differ_per_cluster() {
        let device = DeviceAddress {
            account: AccountId([0xab; 32]),
            device: DeviceId(1),
        };
        let a = Subjects::new(key("cluster-a-secret-key"));
        let b = Subjects::new(key("cluster-b-secret-key"));
        let subject = a.device(&device);
        assert!(!subject.contains("abab"), "{subject}");
        assert_eq!(subject.split('.').count(), 4);
        assert!(subject
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.'));
        assert_ne!(subject, b.device(&device));
        assert_ne!(a.resync_all(), b.resync_all());
        let other = DeviceAddress {
            device: DeviceId(2),
            ..device
        };
        assert_ne!(subject, a.device(&other));
        assert_eq!(subject, a.device(&device), "stable");
        let rendezvous = RendezvousId([0xcd; 16]);
        let link = a.link(&rendezvous);
        assert!(
            !link.contains("cdcd") && link.split('.').count() == 4,
            "{link}"
        );
        assert_ne!(link, b.link(&rendezvous));
    }
}

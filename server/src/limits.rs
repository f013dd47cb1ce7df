//! The per-account and per-address limits (registrations, failed authentications,
//! bundle fetches, lookups of unknown handles), counted where the deployment keeps them:
//! in this process on one node, in the shared store in a cluster (a PostgreSQL store
//! keeps them in its `rate_buckets`), so that spreading requests over the nodes does not
//! multiply a limit. Per-connection limits stay in the connection.
//!
//! Both use `rate_limit::BucketRate`'s arithmetic. When the shared store cannot answer,
//! this node's own buckets count instead: the limit then holds per node, never not at all.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parley_protocol::ids::{AccountId, DeviceAddress};

use crate::rate_limit::{BucketRate, RateLimiter, RetryAfter};
use crate::store::Store;

/// Most distinct keys each node-local limiter tracks.
pub const RATE_LIMIT_MAX_KEYS: usize = 100_000;

/// What a limit's key is in the shared store.
pub trait LimitSubject {
    /// The bytes of the key.
    fn subject(&self) -> Vec<u8>;
}

impl LimitSubject for IpAddr {
    fn subject(&self) -> Vec<u8> {
        match self {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }
}

impl LimitSubject for AccountId {
    fn subject(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl LimitSubject for (AccountId, DeviceAddress) {
    fn subject(&self) -> Vec<u8> {
        let mut bytes = self.0.as_bytes().to_vec();
        bytes.extend_from_slice(self.1.account.as_bytes());
        bytes.extend_from_slice(&self.1.device.0.to_be_bytes());
        bytes
    }
}

/// One named limit: `burst` per `period` per key.
#[derive(Debug)]
pub struct Limit<K> {
    name: &'static str,
    rate: BucketRate,
    local: RateLimiter<K>,
}

impl<K: Eq + Hash + Clone + LimitSubject> Limit<K> {
    /// The limit `name` (its key in the shared store), `burst` per `period`.
    pub fn new(name: &'static str, burst: u32, period: Duration) -> Limit<K> {
        Limit {
            name,
            rate: BucketRate::new(burst, period),
            local: RateLimiter::new(burst, period, RATE_LIMIT_MAX_KEYS),
        }
    }

    /// Takes `cost` from `key`'s bucket.
    pub async fn take(&self, store: &dyn Store, key: &K, cost: u32) -> Result<(), RetryAfter> {
        self.count(store, key, cost, true).await
    }

    /// Whether `key` could take one now, without taking it (for limits that charge only
    /// failures: check before the work, [`Limit::take`] after a failure).
    pub async fn check(&self, store: &dyn Store, key: &K) -> Result<(), RetryAfter> {
        self.count(store, key, 1, false).await
    }

    async fn count(
        &self,
        store: &dyn Store,
        key: &K,
        cost: u32,
        take: bool,
    ) -> Result<(), RetryAfter> {
        if let Some(shared) = store.shared_rate(self.name, key.subject(), self.rate, cost, take) {
            match shared.await {
                Ok(answer) => return answer,
                Err(e) => {
                    tracing::debug!(limit = self.name, error = %e, "shared limit unavailable; counting on this node")
                }
            }
        }
        let now = Instant::now();
        if take {
            self.local.take(key, cost, now)
        } else {
            self.local.check(key, now)
        }
    }
}

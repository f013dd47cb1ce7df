//! Token-bucket rate limiting, local to this process.
//!
//! A [`RateLimiter`] holds one bucket per key, up to `max_keys` keys. When full it first
//! forgets buckets that have refilled completely (they carry no information); if every
//! bucket is still in use it refuses new keys, failing closed rather than growing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused; retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by `K`: `burst` tokens, refilled at `burst` per `period`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: f64,
    per_second: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Allows `burst` requests per `period` per key, tracking at most `max_keys` keys.
    pub fn new(burst: u32, period: Duration, max_keys: usize) -> RateLimiter<K> {
        let burst = f64::from(burst);
        RateLimiter {
            burst,
            per_second: burst / period.as_secs_f64().max(f64::MIN_POSITIVE),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket at time `now`.
    pub fn take(&self, key: &K, cost: u32, now: Instant) -> Result<(), RetryAfter> {
        let cost = f64::from(cost);
        if cost > self.burst {
            return Err(RetryAfter(Duration::MAX));
        }
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, b| refilled(b, now, burst, per_second) < burst);
            if buckets.len() >= self.max_keys {
                return Err(RetryAfter(Duration::from_secs(1)));
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, now, self.burst, self.per_second);
        bucket.updated = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost - bucket.tokens;
            let wait = if self.per_second > 0.0 {
                Duration::from_secs_f64((missing / self.per_second).min(86_400.0 * 365.0))
            } else {
                Duration::MAX
            };
            Err(RetryAfter(wait))
        }
    }
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Whether `key` could take one token now, without taking it (for limits that charge
    /// only failures: check before the work, [`RateLimiter::take`] after a failure).
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(bucket) = buckets.get(key) else {
            return Ok(());
        };
        let tokens = refilled(bucket, now, self.burst, self.per_second);
        if tokens >= 1.0 {
            Ok(())
        } else if self.per_second > 0.0 {
            let wait = ((1.0 - tokens) / self.per_second).min(86_400.0 * 365.0);
            Err(RetryAfter(Duration::from_secs_f64(wait)))
        } else {
            Err(RetryAfter(Duration::MAX))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, burst: f64, per_second: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_does_not_take() {
        let limiter = RateLimiter::new(1, Duration::from_secs(10), 10);
        let t0 = Instant::now();
        assert_eq!(limiter.check(&"a", t0), Ok(()));
        assert_eq!(limiter.check(&"a", t0), Ok(()));
        assert_eq!(limiter.take(&"a", 1, t0), Ok(()));
        let Err(RetryAfter(wait)) = limiter.check(&"a", t0) else {
            panic!("an empty bucket fails the check");
        };
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        assert_eq!(limiter.check(&"a", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let limiter = RateLimiter::new(3, Duration::from_secs(3), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(&"a", 1, t0), Ok(()));
        }
        let Err(RetryAfter(wait)) = limiter.take(&"a", 1, t0) else {
            panic!("fourth request must be refused");
        };
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert_eq!(limiter.take(&"b", 1, t0), Ok(()), "keys are independent");
        assert_eq!(limiter.take(&"a", 1, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn key_table_is_bounded() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        assert!(limiter.take(&1, 1, t0).is_ok());
        assert!(limiter.take(&2, 1, t0).is_ok());
        assert!(
            limiter.take(&3, 1, t0).is_err(),
            "full table refuses new keys"
        );
        // After a full refill, old buckets are forgotten and new keys fit.
        assert!(limiter.take(&3, 1, t0 + Duration::from_secs(61)).is_ok());
    }
}

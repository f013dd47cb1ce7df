//! Token-bucket rate limiting: the bucket arithmetic, and buckets local to this process.
//!
//! [`BucketRate`] is the arithmetic alone (refill, then take or say how long to wait),
//! a pure function of the tokens a bucket held and the time since. [`RateLimiter`]
//! keeps buckets in this process with it; a store that keeps buckets in a database (the
//! PostgreSQL store's business messages-per-second limit) reads a bucket's row, runs the
//! same arithmetic, and writes the row back.
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

/// The longest wait [`BucketRate`] ever names (a year), so that a wait always fits a
/// [`Duration`] and a millisecond count.
const LONGEST_WAIT_SECONDS: f64 = 86_400.0 * 365.0;

/// The arithmetic of a token bucket: `burst` tokens, refilled at `per_second`. Pure: the
/// caller keeps the bucket (its tokens and when they were counted) wherever it likes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketRate {
    burst: f64,
    per_second: f64,
}

impl BucketRate {
    /// `burst` tokens, refilled at `burst` per `period`.
    pub fn new(burst: u32, period: Duration) -> BucketRate {
        let burst = f64::from(burst);
        BucketRate {
            burst,
            per_second: burst / period.as_secs_f64().max(f64::MIN_POSITIVE),
        }
    }

    /// Tokens of a new (or long idle) bucket.
    pub fn full(&self) -> f64 {
        self.burst
    }

    /// The tokens of a bucket that held `tokens` `elapsed` ago.
    pub fn refill(&self, tokens: f64, elapsed: Duration) -> f64 {
        (tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst)
    }

    /// Takes `cost` from a bucket holding `tokens` (refilled to now): the tokens left, or
    /// how long until `cost` tokens are there.
    pub fn take(&self, tokens: f64, cost: u32) -> Result<f64, RetryAfter> {
        let cost = f64::from(cost);
        if cost > self.burst {
            return Err(RetryAfter(Duration::MAX));
        }
        if tokens >= cost {
            return Ok(tokens - cost);
        }
        if self.per_second > 0.0 {
            let wait = ((cost - tokens) / self.per_second).min(LONGEST_WAIT_SECONDS);
            Err(RetryAfter(Duration::from_secs_f64(wait)))
        } else {
            Err(RetryAfter(Duration::MAX))
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(&self, rate: &BucketRate, now: Instant) -> f64 {
        rate.refill(self.tokens, now.saturating_duration_since(self.updated))
    }
}

/// Token buckets keyed by `K`: `burst` tokens, refilled at `burst` per `period`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: BucketRate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Allows `burst` requests per `period` per key, tracking at most `max_keys` keys.
    pub fn new(burst: u32, period: Duration, max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            rate: BucketRate::new(burst, period),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket at time `now`.
    pub fn take(&self, key: &K, cost: u32, now: Instant) -> Result<(), RetryAfter> {
        if f64::from(cost) > self.rate.full() {
            return Err(RetryAfter(Duration::MAX));
        }
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let rate = self.rate;
            buckets.retain(|_, b| b.refilled(&rate, now) < rate.full());
            if buckets.len() >= self.max_keys {
                return Err(RetryAfter(Duration::from_secs(1)));
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.full(),
            updated: now,
        });
        bucket.tokens = bucket.refilled(&self.rate, now);
        bucket.updated = now;
        bucket.tokens = self.rate.take(bucket.tokens, cost)?;
        Ok(())
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
        self.rate
            .take(bucket.refilled(&self.rate, now), 1)
            .map(|_| ())
    }
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
    fn bucket_arithmetic_refills_up_to_the_burst_and_names_the_wait() {
        let rate = BucketRate::new(4, Duration::from_secs(2));
        assert_eq!(rate.full(), 4.0);
        assert_eq!(rate.refill(0.0, Duration::from_millis(500)), 1.0);
        assert_eq!(rate.refill(3.0, Duration::from_secs(60)), 4.0, "capped");
        assert_eq!(rate.take(1.5, 1), Ok(0.5));
        let Err(RetryAfter(wait)) = rate.take(0.5, 1) else {
            panic!("half a token is not enough");
        };
        assert_eq!(wait, Duration::from_millis(250));
        assert_eq!(rate.take(4.0, 5), Err(RetryAfter(Duration::MAX)));
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

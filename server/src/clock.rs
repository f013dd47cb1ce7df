//! The server's clock: milliseconds since the Unix epoch, shifted for tests.
//!
//! A leaf module: every other module may read the time from here, and it knows nothing
//! of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds added to the system clock (`--test-clock-offset`; 0 in production).
static CLOCK_OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// Shifts [`now_ms`] by `offset` for the rest of the process (`--test-clock-offset`).
pub fn set_clock_offset(offset: Duration) {
    let ms = u64::try_from(offset.as_millis()).unwrap_or(u64::MAX);
    CLOCK_OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch, by the server's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
        .saturating_add(CLOCK_OFFSET_MS.load(Ordering::Relaxed))
}

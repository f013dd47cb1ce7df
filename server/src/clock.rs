//! The server's clock: milliseconds since the Unix epoch, shifted by a fixed offset in
//! tests (`--test-clock-offset`).
//!
//! A value, not a process-wide setting: the server keeps one in `context::Shared` and
//! hands it to its stores ([`crate::store::StoreHooks`]), so that two servers in one
//! process (as the tests run them) can keep different times, and a piece of code that
//! is given the time instead of a clock can be driven without one.
//!
//! A leaf module: every other module may read the time from here, and it knows nothing
//! of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The system clock, plus an offset (0 in production).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: u64,
}

impl Clock {
    /// The system clock as it is.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock `offset` ahead (`--test-clock-offset`).
    pub fn shifted(offset: Duration) -> Clock {
        Clock {
            offset_ms: u64::try_from(offset.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
            .saturating_add(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_of_the_system_one_by_its_offset() {
        let day = Duration::from_secs(86_400);
        let before = Clock::system().now_ms();
        let shifted = Clock::shifted(day).now_ms();
        let after = Clock::system().now_ms();
        assert!(shifted >= before + 86_400_000 && shifted <= after + 86_400_000);
    }
}

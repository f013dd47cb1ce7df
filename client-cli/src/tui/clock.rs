//! The full-screen view reads times as every other view does: in the person's zone
//! ([`crate::local_time`]).

use super::view::Clock;
use crate::local_time::LocalTime;

impl Clock for LocalTime {
    fn day(&self, ms: u64) -> String {
        self.date(ms)
    }

    fn time(&self, ms: u64) -> String {
        self.time_of_day(ms)
    }
}

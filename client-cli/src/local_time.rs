//! Times as the person reads them: in the local time zone, with the date where it is not
//! today's, and a heading line where the day changes between messages.
//!
//! The zone is `TZ` when it is set (an IANA name such as `Europe/Paris`, or a POSIX rule
//! such as `CET-1CEST,M3.5.0,M10.5.0/3`), else the system's (`/etc/localtime`), else UTC;
//! each instant gets the offset in force at that instant (summer time included), not
//! today's. This is `jiff`'s reading of the system zone: pure Rust, no `unsafe`
//! `localtime_r` (the workspace forbids `unsafe`), no C time zone state shared between
//! threads (the `time` crate refuses local offsets in a multi-threaded process, and the
//! runtime is one), and it reads the system's zoneinfo database instead of shipping
//! one. Functions take the zone as a value so that tests fix it without touching the
//! process environment.

use std::sync::{Mutex, OnceLock};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The person's zone ([`LocalTime::system`]), read once per process.
pub fn system() -> &'static LocalTime {
    static SYSTEM: OnceLock<LocalTime> = OnceLock::new();
    SYSTEM.get_or_init(LocalTime::system)
}

/// A time zone to show times in.
#[derive(Clone, Debug)]
pub struct LocalTime {
    zone: TimeZone,
}

impl LocalTime {
    /// The person's zone: `TZ`, else the system's, else UTC.
    pub fn system() -> LocalTime {
        LocalTime {
            zone: TimeZone::system(),
        }
    }

    /// A given zone (tests fix it so, without touching the process environment).
    #[cfg(test)]
    pub fn in_zone(zone: TimeZone) -> LocalTime {
        LocalTime { zone }
    }

    fn zoned(&self, ms: u64) -> Zoned {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::MAX)
            .to_zoned(self.zone.clone())
    }

    /// The local day of an instant.
    pub fn day(&self, ms: u64) -> Date {
        self.zoned(ms).date()
    }

    /// `2026-12-05 14:05 CET`: a date and time with the zone's name, for a time that
    /// stands alone (a card's expiry, a certificate's validity).
    pub fn date_time(&self, ms: u64) -> String {
        self.zoned(ms).strftime("%Y-%m-%d %H:%M %Z").to_string()
    }

    /// `14:05` for a time on the day of `now_ms`, else `2026-12-04 14:05`: what a
    /// message line starts with.
    pub fn stamp(&self, ms: u64, now_ms: u64) -> String {
        let zoned = self.zoned(ms);
        if zoned.date() == self.day(now_ms) {
            zoned.strftime("%H:%M").to_string()
        } else {
            zoned.strftime("%Y-%m-%d %H:%M").to_string()
        }
    }

    /// `Sat 2026-12-05`: a day on its own (the full-screen view's day lines).
    pub fn date(&self, ms: u64) -> String {
        self.zoned(ms).strftime("%a %Y-%m-%d").to_string()
    }

    /// `14:05`: the time of day alone.
    pub fn time_of_day(&self, ms: u64) -> String {
        self.zoned(ms).strftime("%H:%M").to_string()
    }

    /// `--- Saturday 5 December 2026 ---`: the line above the first message of a day.
    pub fn day_heading(&self, ms: u64) -> String {
        self.zoned(ms).strftime("--- %A %-d %B %Y ---").to_string()
    }
}

/// Remembers the day of the last message shown, to put a heading where the day
/// changes (and above a first message that is not from today).
#[derive(Debug, Default)]
pub struct DayChanges {
    last: Mutex<Option<Date>>,
}

impl DayChanges {
    /// The heading to print before a message sent at `ms`, if its day is not the day
    /// of the message before it (for the first message: not today).
    pub fn heading(&self, local: &LocalTime, ms: u64, now_ms: u64) -> Option<String> {
        let day = local.day(ms);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.unwrap_or_else(|| local.day(now_ms));
        *last = Some(day);
        (day != previous).then(|| local.day_heading(ms))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    /// 2026-11-18 11:06:40 UTC.
    const NOVEMBER: u64 = 1_795_000_000_000;
    /// 2026-07-01 12:00:00 UTC.
    const JULY: u64 = 1_782_907_200_000;
    const HOUR: u64 = 3_600_000;

    fn paris() -> LocalTime {
        LocalTime::in_zone(TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap())
    }

    #[test]
    fn times_are_in_the_given_zone_with_summer_time_at_that_instant() {
        assert_eq!(
            LocalTime::in_zone(TimeZone::UTC).stamp(NOVEMBER, NOVEMBER),
            "11:06"
        );
        assert_eq!(paris().stamp(NOVEMBER, NOVEMBER), "12:06");
        assert_eq!(paris().stamp(JULY, JULY), "14:00");
        assert_eq!(paris().date_time(NOVEMBER), "2026-11-18 12:06 CET");
        assert_eq!(paris().date_time(JULY), "2026-07-01 14:00 CEST");
        assert_eq!(
            LocalTime::in_zone(TimeZone::UTC).date_time(951_782_400_000),
            "2000-02-29 00:00 UTC"
        );
    }

    #[test]
    fn a_stamp_has_the_date_only_when_it_is_not_today_in_that_zone() {
        let paris = paris();
        assert_eq!(paris.stamp(NOVEMBER, NOVEMBER + HOUR), "12:06");
        assert_eq!(
            paris.stamp(NOVEMBER, NOVEMBER + 24 * HOUR),
            "2026-11-18 12:06"
        );
        // 23:30 UTC is already the next day in Paris.
        let late = NOVEMBER + 12 * HOUR + 24 * 60_000;
        assert_eq!(
            LocalTime::in_zone(TimeZone::UTC).stamp(late, NOVEMBER),
            "23:30"
        );
        assert_eq!(paris.stamp(late, NOVEMBER), "2026-11-19 00:30");
    }

    #[test]
    fn a_heading_marks_the_first_message_of_each_day() {
        let paris = paris();
        let days = DayChanges::default();
        let now = NOVEMBER + 48 * HOUR;
        assert_eq!(
            days.heading(&paris, NOVEMBER, now).as_deref(),
            Some("--- Wednesday 18 November 2026 ---")
        );
        assert_eq!(days.heading(&paris, NOVEMBER + HOUR, now), None);
        assert_eq!(
            days.heading(&paris, now, now).as_deref(),
            Some("--- Friday 20 November 2026 ---")
        );
        // Messages of today under no heading when nothing older came first.
        let fresh = DayChanges::default();
        assert_eq!(fresh.heading(&paris, now, now + HOUR), None);
    }
}

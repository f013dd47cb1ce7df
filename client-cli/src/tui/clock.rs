//! How the view reads times until the CLI has one local-time module for every view: UTC,
//! labelled as such (the chat branch brings `local_time`; its `LocalTime` implements
//! [`super::view::Clock`] in one place).

use super::view::Clock;

/// Times in UTC, labelled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utc;

impl Clock for Utc {
    fn day(&self, ms: u64) -> String {
        // `YYYY-MM-DD HH:MM UTC`: the date, and the zone's name.
        let stamp = crate::render::utc(ms);
        format!("{} (times in UTC)", &stamp[..10])
    }

    fn time(&self, ms: u64) -> String {
        crate::render::utc(ms)[11..16].to_owned()
    }
}

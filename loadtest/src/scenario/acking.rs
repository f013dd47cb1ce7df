//! When a product receiver acknowledges what it was delivered: after every N deliveries,
//! or by `parley-sdk`'s rule, once nothing more has arrived (one cumulative ack for what
//! arrived together). The generator stores nothing, so its bursts are what arrived
//! together; the SDK's are shorter where each delivery's commit waits for the disk.
//!
//! Acks are cumulative (`ack { through }`), so how often a receiver sends one changes
//! only how many frames cross, and how long a held envelope waits for its ack (the
//! server's `--hold-deadline` commits what is not acked by then).

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use parley_sdk::client::{ACK_GATHER_DEFAULT, PUSHES_PER_ACK_MAX};

/// Deliveries after which a product receiver acks, unless the scenario says otherwise
/// (`relay --ack-every`).
pub(super) const ACK_EVERY: Acking = Acking::Every(match NonZeroU64::new(64) {
    Some(n) => n,
    None => NonZeroU64::MIN,
});

/// Most deliveries one [`Acking::WhenIdle`] ack covers while deliveries keep arriving:
/// `parley-sdk`'s bound (which counts every pushed frame).
pub(super) const IDLE_ACK_MAX: u64 = PUSHES_PER_ACK_MAX as u64;

/// How often a product receiver acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acking {
    /// After this many deliveries (and once more at the end of the phase).
    Every(NonZeroU64),
    /// Once the next frame is not already readable, after [`IDLE_ACK_MAX`] deliveries,
    /// or once the first delivery not acked has waited `parley-sdk`'s default
    /// `ack_gather`: one ack per delivery at a moderate rate, one per burst under load.
    WhenIdle,
}

impl Acking {
    /// Whether `unacked` deliveries, the first of them `gathered_for` ago, are owed an
    /// ack now; `more_ready` tells whether another frame is already readable (asked
    /// only for [`Acking::WhenIdle`]).
    pub(super) fn due(
        self,
        unacked: u64,
        gathered_for: Duration,
        more_ready: impl FnOnce() -> bool,
    ) -> bool {
        match self {
            _ if unacked == 0 => false,
            Acking::Every(n) => unacked >= n.get(),
            Acking::WhenIdle => {
                unacked >= IDLE_ACK_MAX || gathered_for >= ACK_GATHER_DEFAULT || !more_ready()
            }
        }
    }
}

impl FromStr for Acking {
    type Err = String;

    fn from_str(s: &str) -> Result<Acking, String> {
        if s == "idle" {
            return Ok(Acking::WhenIdle);
        }
        s.parse::<u64>()
            .ok()
            .and_then(NonZeroU64::new)
            .map(Acking::Every)
            .ok_or_else(|| {
                format!("expected a number of deliveries (1 or more) or `idle`, got `{s}`")
            })
    }
}

impl fmt::Display for Acking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Acking::Every(n) => write!(f, "{n}"),
            Acking::WhenIdle => f.write_str("idle"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_a_count_or_idle_and_prints_it_back() {
        for text in ["1", "64", "idle"] {
            assert_eq!(text.parse::<Acking>().unwrap().to_string(), text);
        }
        assert!("0".parse::<Acking>().is_err());
        assert!("often".parse::<Acking>().is_err());
    }

    #[test]
    fn every_n_acks_at_the_nth_delivery() {
        let every = "8".parse::<Acking>().unwrap();
        assert!(!every.due(7, Duration::from_secs(9), || true));
        assert!(every.due(8, Duration::ZERO, || true));
    }

    #[test]
    fn when_idle_acks_once_nothing_more_is_readable_or_at_a_cap() {
        let idle = Acking::WhenIdle;
        let soon = Duration::from_millis(1);
        assert!(!idle.due(0, soon, || false));
        assert!(idle.due(1, soon, || false));
        assert!(!idle.due(1, soon, || true));
        assert!(idle.due(IDLE_ACK_MAX, soon, || true));
        assert!(idle.due(1, ACK_GATHER_DEFAULT, || true));
    }
}

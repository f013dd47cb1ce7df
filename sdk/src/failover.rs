//! Several servers of one deployment, and the pure rules for moving between them.
//!
//! * [`ServerList`]: the URLs a client may use, in the order it tries them first.
//! * [`Failover`]: the pause schedule and the deadline after which waiting callers are
//!   told that no server answers.
//! * [`Rotation`]: which server to try next and how long to wait before it, given what
//!   happened to the last attempt. No clock and no randomness: the engine
//!   ([`crate::engine`]) brings both.
//!
//! The rule: on a connection error (refused, reset, closed, timed out) the client moves
//! to the next URL at once, round robin from the one that failed; only once every URL
//! failed in a row does it pause, [`Failover::first_pause`] doubling each round up to
//! [`Failover::max_pause`]. An answer from a server (`rate_limited`, `unavailable`,
//! `auth_failed`...) is not a connection error: the client stays with that server and
//! pauses, on the same schedule up to [`REFUSED_MAX_PAUSE`]. What happens to sends that were under way is the engine's business; this
//! module does not know about messages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::SdkError;

/// The servers of one deployment (at least one), as `ws://` or `wss://` URLs.
///
/// Parsed from a comma-separated list (`"ws://a:7878,ws://b:7878"`), or from several
/// such lists ([`ServerList::new`]); blanks around each URL are ignored. All must be
/// nodes of the same deployment: the client logs in to whichever answers, with the same
/// identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerList(Vec<String>);

impl ServerList {
    /// The URLs of every item, in order; each item may itself be a comma-separated list.
    /// Refuses an empty list, an empty entry (`"ws://a,,ws://b"`) and a URL that is not
    /// `ws://` or `wss://`.
    pub fn new<I, S>(items: I) -> Result<ServerList, SdkError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut urls = Vec::new();
        for item in items {
            for url in item.as_ref().split(',').map(str::trim) {
                if url.is_empty() {
                    return Err(SdkError::InvalidInput(
                        "empty server URL in the list".into(),
                    ));
                }
                let host = url
                    .strip_prefix("ws://")
                    .or_else(|| url.strip_prefix("wss://"));
                let web = url
                    .strip_prefix("http://")
                    .map(|rest| ("ws", rest))
                    .or_else(|| url.strip_prefix("https://").map(|rest| ("wss", rest)));
                if let Some((scheme, rest)) = web {
                    return Err(SdkError::InvalidInput(format!(
                        "server URL {url:?} is an HTTP address, but Parley speaks WebSocket: \
                         use {scheme}://{rest} (ws:// or, with TLS, wss://)"
                    )));
                }
                if host.is_none_or(str::is_empty) {
                    return Err(SdkError::InvalidInput(format!(
                        "server URL {url:?} is not ws://HOST:PORT or wss://HOST:PORT"
                    )));
                }
                urls.push(url.to_owned());
            }
        }
        if urls.is_empty() {
            return Err(SdkError::InvalidInput("no server URL given".into()));
        }
        Ok(ServerList(urls))
    }

    /// `text` as one URL, or split at commas when each piece is a URL; otherwise kept
    /// whole, so that it fails when connecting with an error naming it (what
    /// [`crate::ClientConfig::new`] has always done with a bad URL).
    pub(crate) fn lenient(text: String) -> ServerList {
        ServerList::new([&text]).unwrap_or(ServerList(vec![text]))
    }

    /// The URLs, in order.
    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// URL number `index`, counted round the list.
    pub fn url(&self, index: usize) -> &str {
        // Never empty (both constructors keep at least one URL): the modulo is defined.
        self.0
            .get(index % self.0.len().max(1))
            .map_or("", String::as_str)
    }

    /// How many there are (at least one).
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl FromStr for ServerList {
    type Err = SdkError;

    fn from_str(text: &str) -> Result<ServerList, SdkError> {
        ServerList::new([text])
    }
}

impl fmt::Display for ServerList {
    /// The URLs separated by `", "` (which parses back to the same list).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// How the engine waits between servers and when it tells waiting callers it gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The pause once every server failed in a row (the first round).
    pub first_pause: Duration,
    /// The longest pause; each further round doubles the pause up to this. A
    /// connection that lasted at least this long counts as having worked: the next
    /// failure starts the schedule afresh. Shorter ones count as failures, so a server
    /// that accepts and drops connections at once is retried on the schedule, not in a
    /// loop.
    pub max_pause: Duration,
    /// How long an outage may last before callers waiting on it get an error: a send
    /// already stored locally gets [`SdkError::Queued`] (and is still resent on the next
    /// connection), other commands get [`SdkError::Unreachable`] at once until a server
    /// answers again. The engine itself keeps trying every server on the schedule.
    pub give_up_after: Duration,
}

/// See [`Failover::first_pause`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// See [`Failover::max_pause`].
pub const MAX_PAUSE: Duration = Duration::from_secs(2);
/// The shortest pause, even if [`Failover`] is configured with less: a client with
/// every server down must not spin.
pub const MIN_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause before asking a server again that answered but refused the login
/// (`auth_failed`, `rate_limited`, `unavailable`...): it is up, and asking every
/// [`MAX_PAUSE`] would not change its answer, only add to its load.
pub const REFUSED_MAX_PAUSE: Duration = Duration::from_secs(30);
/// See [`Failover::give_up_after`]: long enough for a node to be restarted or a load
/// balancer to notice, short enough for an interactive `parley send` (30 s) to report.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

impl Default for Failover {
    /// 100 ms doubling to 2 s; callers told after 20 s.
    fn default() -> Failover {
        Failover {
            first_pause: FIRST_PAUSE,
            max_pause: MAX_PAUSE,
            give_up_after: GIVE_UP_AFTER,
        }
    }
}

impl Failover {
    /// The pause after `round` complete rounds in which every server failed (1 is the
    /// first): `first_pause × 2^(round-1)`, at most `max_pause`; zero for round 0.
    /// Never below [`MIN_PAUSE`], whatever the configuration says.
    pub fn pause(&self, round: u32) -> Duration {
        self.pause_up_to(round, self.max_pause)
    }

    /// The same schedule up to `cap`.
    fn pause_up_to(&self, round: u32, cap: Duration) -> Duration {
        if round == 0 {
            return Duration::ZERO;
        }
        let exponent = (round - 1).min(31);
        self.first_pause
            .saturating_mul(1u32 << exponent)
            .min(cap)
            .max(MIN_PAUSE)
    }

    /// `pause` shortened by a random share of up to half (`random` is uniform over
    /// `u32`), so that the clients of a failed node do not all come back in the same
    /// millisecond; never longer than `pause`.
    pub fn jitter(pause: Duration, random: u32) -> Duration {
        let share = 0.5 + 0.5 * (f64::from(random) / f64::from(u32::MAX));
        pause.mul_f64(share).min(pause)
    }
}

/// Which server comes next: the pure state of failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    servers: usize,
    current: usize,
    failed_in_a_row: u32,
}

impl Rotation {
    /// Starting at server `current` of `servers`.
    pub fn new(servers: usize, current: usize) -> Rotation {
        let servers = servers.max(1);
        Rotation {
            servers,
            current: current % servers,
            failed_in_a_row: 0,
        }
    }

    /// The server to use (an index into the [`ServerList`]).
    pub fn current(&self) -> usize {
        self.current
    }

    /// A connection error at the current server: move to the next one. Returns the
    /// pause before trying it, zero unless this completes a round in which every server
    /// failed.
    pub fn failed(&mut self, policy: &Failover) -> Duration {
        self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
        self.current = (self.current + 1) % self.servers;
        self.pause_if_round_complete(policy)
    }

    /// The current server answered but would not let us in (a refusal, not a
    /// connection error): stay with it, and pause as if the round had failed, on the
    /// same schedule but up to [`REFUSED_MAX_PAUSE`].
    pub fn refused(&mut self, policy: &Failover) -> Duration {
        let rounds = self.rounds().saturating_add(1);
        self.failed_in_a_row = rounds.saturating_mul(self.servers_u32());
        policy.pause_up_to(rounds, REFUSED_MAX_PAUSE.max(policy.max_pause))
    }

    /// The connection to the current server ended after `lasted`; [`Rotation::failed`]
    /// or [`Rotation::refused`] (by why it ended) follows. One that lasted
    /// [`Failover::max_pause`] worked, so the schedule starts afresh; a shorter one is
    /// part of the failures in a row.
    pub fn ended(&mut self, lasted: Duration, policy: &Failover) {
        if lasted >= policy.max_pause {
            self.failed_in_a_row = 0;
        }
    }

    fn pause_if_round_complete(&self, policy: &Failover) -> Duration {
        if self.failed_in_a_row.is_multiple_of(self.servers_u32()) {
            policy.pause(self.rounds())
        } else {
            Duration::ZERO
        }
    }

    fn rounds(&self) -> u32 {
        self.failed_in_a_row / self.servers_u32()
    }

    fn servers_u32(&self) -> u32 {
        u32::try_from(self.servers).unwrap_or(u32::MAX)
    }
}

/// The error for "no server of `servers` answered", naming them all, with the reason
/// of the `last` failure.
pub(crate) fn unreachable(servers: &ServerList, last: &SdkError) -> SdkError {
    let reason = match last {
        // The advice names the server whose certificate was refused and what to do.
        SdkError::Certificate { url, advice } => {
            return SdkError::Certificate {
                url: url.clone(),
                advice: advice.clone(),
            }
        }
        SdkError::Unreachable { reason, .. } | SdkError::ConnectionLost(reason) => reason.clone(),
        other => other.to_string(),
    };
    SdkError::Unreachable {
        url: servers.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_list_parses_from_commas_and_repeats() {
        let list: ServerList = "ws://a:1, wss://b:2 ,ws://c:3".parse().unwrap();
        assert_eq!(list.urls(), ["ws://a:1", "wss://b:2", "ws://c:3"]);
        let repeated = ServerList::new(["ws://a:1", "wss://b:2,ws://c:3"]).unwrap();
        assert_eq!(repeated, list);
        assert_eq!(list.to_string().parse::<ServerList>().unwrap(), list);
        assert_eq!(list.url(4), "wss://b:2", "indices go round the list");
        assert_eq!(ServerList::new(["ws://one"]).unwrap().count(), 1);
    }

    #[test]
    fn a_list_refuses_what_is_not_a_list_of_servers() {
        for bad in [
            "",
            " ",
            "ws://a,,ws://b",
            "ws://a,",
            "http://a",
            "ws://",
            "a:7878",
        ] {
            assert!(
                matches!(bad.parse::<ServerList>(), Err(SdkError::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert!(ServerList::new(Vec::<String>::new()).is_err());
        for (web, hint) in [
            ("http://h:7878", "use ws://h:7878"),
            ("https://h", "use wss://h"),
        ] {
            let refused = ServerList::new([web]).unwrap_err().to_string();
            assert!(refused.contains(hint), "{refused}");
        }
    }

    #[test]
    fn a_lenient_list_keeps_a_bad_url_whole_for_the_connect_error() {
        assert_eq!(ServerList::lenient("ws://a,ws://b".into()).count(), 2);
        assert_eq!(ServerList::lenient("nonsense".into()).urls(), ["nonsense"]);
    }

    #[test]
    fn the_pause_doubles_from_100_ms_to_2_s() {
        let policy = Failover::default();
        let schedule: Vec<Duration> = (0..8).map(|round| policy.pause(round)).collect();
        assert_eq!(
            schedule,
            [
                ms(0),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        assert_eq!(policy.pause(u32::MAX), ms(2000), "no overflow");
        let spinning = Failover {
            first_pause: Duration::ZERO,
            max_pause: Duration::ZERO,
            give_up_after: Duration::ZERO,
        };
        assert_eq!(spinning.pause(1), MIN_PAUSE, "never a busy loop");
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let pause = ms(1000);
        assert_eq!(Failover::jitter(pause, 0), ms(500));
        assert_eq!(Failover::jitter(pause, u32::MAX), pause);
        let middle = Failover::jitter(pause, u32::MAX / 2);
        assert!(middle > ms(700) && middle < ms(800), "{middle:?}");
    }

    #[test]
    fn rotation_moves_on_at_once_and_pauses_after_each_full_round() {
        let policy = Failover::default();
        let mut r = Rotation::new(3, 1);
        assert_eq!(r.current(), 1);
        // Server 1 fails: 2, then 0, at once; the round is complete when 0 fails too.
        assert_eq!((r.failed(&policy), r.current()), (ms(0), 2));
        assert_eq!((r.failed(&policy), r.current()), (ms(0), 0));
        assert_eq!((r.failed(&policy), r.current()), (ms(100), 1));
        // The second round pauses twice as long.
        assert_eq!(r.failed(&policy), ms(0));
        assert_eq!(r.failed(&policy), ms(0));
        assert_eq!((r.failed(&policy), r.current()), (ms(200), 1));
    }

    #[test]
    fn a_lasting_connection_starts_afresh_and_a_flapping_one_does_not() {
        let policy = Failover::default();
        let mut r = Rotation::new(2, 0);
        assert_eq!(r.failed(&policy), ms(0));
        assert_eq!(r.failed(&policy), ms(100));
        // Connected to 0; it drops at once: still the schedule's third failure...
        r.ended(ms(10), &policy);
        assert_eq!((r.failed(&policy), r.current()), (ms(0), 1));
        assert_eq!(r.failed(&policy), ms(200));
        // ...while one that lasted moves to the next server without a pause.
        r.ended(ms(2000), &policy);
        assert_eq!((r.failed(&policy), r.current()), (ms(0), 1));
        assert_eq!(r.failed(&policy), ms(100));
        // A lasting connection ended by a refusal stays, and pauses from the start.
        r.ended(ms(2000), &policy);
        assert_eq!((r.refused(&policy), r.current()), (ms(100), 0));
    }

    #[test]
    fn a_refusal_stays_with_the_server_and_pauses() {
        let policy = Failover::default();
        let mut r = Rotation::new(2, 1);
        assert_eq!((r.refused(&policy), r.current()), (ms(100), 1));
        assert_eq!((r.refused(&policy), r.current()), (ms(200), 1));
        // Refusals go on growing past max_pause, to REFUSED_MAX_PAUSE.
        let longest = (0..12).map(|_| r.refused(&policy)).max().unwrap();
        assert_eq!(longest, REFUSED_MAX_PAUSE);
        // One server alone pauses after every failure.
        let mut alone = Rotation::new(1, 0);
        assert_eq!((alone.failed(&policy), alone.current()), (ms(100), 0));
        assert_eq!(alone.failed(&policy), ms(200));
    }

    #[test]
    fn several_servers_failing_are_named_together() {
        let list: ServerList = "ws://a,ws://b".parse().unwrap();
        let last = SdkError::Unreachable {
            url: "ws://b".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            unreachable(&list, &last).to_string(),
            "server unreachable at ws://a, ws://b: refused"
        );
        let one: ServerList = "ws://a".parse().unwrap();
        let last = SdkError::ConnectionLost("refused".into());
        assert_eq!(
            unreachable(&one, &last).to_string(),
            "server unreachable at ws://a: refused"
        );
    }
}

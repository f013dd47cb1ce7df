//! Held envelopes on the bus (ADR 0005 §3): the two ends of a held envelope's trip.
//!
//! * **The sender's node** ([`Waiting`]) publishes a held envelope's wake with a reply
//!   subject of its own, `<inbox>.<token>`, and waits for one word there: `a` (acked),
//!   `n` (commit it), or NATS's "no responders" status when no node holds the device
//!   (then the device is taken as offline for [`OFFLINE_FOR`], and its envelopes are
//!   persisted first meanwhile). The store's settlement gives up at its deadline; a
//!   waiter whose receiver is gone is swept.
//! * **The recipient's node** ([`HeldHere`]) keeps, per local device, the seq of each
//!   held envelope handed to its connection and where its word goes: the device's ack
//!   answers `a` for every seq it covers; a read of the device's queue, or its detach,
//!   answers `n` for every one (the sender's node commits it, so the read finds it).
//!
//! Both ends are bounded ([`WAITING_MAX`], [`HELD_PER_DEVICE_MAX`], [`HELD_MAX`]); past
//! a bound the envelope is committed instead, never lost.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parley_protocol::ids::{DeviceAddress, Seq};
use tokio::sync::oneshot;

use crate::store::HeldWord;

/// Held envelopes this node may wait on at once; past it, envelopes are persisted first.
pub const WAITING_MAX: usize = 65_536;

/// Held envelopes one device may have here at once awaiting its ack, by default
/// (`--hold-max-per-device`).
pub const HELD_PER_DEVICE_MAX: usize = 256;

/// Held envelopes all local devices may have here at once.
pub const HELD_MAX: usize = 65_536;

/// How long a device that no node held ("no responders") gets its envelopes persisted
/// first, without trying to hold them.
pub const OFFLINE_FOR: Duration = Duration::from_secs(1);

/// Most devices remembered as offline; past it, the memory starts over.
const OFFLINE_MAX: usize = 65_536;

/// The word on the wire.
pub fn encode(word: HeldWord) -> &'static [u8] {
    match word {
        HeldWord::Acked => b"a",
        HeldWord::Commit => b"n",
    }
}

/// A word from the wire; anything else asks for a commit (the safe answer).
pub fn decode(payload: &[u8]) -> HeldWord {
    match payload {
        b"a" => HeldWord::Acked,
        _ => HeldWord::Commit,
    }
}

/// The sender's end: waiters by token, and the devices recently found offline.
#[derive(Debug, Default)]
pub struct Waiting {
    next_token: u64,
    waiters: HashMap<u64, (DeviceAddress, oneshot::Sender<HeldWord>)>,
    offline: HashMap<DeviceAddress, Instant>,
}

impl Waiting {
    /// Whether a held envelope for `to` is worth carrying now.
    pub fn may_carry(&self, to: &DeviceAddress, now: Instant) -> bool {
        self.waiters.len() < WAITING_MAX
            && self
                .offline
                .get(to)
                .is_none_or(|since| now.duration_since(*since) >= OFFLINE_FOR)
    }

    /// A new waiter for `to`: its token and the receiver of its word.
    pub fn wait(&mut self, to: DeviceAddress) -> (u64, oneshot::Receiver<HeldWord>) {
        if self.waiters.len() >= WAITING_MAX {
            self.waiters.retain(|_, (_, tx)| !tx.is_closed());
        }
        self.next_token = self.next_token.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(self.next_token, (to, tx));
        (self.next_token, rx)
    }

    /// The word for `token` came (a NATS status of "no responders" is `offline`).
    pub fn heard(&mut self, token: u64, word: HeldWord, offline: bool, now: Instant) {
        let Some((to, tx)) = self.waiters.remove(&token) else {
            return;
        };
        if offline {
            if self.offline.len() >= OFFLINE_MAX {
                self.offline.clear();
            }
            self.offline.insert(to, now);
        }
        let _ = tx.send(word);
    }

    /// Forgets waiters nobody waits for (their sender gave up at its deadline) and
    /// devices offline long enough ago.
    pub fn sweep(&mut self, now: Instant) {
        self.waiters.retain(|_, (_, tx)| !tx.is_closed());
        self.offline
            .retain(|_, since| now.duration_since(*since) < OFFLINE_FOR);
    }

    /// Waiters right now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiters.len()
    }
}

/// Where the word about one envelope held here goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// The sender's node, by the reply subject of the wake.
    Bus(String),
    /// The store of this very node (the sender is connected here too).
    Here(oneshot::Sender<HeldWord>),
}

/// The recipient's end: per local device, its held seqs and where their words go.
#[derive(Debug)]
pub struct HeldHere {
    devices: HashMap<DeviceAddress, BTreeMap<Seq, ReplyTo>>,
    total: usize,
    per_device_max: usize,
}

impl HeldHere {
    /// Empty, keeping at most `per_device_max` envelopes per device.
    pub fn new(per_device_max: usize) -> HeldHere {
        HeldHere {
            devices: HashMap::new(),
            total: 0,
            per_device_max,
        }
    }

    /// Keeps the envelope at `seq` for `device` until its ack or a read; `Err` gives
    /// `reply` back when a bound is reached (the caller asks for a commit).
    pub fn keep(&mut self, device: DeviceAddress, seq: Seq, reply: ReplyTo) -> Result<(), ReplyTo> {
        let held = self.devices.entry(device).or_default();
        if self.total >= HELD_MAX || held.len() >= self.per_device_max {
            if held.is_empty() {
                self.devices.remove(&device);
            }
            return Err(reply);
        }
        if held.insert(seq, reply).is_none() {
            self.total += 1;
        }
        Ok(())
    }

    /// The replies of `device`'s envelopes through `through` (acked).
    pub fn acked(&mut self, device: &DeviceAddress, through: Seq) -> Vec<ReplyTo> {
        let Some(held) = self.devices.get_mut(device) else {
            return Vec::new();
        };
        let later = held.split_off(&Seq(through.0.saturating_add(1)));
        let covered = std::mem::replace(held, later);
        if held.is_empty() {
            self.devices.remove(device);
        }
        self.total = self.total.saturating_sub(covered.len());
        covered.into_values().collect()
    }

    /// The replies of every envelope of `device` (to be committed).
    pub fn release(&mut self, device: &DeviceAddress) -> Vec<ReplyTo> {
        let Some(held) = self.devices.remove(device) else {
            return Vec::new();
        };
        self.total = self.total.saturating_sub(held.len());
        held.into_values().collect()
    }

    /// Envelopes held here in all.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_ids::device;

    fn bus(seq: u64) -> ReplyTo {
        ReplyTo::Bus(format!("inbox.{seq}"))
    }

    fn subjects(replies: Vec<ReplyTo>) -> Vec<String> {
        replies
            .into_iter()
            .map(|r| match r {
                ReplyTo::Bus(s) => s,
                ReplyTo::Here(_) => "here".into(),
            })
            .collect()
    }

    #[test]
    fn an_ack_answers_what_it_covers_and_a_read_the_rest() {
        let mut held = HeldHere::new(HELD_PER_DEVICE_MAX);
        for seq in [3, 4, 5] {
            held.keep(device(1), Seq(seq), bus(seq)).unwrap();
        }
        held.keep(device(2), Seq(9), bus(9)).unwrap();
        assert_eq!(
            subjects(held.acked(&device(1), Seq(4))),
            ["inbox.3", "inbox.4"]
        );
        assert_eq!(held.len(), 2);
        assert_eq!(subjects(held.release(&device(1))), ["inbox.5"]);
        assert!(held.acked(&device(1), Seq(10)).is_empty());
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_device_past_its_bound_gets_its_reply_back() {
        let mut held = HeldHere::new(HELD_PER_DEVICE_MAX);
        for seq in 0..HELD_PER_DEVICE_MAX as u64 {
            held.keep(device(1), Seq(seq + 1), bus(seq)).unwrap();
        }
        assert!(held.keep(device(1), Seq(1_000), bus(1_000)).is_err());
        assert!(held.keep(device(2), Seq(1), bus(1)).is_ok());
    }

    #[test]
    fn no_responders_marks_a_device_offline_for_a_while() {
        let mut waiting = Waiting::default();
        let now = Instant::now();
        let (token, mut rx) = waiting.wait(device(1));
        assert!(waiting.may_carry(&device(1), now));
        waiting.heard(token, HeldWord::Commit, true, now);
        assert_eq!(rx.try_recv(), Ok(HeldWord::Commit));
        assert!(!waiting.may_carry(&device(1), now));
        assert!(waiting.may_carry(&device(2), now));
        assert!(waiting.may_carry(&device(1), now + OFFLINE_FOR));
        // A waiter whose store gave up is swept.
        let (_, rx) = waiting.wait(device(2));
        drop(rx);
        waiting.sweep(now);
        assert_eq!(waiting.len(), 0);
    }

    #[test]
    fn words_round_trip_and_garbage_asks_for_a_commit() {
        for word in [HeldWord::Acked, HeldWord::Commit] {
            assert_eq!(decode(encode(word)), word);
        }
        assert_eq!(decode(b"zz"), HeldWord::Commit);
    }
}

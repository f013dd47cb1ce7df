//! The fuzzed function for the server's connection core (`connection::core`), the
//! authenticated connection's state machine without I/O.
//!
//! Each input is a script of steps played against one fresh `Core`, as its async shell
//! would (a frame is fed only while the core wants to read). The fuzzer chooses the
//! client's frames (bytes through `wire::decode_client`), which running call completes
//! next and with what result (of the right kind, or now and then of a wrong one), the
//! envelopes a wake hands over, and how far the clock moves.
//!
//! Input layout, repeated until the bytes run out:
//!
//! ```text
//!  byte: op % 8
//!   0  frame      [len: u8][len bytes]     decoded; its rid is replaced by a counter
//!   1  complete   [which: u8][kind: u8]    one running call, a fuzzer-chosen result
//!   2  wake       [first: u8][count: u8][stale: u8]
//!   3  tick       [seconds: u8]            the clock moves, then a tick
//!   4  heartbeat
//!   5  gone
//!   6  prekeys    [remaining: u8]
//!   7  ended      [which: u8]              shutdown, displaced, removed, violation
//! ```
//!
//! The properties checked after every step, besides "no panic": replies go out in
//! request order; `accepted` only for a send whose store call completed as accepted or
//! duplicate; deliveries in increasing seq order; an ack never covers a seq not
//! delivered; nothing after `close`. This file is also compiled into
//! `tests/tests/fuzz_corpus.rs`, which replays the committed corpus and a generated one.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, RequestId, Seq};
use parley_protocol::wire::server::{Devices, ServerBody};
use parley_protocol::wire::{self, CloseCode};
use parley_server::connection::core::{
    Call, CallResult, Core, CoreConfig, Input, Now, Output, Token,
};
use parley_server::connection::transport::Incoming;
use parley_server::error::RequestError;
use parley_server::metrics::Metrics;
use parley_server::presence::Taken;
use parley_server::store::{EnqueueOutcome, StoreError, StoredEnvelope};

/// Plays one input; panics (a finding) if a property fails.
pub fn run(data: &[u8]) {
    let mut play = Play::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        if play.closed {
            break;
        }
        let mut next = || bytes.next().unwrap_or(0);
        match op % 8 {
            0 => {
                let len = usize::from(next());
                let frame: Vec<u8> = (0..len).map(|_| next()).collect();
                play.frame(&frame);
            }
            1 => {
                let (which, kind) = (next(), next());
                play.complete(which, kind);
            }
            2 => {
                let (first, count, stale) = (next(), next(), next());
                play.wake(first, count, stale);
            }
            3 => {
                let seconds = next();
                play.clock += Duration::from_secs(u64::from(seconds));
                play.input(Input::Tick);
            }
            4 => play.input(Input::Read(Incoming::Heartbeat)),
            5 => play.input(Input::Read(Incoming::Gone)),
            6 => {
                let remaining = next();
                play.input(Input::PrekeysLow(u32::from(remaining)));
            }
            _ => {
                let which = next();
                let input = match which % 4 {
                    0 => Input::Shutdown,
                    1 => Input::Displaced { removed: false },
                    2 => Input::Displaced { removed: true },
                    _ => Input::Read(Incoming::Violation(CloseCode::MessageTooBig)),
                };
                play.input(input);
            }
        }
    }
}

/// One core and what has been seen of it.
struct Play {
    core: Core,
    start: Instant,
    clock: Duration,
    /// Running calls, in the order they started.
    running: BTreeMap<Token, Call>,
    next_rid: u32,
    /// The highest rid answered so far.
    last_reply: u32,
    /// Sends by token → rid, and the rids whose store call said accepted or duplicate.
    send_rids: BTreeMap<Token, u32>,
    may_accept: HashSet<u32>,
    last_delivered: u64,
    /// The highest seq the store has queued (pages and wakes use seqs up to it).
    queued: u64,
    closed: bool,
}

impl Play {
    fn new() -> Play {
        let start = Instant::now();
        let config = CoreConfig {
            pipeline_depth: 4,
            keepalive_interval: Duration::from_secs(30),
            max_envelope_bytes: 512,
            prekeys_low_threshold: 10,
        };
        let now = Now { ms: 1, at: start };
        let core = Core::new(device(1), 3, config, Arc::new(Metrics::default()), now);
        let mut play = Play {
            core,
            start,
            clock: Duration::ZERO,
            running: BTreeMap::new(),
            next_rid: 0,
            last_reply: 0,
            send_rids: BTreeMap::new(),
            may_accept: HashSet::new(),
            last_delivered: 0,
            queued: 0,
            closed: false,
        };
        play.drain();
        play
    }

    fn now(&self) -> Now {
        Now {
            ms: 1 + u64::try_from(self.clock.as_millis()).unwrap_or(u64::MAX),
            at: self.start + self.clock,
        }
    }

    fn frame(&mut self, bytes: &[u8]) {
        if !self.core.wants_read() {
            return;
        }
        self.next_rid += 1;
        let rid = RequestId(self.next_rid);
        let input = match wire::decode_client(bytes) {
            Ok(mut frame) => {
                frame.rid = rid;
                Input::Read(Incoming::Frame(frame))
            }
            Err(error) => Input::Read(Incoming::Malformed {
                error,
                rid: Some(rid),
            }),
        };
        self.input(input);
    }

    fn complete(&mut self, which: u8, kind: u8) {
        if self.running.is_empty() {
            return;
        }
        let index = usize::from(which) % self.running.len();
        let Some((&token, _)) = self.running.iter().nth(index) else {
            return;
        };
        let Some(call) = self.running.remove(&token) else {
            return;
        };
        let result = self.result(token, &call, kind);
        self.input(Input::Done { token, result });
    }

    /// A result for `call`: of its kind, chosen by `kind`; of a wrong kind when
    /// `kind` is 255.
    fn result(&mut self, token: Token, call: &Call, kind: u8) -> CallResult {
        if kind == 255 {
            return CallResult::Acked(Ok(0));
        }
        let failed = kind % 7 == 6;
        match call {
            Call::Enqueue(_) => {
                if failed {
                    return CallResult::Enqueued(Err(StoreError::Unavailable));
                }
                self.queued += 1;
                let outcome = match kind % 6 {
                    0 | 1 => EnqueueOutcome::Accepted {
                        seq: Seq(self.queued),
                        from_business: kind % 2 == 1,
                    },
                    2 => EnqueueOutcome::Duplicate(Seq(self.queued)),
                    3 => EnqueueOutcome::StaleDevices,
                    4 => EnqueueOutcome::RateLimited(u64::from(kind)),
                    _ => EnqueueOutcome::Refused,
                };
                if matches!(
                    outcome,
                    EnqueueOutcome::Accepted { .. } | EnqueueOutcome::Duplicate(_)
                ) {
                    if let Some(rid) = self.send_rids.get(&token) {
                        self.may_accept.insert(*rid);
                    }
                }
                CallResult::Enqueued(Ok(outcome))
            }
            Call::AckThrough(_) => match failed {
                true => CallResult::Acked(Err(StoreError::Full)),
                false => CallResult::Acked(Ok(u64::from(kind))),
            },
            Call::DeviceLists { to, .. } => {
                CallResult::DeviceLists(RequestError::StaleDevices(vec![Devices {
                    account: *to,
                    list: None,
                    last_seen: Vec::new(),
                }]))
            }
            Call::Page { after, limit } => {
                if failed {
                    return CallResult::Page(Err(StoreError::Unavailable));
                }
                let available = self.queued.saturating_sub(after.0);
                let count = available.min(*limit as u64).min(u64::from(kind % 5) * 40);
                CallResult::Page(Ok((after.0 + 1..=after.0 + count).map(envelope).collect()))
            }
            Call::Request(_) => CallResult::Reply(match failed {
                true => Err(RequestError::NotFound("handle")),
                false => Ok(ServerBody::Done(Default::default())),
            }),
        }
    }

    fn wake(&mut self, first: u8, count: u8, stale: u8) {
        let first = self.last_delivered.saturating_sub(2) + u64::from(first % 8);
        let envelopes: VecDeque<StoredEnvelope> = (first..first + u64::from(count % 16))
            .map(envelope)
            .collect();
        if let Some(last) = envelopes.back() {
            self.queued = self.queued.max(last.seq.0);
        }
        self.input(Input::Wake(Taken {
            envelopes,
            stale: stale.is_multiple_of(4),
        }));
    }

    fn input(&mut self, input: Input) {
        if self.closed {
            return;
        }
        let now = self.now();
        self.core.handle(input, now);
        self.drain();
    }

    /// Takes every output and checks the properties.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            assert!(!self.closed, "an output after close: {output:?}");
            match output {
                Output::Write(frames) => {
                    for frame in frames {
                        if let Some(rid) = frame.rid {
                            assert!(
                                rid.0 > self.last_reply,
                                "reply {} after {}",
                                rid.0,
                                self.last_reply
                            );
                            self.last_reply = rid.0;
                            if let ServerBody::Accepted(_) = frame.body {
                                assert!(
                                    self.may_accept.contains(&rid.0),
                                    "accepted before its commit"
                                );
                            }
                        }
                        if let ServerBody::Deliver(d) = &frame.body {
                            assert!(
                                d.seq.0 > self.last_delivered,
                                "seq {} after {}",
                                d.seq.0,
                                self.last_delivered
                            );
                            self.last_delivered = d.seq.0;
                        }
                    }
                }
                Output::Ping => {}
                Output::Call { token, call } => {
                    match &*call {
                        Call::AckThrough(through) => {
                            assert!(
                                through.0 <= self.last_delivered,
                                "an ack past what was delivered"
                            );
                        }
                        Call::Enqueue(_) => {
                            self.send_rids.insert(token, self.next_rid);
                        }
                        _ => {}
                    }
                    self.running.insert(token, *call);
                }
                Output::Close(_) => self.closed = true,
            }
        }
        assert_eq!(self.closed, self.core.is_closed());
    }
}

fn device(n: u8) -> DeviceAddress {
    DeviceAddress {
        account: AccountId([n; 32]),
        device: DeviceId::PRIMARY,
    }
}

fn envelope(seq: u64) -> StoredEnvelope {
    StoredEnvelope {
        seq: Seq(seq),
        from: device(2),
        id: MessageId([seq as u8; 16]),
        accepted_at_ms: 1,
        ciphertext: vec![0; 8],
        category: None,
    }
}

//! The authenticated connection as a state machine without I/O (in the manner of
//! quinn-proto's `Connection`): it takes what happened ([`Input`]: a frame, a completed
//! store call, a wake, a clock tick) and says what to do ([`Output`]: frames to write,
//! store calls to make, a ping, the close). It never reads a clock: the time comes with
//! every input ([`Now`]). The async shell (`connection::authenticated`) owns the socket,
//! runs the calls and feeds their results back.
//!
//! What the core decides:
//! * the request router: which requests are pipelined (`send`, `send_to_all`, `ack`) and
//!   which run alone, in request order ([`pipeline`]);
//! * the send path: the checks that need no store, the reply to each store outcome and
//!   its metrics, a `stale_devices` refusal completed with the current lists;
//! * the ack clamp: an ack never covers more than this connection delivered;
//! * delivery: the [`Cursor`] over the store's pages and the envelopes handed over;
//! * keepalive: a ping every `interval`, the close after `2 × interval` of silence;
//! * the endings: a malformed frame is answered after the replies before it, a client
//!   that left has its pipelined requests completed (and counted) with nowhere to reply.
//!
//! Its tests (`tests.rs`) and the fuzz target `connection_core` drive it with inputs
//! alone, without sockets or sleeps.

mod delivery;
mod pipeline;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::ids::{AccountId, DeviceAddress, MessageId, RequestId, Seq};
use parley_protocol::wire::client::{ClientBody, Send};
use parley_protocol::wire::server::{Accepted, PrekeysLow, ServerBody};
use parley_protocol::wire::{ClientFrame, CloseCode, ServerFrame};

use super::transport::Incoming;
use super::{close_code_for, request_error_for, send_to_all, Ending};
use crate::config::Config;
use crate::error::{error_frame, RequestError};
use crate::metrics::Metrics;
use crate::presence::Taken;
use crate::store::{EnqueueOutcome, NewEnvelope, StoreError, StoredEnvelope};

use delivery::{Cursor, Step};
use pipeline::Pipeline;

/// Names one call the core asked for; its result comes back with the same token.
pub type Token = u64;

/// The time of an input: the wall clock for what is stored (ms since the epoch) and a
/// monotonic instant for timers.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Milliseconds since the Unix epoch (the server's clock, offset included).
    pub ms: u64,
    /// For the connection's timers.
    pub at: Instant,
}

/// The settings the core follows (from the server's [`Config`]).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Most pipelined requests waiting at once; past it nothing is read.
    pub pipeline_depth: usize,
    /// A ping after this long; the close after twice this long without a word.
    pub keepalive_interval: Duration,
    /// Largest ciphertext of one envelope (all copies of a `send_to_all` together).
    pub max_envelope_bytes: usize,
    /// Below this many one-time prekeys, `prekeys_low` is pushed at authentication.
    pub prekeys_low_threshold: u32,
}

impl CoreConfig {
    /// The core's part of the server's configuration.
    pub fn from_config(config: &Config) -> CoreConfig {
        CoreConfig {
            pipeline_depth: config.pipeline_depth.max(1),
            keepalive_interval: config.keepalive_interval,
            max_envelope_bytes: config.max_envelope_bytes,
            prekeys_low_threshold: config.prekeys_low_threshold,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// What the socket gave: a frame, a heartbeat, a malformed message, a violation, or
    /// the client's departure.
    Read(Incoming),
    /// The call of `token` completed.
    Done {
        /// The token of the [`Output::Call`].
        token: Token,
        /// What it returned.
        result: CallResult,
    },
    /// The device's attachment was woken: the envelopes handed over since the last wake.
    Wake(Taken),
    /// The device has this many one-time prekeys left (tell the client).
    PrekeysLow(u32),
    /// A push of the linking rendezvous this connection holds (`link_joined`).
    LinkPush(ServerFrame),
    /// Another connection of the device took over, or the account removed the device.
    Displaced {
        /// The device was removed (4005), not displaced (4002).
        removed: bool,
    },
    /// The server is shutting down.
    Shutdown,
    /// The time asked for by [`Core::poll_timeout`] came.
    Tick,
}

/// What to do.
#[derive(Debug)]
pub enum Output {
    /// Write these frames, in order, in one batch.
    Write(Vec<ServerFrame>),
    /// Write a WebSocket ping.
    Ping,
    /// Make this call and hand its result back as [`Input::Done`] with `token`. Calls
    /// that go to the store's writer ([`Call::Enqueue`], [`Call::AckThrough`]) must be
    /// submitted in the order they are output.
    Call {
        /// Names the result.
        token: Token,
        /// What to call. Boxed: an output is held across the shell's awaits, in every
        /// connection's task.
        call: Box<Call>,
    },
    /// The connection ends (after writing what came before).
    Close(Ending),
}

/// A call the core cannot make itself.
#[derive(Debug)]
pub enum Call {
    /// Hand the envelope to the store's writer ([`CallResult::Enqueued`]).
    Enqueue(NewEnvelope),
    /// Delete the device's envelopes through this seq ([`CallResult::Acked`]).
    AckThrough(Seq),
    /// The `stale_devices` refusal with the current device lists of `to` and of `own`
    /// ([`CallResult::DeviceLists`]).
    DeviceLists {
        /// The recipient account.
        to: AccountId,
        /// The sender's account.
        own: AccountId,
    },
    /// Read the device's queue after `after` ([`CallResult::Page`]).
    Page {
        /// The last seq written.
        after: Seq,
        /// Most envelopes to read.
        limit: usize,
    },
    /// Serve a request that runs alone ([`CallResult::Reply`]). Boxed: a request body
    /// is large, and the shell holds it across an await.
    Request(Box<ClientBody>),
}

/// What a call returned.
#[derive(Debug)]
pub enum CallResult {
    /// Of [`Call::Enqueue`], once committed.
    Enqueued(Result<EnqueueOutcome, StoreError>),
    /// Of [`Call::AckThrough`]: how many envelopes were deleted.
    Acked(Result<u64, StoreError>),
    /// Of [`Call::DeviceLists`]: the refusal to answer with.
    DeviceLists(RequestError),
    /// Of [`Call::Page`].
    Page(Result<Vec<StoredEnvelope>, StoreError>),
    /// Of [`Call::Request`].
    Reply(Result<ServerBody, RequestError>),
}

/// Why a request's call runs: what to answer when it completes.
#[derive(Debug)]
enum Purpose {
    /// A `send` or `send_to_all` handed to the writer.
    Send {
        rid: RequestId,
        id: MessageId,
        from: AccountId,
        to: AccountId,
    },
    /// The lists for a `stale_devices` refusal.
    DeviceLists { rid: RequestId },
    /// An `ack` (no reply unless it fails).
    Ack { rid: RequestId },
    /// A request that runs alone; `closes`: the connection ends after its success
    /// (`delete_account`).
    Request { rid: RequestId, closes: bool },
}

impl Purpose {
    fn is_alone(&self) -> bool {
        matches!(self, Purpose::Request { .. })
    }
}

/// Where the connection is in its life.
#[derive(Debug)]
enum State {
    Open,
    /// A malformed frame: answer the requests before it, then this, then close.
    Finishing {
        /// Boxed: the state is part of every idle connection's task.
        last: Box<ServerFrame>,
        ending: Ending,
    },
    /// The client left: complete the running calls, then close.
    Gone,
    Closed,
}

/// One authenticated connection's state.
#[derive(Debug)]
pub struct Core {
    device: DeviceAddress,
    config: CoreConfig,
    metrics: Arc<Metrics>,
    state: State,
    pipeline: Pipeline,
    cursor: Cursor,
    /// The page read in flight, if any.
    page: Option<Token>,
    next_token: Token,
    outputs: VecDeque<Output>,
    last_heard: Instant,
    next_ping: Instant,
}

impl Core {
    /// The connection of `device`, authenticated at `now` with `one_time_prekeys` left:
    /// its first outputs are `prekeys_low` if they are few and the first page read.
    pub fn new(
        device: DeviceAddress,
        one_time_prekeys: u32,
        config: CoreConfig,
        metrics: Arc<Metrics>,
        now: Now,
    ) -> Core {
        let mut core = Core {
            device,
            next_ping: now.at + config.keepalive_interval,
            config,
            metrics,
            state: State::Open,
            pipeline: Pipeline::default(),
            cursor: Cursor::new(),
            page: None,
            next_token: 0,
            outputs: VecDeque::new(),
            last_heard: now.at,
        };
        if one_time_prekeys < core.config.prekeys_low_threshold {
            core.write(vec![prekeys_low(one_time_prekeys)]);
        }
        core.advance();
        core
    }

    /// Takes one input at `now`.
    pub fn handle(&mut self, input: Input, now: Now) {
        if matches!(self.state, State::Closed) {
            return;
        }
        match input {
            Input::Read(incoming) => self.read(incoming, now),
            Input::Done { token, result } => self.done(token, result),
            Input::Wake(taken) => self.cursor.wake(taken),
            Input::PrekeysLow(remaining) => self.write(vec![prekeys_low(remaining)]),
            Input::LinkPush(frame) => self.write(vec![frame]),
            Input::Displaced { removed } => self.close(Ending::Closed(if removed {
                CloseCode::DeviceRemoved
            } else {
                CloseCode::Displaced
            })),
            Input::Shutdown => self.close(Ending::Closed(CloseCode::GoingAway)),
            Input::Tick => self.tick(now),
        }
        self.advance();
    }

    /// The next thing to do, in order. Once all are taken, the queue's memory is
    /// released: an idle connection holds none.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        if output.is_none() && self.outputs.capacity() > 0 {
            self.outputs = VecDeque::new();
        }
        output
    }

    /// When to send [`Input::Tick`] (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            _ => Some(self.next_ping),
        }
    }

    /// Whether to read the next frame from the client: not at the pipeline's depth, not
    /// while a request runs alone, not once the connection is ending.
    pub fn wants_read(&self) -> bool {
        matches!(self.state, State::Open)
            && self.pipeline.len() < self.config.pipeline_depth
            && !self.pipeline.has_alone()
    }

    /// Whether the connection has ended (its last output was [`Output::Close`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The highest seq written to the client (acks are clamped to it).
    pub fn last_sent(&self) -> Seq {
        self.cursor.last_sent()
    }

    fn read(&mut self, incoming: Incoming, now: Now) {
        if !matches!(incoming, Incoming::Gone | Incoming::Violation(_)) {
            self.last_heard = now.at;
        }
        match incoming {
            Incoming::Frame(frame) => {
                if matches!(self.state, State::Open) {
                    self.request(frame, now);
                }
            }
            Incoming::Heartbeat => {}
            Incoming::Malformed { error, rid } => {
                tracing::debug!(device = %self.device, %error, "malformed frame");
                if matches!(self.state, State::Open) {
                    self.state = State::Finishing {
                        last: Box::new(error_frame(rid, &request_error_for(&error))),
                        ending: Ending::Closed(close_code_for(&error)),
                    };
                }
            }
            Incoming::Violation(code) => self.close(Ending::Closed(code)),
            Incoming::Gone => {
                self.state = State::Gone;
                self.pipeline.abandon();
            }
        }
    }

    fn request(&mut self, frame: ClientFrame, now: Now) {
        let rid = frame.rid;
        match frame.body {
            ClientBody::Send(send) => {
                let envelope = single_envelope(self.device, send, &self.config, now);
                self.send(rid, envelope);
            }
            ClientBody::SendToAll(all) => {
                let limit = self.config.max_envelope_bytes;
                let envelope = send_to_all::envelope(self.device, all, limit, now.ms);
                self.send(rid, envelope);
            }
            ClientBody::Ack(ack) => {
                let through = ack.through.min(self.cursor.last_sent());
                if through.0 > 0 {
                    let token = self.call(Call::AckThrough(through));
                    self.pipeline.push_waiting(token, Purpose::Ack { rid });
                }
            }
            ClientBody::Auth(_) | ClientBody::Register(_) | ClientBody::JoinLink(_) => {
                let token = self.token();
                let refusal = error_frame(Some(rid), &RequestError::AlreadyAuthenticated);
                self.pipeline.push_answered(token, Some(refusal));
            }
            body => {
                let closes = matches!(body, ClientBody::DeleteAccount(_));
                let token = self.token();
                let purpose = Purpose::Request { rid, closes };
                self.pipeline
                    .push_alone(token, Call::Request(Box::new(body)), purpose);
            }
        }
    }

    fn send(&mut self, rid: RequestId, envelope: Result<NewEnvelope, RequestError>) {
        match envelope {
            Ok(envelope) => {
                let purpose = Purpose::Send {
                    rid,
                    id: envelope.id,
                    from: envelope.from.account,
                    to: envelope.to.account,
                };
                let token = self.call(Call::Enqueue(envelope));
                self.pipeline.push_waiting(token, purpose);
            }
            Err(e) => {
                let token = self.token();
                self.pipeline
                    .push_answered(token, Some(error_frame(Some(rid), &e)));
            }
        }
    }

    fn done(&mut self, token: Token, result: CallResult) {
        if self.page == Some(token) {
            self.page = None;
            match result {
                CallResult::Page(Ok(page)) => {
                    if matches!(self.state, State::Open) {
                        let frames = self.cursor.read(page);
                        self.write(frames);
                    }
                }
                CallResult::Page(Err(e)) => {
                    tracing::warn!(device = %self.device, error = %e, "reading the queue failed");
                    self.close(Ending::Closed(CloseCode::InternalError));
                }
                _ => self.mismatched(token),
            }
            return;
        }
        let Some(purpose) = self.pipeline.completed(token) else {
            tracing::warn!(device = %self.device, token, "a result for no call");
            return;
        };
        let reply = match (purpose, result) {
            (Purpose::Send { rid, id, from, to }, CallResult::Enqueued(outcome)) => match outcome {
                Ok(EnqueueOutcome::StaleDevices) if !matches!(self.state, State::Gone) => {
                    self.pipeline
                        .wait_again(token, Purpose::DeviceLists { rid });
                    let call = Call::DeviceLists { to, own: from };
                    self.outputs.push_back(Output::Call {
                        token,
                        call: Box::new(call),
                    });
                    return;
                }
                Ok(outcome) => Some(self.send_reply(rid, id, outcome)),
                Err(e) => Some(error_frame(Some(rid), &RequestError::Store(e))),
            },
            (Purpose::DeviceLists { rid }, CallResult::DeviceLists(refusal)) => {
                Some(error_frame(Some(rid), &refusal))
            }
            (Purpose::Ack { rid }, CallResult::Acked(deleted)) => match deleted {
                Ok(deleted) => {
                    self.metrics.envelopes_acknowledged.add(deleted);
                    None
                }
                Err(e) => Some(error_frame(Some(rid), &RequestError::Store(e))),
            },
            (Purpose::Request { rid, closes }, CallResult::Reply(reply)) => match reply {
                Ok(body) if closes => {
                    tracing::info!(device = %self.device, "account deleted");
                    self.write(vec![ServerFrame::reply(rid, body)]);
                    self.close(Ending::Closed(CloseCode::Normal));
                    return;
                }
                Ok(body) => Some(ServerFrame::reply(rid, body)),
                Err(e) => Some(error_frame(Some(rid), &e)),
            },
            _ => {
                self.mismatched(token);
                return;
            }
        };
        self.pipeline.answer(token, reply);
    }

    /// The reply to a `send` the store answered with `outcome` (not `stale_devices`).
    fn send_reply(&self, rid: RequestId, id: MessageId, outcome: EnqueueOutcome) -> ServerFrame {
        let seq = match outcome {
            EnqueueOutcome::Accepted { seq, from_business } => {
                self.metrics.envelopes_accepted.inc();
                if from_business {
                    self.metrics.business_sends.inc("accepted");
                }
                // The recipient's connection, if any, already has it: the writer handed
                // it to the presence registry right after the commit.
                seq
            }
            EnqueueOutcome::Duplicate(seq) => {
                self.metrics.envelopes_duplicate.inc();
                seq
            }
            refused => {
                if let Some(label) = RequestError::business_label(refused) {
                    self.metrics.business_sends.inc(label);
                }
                let error = RequestError::for_refusal(refused).unwrap_or(RequestError::Refused);
                return error_frame(Some(rid), &error);
            }
        };
        ServerFrame::reply(rid, ServerBody::Accepted(Accepted { id, seq }))
    }

    /// A result of another kind than its call's: a bug in the shell. The connection
    /// ends rather than guess.
    fn mismatched(&mut self, token: Token) {
        tracing::error!(device = %self.device, token, "a call answered with the wrong result");
        self.close(Ending::Closed(CloseCode::InternalError));
    }

    fn tick(&mut self, now: Now) {
        if now.at < self.next_ping {
            return;
        }
        let interval = self.config.keepalive_interval;
        if now.at.saturating_duration_since(self.last_heard) > interval * 2 {
            self.close(Ending::Closed(CloseCode::KeepaliveTimeout));
            return;
        }
        self.outputs.push_back(Output::Ping);
        self.next_ping = now.at + interval;
    }

    /// Moves on after an input: writes the replies that are first in line, starts a
    /// request that now runs alone, ends a finishing connection, and delivers.
    fn advance(&mut self) {
        if matches!(self.state, State::Closed) {
            return;
        }
        let (frames, start) = self.pipeline.ready();
        if !matches!(self.state, State::Gone) {
            self.write(frames);
        }
        if let Some((token, call)) = start {
            self.outputs.push_back(Output::Call {
                token,
                call: Box::new(call),
            });
        }
        match &self.state {
            State::Finishing { .. } if self.pipeline.len() == 0 => {
                if let State::Finishing { last, ending } =
                    std::mem::replace(&mut self.state, State::Open)
                {
                    self.write(vec![*last]);
                    self.close(ending);
                }
            }
            State::Gone if self.pipeline.is_idle() => self.close(Ending::ClientLeft),
            State::Open => self.deliver(),
            _ => {}
        }
    }

    fn deliver(&mut self) {
        while self.page.is_none() {
            match self.cursor.step() {
                Step::Idle => return,
                Step::Write(frames) => self.write(frames),
                Step::Read { after } => {
                    let limit = Cursor::PAGE;
                    self.page = Some(self.call(Call::Page { after, limit }));
                }
            }
        }
    }

    fn write(&mut self, frames: Vec<ServerFrame>) {
        if frames.is_empty() {
            return;
        }
        match self.outputs.back_mut() {
            Some(Output::Write(batch)) => batch.extend(frames),
            _ => self.outputs.push_back(Output::Write(frames)),
        }
    }

    fn close(&mut self, ending: Ending) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.outputs.push_back(Output::Close(ending));
        }
    }

    fn call(&mut self, call: Call) -> Token {
        let token = self.token();
        self.outputs.push_back(Output::Call {
            token,
            call: Box::new(call),
        });
        token
    }

    fn token(&mut self) -> Token {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }
}

/// The envelope a `send` asks to store.
fn single_envelope(
    from: DeviceAddress,
    send: Send,
    config: &CoreConfig,
    now: Now,
) -> Result<NewEnvelope, RequestError> {
    let limit = config.max_envelope_bytes;
    if send.ciphertext.len() > limit {
        return Err(RequestError::TooLarge {
            size: send.ciphertext.len(),
            limit,
        });
    }
    Ok(NewEnvelope {
        from,
        to: send.to,
        id: send.id,
        ciphertext: send.ciphertext,
        now_ms: now.ms,
        category: send.category,
        receipt: send.receipt,
        fan_out: None,
    })
}

fn prekeys_low(remaining: u32) -> ServerFrame {
    ServerFrame::push(ServerBody::PrekeysLow(PrekeysLow { remaining }))
}

//! The core driven by inputs alone: a hand-advanced clock, fabricated store results.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_protocol::ids::{AccountId, Handle, MessageId, RequestId, Seq};
use parley_protocol::wire::client::{Ack, ClientBody, ResolveHandle, Send};
use parley_protocol::wire::server::{Resolved, ServerBody};
use parley_protocol::wire::{ClientFrame, CloseCode, DecodeError, ServerFrame};

use super::{Call, CallResult, Core, CoreConfig, Input, Now, Output, Token};
use crate::connection::transport::Incoming;
use crate::connection::Ending;
use crate::error::RequestError;
use crate::metrics::Metrics;
use crate::presence::Taken;
use crate::store::{EnqueueOutcome, StoredEnvelope};

const INTERVAL: Duration = Duration::from_secs(30);

use crate::test_ids::device;

fn config(depth: usize) -> CoreConfig {
    CoreConfig {
        pipeline_depth: depth,
        keepalive_interval: INTERVAL,
        max_envelope_bytes: 1024,
        prekeys_low_threshold: 10,
    }
}

/// A core and a clock the test moves.
struct Harness {
    core: Core,
    start: Instant,
    elapsed: Duration,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(depth: usize) -> Harness {
        Harness::with_prekeys(depth, 100)
    }

    fn with_prekeys(depth: usize, prekeys: u32) -> Harness {
        let start = Instant::now();
        let metrics = Arc::new(Metrics::default());
        let now = Now {
            ms: 1_000_000,
            at: start,
        };
        let core = Core::new(device(1), prekeys, config(depth), metrics.clone(), now);
        Harness {
            core,
            start,
            elapsed: Duration::ZERO,
            metrics,
        }
    }

    fn now(&self) -> Now {
        Now {
            ms: 1_000_000 + u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            at: self.start + self.elapsed,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    fn handle(&mut self, input: Input) -> Vec<Output> {
        let now = self.now();
        self.core.handle(input, now);
        self.outputs()
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    fn frame(&mut self, rid: u32, body: ClientBody) -> Vec<Output> {
        self.handle(Input::Read(Incoming::Frame(ClientFrame {
            v: parley_protocol::PROTOCOL_VERSION,
            rid: RequestId(rid),
            body,
        })))
    }

    fn done(&mut self, token: Token, result: CallResult) -> Vec<Output> {
        self.handle(Input::Done { token, result })
    }

    /// Starts the connection: answers the first page read with `backlog`.
    fn drained(depth: usize, backlog: Vec<StoredEnvelope>) -> (Harness, Vec<ServerFrame>) {
        let mut h = Harness::new(depth);
        let first = h.outputs();
        let token = page_read(&first, Seq(0));
        let out = h.done(token, CallResult::Page(Ok(backlog)));
        let frames = written(&out);
        (h, frames)
    }
}

fn send(to: u8, bytes: usize) -> ClientBody {
    ClientBody::Send(Send {
        to: device(to),
        id: MessageId([to; 16]),
        ciphertext: vec![7; bytes],
        category: None,
        receipt: false,
    })
}

fn envelope(seq: u64) -> StoredEnvelope {
    StoredEnvelope {
        seq: Seq(seq),
        from: device(2),
        id: MessageId([seq as u8; 16]),
        accepted_at_ms: 5,
        ciphertext: vec![1, 2, 3],
        category: None,
    }
}

fn taken(seqs: &[u64]) -> Taken {
    Taken {
        envelopes: seqs.iter().map(|&s| envelope(s)).collect::<VecDeque<_>>(),
        stale: false,
    }
}

/// The token of the one page read in `outputs`, checking where it reads from.
fn page_read(outputs: &[Output], expected_after: Seq) -> Token {
    let reads: Vec<Token> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Call { token, call } => match &**call {
                Call::Page { after, .. } => {
                    assert_eq!(*after, expected_after, "reads after the last seq written");
                    Some(*token)
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 1, "one page read in {outputs:?}");
    reads[0]
}

fn calls(outputs: &[Output]) -> Vec<(Token, &Call)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Call { token, call } => Some((*token, &**call)),
            _ => None,
        })
        .collect()
}

fn written(outputs: &[Output]) -> Vec<ServerFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Write(frames) => Some(frames.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn closed(outputs: &[Output]) -> Option<&Ending> {
    outputs.iter().find_map(|o| match o {
        Output::Close(ending) => Some(ending),
        _ => None,
    })
}

fn delivered_seqs(frames: &[ServerFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            ServerBody::Deliver(d) => Some(d.seq.0),
            _ => None,
        })
        .collect()
}

fn reply_rids(frames: &[ServerFrame]) -> Vec<u32> {
    frames.iter().filter_map(|f| f.rid.map(|r| r.0)).collect()
}

fn accepted(seq: u64) -> CallResult {
    CallResult::Enqueued(Ok(EnqueueOutcome::Accepted {
        seq: Seq(seq),
        from_business: false,
    }))
}

#[test]
fn the_backlog_is_read_first_and_ends_with_drained() {
    let (_h, frames) = Harness::drained(8, vec![envelope(1), envelope(2)]);
    assert_eq!(delivered_seqs(&frames), vec![1, 2]);
    assert!(
        matches!(frames.last().map(|f| &f.body), Some(ServerBody::Drained(d)) if d.through == Seq(2)),
        "drained through the last seq: {frames:?}"
    );
}

#[test]
fn a_full_page_is_followed_by_the_next_read() {
    let mut h = Harness::new(8);
    let token = page_read(&h.outputs(), Seq(0));
    let full: Vec<StoredEnvelope> = (1..=super::Cursor::PAGE as u64).map(envelope).collect();
    let out = h.done(token, CallResult::Page(Ok(full)));
    let frames = written(&out);
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f.body, ServerBody::Drained(_))),
        "no drained after a full page"
    );
    page_read(&out, Seq(super::Cursor::PAGE as u64));
}

#[test]
fn replies_go_out_in_request_order_whatever_order_the_commits_complete_in() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let first = h.frame(1, send(2, 10));
    let second = h.frame(2, send(3, 10));
    let (t1, t2) = (calls(&first)[0].0, calls(&second)[0].0);
    let out = h.done(t2, accepted(1));
    assert!(written(&out).is_empty(), "no reply overtakes request 1");
    let out = h.done(t1, accepted(1));
    assert_eq!(
        reply_rids(&written(&out)),
        vec![1, 2],
        "both, in order, in one batch"
    );
    assert_eq!(h.metrics.envelopes_accepted.get(), 2);
}

#[test]
fn no_accepted_before_its_commit() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let out = h.frame(1, send(2, 10));
    assert!(
        matches!(calls(&out)[..], [(_, Call::Enqueue(_))]),
        "{out:?}"
    );
    assert!(
        written(&out).is_empty(),
        "nothing written before the commit"
    );
}

#[test]
fn reading_stops_at_the_pipeline_depth_and_resumes_with_a_reply() {
    let (mut h, _) = Harness::drained(2, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    assert!(h.core.wants_read());
    h.frame(2, send(3, 10));
    assert!(!h.core.wants_read(), "two requests wait at depth 2");
    h.done(t1, accepted(4));
    assert!(h.core.wants_read(), "one slot free again");
}

#[test]
fn a_request_that_runs_alone_waits_for_the_pipelined_ones_and_stops_reading() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let resolve = ClientBody::ResolveHandle(ResolveHandle {
        handle: Handle::parse("bob").expect("a handle"),
    });
    let out = h.frame(2, resolve);
    assert!(
        calls(&out).is_empty(),
        "does not start before request 1 is answered"
    );
    assert!(
        !h.core.wants_read(),
        "nothing read after a request that runs alone"
    );
    let out = h.done(t1, accepted(1));
    assert_eq!(reply_rids(&written(&out)), vec![1]);
    let started = calls(&out);
    assert!(matches!(
        started[..],
        [(_, Call::Request(body))] if matches!(**body, ClientBody::ResolveHandle(_))
    ));
    let t2 = started[0].0;
    let body = ServerBody::Resolved(Resolved {
        handle: Handle::parse("bob").expect("a handle"),
        account: AccountId([9; 32]),
        display_name: None,
    });
    let out = h.done(t2, CallResult::Reply(Ok(body)));
    assert_eq!(reply_rids(&written(&out)), vec![2]);
    assert!(h.core.wants_read());
}

#[test]
fn acks_are_clamped_to_what_was_written() {
    let (mut h, _) = Harness::drained(8, vec![envelope(1), envelope(2), envelope(3)]);
    let out = h.frame(
        9,
        ClientBody::Ack(Ack {
            through: Seq(1_000),
        }),
    );
    assert!(
        matches!(calls(&out)[..], [(_, Call::AckThrough(Seq(3)))]),
        "{out:?}"
    );
}

#[test]
fn an_ack_before_anything_was_written_is_no_call() {
    let mut h = Harness::new(8);
    h.outputs();
    let out = h.frame(9, ClientBody::Ack(Ack { through: Seq(5) }));
    assert!(calls(&out).is_empty(), "{out:?}");
}

#[test]
fn fresh_envelopes_that_continue_the_queue_are_written_without_a_read() {
    let (mut h, _) = Harness::drained(8, vec![envelope(1)]);
    let out = h.handle(Input::Wake(taken(&[2, 3])));
    assert_eq!(delivered_seqs(&written(&out)), vec![2, 3]);
    assert!(calls(&out).is_empty(), "no store read: {out:?}");
}

#[test]
fn a_gap_reads_the_store() {
    let (mut h, _) = Harness::drained(8, vec![envelope(1)]);
    let out = h.handle(Input::Wake(taken(&[3])));
    assert!(written(&out).is_empty(), "seq 3 is not written after 1");
    let token = page_read(&out, Seq(1));
    let out = h.done(token, CallResult::Page(Ok(vec![envelope(2), envelope(3)])));
    assert_eq!(delivered_seqs(&written(&out)), vec![2, 3]);
}

#[test]
fn a_stale_hand_off_reads_the_store() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let out = h.handle(Input::Wake(Taken {
        envelopes: VecDeque::new(),
        stale: true,
    }));
    page_read(&out, Seq(0));
}

#[test]
fn envelopes_handed_over_during_a_read_are_not_lost() {
    let (mut h, _) = Harness::drained(8, vec![envelope(1)]);
    let out = h.handle(Input::Wake(taken(&[3])));
    let token = page_read(&out, Seq(1));
    // Seq 4 is committed while the page (which ends at 3) is read.
    let out = h.handle(Input::Wake(taken(&[4])));
    assert!(calls(&out).is_empty(), "one read at a time");
    let out = h.done(token, CallResult::Page(Ok(vec![envelope(2), envelope(3)])));
    assert_eq!(delivered_seqs(&written(&out)), vec![2, 3, 4]);
}

#[test]
fn keepalive_pings_and_closes_after_two_silent_intervals() {
    let (mut h, _) = Harness::drained(8, vec![]);
    assert_eq!(h.core.poll_timeout(), Some(h.start + INTERVAL));
    h.advance(INTERVAL);
    let out = h.handle(Input::Tick);
    assert!(matches!(out[..], [Output::Ping]), "{out:?}");
    h.advance(INTERVAL);
    let out = h.handle(Input::Tick);
    assert!(
        matches!(out[..], [Output::Ping]),
        "two intervals are not yet too long"
    );
    h.advance(INTERVAL);
    let out = h.handle(Input::Tick);
    assert!(
        matches!(
            closed(&out),
            Some(Ending::Closed(CloseCode::KeepaliveTimeout))
        ),
        "{out:?}"
    );
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn a_heartbeat_keeps_the_connection_open() {
    let (mut h, _) = Harness::drained(8, vec![]);
    for _ in 0..5 {
        h.advance(INTERVAL);
        h.handle(Input::Read(Incoming::Heartbeat));
        let out = h.handle(Input::Tick);
        assert!(closed(&out).is_none(), "{out:?}");
    }
}

#[test]
fn a_tick_before_its_time_does_nothing() {
    let (mut h, _) = Harness::drained(8, vec![]);
    h.advance(INTERVAL / 2);
    assert!(h.handle(Input::Tick).is_empty());
}

#[test]
fn a_malformed_frame_is_answered_after_the_replies_before_it_then_closes() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let out = h.handle(Input::Read(Incoming::Malformed {
        error: DecodeError::Malformed("bad".into()),
        rid: Some(RequestId(2)),
    }));
    assert!(out.is_empty(), "waits for request 1: {out:?}");
    assert!(!h.core.wants_read());
    let out = h.done(t1, accepted(1));
    assert_eq!(reply_rids(&written(&out)), vec![1, 2]);
    assert!(matches!(
        closed(&out),
        Some(Ending::Closed(CloseCode::InvalidPayload))
    ));
}

#[test]
fn a_client_that_left_has_its_pipelined_requests_completed_and_counted() {
    let (mut h, _) = Harness::drained(8, vec![envelope(1)]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let t2 = calls(&h.frame(2, ClientBody::Ack(Ack { through: Seq(1) })))[0].0;
    let out = h.handle(Input::Read(Incoming::Gone));
    assert!(closed(&out).is_none(), "waits for the commits");
    h.done(t1, accepted(1));
    let out = h.done(t2, CallResult::Acked(Ok(1)));
    assert!(written(&out).is_empty(), "nowhere to reply");
    assert!(matches!(closed(&out), Some(Ending::ClientLeft)));
    assert_eq!(h.metrics.envelopes_accepted.get(), 1);
    assert_eq!(h.metrics.envelopes_acknowledged.get(), 1);
}

#[test]
fn stale_devices_is_answered_with_the_current_lists() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let out = h.done(t1, CallResult::Enqueued(Ok(EnqueueOutcome::StaleDevices)));
    assert!(written(&out).is_empty());
    assert!(matches!(calls(&out)[..], [(t, Call::DeviceLists { .. })] if t == t1));
    let out = h.done(
        t1,
        CallResult::DeviceLists(RequestError::StaleDevices(vec![])),
    );
    let frames = written(&out);
    assert_eq!(reply_rids(&frames), vec![1]);
    assert!(
        matches!(&frames[0].body, ServerBody::Error(e) if e.code == parley_protocol::wire::ErrorCode::StaleDevices)
    );
}

#[test]
fn a_refused_business_send_is_counted_by_its_label() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let out = h.done(
        t1,
        CallResult::Enqueued(Ok(EnqueueOutcome::ReachExhausted(5))),
    );
    assert!(matches!(&written(&out)[0].body, ServerBody::Error(_)));
    assert_eq!(h.metrics.business_sends.get("reach_exhausted"), 1);
}

#[test]
fn an_oversized_send_is_refused_without_a_call_and_in_order() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let t1 = calls(&h.frame(1, send(2, 10)))[0].0;
    let out = h.frame(2, send(3, 2_000));
    assert!(
        calls(&out).is_empty() && written(&out).is_empty(),
        "{out:?}"
    );
    let out = h.done(t1, accepted(1));
    let frames = written(&out);
    assert_eq!(reply_rids(&frames), vec![1, 2]);
    assert!(
        matches!(&frames[1].body, ServerBody::Error(e) if e.code == parley_protocol::wire::ErrorCode::TooLarge)
    );
}

#[test]
fn delete_account_closes_after_its_reply() {
    let (mut h, _) = Harness::drained(8, vec![]);
    let out = h.frame(1, ClientBody::DeleteAccount(Default::default()));
    let token = calls(&out)[0].0;
    let body = ServerBody::AccountDeleted(Default::default());
    let out = h.done(token, CallResult::Reply(Ok(body)));
    assert_eq!(reply_rids(&written(&out)), vec![1]);
    assert!(matches!(
        closed(&out),
        Some(Ending::Closed(CloseCode::Normal))
    ));
}

#[test]
fn few_prekeys_are_reported_at_authentication() {
    let mut h = Harness::with_prekeys(8, 3);
    let out = h.outputs();
    assert!(matches!(
        &written(&out)[..],
        [ServerFrame { body: ServerBody::PrekeysLow(p), .. }] if p.remaining == 3
    ));
}

#[test]
fn displacement_and_shutdown_close_at_once() {
    let (mut h, _) = Harness::drained(8, vec![]);
    calls(&h.frame(1, send(2, 10)));
    let out = h.handle(Input::Displaced { removed: true });
    assert!(matches!(
        closed(&out),
        Some(Ending::Closed(CloseCode::DeviceRemoved))
    ));
    assert!(h.core.is_closed());
    let (mut h, _) = Harness::drained(8, vec![]);
    let out = h.handle(Input::Shutdown);
    assert!(matches!(
        closed(&out),
        Some(Ending::Closed(CloseCode::GoingAway))
    ));
}

#[test]
fn a_failed_page_read_closes_with_internal_error() {
    let mut h = Harness::new(8);
    let token = page_read(&h.outputs(), Seq(0));
    let out = h.done(
        token,
        CallResult::Page(Err(crate::store::StoreError::Unavailable)),
    );
    assert!(matches!(
        closed(&out),
        Some(Ending::Closed(CloseCode::InternalError))
    ));
}

/// The core, and an output the shell holds across its awaits, are part of every idle
/// connection's task (S1 measures bytes per idle connection): large request bodies and
/// frames are boxed in them.
#[test]
fn the_core_and_its_outputs_stay_small() {
    use std::mem::size_of;
    assert!(
        size_of::<Core>() <= 320,
        "Core is {} bytes",
        size_of::<Core>()
    );
    assert!(
        size_of::<Output>() <= 192,
        "Output is {} bytes",
        size_of::<Output>()
    );
}

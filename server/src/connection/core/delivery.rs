//! The delivery cursor of one authenticated connection, without I/O.
//!
//! The store is the truth: the cursor remembers the last seq written to this connection
//! and asks for the next page after it ([`Step::Read`]) whenever there may be more (after
//! authentication, after a full page, when a hand-off cannot be used). When a page comes
//! back short the backlog is done; the first time, the client is told so with `drained`.
//!
//! Once the backlog is drained, a wake usually comes with the envelopes just committed
//! for this device (handed over by the writer, see `crate::presence`): if they continue
//! the last seq written without a gap and none was dropped, they are written as they
//! are, without reading the store back ([`Step::Write`]); otherwise the cursor reads the
//! store. Seqs increase but need not be dense (a restart skips the rest of each device's
//! reserved block): a gap costs one page read, never an envelope. Envelopes handed over while a page is read are kept and compared with the page
//! when it arrives, so a hand-off is never lost between a read and its result.
//!
//! A reconnecting device starts again from its last acknowledged seq, so an envelope
//! written but not acknowledged before a disconnect is delivered again (at-least-once);
//! the client drops the duplicate by message id.

use std::collections::VecDeque;

use parley_protocol::ids::Seq;
use parley_protocol::limits::MAX_DELIVERY_PAGE;
use parley_protocol::wire::server::{Deliver, Drained, ServerBody};
use parley_protocol::wire::ServerFrame;

use crate::presence::{Taken, FRESH_MAX_BYTES, FRESH_MAX_ENVELOPES};
use crate::store::StoredEnvelope;

/// What the cursor wants done next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing is known to be waiting.
    Idle,
    /// Write these deliveries (already counted as written).
    Write(Vec<ServerFrame>),
    /// Read the page of at most [`Cursor::PAGE`] envelopes after `after`, then give it to
    /// [`Cursor::read`].
    Read {
        /// The last seq written.
        after: Seq,
    },
}

/// Where delivery to one device stands.
#[derive(Debug)]
pub struct Cursor {
    last_sent: Seq,
    /// The store may hold envelopes after `last_sent` that no hand-off carries.
    more: bool,
    drained_sent: bool,
    /// Envelopes handed over and not yet written or compared with a page.
    fresh: VecDeque<StoredEnvelope>,
    fresh_bytes: usize,
    /// A hand-off was dropped or merged: read the store.
    stale: bool,
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor::new()
    }
}

impl Cursor {
    /// The most envelopes one read asks for.
    pub const PAGE: usize = MAX_DELIVERY_PAGE;

    /// A cursor at the start of the device's queue, with the backlog still to send.
    pub fn new() -> Cursor {
        Cursor {
            last_sent: Seq(0),
            more: true,
            drained_sent: false,
            fresh: VecDeque::new(),
            fresh_bytes: 0,
            stale: false,
        }
    }

    /// The highest seq written to this connection; acks beyond it are clamped to it.
    pub fn last_sent(&self) -> Seq {
        self.last_sent
    }

    /// Envelopes handed over after their commit (and whether some were dropped). Kept
    /// within the attachment's bounds; past them the cursor reads the store instead.
    pub fn wake(&mut self, taken: Taken) {
        self.stale |= taken.stale;
        for envelope in taken.envelopes {
            self.fresh_bytes += envelope.ciphertext.len();
            self.fresh.push_back(envelope);
        }
        if self.fresh.len() > FRESH_MAX_ENVELOPES || self.fresh_bytes > FRESH_MAX_BYTES {
            self.drop_fresh();
            self.stale = true;
        }
    }

    /// The next step. Call it again after acting on it (after [`Cursor::read`] for a
    /// read) until it says [`Step::Idle`].
    pub fn step(&mut self) -> Step {
        if self.more || self.stale || !self.drained_sent {
            return self.read_store();
        }
        if self.fresh.is_empty() {
            return Step::Idle;
        }
        match self.continue_with_fresh() {
            Some(frames) => Step::Write(frames),
            None => self.read_store(),
        }
    }

    /// The page read for the last [`Step::Read`]: the frames to write, ending with
    /// `drained` the first time a page comes back short.
    pub fn read(&mut self, page: Vec<StoredEnvelope>) -> Vec<ServerFrame> {
        let short = page.len() < Cursor::PAGE;
        let mut frames = Vec::with_capacity(page.len() + 1);
        for envelope in page {
            if envelope.seq > self.last_sent {
                frames.push(self.deliver(envelope));
            }
        }
        self.more = !short;
        if short && !self.drained_sent {
            self.drained_sent = true;
            frames.push(ServerFrame::push(ServerBody::Drained(Drained {
                through: self.last_sent,
            })));
        }
        frames
    }

    /// Every envelope handed over so far is committed, so the read about to start
    /// covers it (or a later page does).
    fn read_store(&mut self) -> Step {
        self.drop_fresh();
        self.stale = false;
        Step::Read {
            after: self.last_sent,
        }
    }

    fn drop_fresh(&mut self) {
        self.fresh = VecDeque::new();
        self.fresh_bytes = 0;
    }

    /// The frames for the fresh envelopes if they are exactly what follows the last seq
    /// written (older ones skipped); `None` if the store must be read.
    fn continue_with_fresh(&mut self) -> Option<Vec<ServerFrame>> {
        let last = self.last_sent.0;
        let fresh: Vec<StoredEnvelope> = std::mem::take(&mut self.fresh)
            .into_iter()
            .filter(|e| e.seq.0 > last)
            .collect();
        self.fresh_bytes = 0;
        let contiguous = fresh
            .iter()
            .enumerate()
            .all(|(i, e)| Some(e.seq.0) == last.checked_add(1 + i as u64));
        if !contiguous {
            return None;
        }
        Some(fresh.into_iter().map(|e| self.deliver(e)).collect())
    }

    fn deliver(&mut self, envelope: StoredEnvelope) -> ServerFrame {
        self.last_sent = envelope.seq;
        ServerFrame::push(ServerBody::Deliver(Deliver {
            seq: envelope.seq,
            from: envelope.from,
            id: envelope.id,
            sent_at_ms: envelope.accepted_at_ms,
            ciphertext: envelope.ciphertext,
            category: envelope.category,
        }))
    }
}

//! The delivery cursor of one authenticated connection.
//!
//! The store is the truth: the cursor remembers only the last seq written to this
//! connection. Whenever there may be more (after authentication, after a wake), it
//! reads the next page after that seq and writes it. When a page comes back short the
//! backlog is done; the first time, the client is told so with `drained`.
//!
//! Once the backlog is drained, a wake usually comes with the envelopes just committed
//! for this device (handed over by the writer, see `crate::presence`): if they continue
//! the last seq written without a gap and none was dropped, they are written as they
//! are, without reading the store back; otherwise the cursor reads the store.
//!
//! A reconnecting device starts again from its last acknowledged seq, so an envelope
//! written but not acknowledged before a disconnect is delivered again (at-least-once);
//! the client drops the duplicate by message id.

use parley_protocol::ids::{DeviceAddress, Seq};
use parley_protocol::limits::MAX_DELIVERY_PAGE;
use parley_protocol::wire::server::{Deliver, Drained, ServerBody};
use parley_protocol::wire::ServerFrame;

use crate::presence::{Attachment, Taken};
use crate::store::{Store, StoreError, StoredEnvelope};

/// Where delivery to one device stands.
#[derive(Debug)]
pub struct Cursor {
    device: DeviceAddress,
    last_sent: Seq,
    more: bool,
    drained_sent: bool,
}

impl Cursor {
    /// A cursor at the start of `device`'s queue, with the backlog still to send.
    pub fn new(device: DeviceAddress) -> Cursor {
        Cursor {
            device,
            last_sent: Seq(0),
            more: true,
            drained_sent: false,
        }
    }

    /// Whether the queue may hold envelopes not yet written to this connection.
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Something new may be queued.
    pub fn wake(&mut self) {
        self.more = true;
    }

    /// The highest seq written to this connection; acks beyond it are clamped to it.
    pub fn last_sent(&self) -> Seq {
        self.last_sent
    }

    /// The next frames to write: the fresh envelopes handed to `attachment` when they
    /// continue the queue, else the next page read from the store (possibly ending with
    /// `drained`). Advances the cursor as if they were written; if writing fails the
    /// connection ends, and the next connection starts from the store again.
    pub async fn next_frames(
        &mut self,
        store: &dyn Store,
        attachment: &Attachment,
    ) -> Result<Vec<ServerFrame>, StoreError> {
        // Taken even while the backlog is read, so the buffer does not overflow; those
        // envelopes are in the pages anyway.
        let taken = attachment.take_fresh();
        if self.drained_sent {
            if let Some(frames) = self.continue_with(taken) {
                self.more = false;
                return Ok(frames);
            }
        }
        let page = store
            .page(self.device, self.last_sent, MAX_DELIVERY_PAGE)
            .await?;
        let short = page.len() < MAX_DELIVERY_PAGE;
        let mut frames = Vec::with_capacity(page.len() + 1);
        for envelope in page {
            frames.push(self.deliver(envelope));
        }
        if short {
            self.more = false;
            if !self.drained_sent {
                self.drained_sent = true;
                frames.push(ServerFrame::push(ServerBody::Drained(Drained {
                    through: self.last_sent,
                })));
            }
        }
        Ok(frames)
    }

    /// The frames for `taken` if they are exactly what follows the last seq written
    /// (older ones skipped); `None` if the store must be read.
    fn continue_with(&mut self, taken: Taken) -> Option<Vec<ServerFrame>> {
        if taken.stale {
            return None;
        }
        let last = self.last_sent.0;
        let fresh: Vec<StoredEnvelope> = taken
            .envelopes
            .into_iter()
            .filter(|e| e.seq.0 > last)
            .collect();
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

//! The requests of one connection that are waiting for an answer, in request order.
//!
//! `send` and `ack` are **pipelined**: each is handed to the store's writer in the order
//! read, and the connection goes on reading while it waits for the commit, so one group
//! commit carries many envelopes of one connection. Their replies go out in request
//! order, each only once its own calls have completed. Any other request runs **alone**:
//! it waits in line until every request before it has been answered, then its call
//! starts, and nothing is read until it is answered, so it never overtakes an earlier
//! request or is overtaken by a later one.

use std::collections::VecDeque;

use parley_protocol::wire::ServerFrame;

use super::{Call, Purpose, Token};

/// A request in line.
#[derive(Debug)]
enum Slot {
    /// A call for it is running.
    Waiting(Purpose),
    /// A request to run alone, not started yet: its call starts once it is first in line.
    Alone(Call, Purpose),
    /// Answered (`None`: a request without reply), to be written once it is first.
    Answered(Option<ServerFrame>),
}

/// The requests waiting for an answer, in request order. An idle connection holds no
/// allocation for it.
#[derive(Debug, Default)]
pub struct Pipeline {
    slots: VecDeque<(Token, Slot)>,
}

impl Pipeline {
    /// Requests in line (those answered but not yet written included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no call of a request is running or waiting to start.
    pub fn is_idle(&self) -> bool {
        self.slots
            .iter()
            .all(|(_, slot)| matches!(slot, Slot::Answered(_)))
    }

    /// Whether a request to run alone is in line (reading waits for it). It is always
    /// the last one: nothing is read after it.
    pub fn has_alone(&self) -> bool {
        match self.slots.back() {
            Some((_, Slot::Alone(..))) => true,
            Some((_, Slot::Waiting(purpose))) => purpose.is_alone(),
            _ => false,
        }
    }

    /// A request whose call (of `token`) started now.
    pub fn push_waiting(&mut self, token: Token, purpose: Purpose) {
        self.slots.push_back((token, Slot::Waiting(purpose)));
    }

    /// A request already answered (a refusal that needed no call).
    pub fn push_answered(&mut self, token: Token, reply: Option<ServerFrame>) {
        self.slots.push_back((token, Slot::Answered(reply)));
    }

    /// A request to run alone once every request before it is answered.
    pub fn push_alone(&mut self, token: Token, call: Call, purpose: Purpose) {
        self.slots.push_back((token, Slot::Alone(call, purpose)));
    }

    /// The purpose of the running call `token`, taken out: the caller answers the
    /// request ([`Pipeline::answer`]) or starts its next call ([`Pipeline::wait_again`]).
    pub fn completed(&mut self, token: Token) -> Option<Purpose> {
        let slot = self.slot(token)?;
        if !matches!(slot, Slot::Waiting(_)) {
            return None;
        }
        match std::mem::replace(slot, Slot::Answered(None)) {
            Slot::Waiting(purpose) => Some(purpose),
            _ => None,
        }
    }

    /// The request of `token` needs another call before its answer (same token).
    pub fn wait_again(&mut self, token: Token, purpose: Purpose) {
        if let Some(slot) = self.slot(token) {
            *slot = Slot::Waiting(purpose);
        }
    }

    /// The answer to the request of `token`.
    pub fn answer(&mut self, token: Token, reply: Option<ServerFrame>) {
        if let Some(slot) = self.slot(token) {
            *slot = Slot::Answered(reply);
        }
    }

    /// The replies that can be written now, in order, and the call of a request to run
    /// alone that is now first in line (it is then waiting for its answer).
    pub fn ready(&mut self) -> (Vec<ServerFrame>, Option<(Token, Call)>) {
        // Sized once: a frame is large (a few hundred bytes), and growing the vector
        // reply by reply was a measurable share of the saturated relay's allocations.
        let replies = self
            .slots
            .iter()
            .take_while(|(_, slot)| matches!(slot, Slot::Answered(_)))
            .filter(|(_, slot)| matches!(slot, Slot::Answered(Some(_))))
            .count();
        let mut frames = Vec::with_capacity(replies);
        while let Some((_, Slot::Answered(_))) = self.slots.front() {
            if let Some((_, Slot::Answered(reply))) = self.slots.pop_front() {
                frames.extend(reply);
            }
        }
        let mut start = None;
        if let Some((token, slot)) = self.slots.front_mut() {
            if let Slot::Alone(..) = slot {
                let placeholder = Slot::Answered(None);
                if let Slot::Alone(call, purpose) = std::mem::replace(slot, placeholder) {
                    *slot = Slot::Waiting(purpose);
                    start = Some((*token, call));
                }
            }
        }
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        }
        (frames, start)
    }

    /// Forgets every answer and every request whose call has not started (the client is
    /// gone); what remains is the calls still running.
    pub fn abandon(&mut self) {
        self.slots
            .retain(|(_, slot)| matches!(slot, Slot::Waiting(_)));
    }

    fn slot(&mut self, token: Token) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(t, _)| *t == token)
            .map(|(_, slot)| slot)
    }
}

//! Callers who wait through a failover for their send.
//!
//! A send interrupted by a connection error is not answered with that error: its caller
//! waits for the next connection. If the message was already stored in the outbox, the
//! next connection's outbox flush resends it (same envelope, so the same message id) and
//! its answer is the caller's; if it was not stored yet, the whole send runs again first
//! on the next connection. This holds the replies; the outbox remains the one place
//! that remembers what to resend.
//!
//! At most one send is interrupted per lost connection (the engine serves one command
//! at a time), and every waiter is answered by a later flush, or at the failover
//! deadline ([`WaitingSends::give_up`]), or dropped when the engine stops (the caller
//! then sees [`SdkError::Stopped`]).

use std::collections::HashMap;

use parley_protocol::ids::MessageId;
use tokio::sync::oneshot;

use super::{Command, Outgoing};
use crate::error::SdkError;

/// Sends whose callers wait through a reconnection.
#[derive(Debug, Default)]
pub(crate) struct WaitingSends {
    /// Stored in the outbox; answered when a flush gets the server's answer.
    stored: HashMap<MessageId, oneshot::Sender<Result<MessageId, SdkError>>>,
    /// Interrupted before anything was stored: runs again on the next connection.
    unstored: Option<(Outgoing, oneshot::Sender<Result<MessageId, SdkError>>)>,
}

impl WaitingSends {
    /// `id` is in the outbox; its caller waits for the answer to its resend.
    pub(crate) fn stored(
        &mut self,
        id: MessageId,
        reply: oneshot::Sender<Result<MessageId, SdkError>>,
    ) {
        self.stored.insert(id, reply);
    }

    /// `message` was not stored yet: send it again first on the next connection.
    pub(crate) fn unstored(
        &mut self,
        message: Outgoing,
        reply: oneshot::Sender<Result<MessageId, SdkError>>,
    ) {
        self.unstored = Some((message, reply));
    }

    /// The interrupted send to run again, as a command.
    pub(crate) fn take_unstored(&mut self) -> Option<Command> {
        self.unstored
            .take()
            .map(|(message, reply)| Command::Send { message, reply })
    }

    /// The server answered the resend of `id` (or refused it for good).
    pub(crate) fn settle(&mut self, id: &MessageId, result: Result<MessageId, SdkError>) {
        if let Some(reply) = self.stored.remove(id) {
            // The caller may have stopped waiting; that is its choice.
            let _ = reply.send(result);
        }
    }

    /// No server answered in time: stored sends are [`SdkError::Queued`] (they are still
    /// resent later), an unstored one gets `unreachable()`.
    pub(crate) fn give_up(&mut self, reason: &str, unreachable: impl Fn() -> SdkError) {
        for (_, reply) in self.stored.drain() {
            let _ = reply.send(Err(SdkError::Queued(reason.to_owned())));
        }
        if let Some((_, reply)) = self.unstored.take() {
            let _ = reply.send(Err(unreachable()));
        }
    }
}

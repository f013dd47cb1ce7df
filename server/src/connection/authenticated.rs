//! The main state of a connection: it acts for one device, answers its requests, and
//! delivers its queue. This is the async shell around the connection's [`Core`], which
//! makes every decision (see `core`): the shell reads frames when the core wants them,
//! runs the calls it asks for, writes what it says, and tells it of wakes, displacement,
//! shutdown and the time.
//!
//! One loop, in priority order: shutdown, displacement by a newer connection of the same
//! device, completed calls, the client's frames, the linking rendezvous, wake-ups from
//! the delivery registry, and the core's timer. Calls to the store's writer (`send`,
//! `ack`) are submitted in the order the core asks for them and then complete
//! concurrently, so one group commit carries many envelopes of one connection; the core
//! puts the replies back in request order. A page read, and a request that runs alone
//! (with its linking state, or `delete_account`), are served right here, nothing else
//! being polled meanwhile: a store read holds a pooled database connection (PostgreSQL)
//! only while it is polled to its end, never parked in a set of running calls while the
//! loop waits for another one (that starved the pool with many connections at once).

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use parley_protocol::ids::RequestId;
use parley_protocol::wire::server::{Authenticated, ServerBody};
use parley_protocol::wire::{CloseCode, ServerFrame};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::awaiting_auth::Session;
use super::core::{Call, CallResult, Core, CoreConfig, Input, Now, Output, Token};
use super::devices;
use super::linking::LinkState;
use super::requests;
use super::send_to_all;
use super::transport::{SendError, Transport};
use super::Ending;
use crate::context::Shared;
use crate::error::RequestError;
use crate::presence::Attachment;

/// Serves an authenticated device until the connection ends: attaches the connection to
/// the device, then answers `authenticated` to `rid`. In that order, so that once the
/// client has read `authenticated` this connection is the device's: a connection it
/// opens next displaces this one, never the reverse (attaching after the reply let a
/// slow, already abandoned connection displace the client's next one).
pub async fn run(
    transport: &mut Transport,
    shared: &Shared,
    session: Session,
    rid: RequestId,
    shutdown: &CancellationToken,
) -> Ending {
    let address = session.address;
    let _session = shared.metrics.sessions.track();
    let attachment = shared.presence.attach(address, shared.now_ms()).await;
    devices::note_seen(shared, address);
    let reply = ServerFrame::reply(
        rid,
        ServerBody::Authenticated(Authenticated {
            address,
            one_time_prekeys: session.one_time_prekeys,
        }),
    );
    let ending = match transport.send(&reply).await {
        Ok(()) => serve(transport, shared, session, shutdown, &attachment).await,
        Err(e) => ending_for(e),
    };
    shared.presence.detach(&address, &attachment);
    ending
}

async fn serve(
    transport: &mut Transport,
    shared: &Shared,
    session: Session,
    shutdown: &CancellationToken,
    attachment: &Attachment,
) -> Ending {
    let address = session.address;
    let config = CoreConfig::from_config(&shared.config);
    let mut core = Core::new(
        address,
        session.one_time_prekeys,
        config,
        shared.metrics.clone(),
        now(shared),
    );
    let mut calls = Calls::default();
    let mut link = LinkState::default();
    // The waits that outlive an input are made once, not at every turn of the loop: each
    // one made registers a waiter (a lock) and each one dropped takes it out again. A
    // cancellation stays ready once it happened; the wake and the timer are re-armed.
    let shutdown = shutdown.cancelled();
    let displaced = attachment.displaced.cancelled();
    let wake = attachment.wake.notified();
    let timer = sleep_until(far_future());
    tokio::pin!(shutdown, displaced, wake, timer);
    let mut timer_set_for = None;
    loop {
        while let Some(output) = core.poll_output() {
            let written = match output {
                Output::Write(frames) => transport.send_all(&frames).await,
                Output::Ping => transport.ping().await,
                Output::Close(ending) => return ending,
                Output::Call { token, call } => match *call {
                    Call::Request(body) => {
                        let served = requests::serve(shared, address, &mut link, *body);
                        let result = CallResult::Reply(Box::pin(served).await);
                        core.handle(Input::Done { token, result }, now(shared));
                        Ok(())
                    }
                    Call::Page { after, limit } => {
                        let page = Box::pin(shared.store.page(address, after, limit)).await;
                        let result = CallResult::Page(page);
                        core.handle(Input::Done { token, result }, now(shared));
                        Ok(())
                    }
                    call => {
                        calls.push(Box::pin(start(shared, address, token, call)).await);
                        Ok(())
                    }
                },
            };
            if let Err(e) = written {
                return ending_for(e);
            }
        }
        let timeout = core.poll_timeout();
        if timeout != timer_set_for {
            let deadline = timeout.map_or_else(far_future, tokio::time::Instant::from_std);
            timer.as_mut().reset(deadline);
            timer_set_for = timeout;
        }
        let input = tokio::select! {
            biased;
            () = &mut shutdown => Input::Shutdown,
            () = &mut displaced => Input::Displaced {
                removed: attachment.was_removed(),
            },
            Some((token, result)) = calls.next(), if !calls.is_empty() => {
                // Every call of the same commit is ready now: hand them all over before
                // writing, so their replies go out in one batch.
                core.handle(Input::Done { token, result }, now(shared));
                while let Some((token, result)) = calls.next_ready() {
                    core.handle(Input::Done { token, result }, now(shared));
                }
                calls.release_if_empty();
                continue;
            }
            incoming = transport.recv(), if core.wants_read() => Input::Read(incoming),
            push = link.next_push(), if link.is_open() => match push {
                Some(push) => Input::LinkPush(push),
                None => continue,
            },
            () = &mut wake => {
                wake.set(attachment.wake.notified());
                if let Some(remaining) = attachment.take_prekeys_low() {
                    core.handle(Input::PrekeysLow(remaining), now(shared));
                }
                Input::Wake(attachment.take_fresh())
            }
            () = &mut timer => Input::Tick,
        };
        core.handle(input, now(shared));
    }
}

/// The time of an input.
fn now(shared: &Shared) -> Now {
    Now {
        ms: shared.now_ms(),
        at: Instant::now(),
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

/// A call's result to be.
type Running<'a> = Pin<Box<dyn Future<Output = (Token, CallResult)> + std::marker::Send + 'a>>;

/// Starts `call`: a call to the store's writer is submitted now, in the order the core
/// asked for it; its result (the commit) comes later.
async fn start<'a>(
    shared: &'a Shared,
    address: parley_protocol::ids::DeviceAddress,
    token: Token,
    call: Call,
) -> Running<'a> {
    let ready = |result| -> Running<'a> { Box::pin(std::future::ready((token, result))) };
    match call {
        Call::Enqueue(envelope) => match shared.store.submit_enqueue(envelope).await {
            Ok(pending) => Box::pin(pending.map(move |r| (token, CallResult::Enqueued(r)))),
            Err(e) => ready(CallResult::Enqueued(Err(e))),
        },
        Call::AckThrough(through) => {
            match shared.store.submit_ack_through(address, through).await {
                Ok(pending) => Box::pin(pending.map(move |r| (token, CallResult::Acked(r)))),
                Err(e) => ready(CallResult::Acked(Err(e))),
            }
        }
        Call::DeviceLists { to, own } => Box::pin(async move {
            (
                token,
                CallResult::DeviceLists(send_to_all::stale(shared, to, own).await),
            )
        }),
        Call::Page { .. } | Call::Request(_) => ready(CallResult::Reply(Err(
            RequestError::Malformed("served by the loop, not started here".into()),
        ))),
    }
}

/// The calls of a connection that are running, in any order (the core keeps request
/// order). Allocated on first use and released when empty, so an idle connection holds
/// nothing for it.
#[derive(Default)]
struct Calls<'a>(Option<FuturesUnordered<Running<'a>>>);

impl<'a> Calls<'a> {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(FuturesUnordered::is_empty)
    }

    fn push(&mut self, call: Running<'a>) {
        self.0.get_or_insert_with(FuturesUnordered::new).push(call);
    }

    /// The next result.
    async fn next(&mut self) -> Option<(Token, CallResult)> {
        match &mut self.0 {
            Some(calls) => calls.next().await,
            None => None,
        }
    }

    /// The next result if one is ready now.
    fn next_ready(&mut self) -> Option<(Token, CallResult)> {
        self.0.as_mut()?.next().now_or_never().flatten()
    }

    fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

fn ending_for(error: SendError) -> Ending {
    match error {
        SendError::Stalled => Ending::Closed(CloseCode::SlowConsumer),
        SendError::Broken(_) => Ending::ClientLeft,
    }
}

//! The main state of a connection: it acts for one device, answers its requests, and
//! delivers its queue.
//!
//! One loop, in priority order: shutdown, displacement by a newer connection of the same
//! device, replies whose commit completed, the client's frames, wake-ups from the
//! delivery registry, keepalive, and writing the next page of the queue.
//!
//! `send` and `ack` are **pipelined**: each is handed to the store's writer in the order
//! read, and the loop goes on reading while it waits for the commit, so one group commit
//! carries many envelopes of one connection. Their replies go out in request order, each
//! `accepted` only after the store committed it. At most `--pipeline-depth` of them wait
//! per connection; beyond that the loop stops reading the socket (TCP backpressure).
//! Any other request first waits for the pipelined ones (and writes their replies), then
//! runs alone, so it never overtakes an earlier request or is overtaken by a later one.
//! A client that leaves right after a request (an `ack`, then a close) has it handled all
//! the same: the loop waits for the pipelined commits before it lets the connection go.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};

use parley_protocol::ids::{DeviceAddress, RequestId, Seq};
use parley_protocol::wire::client::{ClientBody, FetchBundle, Send, UploadPrekeys};
use parley_protocol::wire::server::{
    Accepted, AccountDeleted, Authenticated, PrekeysLow, PrekeysStored, Resolved, ServerBody,
};
use parley_protocol::wire::{CloseCode, ServerFrame};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::awaiting_auth::{error_frame, Session};
use super::business;
use super::delivery::Cursor;
use super::devices;
use super::linking::LinkState;
use super::prekey_checks::check_kem_prekey;
use super::send_to_all;
use super::transport::{Incoming, SendError, Transport};
use super::{close_code_for, request_error_for, Ending};
use crate::context::Shared;
use crate::error::RequestError;
use crate::store::{BundleOutcome, EnqueueOutcome, NewEnvelope, PrekeyUpload, UploadOutcome};

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
    attachment: &crate::presence::Attachment,
) -> Ending {
    let address = session.address;
    let mut cursor = Cursor::new(address);
    if session.one_time_prekeys < shared.config.prekeys_low_threshold {
        let low = prekeys_low(session.one_time_prekeys);
        if let Err(e) = transport.send(&low).await {
            return ending_for(e);
        }
    }
    let interval = shared.config.keepalive_interval;
    let depth = shared.config.pipeline_depth.max(1);
    let mut in_flight = Pipeline::default();
    let mut link = LinkState::default();
    let mut last_heard = Instant::now();
    let mut next_ping = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ending::Closed(CloseCode::GoingAway),
            _ = attachment.displaced.cancelled() => {
                return Ending::Closed(if attachment.was_removed() {
                    CloseCode::DeviceRemoved
                } else {
                    CloseCode::Displaced
                });
            }
            Some(reply) = in_flight.next(), if in_flight.len() > 0 => {
                // Every reply of the same commit is ready now: write them in one batch.
                let mut frames: Vec<ServerFrame> = reply.into_iter().collect();
                while let Some(more) = in_flight.next_ready() {
                    frames.extend(more);
                }
                in_flight.release_if_empty();
                if !frames.is_empty() {
                    if let Err(e) = transport.send_all(&frames).await {
                        return ending_for(e);
                    }
                }
            }
            incoming = transport.recv(), if in_flight.len() < depth => {
                last_heard = Instant::now();
                let frame = match incoming {
                    Incoming::Frame(frame) => frame,
                    Incoming::Heartbeat => continue,
                    Incoming::Gone => {
                        // What the client sent before it left is committed all the same
                        // (an `ack` followed by a close, say); wait for those commits so
                        // that their outcomes are counted, with nowhere to reply.
                        in_flight.settle().await;
                        return Ending::ClientLeft;
                    }
                    Incoming::Violation(code) => return Ending::Closed(code),
                    Incoming::Malformed { error, rid } => {
                        tracing::debug!(device = %address, %error, "malformed frame");
                        let _ = Box::pin(finish(transport, &mut in_flight)).await;
                        let _ = transport.send(&error_frame(rid, &request_error_for(&error))).await;
                        return Ending::Closed(close_code_for(&error));
                    }
                };
                let rid = frame.rid;
                // The request paths are boxed: their state is allocated only while a
                // request is served, not held in every idle connection's task.
                match frame.body {
                    ClientBody::Send(send) => {
                        let envelope = single_envelope(shared, address, send);
                        in_flight.push(Box::pin(submit_send(shared, rid, envelope)).await);
                    }
                    ClientBody::SendToAll(all) => {
                        let limit = shared.config.max_envelope_bytes;
                        let envelope = send_to_all::envelope(address, all, limit, shared.now_ms());
                        in_flight.push(Box::pin(submit_send(shared, rid, envelope)).await);
                    }
                    ClientBody::Ack(ack) => {
                        let through = ack.through.min(cursor.last_sent());
                        in_flight.push(Box::pin(submit_ack(shared, address, rid, through)).await);
                    }
                    ClientBody::OpenLink(open) => {
                        let reply = Box::pin(link.open(shared, address.account, open)).await;
                        if let Err(ending) = Box::pin(reply_in_order(transport, &mut in_flight, rid, reply)).await {
                            return ending;
                        }
                    }
                    ClientBody::SealLink(seal) => {
                        let reply = Box::pin(link.seal(seal)).await;
                        if let Err(ending) = Box::pin(reply_in_order(transport, &mut in_flight, rid, reply)).await {
                            return ending;
                        }
                    }
                    body => {
                        let served = serve_alone(transport, shared, address, rid, body, &mut in_flight);
                        if let Err(ending) = Box::pin(served).await {
                            return ending;
                        }
                    }
                }
            }
            push = link.next_push(), if link.is_open() => {
                if let Some(push) = push {
                    if let Err(e) = transport.send(&push).await {
                        return ending_for(e);
                    }
                }
            }
            _ = attachment.wake.notified() => {
                cursor.wake();
                if let Some(remaining) = attachment.take_prekeys_low() {
                    if let Err(e) = transport.send(&prekeys_low(remaining)).await {
                        return ending_for(e);
                    }
                }
            }
            _ = sleep_until(next_ping) => {
                if last_heard.elapsed() > interval * 2 {
                    return Ending::Closed(CloseCode::KeepaliveTimeout);
                }
                if let Err(e) = transport.ping().await {
                    return ending_for(e);
                }
                next_ping = tokio::time::Instant::now() + interval;
            }
            // Last, and not cancellable by the branches above: a page read once started
            // is written before the next frame is read.
            () = std::future::ready(()), if cursor.has_more() => {
                match cursor.next_frames(shared.store.as_ref(), attachment).await {
                    Ok(frames) => {
                        if let Err(e) = transport.send_all(&frames).await {
                            return ending_for(e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(device = %address, error = %e, "reading the queue failed");
                        return Ending::Closed(CloseCode::InternalError);
                    }
                }
            }
        }
    }
}

/// Serves a request that is not pipelined: first waits for the pipelined ones (and
/// writes their replies), then answers it. `Err` ends the connection.
async fn serve_alone(
    transport: &mut Transport,
    shared: &Shared,
    address: DeviceAddress,
    rid: RequestId,
    body: ClientBody,
    in_flight: &mut Pipeline<'_>,
) -> Result<(), Ending> {
    finish(transport, in_flight).await.map_err(ending_for)?;
    let reply = match body {
        ClientBody::DeleteAccount(_) => match shared.store.delete_account(address.account).await {
            Ok(_) => {
                tracing::info!(device = %address, "account deleted");
                let done = ServerFrame::reply(rid, ServerBody::AccountDeleted(AccountDeleted {}));
                let _ = transport.send(&done).await;
                return Err(Ending::Closed(CloseCode::Normal));
            }
            Err(e) => error_frame(Some(rid), &RequestError::Store(e)),
        },
        body => match handle(shared, address, rid, body).await {
            Ok(reply) => reply,
            Err(e) => error_frame(Some(rid), &e),
        },
    };
    transport.send(&reply).await.map_err(ending_for)
}

/// Writes the reply to a request served in the loop (the linking requests, which need
/// the connection's [`LinkState`]) after the replies of the pipelined ones before it.
async fn reply_in_order(
    transport: &mut Transport,
    in_flight: &mut Pipeline<'_>,
    rid: RequestId,
    reply: Result<ServerBody, RequestError>,
) -> Result<(), Ending> {
    finish(transport, in_flight).await.map_err(ending_for)?;
    let frame = match reply {
        Ok(body) => ServerFrame::reply(rid, body),
        Err(e) => error_frame(Some(rid), &e),
    };
    transport.send(&frame).await.map_err(ending_for)
}

/// Answers one request (everything but `send`, `ack` and `delete_account`).
async fn handle(
    shared: &Shared,
    address: DeviceAddress,
    rid: RequestId,
    body: ClientBody,
) -> Result<ServerFrame, RequestError> {
    let reply = match body {
        ClientBody::Auth(_) | ClientBody::Register(_) | ClientBody::JoinLink(_) => {
            return Err(RequestError::AlreadyAuthenticated)
        }
        ClientBody::FetchBundle(fetch) => fetch_bundle(shared, address, fetch).await?,
        ClientBody::ResolveHandle(resolve) => {
            let found = shared.store.resolve_handle(resolve.handle.clone()).await?;
            let Some((account, display_name)) = found else {
                shared
                    .limiters
                    .failed_handle_lookups
                    .take(&*shared.store, &address.account, 1)
                    .await
                    .map_err(|retry| RequestError::RateLimited {
                        what: "lookups of unknown handles",
                        retry_after: retry.0,
                    })?;
                return Err(RequestError::NotFound("handle"));
            };
            ServerBody::Resolved(Resolved {
                handle: resolve.handle,
                account,
                display_name,
            })
        }
        ClientBody::UploadPrekeys(upload) => upload_prekeys(shared, address, upload).await?,
        ClientBody::GrantConsent(g) => {
            business::change_consent(shared, address, business::grant(g)).await?
        }
        ClientBody::RevokeConsent(r) => {
            business::change_consent(shared, address, business::revoke(r)).await?
        }
        ClientBody::Block(b) => {
            business::set_blocked(shared, address.account, b.account, true).await?
        }
        ClientBody::Unblock(u) => {
            business::set_blocked(shared, address.account, u.account, false).await?
        }
        ClientBody::Report(r) => business::report(shared, address.account, r.account).await?,
        ClientBody::FetchBusiness(f) => business::fetch(shared, f.account).await?,
        ClientBody::SetDisplayName(n) => {
            business::set_display_name(shared, address.account, n).await?
        }
        ClientBody::PublishDevices(p) => devices::publish(shared, address.account, p).await?,
        ClientBody::FetchDevices(f) => devices::fetch(shared, address.account, f.account).await?,
        ClientBody::Send(_)
        | ClientBody::SendToAll(_)
        | ClientBody::Ack(_)
        | ClientBody::DeleteAccount(_)
        | ClientBody::OpenLink(_)
        | ClientBody::SealLink(_) => {
            return Err(RequestError::Malformed(
                "handled by the connection loop".into(),
            ))
        }
    };
    Ok(ServerFrame::reply(rid, reply))
}

/// A reply still waiting for its commit; `None` when the request has no reply.
type PendingReply<'a> = Pin<Box<dyn Future<Output = Option<ServerFrame>> + std::marker::Send + 'a>>;

fn ready_reply<'a>(reply: Option<ServerFrame>) -> PendingReply<'a> {
    Box::pin(std::future::ready(reply))
}

/// The pipelined requests of a connection, in request order. Allocated on first use and
/// released when empty, so an idle connection holds nothing for it.
#[derive(Default)]
struct Pipeline<'a>(Option<FuturesOrdered<PendingReply<'a>>>);

impl<'a> Pipeline<'a> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn push(&mut self, reply: PendingReply<'a>) {
        self.0
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(reply);
    }

    /// The next reply in order (`Some(None)`: a request without reply completed).
    async fn next(&mut self) -> Option<Option<ServerFrame>> {
        match &mut self.0 {
            Some(replies) => replies.next().await,
            None => None,
        }
    }

    /// The next reply if it is ready now.
    fn next_ready(&mut self) -> Option<Option<ServerFrame>> {
        self.0.as_mut()?.next().now_or_never().flatten()
    }

    /// Waits for every pipelined request, dropping their replies (the client is gone).
    async fn settle(&mut self) {
        while self.next().await.is_some() {}
        self.0 = None;
    }

    fn release_if_empty(&mut self) {
        if self.len() == 0 {
            self.0 = None;
        }
    }
}

/// Waits for every pipelined request and writes their replies.
async fn finish(transport: &mut Transport, in_flight: &mut Pipeline<'_>) -> Result<(), SendError> {
    let mut frames = Vec::new();
    while let Some(reply) = in_flight.next().await {
        frames.extend(reply);
    }
    in_flight.release_if_empty();
    if frames.is_empty() {
        return Ok(());
    }
    transport.send_all(&frames).await
}

/// The envelope a `send` asks to store.
fn single_envelope(
    shared: &Shared,
    address: DeviceAddress,
    send: Send,
) -> Result<NewEnvelope, RequestError> {
    let limit = shared.config.max_envelope_bytes;
    if send.ciphertext.len() > limit {
        return Err(RequestError::TooLarge {
            size: send.ciphertext.len(),
            limit,
        });
    }
    Ok(NewEnvelope {
        from: address,
        to: send.to,
        id: send.id,
        ciphertext: send.ciphertext,
        now_ms: shared.now_ms(),
        category: send.category,
        receipt: send.receipt,
        fan_out: None,
    })
}

/// Hands the envelope of a `send` or `send_to_all` to the store's writer (in order) and
/// returns its reply-to-be.
async fn submit_send(
    shared: &Shared,
    rid: RequestId,
    envelope: Result<NewEnvelope, RequestError>,
) -> PendingReply<'_> {
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(e) => return ready_reply(Some(error_frame(Some(rid), &e))),
    };
    let (id, from, to) = (envelope.id, envelope.from.account, envelope.to.account);
    let pending = match shared.store.submit_enqueue(envelope).await {
        Ok(pending) => pending,
        Err(e) => return ready_reply(Some(error_frame(Some(rid), &RequestError::Store(e)))),
    };
    Box::pin(async move {
        let reply = match pending.await {
            Ok(EnqueueOutcome::StaleDevices) => Err(send_to_all::stale(shared, to, from).await),
            Ok(outcome) => accepted(shared, id, outcome),
            Err(e) => Err(RequestError::Store(e)),
        };
        Some(match reply {
            Ok(body) => ServerFrame::reply(rid, body),
            Err(e) => error_frame(Some(rid), &e),
        })
    })
}

fn accepted(
    shared: &Shared,
    id: parley_protocol::ids::MessageId,
    outcome: EnqueueOutcome,
) -> Result<ServerBody, RequestError> {
    let seq = match outcome {
        EnqueueOutcome::Accepted { seq, from_business } => {
            shared.metrics.envelopes_accepted.inc();
            if from_business {
                shared.metrics.business_sends.inc("accepted");
            }
            // The recipient's connection, if any, already has it: the writer handed it
            // to `shared.presence` right after the commit.
            seq
        }
        EnqueueOutcome::Duplicate(seq) => {
            shared.metrics.envelopes_duplicate.inc();
            seq
        }
        EnqueueOutcome::UnknownRecipient => return Err(RequestError::NotFound("recipient")),
        refused => {
            if let Some(label) = business_outcome_label(refused) {
                shared.metrics.business_sends.inc(label);
            }
            return Err(refusal_error(refused));
        }
    };
    Ok(ServerBody::Accepted(Accepted { id, seq }))
}

/// The `parley_business_sends_total` label of a refused business send.
fn business_outcome_label(outcome: EnqueueOutcome) -> Option<&'static str> {
    match outcome {
        EnqueueOutcome::Refused => Some("refused"),
        EnqueueOutcome::Suspended => Some("suspended"),
        EnqueueOutcome::CategoryNotAllowed => Some("category_not_allowed"),
        EnqueueOutcome::RateLimited(_) => Some("rate_limited"),
        EnqueueOutcome::ReachExhausted(_) => Some("reach_exhausted"),
        _ => None,
    }
}

/// The error a refused send answers with.
fn refusal_error(outcome: EnqueueOutcome) -> RequestError {
    let ms = std::time::Duration::from_millis;
    match outcome {
        EnqueueOutcome::Suspended => RequestError::Suspended,
        EnqueueOutcome::CategoryNotAllowed => RequestError::CategoryNotAllowed,
        EnqueueOutcome::NotABusiness => RequestError::NotABusiness,
        EnqueueOutcome::RateLimited(retry) => RequestError::RateLimited {
            what: "business messages per second",
            retry_after: ms(retry),
        },
        EnqueueOutcome::ReachExhausted(retry) => RequestError::ReachExhausted {
            retry_after: ms(retry),
        },
        EnqueueOutcome::UnknownRecipient => RequestError::NotFound("recipient"),
        EnqueueOutcome::IdReused => RequestError::IdReused,
        EnqueueOutcome::StaleDevices => RequestError::StaleDevices(Vec::new()),
        EnqueueOutcome::Refused
        | EnqueueOutcome::Blocked
        | EnqueueOutcome::Accepted { .. }
        | EnqueueOutcome::Duplicate(_) => RequestError::Refused,
    }
}

async fn fetch_bundle(
    shared: &Shared,
    address: DeviceAddress,
    fetch: FetchBundle,
) -> Result<ServerBody, RequestError> {
    let limited = |retry: crate::rate_limit::RetryAfter| RequestError::RateLimited {
        what: "prekey bundle fetches",
        retry_after: retry.0,
    };
    shared
        .limiters
        .bundle_requester
        .take(&*shared.store, &address.account, 1)
        .await
        .map_err(limited)?;
    shared
        .limiters
        .bundle_target
        .take(&*shared.store, &(address.account, fetch.address), 1)
        .await
        .map_err(limited)?;
    match shared.store.take_bundle(fetch.address).await? {
        BundleOutcome::Found { bundle, remaining } => {
            if remaining < shared.config.prekeys_low_threshold {
                shared.presence.prekeys_low(&fetch.address, remaining);
            }
            Ok(ServerBody::Bundle(bundle))
        }
        BundleOutcome::NotFound => Err(RequestError::NotFound("device")),
    }
}

async fn upload_prekeys(
    shared: &Shared,
    address: DeviceAddress,
    upload: UploadPrekeys,
) -> Result<ServerBody, RequestError> {
    let owner = address.account;
    if let Some(spk) = &upload.signed_prekey {
        spk.verify(&owner)
            .map_err(|_| RequestError::InvalidSignature("signed prekey"))?;
    }
    if let Some(kem) = &upload.kem_prekey {
        check_kem_prekey(kem, &owner)?;
    }
    let max = shared.config.max_one_time_prekeys;
    let outcome = shared
        .store
        .upload_prekeys(
            address,
            PrekeyUpload {
                signed_prekey: upload.signed_prekey,
                kem_prekey: upload.kem_prekey,
                one_time_prekeys: upload.one_time_prekeys,
                max_one_time_prekeys: max,
            },
        )
        .await?;
    match outcome {
        UploadOutcome::Stored { one_time_prekeys } => {
            Ok(ServerBody::PrekeysStored(PrekeysStored {
                one_time_prekeys,
            }))
        }
        UploadOutcome::TooMany => Err(RequestError::TooManyPrekeys(max)),
        UploadOutcome::UnknownDevice => Err(RequestError::NotFound("device")),
    }
}

/// Hands an `ack` to the store's writer: deletes what the client acknowledged, never
/// beyond what this connection delivered (`through` is already clamped to that). No
/// reply unless it fails.
async fn submit_ack<'a>(
    shared: &'a Shared,
    address: DeviceAddress,
    rid: RequestId,
    through: Seq,
) -> PendingReply<'a> {
    if through.0 == 0 {
        return ready_reply(None);
    }
    let pending = match shared.store.submit_ack_through(address, through).await {
        Ok(pending) => pending,
        Err(e) => return ready_reply(Some(error_frame(Some(rid), &RequestError::Store(e)))),
    };
    Box::pin(async move {
        match pending.await {
            Ok(deleted) => {
                shared.metrics.envelopes_acknowledged.add(deleted);
                None
            }
            Err(e) => Some(error_frame(Some(rid), &RequestError::Store(e))),
        }
    })
}

fn prekeys_low(remaining: u32) -> ServerFrame {
    ServerFrame::push(ServerBody::PrekeysLow(PrekeysLow { remaining }))
}

fn ending_for(error: SendError) -> Ending {
    match error {
        SendError::Stalled => Ending::Closed(CloseCode::SlowConsumer),
        SendError::Broken(_) => Ending::ClientLeft,
    }
}

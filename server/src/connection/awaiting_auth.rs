//! The first state of a connection: the server has sent `hello` with a fresh nonce and
//! waits, until the auth deadline, for `auth` or `register`.
//!
//! * `auth` succeeds only if the signature over the auth transcript (server id, this
//!   connection's nonce, device) verifies and the device exists. Every failure is the
//!   same `auth_failed` and closes the connection, so a prober learns nothing, and the
//!   nonce dies with the connection: a captured signature cannot be replayed. Failures
//!   are counted per source address; past `--auth-failures-per-ip-per-hour`, `auth` from
//!   that address is answered `rate_limited` without checking anything.
//! * `join_link` (a new device joining a linking code, `linking`) waits for the existing
//!   device's sealed answer with the auth deadline suspended, then restarts it.
//! * `register` is limited per source address, verifies the identity, the prekey
//!   signatures and a proof of possession over the register transcript, requires a KEM
//!   prekey that is an ML-KEM-768 encapsulation key (an account without one could never
//!   be written to), then creates the account. A refused registration (taken handle...) may be retried on the same
//!   connection.

use std::net::SocketAddr;

use parley_protocol::auth::{auth_transcript, register_transcript};
use parley_protocol::ids::{DeviceAddress, Nonce, RequestId};
use parley_protocol::signature;
use parley_protocol::wire::client::{Auth, ClientBody, JoinLink, Register};
use parley_protocol::wire::server::{Hello, LinkSealed, ServerBody};
use parley_protocol::wire::{CloseCode, ServerFrame};
use rand_core::{OsRng, RngCore};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::linking;
use super::prekey_checks::check_kem_prekey;
use super::transport::{Incoming, Transport};
use super::{close_code_for, request_error_for, Ending};
use crate::context::Shared;
use crate::error::{error_frame, RequestError};
use crate::store::{NewAccount, RegisterOutcome, StoreError};

/// An authenticated device, ready for the next state.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// The device this connection acts for.
    pub address: DeviceAddress,
    /// Its one-time prekeys left on the server.
    pub one_time_prekeys: u32,
}

/// Runs the challenge until the client authenticates (or the connection must end):
/// the session and the `rid` of the request to answer `authenticated`, which the next
/// state sends once the connection is the device's ([`authenticated::run`]).
///
/// [`authenticated::run`]: super::authenticated::run
pub async fn run(
    transport: &mut Transport,
    shared: &Shared,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(Session, RequestId), Ending> {
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let nonce = Nonce(nonce);
    let hello = ServerFrame::push(ServerBody::Hello(Hello {
        server_id: shared.server_id,
        nonce,
        max_envelope_bytes: u32::try_from(shared.config.max_envelope_bytes).unwrap_or(u32::MAX),
        auth_timeout_ms: u32::try_from(shared.config.auth_timeout.as_millis()).unwrap_or(u32::MAX),
    }));
    if transport.send(&hello).await.is_err() {
        return Err(Ending::ClientLeft);
    }
    let mut deadline = Instant::now() + shared.config.auth_timeout;
    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(Ending::Closed(CloseCode::GoingAway)),
            _ = sleep_until(deadline) => return Err(Ending::Closed(CloseCode::AuthTimeout)),
            incoming = transport.recv() => match incoming {
                Incoming::Frame(frame) => frame,
                Incoming::Heartbeat => continue,
                Incoming::Gone => return Err(Ending::ClientLeft),
                Incoming::Violation(code) => return Err(Ending::Closed(code)),
                Incoming::Malformed { error, rid } => {
                    tracing::debug!(%peer, %error, "malformed frame before auth");
                    let _ = transport.send(&error_frame(rid, &request_error_for(&error))).await;
                    return Err(Ending::Closed(close_code_for(&error)));
                }
            },
        };
        let rid = frame.rid;
        let outcome = match frame.body {
            ClientBody::Auth(auth) => authenticate(shared, &nonce, peer, auth).await,
            ClientBody::Register(register) => create_account(shared, &nonce, peer, register).await,
            ClientBody::JoinLink(join) => {
                wait_for_link(transport, shared, peer, shutdown, rid, join).await?;
                // The new device logs in next, on this connection and its nonce.
                deadline = Instant::now() + shared.config.auth_timeout;
                continue;
            }
            _ => Err(RequestError::NotAuthenticated),
        };
        match outcome {
            Ok(session) => {
                tracing::debug!(%peer, device = %session.address, "authenticated");
                return Ok((session, rid));
            }
            Err(e) => {
                if transport.send(&error_frame(Some(rid), &e)).await.is_err() {
                    return Err(Ending::ClientLeft);
                }
                match e {
                    RequestError::AuthFailed => {
                        tracing::debug!(%peer, "authentication failed");
                        return Err(Ending::Closed(CloseCode::AuthFailed));
                    }
                    RequestError::Store(StoreError::Unavailable) => {
                        return Err(Ending::Closed(CloseCode::GoingAway))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Serves `join_link`: joins the rendezvous and waits (the auth deadline suspended, the
/// link lifetime at most) for the sealed answer, then replies `link_sealed`, or
/// `link_unavailable` when none comes. Frames the client sends meanwhile are answered
/// `not_authenticated`.
async fn wait_for_link(
    transport: &mut Transport,
    shared: &Shared,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    rid: RequestId,
    join: JoinLink,
) -> Result<(), Ending> {
    let reply = match linking::join(shared, peer, join).await {
        Err(e) => error_frame(Some(rid), &e),
        Ok(mut sealed) => {
            let give_up = Instant::now() + shared.config.link_lifetime;
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Err(Ending::Closed(CloseCode::GoingAway)),
                    answer = &mut sealed => break match answer {
                        Ok(sealed) => ServerFrame::reply(rid, ServerBody::LinkSealed(LinkSealed { sealed })),
                        Err(_) => error_frame(Some(rid), &RequestError::LinkUnavailable(linking::NO_DEVICE_WAITING)),
                    },
                    () = sleep_until(give_up) => {
                        break error_frame(Some(rid), &RequestError::LinkUnavailable(linking::NO_DEVICE_WAITING));
                    }
                    incoming = transport.recv() => match incoming {
                        Incoming::Frame(other) => {
                            let refusal = error_frame(Some(other.rid), &RequestError::NotAuthenticated);
                            if transport.send(&refusal).await.is_err() {
                                return Err(Ending::ClientLeft);
                            }
                        }
                        Incoming::Heartbeat => {}
                        Incoming::Gone => return Err(Ending::ClientLeft),
                        Incoming::Violation(code) => return Err(Ending::Closed(code)),
                        Incoming::Malformed { error, rid } => {
                            let _ = transport.send(&error_frame(rid, &request_error_for(&error))).await;
                            return Err(Ending::Closed(close_code_for(&error)));
                        }
                    },
                }
            }
        }
    };
    transport.send(&reply).await.map_err(|_| Ending::ClientLeft)
}

/// Checks an `auth` answer. Every failure is the same [`RequestError::AuthFailed`], and
/// counts against the source address; an address past its failure limit is refused with
/// [`RequestError::RateLimited`] before any work.
async fn authenticate(
    shared: &Shared,
    nonce: &Nonce,
    peer: SocketAddr,
    auth: Auth,
) -> Result<Session, RequestError> {
    let failures = &shared.limiters.auth_failures;
    failures
        .check(&*shared.store, &peer.ip())
        .await
        .map_err(|retry| RequestError::RateLimited {
            what: "failed authentications from this address",
            retry_after: retry.0,
        })?;
    let outcome = verify_auth(shared, nonce, auth).await;
    if matches!(outcome, Err(RequestError::AuthFailed)) {
        let _ = failures.take(&*shared.store, &peer.ip(), 1).await;
    }
    outcome
}

async fn verify_auth(shared: &Shared, nonce: &Nonce, auth: Auth) -> Result<Session, RequestError> {
    let transcript = auth_transcript(&shared.server_id, nonce, &auth.address);
    let verified = signature::verify(&auth.address.account, &transcript, &auth.signature);
    let record = shared.store.auth_record(auth.address).await?;
    match (verified, record) {
        (Ok(()), Some(record)) => Ok(Session {
            address: auth.address,
            one_time_prekeys: record.one_time_prekeys,
        }),
        _ => Err(RequestError::AuthFailed),
    }
}

/// Checks and stores a registration.
async fn create_account(
    shared: &Shared,
    nonce: &Nonce,
    peer: SocketAddr,
    r: Register,
) -> Result<Session, RequestError> {
    shared
        .limiters
        .registrations
        .take(&*shared.store, &peer.ip(), 1)
        .await
        .map_err(|retry| RequestError::RateLimited {
            what: "registrations from this address",
            retry_after: retry.0,
        })?;
    let account = r.identity.account;
    r.identity
        .verify()
        .map_err(|_| RequestError::InvalidSignature("identity DH key"))?;
    let transcript = register_transcript(&shared.server_id, nonce, &r.identity, r.handle.as_ref());
    signature::verify(&account, &transcript, &r.signature)
        .map_err(|_| RequestError::InvalidSignature("registration"))?;
    r.signed_prekey
        .verify(&account)
        .map_err(|_| RequestError::InvalidSignature("signed prekey"))?;
    let Some(kem) = &r.kem_prekey else {
        return Err(RequestError::InvalidPrekey(
            "a registration needs a KEM prekey: clients refuse a bundle without one".into(),
        ));
    };
    check_kem_prekey(kem, &account)?;
    let max = shared.config.max_one_time_prekeys;
    if r.one_time_prekeys.len() > usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(RequestError::TooManyPrekeys(max));
    }
    let outcome = shared
        .store
        .register(NewAccount {
            identity: r.identity,
            handle: r.handle,
            signed_prekey: r.signed_prekey,
            kem_prekey: r.kem_prekey,
            one_time_prekeys: r.one_time_prekeys,
            now_ms: shared.now_ms(),
        })
        .await?;
    match outcome {
        RegisterOutcome::Created {
            address,
            one_time_prekeys,
        } => {
            tracing::info!(device = %address, "account registered");
            Ok(Session {
                address,
                one_time_prekeys,
            })
        }
        RegisterOutcome::AccountExists => Err(RequestError::AccountExists),
        RegisterOutcome::HandleTaken => Err(RequestError::HandleTaken),
        RegisterOutcome::NameReserved => Err(RequestError::NameReserved),
    }
}

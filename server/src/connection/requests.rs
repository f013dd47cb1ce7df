//! The requests an authenticated connection serves alone ([`Call::Request`]), with the
//! server's store, limiters and presence: everything but the pipelined `send`,
//! `send_to_all` and `ack`. The connection's core decides when each runs; these bodies
//! make its store and limiter calls.
//!
//! [`Call::Request`]: super::core::Call::Request

use parley_protocol::ids::DeviceAddress;
use parley_protocol::wire::client::{ClientBody, FetchBundle, UploadPrekeys};
use parley_protocol::wire::server::{AccountDeleted, PrekeysStored, Resolved, ServerBody};

use super::business;
use super::devices;
use super::linking::LinkState;
use super::prekey_checks::check_kem_prekey;
use crate::context::Shared;
use crate::error::RequestError;
use crate::store::{BundleOutcome, PrekeyUpload, UploadOutcome};

/// Serves a request that runs alone ([`Call::Request`]): everything but `send`,
/// `send_to_all` and `ack`, which the core pipelines.
pub async fn serve(
    shared: &Shared,
    address: DeviceAddress,
    link: &mut LinkState,
    body: ClientBody,
) -> Result<ServerBody, RequestError> {
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
        ClientBody::OpenLink(open) => link.open(shared, address.account, open).await?,
        ClientBody::SealLink(seal) => link.seal(seal).await?,
        ClientBody::DeleteAccount(_) => {
            shared.store.delete_account(address.account).await?;
            ServerBody::AccountDeleted(AccountDeleted {})
        }
        ClientBody::Send(_) | ClientBody::SendToAll(_) | ClientBody::Ack(_) => {
            return Err(RequestError::Malformed(
                "pipelined by the connection's core".into(),
            ))
        }
    };
    Ok(reply)
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

//! The requests of an authenticated connection about businesses and consent: consent
//! grants and revocations, blocks, reports, business lookups and display names. Each
//! verifies what it can without the store (signatures, who signed, times) and leaves
//! the rest (nonces, order, business standing) to one store transaction.

use parley_protocol::business::ConsentError;
use parley_protocol::ids::{AccountId, DeviceAddress};
use parley_protocol::limits::MAX_DISPLAY_NAME_BYTES;
use parley_protocol::wire::client::{GrantConsent, RevokeConsent, SetDisplayName};
use parley_protocol::wire::server::{Business, ConsentUpdated, Done, ServerBody};

use crate::context::Shared;
use crate::error::RequestError;
use crate::store::{ConsentChange, ConsentOutcome, ReportOutcome};

/// `grant_consent` and `revoke_consent`.
pub async fn change_consent(
    shared: &Shared,
    device: DeviceAddress,
    change: ConsentChange,
) -> Result<ServerBody, RequestError> {
    let now = shared.now_ms();
    let user = device.account;
    let (signer, business, changed, revoked, checked) = match &change {
        ConsentChange::Grant(g) => (
            g.grant.user,
            g.grant.business,
            g.grant.categories,
            false,
            g.verify(now),
        ),
        ConsentChange::Revoke(r) => (
            r.revocation.user,
            r.revocation.business,
            r.revocation.categories,
            true,
            r.verify(now),
        ),
    };
    if signer != user {
        return Err(RequestError::InvalidConsent("signed by another account"));
    }
    checked.map_err(|e| RequestError::InvalidConsent(consent_reason(e)))?;
    match shared.store.change_consent(user, change, now).await? {
        ConsentOutcome::Updated { categories, purged } => {
            shared.metrics.envelopes_purged.add(u64::from(purged));
            // Hand-offs committed before a revocation (the store purged them) must not
            // reach this connection after the reply.
            shared
                .presence
                .consent_changed(&device, business, changed, revoked);
            Ok(ServerBody::ConsentUpdated(ConsentUpdated {
                business,
                categories,
                purged,
            }))
        }
        ConsentOutcome::Invalid(reason) => Err(RequestError::InvalidConsent(reason)),
    }
}

/// The `grant_consent` request as a store change.
pub fn grant(request: GrantConsent) -> ConsentChange {
    ConsentChange::Grant(request.grant)
}

/// The `revoke_consent` request as a store change.
pub fn revoke(request: RevokeConsent) -> ConsentChange {
    ConsentChange::Revoke(request.revocation)
}

fn consent_reason(e: ConsentError) -> &'static str {
    match e {
        ConsentError::BadSignature => "the signature does not verify",
        ConsentError::NoCategories => "no category",
        ConsentError::SelfConsent => "an account cannot consent to itself",
        ConsentError::BadTimes => "dated in the future, or expiring before it is issued",
        ConsentError::Expired => "expired",
    }
}

/// `block` and `unblock`.
pub async fn set_blocked(
    shared: &Shared,
    user: AccountId,
    other: AccountId,
    block: bool,
) -> Result<ServerBody, RequestError> {
    shared
        .store
        .set_blocked(user, other, block, shared.now_ms())
        .await?;
    Ok(ServerBody::Done(Done {}))
}

/// `report`.
pub async fn report(
    shared: &Shared,
    reporter: AccountId,
    account: AccountId,
) -> Result<ServerBody, RequestError> {
    if reporter == account {
        return Err(RequestError::Malformed(
            "an account cannot report itself".into(),
        ));
    }
    let outcome = shared
        .store
        .report(reporter, account, shared.report_policy(), shared.now_ms())
        .await?;
    shared.metrics.reports.inc();
    if outcome == ReportOutcome::Suspended {
        shared.metrics.business_suspensions.inc();
        tracing::warn!(business = %account, "business suspended after reports");
    }
    Ok(ServerBody::Done(Done {}))
}

/// `fetch_business`.
pub async fn fetch(shared: &Shared, account: AccountId) -> Result<ServerBody, RequestError> {
    let record = shared.store.business(account).await?;
    Ok(ServerBody::Business(Business {
        authority: shared.authority,
        suspended: record.as_ref().is_some_and(|r| r.suspended),
        certificate: record.and_then(|r| r.certificate),
    }))
}

/// `set_display_name`.
pub async fn set_display_name(
    shared: &Shared,
    account: AccountId,
    request: SetDisplayName,
) -> Result<ServerBody, RequestError> {
    let name = request
        .display_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(name) = &name {
        if name.len() > MAX_DISPLAY_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(RequestError::Malformed(format!(
                "a display name has at most {MAX_DISPLAY_NAME_BYTES} bytes and no control characters"
            )));
        }
    }
    if !shared.store.set_display_name(account, name).await? {
        return Err(RequestError::NameReserved);
    }
    Ok(ServerBody::Done(Done {}))
}

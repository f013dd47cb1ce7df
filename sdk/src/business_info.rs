//! What the person's client concludes about an account from the relay's `business`
//! reply: the authority key checked against the pin, then the certificate checked
//! locally. The relay's word alone never earns a badge.

use parley_protocol::business::{
    AuthorityKey, BusinessCertificate, CertificateError, SignedCertificate,
};
use parley_protocol::ids::{AccountId, Handle};

/// What a client knows about an account that may be a business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessInfo {
    /// The account.
    pub account: AccountId,
    /// Its handle, when asked by handle.
    pub handle: Option<Handle>,
    /// Fingerprint of the verification authority the certificate was checked against.
    pub authority_fingerprint: String,
    /// The authority key was pinned by this very request (first contact): compare the
    /// fingerprint with the one the operator publishes.
    pub pinned_now: bool,
    /// The relay says the business is suspended.
    pub suspended: bool,
    /// The certificate's verdict.
    pub status: CertificateStatus,
}

/// Whether an account is a verified business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateStatus {
    /// A valid, unexpired certificate for this account under the pinned authority.
    Verified(BusinessCertificate),
    /// The relay serves no certificate: not a business, or its certificate was revoked.
    NotABusiness,
    /// The relay serves a certificate that does not check out.
    Invalid {
        /// The certificate as served.
        certificate: BusinessCertificate,
        /// Why it earns no badge.
        reason: CertificateError,
    },
}

impl BusinessInfo {
    /// The verified certificate, if any.
    pub fn verified(&self) -> Option<&BusinessCertificate> {
        match &self.status {
            CertificateStatus::Verified(c) => Some(c),
            _ => None,
        }
    }
}

/// The verdict on `certificate` (as served by the relay for `account`) under the
/// `authority` the client trusts, at `now_ms`.
pub fn check_certificate(
    certificate: Option<&SignedCertificate>,
    authority: &AuthorityKey,
    account: &AccountId,
    now_ms: u64,
) -> CertificateStatus {
    match certificate {
        None => CertificateStatus::NotABusiness,
        Some(signed) => match signed.verify(authority, account, now_ms) {
            Ok(()) => CertificateStatus::Verified(signed.certificate.clone()),
            Err(reason) => CertificateStatus::Invalid {
                certificate: signed.certificate.clone(),
                reason,
            },
        },
    }
}

/// The verified certificate of `account` from the local cache alone (no network), under
/// the pinned or `configured` authority; `None` when unknown, not a business, invalid,
/// or without a trusted authority key.
pub fn cached_verdict(
    store: &crate::store::ClientStore,
    configured: Option<&AuthorityKey>,
    account: &AccountId,
    now_ms: u64,
) -> Result<Option<BusinessCertificate>, crate::SdkError> {
    let authority = match configured {
        Some(key) => Some(*key),
        None => store.pinned_authority()?,
    };
    let (Some(authority), Some(cached)) = (authority, store.cached_business(account)?) else {
        return Ok(None);
    };
    Ok(
        match check_certificate(cached.certificate.as_ref(), &authority, account, now_ms) {
            CertificateStatus::Verified(c) => Some(c),
            _ => None,
        },
    )
}

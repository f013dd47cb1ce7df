//! The operator's business commands, as every store runs them (`parley-server admin
//! verify-business`, `revoke-business`, `suspend`, `set-tier`, `list-businesses`): what
//! they take and return, their errors, and the rules they share (a certificate is issued
//! with the next serial and refused when its display name is confusable with another
//! verified business's; certificates are stored as MessagePack). Each store has its own
//! SQL for them (`sqlite/business_admin.rs`, `postgres/admin.rs`).

use parley_protocol::business::{
    confusable, BusinessCertificate, CategorySet, CertificateError, SignedCertificate,
};
use parley_protocol::ids::AccountId;

use super::values::corrupt;
use super::StoreError;
use crate::authority::Authority;

/// An admin command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No account holds the handle.
    #[error("no account has the handle @{0}")]
    UnknownHandle(String),
    /// The account is not a business.
    #[error("@{0} is not a verified business (use `admin verify-business` first)")]
    NotABusiness(String),
    /// The certificate would be invalid.
    #[error("invalid certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The display name is confusable with another business's.
    #[error("the display name {0:?} is confusable with the verified business {1:?}")]
    Confusable(String, String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `admin verify-business` certifies.
#[derive(Clone, Debug)]
pub struct Verification {
    /// Registered legal name.
    pub legal_name: String,
    /// Name shown in chats.
    pub display_name: String,
    /// Domain the business proved control of.
    pub domain: String,
    /// Categories it may send in.
    pub categories: CategorySet,
    /// Validity from now, in ms.
    pub valid_for_ms: u64,
}

impl Verification {
    /// The skeleton of the display name: a verified business whose display name has the
    /// same skeleton makes [`Verification::certify`] refuse, and the store keeps it to
    /// find confusable names.
    pub fn name_skeleton(&self) -> String {
        confusable::skeleton(&self.display_name)
    }

    /// Signs the certificate of `account` with serial `serial`, valid from `now_ms`,
    /// unless `clash` (another verified business whose display name has the same
    /// skeleton, as the store found it) makes the name confusable.
    pub(crate) fn certify(
        self,
        authority: &Authority,
        account: AccountId,
        serial: u64,
        clash: Option<String>,
        now_ms: u64,
    ) -> Result<IssuedCertificate, AdminError> {
        if let Some(other) = clash {
            return Err(AdminError::Confusable(self.display_name, other));
        }
        let skeleton = self.name_skeleton();
        let signed = BusinessCertificate {
            account,
            serial,
            legal_name: self.legal_name,
            display_name: self.display_name,
            domain: self.domain.to_ascii_lowercase(),
            categories: self.categories,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.valid_for_ms),
        }
        .sign(authority.signing_key())?;
        let encoded = rmp_serde::to_vec_named(&signed)
            .map_err(|e| StoreError::Database(format!("encoding the certificate: {e}")))?;
        Ok(IssuedCertificate {
            signed,
            encoded,
            skeleton,
        })
    }
}

/// A certificate [`Verification::certify`] signed, and what the store keeps of it.
#[derive(Debug)]
pub(crate) struct IssuedCertificate {
    /// The certificate.
    pub signed: SignedCertificate,
    /// It, as stored.
    pub encoded: Vec<u8>,
    /// The skeleton of its display name.
    pub skeleton: String,
}

/// A stored certificate.
pub(crate) fn decode_certificate(bytes: &[u8]) -> Result<SignedCertificate, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|_| corrupt("businesses.certificate"))
}

/// One business, for `admin list-businesses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessListing {
    /// The account's handle, if it has one.
    pub handle: Option<String>,
    /// The current (or last) certificate.
    pub certificate: SignedCertificate,
    /// When the certificate was revoked, if it was.
    pub revoked_at_ms: Option<u64>,
    /// Reach tier.
    pub tier: u32,
    /// When and why it was suspended, if it is.
    pub suspended: Option<(u64, String)>,
    /// Reports counted since its standing was last restored.
    pub reports: u64,
}

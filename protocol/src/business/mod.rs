//! Verified business accounts and the consent that lets them write to people.
//!
//! * [`category`]: the message categories a business send carries, and sets of them.
//! * [`certificate`]: the verification authority's signed business certificate.
//! * [`consent`]: a person's signed consent grant to a business, and its revocation.
//! * [`confusable`]: the name skeleton that keeps unverified accounts from looking like
//!   verified ones.
//!
//! Everything here is checked twice: by the relay (which enforces consent and limits on
//! metadata alone) and by clients (which verify certificates against the authority key
//! they pinned, and drop business messages they never consented to).

pub mod category;
pub mod certificate;
pub mod confusable;
pub mod consent;

pub use category::{Category, CategorySet};
pub use certificate::{AuthorityKey, BusinessCertificate, CertificateError, SignedCertificate};
pub use consent::{
    ConsentError, ConsentGrant, ConsentNonce, ConsentRecord, ConsentRevocation, SignedGrant,
    SignedRevocation,
};

//! What the store takes and returns for business accounts, consent, blocks and reports
//! (the rules of a send are in `policy.rs`; the SQL in each store).

use parley_protocol::business::{CategorySet, SignedCertificate, SignedGrant, SignedRevocation};

/// A consent grant or revocation to store.
#[derive(Clone, Debug)]
pub enum ConsentChange {
    /// Add categories.
    Grant(SignedGrant),
    /// Withdraw categories and purge queued envelopes in them.
    Revoke(SignedRevocation),
}

/// What storing a consent change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Stored: the categories now in force, and envelopes purged by a revocation.
    Updated {
        /// Categories in force for the pair.
        categories: CategorySet,
        /// Queued envelopes deleted.
        purged: u32,
    },
    /// Refused (replayed nonce, older than the latest revocation, or not a business).
    Invalid(&'static str),
}

/// The relay's view of an account as a business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessRecord {
    /// The current certificate, `None` if revoked (or never issued).
    pub certificate: Option<SignedCertificate>,
    /// Whether the business is suspended.
    pub suspended: bool,
}

/// Configuration for automatic suspension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportPolicy {
    /// Distinct reporters within the window that suspend a business.
    pub suspend_after: u32,
    /// The window, in ms.
    pub window_ms: u64,
}

/// What a report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Counted (or already counted from this reporter).
    Recorded,
    /// Counted, and it suspended the business.
    Suspended,
}

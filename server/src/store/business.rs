//! What the store takes and returns for business accounts, consent, blocks and reports,
//! and the rules about them that every store keeps: which consent changes are stored,
//! which names are reserved, when reports suspend a business, what the business sweep
//! deletes. Each store reads the facts with its SQL and asks these functions (the rules of
//! a send are in `policy.rs`).

use parley_protocol::business::{
    confusable, CategorySet, ConsentNonce, ConsentRecord, SignedCertificate, SignedGrant,
    SignedRevocation,
};

use super::policy::REACH_WINDOW_MS;

/// A consent grant or revocation to store.
#[derive(Clone, Debug)]
pub enum ConsentChange {
    /// Add categories.
    Grant(SignedGrant),
    /// Withdraw categories and purge queued envelopes in them.
    Revoke(SignedRevocation),
}

impl ConsentChange {
    /// The record kept in the consent log.
    pub fn record(&self) -> ConsentRecord {
        match self {
            ConsentChange::Grant(g) => ConsentRecord::Grant(g.clone()),
            ConsentChange::Revoke(r) => ConsentRecord::Revocation(r.clone()),
        }
    }

    /// Its single-use nonce.
    pub fn nonce(&self) -> ConsentNonce {
        match self {
            ConsentChange::Grant(g) => g.grant.nonce,
            ConsentChange::Revoke(r) => r.revocation.nonce,
        }
    }

    /// Whether it withdraws categories.
    pub fn is_revocation(&self) -> bool {
        matches!(self, ConsentChange::Revoke(_))
    }
}

/// What a store reads, in the transaction that would store a consent change, before
/// [`judge_consent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConsentFacts {
    /// The user already used the change's nonce.
    pub replayed: bool,
    /// The business holds a certificate that is neither revoked nor expired.
    pub verified: bool,
    /// The account is (or was) a business at all.
    pub is_business: bool,
    /// When the user's latest revocation for this business was issued, if any.
    pub latest_revocation_ms: Option<u64>,
}

/// Whether `change` may be stored, given its facts; the refusal's reason if not. A
/// revocation may name a business whose certificate lapsed, a grant may not; a grant
/// issued no later than a stored revocation is stale.
pub(crate) fn judge_consent(
    change: &ConsentChange,
    facts: ConsentFacts,
) -> Result<(), &'static str> {
    if facts.replayed {
        return Err("this consent record was already used");
    }
    if !(facts.verified || (change.is_revocation() && facts.is_business)) {
        return Err("not a verified business");
    }
    if let ConsentChange::Grant(g) = change {
        if facts
            .latest_revocation_ms
            .is_some_and(|at| g.grant.issued_at_ms <= at)
        {
            return Err("this grant is older than a later revocation");
        }
    }
    Ok(())
}

/// Whether a name (a handle or a display name) is reserved, as far as the name alone
/// tells: [`NameCheck::Skeleton`] asks the store whether another account's verified
/// business name has that skeleton.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NameCheck {
    /// It imitates the verified badge.
    Reserved,
    /// Nothing of it can be confused with anything.
    Free,
    /// Reserved if another verified business's display name has this skeleton.
    Skeleton(String),
}

impl NameCheck {
    /// The check for `name`.
    pub(crate) fn of(name: &str) -> NameCheck {
        if confusable::has_badge_lookalike(name) {
            return NameCheck::Reserved;
        }
        let skeleton = confusable::skeleton(name);
        if skeleton.is_empty() {
            NameCheck::Free
        } else {
            NameCheck::Skeleton(skeleton)
        }
    }
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

impl ReportPolicy {
    /// Reports at or after this time count toward a suspension at `now_ms`: those within
    /// the window, and none from before the business's standing was last restored.
    pub(crate) fn counted_since(&self, standing_since_ms: u64, now_ms: u64) -> u64 {
        standing_since_ms.max(now_ms.saturating_sub(self.window_ms))
    }

    /// Whether `reports` counted reports suspend the business.
    pub(crate) fn suspends(&self, reports: u64) -> bool {
        reports >= u64::from(self.suspend_after)
    }
}

/// The windows within which business bookkeeping counts: past them its rows are swept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusinessWindows {
    /// `--care-window`, in ms.
    pub care_window_ms: u64,
    /// `--report-window`, in ms ([`ReportPolicy::window_ms`]).
    pub report_window_ms: u64,
}

/// The cutoffs of a business sweep at `now_ms`: reach entries counted at or before the
/// first, care windows last opened at or before the second, consents expiring at or
/// before the third, and reports made before the fourth (or before their account's
/// standing was restored) no longer count; a suspended business's reports are kept for
/// the operator's review.
pub(crate) fn business_sweep_cutoffs(now_ms: u64, windows: BusinessWindows) -> [u64; 4] {
    [
        now_ms.saturating_sub(REACH_WINDOW_MS),
        now_ms.saturating_sub(windows.care_window_ms),
        now_ms,
        now_ms.saturating_sub(windows.report_window_ms),
    ]
}

/// What a report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Counted (or already counted from this reporter).
    Recorded,
    /// Counted, and it suspended the business.
    Suspended,
}

//! Consent: a person's signed permission for one business to write to them in some
//! categories, and its signed revocation.
//!
//! ```text
//! grant:      "parley/v1/consent-grant" 0x00 ‖ user (32) ‖ business (32) ‖ categories u8
//!               ‖ issued_at_ms u64 ‖ has_expiry u8 ‖ expires_at_ms u64 (0 if none)
//!               ‖ nonce (16)
//! revocation: "parley/v1/consent-revocation" 0x00 ‖ user (32) ‖ business (32)
//!               ‖ categories u8 ‖ issued_at_ms u64 ‖ nonce (16)
//! ```
//!
//! Both are signed by the user's identity key. The relay stores grants and checks them on
//! every business-initiated send; it refuses a grant or revocation whose nonce it has
//! seen (replay), that another account uploads (foreign), that is expired, or that is
//! older than the latest revocation for the same pair. The person's client keeps every
//! record it signed: that ledger can be exported and verified offline.

use serde::{Deserialize, Serialize};

use super::category::CategorySet;
use crate::fixed_bytes::fixed_bytes;
use crate::identity::IdentityKeyPair;
use crate::ids::AccountId;
use crate::limits::MAX_CONSENT_CLOCK_SKEW_MS;
use crate::signature::{self, Signature, SignatureDomain, Transcript};

fixed_bytes!(
    /// Random, single-use: makes every grant and revocation distinct and unreplayable.
    ConsentNonce,
    16
);

/// A person's permission for `business` to send in `categories`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGrant {
    /// The person granting (signer).
    pub user: AccountId,
    /// The business allowed to write.
    pub business: AccountId,
    /// What it may write about; never empty.
    pub categories: CategorySet,
    /// Signing time, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// When the grant lapses by itself, if ever.
    pub expires_at_ms: Option<u64>,
    /// Single-use nonce.
    pub nonce: ConsentNonce,
}

/// A grant and the user's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGrant {
    /// The grant.
    pub grant: ConsentGrant,
    /// By `grant.user`, see the module documentation.
    pub signature: Signature,
}

/// A person withdrawing `categories` (all of them, or some) from `business`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRevocation {
    /// The person revoking (signer).
    pub user: AccountId,
    /// The business losing permission.
    pub business: AccountId,
    /// What it may no longer write about; never empty.
    pub categories: CategorySet,
    /// Signing time, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// Single-use nonce.
    pub nonce: ConsentNonce,
}

/// A revocation and the user's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    /// The revocation.
    pub revocation: ConsentRevocation,
    /// By `revocation.user`, see the module documentation.
    pub signature: Signature,
}

/// One entry of a consent ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentRecord {
    /// Permission given.
    Grant(SignedGrant),
    /// Permission withdrawn.
    Revocation(SignedRevocation),
}

/// Why a grant or revocation is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// The signature is not the named user's.
    #[error("the consent signature does not verify")]
    BadSignature,
    /// It names no category.
    #[error("the consent names no category")]
    NoCategories,
    /// The user and the business are the same account.
    #[error("an account cannot consent to itself")]
    SelfConsent,
    /// Dated too far in the future, or expiring before it was issued.
    #[error("the consent is dated in the future or expires before it is issued")]
    BadTimes,
    /// Past its expiry.
    #[error("the consent grant has expired")]
    Expired,
}

impl ConsentGrant {
    /// The transcript the user signs.
    pub fn transcript(&self) -> Transcript {
        Transcript::new(SignatureDomain::ConsentGrant)
            .fixed(self.user.as_bytes())
            .fixed(self.business.as_bytes())
            .fixed(&[self.categories.bits()])
            .u64(self.issued_at_ms)
            .fixed(&[u8::from(self.expires_at_ms.is_some())])
            .u64(self.expires_at_ms.unwrap_or(0))
            .fixed(self.nonce.as_bytes())
    }

    /// Signs the grant; `identity` must be `self.user`'s.
    pub fn sign(self, identity: &IdentityKeyPair) -> Result<SignedGrant, ConsentError> {
        if identity.account_id() != self.user {
            return Err(ConsentError::BadSignature);
        }
        self.check_shape()?;
        let signature = identity.sign(&self.transcript());
        Ok(SignedGrant {
            grant: self,
            signature,
        })
    }

    fn check_shape(&self) -> Result<(), ConsentError> {
        check_parties(&self.user, &self.business, self.categories)?;
        if self
            .expires_at_ms
            .is_some_and(|expiry| expiry <= self.issued_at_ms)
        {
            return Err(ConsentError::BadTimes);
        }
        Ok(())
    }
}

impl SignedGrant {
    /// Checks shape and signature only (for an offline ledger check).
    pub fn verify_signature(&self) -> Result<(), ConsentError> {
        self.grant.check_shape()?;
        signature::verify(&self.grant.user, &self.grant.transcript(), &self.signature)
            .map_err(|_| ConsentError::BadSignature)
    }

    /// Checks shape, signature and that the grant is in force at `now_ms`.
    pub fn verify(&self, now_ms: u64) -> Result<(), ConsentError> {
        self.verify_signature()?;
        check_not_future(self.grant.issued_at_ms, now_ms)?;
        if self.grant.expires_at_ms.is_some_and(|e| now_ms >= e) {
            return Err(ConsentError::Expired);
        }
        Ok(())
    }
}

impl ConsentRevocation {
    /// The transcript the user signs.
    pub fn transcript(&self) -> Transcript {
        Transcript::new(SignatureDomain::ConsentRevocation)
            .fixed(self.user.as_bytes())
            .fixed(self.business.as_bytes())
            .fixed(&[self.categories.bits()])
            .u64(self.issued_at_ms)
            .fixed(self.nonce.as_bytes())
    }

    /// Signs the revocation; `identity` must be `self.user`'s.
    pub fn sign(self, identity: &IdentityKeyPair) -> Result<SignedRevocation, ConsentError> {
        if identity.account_id() != self.user {
            return Err(ConsentError::BadSignature);
        }
        self.check_shape()?;
        let signature = identity.sign(&self.transcript());
        Ok(SignedRevocation {
            revocation: self,
            signature,
        })
    }

    fn check_shape(&self) -> Result<(), ConsentError> {
        check_parties(&self.user, &self.business, self.categories)
    }
}

impl SignedRevocation {
    /// Checks shape and signature only (for an offline ledger check).
    pub fn verify_signature(&self) -> Result<(), ConsentError> {
        self.revocation.check_shape()?;
        signature::verify(
            &self.revocation.user,
            &self.revocation.transcript(),
            &self.signature,
        )
        .map_err(|_| ConsentError::BadSignature)
    }

    /// Checks shape, signature and that it is not dated in the future at `now_ms`.
    pub fn verify(&self, now_ms: u64) -> Result<(), ConsentError> {
        self.verify_signature()?;
        check_not_future(self.revocation.issued_at_ms, now_ms)
    }
}

impl ConsentRecord {
    /// The person who signed it.
    pub fn user(&self) -> AccountId {
        match self {
            ConsentRecord::Grant(g) => g.grant.user,
            ConsentRecord::Revocation(r) => r.revocation.user,
        }
    }

    /// The business it concerns.
    pub fn business(&self) -> AccountId {
        match self {
            ConsentRecord::Grant(g) => g.grant.business,
            ConsentRecord::Revocation(r) => r.revocation.business,
        }
    }

    /// The categories granted or revoked.
    pub fn categories(&self) -> CategorySet {
        match self {
            ConsentRecord::Grant(g) => g.grant.categories,
            ConsentRecord::Revocation(r) => r.revocation.categories,
        }
    }

    /// When it was signed.
    pub fn issued_at_ms(&self) -> u64 {
        match self {
            ConsentRecord::Grant(g) => g.grant.issued_at_ms,
            ConsentRecord::Revocation(r) => r.revocation.issued_at_ms,
        }
    }

    /// Checks shape and signature, whatever the time.
    pub fn verify_signature(&self) -> Result<(), ConsentError> {
        match self {
            ConsentRecord::Grant(g) => g.verify_signature(),
            ConsentRecord::Revocation(r) => r.verify_signature(),
        }
    }

    /// The record as MessagePack (named fields), for ledgers and messages.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Parses [`ConsentRecord::encode`]'s output; `None` when malformed.
    pub fn decode(bytes: &[u8]) -> Option<ConsentRecord> {
        if bytes.len() > 1024 {
            return None;
        }
        rmp_serde::from_slice(bytes).ok()
    }
}

/// What grants and revocations share: some category, and two different accounts.
fn check_parties(
    user: &AccountId,
    business: &AccountId,
    categories: CategorySet,
) -> Result<(), ConsentError> {
    if categories.is_empty() {
        return Err(ConsentError::NoCategories);
    }
    if user == business {
        return Err(ConsentError::SelfConsent);
    }
    Ok(())
}

fn check_not_future(issued_at_ms: u64, now_ms: u64) -> Result<(), ConsentError> {
    if issued_at_ms > now_ms.saturating_add(MAX_CONSENT_CLOCK_SKEW_MS) {
        return Err(ConsentError::BadTimes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::business::Category;
    use rand_core::OsRng;

    fn grant(user: &IdentityKeyPair) -> ConsentGrant {
        ConsentGrant {
            user: user.account_id(),
            business: AccountId([9; 32]),
            categories: CategorySet::of([Category::SecurityAlert]),
            issued_at_ms: 1_000,
            expires_at_ms: Some(100_000),
            nonce: ConsentNonce([3; 16]),
        }
    }

    #[test]
    fn a_grant_verifies_while_in_force_and_not_when_altered() {
        let user = IdentityKeyPair::generate(&mut OsRng);
        let signed = grant(&user).sign(&user).unwrap();
        assert_eq!(signed.verify(2_000), Ok(()));
        assert_eq!(signed.verify(100_000), Err(ConsentError::Expired));
        let mut widened = signed.clone();
        widened.grant.categories = CategorySet::ALL;
        assert_eq!(widened.verify(2_000), Err(ConsentError::BadSignature));
        let mut moved = signed.clone();
        moved.grant.business = AccountId([8; 32]);
        assert_eq!(moved.verify(2_000), Err(ConsentError::BadSignature));
    }

    #[test]
    fn only_the_user_can_sign_and_future_dates_are_refused() {
        let user = IdentityKeyPair::generate(&mut OsRng);
        let other = IdentityKeyPair::generate(&mut OsRng);
        assert_eq!(grant(&user).sign(&other), Err(ConsentError::BadSignature));
        let mut g = grant(&user);
        g.issued_at_ms = 10_000_000;
        g.expires_at_ms = None;
        let signed = g.sign(&user).unwrap();
        assert_eq!(signed.verify(1_000), Err(ConsentError::BadTimes));
    }

    #[test]
    fn a_grant_signature_does_not_verify_as_a_revocation() {
        let user = IdentityKeyPair::generate(&mut OsRng);
        let g = grant(&user);
        let signed = g.clone().sign(&user).unwrap();
        let forged = SignedRevocation {
            revocation: ConsentRevocation {
                user: g.user,
                business: g.business,
                categories: g.categories,
                issued_at_ms: g.issued_at_ms,
                nonce: g.nonce,
            },
            signature: signed.signature,
        };
        assert_eq!(forged.verify(2_000), Err(ConsentError::BadSignature));
    }

    #[test]
    fn records_round_trip() {
        let user = IdentityKeyPair::generate(&mut OsRng);
        let record = ConsentRecord::Grant(grant(&user).sign(&user).unwrap());
        let back = ConsentRecord::decode(&record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.verify_signature(), Ok(()));
        assert_eq!(ConsentRecord::decode(&[0xc1]), None);
    }
}

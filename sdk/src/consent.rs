//! The consent ledger's meaning: which categories are in force, whether a business
//! message is admitted, and the JSON export that anyone can verify offline.
//!
//! Pure functions over signed records; the records themselves live in
//! [`crate::store::ClientStore`] (`consent_ledger`), and the engine applies
//! [`admits`] to every message from a verified business (the client's double check of
//! what the relay enforces).
//!
//! Export format (`format` = `parley-consent-ledger/1`):
//!
//! ```text
//! { "format": "parley-consent-ledger/1", "exported_at_ms": u64,
//!   "records": [ { "kind": "grant" | "revocation", "user": hex, "business": hex,
//!                  "categories": [str], "issued_at_ms": u64, "expires_at_ms": u64 | null,
//!                  "nonce": hex, "signature": hex,
//!                  "record": hex(ConsentRecord::encode) } ] }
//! ```
//!
//! `record` is authoritative; the other fields are for people, and [`verify_ledger`]
//! checks that they say the same as the signed bytes.

use parley_protocol::business::{Category, CategorySet, ConsentRecord};
use parley_protocol::ids::AccountId;
use serde::{Deserialize, Serialize};

use crate::error::SdkError;

/// How long after the person's last message a business may reply in `conversation`
/// (the relay's default care window; the client checks with its own clock).
pub const CARE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The `format` of an exported ledger.
pub const LEDGER_FORMAT: &str = "parley-consent-ledger/1";

/// The categories `user` has granted `business` and not revoked, at `now_ms`: the union
/// of unexpired grants, minus each category revoked at or after the grant that gave it.
pub fn in_force(
    records: &[ConsentRecord],
    user: &AccountId,
    business: &AccountId,
    now_ms: u64,
) -> CategorySet {
    let pair: Vec<&ConsentRecord> = records
        .iter()
        .filter(|r| &r.user() == user && &r.business() == business)
        .collect();
    let mut granted = CategorySet::EMPTY;
    for category in Category::GRANTABLE {
        let revoked_at = pair
            .iter()
            .filter(|r| matches!(r, ConsentRecord::Revocation(_)))
            .filter(|r| r.categories().contains(category))
            .map(|r| r.issued_at_ms())
            .max();
        let live = pair.iter().any(|r| match r {
            ConsentRecord::Grant(g) => {
                g.grant.categories.contains(category)
                    && revoked_at.is_none_or(|at| g.grant.issued_at_ms > at)
                    && g.grant.expires_at_ms.is_none_or(|e| now_ms < e)
            }
            ConsentRecord::Revocation(_) => false,
        });
        if live {
            granted = granted.union(CategorySet::of([category]));
        }
    }
    granted
}

/// Whether a verified business's message in `category` is admitted: `conversation`
/// within [`CARE_WINDOW_MS`] of the person's last message to it, any other category
/// only when the person's grants in force cover it.
pub fn admits(
    category: Category,
    in_force: CategorySet,
    last_sent_ms: Option<u64>,
    now_ms: u64,
) -> bool {
    match category {
        Category::Conversation => {
            last_sent_ms.is_some_and(|at| now_ms.saturating_sub(at) < CARE_WINDOW_MS)
        }
        other => in_force.contains(other),
    }
}

/// An exported ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// [`LEDGER_FORMAT`].
    pub format: String,
    /// When it was exported.
    pub exported_at_ms: u64,
    /// Every record, oldest first.
    pub records: Vec<LedgerEntry>,
}

/// One record of an exported ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `grant` or `revocation`.
    pub kind: String,
    /// The signer (hex account id).
    pub user: String,
    /// The business (hex account id).
    pub business: String,
    /// Categories granted or revoked.
    pub categories: Vec<String>,
    /// Signing time.
    pub issued_at_ms: u64,
    /// A grant's expiry.
    pub expires_at_ms: Option<u64>,
    /// The single-use nonce (hex).
    pub nonce: String,
    /// The user's Ed25519 signature (hex).
    pub signature: String,
    /// `ConsentRecord::encode`, hex: what the signature is checked on.
    pub record: String,
}

impl LedgerEntry {
    /// The readable form of a signed record.
    pub fn of(record: &ConsentRecord) -> LedgerEntry {
        let (kind, expires_at_ms, nonce, signature) = match record {
            ConsentRecord::Grant(g) => (
                "grant",
                g.grant.expires_at_ms,
                g.grant.nonce.to_hex(),
                g.signature.to_hex(),
            ),
            ConsentRecord::Revocation(r) => (
                "revocation",
                None,
                r.revocation.nonce.to_hex(),
                r.signature.to_hex(),
            ),
        };
        LedgerEntry {
            kind: kind.to_owned(),
            user: record.user().to_hex(),
            business: record.business().to_hex(),
            categories: record
                .categories()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            issued_at_ms: record.issued_at_ms(),
            expires_at_ms,
            nonce,
            signature,
            record: hex::encode(record.encode()),
        }
    }
}

/// The ledger as a JSON document.
pub fn export(records: &[ConsentRecord], now_ms: u64) -> Result<String, SdkError> {
    let ledger = Ledger {
        format: LEDGER_FORMAT.to_owned(),
        exported_at_ms: now_ms,
        records: records.iter().map(LedgerEntry::of).collect(),
    };
    serde_json::to_string_pretty(&ledger).map_err(|e| SdkError::Ledger(e.to_string()))
}

/// Verifies an exported ledger offline: every record decodes, its signature is the
/// named user's, and its readable fields match the signed bytes. Returns the records.
pub fn verify_ledger(json: &str) -> Result<Vec<ConsentRecord>, SdkError> {
    let ledger: Ledger =
        serde_json::from_str(json).map_err(|e| SdkError::Ledger(format!("not a ledger: {e}")))?;
    if ledger.format != LEDGER_FORMAT {
        return Err(SdkError::Ledger(format!(
            "unknown format {:?}",
            ledger.format
        )));
    }
    let mut out = Vec::with_capacity(ledger.records.len());
    for (i, entry) in ledger.records.iter().enumerate() {
        let bad = |why: &str| SdkError::Ledger(format!("record {i}: {why}"));
        let bytes = hex::decode(&entry.record).map_err(|_| bad("record is not hex"))?;
        let record = ConsentRecord::decode(&bytes).ok_or_else(|| bad("record does not decode"))?;
        record
            .verify_signature()
            .map_err(|e| bad(&format!("{e}")))?;
        if &LedgerEntry::of(&record) != entry {
            return Err(bad("readable fields differ from the signed record"));
        }
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use parley_protocol::business::{ConsentGrant, ConsentNonce, ConsentRevocation};
    use parley_protocol::identity::IdentityKeyPair;

    use super::*;

    fn grant(
        user: &IdentityKeyPair,
        business: AccountId,
        cats: &[Category],
        at: u64,
        expires: Option<u64>,
        n: u8,
    ) -> ConsentRecord {
        ConsentRecord::Grant(
            ConsentGrant {
                user: user.account_id(),
                business,
                categories: CategorySet::of(cats.iter().copied()),
                issued_at_ms: at,
                expires_at_ms: expires,
                nonce: ConsentNonce([n; 16]),
            }
            .sign(user)
            .unwrap(),
        )
    }

    fn revocation(
        user: &IdentityKeyPair,
        business: AccountId,
        cats: CategorySet,
        at: u64,
        n: u8,
    ) -> ConsentRecord {
        ConsentRecord::Revocation(
            ConsentRevocation {
                user: user.account_id(),
                business,
                categories: cats,
                issued_at_ms: at,
                nonce: ConsentNonce([n; 16]),
            }
            .sign(user)
            .unwrap(),
        )
    }

    #[test]
    fn grants_add_up_and_later_revocations_and_expiry_remove_them() {
        let user = IdentityKeyPair::from_secret_bytes(&[1; 64]);
        let bank = IdentityKeyPair::from_secret_bytes(&[2; 64]).account_id();
        let me = user.account_id();
        let mut ledger = vec![
            grant(&user, bank, &[Category::SecurityAlert], 100, None, 1),
            grant(&user, bank, &[Category::Marketing], 110, Some(500), 2),
        ];
        let both = CategorySet::of([Category::SecurityAlert, Category::Marketing]);
        assert_eq!(in_force(&ledger, &me, &bank, 200), both);
        assert_eq!(
            in_force(&ledger, &me, &bank, 500),
            CategorySet::of([Category::SecurityAlert])
        );
        ledger.push(revocation(&user, bank, CategorySet::ALL, 300, 3));
        assert_eq!(in_force(&ledger, &me, &bank, 400), CategorySet::EMPTY);
        ledger.push(grant(&user, bank, &[Category::SecurityAlert], 350, None, 4));
        assert_eq!(
            in_force(&ledger, &me, &bank, 400),
            CategorySet::of([Category::SecurityAlert])
        );
        // Another business's grants count for nothing here.
        assert_eq!(in_force(&ledger, &me, &me, 400), CategorySet::EMPTY);
    }

    #[test]
    fn conversation_needs_the_care_window_and_other_categories_a_grant() {
        let granted = CategorySet::of([Category::SecurityAlert]);
        assert!(admits(Category::SecurityAlert, granted, None, 0));
        assert!(!admits(Category::Marketing, granted, None, 0));
        assert!(admits(
            Category::Conversation,
            granted,
            Some(1_000),
            1_000 + CARE_WINDOW_MS - 1
        ));
        assert!(!admits(
            Category::Conversation,
            granted,
            Some(1_000),
            1_000 + CARE_WINDOW_MS
        ));
        assert!(!admits(Category::Conversation, CategorySet::ALL, None, 0));
    }

    #[test]
    fn an_exported_ledger_verifies_and_tampering_is_caught() {
        let user = IdentityKeyPair::from_secret_bytes(&[1; 64]);
        let bank = IdentityKeyPair::from_secret_bytes(&[2; 64]).account_id();
        let ledger = vec![
            grant(&user, bank, &[Category::SecurityAlert], 100, None, 1),
            revocation(&user, bank, CategorySet::ALL, 300, 3),
        ];
        let json = export(&ledger, 1_000).unwrap();
        assert_eq!(verify_ledger(&json).unwrap(), ledger);

        let readable = json.replacen("security_alert", "marketing", 1);
        assert!(verify_ledger(&readable).is_err());
        let mut parsed: Ledger = serde_json::from_str(&json).unwrap();
        let mut bytes = hex::decode(&parsed.records[0].record).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        parsed.records[0].record = hex::encode(bytes);
        assert!(verify_ledger(&serde_json::to_string(&parsed).unwrap()).is_err());
    }
}

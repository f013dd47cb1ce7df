//! The consent ledger: every grant and revocation this client signed (person side) or
//! received from its customers (business side), as the signed record bytes.
//!
//! Records are only ever added, never changed: the ledger is evidence, and
//! [`crate::consent::export`] turns it into a JSON document anyone can verify offline.

use parley_protocol::business::ConsentRecord;
use parley_protocol::ids::AccountId;
use rusqlite::params;

use super::{corrupt, db, ClientStore};
use crate::error::SdkError;

impl ClientStore {
    /// Adds a signed record; returns `false` if the ledger already held it.
    pub fn add_consent(&self, record: &ConsentRecord) -> Result<bool, SdkError> {
        let changed = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO consent_ledger (user, business, record) VALUES (?1, ?2, ?3)",
                params![
                    record.user().as_bytes().as_slice(),
                    record.business().as_bytes().as_slice(),
                    record.encode()
                ],
            )
            .map_err(db)?;
        Ok(changed > 0)
    }

    /// Every record of the ledger, oldest first.
    pub fn consent_records(&self) -> Result<Vec<ConsentRecord>, SdkError> {
        self.consent_where("1", &[])
    }

    /// The records between `user` and `business`, oldest first.
    pub fn consent_between(
        &self,
        user: &AccountId,
        business: &AccountId,
    ) -> Result<Vec<ConsentRecord>, SdkError> {
        self.consent_where(
            "user = ?1 AND business = ?2",
            &[user.as_bytes().as_slice(), business.as_bytes().as_slice()],
        )
    }

    fn consent_where(
        &self,
        condition: &str,
        args: &[&[u8]],
    ) -> Result<Vec<ConsentRecord>, SdkError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT record FROM consent_ledger WHERE {condition} ORDER BY n"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let bytes = row.map_err(db)?;
            out.push(ConsentRecord::decode(&bytes).ok_or_else(|| corrupt("consent_ledger"))?);
        }
        Ok(out)
    }
}

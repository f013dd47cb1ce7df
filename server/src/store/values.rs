//! How the stores keep numbers the protocol holds unsigned: databases have signed 64-bit
//! integers, so values are clamped on the way in and out (times in ms and seqs never come
//! near `i64::MAX`); times no rule reads, to the day; and the one error for a stored value that does not decode.

use super::StoreError;

/// `v` as a database integer, clamped to `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A database integer as `u64`; a negative one (never written) reads as 0.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A day, in ms.
const DAY_MS: u64 = 86_400_000;

/// `ms` to the start of its (UTC) day: for the times a store keeps that no rule reads
/// (account and device creation, blocks, consent grants), so that a copy of the database does not tell
/// them more precisely (docs/threat-model.md). Migrations round older rows alike.
pub(crate) fn to_day(ms: u64) -> u64 {
    ms - ms % DAY_MS
}

/// A stored value in `what` (`table.column`) that does not decode.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Database(format!("corrupt value in {what}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_no_rule_reads_are_kept_to_the_day() {
        assert_eq!(super::to_day(86_400_000 * 3 + 12_345), 86_400_000 * 3);
        assert_eq!(super::to_day(86_400_000), 86_400_000);
    }
}

//! How the stores keep numbers the protocol holds unsigned: databases have signed 64-bit
//! integers, so values are clamped on the way in and out (times in ms and seqs never come
//! near `i64::MAX`); and the one error for a stored value that does not decode.

use super::StoreError;

/// `v` as a database integer, clamped to `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A database integer as `u64`; a negative one (never written) reads as 0.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored value in `what` (`table.column`) that does not decode.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Database(format!("corrupt value in {what}"))
}

//! What operators and the server's housekeeping ask of the database besides clients'
//! requests: the readiness probe and the queue depth for `/metrics`.

use deadpool_postgres::{ClientWrapper, Transaction};

use super::errors::Failure;
use crate::store::values::{to_i64, to_u64};

/// Commits one tiny write, so that success proves the database takes commits now.
pub(super) async fn probe_write(tx: &Transaction<'_>, now_ms: &u64) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO probe (id, at_ms) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
        &[&to_i64(*now_ms)],
    )
    .await?;
    Ok(())
}

/// Envelopes waiting in all queues (a count over every partition).
pub(super) async fn queue_depth(client: &ClientWrapper) -> Result<u64, Failure> {
    let statement = client.prepare_cached("SELECT COUNT(*) FROM queue").await?;
    let n: i64 = client.query_one(&statement, &[]).await?.try_get(0)?;
    Ok(to_u64(n))
}

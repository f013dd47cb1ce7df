//! Rate limits shared by every node of a cluster: token buckets in `rate_buckets`, with
//! the arithmetic of `rate_limit::BucketRate` (the same as one node's in-memory buckets).
//! A bucket row is locked while it is counted, so two nodes never take the same token.

use std::time::Duration;

use deadpool_postgres::Transaction;

use super::pool::{in_transaction, JobFuture};
use super::PostgresStore;
use crate::rate_limit::{BucketRate, RetryAfter};
use crate::store::values::{to_i64, to_u64};
use crate::store::StoreError;

/// One request against a shared bucket.
struct Request {
    limit: &'static str,
    subject: Vec<u8>,
    rate: BucketRate,
    cost: u32,
    now_ms: u64,
    /// Take the tokens (else only look whether one is there).
    take: bool,
}

impl PostgresStore {
    /// Takes `cost` tokens from the bucket of `subject` under `limit`, refilled at `rate`;
    /// `Err(retry)` (inside `Ok`) when there are not enough. With `take == false` only
    /// checks that one token is there (for limits that charge failures afterwards).
    pub async fn rate(
        &self,
        limit: &'static str,
        subject: Vec<u8>,
        rate: BucketRate,
        cost: u32,
        take: bool,
    ) -> Result<Result<(), RetryAfter>, StoreError> {
        let request = Request {
            limit,
            subject,
            rate,
            cost,
            now_ms: self.clock.now_ms(),
            take,
        };
        in_transaction(&self.pool, &request, count).await
    }
}

fn count<'a>(tx: &'a Transaction<'a>, r: &'a Request) -> JobFuture<'a, Result<(), RetryAfter>> {
    Box::pin(async move {
        tx.execute(
            "INSERT INTO rate_buckets (limit_name, subject, tokens, updated_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&r.limit, &r.subject, &r.rate.full(), &to_i64(r.now_ms)],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT tokens, updated_at_ms FROM rate_buckets
                 WHERE limit_name = $1 AND subject = $2 FOR UPDATE",
                &[&r.limit, &r.subject],
            )
            .await?;
        let (tokens, updated): (f64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let elapsed = Duration::from_millis(r.now_ms.saturating_sub(to_u64(updated)));
        let tokens = r.rate.refill(tokens, elapsed);
        let cost = if r.take { r.cost } else { 1 };
        let left = match r.rate.take(tokens, cost) {
            Ok(left) => left,
            Err(retry) => return Ok(Err(retry)),
        };
        if r.take {
            tx.execute(
                "UPDATE rate_buckets SET tokens = $3, updated_at_ms = $4
                 WHERE limit_name = $1 AND subject = $2",
                &[&r.limit, &r.subject, &left, &to_i64(r.now_ms)],
            )
            .await?;
        }
        Ok(Ok(()))
    })
}

//! Connections to PostgreSQL: the pool built from a URL, and the transaction loop every
//! write goes through.
//!
//! The URL is parsed by tokio-postgres, so every libpq-style setting it knows works
//! (`postgres://user:password@host:port/db?options=-csearch_path%3Dparley`, or
//! `host=... dbname=...`). On top of it every connection runs with
//! `synchronous_commit = on` (an accepted envelope is on the server's disk, whatever the
//! database's default) and gets a connect timeout if the URL has none. Connections are
//! plain TCP or Unix sockets (`NoTls`); TLS would be another connector given to
//! [`Manager::from_config`] here, and nothing else would change.
//!
//! [`in_transaction`] runs a job in a transaction and commits it. A job that fails with
//! a deadlock, a serialization failure or a unique violation from a concurrent insert
//! (see `errors.rs`) is run again from the start, in a new transaction, up to
//! [`ATTEMPTS`] times; its answer is only ever the one of a committed attempt.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use tokio_postgres::NoTls;

use super::errors::{pool_error, redact_url, Failure};
use crate::store::StoreError;

/// Attempts of a transaction that keeps failing with a retryable error.
pub(super) const ATTEMPTS: u32 = 6;

/// How long a new connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A boxed future of a job that runs on a transaction or client it borrows.
pub(super) type JobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

/// A job [`in_transaction`] runs (again, if a retryable error ends an attempt).
pub(super) type TxJob<I, T> = for<'a> fn(&'a Transaction<'a>, &'a I) -> JobFuture<'a, T>;

/// Builds a pool of at most `max_size` connections to `url`, waiting at most `wait`
/// for a free one (then the store is `Unavailable`). Connects lazily.
pub(super) fn build(url: &str, max_size: usize, wait: Duration) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Database(format!("invalid PostgreSQL URL {}: {e}", redact_url(url)))
    })?;
    let options = match config.get_options() {
        Some(options) => format!("{options} -c synchronous_commit=on"),
        None => "-c synchronous_commit=on".to_owned(),
    };
    config.options(options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("parley-server");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait.max(CONNECT_TIMEOUT)))
        .recycle_timeout(Some(wait))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Database(format!("connection pool: {e}")))
}

/// Runs `job` on `input` in a transaction and commits it; runs it again in a new
/// transaction when an attempt fails with a retryable error.
pub(super) async fn in_transaction<I: Sync, T>(
    pool: &Pool,
    input: &I,
    job: TxJob<I, T>,
) -> Result<T, StoreError> {
    let mut attempt = 1;
    loop {
        match attempt_transaction(pool, input, job).await {
            Ok(value) => return Ok(value),
            Err(failure) if failure.retry && attempt < ATTEMPTS => {
                backoff(attempt).await;
                attempt += 1;
            }
            Err(failure) => return Err(failure.error),
        }
    }
}

async fn attempt_transaction<I: Sync, T>(
    pool: &Pool,
    input: &I,
    job: TxJob<I, T>,
) -> Result<T, Failure> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    let value = job(&tx, input).await?;
    tx.commit().await?;
    Ok(value)
}

/// Waits a little before attempt `attempt + 1`, longer each time and a bit at random,
/// so that two transactions that deadlocked do not meet again at once.
pub(super) async fn backoff(attempt: u32) {
    let jitter = u64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 1000);
    let micros = (500u64 << attempt.min(8)) + jitter;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

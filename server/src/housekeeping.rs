//! Periodic maintenance: deletes envelopes older than the retention period and dedup
//! entries older than it, and business bookkeeping that no longer counts (reach entries
//! older than 24 h, closed care windows, expired consents), in bounded batches so the
//! writer is never held for long.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::context::{now_ms, Shared};
use crate::store::SweepReport;

/// Sweeps every `sweep_interval` until shutdown.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let retention_ms = u64::try_from(shared.config.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(retention_ms);
        let mut total = SweepReport::default();
        let mut failed = false;
        loop {
            match shared.store.sweep_expired(cutoff, cutoff).await {
                Ok(report) => {
                    shared.metrics.envelopes_expired.add(report.envelopes);
                    shared
                        .metrics
                        .dedup_entries_expired
                        .add(report.dedup_entries);
                    total.envelopes += report.envelopes;
                    total.dedup_entries += report.dedup_entries;
                    if report == SweepReport::default() || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    shared.metrics.sweep_failures.inc();
                    failed = true;
                    tracing::warn!(error = %e, "sweeping expired envelopes failed");
                    break;
                }
            }
        }
        if !failed {
            failed = !sweep_business(&shared, &shutdown).await;
        }
        if !failed {
            shared.metrics.sweeps.inc();
            let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
            shared.metrics.last_sweep_unix_seconds.set(now);
        }
        if total != SweepReport::default() {
            tracing::info!(
                envelopes = total.envelopes,
                dedup_entries = total.dedup_entries,
                "expired envelopes swept"
            );
        }
    }
}

/// Sweeps business bookkeeping in batches until none is left; `false` if the store failed.
async fn sweep_business(shared: &Shared, shutdown: &CancellationToken) -> bool {
    let care_window_ms = u64::try_from(shared.config.care_window.as_millis()).unwrap_or(u64::MAX);
    loop {
        match shared.store.sweep_business(now_ms(), care_window_ms).await {
            Ok(deleted) => {
                shared.metrics.business_rows_expired.add(deleted);
                if deleted == 0 || shutdown.is_cancelled() {
                    return true;
                }
            }
            Err(e) => {
                shared.metrics.sweep_failures.inc();
                tracing::warn!(error = %e, "sweeping business bookkeeping failed");
                return false;
            }
        }
    }
}

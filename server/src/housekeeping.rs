//! Periodic maintenance: deletes envelopes older than the retention period and dedup
//! entries older than it, in bounded batches so the writer is never held for long.

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

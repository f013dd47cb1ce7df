//! Periodic maintenance: deletes envelopes older than the retention period, dedup
//! entries older than the dedup window, and business bookkeeping that no longer counts
//! (reach entries older than 24 h, closed care windows, expired consents, reports that no
//! longer count), in bounded batches so the writer is never held for long.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::store::{BusinessWindows, SweepReport};

/// Sweeps every `sweep_interval` until shutdown.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = shared.now_ms();
        let queue_cutoff = now.saturating_sub(millis(shared.config.retention));
        let dedup_cutoff = now.saturating_sub(millis(shared.config.dedup_window));
        let mut total = SweepReport::default();
        let mut failed = false;
        loop {
            match shared.store.sweep_expired(queue_cutoff, dedup_cutoff).await {
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
            let now = i64::try_from(shared.now_ms() / 1000).unwrap_or(i64::MAX);
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

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sweeps business bookkeeping in batches until none is left; `false` if the store failed.
async fn sweep_business(shared: &Shared, shutdown: &CancellationToken) -> bool {
    let windows = BusinessWindows {
        care_window_ms: millis(shared.config.care_window),
        report_window_ms: millis(shared.config.report_window),
    };
    loop {
        match shared.store.sweep_business(shared.now_ms(), windows).await {
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

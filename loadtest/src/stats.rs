//! Latency histograms (HDR, nanoseconds) and their summary in reports.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded: longer values are clamped (and still counted).
const MAX_NANOS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram.
    #[allow(clippy::expect_used)]
    pub fn new() -> Latency {
        Latency(
            Histogram::new_with_bounds(1, MAX_NANOS, 3)
                .expect("1 ns to 60 s at 3 significant digits is a valid configuration"),
        )
    }

    /// Records one latency.
    pub fn record(&mut self, nanos: u64) {
        self.0.saturating_record(nanos.clamp(1, MAX_NANOS));
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p99, p99.9, max and mean, in microseconds; `None` if nothing was recorded.
    pub fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        // Microseconds, rounded to 0.1 µs.
        let us = |nanos: u64| (nanos as f64 / 100.0).round() / 10.0;
        Some(Summary {
            count: self.0.len(),
            p50_us: us(self.0.value_at_quantile(0.50)),
            p90_us: us(self.0.value_at_quantile(0.90)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            p999_us: us(self.0.value_at_quantile(0.999)),
            max_us: us(self.0.max()),
            mean_us: (self.0.mean() / 100.0).round() / 10.0,
        })
    }

    /// (quantile, microseconds) pairs for a percentile plot.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        [
            0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
        ]
        .iter()
        .map(|&q| (q, self.0.value_at_quantile(q) as f64 / 1_000.0))
        .collect()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// A latency distribution in a report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// The median of some values (NaN if empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises() {
        let mut h = Latency::new();
        for v in 1..=1000u64 {
            h.record(v * 1_000);
        }
        let Some(s) = h.summary() else {
            unreachable!("values were recorded")
        };
        assert!(Latency::new().summary().is_none());
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 2.0);
        assert!((s.max_us - 1000.0).abs() < 2.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}

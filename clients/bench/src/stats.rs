//! Latency recording shared by thousands of connection tasks, and its summary.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// Highest latency recorded exactly; longer ones are recorded as this (one minute).
const MAX_MICROS: u64 = 60_000_000;
/// Shards, so that concurrent tasks rarely contend for a histogram's lock.
const SHARDS: usize = 64;

/// Latencies in microseconds, in sharded histograms (one per task would cost ~100 KiB each).
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    /// Records one latency from the task numbered `task` (any stable number).
    pub fn record(&self, task: usize, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        if let Ok(mut shard) = self.shards[task % SHARDS].lock() {
            shard.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let mut merged = new_histogram();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                // Same bounds on both sides, so adding cannot fail.
                let _ = merged.add(&*shard);
            }
        }
        LatencySummary::of(&merged)
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits, so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Percentiles in milliseconds (with microsecond resolution).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_merge_across_shards() {
        let latencies = Latencies::new();
        for i in 1..=1000u64 {
            latencies.record(i as usize, Duration::from_micros(i * 10));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 9.9).abs() < 0.01, "{summary:?}");
    }
}

//! The recent history the admin console charts: a sample every `metrics.chart_interval_secs`,
//! kept for `metrics.chart_window_secs`, in a bounded ring.

use super::Metrics;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One sample: live connections, and rates over the interval before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsPoint {
    /// Unix seconds.
    pub t: i64,
    pub connections: i64,
    pub messages_per_sec: f64,
    pub invocations_per_sec: f64,
    pub envelope_rejections_per_sec: f64,
}

/// The sampled history, oldest first.
#[derive(Debug, Clone)]
pub struct StatsSeries {
    interval: Duration,
    capacity: usize,
    points: Arc<Mutex<VecDeque<StatsPoint>>>,
}

impl StatsSeries {
    pub fn new(interval: Duration, window: Duration) -> Self {
        let interval = interval.max(Duration::from_secs(1));
        let capacity = (window.as_secs() / interval.as_secs()).clamp(1, 10_000) as usize;
        Self {
            interval,
            capacity,
            points: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn points(&self) -> Vec<StatsPoint> {
        self.points
            .lock()
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    fn push(&self, point: StatsPoint) {
        if let Ok(mut points) = self.points.lock() {
            if points.len() == self.capacity {
                points.pop_front();
            }
            points.push_back(point);
        }
    }

    /// Samples `metrics` every interval until `shutdown`.
    pub async fn run(self, metrics: Metrics, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = metrics.totals();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sample(&metrics, &mut last);
        }
    }

    /// Records one point: the rates since `last`, which becomes now.
    fn sample(&self, metrics: &Metrics, last: &mut (u64, u64, u64)) {
        let now = metrics.totals();
        let secs = self.interval.as_secs_f64();
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        self.push(StatsPoint {
            t: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            connections: metrics.connection_count(),
            messages_per_sec: rate(now.0, last.0),
            invocations_per_sec: rate(now.1, last.1),
            envelope_rejections_per_sec: rate(now.2, last.2),
        });
        *last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_window_of_rates() {
        let metrics = Metrics::new();
        let series = StatsSeries::new(Duration::from_secs(2), Duration::from_secs(6));
        let mut last = metrics.totals();
        for _ in 0..4 {
            metrics.invocation("home", "Echo", super::super::Outcome::Ok);
        }
        metrics.envelope_rejected("bad_signature");
        series.sample(&metrics, &mut last);
        let point = series.points()[0];
        assert_eq!(point.invocations_per_sec, 2.0);
        assert_eq!(point.envelope_rejections_per_sec, 0.5);
        for _ in 0..5 {
            series.sample(&metrics, &mut last);
        }
        let points = series.points();
        assert_eq!(points.len(), 3, "bounded by window / interval");
        assert_eq!(points[2].invocations_per_sec, 0.0);
    }
}

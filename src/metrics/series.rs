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
        let secs = self.interval.as_secs_f64();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = metrics.totals();
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
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keeps_a_bounded_window_of_rates() {
        let metrics = Metrics::new();
        let series = StatsSeries::new(Duration::from_secs(2), Duration::from_secs(6));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(series.clone().run(metrics.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..4 {
            metrics.invocation("home", "Echo", super::super::Outcome::Ok);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let points = series.points();
        assert_eq!(points.last().map(|p| p.invocations_per_sec), Some(2.0));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(series.points().len(), 3, "bounded by window / interval");
        assert_eq!(
            series.points().last().map(|p| p.invocations_per_sec),
            Some(0.0)
        );
        shutdown.cancel();
        let _ = task.await;
    }
}

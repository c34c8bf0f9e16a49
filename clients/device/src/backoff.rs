//! Waiting between reconnection attempts: exponential, capped, with jitter so that a fleet of
//! devices cut off together by a server restart does not come back in one burst.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt `n` waits between half and all of
/// `min(cap, base * 2^n)`, so the delay grows but never collapses to zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The wait before the next attempt; each call counts an attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        // 2^16 times any sensible base is far past any sensible cap.
        let factor = 1u32 << self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=jitter_ms))
    }

    /// Back to the first delay, after a connection that lasted.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 0..20u32 {
            let ceiling = Duration::from_secs(1u64 << attempt.min(16)).min(Duration::from_secs(60));
            let delay = backoff.next_delay(&mut rng);
            assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
            assert!(delay <= ceiling, "attempt {attempt}: {delay:?}");
        }
        assert_eq!(backoff.attempts(), 20);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                let mut backoff = Backoff::new(Duration::from_secs(8), Duration::from_secs(60));
                backoff.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        backoff.attempt = u32::MAX;
        let delay = backoff.next_delay(&mut rng);
        assert!(delay <= Duration::from_secs(60));
    }
}

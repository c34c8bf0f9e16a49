//! Failed-login throttling, per username and per client address: a fixed window opened by the
//! first attempt, `max` attempts in it, then 429 until it closes.
//!
//! An attempt is counted when it starts (so concurrent guesses cannot overshoot the limit) and
//! forgiven when it succeeds, so only failures use up the allowance.

use moka::sync::Cache;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    attempts: u32,
}

/// The keys one login attempt is counted under.
#[derive(Debug, Clone)]
pub struct AttemptKeys(Vec<String>);

impl AttemptKeys {
    pub fn new(username: &str, client: Option<IpAddr>) -> Self {
        let mut keys = vec![format!("user:{username}")];
        if let Some(addr) = client {
            keys.push(format!("addr:{addr}"));
        }
        Self(keys)
    }
}

/// Throttles failed logins. Memory is bounded by `capacity` tracked keys.
pub struct LoginLimiter {
    windows: Cache<String, Window>,
    max: u32,
    window: Duration,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("max", &self.max)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration, capacity: u64) -> Self {
        Self {
            windows: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
            max: max.max(1),
            window,
        }
    }

    /// Counts an attempt under every key, or refuses with how long until one may be made.
    pub fn begin(&self, keys: &AttemptKeys) -> Result<(), Duration> {
        for (i, key) in keys.0.iter().enumerate() {
            if let Err(retry_after) = self.count(key) {
                // Give back what this attempt took under the keys before.
                for earlier in &keys.0[..i] {
                    self.forgive_one(earlier);
                }
                return Err(retry_after);
            }
        }
        Ok(())
    }

    /// The attempt succeeded: it was not a failure.
    pub fn succeeded(&self, keys: &AttemptKeys) {
        for key in &keys.0 {
            self.forgive_one(key);
        }
    }

    fn count(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut refused = None;
        self.windows
            .entry(key.to_string())
            .and_upsert_with(|current| match current.map(|e| e.into_value()) {
                Some(w) if now.duration_since(w.opened) < self.window => {
                    if w.attempts >= self.max {
                        refused = Some(self.window.saturating_sub(now.duration_since(w.opened)));
                        w
                    } else {
                        Window {
                            attempts: w.attempts + 1,
                            ..w
                        }
                    }
                }
                _ => Window {
                    opened: now,
                    attempts: 1,
                },
            });
        match refused {
            Some(retry_after) => Err(retry_after),
            None => Ok(()),
        }
    }

    fn forgive_one(&self, key: &str) {
        self.windows
            .entry(key.to_string())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some(w) => moka::ops::compute::Op::Put(Window {
                    attempts: w.attempts.saturating_sub(1),
                    ..w
                }),
                None => moka::ops::compute::Op::Nop,
            });
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_username_and_per_address() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60), 100);
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let ann = AttemptKeys::new("ann", Some(addr));
        assert!(limiter.begin(&ann).is_ok());
        assert!(limiter.begin(&ann).is_ok());
        let wait = limiter.begin(&ann).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(58));
        // Another name from the same address is refused too: the address is spent.
        assert!(limiter.begin(&AttemptKeys::new("bob", Some(addr))).is_err());
        // The same name from elsewhere is refused: the name is spent.
        let elsewhere = AttemptKeys::new("ann", Some("10.0.0.2".parse().unwrap()));
        assert!(limiter.begin(&elsewhere).is_err());
        // The refused attempts did not use up the other address's allowance.
        let carol = AttemptKeys::new("carol", Some("10.0.0.2".parse().unwrap()));
        assert!(limiter.begin(&carol).is_ok());
        assert!(limiter.begin(&carol).is_ok());
    }

    #[test]
    fn successes_do_not_count() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60), 100);
        let keys = AttemptKeys::new("ann", None);
        for _ in 0..5 {
            assert!(limiter.begin(&keys).is_ok());
            limiter.succeeded(&keys);
        }
    }

    #[test]
    fn the_window_closes() {
        let limiter = LoginLimiter::new(1, Duration::from_millis(50), 100);
        let keys = AttemptKeys::new("ann", None);
        assert!(limiter.begin(&keys).is_ok());
        assert!(limiter.begin(&keys).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.begin(&keys).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}

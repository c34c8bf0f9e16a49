//! Failed-login throttling that slows a guesser without locking out the people who share an
//! address with one (a household, an office behind one proxy) or the owner of a guessed name:
//!
//! - per (username, address): `max_failures` in a fixed window opened by the first attempt,
//!   then 429 for that name from that address until the window closes;
//! - per address, whatever the name: `max_failures_per_address` in the same kind of window,
//!   then 429 for every name from that address;
//! - per username, whatever the address: after `backoff_after` failures each further attempt
//!   must wait a delay that doubles from 1 s up to `max_backoff` (429 with the time left
//!   meanwhile). A success resets it; so does a quiet `window` after the delay ends.
//!
//! Addresses are keyed whole for IPv4 and by their /64 for IPv6 (one subscriber usually holds
//! a whole /64). An attempt is counted when it starts, so concurrent guesses cannot overshoot
//! a limit, and forgiven when it succeeds or could not be checked, so only failures count.
//! Each of the three tables holds at most `capacity` keys.

use moka::sync::Cache;
use std::net::IpAddr;
use std::time::Duration;
// tokio's clock, so that tests can pause it; moka's idle expiry runs on its own clock and only
// forgets keys that stopped mattering.
use tokio::time::Instant;

/// The limits, from `[identity]` settings.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub max_failures: u32,
    pub max_failures_per_address: u32,
    pub window: Duration,
    pub backoff_after: u32,
    pub max_backoff: Duration,
    pub capacity: u64,
}

/// The first delay of the per-username backoff; each further failure doubles it. Not a
/// setting: `identity.login_backoff_after_failures` says when the backoff starts and
/// `identity.login_max_backoff_secs` caps it; one second is the smallest `Retry-After`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    attempts: u32,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// Failed (or running) attempts since the last reset.
    attempts: u32,
    /// No attempt before this instant; it is also when the last delay ended.
    next_allowed: Instant,
}

/// The keys one login attempt is counted under.
#[derive(Debug, Clone)]
pub struct AttemptKeys {
    pair: String,
    address: String,
    username: String,
}

impl AttemptKeys {
    pub fn new(username: &str, client: Option<IpAddr>) -> Self {
        let address = client.map_or_else(|| "unknown".to_string(), address_key);
        Self {
            pair: format!("{address} {username}"),
            address,
            username: username.to_string(),
        }
    }
}

/// An IPv4 address as it is; an IPv6 address as its /64 (IPv4-mapped ones as IPv4).
pub fn address_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Throttles failed logins. Memory is bounded by `capacity` keys per table.
pub struct LoginLimiter {
    pairs: Cache<String, Window>,
    addresses: Cache<String, Window>,
    usernames: Cache<String, Backoff>,
    limits: LoginLimits,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        let limits = LoginLimits {
            max_failures: limits.max_failures.max(1),
            max_failures_per_address: limits.max_failures_per_address.max(1),
            ..limits
        };
        let windows = || {
            Cache::builder()
                .max_capacity(limits.capacity)
                .time_to_live(limits.window)
                .build()
        };
        Self {
            pairs: windows(),
            addresses: windows(),
            // Entries matter until a quiet window after the longest delay; kept a little longer.
            usernames: Cache::builder()
                .max_capacity(limits.capacity)
                .time_to_idle(limits.window + limits.max_backoff * 2)
                .build(),
            limits,
        }
    }

    /// Counts an attempt under every key, or refuses with how long until one may be made.
    pub fn begin(&self, keys: &AttemptKeys) -> Result<(), Duration> {
        let now = Instant::now();
        count_in_window(
            &self.pairs,
            &keys.pair,
            self.limits.max_failures,
            self.limits.window,
            now,
        )?;
        if let Err(wait) = count_in_window(
            &self.addresses,
            &keys.address,
            self.limits.max_failures_per_address,
            self.limits.window,
            now,
        ) {
            forgive_one(&self.pairs, &keys.pair);
            return Err(wait);
        }
        if let Err(wait) = self.count_for_username(&keys.username, now) {
            forgive_one(&self.pairs, &keys.pair);
            forgive_one(&self.addresses, &keys.address);
            return Err(wait);
        }
        Ok(())
    }

    /// The attempt succeeded: it was not a failure, and the name's backoff starts over.
    pub fn succeeded(&self, keys: &AttemptKeys) {
        forgive_one(&self.pairs, &keys.pair);
        forgive_one(&self.addresses, &keys.address);
        self.usernames.invalidate(&keys.username);
    }

    /// The attempt could not be checked (the server was busy): it counts as nothing.
    pub fn abandoned(&self, keys: &AttemptKeys) {
        forgive_one(&self.pairs, &keys.pair);
        forgive_one(&self.addresses, &keys.address);
        self.usernames
            .entry(keys.username.clone())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some(b) => moka::ops::compute::Op::Put(Backoff {
                    attempts: b.attempts.saturating_sub(1),
                    ..b
                }),
                None => moka::ops::compute::Op::Nop,
            });
    }

    fn count_for_username(&self, username: &str, now: Instant) -> Result<(), Duration> {
        let limits = self.limits;
        let mut refused = None;
        self.usernames
            .entry(username.to_string())
            .and_upsert_with(|current| {
                let fresh = Backoff {
                    attempts: 0,
                    next_allowed: now,
                };
                let state = match current.map(|e| e.into_value()) {
                    Some(b) if now < b.next_allowed + limits.window => b,
                    _ => fresh,
                };
                if now < state.next_allowed {
                    refused = Some(state.next_allowed - now);
                    return state;
                }
                let attempts = state.attempts.saturating_add(1);
                let beyond = attempts.saturating_sub(limits.backoff_after);
                let delay = if beyond == 0 {
                    Duration::ZERO
                } else {
                    let doublings = (beyond - 1).min(30);
                    FIRST_BACKOFF
                        .saturating_mul(1u32 << doublings)
                        .min(limits.max_backoff)
                };
                Backoff {
                    attempts,
                    next_allowed: now + delay,
                }
            });
        match refused {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }
}

/// Counts one attempt in `key`'s fixed window, or refuses with the time until it closes.
fn count_in_window(
    cache: &Cache<String, Window>,
    key: &str,
    max: u32,
    window: Duration,
    now: Instant,
) -> Result<(), Duration> {
    let mut refused = None;
    cache
        .entry(key.to_string())
        .and_upsert_with(|current| match current.map(|e| e.into_value()) {
            Some(w) if now.duration_since(w.opened) < window => {
                if w.attempts >= max {
                    refused = Some(window.saturating_sub(now.duration_since(w.opened)));
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

fn forgive_one(cache: &Cache<String, Window>, key: &str) {
    cache.entry(key.to_string()).and_compute_with(|current| {
        match current.map(|e| e.into_value()) {
            Some(w) => moka::ops::compute::Op::Put(Window {
                attempts: w.attempts.saturating_sub(1),
                ..w
            }),
            None => moka::ops::compute::Op::Nop,
        }
    });
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            max_failures: 2,
            max_failures_per_address: 5,
            window: Duration::from_secs(60),
            backoff_after: 100,
            max_backoff: Duration::from_secs(60),
            capacity: 1000,
        }
    }

    fn keys(name: &str, addr: &str) -> AttemptKeys {
        AttemptKeys::new(name, Some(addr.parse().unwrap()))
    }

    #[test]
    fn a_name_from_an_address_is_limited_strictly_without_touching_other_names() {
        let limiter = LoginLimiter::new(limits());
        let ann = keys("ann", "10.0.0.1");
        assert!(limiter.begin(&ann).is_ok());
        assert!(limiter.begin(&ann).is_ok());
        let wait = limiter.begin(&ann).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(58));
        // Another name from the same address, and the same name from elsewhere, carry on.
        assert!(limiter.begin(&keys("bob", "10.0.0.1")).is_ok());
        assert!(limiter.begin(&keys("ann", "10.0.0.2")).is_ok());
    }

    #[test]
    fn an_address_has_a_higher_limit_across_names() {
        let limiter = LoginLimiter::new(limits());
        for i in 0..5 {
            assert!(limiter.begin(&keys(&format!("n{i}"), "10.0.0.1")).is_ok());
        }
        assert!(limiter.begin(&keys("n9", "10.0.0.1")).is_err());
        // The refused attempt left the pair's allowance as it was.
        assert!(limiter.begin(&keys("n9", "10.0.0.2")).is_ok());
        assert!(limiter.begin(&keys("n9", "10.0.0.2")).is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let limiter = LoginLimiter::new(limits());
        assert!(limiter.begin(&keys("ann", "2001:db8:1:2::1")).is_ok());
        assert!(limiter.begin(&keys("ann", "2001:db8:1:2:ffff::9")).is_ok());
        assert!(limiter.begin(&keys("ann", "2001:db8:1:2::77")).is_err());
        assert!(limiter.begin(&keys("ann", "2001:db8:1:3::1")).is_ok());
        assert_eq!(address_key("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(
            address_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    /// A limiter whose name `ann` just started a 1 s delay after four failures.
    fn ann_backing_off() -> LoginLimiter {
        let limiter = LoginLimiter::new(LoginLimits {
            backoff_after: 3,
            max_backoff: Duration::from_secs(4),
            ..limits()
        });
        for i in 0..4 {
            assert!(limiter.begin(&keys("ann", &format!("10.0.1.{i}"))).is_ok());
        }
        limiter
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_s_delay_ends_on_time_and_refused_attempts_do_not_extend_it() {
        let limiter = ann_backing_off();
        assert_eq!(
            limiter.begin(&keys("ann", "10.0.2.1")),
            Err(Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(
            limiter.begin(&keys("ann", "10.0.2.2")),
            Err(Duration::from_millis(1))
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.begin(&keys("ann", "10.0.2.3")).is_ok());
    }

    #[test]
    fn a_name_backs_off_whatever_the_address_and_a_success_resets_it() {
        let limiter = ann_backing_off();
        // The fourth attempt started a 1 s delay.
        let wait = limiter.begin(&keys("ann", "10.0.2.1")).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.begin(&keys("bob", "10.0.2.1")).is_ok());
        limiter.succeeded(&keys("ann", "10.0.1.0"));
        assert!(limiter.begin(&keys("ann", "10.0.2.1")).is_ok());
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let limiter = LoginLimiter::new(LoginLimits {
            backoff_after: 0,
            max_backoff: Duration::from_millis(2500),
            ..limits()
        });
        let mut state = Backoff {
            attempts: 0,
            next_allowed: Instant::now(),
        };
        let mut delays = Vec::new();
        for i in 0..5 {
            let key = format!("k{i}");
            limiter.usernames.insert(key.clone(), state);
            let now = state.next_allowed;
            assert!(limiter.count_for_username(&key, now).is_ok());
            state = limiter.usernames.get(&key).unwrap();
            delays.push(state.next_allowed - now);
        }
        let secs: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [1.0, 2.0, 2.5, 2.5, 2.5]);
    }

    #[test]
    fn successes_do_not_count() {
        let limiter = LoginLimiter::new(limits());
        let ann = AttemptKeys::new("ann", None);
        for _ in 0..5 {
            assert!(limiter.begin(&ann).is_ok());
            limiter.succeeded(&ann);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_closes() {
        let limiter = LoginLimiter::new(LoginLimits {
            max_failures: 1,
            window: Duration::from_millis(50),
            ..limits()
        });
        let ann = AttemptKeys::new("ann", None);
        assert!(limiter.begin(&ann).is_ok());
        assert!(limiter.begin(&ann).is_err());
        tokio::time::advance(Duration::from_millis(49)).await;
        assert!(limiter.begin(&ann).is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(limiter.begin(&ann).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}

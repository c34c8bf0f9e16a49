//! The session's clocks: keep-alive pings, the client timeout, the token's expiry and the Acks
//! of stateful reconnect. All are `tokio::time` deadlines, so the tests below pause the clock
//! and advance it instead of waiting. A token's `exp` (Unix seconds, the wall clock) is turned
//! into a tokio deadline once, when the timer is set ([`SessionLimits::expiry_deadline`]).

use super::SessionLimits;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{sleep_until, Instant, Sleep};

/// How often the server acknowledges the client's messages under stateful reconnect (the
/// official clients and ASP.NET Core use one second).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// What a session's clock says is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The expiry deadline passed; the session checks whether a refresh moved it.
    Expiry,
    /// Nothing came from the client within the client timeout.
    ClientSilent,
    /// Time to send a keep-alive ping.
    Ping,
    /// Time to acknowledge what the client sent (stateful reconnect).
    Ack,
}

/// The deadlines of a session, kept as instants, with one timer set to the earliest: an idle
/// connection holds one timer registration rather than one per clock.
pub(super) struct SessionTimers {
    expiry: Instant,
    /// `None` for long polling, which keeps itself alive: its clients send no pings and expect
    /// none.
    client_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    /// `None` unless the session acknowledges (stateful reconnect).
    next_ack: Option<Instant>,
    client_timeout: Duration,
    keep_alive: Duration,
    timer: Pin<Box<Sleep>>,
}

impl SessionTimers {
    /// Starts the clocks now: the expiry timer at `expiry`, the Acks only if `acknowledges`.
    pub(super) fn start(
        limits: &SessionLimits,
        expiry: Instant,
        inherent_keep_alive: bool,
        acknowledges: bool,
    ) -> Self {
        let now = Instant::now();
        let kept_alive = !inherent_keep_alive;
        Self {
            expiry,
            client_deadline: kept_alive.then(|| now + limits.client_timeout),
            next_ping: kept_alive.then(|| now + limits.keep_alive),
            next_ack: acknowledges.then(|| now + ACK_INTERVAL),
            client_timeout: limits.client_timeout,
            keep_alive: limits.keep_alive,
            timer: Box::pin(sleep_until(expiry)),
        }
    }

    /// The earliest deadline and what it is for; on a tie, in `Due`'s order (expiry first).
    fn earliest(&self) -> (Instant, Due) {
        [
            (Some(self.expiry), Due::Expiry),
            (self.client_deadline, Due::ClientSilent),
            (self.next_ping, Due::Ping),
            (self.next_ack, Due::Ack),
        ]
        .into_iter()
        .filter_map(|(at, due)| Some((at?, due)))
        .fold((self.expiry, Due::Expiry), |earliest, candidate| {
            if candidate.0 < earliest.0 {
                candidate
            } else {
                earliest
            }
        })
    }

    /// Waits for the next thing due, expiry first. Cancel-safe: a `select!` may drop it.
    pub(super) async fn next(&mut self) -> Due {
        loop {
            let (at, due) = self.earliest();
            if self.timer.deadline() != at {
                self.timer.as_mut().reset(at);
            }
            self.timer.as_mut().await;
            // A deadline moved later while the timer ran: wait for the new earliest.
            if Instant::now() < self.earliest().0 {
                continue;
            }
            let now = Instant::now();
            match due {
                // Ticks are counted from when they are handled, so a late tick delays the next
                // one rather than bunching them up.
                Due::Ping => self.next_ping = Some(now + self.keep_alive),
                Due::Ack => self.next_ack = Some(now + ACK_INTERVAL),
                // Rearmed by the session (`heard_from_client`, `expire_at`); until then, not
                // again at once.
                Due::ClientSilent => self.client_deadline = Some(now + self.client_timeout),
                Due::Expiry => {}
            }
            return due;
        }
    }

    /// The client was heard from (or its silence is excused): the client timeout starts over.
    pub(super) fn heard_from_client(&mut self) {
        if self.client_deadline.is_some() {
            self.client_deadline = Some(Instant::now() + self.client_timeout);
        }
    }

    /// Moves the expiry deadline (after a refresh, or when it fired early).
    pub(super) fn expire_at(&mut self, at: Instant) {
        self.expiry = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn limits(keep_alive_secs: u64, client_timeout_secs: u64) -> SessionLimits {
        let mut settings = Settings::default();
        settings.hub.keep_alive_interval_secs = keep_alive_secs;
        settings.hub.client_timeout_secs = client_timeout_secs;
        SessionLimits::from_settings(&settings)
    }

    /// What is due next and how long (paused) time took to get there.
    async fn next_after(timers: &mut SessionTimers) -> (Due, Duration) {
        let started = Instant::now();
        let due = timers.next().await;
        (due, started.elapsed())
    }

    const FAR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_pings_every_keep_alive_interval_until_the_client_timeout() {
        let mut timers = SessionTimers::start(&limits(15, 40), Instant::now() + FAR, false, false);
        for _ in 0..2 {
            assert_eq!(
                next_after(&mut timers).await,
                (Due::Ping, Duration::from_secs(15))
            );
        }
        // 30 s so far: the client timeout (40 s) comes before the third ping (45 s).
        assert_eq!(
            next_after(&mut timers).await,
            (Due::ClientSilent, Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hearing_from_the_client_starts_its_timeout_over() {
        let mut timers = SessionTimers::start(&limits(100, 30), Instant::now() + FAR, false, false);
        tokio::time::advance(Duration::from_secs(20)).await;
        timers.heard_from_client();
        // Not at 30 s from the start, but 30 s from the last message.
        assert_eq!(
            next_after(&mut timers).await,
            (Due::ClientSilent, Duration::from_secs(30))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_polling_gets_neither_pings_nor_a_client_timeout() {
        let mut timers = SessionTimers::start(
            &limits(1, 2),
            Instant::now() + Duration::from_secs(50),
            true,
            false,
        );
        assert_eq!(
            next_after(&mut timers).await,
            (Due::Expiry, Duration::from_secs(50))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_comes_first_and_can_be_moved() {
        let mut timers = SessionTimers::start(
            &limits(100, 100),
            Instant::now() + Duration::from_secs(5),
            false,
            false,
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        // A refresh moved it 10 s later.
        timers.expire_at(Instant::now() + Duration::from_secs(10));
        assert_eq!(
            next_after(&mut timers).await,
            (Due::Expiry, Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acks_come_every_second_only_under_stateful_reconnect() {
        let mut timers = SessionTimers::start(&limits(15, 30), Instant::now() + FAR, false, true);
        for _ in 0..3 {
            assert_eq!(
                next_after(&mut timers).await,
                (Due::Ack, Duration::from_secs(1))
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_deadline_follows_the_token_s_exp_on_the_paused_clock() {
        let connection =
            crate::connection::Connection::for_tests(crate::auth::issue::unix_now() + 5);
        let mut limits = limits(100, 300);
        limits.close_on_expiry = true;
        let mut timers =
            SessionTimers::start(&limits, limits.expiry_deadline(&connection), false, false);
        let (due, after) = next_after(&mut timers).await;
        assert_eq!(due, Due::Expiry);
        // `exp` counts whole seconds, read once from the wall clock: 5 s, give or take the
        // second that may tick over while the test sets up.
        assert!(
            after >= Duration::from_secs(4) && after <= Duration::from_secs(5),
            "{after:?}"
        );
        // Without close_on_expiry, the token's expiry ends nothing.
        limits.close_on_expiry = false;
        let mut timers =
            SessionTimers::start(&limits, limits.expiry_deadline(&connection), false, false);
        assert_eq!(
            next_after(&mut timers).await,
            (Due::Ping, Duration::from_secs(100))
        );
    }
}

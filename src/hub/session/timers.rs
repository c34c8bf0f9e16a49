//! The session's clocks: keep-alive pings, the client timeout, the token's expiry and the Acks
//! of stateful reconnect. All are `tokio::time` deadlines, so the tests below pause the clock
//! and advance it instead of waiting. A token's `exp` (Unix seconds, the wall clock) is turned
//! into a tokio deadline once, when the timer is set ([`SessionLimits::expiry_deadline`]).

use super::SessionLimits;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{interval_at, sleep, sleep_until, Instant, Interval, MissedTickBehavior, Sleep};

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

pub(super) struct SessionTimers {
    keep_alive: Interval,
    client_timeout: Duration,
    client_deadline: Pin<Box<Sleep>>,
    expiry: Pin<Box<Sleep>>,
    acks: Interval,
    /// Long polling keeps itself alive: its clients send no pings and expect none.
    inherent_keep_alive: bool,
    acknowledges: bool,
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
        let mut keep_alive = interval_at(now + limits.keep_alive, limits.keep_alive);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut acks = interval_at(now + ACK_INTERVAL, ACK_INTERVAL);
        acks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            keep_alive,
            client_timeout: limits.client_timeout,
            client_deadline: Box::pin(sleep(limits.client_timeout)),
            expiry: Box::pin(sleep_until(expiry)),
            acks,
            inherent_keep_alive,
            acknowledges,
        }
    }

    /// Waits for the next thing due, expiry first. Cancel-safe: a `select!` may drop it.
    pub(super) async fn next(&mut self) -> Due {
        tokio::select! {
            biased;
            _ = &mut self.expiry => Due::Expiry,
            _ = &mut self.client_deadline, if !self.inherent_keep_alive => Due::ClientSilent,
            _ = self.keep_alive.tick(), if !self.inherent_keep_alive => Due::Ping,
            _ = self.acks.tick(), if self.acknowledges => Due::Ack,
        }
    }

    /// The client was heard from (or its silence is excused): the client timeout starts over.
    pub(super) fn heard_from_client(&mut self) {
        self.client_deadline
            .as_mut()
            .reset(Instant::now() + self.client_timeout);
    }

    /// Moves the expiry deadline (after a refresh, or when it fired early).
    pub(super) fn expire_at(&mut self, at: Instant) {
        self.expiry.as_mut().reset(at);
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

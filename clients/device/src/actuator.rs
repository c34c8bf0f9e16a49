//! The device's local actuator: one command at a time, each taking `--actuation-time`.
//! Commands that arrive while it is busy wait in a bounded queue and run in arrival order, so
//! their results go back in that order. It outlives connections: a command accepted before a
//! connection dropped is still carried out (once: its nonce is already recorded) and its result
//! waits in the outbox for the next connection.

use crate::commands::{AcceptedCommand, Handled};
use crate::device::SimulatedDevice;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Commands waiting for the actuator, at most; beyond it a command is answered `rejected`
/// with reason `device_busy`.
pub const QUEUE_CAPACITY: usize = 64;

#[derive(Debug)]
pub struct Actuator {
    actuation_time: Duration,
    /// Accepted commands with the time each arrived, the front one being carried out.
    queue: VecDeque<(AcceptedCommand, Instant)>,
    /// When the front command is done.
    done_at: Option<Instant>,
}

impl Actuator {
    pub fn new(actuation_time: Duration) -> Self {
        Self {
            actuation_time,
            queue: VecDeque::new(),
            done_at: None,
        }
    }

    /// Queues `command`; gives it back when the queue is full.
    pub fn submit(
        &mut self,
        command: AcceptedCommand,
        now: Instant,
    ) -> Result<(), AcceptedCommand> {
        if self.queue.len() >= QUEUE_CAPACITY {
            return Err(command);
        }
        if self.queue.is_empty() {
            self.done_at = Some(now + self.actuation_time);
        }
        self.queue.push_back((command, now));
        Ok(())
    }

    /// When the command being carried out is done, if there is one.
    pub fn done_at(&self) -> Option<Instant> {
        self.done_at
    }

    /// Commands queued, the one being carried out included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Completes the front command on `device` and starts the next one; returns its outcome
    /// and when it arrived.
    pub fn finish(
        &mut self,
        device: &mut SimulatedDevice,
        now: Instant,
    ) -> Option<(Handled, Instant)> {
        let (command, received) = self.queue.pop_front()?;
        self.done_at = (!self.queue.is_empty()).then(|| now + self.actuation_time);
        Some((command.execute(device), received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn command(id: &str) -> AcceptedCommand {
        AcceptedCommand {
            command_id: id.into(),
            name: "LIGHT_ON".into(),
            args: Value::Null,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commands_finish_one_after_another_in_order() {
        let mut actuator = Actuator::new(Duration::from_secs(2));
        let mut device = SimulatedDevice::default();
        let start = Instant::now();
        actuator.submit(command("a"), start).unwrap();
        actuator.submit(command("b"), start).unwrap();
        assert_eq!(actuator.done_at(), Some(start + Duration::from_secs(2)));
        let done = actuator.done_at().unwrap();
        let (first, _) = actuator.finish(&mut device, done).unwrap();
        assert!(matches!(first, Handled::Executed { reply, .. } if reply.command_id == "a"));
        assert_eq!(actuator.done_at(), Some(done + Duration::from_secs(2)));
        let (second, _) = actuator.finish(&mut device, done).unwrap();
        assert!(matches!(second, Handled::Executed { reply, .. } if reply.command_id == "b"));
        assert_eq!(actuator.done_at(), None);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut actuator = Actuator::new(Duration::ZERO);
        let now = Instant::now();
        for i in 0..QUEUE_CAPACITY {
            actuator.submit(command(&i.to_string()), now).unwrap();
        }
        assert!(actuator.submit(command("one too many"), now).is_err());
    }
}

//! Commands sent to devices and not yet answered, with exact counts overall and per issuer.
//!
//! A cache with approximate counts (moka's `entry_count` lags its inserts) cannot enforce a
//! per-user cap, and a cache under pressure may evict a command that is still waiting for its
//! result. This table never evicts: a command leaves it when its result arrives, when it times
//! out, when its device goes offline, or when it could not be delivered. Every operation first
//! drops the commands whose time is up, so the counts are exact at each check.
//!
//! [`PendingCommands`] is the seam a backplane implements so that a result reaches its command
//! whichever node the device reconnects to; [`InProcessPendingCommands`] serves one node.
//!
//! A command whose device went offline no longer counts against its issuer, but is remembered
//! (bounded, oldest forgotten first, until its own deadline) as an orphan: `signet-device` keeps
//! results it could not send during a short outage and sends them after reconnecting, and such a
//! late result still reaches the issuer.

use crate::BackplaneError;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A command waiting for its device's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    pub device_id: String,
    pub issuer: String,
}

/// Why a command could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFull {
    /// Every user together holds `home.max_pending_commands`.
    Server,
    /// This issuer holds `home.max_pending_commands_per_user`; others are unaffected.
    Issuer,
}

/// Why a command could not be recorded or looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    #[error("too many commands are waiting for results ({0:?})")]
    Full(PendingFull),
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

/// Commands sent to devices and not yet answered, behind `SendCommand` and `CommandResult`.
/// The caps (`home.max_pending_commands`, `home.max_pending_commands_per_user`) and the
/// timeout (`home.command_timeout_secs`) are the implementation's to enforce, exactly.
#[async_trait]
pub trait PendingCommands: Send + Sync {
    /// Records a command sent now, unless the server's or its issuer's cap is reached.
    async fn insert(&self, id: String, command: PendingCommand) -> Result<(), PendingError>;
    /// Removes and returns the command `id` if it is pending for `device_id` (or was, before
    /// its device went offline, and its deadline has not passed): a result is accepted once,
    /// and only from the device the command went to.
    async fn take(&self, id: &str, device_id: &str)
        -> Result<Option<PendingCommand>, PendingError>;
    /// Forgets a command (it could not be delivered).
    async fn remove(&self, id: &str) -> Result<(), PendingError>;
    /// The device went offline (its last connection ended): its commands stop counting against
    /// their issuers; a result it sends after reconnecting before their deadlines is still
    /// taken. Returns how many commands were pending for it.
    async fn remove_device(&self, device_id: &str) -> Result<usize, PendingError>;
}

#[async_trait]
impl PendingCommands for InProcessPendingCommands {
    async fn insert(&self, id: String, command: PendingCommand) -> Result<(), PendingError> {
        self.insert_at(id, command, Instant::now())
            .map_err(PendingError::Full)
    }

    async fn take(
        &self,
        id: &str,
        device_id: &str,
    ) -> Result<Option<PendingCommand>, PendingError> {
        Ok(self.take_at(id, device_id, Instant::now()))
    }

    async fn remove(&self, id: &str) -> Result<(), PendingError> {
        self.lock().remove(id);
        Ok(())
    }

    async fn remove_device(&self, device_id: &str) -> Result<usize, PendingError> {
        Ok(self.orphan_device(device_id))
    }
}

/// The single-node table.
#[derive(Debug)]
pub struct InProcessPendingCommands {
    table: Mutex<Table>,
    max_total: usize,
    max_per_issuer: usize,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct Table {
    commands: HashMap<String, Entry>,
    per_issuer: HashMap<String, usize>,
    by_device: HashMap<String, HashSet<String>>,
    /// Command ids by deadline; the sequence number keeps equal instants apart.
    deadlines: BTreeMap<(Instant, u64), String>,
    sequence: u64,
    /// Commands of devices that went offline, with their deadlines; they count for no one.
    orphans: HashMap<String, (PendingCommand, Instant)>,
    /// Orphan ids, oldest first: the bound drops from the front.
    orphan_order: VecDeque<String>,
}

#[derive(Debug)]
struct Entry {
    command: PendingCommand,
    deadline: (Instant, u64),
}

impl InProcessPendingCommands {
    pub fn new(max_total: u64, max_per_issuer: u64, timeout: Duration) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_total: usize::try_from(max_total).unwrap_or(usize::MAX),
            max_per_issuer: usize::try_from(max_per_issuer).unwrap_or(usize::MAX),
            timeout,
        }
    }

    fn insert_at(
        &self,
        id: String,
        command: PendingCommand,
        now: Instant,
    ) -> Result<(), PendingFull> {
        let mut table = self.lock();
        table.expire(now);
        if table.per_issuer.get(&command.issuer).copied().unwrap_or(0) >= self.max_per_issuer {
            return Err(PendingFull::Issuer);
        }
        if table.commands.len() >= self.max_total {
            return Err(PendingFull::Server);
        }
        // Ids are 128-bit random; a repeat would only replace its own entry.
        table.remove(&id);
        table.sequence += 1;
        let deadline = (now + self.timeout, table.sequence);
        *table.per_issuer.entry(command.issuer.clone()).or_default() += 1;
        table
            .by_device
            .entry(command.device_id.clone())
            .or_default()
            .insert(id.clone());
        table.deadlines.insert(deadline, id.clone());
        table.commands.insert(id, Entry { command, deadline });
        Ok(())
    }

    fn take_at(&self, id: &str, device_id: &str, now: Instant) -> Option<PendingCommand> {
        let mut table = self.lock();
        table.expire(now);
        if !table.commands.contains_key(id) {
            let (command, deadline) = table.orphans.get(id)?;
            if command.device_id != device_id || *deadline <= now {
                return None;
            }
            table.orphan_order.retain(|orphan| orphan != id);
            return table.orphans.remove(id).map(|(command, _)| command);
        }
        if table.commands.get(id)?.command.device_id != device_id {
            return None;
        }
        table.remove(id)
    }

    /// Frees the slots of every command pending for a device that went offline. Each is kept as
    /// an orphan until its deadline, so a result the device sends after reconnecting is still
    /// delivered; at most as many orphans as the table's total cap are kept.
    fn orphan_device(&self, device_id: &str) -> usize {
        let mut table = self.lock();
        let ids = table.by_device.remove(device_id).unwrap_or_default();
        let mut removed = 0;
        for id in ids {
            let Some(entry) = table.commands.get(&id) else {
                continue;
            };
            let deadline = entry.deadline.0;
            if let Some(command) = table.remove(&id) {
                removed += 1;
                if table.orphans.len() >= self.max_total {
                    if let Some(oldest) = table.orphan_order.pop_front() {
                        table.orphans.remove(&oldest);
                    }
                }
                table.orphan_order.push_back(id.clone());
                table.orphans.insert(id, (command, deadline));
            }
        }
        removed
    }

    /// Commands `issuer` has waiting (exact).
    #[cfg(test)]
    fn pending_for(&self, issuer: &str) -> usize {
        self.lock().per_issuer.get(issuer).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().commands.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // No code panics while holding the lock; if one did, the table is still consistent
        // enough to keep serving (each operation leaves it whole).
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Table {
    /// Drops the commands whose deadline passed.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            self.remove(&id);
        }
        while let Some(oldest) = self.orphan_order.front() {
            match self.orphans.get(oldest) {
                Some((_, deadline)) if *deadline > now => break,
                _ => {
                    if let Some(id) = self.orphan_order.pop_front() {
                        self.orphans.remove(&id);
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<PendingCommand> {
        let entry = self.commands.remove(id)?;
        self.deadlines.remove(&entry.deadline);
        let issuer = &entry.command.issuer;
        if let Some(count) = self.per_issuer.get_mut(issuer) {
            *count -= 1;
            if *count == 0 {
                self.per_issuer.remove(issuer);
            }
        }
        let device = &entry.command.device_id;
        if let Some(ids) = self.by_device.get_mut(device) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_device.remove(device);
            }
        }
        Some(entry.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(device: &str, issuer: &str) -> PendingCommand {
        PendingCommand {
            device_id: device.into(),
            issuer: issuer.into(),
        }
    }

    #[tokio::test]
    async fn an_issuer_at_its_cap_is_refused_and_others_are_not() {
        let pending = InProcessPendingCommands::new(100, 3, Duration::from_secs(60));
        for i in 0..3 {
            pending
                .insert(format!("a{i}"), command("d1", "alice"))
                .await
                .unwrap();
        }
        assert_eq!(
            pending.insert("a3".into(), command("d1", "alice")).await,
            Err(PendingError::Full(PendingFull::Issuer))
        );
        pending
            .insert("b0".into(), command("d2", "bob"))
            .await
            .unwrap();
        assert_eq!(pending.pending_for("alice"), 3);
        // A result frees the slot at once (exact count, no lag).
        assert_eq!(
            pending.take("a0", "d1").await.unwrap(),
            Some(command("d1", "alice"))
        );
        pending
            .insert("a3".into(), command("d1", "alice"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_server_cap_holds_across_issuers() {
        let pending = InProcessPendingCommands::new(2, 10, Duration::from_secs(60));
        pending
            .insert("a".into(), command("d", "alice"))
            .await
            .unwrap();
        pending
            .insert("b".into(), command("d", "bob"))
            .await
            .unwrap();
        assert_eq!(
            pending.insert("c".into(), command("d", "carol")).await,
            Err(PendingError::Full(PendingFull::Server))
        );
    }

    #[tokio::test]
    async fn a_result_is_taken_once_and_only_by_its_device() {
        let pending = InProcessPendingCommands::new(10, 10, Duration::from_secs(60));
        pending
            .insert("c".into(), command("d1", "alice"))
            .await
            .unwrap();
        assert_eq!(pending.take("c", "d2").await.unwrap(), None);
        assert_eq!(
            pending.take("c", "d1").await.unwrap(),
            Some(command("d1", "alice"))
        );
        assert_eq!(pending.take("c", "d1").await.unwrap(), None);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn commands_time_out_and_free_their_slots() {
        let timeout = Duration::from_secs(60);
        let pending = InProcessPendingCommands::new(10, 2, timeout);
        let start = Instant::now();
        pending
            .insert_at("a".into(), command("d", "alice"), start)
            .unwrap();
        pending
            .insert_at("b".into(), command("d", "alice"), start + timeout / 2)
            .unwrap();
        assert_eq!(
            pending.insert_at("c".into(), command("d", "alice"), start + timeout / 2),
            Err(PendingFull::Issuer)
        );
        // "a" is past its deadline: its late result is refused and its slot is free.
        let later = start + timeout;
        assert_eq!(pending.take_at("a", "d", later), None);
        assert_eq!(pending.pending_for("alice"), 1);
        pending
            .insert_at("c".into(), command("d", "alice"), later)
            .unwrap();
        assert_eq!(
            pending.take_at("b", "d", later),
            Some(command("d", "alice"))
        );
    }

    #[tokio::test]
    async fn a_device_going_offline_frees_its_commands() {
        let pending = InProcessPendingCommands::new(10, 10, Duration::from_secs(60));
        pending
            .insert("a".into(), command("d1", "alice"))
            .await
            .unwrap();
        pending
            .insert("b".into(), command("d1", "bob"))
            .await
            .unwrap();
        pending
            .insert("c".into(), command("d2", "alice"))
            .await
            .unwrap();
        assert_eq!(pending.remove_device("d1").await.unwrap(), 2);
        assert_eq!(pending.pending_for("alice"), 1);
        assert_eq!(pending.pending_for("bob"), 0);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.remove_device("d1").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_late_result_of_an_offline_device_is_still_taken_once_before_its_deadline() {
        let timeout = Duration::from_secs(60);
        let pending = InProcessPendingCommands::new(2, 10, timeout);
        let start = Instant::now();
        pending
            .insert_at("a".into(), command("d1", "alice"), start)
            .unwrap();
        pending
            .insert_at("b".into(), command("d1", "alice"), start)
            .unwrap();
        pending.remove_device("d1").await.unwrap();
        // The slots are free at once...
        pending
            .insert_at("c".into(), command("d2", "alice"), start)
            .unwrap();
        // ...and the device's result after reconnecting still finds its command, once, and
        // only from that device.
        assert!(pending.take_at("a", "d2", start).is_none());
        assert!(pending.take_at("a", "d1", start).is_some());
        assert!(pending.take_at("a", "d1", start).is_none());
        assert!(
            pending.take_at("b", "d1", start + timeout).is_none(),
            "timed out"
        );
        // Orphans are bounded by the table's cap, oldest forgotten first.
        pending
            .insert_at("x".into(), command("d3", "bob"), start)
            .unwrap();
        pending.remove_device("d2").await.unwrap();
        pending.remove_device("d3").await.unwrap();
        pending
            .insert_at("y".into(), command("d4", "bob"), start)
            .unwrap();
        pending.remove_device("d4").await.unwrap();
        assert!(
            pending.take_at("c", "d2", start).is_none(),
            "the oldest orphan was dropped"
        );
        assert!(pending.take_at("y", "d4", start).is_some());
    }

    #[tokio::test]
    async fn nothing_is_evicted_before_its_time() {
        let pending = InProcessPendingCommands::new(1_000, 1_000, Duration::from_secs(60));
        for i in 0..1_000 {
            pending
                .insert(format!("c{i}"), command("d", &format!("u{}", i % 7)))
                .await
                .unwrap();
        }
        for i in 0..1_000 {
            assert!(pending.take(&format!("c{i}"), "d").await.unwrap().is_some());
        }
        assert_eq!(pending.len(), 0);
    }
}

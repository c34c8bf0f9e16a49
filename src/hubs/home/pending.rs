//! Commands sent to devices and not yet answered, with exact counts overall and per issuer.
//!
//! A cache with approximate counts (moka's `entry_count` lags its inserts) cannot enforce a
//! per-user cap, and a cache under pressure may evict a command that is still waiting for its
//! result. This table never evicts: a command leaves it when its result arrives, when it times
//! out, when its device goes offline, or when it could not be delivered. Every operation first
//! drops the commands whose time is up, so the counts are exact at each check.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A command waiting for its device's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingCommand {
    pub device_id: String,
    pub issuer: String,
}

/// Why a command could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingFull {
    /// Every user together holds `home.max_pending_commands`.
    Server,
    /// This issuer holds `home.max_pending_commands_per_user`; others are unaffected.
    Issuer,
}

/// The table behind `SendCommand` and `CommandResult`.
#[derive(Debug)]
pub(super) struct PendingCommands {
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
}

#[derive(Debug)]
struct Entry {
    command: PendingCommand,
    deadline: (Instant, u64),
}

impl PendingCommands {
    pub fn new(max_total: u64, max_per_issuer: u64, timeout: Duration) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_total: usize::try_from(max_total).unwrap_or(usize::MAX),
            max_per_issuer: usize::try_from(max_per_issuer).unwrap_or(usize::MAX),
            timeout,
        }
    }

    /// Records a command sent now, unless the server's or its issuer's cap is reached.
    pub fn insert(&self, id: String, command: PendingCommand) -> Result<(), PendingFull> {
        self.insert_at(id, command, Instant::now())
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

    /// Removes and returns the command `id` if it is pending for `device_id`: a result is
    /// accepted once, and only from the device the command went to.
    pub fn take(&self, id: &str, device_id: &str) -> Option<PendingCommand> {
        self.take_at(id, device_id, Instant::now())
    }

    fn take_at(&self, id: &str, device_id: &str, now: Instant) -> Option<PendingCommand> {
        let mut table = self.lock();
        table.expire(now);
        if table.commands.get(id)?.command.device_id != device_id {
            return None;
        }
        table.remove(id)
    }

    /// Forgets a command (it could not be delivered).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Forgets every command pending for a device that went offline: it will never answer them.
    pub fn remove_device(&self, device_id: &str) -> usize {
        let mut table = self.lock();
        let ids = table.by_device.remove(device_id).unwrap_or_default();
        ids.iter().filter(|id| table.remove(id).is_some()).count()
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

    #[test]
    fn an_issuer_at_its_cap_is_refused_and_others_are_not() {
        let pending = PendingCommands::new(100, 3, Duration::from_secs(60));
        for i in 0..3 {
            pending
                .insert(format!("a{i}"), command("d1", "alice"))
                .unwrap();
        }
        assert_eq!(
            pending.insert("a3".into(), command("d1", "alice")),
            Err(PendingFull::Issuer)
        );
        pending.insert("b0".into(), command("d2", "bob")).unwrap();
        assert_eq!(pending.pending_for("alice"), 3);
        // A result frees the slot at once (exact count, no lag).
        assert_eq!(pending.take("a0", "d1"), Some(command("d1", "alice")));
        pending.insert("a3".into(), command("d1", "alice")).unwrap();
    }

    #[test]
    fn the_server_cap_holds_across_issuers() {
        let pending = PendingCommands::new(2, 10, Duration::from_secs(60));
        pending.insert("a".into(), command("d", "alice")).unwrap();
        pending.insert("b".into(), command("d", "bob")).unwrap();
        assert_eq!(
            pending.insert("c".into(), command("d", "carol")),
            Err(PendingFull::Server)
        );
    }

    #[test]
    fn a_result_is_taken_once_and_only_by_its_device() {
        let pending = PendingCommands::new(10, 10, Duration::from_secs(60));
        pending.insert("c".into(), command("d1", "alice")).unwrap();
        assert_eq!(pending.take("c", "d2"), None);
        assert_eq!(pending.take("c", "d1"), Some(command("d1", "alice")));
        assert_eq!(pending.take("c", "d1"), None);
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn commands_time_out_and_free_their_slots() {
        let timeout = Duration::from_secs(60);
        let pending = PendingCommands::new(10, 2, timeout);
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

    #[test]
    fn a_device_going_offline_frees_its_commands() {
        let pending = PendingCommands::new(10, 10, Duration::from_secs(60));
        pending.insert("a".into(), command("d1", "alice")).unwrap();
        pending.insert("b".into(), command("d1", "bob")).unwrap();
        pending.insert("c".into(), command("d2", "alice")).unwrap();
        assert_eq!(pending.remove_device("d1"), 2);
        assert_eq!(pending.pending_for("alice"), 1);
        assert_eq!(pending.pending_for("bob"), 0);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.remove_device("d1"), 0);
    }

    #[test]
    fn nothing_is_evicted_before_its_time() {
        let pending = PendingCommands::new(1_000, 1_000, Duration::from_secs(60));
        for i in 0..1_000 {
            pending
                .insert(format!("c{i}"), command("d", &format!("u{}", i % 7)))
                .unwrap();
        }
        for i in 0..1_000 {
            assert!(pending.take(&format!("c{i}"), "d").is_some());
        }
        assert_eq!(pending.len(), 0);
    }
}

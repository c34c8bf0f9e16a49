//! What the load generator reads from and asks of the operating system: its file limit, and a
//! process's memory and CPU time from `/proc` (the server's, to report cost per connection).

use serde::Serialize;
use std::fs;

/// Raises this process's open-file limit to at least `wanted` descriptors.
///
/// The soft limit goes up to the hard limit; the hard limit itself only rises with privilege
/// (root or `CAP_SYS_RESOURCE`), up to `fs.nr_open`. Returns the soft limit now in force, so the
/// caller can warn when it is below what the run needs.
pub fn raise_file_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the pointer it is given, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let ceiling = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(limit.rlim_max);
    let target = wanted.min(ceiling);
    if target > limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: target,
        };
        // SAFETY: setrlimit reads one valid `rlimit`; failure (no privilege) is handled below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return target;
        }
    }
    let soft = libc::rlimit {
        rlim_cur: target.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        soft.rlim_cur
    } else {
        limit.rlim_cur
    }
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time `pid` has used, user plus system, in seconds (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3, so fields 14 and 15 are at indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// CPU time of several processes together.
fn total_cpu_seconds(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

/// Resident memory of several processes together, in KiB.
pub fn total_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

/// The 1, 5 and 15 minute load averages, recorded with every figure because the machine the
/// benchmarks run on may be shared.
pub fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().ok());
    Some([parts.next()??, parts.next()??, parts.next()??])
}

/// CPU used by processes over a measured interval, as a percentage of one core.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
    start_cpu: f64,
    start: std::time::Instant,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// CPU seconds used during the interval.
    pub cpu_s: f64,
    /// `cpu_s` over wall-clock seconds, in percent of one core (200 = two cores busy).
    pub pct_of_core: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Option<Self> {
        Self::of(&[pid])
    }

    /// Several processes together (the nodes of a cluster); `None` when `pids` is empty or one
    /// of them cannot be read.
    pub fn of(pids: &[u32]) -> Option<Self> {
        if pids.is_empty() {
            return None;
        }
        Some(Self {
            pids: pids.to_vec(),
            start_cpu: total_cpu_seconds(pids)?,
            start: std::time::Instant::now(),
        })
    }

    pub fn stop(&self) -> Option<CpuUse> {
        let cpu_s = total_cpu_seconds(&self.pids)? - self.start_cpu;
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        Some(CpuUse {
            cpu_s,
            pct_of_core: cpu_s / wall * 100.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_seconds(pid).is_some());
        assert!(load_average().is_some());
    }
}

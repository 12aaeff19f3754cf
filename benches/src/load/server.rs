//! The server process's CPU time and memory, read from `/proc/<pid>` (Linux).

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on
/// every Linux ABI this runs on).
const USER_HZ: u64 = 100;

/// A snapshot of the server process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// User + system CPU time of all threads, milliseconds.
    pub cpu_ms: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
pub fn snapshot(pid: u32) -> Option<Snapshot> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Snapshot { cpu_ms: cpu_ms_from_stat(&stat)?, rss_kib: rss_from_status(&status).unwrap_or(0) })
}

/// utime + stime (fields 14 and 15; the command name, field 2, may contain spaces).
fn cpu_ms_from_stat(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000 / USER_HZ)
}

fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (scepd worker) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 200 300";
        assert_eq!(cpu_ms_from_stat(stat), Some(3000));
        assert_eq!(rss_from_status("Name:\tx\nVmRSS:\t  10240 kB\n"), Some(10240));
    }

    #[test]
    fn reads_this_process() {
        let s = snapshot(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}

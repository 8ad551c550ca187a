//! Watching the processes: resident memory, open descriptors and CPU time
//! from `/proc`, sampled on a schedule, and panics found in their logs.

use std::path::Path;
use std::time::Duration;

/// One sample of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// When (since the soak started).
    pub at: Duration,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u32,
    /// User + system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

/// The samples of one process (one incarnation of a node, or the
/// registry).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Process name (`node7.2`, `registry.1`).
    pub name: String,
    /// The node it runs, if any.
    pub node: Option<usize>,
    /// Index of the process in the soak's list.
    pub proc: usize,
    /// The samples, in time order.
    pub samples: Vec<Sample>,
}

impl Series {
    /// The first sample at or after `t`.
    pub(crate) fn at_or_after(&self, t: Duration) -> Option<&Sample> {
        self.samples.iter().find(|s| s.at >= t)
    }

    /// Growth from the first sample at or after `from` to the last sample:
    /// (RSS in percent, descriptors), when both exist and differ.
    pub(crate) fn growth(&self, from: Duration) -> Option<(f64, i64)> {
        let a = self.at_or_after(from)?;
        let b = self.samples.last()?;
        if b.at <= a.at || a.rss_kib == 0 {
            return None;
        }
        let rss = 100.0 * (b.rss_kib as f64 - a.rss_kib as f64) / a.rss_kib as f64;
        Some((rss, i64::from(b.fds) - i64::from(a.fds)))
    }
}

/// Samples process `pid` now, if it exists.
pub(crate) fn sample(pid: u32, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Sample {
        at,
        rss_kib,
        fds: u32::try_from(fds).unwrap_or(u32::MAX),
        cpu_ticks: cpu_ticks(&stat)?,
    })
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15; the name
/// in parentheses may hold spaces, so count from its closing parenthesis).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The lines of `log` that report a panic.
pub(crate) fn panics(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked at"))
        .map(str::to_owned)
        .collect()
}

/// How many lines of `log` are errors (tracing's ` ERROR ` level).
pub(crate) fn errors(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_of_a_stat_line() {
        let stat = "1234 (re6st node) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    100 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id(), Duration::ZERO).unwrap();
        assert!(s.rss_kib > 0 && s.fds > 0);
    }

    #[test]
    fn growth_from_the_reference_sample() {
        let at = |secs, rss, fds| Sample {
            at: Duration::from_secs(secs),
            rss_kib: rss,
            fds,
            cpu_ticks: 0,
        };
        let s = Series {
            name: "node1.1".into(),
            node: Some(0),
            proc: 0,
            samples: vec![at(0, 5000, 10), at(60, 10_000, 12), at(120, 11_000, 12)],
        };
        let (rss, fds) = s.growth(Duration::from_secs(30)).unwrap();
        assert!((rss - 10.0).abs() < 1e-9);
        assert_eq!(fds, 0);
        assert_eq!(s.growth(Duration::from_secs(200)), None);
    }
}

//! What `re6st bench` measures, one call each: a TCP transfer (`iperf3`),
//! ping round trips (`ping -6`, one figure per reply), the CPU time of a
//! process (the scheduler's nanoseconds, not clock ticks), and the summary
//! of repeated figures (median and spread).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use re6st::netns::Lab;
use serde::Serialize;

/// Median, minimum and maximum of repeated figures, and the figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest figure.
    pub min: f64,
    /// The largest figure.
    pub max: f64,
    /// Every figure, in the order measured.
    pub values: Vec<f64>,
}

impl Spread {
    /// The summary of `values` (non-finite figures are left out); `None`
    /// when nothing is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            values: values.to_vec(),
        })
    }

    /// `median (min-max)` with `decimals`.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// The median of `values`, if any.
pub fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

/// Whether the bench runs its tools and nodes under `SCHED_FIFO`
/// (`--fifo`).
static FIFO: AtomicBool = AtomicBool::new(false);

/// Runs the nodes, `iperf3` and `ping` under `chrt -f 10` from now on.
pub fn set_fifo(on: bool) {
    FIFO.store(on, Ordering::Relaxed);
}

/// `program` and the arguments before the caller's: `chrt -f 10 program`
/// under `--fifo`.
pub fn wrapped(program: &str) -> (String, Vec<String>) {
    if FIFO.load(Ordering::Relaxed) {
        (
            "chrt".into(),
            vec!["-f".into(), "10".into(), program.into()],
        )
    } else {
        (program.into(), Vec::new())
    }
}

/// A command of the lab that dies with the bench (Ctrl-C drops it).
fn command(lab: &Lab, ns: &str, program: &str) -> tokio::process::Command {
    let (program, first) = wrapped(program);
    let mut c = tokio::process::Command::from(lab.command(ns, &program));
    c.args(first);
    c.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

/// TCP goodput in Gbit/s of an `iperf3` transfer of `secs` seconds with
/// `streams` parallel connections from namespace `from` to `dst` (an
/// `iperf3 -s` must listen there). Retries for a few seconds while the
/// server starts.
pub async fn tcp(
    lab: &Lab,
    from: &str,
    dst: IpAddr,
    secs: f64,
    streams: u32,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let out = command(lab, from, "iperf3")
            .args(["-c", &dst.to_string(), "-t", &format!("{secs}"), "-J"])
            .args(["-P", &streams.to_string()])
            .output()
            .await
            .context("running iperf3 (install it: apt-get install iperf3)")?;
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        // iperf3 -J exits 0 even when the server is not listening yet.
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "iperf3 from {from} to {dst} failed: {}",
                json["error"].as_str().unwrap_or("no result")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Round-trip times in ms of `count` Echo Requests from namespace `from`
/// to `dst`, `interval` apart (root may go below 0.2 s), one figure per
/// reply; lost pings have none.
pub async fn ping(
    lab: &Lab,
    from: &str,
    dst: IpAddr,
    count: u32,
    interval: Duration,
) -> anyhow::Result<Vec<f64>> {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let out = command(lab, from, "ping")
        .args([family, "-n", "-W", "2", "-c", &count.to_string()])
        .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
        .arg(dst.to_string())
        .output()
        .await
        .context("running ping (install it: apt-get install iputils-ping)")?;
    Ok(parse_ping_times(&String::from_utf8_lossy(&out.stdout)))
}

/// The `time=X ms` of every reply line of `ping`.
pub fn parse_ping_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// CPU time a process used so far, read from the scheduler's per-thread
/// nanosecond counters (`/proc/PID/task/*/schedstat`): clock ticks are too
/// coarse for an idle node.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    threads: Vec<(u32, u64)>,
}

impl CpuSample {
    /// Reads process `pid`.
    pub fn read(pid: u32) -> anyhow::Result<CpuSample> {
        let dir = format!("/proc/{pid}/task");
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue; // the thread just ended
            };
            if let Some(ns) = text.split_whitespace().next().and_then(|s| s.parse().ok()) {
                threads.push((tid, ns));
            }
        }
        Ok(CpuSample { threads })
    }

    /// CPU nanoseconds used between `earlier` and this sample: the growth
    /// of every thread seen then, plus all of the threads started since (a
    /// thread that ended in between loses what it used after `earlier`).
    pub fn since(&self, earlier: &CpuSample) -> u64 {
        self.threads
            .iter()
            .map(|(tid, now)| {
                let before = earlier
                    .threads
                    .iter()
                    .find(|(t, _)| t == tid)
                    .map_or(0, |(_, ns)| *ns);
                now.saturating_sub(before)
            })
            .sum()
    }
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 1-minute load average and the number of cores, for the report.
pub fn load() -> (f64, usize) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (load, cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0]).unwrap().median, 2.5);
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(s.show(1), "2.0 (1.0-3.0)");
    }

    #[test]
    fn ping_reply_times() {
        let out = "PING fd00::2 56 data bytes\n\
                   64 bytes from fd00::2: icmp_seq=1 ttl=64 time=0.402 ms\n\
                   64 bytes from fd00::2: icmp_seq=2 ttl=64 time=1.10 ms\n\
                   --- fd00::2 ping statistics ---\n\
                   rtt min/avg/max/mdev = 0.402/0.751/1.100/0.349 ms\n";
        assert_eq!(parse_ping_times(out), vec![0.402, 1.10]);
        assert!(parse_ping_times("garbage time=x ms").is_empty());
    }

    /// Spins until the calling thread has used `cpu` of CPU time, however
    /// loaded the machine is (bounded by a minute of wall time).
    fn spin_for_cpu(cpu: Duration) {
        let used = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let (start, wall) = (used(), Instant::now());
        while used() - start < cpu && wall.elapsed() < Duration::from_secs(60) {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn cpu_of_this_process_grows_and_counts_new_threads() {
        let pid = std::process::id();
        let before = CpuSample::read(pid).unwrap();
        // A thread started after `before`, alive when `after` is read.
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (end, end_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            spin_for_cpu(Duration::from_millis(30));
            ready_tx.send(()).unwrap();
            let _ = end_rx.recv();
        });
        spin_for_cpu(Duration::from_millis(30));
        ready.recv().unwrap();
        let after = CpuSample::read(pid).unwrap();
        end.send(()).unwrap();
        t.join().unwrap();
        // This thread's 30 ms and all of the new thread's 30 ms.
        let used = after.since(&before);
        assert!(used >= 55_000_000, "{used} ns");
        assert!(rss_kib(pid).unwrap() > 0);
    }
}

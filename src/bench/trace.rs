//! `re6st bench --perf DIR`: scheduler and syscall traces of the two
//! nodes of the two-node overlay while pings cross it, alone and during a
//! TCP transfer. The traces show every thread a packet wakes and every
//! syscall it needs on its way through a node (`benches/stages.py` reads
//! them).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::BenchArgs;
use super::measure;
use super::paths::PathLab;

/// The events: syscall entries and exits (with their fd and result),
/// context switches and wake-ups.
const EVENTS: &str =
    "raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch,sched:sched_wakeup";

/// Records `idle.data` (pings alone) and `load.data` (pings during a
/// transfer) in `dir`, with each node's open files (`fd-a.txt`,
/// `fd-b.txt`: which descriptor is the TUN device, which the UDP socket).
pub async fn record(lab: &PathLab, args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let row = lab
        .rows()
        .iter()
        .find(|r| r.key == "two-node")
        .context("no two-node row")?;
    for (name, pid) in ["a", "b"].iter().zip(&row.pids) {
        let mut text = String::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let e = e?;
            if let Ok(target) = std::fs::read_link(e.path()) {
                text.push_str(&format!(
                    "{} {}\n",
                    e.file_name().to_string_lossy(),
                    target.display()
                ));
            }
        }
        std::fs::write(dir.join(format!("fd-{name}.txt")), text)?;
    }
    let pids: Vec<String> = row.pids.iter().map(u32::to_string).collect();
    std::fs::write(dir.join("pids.txt"), pids.join(" ") + "\n")?;
    let pids = pids.join(",");
    let secs = f64::from(args.pings) * 0.2 + 0.5;
    let perf = |out: &str, secs: f64| {
        let mut c = tokio::process::Command::new("perf");
        c.args(["record", "-q", "-e", EVENTS, "-p", &pids, "-o"])
            .arg(dir.join(out))
            .args(["--", "sleep", &format!("{secs:.1}")])
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let idle = perf("idle.data", secs)
        .spawn()
        .context("running perf (apt-get install linux-perf)")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    measure::ping(
        &lab.lab,
        row.from,
        row.dst,
        args.pings,
        Duration::from_millis(200),
    )
    .await?;
    check(idle.wait_with_output().await?)?;

    let load = perf("load.data", args.secs).spawn()?;
    let pings = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = args.pings;
        let every = ((args.secs - 0.75).max(0.1) / f64::from(n)).clamp(0.01, 0.2);
        measure::ping(
            &lab.lab,
            row.from,
            row.dst,
            n,
            Duration::from_secs_f64(every),
        )
        .await
    };
    let (tcp, pings) = tokio::join!(
        measure::tcp(&lab.lab, row.from, row.dst, args.secs, args.streams),
        pings
    );
    tcp?;
    pings?;
    check(load.wait_with_output().await?)
}

fn check(out: std::process::Output) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

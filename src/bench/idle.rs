//! The idle-cost lab of `re6st bench`: a registry and `n + 1` nodes in one
//! namespace on loopback, `k = n`, so that every node ends with a tunnel
//! to every other (`n` tunnels each, no traffic but their own). Node 0 has
//! a TUN device like a real node; the others run without one. The CPU
//! time each node uses over a window is read from the scheduler.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use re6st::control::api::{Request, Response, SOCKET_FILE};
use re6st::netns::Lab;
use serde::Serialize;

use super::measure::{CpuSample, Spread, rss_kib};
use super::paths::exe;

/// What one idle lab measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Up tunnels of every node.
    pub tunnels: usize,
    /// Percent of one core used by node 0 (with a TUN device), per window.
    pub cpu_percent: Spread,
    /// Percent of one core, median over all nodes, per window.
    pub cpu_percent_all: Spread,
    /// Resident memory of node 0 at the end, KiB.
    pub rss_kib: Option<u64>,
    /// How long the nodes took to reach `tunnels` each, seconds.
    pub setup_secs: f64,
}

/// Runs the idle lab with `n` tunnels per node: `windows` windows of
/// `secs` each once every node has its tunnels.
pub async fn measure(
    n: usize,
    windows: usize,
    secs: Duration,
    node_args: &[String],
    keep: bool,
) -> anyhow::Result<IdleResult> {
    let exe = exe()?;
    let mut lab = Lab::new("bench-idle")?;
    if keep {
        lab.keep_dir();
    }
    lab.add_ns("idle")?;
    let reg_dir = lab.dir().join("registry");
    let reg: Vec<String> = [
        "registry",
        "run",
        "--dir",
        reg_dir.to_str().context("path")?,
        "--listen",
        "[::1]:8443",
        "--hostname",
        "::1",
        "--enrolment",
        "open",
        "--tunnels",
        &n.to_string(),
        "--tunnel-refresh",
        "1h",
    ]
    .map(String::from)
    .to_vec();
    let fp = lab.start_registry("idle", &exe, &reg)?.fingerprint;
    let start = Instant::now();
    let mut nodes: Vec<(u32, PathBuf)> = Vec::new();
    for i in 0..=n {
        let dir = lab.dir().join(format!("node{i}"));
        let port = 4400 + i;
        let mut args: Vec<String> = vec![
            "node".into(),
            "--dir".into(),
            dir.to_str().context("path")?.into(),
            "--registry".into(),
            "https://[::1]:8443".into(),
            "--ca-fingerprint".into(),
            fp.clone(),
            "--listen".into(),
            format!("[::1]:{port}"),
            "--advertise".into(),
            format!("[::1]:{port}"),
        ];
        if i > 0 {
            args.push("--no-tun".into());
        }
        args.extend(node_args.iter().cloned());
        let p = lab.spawn(Some("idle"), &format!("node{i}"), &exe, &args, |_| {})?;
        nodes.push((p.pid(), dir.join(SOCKET_FILE)));
    }
    for i in 0..=n {
        if let Some(p) = lab.proc(&format!("node{i}")) {
            p.wait_for_line("control socket", Duration::from_secs(60))?;
        }
    }
    // Every node has its n tunnels up, twice in a row 1 s apart.
    let mut stable = 0;
    while stable < 2 {
        let mut all = true;
        for (_, socket) in &nodes {
            let up = match re6st::control::query(socket, Request::Tunnels).await {
                Ok(Response::Tunnels(t)) => t.iter().filter(|t| t.state == "up").count(),
                _ => 0,
            };
            all &= up >= n;
        }
        stable = if all { stable + 1 } else { 0 };
        if start.elapsed() > Duration::from_secs(60 + 4 * n as u64) {
            bail!("the {} idle nodes did not all reach {n} tunnels", n + 1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let setup_secs = start.elapsed().as_secs_f64();
    let mut mine = Vec::new();
    let mut all = Vec::new();
    for _ in 0..windows {
        let before: Vec<CpuSample> = nodes
            .iter()
            .map(|(pid, _)| CpuSample::read(*pid))
            .collect::<anyhow::Result<_>>()?;
        let t0 = Instant::now();
        tokio::time::sleep(secs).await;
        let wall = t0.elapsed().as_nanos() as f64;
        let mut percents = Vec::new();
        for ((pid, _), b) in nodes.iter().zip(&before) {
            let used = CpuSample::read(*pid)?.since(b) as f64;
            percents.push(100.0 * used / wall);
        }
        mine.push(percents[0]);
        all.push(super::measure::median(&percents).unwrap_or(f64::NAN));
    }
    let rss = rss_kib(nodes[0].0);
    lab.stop_all(Duration::from_secs(3));
    Ok(IdleResult {
        tunnels: n,
        cpu_percent: Spread::of(&mine).context("no idle window")?,
        cpu_percent_all: Spread::of(&all).context("no idle window")?,
        rss_kib: rss,
        setup_secs,
    })
}

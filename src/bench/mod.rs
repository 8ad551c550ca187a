//! `re6st bench`: the packet path measured the way a user would, on this
//! machine (root): network namespaces joined by veths, real `re6st node`
//! processes with TUN devices, the kernel's TCP (`iperf3`) and `ping -6`.
//!
//! In one run it measures, interleaved (every row once per round, `--runs`
//! rounds), the raw veth, a two-node overlay and a three-node chain
//! ([`paths`]): TCP throughput, ping RTT idle and during the transfer,
//! the ratio to the raw veth and the RTT the overlay adds; then the CPU an
//! idle node uses with N tunnels ([`idle`]). Medians and spread over the
//! rounds, as a table or `--json`. Every namespace and process is removed
//! at the end, on an error, and on Ctrl-C or SIGTERM.

mod idle;
mod measure;
mod paths;
mod trace;

use std::time::Duration;

use anyhow::{Context, bail};
use re6st::control::table::Table;
use serde::Serialize;

use measure::Spread;
use paths::{PathLab, PathRow};

/// Arguments of `re6st bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rounds: every row is measured once per round, rows interleaved.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Seconds of each TCP transfer.
    #[arg(long, default_value_t = 8.0)]
    pub secs: f64,
    /// Parallel TCP connections of each transfer (`iperf3 -P`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub streams: u32,
    /// Run the nodes, iperf3 and ping under SCHED_FIFO (`chrt -f 10`):
    /// closer to a dedicated machine when other jobs load this one.
    #[arg(long)]
    pub fifo: bool,
    /// Pings per measurement (0.2 s apart idle, spread over the transfer
    /// under load).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pings: u32,
    /// Tunnels per node of the idle-cost rows (comma-separated; 0: none).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub idle_tunnels: Vec<usize>,
    /// Seconds of each idle-CPU window (one window per round).
    #[arg(long, default_value_t = 20.0)]
    pub idle_secs: f64,
    /// Rows to measure (raw, two-node, chain, tcp, two-node-v4, chain-v4,
    /// idle; comma-separated; default all). The raw veth is always measured: ratios need it.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Extra `re6st node` flags for every node (one string, split on
    /// spaces), e.g. "--no-offload".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub node_args: String,
    /// Run the registry and the nodes from this `re6st` binary instead
    /// of this one: an older build, to compare two builds with the same
    /// bench.
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<std::path::PathBuf>,
    /// A smoke run in seconds (CI): one round, 1 s transfers, 5 pings, an
    /// idle row with 2 tunnels for 2 s.
    #[arg(long)]
    pub short: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the working directory (logs, state directories).
    #[arg(long)]
    pub keep: bool,
    /// Before the rounds, record scheduler and syscall traces of the two
    /// nodes (`perf record`) during pings over the two-node overlay, idle
    /// and under a TCP transfer, into DIR (`idle.data`, `load.data`, the
    /// nodes' open files); `benches/stages.py DIR` turns them into the
    /// per-stage latency of a packet.
    #[arg(long, value_name = "DIR")]
    pub perf: Option<std::path::PathBuf>,
    /// After the rounds, print every node's packet-path counters and
    /// tunnels (QUIC window, losses, datagrams) as JSON on stderr.
    #[arg(long)]
    pub node_status: bool,
}

impl BenchArgs {
    fn apply_short(&mut self) {
        if self.short {
            self.runs = 1;
            self.secs = 1.0;
            self.pings = 5;
            self.idle_tunnels = vec![2];
            self.idle_secs = 2.0;
        }
    }

    fn wants(&self, key: &str) -> bool {
        key == "raw" || self.only.is_empty() || self.only.iter().any(|o| o == key)
    }
}

/// One row of packet-path figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    /// `raw`, `two-node`, `chain` or `tcp`.
    pub key: &'static str,
    /// Its title.
    pub name: String,
    /// TCP goodput, Gbit/s.
    pub tcp_gbps: Option<Spread>,
    /// Median TCP goodput over the raw veth's.
    pub ratio_to_raw: Option<f64>,
    /// Ping RTT with no other traffic, ms (median of each round's pings).
    pub rtt_idle_ms: Option<Spread>,
    /// RTT added to the raw veth's, ms (medians).
    pub added_rtt_idle_ms: Option<f64>,
    /// Ping RTT during the TCP transfer, ms.
    pub rtt_load_ms: Option<Spread>,
    /// RTT added to the raw veth's under load, ms (medians).
    pub added_rtt_load_ms: Option<f64>,
    /// CPU of the nodes on the path during the transfer, percent of one
    /// core each (median over nodes and rounds).
    pub node_cpu_percent: Option<f64>,
    /// Pings sent and answered over all rounds.
    pub pings_answered: (u32, u32),
}

/// Everything one `re6st bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// 1-minute load average before the run, and after.
    pub load_before: f64,
    /// After.
    pub load_after: f64,
    /// Cores of the machine.
    pub cores: usize,
    /// Rounds.
    pub runs: u32,
    /// Seconds per transfer.
    pub secs: f64,
    /// Packet-path rows.
    pub paths: Vec<PathFigures>,
    /// Idle-cost rows.
    pub idle: Vec<idle::IdleResult>,
}

/// Runs `re6st bench`.
pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.apply_short();
    if !re6st::netns::is_root() {
        bail!("re6st bench needs root: it creates network namespaces, veths and TUN devices");
    }
    if !(args.secs > 0.0 && args.idle_secs > 0.0) {
        bail!("--secs and --idle-secs must be positive");
    }
    measure::set_fifo(args.fifo);
    if let Some(bin) = &args.node_bin {
        if !bin.is_file() {
            bail!("--node-bin {}: no such file", bin.display());
        }
        paths::set_node_bin(bin.clone());
    }
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let report = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Both handlers are in place before the bench makes anything: a
        // signal that came before its first wait would otherwise kill the
        // process and leave its namespaces behind.
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        // Dropping the bench future drops its labs: every process stops and
        // every namespace goes.
        tokio::select! {
            r = bench(&args) => r,
            _ = int.recv() => bail!("interrupted (everything the bench made is removed)"),
            _ = term.recv() => bail!("terminated (everything the bench made is removed)"),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Per-row samples gathered over the rounds.
#[derive(Default)]
struct Samples {
    tcp: Vec<f64>,
    rtt_idle: Vec<f64>,
    rtt_load: Vec<f64>,
    cpu: Vec<f64>,
    sent: u32,
    answered: u32,
}

async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let (load_before, cores) = measure::load();
    let node_args: Vec<String> = args
        .node_args
        .split_whitespace()
        .map(String::from)
        .collect();
    let say = |s: String| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    say(format!(
        "re6st bench: load {load_before:.2} on {cores} cores; {} round(s), {} s transfers, {} pings",
        args.runs, args.secs, args.pings
    ));
    let mut paths_out = Vec::new();
    let any_path = ["two-node", "chain", "tcp", "two-node-v4", "chain-v4"]
        .iter()
        .any(|k| args.wants(k));
    if any_path {
        say("setting up namespaces a - b - c, a registry and three nodes".into());
        let lab = PathLab::start(&node_args, args.keep).await?;
        let rows: Vec<PathRow> = lab
            .rows()
            .iter()
            .filter(|r| args.wants(r.key))
            .cloned()
            .collect();
        if let Some(dir) = &args.perf {
            say(format!("recording perf traces into {}", dir.display()));
            trace::record(&lab, args, dir).await?;
        }
        let mut samples: Vec<Samples> = rows.iter().map(|_| Samples::default()).collect();
        for round in 1..=args.runs {
            for (row, s) in rows.iter().zip(&mut samples) {
                measure_row(&lab, args, row, s).await?;
                say(format!(
                    "round {round}: {:<26} {:>7.3} Gbit/s, ping {:.3} ms idle, {:.3} ms under load",
                    row.title,
                    s.tcp.last().copied().unwrap_or(f64::NAN),
                    s.rtt_idle.last().copied().unwrap_or(f64::NAN),
                    s.rtt_load.last().copied().unwrap_or(f64::NAN),
                ));
            }
        }
        paths_out = figures(&rows, &samples);
        if args.node_status {
            let s = lab.node_status().await?;
            eprintln!("{}", serde_json::to_string_pretty(&s)?);
        }
        drop(lab);
    }
    let mut idle_out = Vec::new();
    if args.wants("idle") {
        for &n in args.idle_tunnels.iter().filter(|n| **n > 0) {
            say(format!("idle cost: {} nodes with {n} tunnels each", n + 1));
            idle_out.push(
                idle::measure(
                    n,
                    args.runs as usize,
                    Duration::from_secs_f64(args.idle_secs),
                    &node_args,
                    args.keep,
                )
                .await?,
            );
        }
    }
    Ok(BenchReport {
        load_before,
        load_after: measure::load().0,
        cores,
        runs: args.runs,
        secs: args.secs,
        paths: paths_out,
        idle: idle_out,
    })
}

/// One round of one row: pings alone, then a transfer with pings spread
/// over it, and the CPU of the row's nodes during the transfer.
async fn measure_row(
    lab: &PathLab,
    args: &BenchArgs,
    row: &PathRow,
    s: &mut Samples,
) -> anyhow::Result<()> {
    let idle = measure::ping(
        &lab.lab,
        row.from,
        row.dst,
        args.pings,
        Duration::from_millis(200),
    )
    .await?;
    s.sent += args.pings;
    s.answered += idle.len() as u32;
    s.rtt_idle.push(measure::median(&idle).unwrap_or(f64::NAN));

    let before: Vec<_> = row
        .pids
        .iter()
        .filter_map(|p| measure::CpuSample::read(*p).ok())
        .collect();
    let t0 = std::time::Instant::now();
    // Pings start once the transfer runs and end before it does.
    let span = (args.secs - 0.75).max(0.1);
    let interval = Duration::from_secs_f64((span / f64::from(args.pings)).clamp(0.01, 0.2));
    let loaded = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        measure::ping(&lab.lab, row.from, row.dst, args.pings, interval).await
    };
    let (tcp, loaded) = tokio::join!(
        measure::tcp(&lab.lab, row.from, row.dst, args.secs, args.streams),
        loaded
    );
    let wall = t0.elapsed().as_nanos() as f64;
    for (pid, b) in row.pids.iter().zip(&before) {
        if let Ok(after) = measure::CpuSample::read(*pid) {
            s.cpu.push(100.0 * after.since(b) as f64 / wall);
        }
    }
    s.tcp.push(tcp?);
    let loaded = loaded?;
    s.sent += args.pings;
    s.answered += loaded.len() as u32;
    s.rtt_load
        .push(measure::median(&loaded).unwrap_or(f64::NAN));
    Ok(())
}

fn figures(rows: &[PathRow], samples: &[Samples]) -> Vec<PathFigures> {
    let raw = rows.iter().position(|r| r.key == "raw");
    let med = |i: Option<usize>, f: fn(&Samples) -> &Vec<f64>| {
        i.and_then(|i| measure::median(f(&samples[i])))
    };
    let (raw_tcp, raw_idle, raw_load) = (
        med(raw, |s| &s.tcp),
        med(raw, |s| &s.rtt_idle),
        med(raw, |s| &s.rtt_load),
    );
    rows.iter()
        .zip(samples)
        .map(|(r, s)| {
            let tcp = Spread::of(&s.tcp);
            let idle = Spread::of(&s.rtt_idle);
            let load = Spread::of(&s.rtt_load);
            let is_raw = r.key == "raw";
            let minus = |a: Option<&Spread>, b: Option<f64>| match (a, b, is_raw) {
                (Some(a), Some(b), false) => Some(a.median - b),
                _ => None,
            };
            PathFigures {
                key: r.key,
                name: r.title.clone(),
                ratio_to_raw: tcp.as_ref().zip(raw_tcp).map(|(t, r)| t.median / r),
                added_rtt_idle_ms: minus(idle.as_ref(), raw_idle),
                added_rtt_load_ms: minus(load.as_ref(), raw_load),
                node_cpu_percent: measure::median(&s.cpu),
                pings_answered: (s.sent, s.answered),
                tcp_gbps: tcp,
                rtt_idle_ms: idle,
                rtt_load_ms: load,
            }
        })
        .collect()
}

fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
    let plus = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3}"));
    let spread = |s: &Option<Spread>, d: usize| s.as_ref().map_or("-".into(), |s| s.show(d));
    if !r.paths.is_empty() {
        let mut t = Table::new(&[
            "path",
            "TCP Gbit/s",
            "ratio",
            "ping idle ms",
            "added",
            "ping under load ms",
            "added",
            "node CPU %",
        ]);
        for p in &r.paths {
            t.row(vec![
                p.name.clone(),
                spread(&p.tcp_gbps, 2),
                opt(p.ratio_to_raw, 3),
                spread(&p.rtt_idle_ms, 3),
                plus(p.added_rtt_idle_ms),
                spread(&p.rtt_load_ms, 3),
                plus(p.added_rtt_load_ms),
                opt(p.node_cpu_percent, 0),
            ]);
        }
        out.push_str(&t.to_string());
        let chain = r.paths.iter().find(|p| p.key == "chain");
        let two = r.paths.iter().find(|p| p.key == "two-node");
        if let (Some(c), Some(t)) = (
            chain.and_then(|p| p.tcp_gbps.as_ref()),
            two.and_then(|p| p.tcp_gbps.as_ref()),
        ) {
            out.push_str(&format!(
                "chain / two nodes (TCP): {:.3}\n",
                c.median / t.median
            ));
        }
        let lost: Vec<String> = r
            .paths
            .iter()
            .filter(|p| p.pings_answered.0 != p.pings_answered.1)
            .map(|p| {
                format!(
                    "{}: {} of {} pings answered",
                    p.name, p.pings_answered.1, p.pings_answered.0
                )
            })
            .collect();
        if !lost.is_empty() {
            out.push_str(&format!("lost pings: {}\n", lost.join("; ")));
        }
    }
    if !r.idle.is_empty() {
        let mut t = Table::new(&[
            "idle node",
            "CPU % of a core (TUN node)",
            "median of all nodes",
            "RSS MiB",
            "set-up s",
        ]);
        for i in &r.idle {
            t.row(vec![
                format!("{} tunnels", i.tunnels),
                i.cpu_percent.show(3),
                i.cpu_percent_all.show(3),
                i.rss_kib
                    .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                format!("{:.0}", i.setup_secs),
            ]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
    }
    out.push_str(&format!(
        "load average {:.2} before, {:.2} after, {} cores; medians (min-max) of {} round(s)\n",
        r.load_before, r.load_after, r.cores, r.runs
    ));
    out
}

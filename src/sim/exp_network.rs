//! `re6st sim network`: N NodeCores, the node's own decision code, over the
//! virtual-time network of [`re6st::vnet`], with the one-way delay between
//! nodes `i` and `j` half the RTT of hosts `i` and `j` of a latency data
//! set (a pair the data set lacks is cut off in the underlay, as the
//! report's simulator has no edge there). Nodes use the network's default
//! settings (k = 10, refresh 5 min, Babel timers) and the registry answers
//! after 20 ms. Churn restarts random nodes with an empty state directory
//! at random instants (a node leaves, a fresh one joins); `--kill` crashes
//! a fraction of the nodes at once at half the run. Every sample walks all
//! FIBs ([`re6st::vnet::Network::reach`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::Ctx;
use super::data::LatencyMatrix;
use super::output::{Row, f, progress};
use super::plot::{Chart, Series, Style, draw};
use re6st::identity::NetworkConfig;
use re6st::node::NodeConfig;
use re6st::tunnels::policy::Replacement;
use re6st::vnet::{Latency, NETWORK, NetConfig, Network};

/// Until full reachability after a cold start or a kill, samples are this
/// close (for at most [`FINE_FOR`]), so the time to reach it is known to
/// within this.
const FINE_STEP: Duration = Duration::from_secs(1);
const FINE_FOR: Duration = Duration::from_secs(600);

/// The latency data sets `network` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSet {
    /// The real Meridian 500-node subset.
    Meridian500,
    /// The synthetic 2500-node matrix.
    Synthetic2500,
}

impl DataSet {
    /// The data set a `--data` value names, if it names one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "meridian500" => Some(DataSet::Meridian500),
            "synthetic2500" => Some(DataSet::Synthetic2500),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            DataSet::Meridian500 => "meridian500",
            DataSet::Synthetic2500 => "synthetic2500",
        }
    }
}

/// Arguments of `re6st sim network`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct NetworkArgs {
    /// Nodes (node i is host i of the data set).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Virtual time to run ("10m", "1h", "15000s").
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Fraction of the nodes restarted with an empty state per tunnel
    /// refresh period (5 min), at random instants.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Fraction of the live nodes crashed at once at half the run.
    #[arg(long, default_value_t = 0.0)]
    pub kill: f64,
    /// Virtual time between samples (1 s until full reachability after a
    /// cold start or a kill).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Check every node's invariants after every event (slow).
    #[arg(long)]
    pub check: bool,
    /// How each tunnel refresh replaces tunnels (every policy runs here,
    /// `shortcut-R` included: the virtual network answers its probes).
    #[arg(long, value_name = "POLICY", default_value = "least-used")]
    pub tunnel_replacement: Replacement,
    /// The tunnel refresh period (the network's default: 5 min). The
    /// replacement policies converge in refreshes, so a shorter one
    /// shows them in less virtual time.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub refresh: Option<Duration>,
}

/// One sample of the run.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t_s: f64,
    live: usize,
    reached: usize,
    pairs: usize,
    routes_per_node: f64,
    route_changes_per_node_min: f64,
    babel_bytes_per_s_node: f64,
    control_bytes_per_s_node: f64,
    mean_rtt_ms: Option<f64>,
}

impl Sample {
    fn reach(&self) -> f64 {
        if self.pairs == 0 {
            1.0
        } else {
            self.reached as f64 / self.pairs as f64
        }
    }
    fn full(&self) -> bool {
        self.reached == self.pairs
    }
}

/// What `network` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    nodes: usize,
    data: String,
    seed: u64,
    duration_s: f64,
    churn_per_refresh: f64,
    churn_restarts: usize,
    tunnels: u16,
    tunnel_replacement: String,
    refresh_s: u64,
    /// Virtual time from the cold start until every node reaches every
    /// other (to within 1 s); `None`: never in the run.
    full_reach_after_start_s: Option<f64>,
    killed: usize,
    kill_at_s: Option<f64>,
    /// Lowest reachability among the survivors after the kill.
    min_reach_after_kill: Option<f64>,
    /// Virtual time from the kill until the survivors reach each other
    /// again (to within 1 s).
    full_reach_after_kill_s: Option<f64>,
    /// Mean reachability over the samples after the first full one.
    mean_reach_after_start: Option<f64>,
    final_reach: f64,
    /// Bytes sent per live node and second, over the whole run.
    babel_bytes_per_s_node: f64,
    control_frame_bytes_per_s_node: f64,
    exchange_bytes_per_s_node: f64,
    /// The busiest node's Babel bytes per second (over the whole run).
    babel_bytes_per_s_max_node: f64,
    routes_per_node: f64,
    route_changes_per_node_min: f64,
    /// Mean RTT of the routes the FIBs select (link RTTs summed along the
    /// path), at the end of the run.
    mean_route_rtt_ms: Option<f64>,
    /// The same at each tenth of the run: (virtual s, ms).
    mean_route_rtt_ms_by_tenth: Vec<(f64, f64)>,
    /// Mean RTT of the direct pairs of the nodes' hosts.
    direct_rtt_ms: f64,
    /// Direct RTT probes of the shortcut replacement, all nodes: asked,
    /// measured, lost.
    probes: (u64, u64, u64),
    events: u64,
    invariant_violation: Option<String>,
    wall_s: f64,
    rss_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
    rss_per_node_kib: Option<f64>,
}

/// Runs `re6st sim network`.
pub fn network(ctx: &mut Ctx, args: &NetworkArgs, data: Option<DataSet>) -> anyhow::Result<()> {
    let wall = Instant::now();
    let n = args.nodes;
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    if !(0.0..=1.0).contains(&args.churn) || !(0.0..=1.0).contains(&args.kill) {
        bail!("--churn and --kill are fractions between 0 and 1");
    }
    if args.duration.is_zero() || args.sample.is_zero() {
        bail!("--duration and --sample must be positive");
    }
    let data = data.unwrap_or(if n <= 500 {
        DataSet::Meridian500
    } else {
        DataSet::Synthetic2500
    });
    let matrix = match data {
        DataSet::Meridian500 => ctx.meridian()?,
        DataSet::Synthetic2500 => ctx.synthetic()?,
    };
    if n > matrix.len() {
        bail!("--nodes {n}: {} has {} hosts", data.name(), matrix.len());
    }
    let (direct_us, missing) = direct_mean_us(&matrix, n);
    let fallback = Duration::from_nanos((direct_us * 500.0) as u64);
    let m = Arc::clone(&matrix);
    let latency = Latency::Matrix(Arc::new(move |a, b| {
        m.rtt_us(a, b)
            .map_or(fallback, |us| Duration::from_nanos(u64::from(us) * 500))
    }));
    let mut network = NetworkConfig::defaults(
        NETWORK.parse().context("the overlay prefix")?,
        "sim://registry".into(),
    );
    network.tunnel_replacement = args.tunnel_replacement;
    if let Some(r) = args.refresh {
        if r < Duration::from_secs(1) {
            bail!("--refresh must be at least 1 s");
        }
        network.tunnel_refresh_secs = r.as_secs();
    }
    let refresh = network.tunnel_refresh();
    let tunnels = network.tunnels;
    let config = NetConfig {
        nodes: n,
        network,
        core: NodeConfig::default().core(Some("sim://registry".into())),
        latency,
        check: args.check,
        seed: ctx.seed,
        ..NetConfig::default()
    };
    let mut net = Network::new(config);
    for (a, b) in missing {
        net.cut(a, b, true);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(ctx.seed ^ 0xc4u64 << 32);
    let churn = churn_times(args, refresh, n, &mut rng);
    let kill_at = (args.kill > 0.0).then(|| args.duration / 2);

    let bar = progress(args.duration.as_secs(), "network");
    let mut samples: Vec<Sample> = Vec::new();
    let mut prev = Totals::of(&net);
    let mut prev_t = Duration::ZERO;
    let mut node_secs = 0.0;
    let mut next_churn = 0;
    let mut killed = 0;
    let mut kill_done = false;
    let mut restarts = 0;
    // The instant since which full reachability is awaited (start, kill).
    let mut awaiting: Option<Duration> = Some(Duration::ZERO);
    let mut full_after_start = None;
    let mut full_after_kill = None;
    let mut next_sample = FINE_STEP;
    loop {
        let mut next = next_sample;
        if let Some(&t) = churn.get(next_churn) {
            next = next.min(t);
        }
        if let Some(k) = kill_at.filter(|_| !kill_done) {
            next = next.min(k);
        }
        if next > args.duration {
            break;
        }
        net.run_until(next);
        if churn.get(next_churn) == Some(&next) {
            next_churn += 1;
            let live: Vec<usize> = (0..n).filter(|i| net.core(*i).is_some()).collect();
            if !live.is_empty() {
                net.restart(live[rng.random_range(0..live.len())], false);
                restarts += 1;
            }
            continue;
        }
        if kill_at == Some(next) && !kill_done {
            let mut live: Vec<usize> = (0..n).filter(|i| net.core(*i).is_some()).collect();
            let count = (args.kill * live.len() as f64).round() as usize;
            for _ in 0..count {
                let i = live.swap_remove(rng.random_range(0..live.len()));
                net.crash(i);
            }
            (killed, kill_done) = (count, true);
            awaiting = Some(next);
            // A sample right after the kill shows the routes it broke.
            next_sample = next;
            continue;
        }
        let now = Totals::of(&net);
        let dt = (next - prev_t).as_secs_f64();
        let reach = net.reach();
        let live = (0..n).filter(|i| net.core(*i).is_some()).count();
        let per = |bytes: u64| bytes as f64 / dt / live.max(1) as f64;
        let routes: usize = (0..n).map(|i| net.routes(i)).sum();
        let s = Sample {
            t_s: next.as_secs_f64(),
            live,
            reached: reach.reached,
            pairs: reach.pairs,
            routes_per_node: routes as f64 / live.max(1) as f64,
            route_changes_per_node_min: per(now.route_changes - prev.route_changes) * 60.0,
            babel_bytes_per_s_node: per(now.babel - prev.babel),
            control_bytes_per_s_node: per(now.control + now.exchange
                - prev.control
                - prev.exchange),
            mean_rtt_ms: reach.mean_delay().map(|d| 2.0 * d.as_secs_f64() * 1e3),
        };
        node_secs += dt * live as f64;
        if let Some(since) = awaiting
            && s.full()
            && live > 0
        {
            let took = Some((next - since).as_secs_f64());
            if since.is_zero() {
                full_after_start = took;
            } else {
                full_after_kill = took;
            }
            awaiting = None;
        }
        let fine = awaiting.is_some_and(|since| next - since < FINE_FOR);
        next_sample = next + if fine { FINE_STEP } else { args.sample };
        (prev, prev_t) = (now, next);
        samples.push(s);
        bar.set_position(next.as_secs());
        if next >= args.duration {
            break;
        }
        // The last sample is at the end of the run.
        next_sample = next_sample.min(args.duration);
    }
    bar.finish_and_clear();
    let ran = prev_t.as_secs_f64().max(1e-9);

    let end = Totals::of(&net);
    let node_secs = node_secs.max(1e-9);
    let last = samples.last();
    let kill_s = kill_at.map(|k| k.as_secs_f64());
    let after = |from: f64| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.t_s >= from)
            .map(Sample::reach)
            .collect()
    };
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let busiest = (0..n)
        .map(|i| net.traffic(i).babel_bytes)
        .max()
        .unwrap_or(0);
    let status = proc_status();
    let by_tenth = (1..=10)
        .filter_map(|k| {
            let t = args.duration.as_secs_f64() * f64::from(k) / 10.0;
            let s = samples.iter().rev().find(|s| s.t_s <= t + 1e-6)?;
            Some((s.t_s, s.mean_rtt_ms?))
        })
        .collect();
    let mut probes = (0, 0, 0);
    for i in 0..n {
        if let Some(c) = net.core(i) {
            let p = c.probe_stats();
            probes = (probes.0 + p.sent, probes.1 + p.measured, probes.2 + p.lost);
        }
    }
    let summary = Summary {
        nodes: n,
        data: matrix.name.clone(),
        seed: ctx.seed,
        duration_s: args.duration.as_secs_f64(),
        churn_per_refresh: args.churn,
        churn_restarts: restarts,
        tunnels,
        tunnel_replacement: args.tunnel_replacement.to_string(),
        refresh_s: refresh.as_secs(),
        full_reach_after_start_s: full_after_start,
        killed,
        kill_at_s: kill_s,
        min_reach_after_kill: kill_s.and_then(|k| after(k).into_iter().reduce(f64::min)),
        full_reach_after_kill_s: full_after_kill,
        mean_reach_after_start: full_after_start.and_then(|t| mean(after(t))),
        final_reach: last.map_or(0.0, Sample::reach),
        babel_bytes_per_s_node: end.babel as f64 / node_secs,
        control_frame_bytes_per_s_node: end.control as f64 / node_secs,
        exchange_bytes_per_s_node: end.exchange as f64 / node_secs,
        babel_bytes_per_s_max_node: busiest as f64 / ran,
        routes_per_node: last.map_or(0.0, |s| s.routes_per_node),
        route_changes_per_node_min: end.route_changes as f64 / node_secs * 60.0,
        mean_route_rtt_ms: last.and_then(|s| s.mean_rtt_ms),
        mean_route_rtt_ms_by_tenth: by_tenth,
        direct_rtt_ms: direct_us / 1e3,
        probes,
        events: net.stats().events,
        invariant_violation: net.violation().map(str::to_owned),
        wall_s: wall.elapsed().as_secs_f64(),
        rss_mib: status.rss_kib.map(|k| k as f64 / 1024.0),
        peak_rss_mib: status.peak_kib.map(|k| k as f64 / 1024.0),
        rss_per_node_kib: status.rss_kib.map(|k| k as f64 / n as f64),
    };
    write_outputs(ctx, args, data, &summary, &samples)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Counters of the whole network at one instant.
#[derive(Debug, Clone, Copy)]
struct Totals {
    babel: u64,
    control: u64,
    exchange: u64,
    route_changes: u64,
}

impl Totals {
    fn of(net: &Network) -> Self {
        let mut t = Totals {
            babel: 0,
            control: 0,
            exchange: 0,
            route_changes: net.stats().route_changes,
        };
        for i in 0..net.len() {
            let x = net.traffic(i);
            t.babel += x.babel_bytes;
            t.control += x.control_bytes;
            t.exchange += x.exchange_bytes;
        }
        t
    }
}

/// Mean RTT (µs) of the pairs of the first `n` hosts, and the pairs the
/// data lacks.
fn direct_mean_us(m: &LatencyMatrix, n: usize) -> (f64, Vec<(usize, usize)>) {
    let (mut sum, mut count, mut missing) = (0.0, 0u64, Vec::new());
    for a in 0..n {
        for b in a + 1..n {
            match m.rtt_us(a, b) {
                Some(us) => {
                    sum += f64::from(us);
                    count += 1;
                }
                None => missing.push((a, b)),
            }
        }
    }
    (sum / count.max(1) as f64, missing)
}

/// The instants of churn restarts: `churn * n` per refresh period (the
/// fraction carried over), uniform within each period.
fn churn_times(
    args: &NetworkArgs,
    refresh: Duration,
    n: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<Duration> {
    let mut times = Vec::new();
    if args.churn <= 0.0 || refresh.is_zero() {
        return times;
    }
    let (mut start, mut carry) = (Duration::ZERO, 0.0);
    while start < args.duration {
        carry += args.churn * n as f64;
        while carry >= 1.0 {
            carry -= 1.0;
            let t = start + refresh.mul_f64(rng.random_range(0.0..1.0));
            if t > Duration::ZERO && t < args.duration {
                times.push(t);
            }
        }
        start += refresh;
    }
    times.sort();
    times
}

/// The process's resident memory now and at its peak (Linux).
#[derive(Debug, Default)]
struct ProcStatus {
    rss_kib: Option<u64>,
    peak_kib: Option<u64>,
}

fn proc_status() -> ProcStatus {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return ProcStatus::default();
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    ProcStatus {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

fn opt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or_else(|| "never".to_owned(), |x| format!("{}{unit}", f(x, digits)))
}

fn print_summary(s: &Summary) {
    println!(
        "re6st sim network: {} nodes on {}, {} s virtual, seed {}, {} every {} s",
        s.nodes, s.data, s.duration_s, s.seed, s.tunnel_replacement, s.refresh_s
    );
    println!(
        "  full reachability after the cold start: {}",
        opt(s.full_reach_after_start_s, 0, " s")
    );
    if let Some(at) = s.kill_at_s {
        println!(
            "  killed {} nodes at {at} s: reachability fell to {}, full again after {}",
            s.killed,
            opt(s.min_reach_after_kill.map(|r| r * 100.0), 2, " %"),
            opt(s.full_reach_after_kill_s, 0, " s")
        );
    }
    if s.churn_per_refresh > 0.0 {
        println!(
            "  churn: {} restarts ({} per refresh); mean reachability {}",
            s.churn_restarts,
            s.churn_per_refresh,
            opt(s.mean_reach_after_start.map(|r| r * 100.0), 3, " %")
        );
    }
    println!("  final reachability: {:.3} %", s.final_reach * 100.0);
    println!(
        "  per node: Babel {:.0} B/s (busiest {:.0}), control frames {:.1} B/s, peer exchange {:.1} B/s",
        s.babel_bytes_per_s_node,
        s.babel_bytes_per_s_max_node,
        s.control_frame_bytes_per_s_node,
        s.exchange_bytes_per_s_node
    );
    println!(
        "  per node: {:.1} routes, {:.2} route changes/min",
        s.routes_per_node, s.route_changes_per_node_min
    );
    println!(
        "  mean RTT of selected routes: {} (direct: {:.2} ms)",
        opt(s.mean_route_rtt_ms, 2, " ms"),
        s.direct_rtt_ms
    );
    let over_time: Vec<String> = s
        .mean_route_rtt_ms_by_tenth
        .iter()
        .map(|(t, ms)| format!("{t:.0} s {ms:.2}"))
        .collect();
    println!("  over time (ms): {}", over_time.join(", "));
    if s.probes.0 > 0 {
        println!(
            "  direct RTT probes: {} asked, {} measured, {} lost",
            s.probes.0, s.probes.1, s.probes.2
        );
    }
    println!(
        "  {} events, wall {:.1} s, RSS {} (peak {}, {} per node)",
        s.events,
        s.wall_s,
        opt(s.rss_mib, 0, " MiB"),
        opt(s.peak_rss_mib, 0, " MiB"),
        opt(s.rss_per_node_kib, 0, " KiB")
    );
    if let Some(v) = &s.invariant_violation {
        println!("  INVARIANT BROKEN: {v}");
    }
}

fn write_outputs(
    ctx: &mut Ctx,
    args: &NetworkArgs,
    data: DataSet,
    s: &Summary,
    samples: &[Sample],
) -> anyhow::Result<()> {
    let stem = format!("network_{}_{}", data.name(), s.nodes);
    let header = [
        "t_s",
        "live",
        "reached_pairs",
        "pairs",
        "routes_per_node",
        "route_changes_per_node_min",
        "babel_bytes_per_s_node",
        "control_bytes_per_s_node",
        "mean_route_rtt_ms",
    ];
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|x| {
            vec![
                f(x.t_s, 0),
                x.live.to_string(),
                x.reached.to_string(),
                x.pairs.to_string(),
                f(x.routes_per_node, 2),
                f(x.route_changes_per_node_min, 3),
                f(x.babel_bytes_per_s_node, 1),
                f(x.control_bytes_per_s_node, 2),
                x.mean_rtt_ms.map_or_else(String::new, |v| f(v, 3)),
            ]
        })
        .collect();
    ctx.out.csv(&format!("{stem}.csv"), &header, &rows)?;
    let min = |x: &Sample| x.t_s / 60.0;
    let title = format!("{} nodes on {} (node's own code)", s.nodes, data.name());
    let charts = [
        (
            "reach",
            Chart::new(
                format!("{title}: reachability"),
                "virtual time (min)",
                "share",
                vec![
                    Series::new(
                        "reachable pairs",
                        samples.iter().map(|x| (min(x), x.reach())).collect(),
                        Style::Line,
                    ),
                    Series::new(
                        "live nodes",
                        samples
                            .iter()
                            .map(|x| (min(x), x.live as f64 / s.nodes as f64))
                            .collect(),
                        Style::Line,
                    ),
                ],
            ),
        ),
        (
            "traffic",
            Chart::new(
                format!("{title}: bytes sent per node"),
                "virtual time (min)",
                "B/s per node",
                vec![
                    Series::new(
                        "Babel",
                        samples
                            .iter()
                            .map(|x| (min(x), x.babel_bytes_per_s_node))
                            .collect(),
                        Style::Line,
                    ),
                    Series::new(
                        "control + peer exchange",
                        samples
                            .iter()
                            .map(|x| (min(x), x.control_bytes_per_s_node))
                            .collect(),
                        Style::Line,
                    ),
                ],
            ),
        ),
        (
            "routes",
            Chart::new(
                format!("{title}: selected routes"),
                "virtual time (min)",
                "ms, or changes/min per node",
                vec![
                    Series::new(
                        "mean RTT of selected routes (ms)",
                        samples
                            .iter()
                            .filter_map(|x| Some((min(x), x.mean_rtt_ms?)))
                            .collect(),
                        Style::Line,
                    ),
                    Series::new(
                        "route changes per node per minute",
                        samples
                            .iter()
                            .map(|x| (min(x), x.route_changes_per_node_min))
                            .collect(),
                        Style::Line,
                    ),
                ],
            ),
        ),
    ];
    for (what, chart) in &charts {
        draw(&ctx.out.path(&format!("{stem}_{what}.svg")), chart)?;
    }
    let mut command = format!(
        "re6st sim network --nodes {} --data {} --duration {}s --seed {}",
        s.nodes,
        data.name(),
        args.duration.as_secs(),
        s.seed
    );
    if args.churn > 0.0 {
        command += &format!(" --churn {}", args.churn);
    }
    if args.kill > 0.0 {
        command += &format!(" --kill {}", args.kill);
    }
    if args.tunnel_replacement != Replacement::LeastUsed {
        command += &format!(" --tunnel-replacement {}", args.tunnel_replacement);
    }
    if let Some(r) = args.refresh {
        command += &format!(" --refresh {}s", r.as_secs());
    }
    let dataset = format!("{}, n = {}", s.data, s.nodes);
    let row = |quantity: &str, ours: String, svg: &str| Row {
        experiment: "10 network".to_owned(),
        quantity: quantity.to_owned(),
        report: "-".to_owned(),
        ours,
        dataset: dataset.clone(),
        note: "NodeCores in virtual time".to_owned(),
        svg: format!("{stem}_{svg}.svg"),
        command: command.clone(),
    };
    ctx.rows.push(row(
        "full reachability after a cold start",
        opt(s.full_reach_after_start_s, 0, " s"),
        "reach",
    ));
    if s.kill_at_s.is_some() {
        ctx.rows.push(row(
            &format!(
                "after killing {} nodes: lowest reachability; full again after",
                s.killed
            ),
            format!(
                "{}; {}",
                opt(s.min_reach_after_kill.map(|r| r * 100.0), 2, " %"),
                opt(s.full_reach_after_kill_s, 0, " s")
            ),
            "reach",
        ));
    }
    ctx.rows.push(row(
        "Babel / control + exchange bytes per second per node",
        format!(
            "{:.0} / {:.1}",
            s.babel_bytes_per_s_node,
            s.control_frame_bytes_per_s_node + s.exchange_bytes_per_s_node
        ),
        "traffic",
    ));
    ctx.rows.push(row(
        "routes per node; route changes per node per minute; mean RTT of selected routes",
        format!(
            "{:.1}; {:.2}; {}",
            s.routes_per_node,
            s.route_changes_per_node_min,
            opt(s.mean_route_rtt_ms, 2, " ms")
        ),
        "routes",
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_spreads_the_fraction_over_refresh_periods() {
        let args = NetworkArgs {
            nodes: 100,
            duration: Duration::from_secs(50 * 300),
            churn: 0.01,
            kill: 0.0,
            sample: Duration::from_secs(10),
            json: false,
            check: false,
            tunnel_replacement: Replacement::LeastUsed,
            refresh: None,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let t = churn_times(&args, Duration::from_secs(300), 100, &mut rng);
        assert!((49..=50).contains(&t.len()), "{}", t.len());
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(t.iter().all(|t| *t < args.duration));
        assert_eq!(
            DataSet::parse("synthetic2500"),
            Some(DataSet::Synthetic2500)
        );
        assert_eq!(DataSet::parse("/tmp"), None);
    }
}

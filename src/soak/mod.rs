//! `re6st soak`: real `re6st node` processes and a registry on this
//! machine, for minutes or hours, under a seeded chaos schedule, with
//! all-pairs reachability sampled all along and every process watched.
//!
//! - [`net`]: the processes, the namespaces and the faults done to them;
//! - [`chaos`]: the schedule (sans-IO, seeded);
//! - [`probe`]: the all-pairs prober;
//! - [`analysis`]: live pairs, outages and their causes, from the probes;
//! - [`watch`]: memory, descriptors, CPU and panics of every process;
//! - [`report`]: the tables, the verdict and the last line.
//!
//! The soak fails (exit status 1) when a node panics or exits on its own,
//! when an outage lasts longer than the bar of the fault before it, when a
//! revoked node stays reachable, or when the memory of a witness node
//! grows after the warm-up.

mod analysis;
mod chaos;
mod net;
mod probe;
mod report;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use analysis::{Analyzer, Event, NodeState, Probe, Timeline};
use chaos::{Action, EventKind, Fault, PlanConfig, Planner};
use net::{Mode, NetConfig, SoakNet};
use probe::{Prober, Target, Targets};
use watch::Series;

/// Arguments of `re6st soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(3..=200))]
    pub nodes: u16,
    /// Length of the soak in minutes, warm-up included (decimals allowed).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seed of the chaos schedule: the same seed gives the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean time between two faults (each gap is 0.5x to 1.5x it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub fault_every: Duration,
    /// Fault kinds to inject, comma-separated [default: all this machine
    /// can do: without root, only kill, wipe, freeze, registry, revoke].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Outgoing tunnels per node (k). Small, so that most routes cross
    /// other nodes and faults force reroutes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub tunnels: u16,
    /// Tunnel refresh period (300s in a real network): refreshes during
    /// the soak must not lose reachability either.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Every pair is probed once per this period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_every: Duration,
    /// A probe not answered within this is lost.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// No fault during the warm-up; memory is compared with its end
    /// [default: a twelfth of the soak, from 20 s to 5 min].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Nodes never faulted, whose memory and descriptors are followed
    /// over the whole soak [default: a tenth of the nodes, at least 1].
    #[arg(long)]
    pub witnesses: Option<u16>,
    /// Largest growth of a witness's resident memory after the warm-up,
    /// in percent, before the soak fails.
    #[arg(long, default_value_t = 25.0)]
    pub max_rss_growth: f64,
    /// Run `--no-tun` nodes on loopback even as root (reachability is then
    /// read from the nodes' routes: there is nothing to ping through).
    #[arg(long)]
    pub loopback: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the working directory (logs and state directories); it is
    /// kept anyway when the soak fails.
    #[arg(long)]
    pub keep: bool,
}

impl SoakArgs {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64((self.minutes * 60.0).max(1.0))
    }

    fn warmup(&self) -> Duration {
        self.warmup.unwrap_or_else(|| {
            (self.duration() / 12).clamp(Duration::from_secs(20), Duration::from_secs(300))
        })
    }

    fn witnesses(&self) -> usize {
        let n = usize::from(self.nodes);
        self.witnesses
            .map_or((n / 10).max(1), usize::from)
            .min(n - 2)
    }
}

/// Runs `re6st soak`.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        bail!("--minutes must be a positive number");
    }
    let mode = if re6st::netns::is_root() && !args.loopback {
        net::check_tools()?;
        Mode::Namespaces
    } else {
        Mode::Loopback
    };
    let kinds = fault_kinds(&args, mode)?;
    // Stop cleanly on Ctrl-C and SIGTERM: the network is torn down by Drop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let s = stop.clone();
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { signal_hook(sig, s) };
    }
    let mut soak = Soak::start(&args, mode, kinds)?;
    let result = soak.run(&stop);
    let verdict = match result {
        Ok(()) => soak.finish(),
        Err(e) => {
            soak.net.keep_dir();
            return Err(e);
        }
    };
    let failed = !verdict.failures.is_empty();
    if failed || args.keep {
        soak.net.keep_dir();
    }
    report::print(&soak, &verdict, &args);
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&soak, &verdict, &args).to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", verdict.last_line);
    drop(soak);
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// The fault kinds of this run: the ones asked for, minus those the mode
/// cannot do (said, not silently dropped).
fn fault_kinds(args: &SoakArgs, mode: Mode) -> anyhow::Result<Vec<Fault>> {
    let asked = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    if mode == Mode::Loopback {
        let cannot: Vec<String> = asked
            .iter()
            .filter(|f| f.needs_namespaces())
            .map(|f| format!("{f:?}").to_lowercase())
            .collect();
        if !cannot.is_empty() {
            if !args.faults.is_empty() {
                bail!(
                    "{} need network namespaces (run as root, without --loopback)",
                    cannot.join(", ")
                );
            }
            println!(
                "soak: loopback mode (not root, or --loopback): no {} faults",
                cannot.join("/")
            );
        }
        return Ok(asked
            .into_iter()
            .filter(|f| !f.needs_namespaces())
            .collect());
    }
    Ok(asked)
}

/// Sets a flag on `sig`.
///
/// # Safety
/// Installs a process-wide signal handler.
unsafe fn signal_hook(sig: libc::c_int, flag: Arc<std::sync::atomic::AtomicBool>) {
    static FLAG: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn handler(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // SAFETY: the handler is async-signal-safe (an atomic store).
    unsafe {
        libc::signal(sig, handler as *const () as libc::sighandler_t);
    }
}

/// A process that ended on its own.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    /// Its name.
    pub name: String,
    /// When (since the start).
    pub at: Duration,
    /// Its exit status, as printed.
    pub status: String,
    /// Its last log lines.
    pub tail: String,
}

/// How long a started node took until its control socket answered with
/// its identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinTime {
    /// Its state directory had been wiped (it enrolled anew).
    pub wiped: bool,
    /// Spawn to running.
    pub took: Duration,
}

/// The soak in progress.
pub(crate) struct Soak {
    pub(crate) net: SoakNet,
    pub(crate) t0: Instant,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) witnesses: usize,
    pub(crate) max_rss_growth: f64,
    pub(crate) period: Duration,
    pub(crate) timeout: Duration,
    pub(crate) planner: Planner,
    pub(crate) timeline: Timeline,
    pub(crate) events: Vec<Event>,
    pub(crate) analyzer: Analyzer,
    pub(crate) series: Vec<Series>,
    pub(crate) exits: Vec<Exit>,
    pub(crate) fault_errors: Vec<String>,
    pub(crate) joins: Vec<JoinTime>,
    /// Nodes started whose identity is not confirmed yet: (node, wiped).
    starting: BTreeMap<usize, bool>,
    /// Per node, tunnels up, routes and peer DB size, sampled.
    pub(crate) shape: Vec<(Duration, Vec<Shape>)>,
    /// When each revoked node was revoked.
    pub(crate) revoked_at: BTreeMap<usize, Duration>,
    pub(crate) prober_stats: probe::ProberStats,
    pub(crate) converged_after: Option<Duration>,
    targets: Targets,
    links: Vec<(usize, usize)>,
    probes: mpsc::Receiver<Probe>,
    probes_tx: Option<mpsc::Sender<Probe>>,
    buffer: BTreeMap<(Duration, usize, usize), Probe>,
    prober: Option<Prober>,
}

/// One node's tunnels up, routes and peer DB size.
pub(crate) type Shape = (usize, usize, usize);

impl Soak {
    fn start(args: &SoakArgs, mode: Mode, kinds: Vec<Fault>) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let n = usize::from(args.nodes);
        let duration = args.duration();
        let warmup = args.warmup().min(duration);
        let witnesses = args.witnesses();
        println!(
            "soak: {n} nodes ({}), {:.1} min, seed {}, a fault every {} on average after a {} warm-up; \
             k = {}, refresh {}; every pair probed every {}",
            match mode {
                Mode::Namespaces => "one network namespace and TUN device each",
                Mode::Loopback => "--no-tun on loopback",
            },
            args.minutes,
            args.seed,
            humantime::format_duration(args.fault_every),
            humantime::format_duration(warmup),
            args.tunnels,
            humantime::format_duration(args.refresh),
            humantime::format_duration(args.probe_every),
        );
        let net = SoakNet::start(
            &NetConfig {
                nodes: n,
                tunnels: args.tunnels,
                refresh: args.refresh,
                keep: args.keep,
            },
            mode,
        )?;
        println!(
            "soak: working directory {}; faults: {}",
            net.dir().display(),
            kinds
                .iter()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if mode == Mode::Namespaces && !net.netem {
            println!(
                "soak: this kernel has no tc netem (sch_netem): netem faults drop packets with \
                 nftables and add no delay"
            );
        }
        let planner = Planner::new(
            PlanConfig {
                nodes: n,
                witnesses,
                mean_gap: args.fault_every,
                first_fault: warmup,
                last_fault: duration.saturating_sub(Duration::from_secs(20).min(duration / 6)),
                kinds: kinds.clone(),
            },
            args.seed,
        );
        let targets: Targets = Arc::new(Mutex::new(
            net.nodes
                .iter()
                .map(|n| Target {
                    identity: None,
                    up: false,
                    socket: n.socket(),
                })
                .collect(),
        ));
        let (tx, rx) = mpsc::channel();
        let starting = (0..n).map(|i| (i, true)).collect();
        // The first starts are events too: a node that just started may
        // not be reachable at once.
        let events = (0..n)
            .map(|i| Event {
                at: t0.elapsed(),
                kind: EventKind::Start,
                nodes: vec![i],
            })
            .collect();
        Ok(Self {
            net,
            t0,
            duration,
            warmup,
            witnesses,
            max_rss_growth: args.max_rss_growth,
            period: args.probe_every,
            timeout: args.probe_timeout,
            planner,
            timeline: Timeline::new(n),
            events,
            analyzer: Analyzer::new(
                args.probe_every,
                args.probe_timeout,
                Duration::from_secs(10),
            ),
            series: Vec::new(),
            exits: Vec::new(),
            fault_errors: Vec::new(),
            joins: Vec::new(),
            starting,
            shape: Vec::new(),
            revoked_at: BTreeMap::new(),
            prober_stats: probe::ProberStats::default(),
            converged_after: None,
            targets,
            links: Vec::new(),
            probes: rx,
            probes_tx: Some(tx),
            buffer: BTreeMap::new(),
            prober: None,
        })
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn run(&mut self, stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
        let n = self.net.nodes.len();
        // Wait for every node to run before probing.
        let deadline = Instant::now() + Duration::from_secs(60 + 2 * n as u64);
        while !self.starting.is_empty() {
            self.check_starting();
            self.reap();
            if Instant::now() > deadline {
                bail!(
                    "{} nodes did not start within {:?}: {:?}",
                    self.starting.len(),
                    deadline.elapsed(),
                    self.starting
                        .keys()
                        .map(|i| &self.net.nodes[*i].name)
                        .collect::<Vec<_>>()
                );
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "soak: {n} nodes running after {:.1} s; probing starts",
            self.now().as_secs_f64()
        );
        let tx = self.probes_tx.take().context("prober already started")?;
        self.prober = Some(match self.net.mode {
            Mode::Namespaces => {
                let ns: Vec<String> = (0..n).filter_map(|i| self.net.namespace(i)).collect();
                Prober::start_icmp(
                    &ns,
                    self.targets.clone(),
                    self.period,
                    self.timeout,
                    tx,
                    self.t0,
                )?
            }
            Mode::Loopback => Prober::start_routes(self.targets.clone(), self.period, tx, self.t0)?,
        });
        let (mut next_watch, mut next_links, mut next_progress) =
            (Duration::ZERO, Duration::ZERO, Duration::from_secs(60));
        while self.now() < self.duration {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                bail!("interrupted");
            }
            let now = self.now();
            self.reap();
            self.check_starting();
            if now >= next_watch {
                next_watch = now + Duration::from_secs(10);
                self.watch();
            }
            if now >= next_links {
                next_links = now + Duration::from_secs(20);
                self.sample_shape();
            }
            let links = self.links.clone();
            for a in self.planner.poll(now, &links) {
                self.act(a);
            }
            self.feed(false);
            if self.converged_after.is_none() && self.analyzer.counted > 0 {
                let b = self.analyzer.buckets.iter().rev().find(|b| b.counted > 0);
                if b.is_some_and(|b| b.answered == b.counted) {
                    self.converged_after = Some(now);
                }
            }
            if now >= next_progress {
                next_progress = now + Duration::from_secs(60);
                println!(
                    "soak: {:>4.0} s  {} faults  reachability {:.3} %  outages {}",
                    now.as_secs_f64(),
                    self.planner.faults(),
                    self.analyzer.reachability(),
                    self.analyzer.outages.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the prober; the verdict.
    fn finish(&mut self) -> report::Verdict {
        let end = self.now().min(self.duration);
        if let Some(p) = self.prober.take() {
            self.prober_stats = p.stop();
        }
        self.feed(true);
        self.analyzer.finish(end);
        self.watch();
        // Faults still in force end with the network (processes stopped,
        // namespaces and their rules deleted).
        report::verdict(self, end)
    }

    /// Moves probe results into the analyzer in send order, once their
    /// window is over (so that the timeline covers it).
    fn feed(&mut self, all: bool) {
        while let Ok(p) = self.probes.try_recv() {
            self.buffer.insert((p.sent, p.src, p.dst), p);
        }
        let horizon = self
            .now()
            .saturating_sub(self.timeout + Duration::from_secs(1));
        while let Some(entry) = self.buffer.first_entry() {
            if !all && entry.key().0 > horizon {
                break;
            }
            let p = entry.remove();
            self.analyzer.handle_probe(p, &self.timeline);
        }
    }

    fn set_state(&mut self, node: usize, state: NodeState) {
        let now = self.now();
        self.timeline.set(node, now, state);
        let identity = self.net.nodes[node].identity;
        let up = self.net.nodes[node].proc.is_some() && !self.net.nodes[node].frozen;
        if let Ok(mut t) = self.targets.lock() {
            t[node].identity = identity;
            t[node].up = up && state != NodeState::Down;
        }
    }

    fn event(&mut self, kind: EventKind, nodes: Vec<usize>) {
        let at = self.now();
        self.events.push(Event { at, kind, nodes });
    }

    /// Carries out one action of the schedule.
    fn act(&mut self, a: Action) {
        self.event(a.kind(), a.nodes());
        let r = match a {
            Action::Kill { node, wipe } => {
                let r = self.net.kill_node(node, wipe);
                self.starting.remove(&node);
                self.set_state(node, NodeState::Down);
                r
            }
            Action::Start { node } => self.start_node(node),
            Action::Restart { node } => {
                let r = self.net.kill_node(node, false);
                self.set_state(node, NodeState::Down);
                r.and_then(|()| self.start_node(node))
            }
            Action::Freeze { node } => {
                self.net.freeze_node(node, true);
                self.set_state(node, NodeState::Down);
                Ok(())
            }
            Action::Thaw { node } => {
                self.net.freeze_node(node, false);
                self.back_up(node);
                Ok(())
            }
            Action::Isolate { node } => {
                let r = self.net.isolate(node, true);
                self.set_state(node, NodeState::Down);
                r
            }
            Action::Rejoin { node } => {
                let r = self.net.isolate(node, false);
                self.back_up(node);
                r
            }
            Action::LinkDown { a, b } => self.net.link(a, b, true),
            Action::LinkUp { a, b } => self.net.link(a, b, false),
            Action::NetemOn {
                node,
                delay_ms,
                jitter_ms,
                loss_pct,
            } => self.net.netem(node, Some((delay_ms, jitter_ms, loss_pct))),
            Action::NetemOff { node } => self.net.netem(node, None),
            Action::RegistryKill => {
                self.net.kill_registry();
                Ok(())
            }
            Action::RegistryStart => self.net.start_registry().map(|_| ()),
            Action::Revoke { node } => {
                let r = self.net.revoke(node);
                if r.is_ok() {
                    self.revoked_at.insert(node, self.now());
                    self.set_state(node, NodeState::Revoked);
                }
                r
            }
        };
        if let Err(e) = r {
            let msg = format!("{:.1} s: {a:?}: {e:#}", self.now().as_secs_f64());
            println!("soak: fault failed: {msg}");
            self.fault_errors.push(msg);
        }
    }

    /// A node back from a freeze or an isolation: live again, unless it
    /// was revoked meanwhile.
    fn back_up(&mut self, node: usize) {
        if self.timeline.state(node) != NodeState::Revoked {
            self.set_state(node, NodeState::Live);
        }
    }

    fn start_node(&mut self, node: usize) -> anyhow::Result<()> {
        self.net.start_node(node)?;
        let wiped = self.net.nodes[node].identity.is_none();
        self.starting.insert(node, wiped);
        if !wiped {
            // Same identity: it counts from its start (its rejoin time is
            // an outage of the start).
            self.set_state(node, NodeState::Live);
        }
        Ok(())
    }

    /// Asks the nodes that were started until they answer with their
    /// identity; a wiped node becomes live then.
    fn check_starting(&mut self) {
        let pending: Vec<(usize, bool)> = self.starting.iter().map(|(a, b)| (*a, *b)).collect();
        for (node, wiped) in pending {
            let Some(status) = self.net.status(node) else {
                continue;
            };
            let took = self.net.nodes[node]
                .started
                .map_or(Duration::ZERO, |s| s.elapsed());
            self.starting.remove(&node);
            if self.prober.is_some() {
                self.joins.push(JoinTime { wiped, took });
            }
            self.net.nodes[node].identity = Some((status.address, status.prefix));
            if wiped {
                // A new identity: a revoked node wiped and started again is
                // a new node.
                self.revoked_at.remove(&node);
            }
            let state = match self.timeline.state(node) {
                NodeState::Down if !self.net.nodes[node].frozen => NodeState::Live,
                NodeState::Revoked if wiped => NodeState::Live,
                s => s,
            };
            self.set_state(node, state);
        }
    }

    /// Processes that ended on their own: recorded, and started again (as
    /// a supervisor would).
    fn reap(&mut self) {
        for (p, node) in self.net.reap() {
            let proc = &mut self.net.procs[p];
            let status = proc
                .child
                .try_wait()
                .ok()
                .flatten()
                .map_or_else(|| "?".into(), |s| s.to_string());
            let exit = Exit {
                name: proc.name.clone(),
                at: self.t0.elapsed(),
                status,
                tail: self.net.log_tail(p, 15),
            };
            println!(
                "soak: {} exited on its own at {:.1} s ({}); last lines:\n{}",
                exit.name,
                exit.at.as_secs_f64(),
                exit.status,
                exit.tail
            );
            self.exits.push(exit);
            let r = match node {
                Some(i) => {
                    self.event(EventKind::Start, vec![i]);
                    self.set_state(i, NodeState::Down);
                    self.start_node(i)
                }
                None => self.net.start_registry().map(|_| ()),
            };
            if let Err(e) = r {
                self.fault_errors
                    .push(format!("restarting after an exit: {e:#}"));
            }
        }
    }

    /// Samples memory, descriptors and CPU of every running process.
    fn watch(&mut self) {
        let at = self.now();
        let mut running: Vec<(usize, Option<usize>)> = self
            .net
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.proc.map(|p| (p, Some(i))))
            .collect();
        if let Some(r) = self.net.registry {
            running.push((r, None));
        }
        for (p, node) in running {
            let Some(s) = watch::sample(self.net.procs[p].pid(), at) else {
                continue;
            };
            match self.series.iter_mut().find(|x| x.proc == p) {
                Some(x) => x.samples.push(s),
                None => self.series.push(Series {
                    name: self.net.procs[p].name.clone(),
                    node,
                    proc: p,
                    samples: vec![s],
                }),
            }
        }
    }

    /// Tunnels, routes and peers of every live node; the tunnels also give
    /// the candidates of link faults.
    fn sample_shape(&mut self) {
        let n = self.net.nodes.len();
        let by_prefix: BTreeMap<ipnet::Ipv6Net, usize> = self
            .net
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.identity.map(|(_, p)| (p, i)))
            .collect();
        let mut links = Vec::new();
        let mut shape = Vec::new();
        for i in 0..n {
            if self.timeline.state(i) != NodeState::Live {
                continue;
            }
            if let Some(s) = self.net.status(i) {
                shape.push((s.tunnels_up, s.routes, s.peer_db));
            }
            if let Some(t) = self.net.tunnels(i) {
                for t in t.iter().filter(|t| t.state == "up") {
                    if let Some(&j) = by_prefix.get(&t.peer_prefix)
                        && i < j
                    {
                        links.push((i, j));
                    }
                }
            }
        }
        links.sort_unstable();
        links.dedup();
        self.links = links;
        self.shape.push((self.now(), shape));
    }
}

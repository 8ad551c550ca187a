//! `re6st sim`: the report's bounds, heuristics and simulations, run on the
//! node's own tunnel policy ([`crate::tunnels::Policy`], through
//! [`overlay::Overlay`]), plus the comparison of replacement strategies
//! ("Beyond the report"). Every experiment writes a CSV, an SVG and rows of
//! `results.md` in `--out`; `re6st sim all` runs them all. Runs are
//! deterministic for a given `--seed`.

mod coords;
mod data;
mod exp_beyond;
mod exp_bounds;
mod exp_graph;
mod exp_latency;
mod exp_network;
mod graph;
mod math;
mod output;
mod overlay;
mod plot;
mod routing;
mod runs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use data::LatencyMatrix;
use output::{Out, Row};

/// The node's reroute time around a killed intermediate node with its
/// default liveness timers: the slowest of 4 release runs of
/// `tests/realnet_reroute.rs` (610-662 ms).
pub const MEASURED_REROUTE_SECS: f64 = 0.66;

/// Arguments of `re6st sim`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each experiment writes NAME.csv and NAME.svg into --out and the \
    table results.md next to them. `re6st sim all --out docs/sim` regenerates the \
    committed figures (about half an hour on 2 cores in a release build)."
)]
pub struct SimArgs {
    /// The experiment to run.
    #[command(subcommand)]
    pub experiment: Experiment,
    /// Seed of every random choice: the same seed gives the same figures.
    #[arg(long, global = true, default_value_t = 2012)]
    pub seed: u64,
    /// Output directory (created if needed).
    #[arg(long, global = true, default_value = "sim-out")]
    pub out: PathBuf,
    /// Directory of the latency data (default: $RE6ST_LATENCY_DATA, else
    /// `data/latency` above the current directory or in the source tree).
    /// For `network`, the data set may be named instead: meridian500 or
    /// synthetic2500 (default: meridian500 up to 500 nodes).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Small sizes and few iterations: a smoke run in seconds, not the
    /// figures.
    #[arg(long, global = true)]
    pub quick: bool,
    /// Worker threads for routing and BFS (default: available cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Refresh iterations of the latency experiments (default: 400 on the
    /// 500-node data, 300 on the 2500-node data, as the report's runs).
    #[arg(long, global = true)]
    pub iterations: Option<usize>,
    /// Reroute time (s) of the node after a node failure, for the
    /// availability figure (default: 0.66 s, the slowest of the node's
    /// measured reroutes with its default timers, tests/realnet_reroute).
    #[arg(long, global = true, default_value_t = MEASURED_REROUTE_SECS)]
    pub reroute_secs: f64,
}

/// The experiments, numbered as in docs/results.md.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum Experiment {
    /// 1. Arity distribution of the random graph (k=10, n=1000) vs (3.2).
    Arity,
    /// 2. Figure 1: bound (4.1) on the probability of a disconnected network.
    Disconnection,
    /// 3. Figure 2: average distance in hops vs n (to 10^6), simulation vs
    ///    heuristic (4.16).
    Distance,
    /// 4. Figures 3 and 4: bound (4.20) and simultaneous node failures.
    Fault,
    /// 5. Availability (4.29), with 1 minute and with the node's reroute time.
    Availability,
    /// 6. Figure 5: average distance as a function of k.
    K,
    /// 7. Latency on the Meridian data: direct, full mesh, hop vs latency
    ///    routing, and Figure 9 (optimisation over refresh iterations).
    Latency,
    /// 8. Figures 6, 7, 8: arity over iterations, arity vs latency and vs
    ///    reliability; churn; destinations of replaced tunnels.
    Dynamics,
    /// 9. Figure 10: fault tolerance of the optimised network.
    FaultOptimised,
    /// Beyond the report: replacement strategies side by side. Each is a
    /// network option of the nodes (`re6st registry run
    /// --tunnel-replacement least-used-best-of-5`; default least-used).
    Beyond,
    /// 10. The node's own code in virtual time: N NodeCores over the
    ///     latency data, cold start, churn, a mass kill; reachability,
    ///     traffic, routes, memory, wall time. Not part of `all`.
    Network(exp_network::NetworkArgs),
    /// Everything above but `network`, in order.
    All(AllArgs),
}

/// Arguments of `re6st sim all`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AllArgs {
    /// Run only these experiments (comma-separated names), still sharing
    /// the runs they have in common; e.g. to spread `all` over processes.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl Experiment {
    /// The experiments `all` runs, in order.
    const EACH: [Experiment; 10] = [
        Experiment::Arity,
        Experiment::Disconnection,
        Experiment::Distance,
        Experiment::Fault,
        Experiment::Availability,
        Experiment::K,
        Experiment::Latency,
        Experiment::Dynamics,
        Experiment::FaultOptimised,
        Experiment::Beyond,
    ];

    /// The subcommand's name.
    fn name(&self) -> &'static str {
        match self {
            Experiment::Arity => "arity",
            Experiment::Disconnection => "disconnection",
            Experiment::Distance => "distance",
            Experiment::Fault => "fault",
            Experiment::Availability => "availability",
            Experiment::K => "k",
            Experiment::Latency => "latency",
            Experiment::Dynamics => "dynamics",
            Experiment::FaultOptimised => "fault-optimised",
            Experiment::Beyond => "beyond",
            Experiment::Network(_) => "network",
            Experiment::All(_) => "all",
        }
    }
}

/// What the experiments share: options, outputs, and results computed once
/// per process (matrices, optimisation runs) so that `all` does each once.
pub struct Ctx {
    out: Out,
    seed: u64,
    quick: bool,
    threads: usize,
    reroute_secs: f64,
    iterations: Option<usize>,
    data: Option<PathBuf>,
    rows: Vec<Row>,
    meridian: Option<Arc<LatencyMatrix>>,
    synthetic: Option<Arc<LatencyMatrix>>,
    runs: Vec<(runs::RunSpec, Arc<runs::RunResult>)>,
    /// Simulated mean distance (hops) by n for k = 10, from `distance`.
    distances: Vec<(usize, f64)>,
}

impl Ctx {
    fn command(&self, exp: &str) -> String {
        let quick = if self.quick { " --quick" } else { "" };
        let its = self
            .iterations
            .map(|i| format!(" --iterations {i}"))
            .unwrap_or_default();
        format!("re6st sim {exp} --seed {}{quick}{its}", self.seed)
    }

    #[allow(clippy::too_many_arguments)] // one per column of the table
    fn row(
        &mut self,
        exp: &str,
        quantity: &str,
        report: &str,
        ours: String,
        dataset: &str,
        note: &str,
        svg: &str,
    ) {
        let name = exp.split_whitespace().nth(1).unwrap_or(exp).to_owned();
        self.rows.push(Row {
            experiment: exp.to_owned(),
            quantity: quantity.to_owned(),
            report: report.to_owned(),
            ours,
            dataset: dataset.to_owned(),
            note: note.to_owned(),
            svg: svg.to_owned(),
            command: self.command(&name),
        });
    }

    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.data {
            Some(d) => Ok(d.clone()),
            None => {
                let cwd = std::env::current_dir().context("reading the current directory")?;
                data::find_latency_dir(&cwd)
            }
        }
    }

    fn meridian(&mut self) -> anyhow::Result<Arc<LatencyMatrix>> {
        if self.meridian.is_none() {
            let m = LatencyMatrix::meridian500(&self.data_dir()?)?;
            self.meridian = Some(Arc::new(m));
        }
        Ok(self.meridian.clone().expect("just loaded"))
    }

    fn synthetic(&mut self) -> anyhow::Result<Arc<LatencyMatrix>> {
        if self.synthetic.is_none() {
            let t = Instant::now();
            let m = LatencyMatrix::synthetic2500(&self.data_dir()?)?;
            tracing::debug!(
                secs = t.elapsed().as_secs_f64(),
                "loaded the synthetic matrix"
            );
            self.synthetic = Some(Arc::new(m));
        }
        Ok(self.synthetic.clone().expect("just loaded"))
    }

    /// The latency data sets used by experiments 7 to 9: the real one
    /// first. `--quick` uses the real one only.
    fn datasets(&mut self) -> anyhow::Result<Vec<Arc<LatencyMatrix>>> {
        let mut v = vec![self.meridian()?];
        if !self.quick {
            v.push(self.synthetic()?);
        }
        Ok(v)
    }
}

/// Runs `re6st sim`.
pub fn run(mut args: SimArgs) -> anyhow::Result<()> {
    // `network --data meridian500` names a data set, not a directory.
    let mut dataset = None;
    if matches!(args.experiment, Experiment::Network(_))
        && let Some(d) = args
            .data
            .as_deref()
            .and_then(|p| p.to_str())
            .and_then(exp_network::DataSet::parse)
    {
        dataset = Some(d);
        args.data = None;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut ctx = Ctx {
        out: Out::new(&args.out)?,
        seed: args.seed,
        quick: args.quick,
        threads,
        reroute_secs: args.reroute_secs,
        iterations: args.iterations,
        data: args.data,
        rows: Vec::new(),
        meridian: None,
        synthetic: None,
        runs: Vec::new(),
        distances: Vec::new(),
    };
    let list: Vec<Experiment> = match args.experiment {
        Experiment::All(all) => {
            for name in &all.only {
                if !Experiment::EACH.iter().any(|e| e.name() == name) {
                    anyhow::bail!("--only: no experiment named {name:?}");
                }
            }
            Experiment::EACH
                .into_iter()
                .filter(|e| all.only.is_empty() || all.only.iter().any(|n| n == e.name()))
                .collect()
        }
        e => vec![e],
    };
    let start = Instant::now();
    for e in list {
        let t = Instant::now();
        match &e {
            Experiment::Arity => exp_graph::arity(&mut ctx),
            Experiment::Disconnection => exp_bounds::disconnection(&mut ctx),
            Experiment::Distance => exp_graph::distance(&mut ctx),
            Experiment::Fault => exp_graph::fault(&mut ctx),
            Experiment::Availability => exp_bounds::availability(&mut ctx),
            Experiment::K => exp_graph::k(&mut ctx),
            Experiment::Latency => exp_latency::latency(&mut ctx),
            Experiment::Dynamics => exp_latency::dynamics(&mut ctx),
            Experiment::FaultOptimised => exp_latency::fault_optimised(&mut ctx),
            Experiment::Beyond => exp_beyond::beyond(&mut ctx),
            Experiment::Network(a) => exp_network::network(&mut ctx, a, dataset),
            Experiment::All(_) => unreachable!("expanded above"),
        }
        .with_context(|| format!("experiment {}", e.name()))?;
        // Saved after each experiment, so a long run keeps what it did.
        ctx.out.table(&ctx.rows, ctx.seed)?;
        eprintln!(
            "re6st sim: {} done in {:.1} s",
            e.name(),
            t.elapsed().as_secs_f64()
        );
    }
    let table = ctx.out.table(&ctx.rows, ctx.seed)?;
    eprintln!(
        "re6st sim: {} rows in {}, total {:.1} s",
        ctx.rows.len(),
        table.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

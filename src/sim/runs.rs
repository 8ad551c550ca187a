//! Optimisation runs on latency data: the policies of all nodes, refresh
//! after refresh, with routing converged in between (report §5, Figure 9).

use std::sync::Arc;

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::coords::Vivaldi;
use super::data::LatencyMatrix;
use super::output::progress;
use super::overlay::{Overlay, PeerDb};
use super::routing::{LatencyGraph, converge, converge_with_distances, hop_routed_mean_ms};
use crate::tunnels::{Direction, PolicyConfig, Replacement};

/// Vivaldi passes over the tunnels per refresh period: a node samples each
/// tunnel's RTT many times in 300 s; a few passes are enough to follow the
/// tunnels that changed.
const VIVALDI_ROUNDS: usize = 8;

/// Where [`Replacement::Shortcut`] nodes get the direct RTT estimate of a
/// destination from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// No estimate: other policies.
    None,
    /// Vivaldi coordinates learnt from the tunnels' RTTs ([`Vivaldi`]).
    Vivaldi,
    /// The true RTT of every destination: what a node gets by pinging every
    /// node of its peer DB (once, cached: RTTs change little), or an upper
    /// bound of what better coordinates could give.
    Oracle,
    /// Vivaldi picks the `pings` destinations with the largest estimated
    /// gain; the node pings them and reports those only, with their
    /// measured RTT.
    VivaldiPing(u16),
    /// The node pings `pings` random destinations and reports those only:
    /// what the pings give without coordinates to choose them.
    Ping(u16),
}

impl Estimate {
    fn uses_vivaldi(self) -> bool {
        matches!(self, Estimate::Vivaldi | Estimate::VivaldiPing(_))
    }
}

/// Nodes leaving and coming back at once between iterations (report §5.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Churn {
    /// A stable network.
    None,
    /// Every node restarts with this probability per iteration.
    Uniform(f64),
    /// Node `i` restarts with its own probability, uniform in `[0, max]`
    /// (Figure 8: arity vs reliability).
    PerNode(f64),
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Data set name (see [`LatencyMatrix::name`]).
    pub dataset: String,
    /// The policy's replacement strategy.
    pub replacement: Replacement,
    /// Churn.
    pub churn: Churn,
    /// Refresh iterations.
    pub iterations: usize,
    /// Direct RTT estimates given to the nodes (with
    /// [`Replacement::Shortcut`]).
    pub estimate: Estimate,
    /// Seed.
    pub seed: u64,
}

/// Measures of one iteration, taken on the converged routing before the
/// refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Iteration {
    /// Mean latency over reachable ordered pairs (ms).
    pub mean_ms: f64,
    /// Ordered pairs that cannot reach each other.
    pub unreachable_pairs: u64,
    /// Number of nodes of each arity (index = arity).
    pub arity_hist: Vec<u32>,
    /// Mean destinations routed by a node through one of its own tunnels.
    pub own_tunnel_destinations: f64,
    /// Mean destinations routed through a tunnel, over both ends of every
    /// tunnel.
    pub tunnel_destinations: f64,
    /// Tunnels replaced by the refresh that follows, and the destinations
    /// they routed when chosen.
    pub replaced: (u64, u64),
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Per iteration (`iterations + 1` entries: the last one is after the
    /// last refresh).
    pub iterations: Vec<Iteration>,
    /// Mean latency of the initial random overlay routed by hop count.
    pub hop_routed_ms: f64,
    /// Tunnels of the initial random overlay.
    pub initial_edges: Vec<(u32, u32)>,
    /// Tunnels at the end.
    pub final_edges: Vec<(u32, u32)>,
    /// Arity of each node at the end.
    pub final_arity: Vec<usize>,
    /// Restart probability of each node (with [`Churn::PerNode`]).
    pub reliability: Vec<f64>,
    /// With [`Estimate::Vivaldi`]: median and 90th percentile of the
    /// coordinates' relative error over all pairs, after the first and
    /// after the last iteration.
    pub coord_error: Option<[(f64, f64); 2]>,
}

impl RunResult {
    /// Mean latency over the last `window` iterations.
    pub fn tail_mean_ms(&self, window: usize) -> f64 {
        let w = window.clamp(1, self.iterations.len());
        self.iterations[self.iterations.len() - w..]
            .iter()
            .map(|i| i.mean_ms)
            .sum::<f64>()
            / w as f64
    }
}

/// The node defaults: k = 10, maximum arity 30, 300 s refresh.
pub fn node_config(replacement: Replacement) -> PolicyConfig {
    PolicyConfig {
        replacement,
        ..PolicyConfig::with_k(10)
    }
}

/// Runs `spec` on `m`.
pub fn run(m: &LatencyMatrix, spec: &RunSpec, threads: usize) -> anyhow::Result<RunResult> {
    let n = m.len();
    let config = node_config(spec.replacement);
    let max = config.max_tunnels;
    let mut o = Overlay::new(n, config, Some(m), PeerDb::All, spec.seed)?;
    o.start(|| {});
    let reliability: Vec<f64> = match spec.churn {
        Churn::PerNode(max) => (0..n).map(|_| o.rng().random::<f64>() * max).collect(),
        Churn::Uniform(p) => vec![p; n],
        Churn::None => vec![0.0; n],
    };
    let initial_edges = o.edges();
    let label = format!(
        "{:?} {}",
        spec.replacement,
        &spec.dataset[..spec.dataset.find(' ').unwrap_or(spec.dataset.len())]
    );
    let bar = progress(spec.iterations as u64 + 1, &label);
    let mut iterations = Vec::with_capacity(spec.iterations + 1);
    let mut hop_routed_ms = 0.0;
    let shortcut = matches!(spec.replacement, Replacement::Shortcut { .. });
    let mut coord_rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed ^ 0xC00D);
    let mut vivaldi = spec
        .estimate
        .uses_vivaldi()
        .then(|| Vivaldi::new(n, &mut coord_rng));
    let mut coord_error = None;
    for it in 0..=spec.iterations {
        let edges = o.edges();
        let g = LatencyGraph::new(n, &edges, m);
        let (conv, dist) = if shortcut {
            let (c, d) = converge_with_distances(&g, threads);
            (c, Some(d))
        } else {
            (converge(&g, threads), None)
        };
        if it == 0 {
            hop_routed_ms = hop_routed_mean_ms(&g);
        }
        o.feed_routes(&g.csr, &conv);
        if let Some(v) = vivaldi.as_mut() {
            v.update(&edges, m, VIVALDI_ROUNDS, &mut coord_rng);
            if it == 0 {
                coord_error = Some([v.relative_error(m); 2]);
            } else if it == spec.iterations
                && let Some(e) = coord_error.as_mut()
            {
                e[1] = v.relative_error(m);
            }
        }
        if let Some(dist) = &dist {
            feed_destinations(
                &mut o,
                m,
                dist,
                spec.estimate,
                vivaldi.as_ref(),
                &mut coord_rng,
            );
        }
        let mut arity_hist = vec![0u32; max + 2];
        for a in o.arities() {
            arity_hist[a.min(max + 1)] += 1;
        }
        // Destinations per tunnel, seen from its opener and from both ends.
        let (mut own_sum, mut own_count) = (0u64, 0u64);
        for v in 0..n {
            let own: Vec<u32> = o
                .policy(v)
                .tunnels()
                .filter(|t| t.direction == Direction::Outgoing)
                .map(|t| t.peer)
                .collect();
            let base = g.csr.offset(v);
            for (j, w) in g.csr.neighbours(v).iter().enumerate() {
                if own.contains(w) {
                    own_sum += u64::from(conv.routes[base + j]);
                    own_count += 1;
                }
            }
        }
        let all_sum: u64 = conv.routes.iter().map(|&r| u64::from(r)).sum();
        let mut record = Iteration {
            mean_ms: conv.mean_ms,
            unreachable_pairs: conv.unreachable_pairs,
            arity_hist,
            own_tunnel_destinations: own_sum as f64 / own_count.max(1) as f64,
            tunnel_destinations: all_sum as f64 / conv.routes.len().max(1) as f64,
            replaced: (0, 0),
        };
        if it < spec.iterations {
            let before = o.replaced();
            o.refresh();
            let after = o.replaced();
            record.replaced = (after.0 - before.0, after.1 - before.1);
            for (i, &p) in reliability.iter().enumerate() {
                if p > 0.0 && o.rng().random::<f64>() < p {
                    o.restart(i)?;
                }
            }
        }
        iterations.push(record);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(RunResult {
        iterations,
        hop_routed_ms,
        initial_edges,
        final_edges: o.edges(),
        final_arity: o.arities(),
        reliability,
        coord_error,
    })
}

/// Gives every node the route metric of the destinations it reaches
/// (`dist`, row by row, µs) with their direct RTT estimate (or measure).
fn feed_destinations(
    o: &mut Overlay<'_>,
    m: &LatencyMatrix,
    dist: &[u32],
    estimate: Estimate,
    vivaldi: Option<&Vivaldi>,
    rng: &mut Xoshiro256PlusPlus,
) {
    let n = m.len();
    let us = Duration::from_micros;
    for v in 0..n {
        let row = &dist[v * n..(v + 1) * n];
        let reached = |j: usize| j != v && row[j] != u32::MAX;
        let measured = |j: usize| {
            Some((
                j as u32,
                us(u64::from(row[j])),
                us(u64::from(m.rtt_us(v, j)?)),
            ))
        };
        let dests: Vec<(u32, Duration, Duration)> = match (estimate, vivaldi) {
            (Estimate::Vivaldi, Some(c)) => (0..n)
                .filter(|&j| reached(j))
                .map(|j| {
                    let est = (c.estimate_ms(v, j) * 1000.0) as u64;
                    (j as u32, us(u64::from(row[j])), us(est))
                })
                .collect(),
            (Estimate::VivaldiPing(pings), Some(c)) => {
                let mut gains: Vec<(i64, usize)> = (0..n)
                    .filter(|&j| reached(j))
                    .map(|j| {
                        let est = (c.estimate_ms(v, j) * 1000.0) as i64;
                        (est - i64::from(row[j]), j)
                    })
                    .collect();
                let keep = usize::from(pings).min(gains.len());
                if keep > 0 && keep < gains.len() {
                    gains.select_nth_unstable(keep - 1);
                }
                gains[..keep]
                    .iter()
                    .filter_map(|&(_, j)| measured(j))
                    .collect()
            }
            (Estimate::Ping(pings), _) => {
                let mut out = Vec::new();
                for _ in 0..pings {
                    let j = rng.random_range(0..n);
                    if reached(j)
                        && let Some(d) = measured(j)
                    {
                        out.push(d);
                    }
                }
                out
            }
            (Estimate::Oracle, _) => (0..n)
                .filter(|&j| reached(j))
                .filter_map(measured)
                .collect(),
            _ => Vec::new(),
        };
        o.feed_destinations(v, dests);
    }
}

/// Runs `spec` once per process: `all` reuses runs across experiments.
pub fn cached(
    ctx: &mut super::Ctx,
    m: &Arc<LatencyMatrix>,
    spec: RunSpec,
) -> anyhow::Result<Arc<RunResult>> {
    if let Some((_, r)) = ctx.runs.iter().find(|(s, _)| *s == spec) {
        return Ok(r.clone());
    }
    let r = Arc::new(run(m, &spec, ctx.threads)?);
    ctx.runs.push((spec, r.clone()));
    Ok(r)
}

//! Beyond the report: replacement strategies side by side on the latency
//! data, averaged over seeds: latency refresh after refresh against the full
//! mesh, under churn, the fault tolerance of what they build, their arity
//! and what they cost per refresh.

use std::sync::Arc;

use super::Ctx;
use super::data::LatencyMatrix;
use super::exp_latency::{fault_curves, iterations, short};
use super::output::f;
use super::plot::{Chart, Series, Style, draw};
use super::routing::full_mesh_mean_ms;
use super::runs::{self, Churn, Estimate, RunResult, RunSpec};
use crate::tunnels::Replacement;

/// Seeds per strategy: `--seed`, `--seed + 1`, ...
const SEEDS: u64 = 3;

/// The goal: within this factor of the full mesh ...
const GOAL_RATIO: f64 = 1.05;
/// ... after this many refreshes.
const GOAL_REFRESHES: usize = 50;

/// One strategy: what the network configuration names, and where
/// [`Replacement::Shortcut`] nodes get their direct RTT estimates.
struct Strategy {
    label: &'static str,
    replacement: Replacement,
    estimate: Estimate,
    /// Extra handshakes per replaced tunnel (best-of-n probes).
    probes: u64,
    /// Run on the small data set only.
    small_only: bool,
}

/// The strategies compared, or those named by the environment variable
/// `RE6ST_SIM_BEYOND` (`NAME[:vivaldi|:oracle|:vivaldi-ping-M|:ping-M],...`,
/// NAME as for
/// `--tunnel-replacement`), to explore variants without a rebuild.
fn strategies() -> anyhow::Result<Vec<Strategy>> {
    let Ok(list) = std::env::var("RE6ST_SIM_BEYOND") else {
        return Ok(default_strategies());
    };
    list.split(',')
        .map(|item| {
            let (name, est) = item.split_once(':').unwrap_or((item, ""));
            let replacement: Replacement = name.parse()?;
            let count = |prefix: &str| est.strip_prefix(prefix).and_then(|c| c.parse().ok());
            let estimate = match est {
                "" => Estimate::None,
                "vivaldi" => Estimate::Vivaldi,
                "oracle" => Estimate::Oracle,
                _ if count("vivaldi-ping-").is_some() => {
                    Estimate::VivaldiPing(count("vivaldi-ping-").unwrap_or(0))
                }
                _ if count("ping-").is_some() => Estimate::Ping(count("ping-").unwrap_or(0)),
                other => anyhow::bail!("unknown estimate {other:?} in RE6ST_SIM_BEYOND"),
            };
            if matches!(replacement, Replacement::Shortcut { .. }) && estimate == Estimate::None {
                anyhow::bail!("{name} needs :vivaldi or :oracle in RE6ST_SIM_BEYOND");
            }
            let probes = match replacement {
                Replacement::LeastUsedBestOf { probes } => u64::from(probes) - 1,
                _ => 0,
            };
            // Leaked once per process: labels are `'static` like the
            // built-in ones.
            let label: &'static str = Box::leak(item.to_owned().into_boxed_str());
            Ok(Strategy {
                label,
                replacement,
                estimate,
                probes,
                small_only: false,
            })
        })
        .collect()
}

fn default_strategies() -> Vec<Strategy> {
    let s = |label, replacement, estimate, probes, small_only| Strategy {
        label,
        replacement,
        estimate,
        probes,
        small_only,
    };
    vec![
        s(
            "least used (report §5.1)",
            Replacement::LeastUsed,
            Estimate::None,
            0,
            false,
        ),
        s(
            "least used + best RTT of 5",
            Replacement::LeastUsedBestOf { probes: 5 },
            Estimate::None,
            4,
            false,
        ),
        s(
            "shortcut; 3 random; Vivaldi estimates",
            Replacement::Shortcut { random: 3 },
            Estimate::Vivaldi,
            0,
            false,
        ),
        s(
            "shortcut; 3 random; true RTT (bound)",
            Replacement::Shortcut { random: 3 },
            Estimate::Oracle,
            0,
            false,
        ),
        s(
            "random replaced (§3.2)",
            Replacement::Random,
            Estimate::None,
            0,
            true,
        ),
    ]
}

/// The runs of one strategy, one per seed.
struct Runs {
    stable: Vec<Arc<RunResult>>,
    churn: Vec<Arc<RunResult>>,
}

fn spec(ctx: &Ctx, m: &LatencyMatrix, s: &Strategy, churn: Churn, seed: u64) -> RunSpec {
    RunSpec {
        dataset: m.name.clone(),
        replacement: s.replacement,
        churn,
        iterations: iterations(ctx, m),
        estimate: s.estimate,
        seed,
    }
}

/// The seed-averaged mean latency, per iteration.
fn mean_curve(rs: &[Arc<RunResult>]) -> Vec<f64> {
    let len = rs.iter().map(|r| r.iterations.len()).min().unwrap_or(0);
    (0..len)
        .map(|i| rs.iter().map(|r| r.iterations[i].mean_ms).sum::<f64>() / rs.len() as f64)
        .collect()
}

fn points(c: &[f64]) -> Vec<(f64, f64)> {
    c.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect()
}

/// Mean of the last sixth of a curve (the "final" level).
fn tail(c: &[f64]) -> f64 {
    let w = (c.len() / 6).max(1).min(c.len());
    c[c.len() - w..].iter().sum::<f64>() / w as f64
}

/// Own tunnels replaced per node and refresh over iterations `range`,
/// averaged over the runs.
fn replaced_per_refresh(rs: &[Arc<RunResult>], n: usize, range: std::ops::Range<usize>) -> f64 {
    let mut sum = 0.0;
    for r in rs {
        let its =
            &r.iterations[range.start.min(r.iterations.len())..range.end.min(r.iterations.len())];
        let replaced: u64 = its.iter().map(|i| i.replaced.0).sum();
        sum += replaced as f64 / (n as f64 * its.len().max(1) as f64);
    }
    sum / rs.len() as f64
}

/// Beyond the report: replacement strategies side by side, stable and with
/// churn, and the fault tolerance of what they build, averaged over seeds.
pub fn beyond(ctx: &mut Ctx) -> anyhow::Result<()> {
    let all = strategies()?;
    for m in ctx.datasets()? {
        let strategies: Vec<&Strategy> = all
            .iter()
            .filter(|s| m.len() <= 500 || !s.small_only)
            .collect();
        let name = short(&m);
        let n = m.len();
        let ds = format!("{} ({} nodes)", m.name, n);
        let mesh = full_mesh_mean_ms(&m, ctx.threads);
        let goal = mesh * GOAL_RATIO;
        let mut runs = Vec::new();
        for s in &strategies {
            let (mut stable, mut churn) = (Vec::new(), Vec::new());
            for k in 0..SEEDS {
                let seed = ctx.seed + k;
                let t = std::time::Instant::now();
                let sp = spec(ctx, &m, s, Churn::None, seed);
                stable.push(runs::cached(ctx, &m, sp)?);
                let sp = spec(ctx, &m, s, Churn::Uniform(0.01), seed);
                churn.push(runs::cached(ctx, &m, sp)?);
                tracing::info!(
                    strategy = s.label,
                    seed,
                    secs = t.elapsed().as_secs_f64(),
                    "beyond runs"
                );
            }
            runs.push(Runs { stable, churn });
        }
        let stable_curves: Vec<Vec<f64>> = runs.iter().map(|r| mean_curve(&r.stable)).collect();
        let churn_curves: Vec<Vec<f64>> = runs.iter().map(|r| mean_curve(&r.churn)).collect();
        // Fault tolerance of the final networks, averaged over the seeds.
        let mut faults: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (s, r) in strategies.iter().zip(&runs) {
            let mut acc: Vec<(f64, f64)> = Vec::new();
            for (k, run) in r.stable.iter().enumerate() {
                let c = fault_curves(
                    ctx,
                    n,
                    &[(s.label, run.final_edges.as_slice())],
                    0xB ^ ((k as u64) << 8),
                );
                let pts = &c[0].1;
                if acc.is_empty() {
                    acc = pts.iter().map(|&(x, _)| (x, 0.0)).collect();
                }
                for (a, p) in acc.iter_mut().zip(pts) {
                    a.1 += p.1 / r.stable.len() as f64;
                }
            }
            faults.push((s.label.to_owned(), acc));
        }
        let at = |c: &[(f64, f64)], s: f64| {
            c.iter()
                .find(|p| (p.0 - s).abs() < 1e-9)
                .map_or(f64::NAN, |p| p.1)
        };
        let mut rows = Vec::new();
        for (i, s) in strategies.iter().enumerate() {
            let c = &stable_curves[i];
            let r = &runs[i];
            let at_goal = c[GOAL_REFRESHES.min(c.len() - 1)];
            let to_goal = c.iter().position(|&v| v <= goal);
            let arity_min = r.stable.iter().flat_map(|x| x.final_arity.iter()).min();
            let arity_max = r.stable.iter().flat_map(|x| x.final_arity.iter()).max();
            let its = c.len() - 1;
            let early = replaced_per_refresh(&r.stable, n, 0..10.min(its));
            let late = replaced_per_refresh(&r.stable, n, its.saturating_sub(10)..its);
            let coords = r
                .stable
                .iter()
                .filter_map(|x| x.coord_error)
                .collect::<Vec<_>>();
            let coord = if coords.is_empty() {
                String::new()
            } else {
                let k = coords.len() as f64;
                format!(
                    "{:.3}/{:.3}",
                    coords.iter().map(|e| e[1].0).sum::<f64>() / k,
                    coords.iter().map(|e| e[1].1).sum::<f64>() / k
                )
            };
            rows.push(vec![
                s.label.to_owned(),
                s.replacement.to_string(),
                format!("{:?}", s.estimate),
                SEEDS.to_string(),
                f(c[0], 2),
                f(at_goal, 2),
                f(at_goal / mesh, 3),
                to_goal.map_or("never".into(), |t| t.to_string()),
                f(tail(c), 2),
                f(tail(&churn_curves[i]), 2),
                format!("{:.3e}", at(&faults[i].1, 0.5)),
                format!("{:.3e}", at(&faults[i].1, 0.8)),
                format!(
                    "{}..{}",
                    arity_min.copied().unwrap_or(0),
                    arity_max.copied().unwrap_or(0)
                ),
                f(early, 3),
                f(late, 3),
                f(early * (1 + s.probes) as f64, 3),
                f(late * (1 + s.probes) as f64, 3),
                coord,
            ]);
        }
        ctx.out.csv(
            &format!("beyond_{name}.csv"),
            &[
                "strategy",
                "tunnel_replacement",
                "estimate",
                "seeds",
                "start_ms",
                "ms_at_refresh_50",
                "ratio_to_full_mesh_at_50",
                "refreshes_to_1.05x_full_mesh",
                "final_ms",
                "churn_1pc_ms",
                "unreachable_at_50pc_dead",
                "unreachable_at_80pc_dead",
                "final_arity_range",
                "replaced_per_node_refresh_first10",
                "replaced_per_node_refresh_last10",
                "handshakes_per_node_refresh_first10",
                "handshakes_per_node_refresh_last10",
                "vivaldi_rel_error_median/p90",
            ],
            &rows,
        )?;
        let its = stable_curves.iter().map(Vec::len).min().unwrap_or(0);
        let curve_rows: Vec<Vec<String>> = (0..its)
            .map(|i| {
                let mut row = vec![i.to_string()];
                row.extend(stable_curves.iter().map(|c| f(c[i], 3)));
                row.extend(churn_curves.iter().map(|c| f(c[i], 3)));
                row
            })
            .collect();
        let mut header = vec!["iteration".to_owned()];
        header.extend(
            strategies
                .iter()
                .map(|s| format!("{} stable", s.replacement)),
        );
        header.extend(
            strategies
                .iter()
                .map(|s| format!("{} churn", s.replacement)),
        );
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        ctx.out
            .csv(&format!("beyond_curves_{name}.csv"), &header, &curve_rows)?;
        let with_mesh = |mut series: Vec<Series>, len: usize| {
            series.push(Series::new(
                "full mesh with detours",
                vec![(0.0, mesh), (len as f64, mesh)],
                Style::Line,
            ));
            series.push(Series::new(
                "goal: 1.05 x full mesh",
                vec![(0.0, goal), (len as f64, goal)],
                Style::Line,
            ));
            series
        };
        let latency_chart = |svg: &str, title: &str, curves: &[Vec<f64>]| {
            draw(
                &ctx.out.path(svg),
                &Chart::new(
                    format!(
                        "Replacement strategies, {title}, {} ({SEEDS} seeds)",
                        m.name
                    ),
                    "refresh iteration",
                    "average latency (ms)",
                    with_mesh(
                        strategies
                            .iter()
                            .zip(curves)
                            .map(|(s, c)| Series::new(s.label, points(c), Style::Line))
                            .collect(),
                        its,
                    ),
                ),
            )
        };
        let svg = format!("beyond_{name}.svg");
        latency_chart(&svg, "stable network", &stable_curves)?;
        latency_chart(
            &format!("beyond_churn_{name}.svg"),
            "churn 1/100 per iteration",
            &churn_curves,
        )?;
        let svg_f = format!("beyond_fault_{name}.svg");
        draw(
            &ctx.out.path(&svg_f),
            &Chart::new(
                format!(
                    "Simultaneous failures of the networks each strategy builds, {}",
                    m.name
                ),
                "share of dead nodes",
                "share of unreachable pairs",
                faults
                    .iter()
                    .map(|(l, p)| Series::new(l.clone(), p.clone(), Style::LinePoints))
                    .collect(),
            ),
        )?;
        for row in &rows {
            ctx.row(
                "beyond",
                &format!(
                    "{}: at refresh {GOAL_REFRESHES} (x full mesh {mesh:.1} ms) / refreshes to {goal:.1} ms / churn 1% / unreachable pairs at 50%, 80% dead",
                    row[0]
                ),
                "report policy: ~20 ms",
                format!(
                    "{} ms ({}x) / {} / {} ms / {}, {}",
                    row[5], row[6], row[7], row[9], row[10], row[11]
                ),
                &ds,
                &format!("network option: --tunnel-replacement {}; {SEEDS} seeds", row[1]),
                &svg,
            );
        }
    }
    Ok(())
}

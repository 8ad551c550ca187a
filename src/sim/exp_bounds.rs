//! Experiments on closed forms: Figure 1 (bound 4.1) and availability
//! (4.29).

use super::Ctx;
use super::math::{self, Range41};
use super::output::{f, progress, sci_ln};
use super::plot::{Chart, Series, Style, draw};

/// 2. Figure 1: log10 of bound (4.1) for k = 1..15 and several n.
pub fn disconnection(ctx: &mut Ctx) -> anyhow::Result<()> {
    let ns: Vec<u64> = if ctx.quick {
        vec![100, 1000]
    } else {
        vec![100, 1000, 10_000, 100_000, 1_000_000]
    };
    let ks: Vec<u64> = (1..=15).collect();
    let bar = progress((ns.len() * ks.len()) as u64, "fig1 bound (4.1)");
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let at = |n: u64, k: u64, r: Range41| math::ln_bound_disconnected(n, k, r);
    for &n in &ns {
        let mut pts = Vec::new();
        for &k in &ks {
            let printed = at(n, k, Range41::Printed);
            let derived = at(n, k, Range41::Derived);
            rows.push(vec![
                n.to_string(),
                k.to_string(),
                f(printed / std::f64::consts::LN_10, 4),
                f(derived / std::f64::consts::LN_10, 4),
            ]);
            pts.push((k as f64, printed / std::f64::consts::LN_10));
            bar.inc(1);
        }
        series.push(Series::new(format!("n = {n}"), pts, Style::LinePoints));
    }
    bar.finish_and_clear();
    ctx.out.csv(
        "fig1_disconnection_bound.csv",
        &[
            "n",
            "k",
            "log10_bound_printed_range",
            "log10_bound_derived_range",
        ],
        &rows,
    )?;
    draw(
        &ctx.out.path("fig1_disconnection_bound.svg"),
        &Chart::new(
            "Figure 1: bound (4.1) on P(network disconnected)",
            "k (tunnels opened per node)",
            "log10 of the bound",
            series,
        ),
    )?;
    let n = if ctx.quick { 1000 } else { 1_000_000 };
    for (n, k) in [(1000, 10), (n, 10), (1000, 3)] {
        let printed = at(n, k, Range41::Printed);
        let derived = at(n, k, Range41::Derived);
        ctx.row(
            "2 disconnection",
            &format!("bound (4.1), k={k}, n={n}"),
            "\"very low\" (plot only)",
            sci_ln(printed),
            "closed form",
            &format!(
                "log space, no underflow. Summing to n-2k-1 as the proof (4.9) derives, instead of the printed n-2k+1: {}",
                sci_ln(derived)
            ),
            "fig1_disconnection_bound.svg",
        );
    }
    Ok(())
}

/// The report's MTBF of Nexedi's servers: 3.6 days.
const MTBF_SECS: f64 = 3.6 * 86400.0;

/// 5. Availability (4.29) for 10^3 and 10^6 nodes, k = 10.
pub fn availability(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (n, report) in [(1000usize, "5.0e-4"), (1_000_000, "9.4e-4")] {
        // The report's figures use (4.17) divided by n (self included).
        let heur = math::heuristic_distance(n as f64, 10.0, true);
        let sim = ctx.distances.iter().find(|d| d.0 == n).map(|d| d.1);
        for (what, recover) in [
            ("1 min recovery", 60.0),
            ("node reroute time", ctx.reroute_secs),
        ] {
            let u = math::unavailability(heur, recover, MTBF_SECS);
            rows.push(vec![
                n.to_string(),
                what.to_owned(),
                f(recover, 2),
                f(heur, 4),
                format!("{u:.3e}"),
                sim.map(|d| format!("{:.3e}", math::unavailability(d, recover, MTBF_SECS)))
                    .unwrap_or_default(),
            ]);
            let sim_note = sim
                .map(|d| {
                    format!(
                        "; with the simulated distance {d:.3} hops (experiment 3): {:.2e}",
                        math::unavailability(d, recover, MTBF_SECS)
                    )
                })
                .unwrap_or_default();
            let (report, note) = if recover == 60.0 {
                (
                    report.to_owned(),
                    format!("reproduces: heuristic distance {heur:.3} hops (4.17 / n){sim_note}"),
                )
            } else {
                (
                    "-".to_owned(),
                    format!(
                        "recovery {recover} s = the node's reroute time around a killed node with its default timers (measured by tests/realnet_reroute; --reroute-secs){sim_note}"
                    ),
                )
            };
            ctx.row(
                "5 availability",
                &format!("unavailability (4.29), n={n}, {what}"),
                &report,
                format!("{u:.2e}"),
                "closed form, MTBF 3.6 days",
                &note,
                "",
            );
        }
    }
    ctx.out.csv(
        "availability.csv",
        &[
            "n",
            "case",
            "recover_s",
            "heuristic_hops",
            "unavailability_heuristic",
            "unavailability_simulated",
        ],
        &rows,
    )?;
    Ok(())
}

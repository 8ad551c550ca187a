//! What route-origin authentication costs, on the virtual network: the
//! same 20 nodes (same seed) with the checks on and off, from a cold
//! start. Virtual time makes every figure exact (no noise): Babel bytes
//! per node and second over the first minute and over steady-state
//! windows, certificate fetches, the time until every node reaches every
//! other (checked every 100 ms), and the proofs verified per node and
//! second in the steady state (the CPU share is that rate times the cost
//! of one verification, `cargo bench --bench origin_proof`).
//!
//! cargo test --lib node::core::tests::origin_cost -- --ignored --nocapture

use std::time::Duration;

use crate::vnet::{NetConfig, NetStats, Network};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const NODES: usize = 20;
/// Snapshots, in virtual seconds: the first minute, minutes 5-10, then
/// an hour that holds every node's re-signing (at half the proof
/// lifetime, an hour after its start).
const MARKS: [u64; 4] = [60, 300, 600, 4200];

/// One run's figures.
struct Run {
    converged: Option<Duration>,
    /// Network counters at each of [`MARKS`].
    at: Vec<NetStats>,
    /// Proofs verified, summed over the nodes, at each of [`MARKS`].
    verified: Vec<u64>,
    /// Own proofs signed, and seqno moves to re-sign, summed, at the end.
    signed: u64,
    refreshes: u64,
    /// Routes (FIB entries) of node 0 at the end.
    routes: usize,
}

fn run(enabled: bool) -> Run {
    let mut config = NetConfig {
        nodes: NODES,
        check: false,
        ..NetConfig::default()
    };
    config.core.origins.enabled = enabled;
    let mut net = Network::new(config);
    let converged = net.run_until_true(100 * MS, 120 * S, Network::converged);
    let (mut at, mut verified) = (Vec::new(), Vec::new());
    let sum = |net: &Network, f: &dyn Fn(&crate::identity::OriginStats) -> u64| -> u64 {
        (0..net.len())
            .filter_map(|i| net.core(i))
            .map(|c| f(c.engine().origin_auth().stats()))
            .sum()
    };
    for secs in MARKS {
        net.run_until(Duration::from_secs(secs));
        at.push(net.stats().clone());
        verified.push(sum(&net, &|s| s.verified));
    }
    assert_eq!(net.live(), NODES);
    assert!(net.converged(), "{:?}", net.reachable_pairs());
    Run {
        converged,
        at,
        verified,
        signed: sum(&net, &|s| s.signed),
        refreshes: sum(&net, &|s| s.refreshes),
        routes: net.core(0).map_or(0, |c| c.engine().fib().len()),
    }
}

/// Babel bytes per node and second between marks `from` (`None`: the
/// start) and `to`.
fn rate(r: &Run, from: Option<usize>, to: usize) -> f64 {
    let (b0, t0) = from.map_or((0, 0), |i| (r.at[i].babel_bytes, MARKS[i]));
    (r.at[to].babel_bytes - b0) as f64 / NODES as f64 / (MARKS[to] - t0) as f64
}

#[test]
#[ignore = "a benchmark: 20 nodes, 70 virtual minutes, twice"]
fn origin_checks_cost() {
    let on = run(true);
    let off = run(false);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!("{NODES} nodes, seed 1, virtual time; on / off / ratio");
    println!(
        "cold start to full reachability (checked every 100 ms): {:.0} ms / {:.0} ms / {:.3}",
        ms(on.converged),
        ms(off.converged),
        ms(on.converged) / ms(off.converged)
    );
    for (name, from, to) in [
        ("first minute", None, 0),
        ("minutes 5-10", Some(1), 2),
        ("minutes 10-70 (re-signing)", Some(2), 3),
    ] {
        let (a, b) = (rate(&on, from, to), rate(&off, from, to));
        println!(
            "Babel bytes per node per second, {name}: {a:.1} / {b:.1} / {:.3}",
            a / b
        );
    }
    for (name, r) in [("on", &on), ("off", &off)] {
        let end = &r.at[MARKS.len() - 1];
        println!(
            "{name}: babel bytes {:?} at {MARKS:?} s; cert messages {} ({} bytes); \
             control messages {}; verified {:?}; signed {}; refreshes {}; node 0 routes {}",
            r.at.iter().map(|s| s.babel_bytes).collect::<Vec<_>>(),
            end.cert_messages,
            end.cert_bytes,
            end.control_messages,
            r.verified,
            r.signed,
            r.refreshes,
            r.routes,
        );
    }
    let window = (MARKS[3] - MARKS[2]) as f64;
    let per_node = (on.verified[3] - on.verified[2]) as f64 / NODES as f64 / window;
    let claims = (NODES - 1) as f64;
    println!(
        "verifications per node per second, minutes 10-70: {per_node:.5} \
         ({:.6} per other origin's claim; x 1,000 claims: {:.3}/s)",
        per_node / claims,
        per_node / claims * 1000.0
    );
    assert_eq!(off.verified[3], 0);
    assert_eq!(off.at[3].cert_messages, 0);
}

/// Whether the verifications per claim hold as the network grows (what
/// the extrapolation to 1,000 claims assumes): checks on, 10, 20 and 40
/// nodes, minutes 5-15.
///
/// cargo test --lib node::core::tests::origin_cost -- --ignored --nocapture
#[test]
#[ignore = "a benchmark: up to 40 nodes, 15 virtual minutes"]
fn verifications_per_claim_by_network_size() {
    for nodes in [10, 20, 40] {
        let mut net = Network::new(NetConfig {
            nodes,
            check: false,
            ..NetConfig::default()
        });
        let verified = |net: &Network| -> u64 {
            (0..net.len())
                .filter_map(|i| net.core(i))
                .map(|c| c.engine().origin_auth().stats().verified)
                .sum()
        };
        net.run_until(300 * S);
        let v0 = verified(&net);
        net.run_until(900 * S);
        let v = (verified(&net) - v0) as f64;
        assert!(net.converged(), "{:?}", net.reachable_pairs());
        let per_node = v / nodes as f64 / 600.0;
        println!(
            "{nodes} nodes, minutes 5-15: {per_node:.5} verifications per node per second, \
             {:.6} per other origin's claim",
            per_node / (nodes - 1) as f64
        );
    }
}

/// Cold start with every node starting at once (no start spread), checked
/// every 10 ms: the convergence time without the 2 s spread of the
/// default start hiding part of it.
///
/// cargo test --lib node::core::tests::origin_cost -- --ignored --nocapture
#[test]
#[ignore = "a benchmark: 20 nodes from a simultaneous cold start, twice"]
fn simultaneous_cold_start() {
    let took = |enabled: bool| {
        let mut config = NetConfig {
            nodes: NODES,
            check: false,
            start_spread: Duration::ZERO,
            ..NetConfig::default()
        };
        config.core.origins.enabled = enabled;
        let mut net = Network::new(config);
        let t = net.run_until_true(10 * MS, 120 * S, Network::converged);
        (t, net.stats().babel_bytes, net.stats().cert_messages)
    };
    let (on, off) = (took(true), took(false));
    println!(
        "{NODES} nodes started at once, checked every 10 ms: full reachability after \
         {:?} / {:?} (on / off); Babel bytes until then {} / {}; cert messages {} / {}",
        on.0, off.0, on.1, off.1, on.2, off.2
    );
}

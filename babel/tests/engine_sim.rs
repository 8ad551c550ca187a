//! Deterministic multi-router simulations of the engine (issue 4 proof):
//! line, ring, grid and a random graph of 50 routers; convergence, loop
//! freedom and feasibility at every step, reconvergence after link and
//! router failures. Convergence times are simulated seconds, printed with
//! `--nocapture`.

mod engine_net;

use engine_net::*;

fn report(name: &str, what: &str, t: Option<std::time::Duration>, net: &Net) {
    println!(
        "{name}: {what} in {:.3} s simulated ({} steps, {} packets, {} checks)",
        t.map_or(f64::NAN, |t| t.as_secs_f64()),
        net.steps,
        net.packets,
        net.checks
    );
}

#[test]
fn line_converges_and_reroutes_nowhere_after_a_cut() {
    let mut net = Net::line(6, 1);
    let t = net.run_until(secs(30), Net::converged);
    report("line(6)", "initial convergence", t, &net);
    assert!(t.is_some(), "no convergence: {:?}", net.fib_sizes());
    // Cutting the middle link splits the line: each half must drop the
    // other half's prefixes.
    net.link_down(2, true);
    let t = net.run_until(secs(10), Net::converged);
    report("line(6)", "partition", t, &net);
    assert!(t.is_some_and(|t| t < secs(1)), "{t:?}");
    net.link_up(2);
    let t = net.run_until(secs(10), Net::converged);
    report("line(6)", "heal", t, &net);
    assert!(t.is_some_and(|t| t < secs(2)), "{t:?}");
}

#[test]
fn ring_reroutes_around_a_cut_link() {
    let mut net = Net::ring(8, 2);
    let t = net.run_until(secs(30), Net::converged);
    report("ring(8)", "initial convergence", t, &net);
    assert!(t.is_some());
    net.run_for(secs(20));
    net.link_down(0, true);
    let t = net.run_until(secs(10), Net::converged);
    report("ring(8)", "link failure (notified)", t, &net);
    assert!(t.is_some_and(|t| t < secs(1)), "{t:?}");
    // Silent failure of another link: only Hello timers notice.
    net.run_for(secs(20));
    net.link_up(0);
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(20));
    net.link_down(4, false);
    let t = net.run_until(secs(60), Net::converged);
    report("ring(8)", "link failure (silent)", t, &net);
    assert!(t.is_some_and(|t| t < secs(30)), "{t:?}");
}

#[test]
fn grid_survives_router_failure() {
    let mut net = Net::grid(5, 5, 3);
    let t = net.run_until(secs(30), Net::converged);
    report("grid(5x5)", "initial convergence", t, &net);
    assert!(t.is_some());
    net.run_for(secs(30));
    net.node_down(12); // the centre
    let t = net.run_until(secs(30), Net::converged);
    report("grid(5x5)", "centre router failure", t, &net);
    assert!(t.is_some_and(|t| t < secs(5)), "{t:?}");
}

#[test]
fn random_50_converges_and_survives_failures() {
    let mut net = Net::random(50, 4, 4);
    let t = net.run_until(secs(60), Net::converged);
    report("random(50, deg 4)", "initial convergence", t, &net);
    assert!(t.is_some(), "no convergence: {:?}", net.fib_sizes());
    net.run_for(secs(30));
    // Three routers and two links fail at once.
    for n in [7, 21, 33] {
        net.node_down(n);
    }
    net.link_down(5, true);
    net.link_down(40, true);
    let t = net.run_until(secs(60), Net::converged);
    report("random(50, deg 4)", "3 routers + 2 links failure", t, &net);
    assert!(t.is_some(), "no reconvergence: {:?}", net.fib_sizes());
}

//! Routers' seqnos in the multi-router simulations: they do not move in
//! steady state, whatever the links (LANs without split horizon, where
//! every neighbour echoes our own routes back to us; tunnels with split
//! horizon on and off), and a router that restarts without its seqno
//! catches up within one round trip. 60 s of steady state is simulated
//! time: it costs a fraction of a second.

mod engine_net;

use std::time::Duration;

use engine_net::*;
use re6st_babel::engine::{Config, LinkParams};

const STEADY: Duration = Duration::from_secs(60);

fn seqnos(net: &Net) -> Vec<u16> {
    net.nodes.iter().map(|n| n.engine.seqno()).collect()
}

/// Converges, settles, then runs `STEADY` and checks that no router's
/// seqno moved; returns the echoes of their own routes routers received.
fn assert_seqnos_stay_put(name: &str, mut net: Net) -> u64 {
    let t = net.run_until(secs(60), Net::converged);
    assert!(t.is_some(), "{name}: no convergence: {:?}", net.broken());
    // RTT estimates settle (a new neighbour's first sample counts double).
    net.run_for(secs(30));
    let before = seqnos(&net);
    let bumps: Vec<u64> = net
        .nodes
        .iter()
        .map(|n| n.engine.counters().seqno_bumps)
        .collect();
    net.run_for(STEADY);
    let after = seqnos(&net);
    assert_eq!(before, after, "{name}: seqnos moved in steady state");
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(
            n.engine.counters().seqno_bumps,
            bumps[i],
            "{name}: node {i}"
        );
    }
    assert!(net.converged(), "{name}: {:?}", net.broken());
    let echoes = net
        .nodes
        .iter()
        .map(|n| n.engine.counters().own_router_id)
        .sum();
    println!("{name}: seqnos unchanged over {STEADY:?}, {echoes} echoes of own routes ignored");
    echoes
}

fn lan(n: usize, seed: u64) -> Net {
    let mut net = Net::new(n, &[], seed, Config::default());
    let members: Vec<usize> = (0..n).collect();
    net.add_lan(&members);
    net
}

fn split_horizon_off() -> Config {
    let d = Config::default();
    Config {
        tunnel: LinkParams {
            split_horizon: false,
            ..d.tunnel
        },
        ..d
    }
}

#[test]
fn seqno_stays_put_on_a_lan_of_two() {
    let echoes = assert_seqnos_stay_put("LAN(2)", lan(2, 21));
    assert!(echoes > 0, "the test must see echoes to mean anything");
}

#[test]
fn seqno_stays_put_on_a_lan_of_ten() {
    let echoes = assert_seqnos_stay_put("LAN(10)", lan(10, 22));
    assert!(echoes > 0);
}

#[test]
fn seqno_stays_put_on_a_line() {
    assert_seqnos_stay_put("line(6) split horizon", Net::line(6, 23));
    let edges: Vec<_> = (1..6).map(|i| (i - 1, i)).collect();
    let net = Net::new(6, &edges, 23, split_horizon_off());
    let echoes = assert_seqnos_stay_put("line(6) no split horizon", net);
    assert!(echoes > 0);
}

/// Router 3 of `net` restarts at its seqno + `delta` (+1: the persisted
/// value, as the node restarts; negative: it was lost). Returns how long
/// the router took to get past its old seqno and the network to converge
/// again, and the slowest round trip of the router's tunnels.
fn restart_at(mut net: Net, delta: i16, silent: bool) -> (Duration, Duration, Duration) {
    let n = 3;
    net.run_until(secs(60), Net::converged).unwrap();
    net.run_for(secs(20));
    let old = net.nodes[n].engine.seqno();
    if silent {
        net.crash(n);
        net.run_for(secs(2));
    } else {
        net.node_down(n);
        net.run_until(secs(30), Net::converged).unwrap();
    }
    let rtt = net
        .links
        .iter()
        .filter(|l| l.a == n || l.b == n)
        .map(|l| l.delay * 2)
        .max()
        .unwrap_or(ms(2)); // a LAN: 1 ms each way
    net.restart(n, old.wrapping_add_signed(delta), Config::default(), silent);
    let caught_up = net
        .run_until(secs(60), |net| {
            seqno_ahead(net.nodes[n].engine.seqno(), old)
        })
        .expect("no catch-up");
    let converged = caught_up
        + net
            .run_until(secs(60), Net::converged)
            .expect("no convergence after the catch-up");
    (caught_up, converged, rtt)
}

/// Builds a network.
type Topology = fn() -> Net;

#[test]
fn seqno_lost_on_restart_is_caught_up_within_one_round_trip() {
    // One round trip, plus the urgent flushes on both sides and the
    // restarted router's first Hello and update.
    let slack = Config::default().urgent_delay * 4 + ms(15);
    let topologies: [(&str, Topology); 3] = [
        ("line(4)", || Net::line(4, 9)),
        ("ring(6)", || Net::ring(6, 24)),
        ("LAN(10)", || lan(10, 25)),
    ];
    for (name, make) in topologies {
        for silent in [false, true] {
            let how = if silent { "unnoticed" } else { "noticed" };
            let (_, kept, _) = restart_at(make(), 1, silent);
            for behind in [2, 1000] {
                let (caught_up, converged, rtt) = restart_at(make(), -behind, silent);
                println!(
                    "{name}: restart ({how}) {behind} seqnos behind: caught up in {:.3} s \
                     (round trip {:.3} s), converged in {:.3} s ({:.3} s with the seqno kept)",
                    caught_up.as_secs_f64(),
                    rtt.as_secs_f64(),
                    converged.as_secs_f64(),
                    kept.as_secs_f64(),
                );
                assert!(
                    caught_up <= rtt + slack,
                    "{name} {how} {behind} behind: caught up in {caught_up:?} > {rtt:?}"
                );
                assert!(
                    converged <= kept + rtt + slack,
                    "{name} {how} {behind} behind: {converged:?}, {kept:?} with the seqno kept"
                );
            }
        }
    }
}

#[test]
fn seqno_persisted_restart_needs_no_catch_up() {
    let mut net = Net::line(4, 8);
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(20));
    let persisted = net.nodes[3].engine.seqno();
    net.node_down(3);
    net.run_until(secs(10), Net::converged).unwrap();
    // The node restarts at the persisted seqno + 1.
    net.restart(3, persisted.wrapping_add(1), Config::default(), false);
    let t = net.run_until(secs(30), Net::converged);
    assert!(t.is_some_and(|t| t < secs(1)), "{t:?}");
    assert_eq!(net.nodes[3].engine.seqno(), persisted.wrapping_add(1));
    assert_eq!(net.nodes[3].engine.counters().seqno_catch_ups, 0);
}

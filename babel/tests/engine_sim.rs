//! Deterministic multi-router simulations of the engine:
//! line, ring, grid and a random graph of 50 routers; convergence, loop
//! freedom and feasibility at every step, reconvergence after link and
//! router failures (restarts and seqnos are in `engine_seqno`). Convergence
//! times are simulated seconds, printed with `--nocapture`.

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

/// Two parallel two-hop paths from 0 to 3: 0-1-3 (links 0, 1) and 0-2-3
/// (links 2, 3).
fn diamond(seed: u64, config: re6st_babel::engine::Config) -> Net {
    Net::new(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], seed, config)
}

#[test]
fn routes_follow_low_latency() {
    let mut net = diamond(5, Default::default());
    // The path through 1 has 40 ms links (RTT 80 ms, penalty 61 per hop),
    // the one through 2 has 4 ms links (penalty 0). Start with the slow
    // path only, then open the fast one.
    for l in [0, 1] {
        net.shape(l, ms(40), ms(0), 0.0);
    }
    for l in [2, 3] {
        net.shape(l, ms(4), ms(0), 0.0);
        net.link_down(l, true);
    }
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(30));
    assert_eq!(net.next_hop(0, 3), Some(1));
    for l in [2, 3] {
        net.link_up(l);
    }
    let t = net.run_until(secs(120), |n| {
        n.next_hop(0, 3) == Some(2) && n.next_hop(3, 0) == Some(2)
    });
    report(
        "diamond",
        "both ends moved to a new low-latency path",
        t,
        &net,
    );
    assert!(t.is_some());
    let r = net.nodes[0]
        .engine
        .neighbours()
        .into_iter()
        .map(|n| (n.iface, n.rtt, n.rtt_penalty))
        .collect::<Vec<_>>();
    println!("node 0 neighbours (iface, rtt, penalty): {r:?}");
    // The fast path gets slow (100 ms links, penalty 96): traffic moves back.
    for l in [2, 3] {
        net.shape(l, ms(100), ms(0), 0.0);
    }
    let t = net.run_until(secs(300), |n| {
        n.next_hop(0, 3) == Some(1) && n.next_hop(3, 0) == Some(1)
    });
    report("diamond", "moved off the path that became slow", t, &net);
    assert!(t.is_some());
}

/// How often node 0 changes its next hop to node 3 over `d` while both
/// paths have the same mean delay and heavy jitter.
fn flaps(config: re6st_babel::engine::Config, d: std::time::Duration) -> usize {
    let mut net = diamond(6, config);
    for l in 0..4 {
        net.shape(l, ms(30), ms(30), 0.0);
    }
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(30));
    let end = net.now + d;
    let mut last = net.next_hop(0, 3);
    let mut changes = 0;
    while net.now < end && net.step() {
        let nh = net.next_hop(0, 3);
        if nh != last {
            changes += 1;
            last = nh;
        }
    }
    changes
}

#[test]
fn rtt_jitter_does_not_make_routes_flap() {
    let d = secs(600);
    let with = flaps(Default::default(), d);
    // The same network with hysteresis, smoothing and the announcement
    // thresholds turned off: a plain minimum over noisy metrics.
    let plain = re6st_babel::engine::Config {
        hysteresis: 0,
        smoothing_half_life: std::time::Duration::ZERO,
        trivial_change: 0,
        minor_improvement: 0,
        ..Default::default()
    };
    let without = flaps(plain, d);
    println!(
        "next-hop changes in 10 min of ±15 ms jitter: {with} with hysteresis, {without} without"
    );
    assert!(with <= 2, "{with}");
    assert!(
        without > with * 3 + 3,
        "the control run should flap: {without}"
    );
}

#[test]
fn lossy_links_still_converge() {
    let mut net = Net::random(20, 3, 7);
    for l in 0..net.links.len() {
        net.shape(l, ms(20), ms(10), 0.1);
    }
    let t = net.run_until(secs(120), Net::converged);
    report("random(20) 10% loss", "initial convergence", t, &net);
    assert!(t.is_some());
    net.run_for(secs(20));
    net.node_down(3);
    let t = net.run_until(secs(120), Net::converged);
    report("random(20) 10% loss", "router failure", t, &net);
    assert!(t.is_some());
}

#[test]
fn lan_segment_with_a_gateway_to_tunnels() {
    // Routers 0-4 share a LAN; router 4 also has tunnels 4-5-6.
    let mut net = Net::new(7, &[(4, 5), (5, 6)], 12, Default::default());
    net.add_lan(&[0, 1, 2, 3, 4]);
    let t = net.run_until(secs(30), Net::converged);
    report("LAN(5) + line(3)", "initial convergence", t, &net);
    assert!(t.is_some(), "{:?}", net.broken());
    assert_eq!(net.path(0, 6), vec![0, 4, 5, 6]);
    assert_eq!(net.next_hop(1, 3), Some(3));
    net.run_for(secs(20));
    // A LAN router dies silently: its neighbours notice from missing
    // Hellos (two of the last three), then retract its prefix.
    net.crash(2);
    let t = net.run_until(secs(60), Net::converged);
    report("LAN(5) + line(3)", "silent LAN router failure", t, &net);
    assert!(t.is_some_and(|t| t < secs(20)), "{t:?} {:?}", net.broken());
    // The gateway dies: the tunnelled routers vanish for the LAN.
    net.run_for(secs(20));
    net.crash(4);
    let t = net.run_until(secs(60), Net::converged);
    report("LAN(5) + line(3)", "silent gateway failure", t, &net);
    assert!(t.is_some_and(|t| t < secs(20)), "{t:?} {:?}", net.broken());
}

/// Pairs (i, j) for which following next hops from `i` does not reach
/// router `j` right now (blackhole or loop).
fn unreachable_pairs(net: &Net) -> usize {
    let n = net.nodes.len();
    (0..n)
        .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
        .filter(|&(i, j)| net.walk(i, node_prefix(j)) != Ok(Some(j)))
        .count()
}

#[test]
fn a_costed_interface_drains_without_a_blackhole() {
    use re6st_babel::engine::IfaceId;
    // Link 0 joins routers 0 and 1 of a ring: the alternatives go the long
    // way round, so they are unfeasible until the sources bump their seqno.
    let link = IfaceId(0);
    let drained = |net: &Net| {
        [0, 1].iter().all(|&i| {
            net.nodes[i]
                .engine
                .destinations_per_interface()
                .get(&link)
                .is_none_or(|d| *d == 0)
        })
    };
    let mut net = Net::ring(8, 5);
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(5));
    let t0 = net.now;
    for i in [0, 1] {
        let now = net.now;
        net.nodes[i]
            .engine
            .set_interface_cost(link, 0x4000, now)
            .unwrap();
    }
    let mut broken_steps = 0;
    while !drained(&net) {
        assert!(net.now - t0 < secs(10), "not drained after 10 s");
        assert!(net.step());
        if unreachable_pairs(&net) > 0 {
            broken_steps += 1;
        }
    }
    let took = net.now - t0;
    // Taking the drained link down now changes no route.
    net.link_down(0, true);
    net.run_for(secs(1));
    assert_eq!(unreachable_pairs(&net), 0);

    // The same link simply taken down, for comparison: a retraction.
    let mut cut = Net::ring(8, 5);
    cut.run_until(secs(30), Net::converged).unwrap();
    cut.run_for(secs(5));
    cut.link_down(0, true);
    let t1 = cut.now;
    let mut cut_broken = 0;
    while unreachable_pairs(&cut) > 0 || cut.now == t1 {
        assert!(cut.step());
        cut_broken += 1;
        assert!(cut.now - t1 < secs(10));
    }
    println!(
        "ring(8): costed interface drained in {:.3} s simulated with {broken_steps} steps missing a route; \
         taking it down instead: {cut_broken} steps and {:.3} s with routes missing",
        took.as_secs_f64(),
        (cut.now - t1).as_secs_f64()
    );
    assert_eq!(
        broken_steps, 0,
        "no destination was unreachable while draining"
    );
}

#[test]
fn ipv4_prefixes_route_like_ipv6_ones() {
    use std::net::IpAddr;
    // Every router of a random graph also originates an IPv4 /24, carried
    // as v4-via-v6 (RFC 9229) over the IPv6-only tunnels.
    let mut net = Net::random(20, 3, 13);
    let v4 = |i: usize| -> ipnet::IpNet { format!("10.0.{i}.0/24").parse().unwrap() };
    let now = net.now;
    for (i, node) in net.nodes.iter_mut().enumerate() {
        node.engine.add_xroute(v4(i), 0, now).unwrap();
    }
    let reaches = |net: &Net, i: usize, j: usize| {
        let mut cur = i;
        for _ in 0..net.nodes.len() {
            if cur == j {
                return true;
            }
            match net.next_hop_for(cur, v4(j)) {
                Some(n) => cur = n,
                None => return false,
            }
        }
        false
    };
    let all = |net: &Net| {
        net.converged() && (0..20).all(|i| (0..20).all(|j| i == j || reaches(net, i, j)))
    };
    let t = net.run_until(secs(60), all);
    report("random(20) + IPv4", "initial convergence", t, &net);
    assert!(t.is_some(), "{:?}", net.broken());
    // IPv6 next hops, and the same tunnels as the IPv6 prefixes' routes
    // (both prefixes of a router have the same source and metrics).
    for i in 0..20 {
        let fib = net.nodes[i].engine.fib();
        for j in (0..20).filter(|j| *j != i) {
            let e4 = fib.iter().find(|e| e.prefix == v4(j)).unwrap();
            let e6 = fib.iter().find(|e| e.prefix == node_prefix(j)).unwrap();
            assert!(matches!(e4.next_hop, IpAddr::V6(_)));
            assert_eq!((e4.iface, e4.next_hop), (e6.iface, e6.next_hop));
        }
    }
    // A router dies: its IPv4 prefix is withdrawn like its IPv6 one.
    net.run_for(secs(20));
    net.node_down(5);
    let t = net.run_until(secs(60), |net| {
        net.converged()
            && (0..20)
                .filter(|i| *i != 5)
                .all(|i| net.next_hop_for(i, v4(5)).is_none())
    });
    report("random(20) + IPv4", "router failure", t, &net);
    assert!(t.is_some());
}

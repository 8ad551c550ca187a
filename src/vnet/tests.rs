use std::sync::Arc;
use std::time::Duration;

use super::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn a_network_converges_with_every_node_reaching_every_other() {
    let mut net = Network::new(NetConfig {
        nodes: 12,
        ..NetConfig::default()
    });
    let took = net.run_until_true(S, 120 * S, Network::converged);
    assert!(took.is_some(), "{:?}", net.reachable_pairs());
    net.run_for(60 * S);
    assert_eq!(net.violation(), None);
    net.check_loops().unwrap();
    let k = usize::from(net.config.network.tunnels);
    for i in 0..net.len() {
        let core = net.core(i).unwrap();
        let n = core.tunnels().count();
        assert!(n >= k && n <= 3 * k, "n{i}: {n} tunnels");
    }
    println!("converged after {took:?}; {:?}", net.stats());
}

#[test]
fn ipv4_subnets_are_routed_between_every_pair_of_nodes() {
    let mut config = NetConfig {
        nodes: 6,
        ..NetConfig::default()
    };
    config.network.ipv4 = Some("10.42.0.0/16".parse().unwrap());
    let mut net = Network::new(config);
    let took = net.run_until_true(S, 120 * S, |n| {
        n.converged() && n.reachable_pairs_v4() == (30, 30)
    });
    assert!(took.is_some(), "{:?}", net.reachable_pairs_v4());
    assert_eq!(net.violation(), None);
    for i in 0..net.len() {
        let core = net.core(i).unwrap();
        let v4 = core.status(net.now).ipv4.expect("the status shows IPv4");
        assert_eq!(v4.subnet, net.cert(i).ipv4.unwrap());
        assert_eq!(v4.address.octets(), [10, 42, i as u8 + 1, 1]);
        assert_eq!(v4.network, Some("10.42.0.0/16".parse().unwrap()));
        // An unknown address inside the overlay's IPv4 network is
        // rejected, not sent to a default route.
        assert!(net.path_v4(i, "10.42.200.1".parse().unwrap()) == Some(vec![i]));
    }
    // A packet crosses at least one middle node somewhere (k = 3 of 6).
    let longest = (0..6)
        .flat_map(|s| (0..6).map(move |d| (s, d)))
        .filter(|(s, d)| s != d)
        .map(|(s, d)| {
            net.path_v4(s, net.cert(d).ipv4_address().unwrap())
                .unwrap()
                .len()
        })
        .max();
    println!("IPv4 converged after {took:?}; longest path {longest:?} nodes");
}

/// What a run leaves behind, to compare runs.
fn fingerprint(net: &Network) -> (NetStats, Vec<Vec<String>>) {
    let nodes = (0..net.len())
        .map(|i| match net.core(i) {
            None => vec!["down".to_string()],
            Some(c) => c
                .engine()
                .fib()
                .iter()
                .map(|e| format!("{} {:?}", e.prefix, e.iface))
                .chain(c.tunnels().map(|t| format!("{t:?}")))
                .collect(),
        })
        .collect();
    // Certificates carry keys drawn afresh each run, whose DER signature
    // length varies: their bytes are the one count no seed fixes, in the
    // certificate messages and so in all control messages.
    let s = net.stats();
    let stats = NetStats {
        cert_bytes: 0,
        control_bytes: s.control_bytes - s.cert_bytes,
        ..s.clone()
    };
    (stats, nodes)
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut net = Network::new(NetConfig {
            nodes: 10,
            seed,
            loss: 0.02,
            jitter: Duration::from_millis(5),
            ..NetConfig::default()
        });
        net.run_for(40 * S);
        net.cut(1, 2, true);
        net.crash(4);
        net.run_for(20 * S);
        net.cut(1, 2, false);
        net.restart(4, false);
        net.run_for(40 * S);
        fingerprint(&net)
    };
    let a = run(7);
    let b = run(7);
    assert_eq!(a.0, b.0, "two runs with seed 7 differ");
    assert!(a.1 == b.1, "two runs with seed 7 end with other routes");
    assert_ne!(a.0, run(8).0, "the seed changes nothing");
}

#[test]
fn reach_agrees_with_the_paths_and_sums_link_delays() {
    let mut net = Network::new(NetConfig {
        nodes: 10,
        latency: Latency::Matrix(Arc::new(|a, b| {
            Duration::from_millis(1 + (a as u64 * 7 + b as u64 * 3) % 20)
        })),
        ..NetConfig::default()
    });
    assert_eq!(net.reach().pairs, 0, "no node runs yet");
    net.run_for(90 * S);
    net.crash(3);
    net.run_for(S);
    let r = net.reach();
    assert_eq!((r.reached, r.pairs), net.reachable_pairs());
    let mut sum = Duration::ZERO;
    for s in 0..net.len() {
        for d in 0..net.len() {
            if s == d || net.core(s).is_none() || net.core(d).is_none() {
                continue;
            }
            let p = net.path(s, d).unwrap_or_default();
            if p.last() == Some(&d) {
                sum += p
                    .windows(2)
                    .map(|w| net.one_way(w[0], w[1]))
                    .sum::<Duration>();
            }
        }
    }
    assert!(r.reached > 0);
    assert_eq!(r.delay_sum, sum);
    let st = net.stats();
    assert!(st.route_changes >= 9 * 9, "{st:?}");
    let sum = |f: fn(NodeTraffic) -> u64| (0..net.len()).map(|i| f(net.traffic(i))).sum::<u64>();
    assert_eq!(sum(|t| t.babel_bytes), st.babel_bytes);
    assert_eq!(sum(|t| t.control_bytes), st.control_bytes);
    assert!(sum(|t| t.exchange_bytes) > 60 * st.packets, "{st:?}");
    assert!(net.routes(0) >= 9 && net.routes(3) == 0);
}

#[test]
fn route_changes_count_added_removed_and_moved_routes() {
    use re6st_dataplane::fib::Route;
    use re6st_dataplane::nexthop::NextHopId;
    let p = |i: u16| -> ipnet::IpNet { format!("fd00:77:{i:x}::/64").parse().unwrap() };
    let old = [
        (p(1), Route::Local),
        (p(2), Route::Via(NextHopId(1))),
        (p(3), Route::Via(NextHopId(1))),
    ];
    let new = [
        (p(2), Route::Via(NextHopId(2))),
        (p(3), Route::Via(NextHopId(1))),
        (p(4), Route::Local),
    ];
    assert_eq!(transport::route_changes(&old, &new), 3);
    assert_eq!(transport::route_changes(&old, &old), 0);
    assert_eq!(transport::route_changes(&[], &new), 3);
}

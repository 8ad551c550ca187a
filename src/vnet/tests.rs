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
    (net.stats().clone(), nodes)
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

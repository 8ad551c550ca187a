//! In-process overlay networks over QUIC on loopback: a registry and many
//! nodes, each with a packet sink instead of a TUN. Real IPv6 packets go in
//! at one node's sink and must come out at another's.
//!
//! Timings are printed (`cargo test --test node_network -- --nocapture`).

mod node_support;
mod registry_support;

use std::time::{Duration, Instant};

use node_support::{Net, fast_config, own_tunnels, registry_args, up_tunnels};
use re6st::node::NodeConfig;

fn arity_ok(k: u16, s: &re6st::node::NodeStatus) -> bool {
    let (k, up) = (usize::from(k), up_tunnels(s));
    up >= k && up <= 3 * k && own_tunnels(s) == k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_reach_each_other_learn_peers_by_exchange_and_outlive_the_registry() {
    let k = 3;
    let n = 20;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    // Only 3 peers from the registry each: the rest must come by exchange.
    net.config = Box::new(|seed| NodeConfig {
        bootstrap_peers: 3,
        ..fast_config(seed)
    });
    let t0 = Instant::now();
    net.add_nodes(n).await;
    let took = net
        .wait_for(
            "k..3k tunnels on every node",
            Duration::from_secs(30),
            |st| st.len() == n && st.values().all(|s| arity_ok(k, s)),
        )
        .await;
    println!(
        "{n} nodes, k={k}: every node has k own and at most 3k tunnels {took:?} after the last start ({:?} in all)",
        t0.elapsed()
    );
    let took = net
        .all_pairs_reach(1_000, Duration::from_secs(30))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    println!(
        "every ordered pair ({} probes) reachable after {took:?}",
        n * (n - 1)
    );

    // Peer exchange: the DBs grow past the 3 bootstrap peers while the
    // registry answers no more bootstrap requests.
    net.wait_for("bootstrap done", Duration::from_secs(20), |st| {
        st.values().all(|s| s.peer_db >= usize::from(k))
    })
    .await;
    let b0 = net.bootstraps();
    let before: Vec<usize> = net.statuses().await.values().map(|s| s.peer_db).collect();
    let took = net
        .wait_for(
            "peer DBs filled by exchange",
            Duration::from_secs(60),
            |st| st.values().all(|s| s.peer_db >= 12),
        )
        .await;
    let st = net.statuses().await;
    let after: Vec<usize> = st.values().map(|s| s.peer_db).collect();
    let received: u64 = st.values().map(|s| s.exchange.received).sum();
    assert_eq!(net.bootstraps(), b0, "no bootstrap while the DBs grew");
    println!(
        "peer DB sizes {before:?} -> {after:?} in {took:?} by exchange alone ({received} announcements received; registry bootstraps stayed at {b0})"
    );

    // The registry stops: the network goes on, and a node restarted from
    // its state directory finds its way back from its peer DB.
    let reg = net.registry.take().unwrap();
    let _dir = reg.stop().await;
    let (enrolled, state) = net.kill(7);
    // Its peers suspect its tunnels (routes moved) long before their idle
    // timeout closes them; the restarted node's new tunnels supersede them.
    net.wait_for(
        "the dead node's tunnels suspected or gone",
        Duration::from_secs(10),
        |st| {
            st.values().all(|s| {
                s.tunnels
                    .iter()
                    .all(|t| t.peer_prefix != enrolled.cert.prefix || t.state == "suspect")
            })
        },
    )
    .await;
    let restarted = net.start(7, enrolled, state).await;
    net.nodes[7] = Some(restarted);
    let took = net
        .all_pairs_reach(2_000, Duration::from_secs(30))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs without the registry: {m:?}"));
    let st = net.statuses().await;
    let n7 = &st[&7];
    assert!(n7.peer_db >= 12, "the restarted node kept its peer DB");
    assert!(n7.registry.last_error.is_some(), "the registry is down");
    assert_eq!(n7.registry.bootstraps, 0);
    println!(
        "registry stopped, node 7 restarted from its peer DB ({} peers): every pair reachable again after {took:?}",
        n7.peer_db
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_reroutes_traffic_within_two_seconds() {
    let (mut net, (s, d, x)) = converged_with_transit(12).await;
    stream(&net, s, d, 100_000).await;
    let before = net.node(d).received.lock().unwrap().len();
    assert!(before > 300, "the stream flows before the kill");
    let killed_at = Instant::now();
    net.kill(x);
    stream(&net, s, d, 200_000).await;
    stream(&net, s, d, 300_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The interruption: the longest silence in the stream around the kill.
    let interruption = longest_gap(&net, s, d, killed_at, Instant::now());
    let after = net
        .node(d)
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|((a, b, _), t)| (*a as usize, *b as usize) == (s, d) && *t > killed_at)
        .count();
    println!(
        "stream n{s} -> n{d} through n{x}: n{x} killed (no goodbye); traffic interrupted for {interruption:?}, {after} of 800 later packets arrived"
    );
    assert!(
        interruption < Duration::from_secs(2),
        "rerouted in {interruption:?}"
    );
    assert!(after > 600, "the stream goes on after the reroute");
}

/// `n` nodes with k = 3, converged (arity bounds, every pair reachable),
/// and a pair (s, d) whose route crosses a third node x.
async fn converged_with_transit(n: usize) -> (Net, (usize, usize, usize)) {
    let k = 3;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    net.add_nodes(n).await;
    net.wait_for("k..3k tunnels", Duration::from_secs(30), |st| {
        st.len() == n && st.values().all(|s| arity_ok(k, s))
    })
    .await;
    net.all_pairs_reach(1, Duration::from_secs(30))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let pair = transit_pair(&net).await;
    (net, pair)
}

/// A pair (s, d) whose route crosses a third node x: (s, d, x).
async fn transit_pair(net: &Net) -> (usize, usize, usize) {
    let n = net.nodes.len();
    for s in 0..n {
        for d in 0..n {
            if s == d {
                continue;
            }
            let dst = net.node(d).handle.address();
            if let Some(hop) = net.node(s).handle.next_hop(dst).await
                && hop != net.node(d).handle.prefix()
                && let Some(x) = (0..n).find(|x| net.node(*x).handle.prefix() == hop)
            {
                return (s, d, x);
            }
        }
    }
    panic!("no route crosses an intermediate node");
}

/// 400 probes from `s` to `d`, one every 5 ms, numbered from `from`.
async fn stream(net: &Net, s: usize, d: usize, from: u32) {
    for seq in from..from + 400 {
        net.probe(s, d, seq);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The longest silence in the stream from `s` to `d` around a fault at
/// `since` (arrivals from 100 ms before it until `until`; the stream is
/// taken to flow until `since`).
fn longest_gap(net: &Net, s: usize, d: usize, since: Instant, until: Instant) -> Duration {
    let mut at: Vec<Instant> = net
        .node(d)
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|((a, b, _), t)| {
            (*a as usize, *b as usize) == (s, d)
                && *t + Duration::from_millis(100) > since
                && *t < until
        })
        .map(|(_, t)| *t)
        .chain([since])
        .collect();
    at.sort();
    at.windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

/// Ids and states of the tunnels of `i` to `peer`.
async fn tunnels_to(net: &Net, i: usize, peer: usize) -> Vec<(u64, &'static str)> {
    let prefix = net.node(peer).handle.prefix();
    let st = net.node(i).handle.status().await.expect("running");
    st.tunnels
        .iter()
        .filter(|t| t.peer_prefix == prefix)
        .map(|t| (t.id, t.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tunnel_is_suspected_and_its_routes_come_back_without_a_new_connection() {
    let (net, (s, d, x)) = converged_with_transit(10).await;
    let (xp, xa, da) = (
        net.node(x).handle.prefix(),
        net.node(x).handle.address(),
        net.node(d).handle.address(),
    );
    let before = tunnels_to(&net, s, x).await;
    assert!(matches!(before[..], [(_, "up")]), "{before:?}");
    let lost_before = net.statuses().await[&s].policy.lost;
    assert_eq!(net.node(s).handle.next_hop(da).await, Some(xp));

    // x goes quiet (every datagram in and out dropped) for about 2 s (the
    // stream's length): much less than the 10 s idle timeout, more than the
    // 600 ms suspect time.
    let switch = net.node(x).handle.fault_switch().unwrap().clone();
    let quiet = Instant::now();
    switch.set_blackhole(true);
    let (_, moved) = tokio::join!(stream(&net, s, d, 200_000), async {
        loop {
            let hop = net.node(s).handle.next_hop(da).await;
            if hop.is_some() && hop != Some(xp) {
                return quiet.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let during = tunnels_to(&net, s, x).await;
    let to_x = net.node(s).handle.next_hop(xa).await;
    let gap = longest_gap(&net, s, d, quiet, Instant::now());
    let lost = (200_000..200_400).filter(|q| !net.got(s, d, *q)).count();
    switch.set_blackhole(false);
    let resumed = Instant::now();
    let quiet_for = resumed - quiet;

    // Heard again: the same tunnel is up again and routes to x through it.
    let back = loop {
        if tunnels_to(&net, s, x).await == before
            && net.node(s).handle.next_hop(xa).await == Some(xp)
        {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(8),
            "the tunnel did not come back: {:?}",
            tunnels_to(&net, s, x).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let st = net.statuses().await;
    println!(
        "n{x} quiet for {quiet_for:?}: n{s} -> n{d} moved off n{x} after {moved:?} (stream interrupted \
         {gap:?}, {lost} of 400 probes lost); tunnel n{s}-n{x} {during:?} meanwhile; routes through it back {back:?} \
         after the silence ended; liveness {:?}",
        st[&s].liveness
    );
    assert_eq!(
        during,
        vec![(before[0].0, "suspect")],
        "suspected, not closed"
    );
    assert_ne!(to_x, Some(xp), "no route through the quiet tunnel");
    assert!(
        moved < Duration::from_secs(1),
        "routes moved after {moved:?}"
    );
    assert!(gap < Duration::from_secs(1), "stream interrupted {gap:?}");
    assert!(st[&s].liveness.suspected >= 1 && st[&s].liveness.recovered >= 1);
    assert_eq!(st[&s].policy.lost, lost_before, "no tunnel was lost");
    // The other end kept the same connection too.
    let theirs = tunnels_to(&net, x, s).await;
    assert!(matches!(theirs[..], [(_, "up")]), "{theirs:?}");
    assert_eq!(net.statuses().await[&x].policy.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_network_keeps_its_tunnels_and_rarely_suspects_them() {
    // Every node drops 10% of what it sends (keep-alives, ACKs, Babel):
    // live tunnels must not be closed, and suspicion (routes moved away for
    // a moment) must stay rare, because quinn retransmits a lost keep-alive
    // after one probe timeout, long before 600 ms of silence. (By hand:
    // 20% gave no suspicion either, 30% gave 0.33 per tunnel-minute.)
    const LOSS: f64 = 0.1;
    let n = 10;
    let (net, _) = converged_with_transit(n).await;
    let st = net.statuses().await;
    let tunnels: usize = st.values().map(|s| s.tunnels.len()).sum();
    let ids: Vec<Vec<u64>> = st
        .values()
        .map(|s| s.tunnels.iter().map(|t| t.id).collect())
        .collect();
    for i in 0..n {
        let sw = net.node(i).handle.fault_switch().unwrap();
        sw.set_loss(LOSS);
    }
    let watch = Duration::from_secs(15);
    tokio::time::sleep(watch).await;
    let st = net.statuses().await;
    let suspected: u64 = st.values().map(|s| s.liveness.suspected).sum();
    let dropped: u64 = (0..n)
        .map(|i| net.node(i).handle.fault_switch().unwrap().dropped())
        .sum();
    let lost: u64 = st.values().map(|s| s.policy.lost).sum();
    let after: Vec<Vec<u64>> = st
        .values()
        .map(|s| s.tunnels.iter().map(|t| t.id).collect())
        .collect();
    let per_tunnel_minute = suspected as f64 / (tunnels as f64 * watch.as_secs_f64() / 60.0);
    println!(
        "{:.0}% loss on every node for {watch:?}: {dropped} transmits dropped; {tunnels} tunnel ends, \
         {suspected} suspicions ({per_tunnel_minute:.2} per tunnel-minute), {lost} tunnels lost",
        LOSS * 100.0
    );
    assert_eq!(lost, 0, "no tunnel closed by the loss");
    assert_eq!(ids, after, "the same tunnels");
    assert!(dropped > 100, "the loss was applied");
    assert!(
        per_tunnel_minute < 0.5,
        "{suspected} suspicions in {watch:?} over {tunnels} tunnel ends"
    );
}

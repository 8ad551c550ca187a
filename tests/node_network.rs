//! In-process overlay networks over QUIC on loopback: a registry and many
//! nodes, each with a packet sink instead of a TUN. Real IPv6 packets go in
//! at one node's sink and must come out at another's.
//!
//! Timings are printed (`cargo test --test node_network -- --nocapture`).

mod node_support;
mod registry_support;

use std::time::Duration;

use node_support::{Net, own_tunnels, registry_args, up_tunnels};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_overlay_reaches_every_node() {
    let k = 2;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    net.add_nodes(5).await;
    let took = net
        .all_pairs_reach(1, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    println!("5 nodes, k={k}: every pair reachable after {took:?}");
    let st = net.statuses().await;
    for (i, s) in &st {
        let up = up_tunnels(s);
        assert!(
            up >= usize::from(k) && up <= 3 * usize::from(k),
            "n{i}: {up} tunnels"
        );
        assert!(own_tunnels(s) <= usize::from(k));
    }
}

//! The node's resources under floods and faults, through its public API
//! (in-process nodes on loopback): what a node asks of the registry when it
//! is cut off, and how fast it reconnects. The bound of each queue and
//! table, and the test behind it, are listed in docs/reliability.md.

mod node_support;
mod registry_support;

use std::time::Duration;

use node_support::{Net, fast_config, registry_args};
use re6st::node::NodeConfig;

/// A node whose peers all died keeps asking the registry for peers, but
/// once per retry period, not once per round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tunnels_asks_the_registry_at_its_retry_pace() {
    let mut net = Net::new(2, &registry_args(2, "300s")).await;
    // Long back-offs: once its dials fail, the node has no dial pending
    // for a while, only a peer DB of dead nodes.
    net.config = Box::new(|seed| NodeConfig {
        backoff_min: Duration::from_secs(60),
        backoff_max: Duration::from_secs(120),
        bootstrap_retry: Duration::from_secs(4),
        ..fast_config(seed)
    });
    net.add_nodes(3).await;
    net.wait_for(
        "every node has a tunnel and knows the others",
        Duration::from_secs(30),
        |st| {
            st.len() == 3
                && st
                    .values()
                    .all(|s| node_support::up_tunnels(s) >= 1 && s.peer_db >= 2)
        },
    )
    .await;
    net.kill(1);
    net.kill(2);
    // Its tunnels time out (10 s); it is left with a peer DB of dead nodes.
    net.wait_for("node 0 lost its tunnels", Duration::from_secs(30), |st| {
        st.get(&0).is_some_and(|s| {
            !s.tunnels
                .iter()
                .any(|t| t.state == "up" || t.state == "suspect")
        })
    })
    .await;
    let b0 = net.bootstraps();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let asked = net.bootstraps() - b0;
    // `bootstrap_retry` is 4 s here: at most 3 in 8 s. (A node that asked
    // again as soon as each answer came asked once per round trip.)
    assert!(asked <= 3, "{asked} bootstrap requests in 8 s");
}

/// A node whose link was down for longer than the idle timeout (all its
/// tunnels gone, every dial failed meanwhile) reconnects within seconds of
/// its link coming back: its failed dials said nothing about its peers,
/// so they do not hold it off for their exponential back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_reconnects_soon_after_its_link_returns() {
    let mut net = Net::new(2, &registry_args(2, "300s")).await;
    // The production back-off (30 s, doubling).
    net.config = Box::new(|seed| NodeConfig {
        backoff_min: Duration::from_secs(30),
        backoff_max: Duration::from_secs(3600),
        ..fast_config(seed)
    });
    net.add_nodes(5).await;
    net.all_pairs_reach(1_000, Duration::from_secs(60))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let switch = net.node(0).handle.fault_switch().unwrap().clone();
    switch.set_blackhole(true);
    net.wait_for("node 0 lost its tunnels", Duration::from_secs(30), |st| {
        st.get(&0).is_some_and(|s| {
            !s.tunnels
                .iter()
                .any(|t| t.state == "up" || t.state == "suspect")
        })
    })
    .await;
    // Its dials keep failing for a while.
    tokio::time::sleep(Duration::from_secs(8)).await;
    switch.set_blackhole(false);
    let back = net
        .all_pairs_reach(2_000, Duration::from_secs(60))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    println!("every pair reachable {back:?} after the link came back");
    assert!(
        back < Duration::from_secs(15),
        "reconnected only after {back:?}"
    );
}

/// Garbage, and QUIC Initials that can never complete, sent from many
/// source ports at a node's tunnel port: the node drops them and keeps
/// routing; every pair stays reachable through the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_the_tunnel_port_breaks_nothing() {
    let mut net = Net::new(2, &registry_args(2, "300s")).await;
    net.add_nodes(4).await;
    net.all_pairs_reach(1_000, Duration::from_secs(60))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let target = net.statuses().await[&0].advertised[0];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || udp_flood(target, &stop))
    };
    // Ten seconds of flood, every pair probed each second.
    let t0 = std::time::Instant::now();
    let mut round = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        round += 1;
        net.all_pairs_reach(2_000 + 100 * round, Duration::from_secs(5))
            .await
            .unwrap_or_else(|m| panic!("unreachable pairs during the flood: {m:?}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    println!("{sent} datagrams sent in {:?}", t0.elapsed());
    assert!(sent >= 10_000, "only {sent} datagrams sent");
    let st = net.statuses().await;
    assert_eq!(st.len(), 4, "every node answers its status");
}

/// Sends about 5,000 datagrams a second to `to` from 16 source ports until
/// `stop`: half garbage of random length, half QUIC v1 Initials with random
/// connection ids and an undecryptable payload. Returns how many it sent.
fn udp_flood(to: std::net::SocketAddr, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let sockets: Vec<std::net::UdpSocket> = (0..16)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sent = 0u64;
    let mut buf = [0u8; 1400];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for _ in 0..50 {
            for b in buf.iter_mut() {
                *b = rand() as u8;
            }
            let len = if sent.is_multiple_of(2) {
                1 + rand() as usize % buf.len()
            } else {
                // Long header, Initial, version 1, 8-byte DCID and SCID,
                // no token, then a payload that does not decrypt.
                buf[0] = 0xC3;
                buf[1..5].copy_from_slice(&1u32.to_be_bytes());
                buf[5] = 8;
                buf[14] = 8;
                buf[23] = 0;
                buf[24..26].copy_from_slice(&(0x4000u16 | 1174).to_be_bytes());
                1200
            };
            let s = &sockets[(rand() % 16) as usize];
            if s.send_to(&buf[..len], to).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sent
}

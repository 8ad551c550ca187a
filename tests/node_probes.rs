//! Best-of-n tunnel replacement (`least-used-best-of-N`) on real QUIC
//! tunnels: a node probes N peers at each refresh, keeps the one with the
//! lowest handshake RTT and removes the others in stages.
//!
//! Latency on loopback comes from relays: every peer but the prober sits
//! behind a UDP relay that delays each datagram by its own fixed amount
//! both ways, and announces the relay's address, so the RTT of a tunnel to
//! peer `i` is about `2 × delay(i)`.
//!
//! `cargo test --test node_probes -- --nocapture` prints every round.

mod node_support;
mod registry_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use node_support::{Net, fast_config, own_tunnels, registry_args};
use re6st::node::NodeConfig;
use re6st::tunnels::Replacement;
use re6st::tunnels::driver::DriverConfig;
use tokio::net::UdpSocket;

/// One-way delay of the relay in front of peer `i` (1-based); 40 ms steps
/// (80 ms of RTT) keep the ranking clear of a loaded machine's noise.
fn delay(i: usize) -> Duration {
    Duration::from_millis(40 * i as u64 - 30)
}

/// A UDP relay on loopback: datagrams to its address go to `target` (set
/// once known) and the answers come back, each delayed by `delay`. Tasks
/// end with the runtime.
async fn relay(delay: Duration) -> (SocketAddr, Arc<OnceLock<SocketAddr>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let target = Arc::new(OnceLock::<SocketAddr>::new());
    let to = target.clone();
    tokio::spawn(async move {
        // One upstream socket per client, so answers find their way back.
        let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let Some(&to) = to.get() else { continue };
            let back = match backs.get(&client) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(to).await.unwrap();
                    let (up, front) = (b.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = up.recv(&mut buf).await {
                            let (p, front) = (buf[..n].to_vec(), front.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = front.send_to(&p, client).await;
                            });
                        }
                    });
                    backs.insert(client, b.clone());
                    b
                }
            };
            let p = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = back.send(&p).await;
            });
        }
    });
    (addr, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_3_keeps_the_fastest_probe_and_drains_the_others() {
    const PEERS: usize = 6;
    const ROUNDS: u64 = 4;
    let k: u16 = 1;
    // The network's policy, set at the registry, reaches the node through
    // the signed configuration.
    let mut args = registry_args(k, "2s");
    args.extend(["--tunnel-replacement".into(), "least-used-best-of-3".into()]);
    let mut net = Net::new(k, &args).await;

    // Node 0 probes; the peers keep their tunnels (a local override), so
    // the only refreshes are node 0's.
    // Each peer's relay forwards to a port chosen here, so that no dial
    // goes unanswered while the nodes start (a lost Initial would make its
    // RTT look seconds long).
    let mut relays = Vec::new();
    for i in 1..=PEERS {
        let (front, target) = relay(delay(i)).await;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        target.set(port).unwrap();
        relays.push((front, port));
    }
    let addrs = relays.clone();
    net.config = Box::new(move |i| {
        let mut c = NodeConfig {
            drain_timeout: Duration::from_secs(2),
            driver: DriverConfig {
                linger: Duration::from_millis(200),
                peer_wait: Duration::from_secs(1),
                quarantine: Duration::from_secs(2),
            },
            ..fast_config(i)
        };
        if i == 0 {
            assert_eq!(c.replacement, None, "node 0 follows the network");
        } else {
            c.replacement = Some(Replacement::Never);
            let (front, listen) = addrs[i as usize - 1];
            c.listen = listen;
            c.advertise = vec![front];
        }
        c
    });
    net.add_nodes(1 + PEERS).await;
    let mut by_prefix = HashMap::new();
    for (i, (_, listen)) in relays.iter().enumerate() {
        let node = &net.node(i + 1).handle;
        assert_eq!(node.local_addr(), *listen);
        by_prefix.insert(node.prefix(), i + 1);
    }

    // Watch node 0 until it has decided ROUNDS rounds, checking the bounds
    // on every look.
    let a = &net.node(0).handle;
    let t0 = Instant::now();
    let mut most_own = 0;
    let status = loop {
        let s = a.status().await.expect("node 0 runs");
        let own = s
            .tunnels
            .iter()
            .filter(|t| t.direction == "outgoing")
            .count();
        let kept_own = own_tunnels(&s);
        let incoming = s.tunnels.len() - own;
        most_own = most_own.max(own);
        // At worst: k own, 3 probes, the victim draining, and from the
        // previous round its 2 losers and its victim still waiting for
        // their peers; never more than k kept; the incoming ones leave room
        // for k (max 3k).
        assert!(
            own <= 1 + 3 + 1 + 2 + 1,
            "{own} own tunnels: {:?}",
            s.tunnels
        );
        assert!(kept_own <= 1, "{:?}", s.tunnels);
        assert!(incoming <= 2, "{:?}", s.tunnels);
        if s.policy.probe_rounds >= ROUNDS {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} rounds: {:?} {:?}",
            s.policy.probe_rounds,
            s.policy,
            s.driver
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    // Every round kept the probe behind the shortest relay, and its
    // measured RTT says so: QUIC's handshake RTT is at least the relay's
    // 2 × delay, and the kept one is the lowest.
    let mut losers_up = 0;
    for (r, round) in status.probe_rounds.iter().enumerate() {
        let line: Vec<String> = round
            .probes
            .iter()
            .map(|p| {
                format!(
                    "node {} {:.0} ms{}",
                    by_prefix[&p.peer_prefix],
                    p.rtt_ms.unwrap_or(f64::NAN),
                    if p.kept { " (kept)" } else { "" }
                )
            })
            .collect();
        println!(
            "round {r}: {} cancelled, probes up: {}",
            round.cancelled,
            line.join(", ")
        );
        assert!(!round.probes.is_empty(), "no probe came up: {round:?}");
        let fastest = round
            .probes
            .iter()
            .min_by_key(|p| delay(by_prefix[&p.peer_prefix]))
            .unwrap();
        assert!(fastest.kept, "round {r} kept another probe: {line:?}");
        assert_eq!(round.probes.iter().filter(|p| p.kept).count(), 1);
        for p in &round.probes {
            let rtt = p.rtt_ms.expect("the handshake measured the RTT");
            let floor = 2.0 * delay(by_prefix[&p.peer_prefix]).as_secs_f64() * 1000.0;
            assert!(rtt >= floor, "{rtt} ms < 2 x relay delay {floor} ms");
        }
        losers_up += round.probes.len() as u64 - 1;
    }

    // The losers were drained and closed; nothing is left half-done: once
    // the last round settles, node 0 holds k own tunnels, no probe, no
    // drain, and the policy saw no event about a tunnel it had forgotten.
    let settled = net
        .wait_for("node 0 settled", Duration::from_secs(20), |st| {
            let s = &st[&0];
            s.tunnels.iter().all(|t| t.state == "up")
                && s.tunnels
                    .iter()
                    .filter(|t| t.direction == "outgoing")
                    .count()
                    == usize::from(k)
        })
        .await;
    let s = a.status().await.unwrap();
    assert!(
        s.driver.probes_drained >= losers_up,
        "{} drained for {losers_up} losers that came up: {:?}",
        s.driver.probes_drained,
        s.driver
    );
    assert_eq!(s.policy.unknown_tunnel, 0, "{:?}", s.policy);
    assert!(s.driver.closed_drained + s.driver.closed_unanswered >= s.driver.probes_drained);
    println!(
        "{} rounds in {:?}, settled {settled:?} later; most own tunnels at once: {most_own}; driver {:?}",
        s.policy.probe_rounds,
        t0.elapsed(),
        s.driver
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_network_policy_applies_without_a_restart() {
    let k: u16 = 2;
    let n = 6;
    let mut net = Net::new(k, &registry_args(k, "2s")).await;
    net.add_nodes(n).await;
    net.wait_for("k own tunnels", Duration::from_secs(30), |st| {
        st.len() == n && st.values().all(|s| own_tunnels(s) == usize::from(k))
    })
    .await;
    // The registry switches the network to best-of-2: the configuration is
    // re-signed with a new version.
    let mut args = registry_args(k, "2s");
    args.extend(["--tunnel-replacement".into(), "least-used-best-of-2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reg = net.registry.take().unwrap();
    net.registry = Some(reg.restart(&args).await);
    // Node 0 learns it at its registry round and probes from its next
    // refresh on; the others have not asked the registry (their round is
    // hourly) and keep the report's policy.
    net.node(0).handle.refresh_registry().await;
    let took = net
        .wait_for("node 0 probing", Duration::from_secs(30), |st| {
            st[&0].policy.probe_rounds >= 2
        })
        .await;
    let st = net.statuses().await;
    println!(
        "node 0 ran {} best-of-2 rounds {took:?} after its registry round",
        st[&0].policy.probe_rounds
    );
    for (i, s) in st.iter().filter(|(i, _)| **i != 0) {
        assert_eq!(s.policy.probe_rounds, 0, "node {i} still runs least-used");
        assert!(s.driver.replacements > 0, "node {i} refreshes");
    }
}

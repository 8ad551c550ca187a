//! Faults a node must shrug off: a peer that sends garbage, a peer whose
//! certificate is revoked, forged peer-exchange announcements, a peer
//! wiped and restarted with a new identity at the same address. Each is
//! refused, dropped or forgotten and counted, and the network keeps
//! working.

mod node_support;
mod registry_support;

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use node_support::{Net, fast_config, registry_args, up_tunnels};
use re6st::identity::{
    NodeCert, NodeKey, PeerAnnouncement, SignatureContext, SignedAnnouncement, unix_secs,
};
use re6st::peers::wire::{self, ExchangeMessage};
use re6st::registry::store::RevokeTarget;
use re6st::transport::control::{self, Control};
use re6st::transport::{Connected, Transport};
use std::time::Instant;

/// A node that is enrolled but runs no node: a raw transport in the test's
/// hands.
async fn rogue(net: &Net) -> (NodeCert, NodeKey, Transport) {
    let r = net.registry().enrol(None).await;
    let t = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        r.cert.clone(),
        &r.key,
        &net.ca_der,
        None,
        fast_config(99).transport,
        None,
    )
    .unwrap();
    (r.cert, r.key, t)
}

/// Dials `to` and completes the Open/Accept exchange.
async fn open_tunnel(t: &Transport, net: &Net, to: usize) -> (Connected, quinn::SendStream) {
    let n = &net.node(to).handle;
    let c = t.dial(&[n.local_addr()], n.address()).await.unwrap();
    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    control::write(
        &mut send,
        &Control::Open {
            version: control::VERSION,
            crl_number: 0,
        },
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let reply = control::read(&mut recv, &mut buf).await.unwrap();
    assert!(matches!(reply, Some(Control::Accept { .. })), "{reply:?}");
    (c, send)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_counted_and_the_node_keeps_working() {
    let k = 2;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    net.add_nodes(4).await;
    net.all_pairs_reach(1, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let (_, _, t) = rogue(&net).await;
    let (c, _send) = open_tunnel(&t, &net, 0).await;
    let before = net.node(0).handle.status().await.unwrap();

    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],                       // empty
        vec![0, 1, 2, 3],             // reserved code 0
        vec![0x60, 0, 0, 0, 0xff],    // truncated IPv6
        vec![42, 2, 0, 200, 1, 2, 3], // Babel with a lying length
        vec![42, 9, 0, 0],            // Babel version 9
        vec![0x01, 0xff, 0xff, 0xff], // bad fragment header
        vec![0x7f, 1, 2, 3],          // unknown control frame
        vec![0x02, b'r', b'6', 1, 1], // peer exchange is not a datagram frame
    ];
    // And a few hundred random datagrams.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..400usize {
        let len = 1 + (i * 37) % 1200;
        let d: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        garbage.push(d);
    }
    for d in &garbage {
        let _ = c.conn.send_datagram(Bytes::from(d.clone()));
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = net.node(0).handle.status().await.unwrap();
    let (p0, p1) = (&before.path, &after.path);
    println!(
        "garbage: bad frames {}, unknown frames {}, malformed IPv6 {}, rejected fragments {}, bad Babel packets {}",
        p1.bad_frames - p0.bad_frames,
        p1.unknown_frames - p0.unknown_frames,
        p1.dropped_malformed - p0.dropped_malformed,
        p1.fragments_rejected - p0.fragments_rejected,
        after.babel.bad_packets - before.babel.bad_packets
    );
    assert!(p1.bad_frames > p0.bad_frames, "empty and code-0 datagrams");
    assert!(
        p1.unknown_frames > p0.unknown_frames,
        "unknown control codes"
    );
    assert!(p1.dropped_malformed > p0.dropped_malformed, "bad IPv6");
    assert!(
        p1.fragments_rejected > p0.fragments_rejected,
        "bad fragments"
    );
    assert!(
        after.babel.bad_packets > before.babel.bad_packets,
        "bad Babel"
    );
    assert!(
        c.conn.close_reason().is_none(),
        "garbage datagrams are dropped, not fatal"
    );

    // Garbage on the control stream closes that tunnel (protocol error).
    let (c2, mut send2) = open_tunnel(&t, &net, 1).await;
    send2.write_all(&[0, 0, 0, 0]).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), c2.conn.closed())
        .await
        .expect("closed");
    assert!(e.to_string().contains("bad control frame"), "{e}");

    // The network is fine.
    net.all_pairs_reach(2, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs after garbage: {m:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_everywhere_and_the_crl_floods() {
    // k = 3: the overlay stays connected without the revoked node, so the
    // CRL can flood to everyone (a node cut off with it would learn the CRL
    // at its next registry round or from its next tunnel instead).
    let k = 3;
    let n = 7;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    net.add_nodes(n).await;
    net.all_pairs_reach(1, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let bad = n - 1;
    let bad_prefix = net.node(bad).handle.prefix();
    let r = &net.registry().registry;
    r.store
        .revoke(&r.ca, RevokeTarget::Prefix(bad_prefix), SystemTime::now())
        .unwrap();
    let der = r.store.crl(&r.ca, SystemTime::now()).unwrap();
    let number = re6st::identity::Crl::from_der(&der, r.ca.cert_der())
        .unwrap()
        .number;
    // Only node 0 asks the registry; the others learn the CRL from peers.
    net.node(0).handle.refresh_registry().await;
    let took = net
        .wait_for(
            "the CRL everywhere and no tunnel to the revoked node",
            Duration::from_secs(15),
            |st| {
                st.iter().filter(|(i, _)| **i != bad).all(|(_, s)| {
                    s.crl_number >= number
                        && s.tunnels.iter().all(|t| t.peer_prefix != bad_prefix)
                        && up_tunnels(s) >= 1
                })
            },
        )
        .await;
    println!(
        "revocation of {bad_prefix}: CRL {number} reached every node and its tunnels were closed in {took:?}"
    );
    // The revoked node keeps dialling: refused at the handshake, counted.
    let refused = net
        .wait_for(
            "revoked handshakes refused",
            Duration::from_secs(15),
            |st| {
                st.iter()
                    .filter(|(i, _)| **i != bad)
                    .map(|(_, s)| s.transport.refused_revoked)
                    .sum::<u64>()
                    > 0
            },
        )
        .await;
    println!("handshakes of the revoked node refused and counted ({refused:?} later)");
    let st = net.statuses().await;
    for (i, s) in st.iter().filter(|(i, _)| **i != bad) {
        let peers = net.node(*i).handle.peers().await.unwrap();
        assert!(
            peers.iter().all(|p| p.prefix != bad_prefix),
            "n{i} dropped it from its DB"
        );
        assert!(s.tunnels.iter().all(|t| t.peer_prefix != bad_prefix));
    }
    net.kill(bad);
    net.all_pairs_reach(2, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs after the revocation: {m:?}"));
}

/// Signs any payload as a peer announcement.
fn sign_raw(payload: &str, key: &NodeKey) -> String {
    let m = SignatureContext::PeerAnnouncement.message(payload);
    base64::engine::general_purpose::STANDARD.encode(key.sign(&m).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_are_dropped_and_counted() {
    let k = 2;
    let mut net = Net::new(k, &registry_args(k, "1h")).await;
    // No exchange rounds of their own during the test: only ours.
    net.config = Box::new(|seed| re6st::node::NodeConfig {
        exchange: re6st::peers::ExchangeConfig {
            first_round: Duration::from_secs(3600),
            interval: Duration::from_secs(3600),
            ..re6st::peers::ExchangeConfig::default()
        },
        ..fast_config(seed)
    });
    net.add_nodes(3).await;
    net.all_pairs_reach(1, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
    let (x_cert, x_key, _t) = rogue(&net).await;
    let victim_prefix = net.node(2).handle.prefix();
    let now = unix_secs(SystemTime::now());
    let fake_addr: std::net::SocketAddr = "127.0.0.3:9".parse().unwrap();

    // (1) a valid announcement of x, then (2) one with a tampered payload,
    // (3) x's key and certificate announcing node 2's prefix.
    let good = PeerAnnouncement {
        prefix: x_cert.prefix,
        // Loopback only: the node will try to dial it.
        addresses: vec!["127.0.0.1:9".parse().unwrap()],
        timestamp: now,
        tcp_port: None,
        topology: None,
    }
    .sign(&x_cert, &x_key)
    .unwrap();
    let mut tampered = good.clone();
    tampered.payload = tampered.payload.replace("127.0.0.1:9", "127.0.0.2:9");
    let payload = serde_json::to_string(&PeerAnnouncement {
        prefix: victim_prefix,
        addresses: vec![fake_addr],
        timestamp: now,
        tcp_port: None,
        topology: None,
    })
    .unwrap();
    let lie = SignedAnnouncement {
        signature: sign_raw(&payload, &x_key),
        payload,
        certificate: good.certificate.clone(),
    };
    let (a, b) = (net.node(0), net.node(1));
    let before = b.handle.status().await.unwrap();
    for signed in [good, tampered, lie] {
        let mut msg = Vec::new();
        ExchangeMessage::Announce {
            reply: false,
            signed,
        }
        .emit(&mut msg)
        .unwrap();
        // From node 0's host side, through the overlay, to node 1.
        a.send(wire::build_packet(
            a.handle.address(),
            b.handle.address(),
            &msg,
        ));
    }
    // And a packet on the exchange port with a broken UDP checksum.
    let mut broken = wire::build_packet(a.handle.address(), b.handle.address(), b"r6\x01\x01");
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    a.send(broken);
    // Until all four are in (a loaded machine may take longer than usual).
    let t0 = Instant::now();
    let after = loop {
        let st = b.handle.status().await.unwrap();
        let done = st.exchange.received - before.exchange.received >= 3
            && st.path.exchange_malformed > before.path.exchange_malformed;
        if done || t0.elapsed() > Duration::from_secs(10) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "forged announcements at n1: {} bad signature, {} prefix mismatch, {} stored; {} bad UDP",
        after.peers.rejected_invalid - before.peers.rejected_invalid,
        after.peers.rejected_prefix - before.peers.rejected_prefix,
        after.peers.inserted - before.peers.inserted,
        after.path.exchange_malformed - before.path.exchange_malformed,
    );
    assert_eq!(after.exchange.received - before.exchange.received, 3);
    assert_eq!(
        after.peers.rejected_invalid - before.peers.rejected_invalid,
        1
    );
    assert_eq!(
        after.peers.rejected_prefix - before.peers.rejected_prefix,
        1
    );
    assert_eq!(
        after.peers.inserted - before.peers.inserted,
        1,
        "the good one"
    );
    assert_eq!(
        after.path.exchange_malformed - before.path.exchange_malformed,
        1
    );
    let peers = b.handle.peers().await.unwrap();
    assert!(peers.iter().any(|p| p.prefix == x_cert.prefix));
    let forged: [std::net::SocketAddr; 2] = [fake_addr, "127.0.0.2:9".parse().unwrap()];
    assert!(
        peers
            .iter()
            .all(|p| p.addresses.iter().all(|a| !forged.contains(a))),
        "no forged address was stored"
    );
    net.all_pairs_reach(2, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs: {m:?}"));
}

/// A node wiped and restarted at the same address (new certificate, new
/// prefix) is dialled under its old identity at most once by each node
/// that knew it: the first dial reaches the new node, whose valid
/// certificate tells the dialler that the old one is gone; it forgets it,
/// refuses the copies peers still pass around, and learns the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_dialled_under_its_old_identity_at_most_once_per_peer() {
    let (k, n) = (2, 5);
    // A short refresh: every node dials a random known peer every 3 s.
    let mut net = Net::new(k, &registry_args(k, "3s")).await;
    net.add_nodes(n).await;
    net.wait_for(
        "every node knows every other",
        Duration::from_secs(30),
        |st| st.values().all(|s| s.peer_db >= n - 1),
    )
    .await;
    let w = n - 1;
    let old = net.node(w).handle.prefix();
    let addr = net.node(w).handle.local_addr();
    net.kill(w);
    // The killed node's tasks let go of its socket in a moment.
    let t0 = Instant::now();
    while std::net::UdpSocket::bind(addr).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{addr} still bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let enrolled = net.enrol().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = fast_config(w as u64 + 100);
    config.listen = addr;
    config.state_dir = Some(state.path().to_path_buf());
    let id = enrolled.identity(&net.ca_der);
    let node = net.start_with(w, enrolled, state, id, config).await;
    net.nodes[w] = Some(node);
    let new = net.node(w).handle.prefix();
    assert_ne!(old, new);
    let t0 = Instant::now();

    // Ten refreshes of every node.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let st = net.statuses().await;
    let wiped = &st[&w].transport;
    // Each dial of the old identity costs the new node one handshake:
    // refused by the dialler (or, by an older dialler, failed).
    let handshakes = wiped.refused_by_dialler + wiped.refused_handshakes;
    let mut forgot = 0;
    for (i, s) in st.iter().filter(|(i, _)| **i != w) {
        let peers = net.node(*i).handle.peers().await.unwrap();
        let has = |p| peers.iter().any(|e| e.prefix == p);
        println!(
            "n{i}: dials reaching another node {}, forgotten {}, stale copies refused {}, knows the new identity: {}",
            s.transport.dials_other_node,
            s.peers.forgotten_replaced,
            s.peers.rejected_replaced,
            has(new)
        );
        assert!(s.transport.dials_other_node <= 1, "n{i} dialled it again");
        if s.peers.forgotten_replaced > 0 {
            forgot += 1;
            assert!(!has(old), "n{i} forgot the old identity");
        }
    }
    println!(
        "{:.0} s after the restart: {handshakes} handshakes for the old identity at the wiped node \
         ({} refused by the dialler, {} failed; its own dials of it: {}), {forgot} of {} peers dialled it once and forgot it",
        t0.elapsed().as_secs_f64(),
        wiped.refused_by_dialler,
        wiped.refused_handshakes,
        wiped.dials_other_node,
        n - 1
    );
    // At most once per node that could hold the stale entry (the others,
    // and the wiped node itself if the registry handed it its old one).
    assert!(
        handshakes <= n as u64,
        "{handshakes} handshakes for the old identity"
    );
    assert!(forgot >= 1, "some node dialled the old identity");
    net.all_pairs_reach(3, Duration::from_secs(20))
        .await
        .unwrap_or_else(|m| panic!("unreachable pairs after the restart: {m:?}"));
}

/// Certificates due while the registry is down: the nodes keep running on
/// them (their tunnel stays up), retry with back-off, say so in their
/// status, and renew as soon as the registry is back, before expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_due_while_the_registry_is_down_are_renewed_when_it_returns() {
    // Certificates of 50 s, due for renewal 5 s after they are issued.
    let mut args = registry_args(1, "1h");
    args.extend(["--cert-lifetime", "50s", "--renew-window", "45s"].map(String::from));
    let mut net = Net::new(1, &args).await;
    net.config = Box::new(|seed| re6st::node::NodeConfig {
        registry_retry: Duration::from_millis(500),
        registry_retry_max: Duration::from_secs(2),
        ..fast_config(seed)
    });
    net.add_nodes(2).await;
    net.wait_for("a tunnel", Duration::from_secs(20), |st| {
        st.values().all(|s| up_tunnels(s) >= 1)
    })
    .await;
    let before = net.statuses().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stopped = net.registry.take().unwrap().pause().await;
    for i in 0..2 {
        net.node(i).handle.refresh_registry().await;
    }

    // Down past the time the registry would renew (5 s after issue), for
    // 8 s: every node retries, says that renewal is overdue, and keeps its
    // tunnel.
    let t0 = Instant::now();
    let overdue = loop {
        let st = net.statuses().await;
        for s in st.values() {
            assert!(up_tunnels(s) >= 1, "the tunnel went down: {s:?}");
            assert!(
                s.serial == before[&0].serial || s.serial == before[&1].serial,
                "renewed without a registry"
            );
        }
        if t0.elapsed() > Duration::from_secs(8)
            && st
                .values()
                .all(|s| s.renewal == re6st::node::renewal::Renewal::Overdue)
        {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never overdue: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (i, s) in &overdue {
        let left = s.cert_not_after.saturating_sub(node_support::now_unix());
        println!(
            "n{i}: renewal {}, {left} s left, {} failed registry exchanges, next try in {:?} s: {}",
            s.renewal,
            s.registry.failures,
            s.registry.next_round_in_secs,
            s.registry.last_error.as_deref().unwrap_or("-")
        );
        assert!(s.registry.failures >= 3, "retried: {}", s.registry.failures);
        assert!(s.registry.last_error.is_some());
        assert!(s.registry.next_round_in_secs.is_some_and(|n| n <= 2));
    }

    net.registry = Some(stopped.start(&args).await);
    let took = net
        .wait_for("renewed certificates", Duration::from_secs(8), |st| {
            st.iter()
                .all(|(i, s)| s.serial != before[i].serial && s.registry.last_error.is_none())
        })
        .await;
    for (i, s) in net.statuses().await {
        println!(
            "n{i}: serial {} -> {}, valid {} s more",
            before[&i].serial,
            s.serial,
            s.cert_not_after.saturating_sub(node_support::now_unix())
        );
        assert!(s.cert_not_after > before[&i].cert_not_after);
        assert_eq!(s.renewal, re6st::node::renewal::Renewal::Ok);
        assert!(up_tunnels(&s) >= 1);
        assert!(
            s.cert_not_after > node_support::now_unix() + 30,
            "a fresh certificate"
        );
    }
    println!("renewed {took:?} after the registry came back");
}

//! LAN discovery on a real link (namespaces; root only, skipped
//! otherwise): the beacon service alone on a bridge, then nodes behind one
//! NAT that find each other and route directly.

mod edges_support;

use std::net::SocketAddrV6;
use std::sync::Arc;
use std::time::Duration;

use edges_support::igd::HomeNet;
use edges_support::overlay::{TestNode, TestRegistry, is_probe, node_config, probe};
use edges_support::{Netns, NsRuntime, bridge, root_or_skip};
use re6st::lan::{LanCmd, LanConfig, LanEvent, LanInterfaces, LanService};
use re6st::test_pki::Pki;
use tokio::sync::mpsc;

/// The link-local address of `eth0` in `ns`.
fn link_local(ns: &Netns) -> std::net::Ipv6Addr {
    let out = ns.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
    let a = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address: {out}"));
    a.split('/').next().unwrap().parse().unwrap()
}

fn ifindex(ns: &Netns) -> u32 {
    let out = ns.ip(&["-o", "link", "show", "dev", "eth0"]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn lan_beacons_find_neighbours() {
    if !root_or_skip("lan_beacons_find_neighbours") {
        return;
    }
    let switch = Netns::new("lan-sw");
    let a = Netns::new("lan-a");
    let b = Netns::new("lan-b");
    let c = Netns::new("lan-c"); // same link, LAN discovery off
    bridge(&switch, &[&a, &b, &c]);
    let pki = Pki::new();
    let verifier = Arc::new(pki.verifier(None));
    let interval = Duration::from_millis(300);

    let start = |ns: &Netns, serial: u64, port: u16, interfaces: LanInterfaces| {
        let rt = NsRuntime::new(ns);
        let (cert, key) = pki.node(serial);
        let v = verifier.clone();
        let (tx, rx) = mpsc::channel(16);
        let svc = rt.run(async move {
            LanService::spawn(
                LanConfig {
                    interfaces,
                    interval,
                    ..LanConfig::default()
                },
                cert,
                Arc::new(key),
                v,
                port,
                tx,
            )
            .expect("binding the beacon socket")
        });
        (rt, svc, rx)
    };
    let eth0 = || LanInterfaces::Named(vec!["eth0".into()]);
    let (rt_a, svc_a, mut ev_a) = start(&a, 5, 4001, eth0());
    let (rt_b, svc_b, mut ev_b) = start(&b, 9, 4002, LanInterfaces::All);
    let (_rt_c, _svc_c, mut ev_c) = start(&c, 7, 4003, LanInterfaces::Off);

    // B finds A, but waits for A's link: no dial before the fallback
    // (3 intervals); then it dials itself since no link was reported. B's
    // events are awaited from now on, while A's part runs, so the time
    // between them is when B made them (events read later may have been
    // queued together).
    let want_a = SocketAddrV6::new(link_local(&a), 4001, 0, ifindex(&b));
    let b_events = rt_b.handle().spawn(async move {
        let found = tokio::time::timeout(Duration::from_secs(5), ev_b.recv()).await;
        let t_found = tokio::time::Instant::now();
        let dial = tokio::time::timeout(Duration::from_secs(5), ev_b.recv()).await;
        // (The receiver comes back: dropping it stops the service.)
        (found, dial.map(|d| (d, t_found.elapsed())), ev_b)
    });

    // A (smaller serial) finds B and dials it at once.
    let want_b = SocketAddrV6::new(link_local(&b), 4002, 0, ifindex(&a));
    let got = rt_a.run(async move {
        let mut got = Vec::new();
        while got.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), ev_a.recv()).await {
                Ok(Some(e)) => got.push(e),
                _ => break,
            }
        }
        (got, ev_a)
    });
    let (got, mut ev_a) = got;
    assert!(
        matches!(&got[..], [LanEvent::Found(p), LanEvent::Dial(q)] if p == q && p.addr == want_b && p.serial == 9),
        "{got:?} (want B at {want_b})"
    );

    let (found, dial_after, _ev_b) =
        rt_b.run(async move { b_events.await.expect("B's event task") });
    assert!(
        matches!(&found, Ok(Some(LanEvent::Found(p))) if p.addr == want_a && p.serial == 5),
        "{found:?}"
    );
    let (dial, after) = dial_after.expect("B dials after the fallback");
    assert!(matches!(dial, Some(LanEvent::Dial(p)) if p.addr == want_a));
    assert!(
        after >= interval * 2,
        "B dialled after {after:?}, before the fallback"
    );

    // A link reported up stops further dials; status lists the neighbour.
    let prefix_b = "fd00:77:0:9::/64".parse().unwrap();
    let status = rt_a.run(async move {
        svc_a.cmd.send(LanCmd::LinkUp(prefix_b)).await.unwrap();
        tokio::time::sleep(interval * 4).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        svc_a.cmd.send(LanCmd::Status(tx)).await.unwrap();
        let s = rx.await.unwrap();
        let more = ev_a.try_recv().ok();
        (s, more, svc_a)
    });
    let (status, more, _svc_a) = status;
    assert_eq!(more, None, "no event once linked");
    assert_eq!(status.interfaces, vec!["eth0".to_string()]);
    assert_eq!(status.neighbours.len(), 1);
    assert_eq!(status.neighbours[0].0, prefix_b);
    assert!(status.neighbours[0].2, "linked");
    assert!(status.stats.accepted >= 1 && status.stats.repeated >= 1);

    // C, with discovery off, heard and sent nothing; nobody found C.
    assert!(ev_c.try_recv().is_err());
    drop(svc_b);
    drop(rt_b);
}

/// Two nodes behind one NAT (no UPnP, no hairpin: they cannot dial each
/// other's public address) with LAN discovery on their LAN: they open a
/// LAN link, route to each other through it and not through the overlay,
/// and each still has its k = 1 own tunnel to the outside.
#[test]
fn lan_neighbours_route_directly_outside_k() {
    if !root_or_skip("lan_neighbours_route_directly_outside_k") {
        return;
    }
    let net = HomeNet::new("lannode", 2, 2, false);
    let rt_o0 = NsRuntime::new(&net.outside[0]);
    let reg = TestRegistry::start(&rt_o0, HomeNet::INTERNET_IP, 1);
    let internet: ipnet::IpNet = "198.18.1.0/24".parse().unwrap();
    let start = |rt: NsRuntime, seed: u64, lan: bool| {
        let id = reg.enrol(&rt);
        let mut c = node_config(seed);
        c.edges.routable = vec![internet];
        if lan {
            c.edges.lan = LanConfig {
                interfaces: LanInterfaces::Named(vec!["eth0".into()]),
                interval: Duration::from_millis(500),
                ..LanConfig::default()
            };
        }
        TestNode::start(rt, c, id)
    };
    let _o0 = start(rt_o0, 1, false);
    let _o1 = start(NsRuntime::new(&net.outside[1]), 2, false);
    let h0 = start(NsRuntime::new(&net.hosts[0]), 3, true);
    let mut h1 = start(NsRuntime::new(&net.hosts[1]), 4, true);
    let (p0, p1) = (h0.handle().prefix(), h1.handle().prefix());
    let long = Duration::from_secs(20);

    let ready = |s: &re6st::node::NodeStatus, other| {
        let lan = s
            .tunnels
            .iter()
            .filter(|t| t.direction == "lan" && t.peer_prefix == other)
            .count();
        let own = s
            .tunnels
            .iter()
            .filter(|t| t.direction == "outgoing" && t.state == "up")
            .count();
        lan == 1 && own == 1
    };
    let t0 = std::time::Instant::now();
    let s0 = h0
        .wait_status(long, |s| ready(s, p1))
        .unwrap_or_else(|s| panic!("h0: no LAN link to h1 plus k = 1 tunnel: {:#?}", s));
    h1.wait_status(long, |s| ready(s, p0))
        .unwrap_or_else(|s| panic!("h1: no LAN link to h0 plus k = 1 tunnel: {:#?}", s.tunnels));
    eprintln!(
        "LAN link and k = 1 tunnel up on both nodes {:?} after the last node started (beacons every 500 ms)",
        t0.elapsed()
    );
    let lan = s0.tunnels.iter().find(|t| t.direction == "lan").unwrap();
    assert!(
        lan.peer_udp.ip().to_string().starts_with("fe80:"),
        "the LAN link runs over link-local addresses: {lan:?}"
    );
    assert_eq!(s0.edges.lan_neighbours.len(), 1);
    // The beacon counters reach the status (cached by the router every 5 s).
    let s0b = h0
        .wait_status(long, |s| {
            s.edges
                .lan_beacons
                .as_ref()
                .is_some_and(|b| b.accepted >= 1)
        })
        .unwrap_or_else(|s| panic!("h0: no LAN beacon counters: {:?}", s.edges));
    let b = s0b.edges.lan_beacons.unwrap();
    assert_eq!((b.malformed, b.bad_signature), (0, 0), "{b:?}");
    assert!(
        s0.advertised.is_empty(),
        "h0 is behind NAT: announced nothing"
    );

    // Packets to h1 take the LAN link (next hop h1 itself, not an outside
    // node) and arrive.
    let hop = {
        let (h, a) = (h0.handle().clone(), h1.address());
        h0.rt.run(async move {
            for _ in 0..50 {
                if let Some(p) = h.next_hop(a).await {
                    return Some(p);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    };
    assert_eq!(hop, Some(p1), "h0 routes to h1 through the LAN link");
    let before = lan.link.tx_packets;
    let mut got = 0;
    for tag in 0..10 {
        h0.send(&probe(h0.address(), h1.address(), tag));
        if h1.recv_matching(Duration::from_millis(500), |p| is_probe(p, tag)) {
            got += 1;
        }
    }
    assert!(got >= 9, "{got}/10 probes arrived");
    let after = h0
        .status()
        .tunnels
        .into_iter()
        .find(|t| t.direction == "lan")
        .unwrap()
        .link
        .tx_packets;
    assert!(
        after >= before + 10,
        "probes went over the LAN link: {before} -> {after}"
    );
    drop(reg);
}

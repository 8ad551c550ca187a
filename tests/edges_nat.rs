//! Nodes behind one NAT router (namespaces; root only, skipped otherwise):
//! the internet holds the registry and two outside nodes; the router NATs
//! its LAN and runs miniupnpd; behind it, `h0` maps its port by UPnP and
//! `h1` has no UPnP.
//!
//! - h0: the mapping is made (and renewed past its lease), h0 announces
//!   the router's external address, an outside node dials it through the
//!   mapping, and shutdown removes the mapping;
//! - h1: never announced (no peer DB and not the registry has it), dials
//!   out only and still gets its k tunnels, which keep working although
//!   the router forgets idle UDP flows after 2 s (QUIC keep-alives hold the
//!   NAT mapping open); traffic from outside reaches it through them.

mod edges_support;

use std::net::SocketAddr;
use std::time::Duration;

use edges_support::igd::{HomeNet, NatRouter};
use edges_support::overlay::{TestNode, TestRegistry, is_probe, node_config, probe};
use edges_support::{NsRuntime, root_or_skip};
use re6st::transport::{Transport, TransportConfig};
use re6st::upnp::UpnpConfig;

const K: u16 = 2;

#[test]
fn upnp_node_is_dialled_through_its_mapping_and_nat_node_dials_out() {
    if !root_or_skip("upnp_node_is_dialled_through_its_mapping_and_nat_node_dials_out") {
        return;
    }
    let net = HomeNet::new("nat", 2, 2, true);
    // The router forgets idle UDP flows quickly: only keep-alives save
    // the NAT mappings of h1's tunnels.
    net.router
        .sysctl("net.netfilter.nf_conntrack_udp_timeout=2");
    net.router
        .sysctl("net.netfilter.nf_conntrack_udp_timeout_stream=2");

    let rt_o0 = NsRuntime::new(&net.outside[0]);
    let reg = TestRegistry::start(&rt_o0, HomeNet::INTERNET_IP, K);
    let internet: ipnet::IpNet = "198.18.1.0/24".parse().unwrap();
    let start = |rt: NsRuntime, seed: u64, upnp: bool| {
        let id = reg.enrol(&rt);
        let mut c = node_config(seed);
        c.edges.routable = vec![internet];
        if upnp {
            c.edges.upnp = Some(UpnpConfig {
                lease: Duration::from_secs(4),
                retry: Duration::from_secs(1),
                search_timeout: Duration::from_secs(2),
                seed: Some(seed),
                ..UpnpConfig::default()
            });
        }
        TestNode::start(rt, c, id)
    };
    let o0 = start(rt_o0, 1, false);
    let o1 = start(NsRuntime::new(&net.outside[1]), 2, false);
    let h0 = start(NsRuntime::new(&net.hosts[0]), 3, true);
    let h1 = start(NsRuntime::new(&net.hosts[1]), 4, false);
    let long = Duration::from_secs(20);

    // h0: mapped, announcing the router's external address only.
    let s = h0
        .wait_status(long, |s| s.edges.upnp.is_some() && !s.advertised.is_empty())
        .unwrap_or_else(|s| panic!("h0 got no UPnP mapping: {:#?}", s.edges));
    let m = s.edges.upnp.unwrap();
    assert_eq!(m.external.ip().to_string(), HomeNet::WAN_IP);
    assert_eq!(
        m.internal.to_string(),
        format!("{}:4326", HomeNet::host_ip(0))
    );
    assert_eq!(
        s.advertised,
        vec![SocketAddr::V4(m.external)],
        "{:#?}",
        s.edges
    );
    let rules = NatRouter::redirections(&net.router);
    assert!(
        rules.contains(&(m.external.port(), SocketAddr::V4(m.internal))),
        "{rules:?}"
    );

    // A node outside reaches h0 through the mapping: a QUIC handshake with
    // h0's certificate at the router's external address. (h0 itself dials
    // both outside nodes, its only candidates, so their tunnels with it are
    // h0's outgoing ones.)
    let prober = reg.enrol(&o0.rt);
    let (external, h0_addr) = (SocketAddr::V4(m.external), h0.address());
    let reached = o0.rt.run(async move {
        let t = Transport::bind(
            "0.0.0.0:0".parse().unwrap(),
            prober.cert,
            &prober.key,
            &prober.ca_der,
            prober.crl,
            TransportConfig::default(),
            None,
        )
        .unwrap();
        let r = t.dial(&[external], h0_addr).await.map(|c| c.peer.prefix);
        t.close(0, b"probe done");
        r
    });
    let h0_prefix = h0.handle().prefix();
    assert_eq!(
        reached.as_ref().ok(),
        Some(&h0_prefix),
        "dialling h0 at {external} from the internet: {reached:?}"
    );
    let o_prefixes = [o0.handle().prefix(), o1.handle().prefix()];
    h0.wait_status(long, |s| {
        o_prefixes
            .iter()
            .all(|p| s.tunnels.iter().any(|t| t.peer_prefix == *p))
    })
    .unwrap_or_else(|s| panic!("h0 lacks tunnels to the outside: {:#?}", s.tunnels));

    // h1: k outgoing tunnels, nothing announced, seen behind NAT.
    let s1 = h1
        .wait_status(long, |s| {
            s.tunnels
                .iter()
                .filter(|t| t.direction == "outgoing" && t.state == "up")
                .count()
                == usize::from(K)
        })
        .unwrap_or_else(|s| panic!("h1 lacks its {K} tunnels: {:#?}", s.tunnels));
    assert!(s1.advertised.is_empty(), "{:#?}", s1.edges);
    assert!(
        s1.edges.dial_out_only && s1.edges.behind_nat,
        "{:#?}",
        s1.edges
    );
    assert!(
        s1.tunnels.iter().all(|t| t.direction == "outgoing"),
        "nobody can dial h1: {:#?}",
        s1.tunnels
    );
    let ids: Vec<u64> = s1.tunnels.iter().map(|t| t.id).collect();

    // Traffic from outside reaches h1 (through its outgoing tunnels).
    let mut h1 = h1;
    let mut delivered = false;
    for tag in 0..20 {
        o1.send(&probe(o1.address(), h1.address(), tag));
        if h1.recv_matching(Duration::from_millis(300), |p| is_probe(p, tag)) {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no probe from o1 reached h1");

    // Past the router's 2 s UDP timeout and h0's 4 s lease: h1's tunnels
    // are the same ones (keep-alives held the NAT mappings), h0's mapping
    // is still there (renewed).
    std::thread::sleep(Duration::from_secs(5));
    let s1 = h1.status();
    let still: Vec<u64> = s1.tunnels.iter().map(|t| t.id).collect();
    assert_eq!(still, ids, "h1's tunnels were re-made: {:#?}", s1.tunnels);
    assert!(s1.tunnels.iter().all(|t| t.age_secs >= 5));
    let rules = NatRouter::redirections(&net.router);
    assert!(
        rules.contains(&(m.external.port(), SocketAddr::V4(m.internal))),
        "mapping not renewed: {rules:?}"
    );

    // h1 is in no peer DB (and so was never handed out by the registry).
    let h1_prefix = h1.handle().prefix();
    for (name, n) in [("o0", &o0), ("o1", &o1), ("h0", &h0)] {
        assert!(
            !n.peer_prefixes().contains(&h1_prefix),
            "{name} knows the NATed h1"
        );
    }
    assert!(o1.peer_prefixes().contains(&h0_prefix));

    // h0's shutdown removes its mapping.
    h0.shutdown();
    let rules = NatRouter::redirections(&net.router);
    assert!(
        !rules.iter().any(|(p, _)| *p == m.external.port()),
        "mapping left after shutdown: {rules:?}"
    );
    drop(reg);
}

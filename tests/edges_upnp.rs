//! UPnP against a real IGD: Debian's miniupnpd on an emulated NAT router
//! (namespaces built by the test; root only, skipped otherwise).
//!
//! Checks that the mapping is made on a random port (skipping a taken
//! one), reported with the router's external address, that a host outside
//! reaches our socket through it, that it is renewed past its lease while
//! an unrenewed one expires, and that shutdown removes it.

mod edges_support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use edges_support::igd::{HomeNet, NatRouter};
use edges_support::{NsRuntime, root_or_skip, wait_for_async};
use igd_next::PortMappingProtocol;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st::upnp::{PortMapper, UpnpConfig};

const SEED: u64 = 7;

fn config() -> UpnpConfig {
    UpnpConfig {
        lease: Duration::from_secs(4),
        retry: Duration::from_millis(500),
        search_timeout: Duration::from_secs(2),
        seed: Some(SEED),
        ..UpnpConfig::default()
    }
}

/// Sends `msg` from `from` to `to` and says whether `sock` got it.
fn reaches(from: &UdpSocket, to: SocketAddr, sock: &UdpSocket, msg: &[u8]) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        from.send_to(msg, to).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if &buf[..n] == msg {
                return true;
            }
        }
    }
    false
}

#[test]
fn upnp_maps_renews_and_removes_on_miniupnpd() {
    if !root_or_skip("upnp_maps_renews_and_removes_on_miniupnpd") {
        return;
    }
    let net = HomeNet::new("upnp", 2, 1, true);
    let host = &net.hosts[0];
    let wan: Ipv4Addr = HomeNet::WAN_IP.parse().unwrap();

    // Our "QUIC socket", and a socket of a host on the internet.
    let sock = host.run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    let port = sock.local_addr().unwrap().port();
    let outside =
        net.outside[0].run(|| UdpSocket::bind(format!("{}:0", HomeNet::INTERNET_IP)).unwrap());

    // The port the seeded mapper tries first is taken by another host of
    // the LAN (a mapping of our own address would just be updated by the
    // router): it must move on to the next.
    let mut rng = StdRng::seed_from_u64(SEED);
    let ports = UpnpConfig::default().ports;
    let first = rng.random_range(ports.clone());
    let second = rng.random_range(ports);
    let other = SocketAddr::from(([198, 18, 2, 3], 5000));
    // ... and a mapping with a 2 s lease that nobody renews.
    let unrenewed = if first == 40000 { 40001 } else { 40000 };

    let gw = net.hosts[1].block_on(move || async move {
        let gw = igd_next::aio::tokio::search_gateway(igd_next::SearchOptions::default())
            .await
            .expect("the test IGD answers SSDP");
        gw.add_port(PortMappingProtocol::UDP, first, other, 60, "other")
            .await
            .expect("pre-mapping the first port");
        gw.add_port(PortMappingProtocol::UDP, unrenewed, other, 2, "short")
            .await
            .expect("mapping with a short lease");
        gw
    });
    let rt = NsRuntime::new(host);
    let mapped = rt.run(async move {
        let t0 = tokio::time::Instant::now();
        let mapper = PortMapper::spawn(config(), port);
        let m = wait_for_async(Duration::from_secs(10), || mapper.current())
            .await
            .expect("a mapping within 10 s");
        eprintln!(
            "UPnP mapping {} -> {} after {:?} (SSDP search, external address, one conflict)",
            m.external,
            m.internal,
            t0.elapsed()
        );
        (mapper, m)
    });
    let (mapper, m) = mapped;
    assert_eq!(m.external, SocketAddrV4::new(wan, second), "{m:?}");
    assert_eq!(m.internal, SocketAddrV4::new([198, 18, 2, 2].into(), port));
    assert_eq!(m.lease_secs, 4);
    let rules = NatRouter::redirections(&net.router);
    assert!(
        rules.contains(&(second, SocketAddr::V4(m.internal))),
        "{rules:?}"
    );
    assert!(
        reaches(
            &outside,
            SocketAddr::V4(m.external),
            &sock,
            b"through the mapping"
        ),
        "a datagram from the internet to {} did not arrive",
        m.external
    );

    // Past the 4 s lease: still mapped (renewed at 2 s intervals), while
    // the unrenewed 2 s mapping has expired on the router.
    std::thread::sleep(Duration::from_secs(5));
    let rules = NatRouter::redirections(&net.router);
    assert!(
        rules.contains(&(second, SocketAddr::V4(m.internal))),
        "renewed mapping gone: {rules:?}"
    );
    assert!(
        !rules.iter().any(|(p, _)| *p == unrenewed),
        "the router does not expire leases, so renewal is not tested: {rules:?}"
    );
    assert_eq!(mapper.current(), Some(m), "the mapping did not move");
    assert!(reaches(
        &outside,
        SocketAddr::V4(m.external),
        &sock,
        b"after renewal"
    ));

    // Shutdown removes it: gone from the router, nothing gets in.
    rt.run(mapper.shutdown());
    net.hosts[1].block_on(move || async move {
        gw.remove_port(PortMappingProtocol::UDP, first)
            .await
            .expect("removing the other host's mapping");
    });
    let rules = NatRouter::redirections(&net.router);
    assert!(
        !rules.iter().any(|(p, _)| *p == second),
        "mapping left after shutdown: {rules:?}"
    );
    assert!(!reaches(
        &outside,
        SocketAddr::V4(m.external),
        &sock,
        b"after removal"
    ));
}

#[test]
fn upnp_without_gateway_reports_nothing_and_retries() {
    if !root_or_skip("upnp_without_gateway_reports_nothing_and_retries") {
        return;
    }
    // The same LAN without miniupnpd: no mapping, no panic, a clean stop.
    let net = HomeNet::new("noupnp", 1, 1, false);
    net.hosts[0].block_on(|| async {
        let mapper = PortMapper::spawn(
            UpnpConfig {
                search_timeout: Duration::from_millis(300),
                retry: Duration::from_millis(200),
                ..config()
            },
            4326,
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(mapper.current(), None);
        tokio::time::timeout(Duration::from_secs(2), mapper.shutdown())
            .await
            .expect("shutdown without a gateway is quick");
    });
}

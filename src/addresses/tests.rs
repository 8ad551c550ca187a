use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const OVERLAY: &str = "fd12:3456:789a::/48";

fn book(bound: &str) -> Addresses {
    Addresses::new(
        AddressConfig {
            overlay: Some(OVERLAY.parse().unwrap()),
            ..AddressConfig::default()
        },
        sa(bound),
    )
}

#[test]
fn scopes() {
    let overlay = Some(OVERLAY.parse().unwrap());
    let table = [
        ("8.8.8.8", Scope::Global),
        ("192.0.2.1", Scope::Unusable), // documentation
        ("198.51.100.7", Scope::Unusable),
        ("203.0.113.9", Scope::Unusable),
        ("127.0.0.1", Scope::Unusable),
        ("169.254.1.1", Scope::Unusable),
        ("0.1.2.3", Scope::Unusable),
        ("240.0.0.1", Scope::Unusable),
        ("255.255.255.255", Scope::Unusable),
        ("224.0.0.251", Scope::Unusable),
        ("192.0.0.8", Scope::Unusable),
        ("10.1.2.3", Scope::Private),
        ("172.16.0.1", Scope::Private),
        ("172.32.0.1", Scope::Global),
        ("192.168.1.10", Scope::Private),
        ("100.64.0.1", Scope::Private),
        ("100.127.255.1", Scope::Private),
        ("100.128.0.1", Scope::Global),
        ("198.18.0.1", Scope::Private),
        ("198.19.255.1", Scope::Private),
        ("198.20.0.1", Scope::Global),
        ("2a01:4f8::1", Scope::Global),
        ("2001:db8::1", Scope::Unusable),
        ("fe80::1", Scope::Unusable),
        ("fec0::1", Scope::Unusable),
        ("::1", Scope::Unusable),
        ("::", Scope::Unusable),
        ("::ffff:8.8.8.8", Scope::Unusable),
        ("ff02::1", Scope::Unusable),
        ("64:ff9b::808:808", Scope::Unusable),
        ("100::1", Scope::Unusable),
        ("4000::1", Scope::Unusable),
        ("fd00:1::2", Scope::Private),
        ("fc00::1", Scope::Private),
        ("fd12:3456:789a:1::1", Scope::Unusable), // inside the overlay
    ];
    for (a, want) in table {
        assert_eq!(scope(ip(a), overlay), want, "{a}");
    }
}

#[test]
fn configured_first_then_upnp_then_local() {
    let mut b = Addresses::new(
        AddressConfig {
            configured: vec![sa("192.168.1.2:5000"), sa("[2a01::5]:4326")],
            overlay: Some(OVERLAY.parse().unwrap()),
            ..AddressConfig::default()
        },
        sa("[::]:4326"),
    );
    b.set_local([ip("8.8.4.4"), ip("2a01:4f8::1"), ip("127.0.0.1")]);
    b.set_upnp(Some(sa("9.9.9.9:40000")));
    assert_eq!(
        b.announce(),
        vec![
            // Configured ones even if private: the operator knows.
            sa("192.168.1.2:5000"),
            sa("[2a01::5]:4326"),
            sa("9.9.9.9:40000"),
            // IPv6 before IPv4.
            sa("[2a01:4f8::1]:4326"),
            sa("8.8.4.4:4326"),
        ]
    );
}

#[test]
fn non_routable_locals_are_not_announced() {
    let mut b = book("[::]:4326");
    b.set_local([
        ip("127.0.0.1"),
        ip("::1"),
        ip("fe80::1"),
        ip("192.168.1.5"),
        ip("fd12:3456:789a:7::1"), // our own overlay address on the TUN
        ip("fd00:1::5"),
    ]);
    assert!(b.announce().is_empty());
    let why: Vec<_> = b.candidates().into_iter().map(|c| c.reason).collect();
    assert!(why.iter().all(Option::is_some), "{why:?}");
}

#[test]
fn routable_networks_admit_private_addresses() {
    let mut b = Addresses::new(
        AddressConfig {
            routable: vec![
                "192.168.0.0/16".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
            ..AddressConfig::default()
        },
        sa("[::]:4326"),
    );
    b.set_local([
        ip("192.168.1.5"),
        ip("10.0.0.1"),
        ip("fd00:1::5"),
        ip("fd00:2::5"),
    ]);
    assert_eq!(
        b.announce(),
        vec![sa("[fd00:1::5]:4326"), sa("192.168.1.5:4326")]
    );
}

#[test]
fn bound_family_limits_the_locals() {
    let mut v4 = book("0.0.0.0:4326");
    v4.set_local([ip("8.8.4.4"), ip("2a01:4f8::1")]);
    assert_eq!(v4.announce(), vec![sa("8.8.4.4:4326")]);

    let mut one = book("8.8.4.4:4326");
    assert!(!one.set_local([ip("8.8.8.8"), ip("2a01:4f8::1")]));
    assert_eq!(one.announce(), vec![sa("8.8.4.4:4326")]);

    // Bound to one address on purpose: announced whatever its scope.
    let lo = book("127.0.0.1:5000");
    assert_eq!(lo.announce(), vec![sa("127.0.0.1:5000")]);
}

#[test]
fn nat_observed_addresses_are_never_announced() {
    let now = Instant::now();
    let mut b = book("[::]:4326");
    b.set_local([ip("192.168.1.5")]);
    // A peer sees us from the router's address and another port: a NAT.
    b.handle_observed(sa("[::ffff:8.8.8.8]:51000"), now);
    assert!(b.announce().is_empty());
    assert!(b.behind_nat());
    let c = b.candidates();
    let obs = c.iter().find(|c| c.source == Source::Observed).unwrap();
    assert_eq!(obs.addr, sa("8.8.8.8:51000"), "mapped form made canonical");
    assert!(!obs.announced);

    // With the UPnP mapping in place, what peers see can be the mapping.
    b.set_upnp(Some(sa("8.8.8.8:40000")));
    assert_eq!(b.announce(), vec![sa("8.8.8.8:40000")]);
}

#[test]
fn observed_equal_to_a_local_address_means_no_nat() {
    let now = Instant::now();
    let mut b = book("[::]:4326");
    b.set_local([ip("8.8.4.4")]);
    b.handle_observed(sa("8.8.4.4:4326"), now);
    assert!(!b.behind_nat());
    assert_eq!(b.announce(), vec![sa("8.8.4.4:4326")]);
}

#[test]
fn reached_addresses_come_first_and_expire() {
    let now = Instant::now();
    let mut b = book("[::]:4326");
    b.set_local([ip("2a01:4f8::1"), ip("8.8.4.4")]);
    assert_eq!(b.announce()[0], sa("[2a01:4f8::1]:4326"));
    b.handle_reached(ip("::ffff:8.8.4.4"), now);
    assert_eq!(b.announce()[0], sa("8.8.4.4:4326"));
    b.handle_timeout(now + REACHED_TTL);
    assert_eq!(b.announce()[0], sa("[2a01:4f8::1]:4326"));
}

#[test]
fn observed_addresses_expire() {
    let now = Instant::now();
    let mut b = book("[::]:4326");
    b.handle_observed(sa("8.8.8.8:51000"), now);
    b.handle_timeout(now + OBSERVED_TTL - Duration::from_secs(1));
    assert!(b.behind_nat());
    b.handle_timeout(now + OBSERVED_TTL);
    assert!(!b.behind_nat());
}

#[test]
fn announcement_is_capped() {
    let mut b = book("[::]:4326");
    b.set_local((1..=40u8).map(|i| IpAddr::from([8, 8, 8, i])));
    assert_eq!(b.announce().len(), MAX_ADDRESSES);
    let dropped = b
        .candidates()
        .into_iter()
        .filter(|c| c.reason == Some("more than an announcement holds"))
        .count();
    assert_eq!(dropped, 40 - MAX_ADDRESSES);
}

#[test]
fn changes_are_reported() {
    let mut b = book("[::]:4326");
    assert!(b.set_local([ip("8.8.4.4")]));
    assert!(!b.set_local([ip("8.8.4.4"), ip("8.8.4.4")]));
    assert!(b.set_upnp(Some(sa("9.9.9.9:1"))));
    assert!(!b.set_upnp(Some(sa("9.9.9.9:1"))));
    assert!(b.set_upnp(None));
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        // Bias toward the interesting prefixes.
        (
            any::<u16>(),
            prop::sample::select(vec![0xfd12u16, 0xfe80, 0x2a01, 0xfd00])
        )
            .prop_map(|(x, p)| IpAddr::from([p, 0x3456, 0x789a, x, 0, 0, 0, 1])),
    ]
}

proptest! {
    /// Whatever the inputs, the announcement holds no duplicate, at most
    /// MAX_ADDRESSES entries, and no automatic address that is not
    /// routable (configured ones are the operator's call).
    #[test]
    fn announcement_invariants(
        locals in prop::collection::vec(any_ip(), 0..30),
        observed in prop::collection::vec((any_ip(), any::<u16>()), 0..12),
        upnp in prop::option::of((any_ip(), 1u16..)),
        port in 1u16..,
    ) {
        let now = Instant::now();
        let overlay: Ipv6Net = OVERLAY.parse().unwrap();
        let mut b = Addresses::new(
            AddressConfig { overlay: Some(overlay), ..AddressConfig::default() },
            SocketAddr::from(([0u16; 8], port)),
        );
        b.set_local(locals.iter().copied());
        b.set_upnp(upnp.map(|(i, p)| SocketAddr::new(i, p)));
        for (i, p) in &observed {
            b.handle_observed(SocketAddr::new(*i, *p), now);
        }
        let out = b.announce();
        prop_assert!(out.len() <= MAX_ADDRESSES);
        let mut dedup = out.clone();
        dedup.sort();
        dedup.dedup();
        prop_assert_eq!(dedup.len(), out.len());
        for a in &out {
            prop_assert_eq!(scope(a.ip(), Some(overlay)), Scope::Global, "{}", a);
            let from_nat = observed.iter().any(|(i, p)| canonical(SocketAddr::new(*i, *p)) == *a)
                && !locals.iter().any(|l| canonical_ip(*l) == a.ip());
            let is_upnp = upnp.is_some_and(|(i, p)| SocketAddr::new(i, p) == *a);
            prop_assert!(!from_nat || is_upnp, "NATed observed address announced: {}", a);
        }
    }
}

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use super::*;
use crate::test_pki::Pki;

fn ll(n: u16, scope: u32) -> SocketAddrV6 {
    SocketAddrV6::new(format!("fe80::{n:x}").parse().unwrap(), 4327, 0, scope)
}

const INTERVAL: Duration = Duration::from_secs(10);

fn drain(d: &mut Discovery) -> Vec<LanEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn smaller_serial_dials_at_once_larger_waits() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let (c5, k5) = pki.node(5);
    let (c9, k9) = pki.node(9);
    let t = Instant::now();
    let cfg = DiscoveryConfig::with_interval(INTERVAL);
    let mut small = Discovery::new(c5.prefix, 5, cfg);
    let mut large = Discovery::new(c9.prefix, 9, cfg);
    let b5 = BeaconRepr::sign(4326, pki.now, &c5, &k5).unwrap();
    let b9 = BeaconRepr::sign(5000, pki.now, &c9, &k9).unwrap();

    small.handle_beacon(ll(9, 3), &b9, &v, pki.now, t);
    let ev = drain(&mut small);
    let peer9 = LanPeer {
        prefix: c9.prefix,
        serial: 9,
        address: c9.address,
        addr: SocketAddrV6::new("fe80::9".parse().unwrap(), 5000, 0, 3),
    };
    assert_eq!(ev, vec![LanEvent::Found(peer9), LanEvent::Dial(peer9)]);

    large.handle_beacon(ll(5, 4), &b5, &v, pki.now, t);
    let ev = drain(&mut large);
    assert!(matches!(ev[..], [LanEvent::Found(_)]), "{ev:?}");
    // Heard again before the fallback: still no dial.
    large.handle_beacon(ll(5, 4), &b5, &v, pki.now, t + INTERVAL);
    large.handle_timeout(t + INTERVAL);
    assert!(drain(&mut large).is_empty());
    // The other side's link came up: no dial ever.
    large.handle_link_up(&c5.prefix);
    large.handle_beacon(ll(5, 4), &b5, &v, pki.now, t + 3 * INTERVAL);
    large.handle_timeout(t + 3 * INTERVAL);
    assert!(drain(&mut large).is_empty());
    assert_eq!(large.stats().accepted, 1);
    assert_eq!(
        large.stats().repeated,
        2,
        "repeats skip the signature check"
    );
}

#[test]
fn larger_serial_dials_after_the_fallback() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let (c5, k5) = pki.node(5);
    let t = Instant::now();
    let cfg = DiscoveryConfig::with_interval(INTERVAL);
    let mut large = Discovery::new("fd00:77:0:9::/64".parse().unwrap(), 9, cfg);
    let b5 = BeaconRepr::sign(4326, pki.now, &c5, &k5).unwrap();
    large.handle_beacon(ll(5, 4), &b5, &v, pki.now, t);
    drain(&mut large);
    assert_eq!(large.poll_timeout(), Some(t + cfg.fallback));
    for i in 1..=3 {
        large.handle_beacon(ll(5, 4), &b5, &v, pki.now, t + INTERVAL * i);
    }
    large.handle_timeout(t + cfg.fallback);
    assert!(matches!(drain(&mut large)[..], [LanEvent::Dial(_)]));
}

#[test]
fn failed_dials_back_off_and_silence_forgets() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let (c9, k9) = pki.node(9);
    let t = Instant::now();
    let cfg = DiscoveryConfig::with_interval(INTERVAL);
    let mut d = Discovery::new("fd00:77:0:5::/64".parse().unwrap(), 5, cfg);
    let b9 = BeaconRepr::sign(4326, pki.now, &c9, &k9).unwrap();
    d.handle_beacon(ll(9, 3), &b9, &v, pki.now, t);
    drain(&mut d);
    d.handle_link_down(&c9.prefix, true, t);
    assert_eq!(d.poll_timeout(), Some(t + 2 * INTERVAL));
    d.handle_beacon(ll(9, 3), &b9, &v, pki.now, t + 2 * INTERVAL);
    d.handle_timeout(t + 2 * INTERVAL);
    assert!(matches!(drain(&mut d)[..], [LanEvent::Dial(_)]));
    d.handle_link_down(&c9.prefix, true, t + 2 * INTERVAL);
    // The second back-off (4 intervals) ends after the node is lost.
    assert_eq!(d.poll_timeout(), Some(t + 2 * INTERVAL + cfg.lost_after));
    // Not heard since t + 2 intervals: lost 3.5 intervals later.
    d.handle_timeout(t + 2 * INTERVAL + cfg.lost_after);
    assert_eq!(drain(&mut d), vec![LanEvent::Lost(c9.prefix)]);
    assert!(!d.is_lan_peer(&c9.prefix));
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn refused_beacons_are_counted_and_ignored() {
    let pki = Pki::new();
    let (c9, k9) = pki.node(9);
    let (c5, k5) = pki.node(5);
    let t = Instant::now();
    let mut d = Discovery::new(c5.prefix, 5, DiscoveryConfig::default());
    let v = pki.verifier(None);
    let good = BeaconRepr::sign(4326, pki.now, &c9, &k9).unwrap();

    // Not link-local.
    let ula = SocketAddrV6::new("fd00::9".parse().unwrap(), 4327, 0, 0);
    d.handle_beacon(ula, &good, &v, pki.now, t);
    // Our own.
    let own = BeaconRepr::sign(4326, pki.now, &c5, &k5).unwrap();
    d.handle_beacon(ll(5, 1), &own, &v, pki.now, t);
    // Garbage.
    d.handle_beacon(ll(1, 1), b"hello", &v, pki.now, t);
    // Another network's CA.
    let other = Pki::new();
    let (co, ko) = other.node(9);
    let foreign = BeaconRepr::sign(4326, pki.now, &co, &ko).unwrap();
    d.handle_beacon(ll(2, 1), &foreign, &v, pki.now, t);
    // Revoked.
    d.handle_beacon(
        ll(3, 1),
        &good,
        &pki.verifier(Some(&pki.crl(1, &[9]))),
        pki.now,
        t,
    );
    // Stale (replayed an hour later).
    d.handle_beacon(
        ll(4, 1),
        &good,
        &v,
        pki.now + Duration::from_secs(3600) - Duration::from_secs(1),
        t,
    );
    // Tampered: the port changed after signing.
    let mut bad = good.clone();
    bad[11] ^= 1;
    d.handle_beacon(ll(6, 1), &bad, &v, pki.now, t);
    // A second, different beacon from one sender within a second.
    d.handle_beacon(ll(7, 1), &good, &v, pki.now, t);
    let other_port = BeaconRepr::sign(4000, pki.now, &c9, &k9).unwrap();
    d.handle_beacon(ll(7, 1), &other_port, &v, pki.now, t);

    let s = d.stats();
    assert_eq!(s.not_link_local, 1);
    assert_eq!(s.own, 1);
    assert_eq!(s.malformed, 1);
    assert_eq!(s.bad_certificate, 2);
    assert_eq!(s.stale, 1);
    assert_eq!(s.bad_signature, 1);
    assert_eq!(s.rate_limited, 1);
    assert_eq!(s.accepted, 1);
    assert_eq!(d.peers().count(), 1);
}

#[test]
fn a_new_address_is_reported() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let (c9, k9) = pki.node(9);
    let t = Instant::now();
    let mut d = Discovery::new(
        "fd00:77:0:5::/64".parse().unwrap(),
        5,
        DiscoveryConfig::default(),
    );
    let b = BeaconRepr::sign(4326, pki.now, &c9, &k9).unwrap();
    d.handle_beacon(ll(9, 3), &b, &v, pki.now, t);
    drain(&mut d);
    d.handle_beacon(ll(0x99, 3), &b, &v, pki.now, t + INTERVAL);
    let ev = drain(&mut d);
    assert!(
        matches!(ev[..], [LanEvent::Found(p)] if p.addr.ip() == &"fe80::99".parse::<std::net::Ipv6Addr>().unwrap()),
        "{ev:?}"
    );
}

/// A beacon replayed from thousands of spoofed link-local addresses: the
/// sender cache stays at its bound and signature checks at their rate.
#[test]
fn a_replay_flood_from_many_senders_is_bounded() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let (c9, k9) = pki.node(9);
    let (c5, _) = pki.node(5);
    let t = Instant::now();
    let mut d = Discovery::new(c5.prefix, 5, DiscoveryConfig::default());
    let b9 = BeaconRepr::sign(4326, pki.now, &c9, &k9).unwrap();
    // 10 seconds of 1,000 beacons a second, each from a new address.
    for i in 0..10_000u32 {
        let from = ll((i % 60_000) as u16 + 1, i / 60_000 + 1);
        let now = t + Duration::from_millis(u64::from(i));
        d.handle_beacon(from, &b9, &v, pki.now, now);
        drain(&mut d);
        assert!(d.senders.len() <= MAX_SENDERS);
    }
    let s = d.stats();
    // The burst, then 20 a second.
    let checked = s.accepted + s.bad_signature + s.bad_certificate + s.stale;
    assert!(
        (200..=CHECK_BURST as u64 + 10 * CHECKS_PER_SECOND as u64 + 1).contains(&checked),
        "{checked} signatures checked"
    );
    assert_eq!(s.rate_limited, 10_000 - checked);
    assert_eq!(d.peers().count(), 1);
    // A new node's beacon gets through once the flood stops.
    let (c7, k7) = pki.node(7);
    let b7 = BeaconRepr::sign(4326, pki.now, &c7, &k7).unwrap();
    d.handle_beacon(ll(7, 9), &b7, &v, pki.now, t + Duration::from_secs(12));
    assert_eq!(d.peers().count(), 2);
}

use std::time::{Duration, Instant};

use super::*;
use crate::test_pki::Pki;

const T1: IfaceId = IfaceId(1);
const T2: IfaceId = IfaceId(2);

fn from(iface: IfaceId) -> Sender {
    Sender {
        iface,
        address: "fd00:77::1".parse().unwrap(),
    }
}

fn claim(prefix: &str, rid: RouterId, seqno: u16) -> Claim {
    Claim {
        prefix: prefix.parse().unwrap(),
        router_id: rid,
        seqno,
    }
}

/// Node 2's policy, and node 3's certificate and key.
fn setup(config: OriginsConfig) -> (Pki, Origins, NodeCert, NodeKey) {
    let f = Pki::new();
    let (cert, key) = f.node(2);
    let clock = (Instant::now(), f.now);
    let o = Origins::new(config, f.network, vec![], cert, Arc::new(key), clock);
    let (c3, k3) = f.node(3);
    (f, o, c3, k3)
}

/// A proof signed now.
fn proof_of(cert: &NodeCert, key: &NodeKey, c: &Claim) -> OriginProof {
    proof_at(cert, key, c, unix_secs(SystemTime::now()))
}

fn proof_at(cert: &NodeCert, key: &NodeKey, c: &Claim, at: u64) -> OriginProof {
    sign(key, cert.public_key.kind, c, u32::try_from(at).unwrap()).unwrap()
}

#[test]
fn a_claim_is_proved_once_per_seqno() {
    let (_, mut o, c3, k3) = setup(OriginsConfig::default());
    let now = Instant::now();
    let r3 = router_id(c3.prefix);
    assert_eq!(o.learn(&c3), Learnt::New);
    assert_eq!(o.learn(&c3), Learnt::Known);
    let c7 = claim("fd00:77:0:3::/64", r3, 7);
    assert_eq!(o.check(&c7, None, from(T1), now), Verdict::NeedProof);
    let p7 = proof_of(&c3, &k3, &c7);
    assert_eq!(o.check(&c7, Some(&p7), from(T1), now), Verdict::Valid);
    // Again, older, or from another neighbour: no proof needed, no check.
    assert_eq!(o.check(&c7, None, from(IfaceId(2)), now), Verdict::Valid);
    let c6 = claim("fd00:77:0:3::/64", r3, 6);
    assert_eq!(o.check(&c6, None, from(T1), now), Verdict::Valid);
    assert_eq!(o.stats().verified, 1);
    // A newer seqno needs its own proof; the proof of 7 is not one.
    let c8 = claim("fd00:77:0:3::/64", r3, 8);
    assert_eq!(o.check(&c8, None, from(T1), now), Verdict::NeedProof);
    assert_eq!(
        o.check(&c8, Some(&p7), from(T1), now),
        Verdict::Rejected(Rejection::BadProof)
    );
    let p8 = proof_of(&c3, &k3, &c8);
    assert_eq!(o.check(&c8, Some(&p8), from(T1), now), Verdict::Valid);
    // Relays pass on the proofs they checked, of the newest seqnos.
    assert_eq!(o.proof(&c8, now), Some(p8));
    assert_eq!(o.proof(&c7, now), Some(p7));
    assert_eq!(o.proof(&c6, now), None);
}

#[test]
fn only_the_owner_and_authorised_gateways_originate() {
    let (f, mut o, c3, k3) = setup(OriginsConfig::default());
    let now = Instant::now();
    o.learn(&c3);
    let r3 = router_id(c3.prefix);
    // Another node's /64, a more-specific of it, the overlay, ::/0, IPv4.
    for p in [
        "fd00:77:0:2::/64",
        "fd00:77:0:2::/80",
        "fd00:77::/48",
        "::/0",
        "10.0.0.0/8",
    ] {
        let c = claim(p, r3, 1);
        let proof = proof_of(&c3, &k3, &c);
        assert_eq!(
            o.check(&c, Some(&proof), from(T1), now),
            Verdict::Rejected(Rejection::NotAuthorised),
            "{p}"
        );
    }
    // Its own prefix and a more-specific of it.
    for p in ["fd00:77:0:3::/64", "fd00:77:0:3::/80"] {
        let c = claim(p, r3, 1);
        let proof = proof_of(&c3, &k3, &c);
        assert_eq!(o.check(&c, Some(&proof), from(T1), now), Verdict::Valid);
    }
    // Granted ::/0: any prefix outside the overlay, never inside it.
    assert!(o.set_grants(vec![GatewayGrant {
        node: c3.prefix,
        prefix: "::/0".parse().unwrap(),
    }]));
    for (p, ok) in [
        ("::/0", true),
        ("2001:db8::/32", true),
        ("fd00::/8", true),
        ("fd00:77:0:2::/64", false),
        ("10.0.0.0/8", false),
    ] {
        let c = claim(p, r3, 1);
        let proof = proof_of(&c3, &k3, &c);
        let v = o.check(&c, Some(&proof), from(T1), now);
        assert_eq!(v == Verdict::Valid, ok, "{p}: {v:?}");
    }
    let default = claim("::/0", r3, 1);
    assert!(o.holds(&default, now));
    // Withdrawn: the claim no longer holds.
    assert!(o.set_grants(vec![]));
    assert!(!o.holds(&default, now));
    assert!(o.holds(&claim("fd00:77:0:3::/64", r3, 1), now));
    // Revoked: nothing of it holds, and it is unknown again.
    assert_eq!(o.forget(|c| c.serial == 3), 1);
    let own = claim("fd00:77:0:3::/64", r3, 1);
    assert!(!o.holds(&own, now));
    assert_eq!(
        o.check(&own, None, from(T1), now),
        Verdict::Rejected(Rejection::UnknownOrigin)
    );
    let _ = f;
}

#[test]
fn our_own_claims_are_signed_once_and_checked_with_our_key() {
    let (f, mut o, c3, k3) = setup(OriginsConfig::default());
    let now = Instant::now();
    let me = o.router_id();
    let c = claim("fd00:77:0:2::/64", me, 40);
    let p = o.proof(&c, now).unwrap();
    assert_eq!(o.proof(&c, now), Some(p.clone()));
    assert_eq!(o.stats().signed, 1);
    // What a neighbour sends back before a restart is checked with our
    // key: ours passes, anyone else's does not.
    let c41 = claim("fd00:77:0:2::/64", me, 41);
    assert_eq!(o.check(&c41, None, from(T1), now), Verdict::NeedProof);
    let forged = proof_of(&c3, &k3, &c41);
    assert_eq!(
        o.check(&c41, Some(&forged), from(T1), now),
        Verdict::Rejected(Rejection::BadProof)
    );
    let mine = o.proof(&c41, now).unwrap();
    let (cert, _) = (o.cert.clone(), ());
    assert!(super::super::origin::verify(&cert.public_key, &c41, &mine));
    assert_eq!(o.check(&c41, Some(&mine), from(T1), now), Verdict::Valid);
    let _ = f;
}

#[test]
fn unknown_origins_are_asked_for_a_bounded_number_of_times() {
    let config = OriginsConfig {
        want_tries: 2,
        ..OriginsConfig::default()
    };
    let (_, mut o, c3, _) = setup(config);
    let t0 = Instant::now();
    let r3 = router_id(c3.prefix);
    let c = claim("fd00:77:0:3::/64", r3, 1);
    assert_eq!(
        o.check(&c, None, from(T1), t0),
        Verdict::Rejected(Rejection::UnknownOrigin)
    );
    o.check(&claim("fd00:77:0:3::/80", r3, 1), None, from(T1), t0);
    assert_eq!(o.poll_wanted(t0), vec![(T1, vec![r3])]);
    assert!(o.poll_wanted(t0 + Duration::from_secs(1)).is_empty());
    assert_eq!(
        o.poll_wanted(t0 + Duration::from_secs(6)),
        vec![(T1, vec![r3])]
    );
    assert!(o.poll_wanted(t0 + Duration::from_secs(12)).is_empty());
    assert_eq!(o.stats().certs_asked, 2);
    // Given up: a later claim starts again.
    assert!(o.take_wanted(r3).is_none());
    o.check(&c, None, from(T1), t0);
    o.check(&claim("fd00:77:0:3::/80", r3, 1), None, from(T1), t0);
    // Learnt (from the answer): what to ask the neighbour for again.
    o.learn(&c3);
    let (iface, prefixes) = o.take_wanted(r3).unwrap();
    assert_eq!(iface, T1);
    assert_eq!(prefixes.len(), 2);
}

#[test]
fn a_neighbour_sending_bad_proofs_is_throttled() {
    let config = OriginsConfig {
        verify_burst: 3,
        verify_rate: 2,
        ..OriginsConfig::default()
    };
    let (_, mut o, c3, k3) = setup(config);
    let t0 = Instant::now();
    o.learn(&c3);
    let r3 = router_id(c3.prefix);
    // Dated now, so that the signature is checked.
    let mut junk = (unix_secs(SystemTime::now()) as u32).to_be_bytes().to_vec();
    junk.extend_from_slice(&[7; 64]);
    let junk = OriginProof::new(&junk).unwrap();
    let mut verdicts = vec![];
    for s in 1..=5 {
        let c = claim("fd00:77:0:3::/64", r3, s);
        verdicts.push(o.check(&c, Some(&junk), from(T1), t0));
    }
    let bad = Verdict::Rejected(Rejection::BadProof);
    let throttled = Verdict::Rejected(Rejection::Throttled);
    assert_eq!(verdicts, [bad, bad, bad, throttled, throttled]);
    assert_eq!(o.stats().verified, 3);
    // Other neighbours have their own budget; this one refills.
    let c = claim("fd00:77:0:3::/64", r3, 9);
    let good = proof_of(&c3, &k3, &c);
    assert_eq!(
        o.check(&c, Some(&good), from(IfaceId(2)), t0),
        Verdict::Valid
    );
    let c10 = claim("fd00:77:0:3::/64", r3, 10);
    let good10 = proof_of(&c3, &k3, &c10);
    assert_eq!(o.check(&c10, Some(&good10), from(T1), t0), throttled);
    let later = t0 + Duration::from_millis(600);
    assert_eq!(
        o.check(&c10, Some(&good10), from(T1), later),
        Verdict::Valid
    );
}

#[test]
fn an_origin_cannot_fill_the_table_with_more_specifics() {
    let config = OriginsConfig {
        prefixes_per_origin: 4,
        ..OriginsConfig::default()
    };
    let (_, mut o, c3, k3) = setup(config);
    let now = Instant::now();
    o.learn(&c3);
    let r3 = router_id(c3.prefix);
    let mut valid = 0;
    for i in 0..10u16 {
        let c = claim(&format!("fd00:77:0:3:{i:x}::/80"), r3, 1);
        let p = proof_of(&c3, &k3, &c);
        if o.check(&c, Some(&p), from(T1), now) == Verdict::Valid {
            valid += 1;
        }
    }
    assert_eq!(valid, 4);
    assert_eq!(o.stats().over_bounds, 6);
    // Housekeeping frees the claims the engine no longer holds.
    o.retain_claims(|_, _| false);
    let c = claim("fd00:77:0:3:9::/80", r3, 1);
    let p = proof_of(&c3, &k3, &c);
    assert_eq!(o.check(&c, Some(&p), from(T1), now), Verdict::Valid);
}

#[test]
fn a_renewed_certificate_replaces_the_old_one() {
    let (f, mut o, c3, _) = setup(OriginsConfig::default());
    o.learn(&c3);
    // Same prefix, newer serial: kept; an older one does not come back.
    let key = NodeKey::generate().unwrap();
    let der =
        f.ca.issue_node(
            &key.spki_der(),
            c3.prefix,
            crate::identity::IssueParams {
                serial: 30,
                not_before: f.now - Duration::from_secs(60),
                not_after: f.now + Duration::from_secs(3600),
            },
        )
        .unwrap();
    let renewed = NodeCert::from_der(&der).unwrap();
    assert_eq!(o.learn(&renewed), Learnt::Known);
    assert_eq!(o.cert_of(router_id(c3.prefix)).unwrap().serial, 30);
    o.learn(&c3);
    assert_eq!(o.cert_of(router_id(c3.prefix)).unwrap().serial, 30);
}

#[test]
fn proofs_expire_and_the_origin_signs_afresh() {
    let (f, mut o, c3, k3) = setup(OriginsConfig::default());
    let t0 = o.clock.0;
    o.learn(&c3);
    let r3 = router_id(c3.prefix);
    let wall = unix_secs(f.now);
    let c = claim("fd00:77:0:3::/64", r3, 9);
    // Signed 2 h 1 min ago, or 11 min ahead: refused unchecked. A proof
    // that old may be from before the seqno went round.
    for at in [wall - 7260, wall + 660] {
        let p = proof_at(&c3, &k3, &c, at);
        assert_eq!(
            o.check(&c, Some(&p), from(T1), t0),
            Verdict::Rejected(Rejection::StaleProof),
            "{at}"
        );
    }
    assert_eq!((o.stats().stale_proofs, o.stats().verified), (2, 0));
    // Within the lifetime and the skew: good.
    let p = proof_at(&c3, &k3, &c, wall - 7000);
    assert_eq!(o.check(&c, Some(&p), from(T1), t0), Verdict::Valid);
    // A relay passes it on while it is fresh, not after.
    assert_eq!(o.proof(&c, t0), Some(p));
    assert_eq!(o.proof(&c, t0 + Duration::from_secs(300)), None);
    // Our own: signed with the clock's time, again after half a lifetime
    // even at the same seqno.
    let me = o.router_id();
    let mine = claim("fd00:77:0:2::/64", me, 1);
    let p1 = o.proof(&mine, t0).unwrap();
    assert_eq!(super::super::origin::signed_at(&p1), Some(wall as u32));
    assert_eq!(
        o.proof(&mine, t0 + Duration::from_secs(3000)),
        Some(p1.clone())
    );
    let p2 = o.proof(&mine, t0 + Duration::from_secs(3700)).unwrap();
    assert_eq!(
        super::super::origin::signed_at(&p2),
        Some(wall as u32 + 3700)
    );
    // The seqno moves every hour.
    assert!(!o.poll_refresh(t0));
    assert_eq!(o.refresh_deadline(), t0 + Duration::from_secs(3600));
    assert!(o.poll_refresh(t0 + Duration::from_secs(3600)));
    assert!(!o.poll_refresh(t0 + Duration::from_secs(3601)));
    assert_eq!(o.stats().refreshes, 1);
}

#[test]
fn one_neighbour_cannot_crowd_out_the_origins_others_wait_for() {
    let config = OriginsConfig {
        wanted_per_iface: 3,
        ..OriginsConfig::default()
    };
    let (_, mut o, c3, _) = setup(config);
    let t0 = Instant::now();
    for i in 1..=10u8 {
        o.check(
            &claim("2001:db8::/32", RouterId([i; 8]), 1),
            None,
            from(T1),
            t0,
        );
    }
    assert_eq!(o.stats().over_bounds, 7);
    let r3 = router_id(c3.prefix);
    o.check(&claim("fd00:77:0:3::/64", r3, 1), None, from(T2), t0);
    assert!(o.is_wanted(r3));
    assert_eq!(o.stats().over_bounds, 7);
}

#[test]
fn a_node_originates_its_ipv4_subnet_and_nothing_else_of_ipv4() {
    let (f, o, _, _) = setup(OriginsConfig::default());
    let (c4, _) = f.node_with_ipv4(4, Some("10.42.4.0/24".parse().unwrap()));
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert!(o.authorised(&net("10.42.4.0/24"), &c4));
    assert!(o.authorised(&net("10.42.4.128/25"), &c4));
    assert!(!o.authorised(&net("10.42.5.0/24"), &c4));
    assert!(!o.authorised(&net("10.42.0.0/16"), &c4));
    let (c5, _) = f.node(5);
    assert!(!o.authorised(&net("10.42.4.0/24"), &c5));
}

#[test]
fn switched_off_the_engine_runs_plain_babel_and_never_re_signs() {
    let config = OriginsConfig {
        enabled: false,
        ..OriginsConfig::default()
    };
    let (_, mut o, _, _) = setup(config);
    assert!(!o.enabled());
    let now = Instant::now();
    let later = now + config.proof_lifetime;
    assert!(!o.poll_refresh(later));
    // The deadline still moves, so a node waking for it does not spin.
    assert!(o.refresh_deadline() > later);
    assert_eq!(o.stats().refreshes, 0);
    let (_, on, _, _) = setup(OriginsConfig::default());
    assert!(on.enabled());
}

#[test]
fn a_stale_newest_proof_vouches_for_nothing() {
    let (f, mut o, c3, k3) = setup(OriginsConfig::default());
    let t0 = o.clock.0;
    o.learn(&c3);
    let r3 = router_id(c3.prefix);
    let wall = unix_secs(f.now);
    let c100 = claim("fd00:77:0:3::/64", r3, 100);
    let p100 = proof_at(&c3, &k3, &c100, wall);
    assert_eq!(o.check(&c100, Some(&p100), from(T1), t0), Verdict::Valid);
    // While that proof is fresh, older seqnos pass unproved.
    let c90 = claim("fd00:77:0:3::/64", r3, 90);
    assert_eq!(o.check(&c90, None, from(T2), t0), Verdict::Valid);
    // Three hours later the origin is back at seqno 40,000 (restarted
    // without its state, or its seqno went round): behind 100 in
    // Babel's order. Its claim needs a proof again, and the fresh one
    // becomes the newest.
    let later = t0 + Duration::from_secs(3 * 3600);
    let c40k = claim("fd00:77:0:3::/64", r3, 40_000);
    assert_eq!(o.check(&c40k, None, from(T1), later), Verdict::NeedProof);
    let p40k = proof_at(&c3, &k3, &c40k, wall + 3 * 3600);
    assert_eq!(o.check(&c40k, Some(&p40k), from(T1), later), Verdict::Valid);
    // A relay replaying the old claim of 100, ahead of 40,000, is not
    // vouched for by the cache, and the proof it kept is stale.
    assert_eq!(o.check(&c100, None, from(T2), later), Verdict::NeedProof);
    assert_eq!(
        o.check(&c100, Some(&p100), from(T2), later),
        Verdict::Rejected(Rejection::StaleProof)
    );
    // Seqnos up to the new newest pass unproved again.
    let c39k = claim("fd00:77:0:3::/64", r3, 39_999);
    assert_eq!(o.check(&c39k, None, from(T2), later), Verdict::Valid);
    assert_eq!(o.stats().verified, 2);
}

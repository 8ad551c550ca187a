//! Route-origin authentication (`engine/origin.rs`): what a checking
//! engine does with claims, proofs and requests for them, driven by a toy
//! policy whose "signature" is a per-origin key byte.

use std::collections::BTreeMap;

use super::*;
use crate::engine::*;
use crate::metric::seqno_ge;
use crate::wire::{INFINITY, Message, OriginProof, RouteRequestRepr};

/// Origins and their keys; the newest checked seqno per claim.
#[derive(Debug, Default)]
struct Toy {
    owners: BTreeMap<RouterId, (IpNet, u8)>,
    checked: BTreeMap<(IpNet, RouterId), (u16, OriginProof)>,
    verifications: u32,
}

fn toy_proof(c: &Claim, key: u8) -> OriginProof {
    let [hi, lo] = c.seqno.to_be_bytes();
    OriginProof::new(&[key, hi, lo, c.prefix.prefix_len(), c.router_id.0[7]]).unwrap()
}

impl Toy {
    fn new() -> Toy {
        let mut t = Toy::default();
        t.owners.insert(ME, (pfx("fd00:aa::/64"), 0x11));
        t.owners.insert(SRC, (p1(), 0x55));
        t.owners.insert(SRC2, (pfx("fd00:2::/64"), 0x66));
        t
    }
}

impl OriginAuth for Toy {
    fn check(&mut self, c: &Claim, proof: Option<&OriginProof>, _: Sender, _: Instant) -> Verdict {
        let Some((owned, key)) = self.owners.get(&c.router_id).copied() else {
            return Verdict::Rejected(Rejection::UnknownOrigin);
        };
        if !owned.contains(&c.prefix) {
            return Verdict::Rejected(Rejection::NotAuthorised);
        }
        if let Some((s, _)) = self.checked.get(&(c.prefix, c.router_id))
            && seqno_ge(*s, c.seqno)
        {
            return Verdict::Valid;
        }
        let Some(p) = proof else {
            return Verdict::NeedProof;
        };
        self.verifications += 1;
        if *p != toy_proof(c, key) {
            return Verdict::Rejected(Rejection::BadProof);
        }
        self.checked
            .insert((c.prefix, c.router_id), (c.seqno, p.clone()));
        Verdict::Valid
    }

    fn holds(&mut self, c: &Claim, _: Instant) -> bool {
        self.owners
            .get(&c.router_id)
            .is_some_and(|(owned, _)| owned.contains(&c.prefix))
    }

    fn proof(&mut self, c: &Claim, _: Instant) -> Option<OriginProof> {
        if c.router_id == ME {
            return Some(toy_proof(c, 0x11));
        }
        self.checked
            .get(&(c.prefix, c.router_id))
            .filter(|(s, _)| *s == c.seqno)
            .map(|(_, p)| p.clone())
    }
}

fn signed(prefix: IpNet, rid: RouterId, seqno: u16, metric: u16, key: u8) -> Message {
    let claim = Claim {
        prefix,
        router_id: rid,
        seqno,
    };
    Message::Update(UpdateRepr {
        proof: Some(toy_proof(&claim, key)),
        ..unsigned(prefix, rid, seqno, metric)
    })
}

fn unsigned(prefix: IpNet, rid: RouterId, seqno: u16, metric: u16) -> UpdateRepr {
    match update(prefix, rid, seqno, metric) {
        Message::Update(u) => u,
        _ => unreachable!(),
    }
}

fn checking(tunnels: u32) -> T<Toy> {
    let mut t = T::with_auth(Toy::new());
    for i in 1..=tunnels {
        t.tunnel(IfaceId(i), &format!("fe80::{}", i + 1));
    }
    t
}

fn proof_requests(sent: &[(IfaceId, Option<IpAddr>, Message)]) -> Vec<(IfaceId, IpNet)> {
    sent.iter()
        .filter_map(|(i, _, m)| match m {
            Message::RouteRequest(RouteRequestRepr {
                prefix: Some(p),
                proof_wanted: true,
            }) => Some((*i, *p)),
            _ => None,
        })
        .collect()
}

#[test]
fn origin_claims_need_a_proof_once_per_seqno() {
    let mut t = checking(2);
    // A new claim without its proof: dropped, and the sender asked once
    // (a second Update within the resend delay asks nothing more).
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 96)]);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 96)]);
    assert!(t.selected(p1()).is_none());
    assert_eq!(t.e.counters().origin.missing_proof, 2);
    assert_eq!(proof_requests(&t.sent(ms(5))), vec![(T1, p1())]);
    // With the proof: the route is in, verified once.
    t.rx(T1, "fe80::2", &[signed(p1(), SRC, 7, 96, 0x55)]);
    assert_eq!(t.selected(p1()).map(|r| r.seqno), Some(7));
    // The same claim again, from anyone, needs no proof; an older seqno
    // neither (a replay: seqno ordering makes it harmless).
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 300)]);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 6, 300)]);
    assert_eq!(
        t.e.routes(t.now)
            .iter()
            .filter(|r| r.prefix == p1())
            .count(),
        2
    );
    assert_eq!(t.e.origin_auth().verifications, 1);
    // A newer seqno without a proof is not believed.
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 8, 96)]);
    assert_eq!(t.selected(p1()).map(|r| r.seqno), Some(7));
    assert_eq!(t.e.counters().origin.missing_proof, 3);
}

#[test]
fn rejected_claims_are_dropped_and_counted_per_reason() {
    let mut t = checking(1);
    let rogue = RouterId([9; 8]);
    let msgs = [
        // Unknown origin.
        update(pfx("fd00:9::/64"), rogue, 1, 96),
        // A known origin announcing another's prefix, a more-specific of
        // it, a default route.
        signed(p1(), SRC2, 1, 96, 0x66),
        signed(pfx("fd00:1::/80"), SRC2, 1, 96, 0x66),
        signed(pfx("::/0"), SRC2, 1, 96, 0x66),
        // The owner's router-id with a proof that is not the owner's.
        signed(p1(), SRC, 9, 96, 0x66),
    ];
    t.rx(T1, "fe80::2", &msgs);
    let o = &t.e.counters().origin;
    assert_eq!((o.unknown_origin, o.not_authorised, o.bad_proof), (1, 3, 1));
    assert_eq!(o.dropped(), 5);
    assert!(t.e.routes(t.now).iter().all(|r| r.local));
    assert!(t.e.fib().is_empty());
    // Retractions need no proof: they only withdraw the sender's route.
    t.rx(T1, "fe80::2", &[update(p1(), rogue, 1, INFINITY)]);
    assert_eq!(t.e.counters().origin.dropped(), 5);
}

#[test]
fn proofs_go_out_once_per_claim_and_interface() {
    let mut t = checking(1);
    let ours = pfx("fd00:aa::/64");
    t.e.add_xroute(ours, 0, t.now).unwrap();
    let proved = |sent: &[(IfaceId, Option<IpAddr>, Message)], iface: IfaceId| {
        updates_for(sent, ours)
            .iter()
            .filter(|(i, u)| *i == iface && u.proof.is_some())
            .count()
    };
    let first = t.sent(ms(50));
    assert!(!updates_for(&first, ours).is_empty());
    assert_eq!(proved(&first, T1), 1);
    // The periodic dumps that follow carry none.
    let later = t.sent(secs(40));
    assert!(updates_for(&later, ours).len() >= 2);
    assert_eq!(proved(&later, T1), 0);
    // A neighbour that asks gets it again.
    t.rx(
        T1,
        "fe80::2",
        &[Message::RouteRequest(RouteRequestRepr {
            prefix: Some(ours),
            proof_wanted: true,
        })],
    );
    assert_eq!(proved(&t.sent(ms(50)), T1), 1);
    assert_eq!(t.e.counters().origin.proofs_requested, 1);
    // A new seqno is proved again; a new interface gets its own.
    t.rx(T1, "fe80::2", &[seqno_request(ours, ME, 101, 5)]);
    let bumped = t.sent(ms(50));
    assert_eq!(t.e.seqno(), 101);
    assert_eq!(proved(&bumped, T1), 1);
    t.tunnel(T2, "fe80::3");
    assert_eq!(proved(&t.sent(ms(50)), T2), 1);
}

#[test]
fn a_bump_asked_by_the_caller_is_proved_and_paced() {
    let mut t = checking(1);
    let ours = pfx("fd00:aa::/64");
    t.e.add_xroute(ours, 0, t.now).unwrap();
    let _ = t.sent(ms(50));
    // The caller's bump (its proofs age): seqno + 1, announced with the
    // new proof at once.
    t.e.bump_seqno(t.now);
    assert_eq!(t.e.seqno(), 101);
    let ups = updates_for(&t.sent(ms(50)), ours);
    assert!(
        ups.iter().any(|(_, u)| u.seqno == 101 && u.proof.is_some()),
        "{ups:?}"
    );
    // A second one within the bump interval waits for its end.
    t.e.bump_seqno(t.now);
    assert_eq!(t.e.seqno(), 101);
    let later = t.sent(secs(1));
    assert_eq!(t.e.seqno(), 102);
    assert!(
        updates_for(&later, ours)
            .iter()
            .any(|(_, u)| u.seqno == 102)
    );
}

#[test]
fn relayed_routes_carry_the_proof_they_came_with() {
    let mut t = checking(2);
    t.rx(T1, "fe80::2", &[signed(p1(), SRC, 7, 96, 0x55)]);
    let ups = updates_for(&t.sent(ms(50)), p1());
    let to_t2: Vec<_> = ups.iter().filter(|(i, _)| *i == T2).collect();
    assert_eq!(to_t2.len(), 1);
    let claim = Claim {
        prefix: p1(),
        router_id: SRC,
        seqno: 7,
    };
    assert_eq!(to_t2[0].1.proof, Some(toy_proof(&claim, 0x55)));
}

#[test]
fn our_seqno_follows_only_our_own_proof() {
    let mut t = checking(1);
    let ours = pfx("fd00:aa::/64");
    t.e.add_xroute(ours, 0, t.now).unwrap();
    t.sent(ms(50));
    // A neighbour pushes our router-id far ahead, without our proof, or
    // with someone else's: our seqno stays.
    t.rx(T1, "fe80::2", &[update(ours, ME, 30_000, 96)]);
    t.rx(T1, "fe80::2", &[signed(ours, ME, 30_000, 96, 0x55)]);
    assert_eq!(t.e.seqno(), 100);
    let o = &t.e.counters().origin;
    assert_eq!((o.own_unproven, o.missing_proof, o.bad_proof), (2, 1, 1));
    // Our own proof of a seqno we issued before a restart: we catch up.
    t.rx(T1, "fe80::2", &[signed(ours, ME, 500, INFINITY, 0x11)]);
    assert_eq!(t.e.seqno(), 501);
    assert_eq!(t.e.counters().seqno_catch_ups, 1);
}

#[test]
fn catch_up_hints_carry_the_proof() {
    let mut t = checking(2);
    t.rx(T1, "fe80::2", &[signed(p1(), SRC, 40, 96, 0x55)]);
    t.sent(ms(50));
    // The source restarted at seqno 3 and announces again (its proof of 3
    // is valid: it signs whatever it announces).
    t.rx(T2, "fe80::3", &[signed(p1(), SRC, 3, 96, 0x55)]);
    let hints: Vec<_> = updates_for(&t.sent(ms(50)), p1())
        .into_iter()
        .filter(|(i, u)| *i == T2 && u.seqno == 40)
        .collect();
    assert!(!hints.is_empty());
    let claim = Claim {
        prefix: p1(),
        router_id: SRC,
        seqno: 40,
    };
    assert!(
        hints
            .iter()
            .all(|(_, u)| u.proof == Some(toy_proof(&claim, 0x55)))
    );
}

#[test]
fn routes_of_an_origin_no_longer_trusted_go_at_once() {
    let mut t = checking(2);
    t.rx(T1, "fe80::2", &[signed(p1(), SRC, 7, 96, 0x55)]);
    t.rx(
        T2,
        "fe80::3",
        &[signed(pfx("fd00:2::/64"), SRC2, 3, 96, 0x66)],
    );
    assert_eq!(t.e.fib().len(), 2);
    t.sent(ms(50));
    // SRC is revoked.
    t.e.origin_auth_mut().owners.remove(&SRC);
    t.e.recheck_origins(t.now);
    assert_eq!(t.e.fib().len(), 1);
    assert_eq!(t.e.counters().origin.routes_rechecked_out, 1);
    // Its loss is announced (a retraction) without waiting for a timer.
    let ups = updates_for(&t.sent(ms(10)), p1());
    assert!(ups.iter().any(|(_, u)| u.metric == INFINITY), "{ups:?}");
}

#[test]
fn a_flood_of_wildcard_requests_gets_a_dump_a_second() {
    let mut t = checking(1);
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.sent(ms(50));
    let wildcard = Message::RouteRequest(RouteRequestRepr {
        prefix: None,
        proof_wanted: false,
    });
    let mut dumps = 0;
    // 1000 requests over 10 s (periodic dumps are every 12-16 s: at most
    // one of them falls in).
    for _ in 0..1000 {
        t.rx(T1, "fe80::2", std::slice::from_ref(&wildcard));
        dumps += updates_for(&t.sent(ms(10)), pfx("fd00:aa::/64")).len();
    }
    assert!((10..=15).contains(&dumps), "{dumps} dumps");
    assert!(t.e.counters().dumps_deferred >= 985);
}

#[test]
fn a_claim_of_an_unknown_origin_asks_for_its_proof_at_once() {
    let mut t = checking(1);
    let stranger = RouterId([7; 8]);
    // Dropped (the caller fetches the key), and the proof asked for in
    // the same breath, once per resend delay.
    t.rx(
        T1,
        "fe80::2",
        &[update(pfx("fd00:7::/64"), stranger, 3, 96)],
    );
    t.rx(
        T1,
        "fe80::2",
        &[update(pfx("fd00:7::/64"), stranger, 3, 96)],
    );
    assert_eq!(t.e.counters().origin.unknown_origin, 2);
    assert_eq!(
        proof_requests(&t.sent(ms(5))),
        vec![(T1, pfx("fd00:7::/64"))]
    );
    // The key arrives with the proof: the route is in.
    t.e.origin_auth_mut()
        .owners
        .insert(stranger, (pfx("fd00:7::/64"), 0x77));
    t.rx(
        T1,
        "fe80::2",
        &[signed(pfx("fd00:7::/64"), stranger, 3, 96, 0x77)],
    );
    assert_eq!(t.selected(pfx("fd00:7::/64")).map(|r| r.seqno), Some(3));
}

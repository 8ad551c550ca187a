//! Requests: route requests, seqno requests (answering, forwarding,
//! duplicates), starvation. Our own seqno is in `seqno`.

use super::*;
use crate::engine::*;
use crate::wire::{Message, RouteRequestRepr};

#[test]
fn seqno_request_is_forwarded_with_hop_minus_one_never_to_the_requester() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50));
    // From T2 (not our next hop): forwarded to T1 with hop 9.
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 10)]);
    let reqs = seqno_requests(&t.sent(ms(5)));
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].0, reqs[0].2.hop_count, reqs[0].2.seqno),
        (T1, 9, 8)
    );
    // A duplicate is suppressed while pending.
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 10)]);
    assert!(seqno_requests(&t.sent(ms(5))).is_empty());
    assert_eq!(t.e.counters().duplicate_requests, 1);
    // From T1 itself (our only route's next hop): nowhere to forward.
    let mut u = T::new();
    u.tunnel(T1, "fe80::2");
    u.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    u.sent(ms(50));
    u.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    assert!(seqno_requests(&u.sent(ms(5))).is_empty());
}

#[test]
fn seqno_request_answered_when_we_can_and_hop_count_rules() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50));
    // Our seqno is already >= the requested one: answered with an update.
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 7, 10)]);
    let sent = t.sent(ms(5));
    assert!(seqno_requests(&sent).is_empty());
    assert_eq!(
        updates_for(&sent, p1())
            .iter()
            .map(|u| u.0)
            .collect::<Vec<_>>(),
        vec![T2]
    );
    // Another router-id is an answer too.
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC2, 50, 10)]);
    assert_eq!(updates_for(&t.sent(ms(5)), p1()).len(), 1);
    // Hop count 1: not forwarded; hop count 0: dropped and counted.
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 1)]);
    assert!(seqno_requests(&t.sent(ms(5))).is_empty());
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 0)]);
    assert_eq!(t.e.counters().bad_requests, 1);
}

#[test]
fn forwarded_request_prefers_a_feasible_successor() {
    let mut t = T::tunnels(3);
    // Selected via T1 (the requester); T2 has a feasible worse route; T3 a
    // better but unfeasible one (older seqno): the request goes to T2.
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 150)]);
    t.sent(ms(50));
    t.rx(IfaceId(3), "fe80::4", &[update(p1(), SRC, 6, 20)]);
    t.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    let reqs = seqno_requests(&t.sent(ms(5)));
    assert_eq!(reqs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![T2]);
}

#[test]
fn forwarded_request_answer_is_relayed_to_the_requester() {
    let mut t = T::tunnels(2);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 150)]);
    t.sent(ms(50));
    t.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    let reqs = seqno_requests(&t.sent(ms(5)));
    assert_eq!(
        reqs.iter()
            .map(|r| (r.0, r.2.hop_count))
            .collect::<Vec<_>>(),
        vec![(T2, 9)]
    );
    // The answer arrives through T2: relayed urgently to T1.
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 8, 150)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert!(ups.iter().any(|u| u.0 == T1 && u.1.seqno == 8), "{ups:?}");
}

#[test]
fn starvation_sends_a_seqno_request_to_the_unfeasible_route() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 500)]);
    t.sent(ms(50)); // FD (7, 196): the route via T2 is unfeasible
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, INFINITY)]);
    assert!(t.selected(p1()).is_none());
    let sent = t.sent(ms(5));
    let reqs = seqno_requests(&sent);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].0, reqs[0].2.seqno, reqs[0].2.router_id),
        (T2, 8, SRC)
    );
    assert_eq!(reqs[0].2.hop_count, 127);
    // The retraction went out at once.
    assert!(
        updates_for(&sent, p1())
            .iter()
            .all(|u| u.1.metric == INFINITY)
    );
    // Resent after 2 s, then 4 s.
    assert_eq!(seqno_requests(&t.sent(secs(2))).len(), 1);
    assert_eq!(seqno_requests(&t.sent(secs(4))).len(), 1);
    // The answer makes the route feasible and selected.
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 8, 500)]);
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(T2)));
    t.rx(T2, "fe80::3", &[hello(2, None), ihu(96)]);
    let late = seqno_requests(&t.sent(secs(8)));
    assert!(
        late.is_empty(),
        "request satisfied, no more resends: {late:?}"
    );
}

/// The seqno requests sent in the next 5 ms: (interface, hop count,
/// seqno).
fn requests_sent(t: &mut T) -> Vec<(IfaceId, u8, u16)> {
    seqno_requests(&t.sent(ms(5)))
        .iter()
        .map(|r| (r.0, r.2.hop_count, r.2.seqno))
        .collect()
}

/// Starved of p1 (T1 retracted): we ask T2, whose route is unfeasible,
/// for SRC's seqno 8.
fn starved_asking_t2() -> T {
    let mut t = T::tunnels(3);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 500)]);
    t.sent(ms(50)); // FD (7, 196): the route via T2 is unfeasible
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, INFINITY)]);
    let reqs = seqno_requests(&t.sent(ms(5)));
    assert_eq!(
        reqs.iter().map(|r| (r.0, r.2.seqno)).collect::<Vec<_>>(),
        vec![(T2, 8)]
    );
    t
}

/// [`starved_asking_t2`], then T3 offers a feasible route and is
/// selected while our request is pending.
fn starved_then_fed_by_t3() -> T {
    let mut t = starved_asking_t2();
    t.rx(IfaceId(3), "fe80::4", &[update(p1(), SRC, 7, 50)]);
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(IfaceId(3))));
    t.sent(ms(50));
    t
}

#[test]
fn a_pending_request_elsewhere_does_not_swallow_one_to_forward() {
    // Our own request went to T2, whose route we do not use: its answer
    // would never reach T1. T1's request goes on to our next hop, T3.
    let mut t = starved_then_fed_by_t3();
    t.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    assert_eq!(requests_sent(&mut t), vec![(IfaceId(3), 9, 8)]);
    assert_eq!(t.e.counters().duplicate_requests, 0);
}

#[test]
fn a_request_reaching_a_starved_node_goes_on_to_its_best_route_left() {
    // We lost p1 a moment ago and asked T2; T3's request for the same
    // seqno arrives now (its route went through the same dead node): it
    // joins ours, and the answer from T2 is relayed to T3.
    let mut t = starved_asking_t2();
    assert!(t.selected(p1()).is_none());
    t.rx(IfaceId(3), "fe80::4", &[seqno_request(p1(), SRC, 8, 10)]);
    assert!(seqno_requests(&t.sent(ms(5))).is_empty());
    assert_eq!(t.e.counters().duplicate_requests, 1);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 8, 500)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert!(
        ups.iter()
            .any(|u| u.0 == IfaceId(3) && u.1.seqno == 8 && u.1.metric < INFINITY),
        "{ups:?}"
    );
}

#[test]
fn a_request_joining_our_own_gets_the_answer_relayed() {
    // T2's route becomes feasible and selected: our pending request to T2
    // is where T1's would go, so T1's is redundant, but its answer must
    // still reach T1 at once.
    let mut t = starved_asking_t2();
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 50)]);
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(T2)));
    t.sent(ms(50));
    t.rx(IfaceId(3), "fe80::4", &[seqno_request(p1(), SRC, 8, 10)]);
    assert!(seqno_requests(&t.sent(ms(5))).is_empty());
    assert_eq!(t.e.counters().duplicate_requests, 1);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 8, 50)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert!(
        ups.iter().any(|u| u.0 == IfaceId(3) && u.1.seqno == 8),
        "{ups:?}"
    );
}

#[test]
fn a_forwarded_request_goes_on_when_its_next_hop_is_lost() {
    // Selected via T2, a feasible alternative via T3. T1's request goes
    // to T2, which is dead though we do not know yet; when T2's tunnel
    // goes down, the request goes to T3 at once, not after T1's resend.
    let mut t = T::tunnels(3);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 100)]);
    t.rx(IfaceId(3), "fe80::4", &[update(p1(), SRC, 7, 150)]);
    t.sent(ms(50));
    t.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    assert_eq!(requests_sent(&mut t), vec![(T2, 9, 8)]);
    let now = t.now;
    t.e.interface_down(T2, now).unwrap();
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(IfaceId(3))));
    assert_eq!(requests_sent(&mut t), vec![(IfaceId(3), 9, 8)]);
    // Its answer is relayed to T1.
    t.rx(IfaceId(3), "fe80::4", &[update(p1(), SRC, 8, 150)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert!(ups.iter().any(|u| u.0 == T1 && u.1.seqno == 8), "{ups:?}");
}

#[test]
fn route_request_answers() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    t.sent(ms(50));
    // Specific request for something we do not have: a retraction.
    let q = |p| {
        Message::RouteRequest(RouteRequestRepr {
            prefix: Some(p),
            proof_wanted: false,
        })
    };
    t.rx(T1, "fe80::2", &[q(pfx("fd00:bb::/64"))]);
    let ups = updates_for(&t.sent(ms(20)), pfx("fd00:bb::/64"));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].1.metric, INFINITY);
    // Wildcard: full dump and an IHU.
    t.rx(
        T1,
        "fe80::2",
        &[Message::RouteRequest(RouteRequestRepr {
            prefix: None,
            proof_wanted: false,
        })],
    );
    let sent = t.sent(ms(20));
    assert_eq!(updates_for(&sent, pfx("fd00:aa::/64")).len(), 1);
    assert!(sent.iter().any(|(_, _, m)| matches!(m, Message::Ihu(_))));
}

#[test]
fn seqno_request_for_a_prefix_we_do_not_announce_is_ignored() {
    // RFC 8966 §3.8.1.2: no selected route (or an infinite one), nothing to
    // answer and nothing to forward.
    let mut t = T::tunnels(2);
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 10)]);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, INFINITY)]);
    t.sent(ms(50));
    t.rx(T2, "fe80::3", &[seqno_request(p1(), SRC, 8, 10)]);
    let sent = t.sent(ms(5));
    assert!(seqno_requests(&sent).is_empty(), "{sent:?}");
    assert!(updates_for(&sent, p1()).is_empty(), "{sent:?}");
    assert_eq!(t.e.counters().seqno_requests, 2);
}

#[test]
fn seqno_request_falls_back_to_an_unfeasible_successor() {
    // Selected through the requester (T1); the only other route (T2) is
    // unfeasible: the request still goes there (a SHOULD of §3.8.1.2).
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50)); // FD (7, 196)
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 500)]);
    let r = t.e.routes(t.now);
    assert!(r.iter().any(|r| r.iface == Some(T2) && !r.feasible));
    t.sent(ms(50));
    t.rx(T1, "fe80::2", &[seqno_request(p1(), SRC, 8, 10)]);
    assert_eq!(requests_sent(&mut t), vec![(T2, 9, 8)]);
}

#[test]
fn ack_request_is_answered_within_its_interval() {
    // RFC 8966 §3.3: an Acknowledgment echoing the opaque value, sent
    // before the requested interval is over (unicast on a LAN).
    let mut t = T::new();
    let me = addr("fe80::1");
    t.e.add_interface(LAN, InterfaceKind::Lan { address: me }, 1400, t.now)
        .unwrap();
    t.sent(ms(5));
    let req = Message::AckRequest(crate::wire::AckRequestRepr {
        opaque: 0xbeef,
        interval: ms(300),
    });
    t.rx(LAN, "fe80::2", &[hello(1, None), req]);
    let start = t.now;
    let mut acked = None;
    while t.now < start + ms(300) && acked.is_none() {
        acked = t
            .sent(ms(10))
            .into_iter()
            .find(|(_, _, m)| *m == Message::Ack(crate::wire::AckRepr { opaque: 0xbeef }))
            .map(|(_, dst, _)| (dst, t.now - start));
    }
    let (dst, after) = acked.expect("no Ack");
    assert_eq!(dst, Some(addr("fe80::2")));
    assert!(after <= ms(300), "{after:?}");
}

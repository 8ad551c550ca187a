//! Routes: updates, feasibility and FDs, selection, triggered updates,
//! expiry, retractions, link-down.

use super::*;
use crate::engine::*;
use crate::wire::{Message, RouteRequestRepr, UpdateRepr};

#[test]
fn learned_route_is_selected_and_fed_to_the_fib() {
    let mut t = T::tunnels(1);
    let _ = t.e.poll_event();
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    let r = t.selected(p1()).unwrap();
    assert_eq!(
        (r.metric, r.refmetric, r.seqno, r.iface),
        (196, 100, 7, Some(T1))
    );
    assert_eq!(
        t.e.fib(),
        vec![FibEntry {
            prefix: p1(),
            iface: T1,
            next_hop: addr("fe80::2")
        }]
    );
    assert!(matches!(t.e.poll_event(), Some(Event::FibChanged(_))));
    assert_eq!(t.e.destinations_per_interface()[&T1], 1);
}

#[test]
fn fd_is_set_when_sending_and_blocks_worse_routes() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    let sent = t.sent(ms(50));
    // Announced on T2 only (split horizon on tunnels), with metric 196.
    let ups = updates_for(&sent, p1());
    assert_eq!(ups.iter().map(|u| u.0).collect::<Vec<_>>(), vec![T2]);
    assert_eq!(ups[0].1.metric, 196);
    // Now FD = (7, 196): the same source through T2 at refmetric 196 is
    // unfeasible, 195 would be feasible.
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 196)]);
    let r = t.e.routes(t.now);
    let via2 = r.iter().find(|r| r.iface == Some(T2)).unwrap();
    assert!(!via2.feasible && !via2.selected);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 195)]);
    let via2 =
        t.e.routes(t.now)
            .into_iter()
            .find(|r| r.iface == Some(T2))
            .unwrap();
    assert!(via2.feasible);
}

#[test]
fn unfeasible_update_unselects_a_route_from_another_source() {
    let mut t = T::tunnels(2);
    // Announce SRC2 once so that we hold an FD for it.
    t.rx(T2, "fe80::3", &[update(p1(), SRC2, 3, 50)]);
    t.sent(ms(50));
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 10)]);
    t.advance(secs(10)); // let hysteresis allow the better route
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(T1)));
    // T1's neighbour switches to SRC2 with a metric above our FD for it.
    t.rx(T1, "fe80::2", &[update(p1(), SRC2, 3, 500)]);
    let sel = t.selected(p1()).unwrap();
    assert_eq!(sel.iface, Some(T2));
    assert!(sel.feasible);
}

#[test]
fn unfeasible_update_from_the_same_source_is_ignored_and_asks_for_a_seqno() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50)); // FD (7, 196)
    // The metric grows (RTT went up upstream): unfeasible, same source.
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 300)]);
    assert_eq!(t.e.counters().unfeasible_updates, 1);
    let sel = t.selected(p1()).unwrap();
    assert_eq!(sel.refmetric, 100, "the update was ignored");
    let reqs = seqno_requests(&t.sent(ms(5)));
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].0, reqs[0].2.seqno, reqs[0].2.router_id),
        (T1, 8, SRC)
    );
    // The source answers with seqno 8: feasible, accepted.
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 8, 300)]);
    assert_eq!(
        t.selected(p1()).map(|r| (r.seqno, r.refmetric)),
        Some((8, 300))
    );
}

#[test]
fn router_id_switch_is_urgent_and_resent() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50));
    t.rx(T1, "fe80::2", &[update(p1(), SRC2, 1, 100)]);
    // Out within the urgent delay, not the normal one.
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert_eq!(
        ups.iter().map(|u| (u.0, u.1.router_id)).collect::<Vec<_>>(),
        vec![(T2, Some(SRC2))]
    );
    // Resent after 2 s.
    assert_eq!(updates_for(&t.sent(secs(2)), p1()).len(), 1);
}

#[test]
fn triggered_updates_are_coalesced() {
    let mut t = T::tunnels(2);
    t.sent(ms(50));
    for m in [100, 90, 80] {
        t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, m)]);
        t.now += ms(1);
    }
    let ups = updates_for(&t.sent(ms(20)), p1());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].1.metric, 80 + 96);
}

#[test]
fn routes_expire_after_3_5_intervals_with_a_request_before() {
    let mut t = T::tunnels(1);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50));
    // Keep the neighbour alive with Hellos/IHUs but send no more updates.
    let mut seq = 2;
    let mut request_seen = None;
    let start = t.now;
    while t.now < start + secs(57) {
        let sent = t.sent(secs(1));
        if request_seen.is_none()
            && sent.iter().any(|(_, _, m)| {
                *m == Message::RouteRequest(RouteRequestRepr {
                    prefix: Some(p1()),
                    proof_wanted: false,
                })
            })
        {
            request_seen = Some(t.now - start);
        }
        t.rx(T1, "fe80::2", &[hello(seq, None), ihu(96)]);
        seq += 1;
    }
    // Request at 3 intervals (48 s), expiry at 3.5 (56 s).
    let at = request_seen.expect("route request before expiry");
    assert!(at >= secs(47) && at <= secs(49), "{at:?}");
    assert!(t.selected(p1()).is_none());
    assert!(t.e.fib().is_empty());
}

#[test]
fn interface_down_retracts_and_switches_without_timers() {
    let mut t = T::tunnels(3);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 150)]);
    t.rx(T1, "fe80::2", &[update(pfx("fd00:2::/64"), SRC2, 1, 100)]);
    t.sent(ms(50));
    let generation = t.e.fib_generation();
    t.e.interface_down(T1, t.now).unwrap();
    // Same instant: p1 now via T2, fd00:2:: gone.
    assert_eq!(t.selected(p1()).map(|r| r.iface), Some(Some(T2)));
    assert!(t.selected(pfx("fd00:2::/64")).is_none());
    assert!(t.e.fib_generation() > generation);
    assert!(t.e.neighbours().iter().all(|n| n.iface != T1));
    // Urgent retraction of fd00:2:: on the remaining interfaces.
    let ups = updates_for(&t.sent(ms(3)), pfx("fd00:2::/64"));
    assert!(!ups.is_empty() && ups.iter().all(|u| u.1.metric == INFINITY && u.0 != T1));
    assert!(t.e.interface_down(T1, t.now).is_err());
}

#[test]
fn bad_input_is_counted_and_dropped() {
    let mut t = T::tunnels(1);
    t.rx(
        T1,
        "fe80::2",
        &[
            update(pfx("ff02::/16"), SRC, 1, 10),
            update(pfx("fe80::/64"), SRC, 1, 10),
            update(pfx("fd00:aa::/64"), ME, 1, 10),
            Message::Update(UpdateRepr {
                prefix: Some(p1()),
                interval: secs(16),
                seqno: 1,
                metric: 10,
                router_id: None,
                next_hop: None,
                proof: None,
            }),
            Message::Update(UpdateRepr {
                prefix: None,
                interval: secs(16),
                seqno: 1,
                metric: 10,
                router_id: None,
                next_hop: None,
                proof: None,
            }),
            ihu(0),
        ],
    );
    let c = t.e.counters();
    assert_eq!(c.martian_updates, 2);
    assert_eq!(c.own_router_id, 1);
    assert_eq!(c.bad_updates, 2);
    assert_eq!(c.absurd_costs, 1);
    assert_eq!(t.e.neighbours()[0].cost, 1);
    assert!(t.e.routes(t.now).is_empty());
    // A replayed old Hello resets the history and is counted.
    t.rx(T1, "fe80::2", &[hello(40000, None)]);
    assert_eq!(t.e.counters().hello_resets, 1);
    // Unknown interface, second neighbour on a tunnel.
    t.e.handle_messages(IfaceId(77), addr("fe80::2"), &[hello(1, None)], t.now);
    t.rx(T1, "fe80::9", &[hello(1, None)]);
    assert_eq!(t.e.counters().unknown_interface, 1);
    assert_eq!(t.e.counters().neighbour_limit, 1);
}

#[test]
fn wildcard_retraction_drops_all_routes_of_the_neighbour() {
    let mut t = T::tunnels(1);
    t.rx(
        T1,
        "fe80::2",
        &[
            update(p1(), SRC, 7, 100),
            update(pfx("fd00:2::/64"), SRC, 7, 100),
        ],
    );
    assert_eq!(t.e.fib().len(), 2);
    t.rx(
        T1,
        "fe80::2",
        &[Message::Update(UpdateRepr {
            prefix: None,
            interval: secs(16),
            seqno: 7,
            metric: INFINITY,
            router_id: None,
            next_hop: None,
            proof: None,
        })],
    );
    assert!(t.e.fib().is_empty());
}

#[test]
fn removing_an_xroute_retracts_it() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    t.sent(ms(50));
    t.e.remove_xroute(pfx("fd00:aa::/64"), t.now);
    let ups = updates_for(&t.sent(ms(3)), pfx("fd00:aa::/64"));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].1.metric, INFINITY);
    assert_eq!(
        updates_for(&t.sent(secs(2)), pfx("fd00:aa::/64")).len(),
        1,
        "resent"
    );
}

#[test]
fn source_entries_are_garbage_collected() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50));
    assert!(t.e.sources.get(p1(), SRC, t.now).is_some());
    t.e.interface_down(T1, t.now).unwrap();
    t.sent(secs(181));
    assert!(t.e.sources.get(p1(), SRC, t.now).is_none());
}

#[test]
fn ipv4_routes_go_through_ipv6_next_hops() {
    let mut t = T::tunnels(2);
    let v4 = pfx("10.1.0.0/24");
    t.e.add_xroute(pfx("10.9.0.0/24"), 0, t.now).unwrap();
    // Heard as v4-via-v6 (AE 4, no Next Hop): the sender is the next hop.
    t.rx(T1, "fe80::2", &[update(v4, SRC, 7, 100)]);
    assert_eq!(
        t.e.fib(),
        vec![FibEntry {
            prefix: v4,
            iface: T1,
            next_hop: addr("fe80::2")
        }]
    );
    // With an IPv4 next hop (AE 1 after a Next Hop TLV) it is kept as is.
    let mut via_v4 = update(pfx("10.2.0.0/24"), SRC2, 3, 100);
    if let Message::Update(u) = &mut via_v4 {
        u.next_hop = Some(addr("192.0.2.1"));
    }
    t.rx(T2, "fe80::3", &[via_v4]);
    assert!(t.e.fib().iter().any(|e| e.prefix == pfx("10.2.0.0/24")
        && e.iface == T2
        && e.next_hop == addr("192.0.2.1")));
    // Ours and the relayed one go out as AE 4 (RFC 9229) with no Next Hop
    // TLV: our link-local address is the next hop.
    t.now += ms(50);
    let mut ae4 = Vec::new();
    while let Some(tx) = t.e.poll_transmit(t.now) {
        for d in crate::wire::parse_packet(&tx.bytes).unwrap().decode() {
            assert!(!matches!(d.result, Ok(crate::wire::Element::NextHop(_))));
            if let (Ok(crate::wire::Element::Message(Message::Update(u))), Some(p)) =
                (&d.result, d.prefix)
                && u.metric < INFINITY
                && p.addr().is_ipv4()
            {
                ae4.push((tx.iface, p, d.bytes[2]));
            }
        }
    }
    assert!(ae4.contains(&(T2, v4, 4)), "{ae4:?}");
    assert!(ae4.contains(&(T1, pfx("10.9.0.0/24"), 4)), "{ae4:?}");
    assert!(ae4.iter().all(|(_, _, ae)| *ae == 4), "{ae4:?}");
}

#[test]
fn periodic_full_dump_every_update_interval() {
    // RFC 8966 §3.7.1: everything we announce, on every interface, at
    // jittered intervals never longer than the one announced (16 s).
    let mut t = T::tunnels(2);
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(secs(1));
    let mut dumps: Vec<(IfaceId, Instant)> = Vec::new();
    let mut learned = Vec::new();
    let start = t.now;
    let mut seq = 2;
    while t.now < start + secs(64) {
        seq += 1;
        t.rx(T1, "fe80::2", &[hello(seq, None), ihu(96)]);
        t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
        let at = t.now;
        for (iface, _, m) in t.sent(ms(500)) {
            match &m {
                Message::Update(u) if u.prefix == Some(pfx("fd00:aa::/64")) => {
                    dumps.push((iface, at));
                }
                Message::Update(u) if u.prefix == Some(p1()) && u.metric < INFINITY => {
                    learned.push(iface);
                }
                _ => {}
            }
        }
    }
    for iface in [T1, T2] {
        let at: Vec<Instant> = dumps.iter().filter(|d| d.0 == iface).map(|d| d.1).collect();
        assert!(at.len() >= 4, "{iface}: {} dumps in 64 s", at.len());
        for w in at.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= secs(11) && gap <= secs(17), "{iface}: {gap:?}");
        }
    }
    // Learned routes are in the dumps too, except back through T1.
    assert!(
        learned.len() >= 4 && learned.iter().all(|i| *i == T2),
        "{learned:?}"
    );
}

//! Behaviour tests at the message level (babel-notes §6 conformance list):
//! each drives one engine with decoded messages and inspects what it
//! decides to send, without the codec.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::output::Outgoing;
use super::*;
use crate::wire::{
    HelloRepr, IhuRepr, IhuTimestamp, Message, RouteRequestRepr, RouterId, SeqnoRequestRepr,
    UpdateRepr,
};

const ME: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 1]);
const SRC: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0x55]);
const SRC2: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0x66]);
const T1: IfaceId = IfaceId(1);
const T2: IfaceId = IfaceId(2);
const LAN: IfaceId = IfaceId(9);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn pfx(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn p1() -> IpNet {
    pfx("fd00:1::/64")
}

fn hello(seqno: u16, ts: Option<u32>) -> Message {
    Message::Hello(HelloRepr {
        unicast: false,
        seqno,
        interval: secs(4),
        timestamp: ts,
    })
}
fn ihu(rxcost: u16) -> Message {
    Message::Ihu(IhuRepr {
        rxcost,
        interval: secs(12),
        address: None,
        timestamp: None,
    })
}
fn update(prefix: IpNet, rid: RouterId, seqno: u16, metric: u16) -> Message {
    Message::Update(UpdateRepr {
        prefix: Some(prefix),
        interval: secs(16),
        seqno,
        metric,
        router_id: Some(rid),
        next_hop: None,
    })
}
fn seqno_request(prefix: IpNet, rid: RouterId, seqno: u16, hop_count: u8) -> Message {
    Message::SeqnoRequest(SeqnoRequestRepr {
        prefix,
        seqno,
        hop_count,
        router_id: rid,
    })
}

struct T {
    e: Engine,
    now: Instant,
}

impl T {
    fn new() -> T {
        let now = Instant::now();
        T {
            e: Engine::new(Config::default(), ME, 100, now).unwrap(),
            now,
        }
    }

    /// Tunnels T1, T2, ... (ids 1..=n), each with a neighbour fe80::2,
    /// fe80::3, ... that has sent Hello + IHU.
    fn tunnels(n: u32) -> T {
        let mut t = T::new();
        for i in 1..=n {
            t.tunnel(IfaceId(i), &format!("fe80::{}", i + 1));
        }
        t
    }

    /// A tunnel with a neighbour that has sent Hello + IHU.
    fn tunnel(&mut self, id: IfaceId, peer: &str) {
        self.e
            .add_interface(id, InterfaceKind::Tunnel, 1400, self.now)
            .unwrap();
        self.rx(id, peer, &[hello(1, None), ihu(96)]);
    }

    fn rx(&mut self, iface: IfaceId, from: &str, msgs: &[Message]) {
        self.e.handle_messages(iface, addr(from), msgs, self.now);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.e.handle_timeout(self.now);
    }

    /// Everything sent within `d` (timers run), grouped per destination.
    fn drain_for(&mut self, d: Duration) -> Vec<Outgoing> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            while let Some(o) = self.e.poll_messages(self.now) {
                out.push(o);
            }
            match self.e.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.e.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    fn sent(&mut self, d: Duration) -> Vec<(IfaceId, Option<IpAddr>, Message)> {
        self.drain_for(d)
            .into_iter()
            .flat_map(|o| o.messages.into_iter().map(move |m| (o.iface, o.dst, m)))
            .collect()
    }

    fn selected(&self, p: IpNet) -> Option<RouteInfo> {
        self.e
            .routes(self.now)
            .into_iter()
            .find(|r| r.prefix == p && r.selected && !r.local)
    }
}

fn updates_for(
    sent: &[(IfaceId, Option<IpAddr>, Message)],
    p: IpNet,
) -> Vec<(IfaceId, UpdateRepr)> {
    sent.iter()
        .filter_map(|(i, _, m)| match m {
            Message::Update(u) if u.prefix == Some(p) => Some((*i, *u)),
            _ => None,
        })
        .collect()
}

fn seqno_requests(
    sent: &[(IfaceId, Option<IpAddr>, Message)],
) -> Vec<(IfaceId, Option<IpAddr>, SeqnoRequestRepr)> {
    sent.iter()
        .filter_map(|(i, d, m)| match m {
            Message::SeqnoRequest(r) => Some((*i, *d, *r)),
            _ => None,
        })
        .collect()
}

#[test]
fn interface_up_sends_hello_and_wildcard_request_at_once() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.e.add_interface(T1, InterfaceKind::Tunnel, 1400, t.now)
        .unwrap();
    let sent = t.sent(ms(1));
    let kinds: Vec<_> = sent.iter().map(|(_, _, m)| m.clone()).collect();
    assert!(
        kinds
            .iter()
            .any(|m| matches!(m, Message::Hello(h) if !h.unicast && h.timestamp.is_some()))
    );
    assert!(kinds.contains(&Message::RouteRequest(RouteRequestRepr { prefix: None })));
    // Our prefix goes out at once too (it shares the Hello's packet).
    let ups = updates_for(&sent, pfx("fd00:aa::/64"));
    assert_eq!(ups.len(), 1);
    assert_eq!(
        (ups[0].1.metric, ups[0].1.seqno, ups[0].1.router_id),
        (0, 100, Some(ME))
    );
}

#[test]
fn tunnel_is_usable_after_one_hello_and_ihu() {
    let mut t = T::tunnels(1);
    let n = &t.e.neighbours()[0];
    assert_eq!((n.rxcost, n.txcost, n.cost), (96, 96, 96));
    // The new neighbour got an IHU and a wildcard request right away.
    let sent = t.sent(ms(5));
    assert!(
        sent.iter()
            .any(|(_, _, m)| matches!(m, Message::Ihu(i) if i.rxcost == 96 && i.address.is_none()))
    );
    assert!(
        sent.iter()
            .any(|(_, _, m)| *m == Message::RouteRequest(RouteRequestRepr { prefix: None }))
    );
}

#[test]
fn lan_needs_two_hellos_and_ignores_ihus_for_others() {
    let mut t = T::new();
    let me = addr("fe80::1");
    t.e.add_interface(LAN, InterfaceKind::Lan { address: me }, 1400, t.now)
        .unwrap();
    let other = Message::Ihu(IhuRepr {
        rxcost: 96,
        interval: secs(12),
        address: Some(addr("fe80::99")),
        timestamp: None,
    });
    t.rx(LAN, "fe80::2", &[hello(1, None), other]);
    assert_eq!(t.e.counters().ihu_not_for_us, 1);
    assert_eq!(t.e.neighbours()[0].txcost, INFINITY);
    let mine = Message::Ihu(IhuRepr {
        address: Some(me),
        ..match &ihu(96) {
            Message::Ihu(i) => *i,
            _ => unreachable!(),
        }
    });
    t.rx(LAN, "fe80::2", &[mine]);
    // One Hello is not enough on a LAN...
    assert_eq!(t.e.neighbours()[0].cost, INFINITY);
    t.rx(LAN, "fe80::2", &[hello(2, None)]);
    assert_eq!(t.e.neighbours()[0].cost, 96);
    // Our own multicast looped back is not a neighbour.
    t.rx(LAN, "fe80::1", &[hello(1, None)]);
    assert_eq!(t.e.counters().own_packets, 1);
    assert_eq!(t.e.neighbours().len(), 1);
    // ...and the IHUs we send carry the neighbour's address.
    let sent = t.sent(ms(5));
    assert!(
        sent.iter()
            .any(|(_, _, m)| matches!(m, Message::Ihu(i) if i.address == Some(addr("fe80::2"))))
    );
}

#[test]
fn rtt_from_timestamps_sets_the_penalty() {
    let mut t = T::new();
    t.e.add_interface(T1, InterfaceKind::Tunnel, 1400, t.now)
        .unwrap();
    // Our first Hello carries t1.
    let sent = t.sent(ms(1));
    let t1 = sent
        .iter()
        .find_map(|(_, _, m)| match m {
            Message::Hello(h) => h.timestamp,
            _ => None,
        })
        .unwrap();
    // 60 ms later the peer answers; it held our Hello for 10 ms.
    t.now += ms(60);
    let reply = Message::Ihu(IhuRepr {
        rxcost: 96,
        interval: secs(12),
        address: None,
        timestamp: Some(IhuTimestamp {
            origin: t1,
            receive: 5_000_000,
        }),
    });
    t.rx(T1, "fe80::2", &[hello(1, Some(5_010_000)), reply.clone()]);
    let n = &t.e.neighbours()[0];
    // The Hello left 1 ms into `sent`, so the sample is 61 - 10 = 51 ms,
    // doubled for a new neighbour: 102 ms.
    assert_eq!(n.rtt, Some(ms(102)));
    // Penalty 96 * (102 - 10) / 110 = 80.
    assert_eq!(n.rtt_penalty, 80);
    assert_eq!(n.cost, 96 + 80);
    // An IHU without a Hello timestamp in the same packet gives no sample.
    t.rx(T1, "fe80::2", &[reply]);
    assert_eq!(t.e.neighbours()[0].rtt, Some(ms(102)));
    // Our IHUs echo the peer's Hello timestamp, with a Hello alongside.
    let sent = t.sent(ms(5));
    let echo = sent.iter().find_map(|(_, _, m)| match m {
        Message::Ihu(i) => i.timestamp,
        _ => None,
    });
    assert_eq!(echo.map(|e| e.origin), Some(5_010_000));
}

#[test]
fn bogus_rtt_samples_are_rejected() {
    let mut t = T::tunnels(1);
    let now_ts = t.e.timestamp(t.now);
    // Origin in our future: local wait "negative".
    let bad = Message::Ihu(IhuRepr {
        rxcost: 96,
        interval: secs(12),
        address: None,
        timestamp: Some(IhuTimestamp {
            origin: now_ts.wrapping_add(1_000_000),
            receive: 10,
        }),
    });
    t.rx(T1, "fe80::2", &[hello(2, Some(20)), bad]);
    assert_eq!(t.e.counters().rtt_rejected, 1);
    assert_eq!(t.e.neighbours()[0].rtt, None);
}

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
fn seqno_request_for_our_prefix_bumps_once() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    t.sent(ms(50));
    let req = seqno_request(pfx("fd00:aa::/64"), ME, 101, 5);
    t.rx(T1, "fe80::2", std::slice::from_ref(&req));
    t.rx(T1, "fe80::2", &[req]);
    assert_eq!(t.e.seqno(), 101);
    assert_eq!(t.e.counters().seqno_bumps, 1);
    let events: Vec<_> = std::iter::from_fn(|| t.e.poll_event()).collect();
    assert!(events.contains(&Event::SeqnoChanged(101)));
    let ups = updates_for(&t.sent(ms(5)), pfx("fd00:aa::/64"));
    assert_eq!(ups.last().map(|u| u.1.seqno), Some(101));
    // A request for an older seqno only gets an update.
    t.rx(
        T1,
        "fe80::2",
        &[seqno_request(pfx("fd00:aa::/64"), ME, 90, 5)],
    );
    assert_eq!(t.e.seqno(), 101);
    assert_eq!(updates_for(&t.sent(ms(5)), pfx("fd00:aa::/64")).len(), 1);
    // A request far ahead (we restarted and lost our seqno): jump to it at
    // once rather than one step per round trip.
    let far = seqno_request(pfx("fd00:aa::/64"), ME, 150, 5);
    t.rx(T1, "fe80::2", &[far]);
    assert_eq!(t.e.seqno(), 150);
    // A request for another router-id never touches our seqno.
    let other = seqno_request(pfx("fd00:aa::/64"), SRC, 9000, 5);
    t.rx(T1, "fe80::2", &[other]);
    assert_eq!(t.e.seqno(), 150);
}

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

#[test]
fn route_request_answers() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    t.sent(ms(50));
    // Specific request for something we do not have: a retraction.
    let q = |p| Message::RouteRequest(RouteRequestRepr { prefix: Some(p) });
    t.rx(T1, "fe80::2", &[q(pfx("fd00:bb::/64"))]);
    let ups = updates_for(&t.sent(ms(20)), pfx("fd00:bb::/64"));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].1.metric, INFINITY);
    // Wildcard: full dump and an IHU.
    t.rx(
        T1,
        "fe80::2",
        &[Message::RouteRequest(RouteRequestRepr { prefix: None })],
    );
    let sent = t.sent(ms(20));
    assert_eq!(updates_for(&sent, pfx("fd00:aa::/64")).len(), 1);
    assert!(sent.iter().any(|(_, _, m)| matches!(m, Message::Ihu(_))));
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
                *m == Message::RouteRequest(RouteRequestRepr { prefix: Some(p1()) })
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
fn dead_neighbour_is_flushed_by_missed_hellos() {
    let mut t = T::tunnels(1);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    // The tunnel stays up but the peer is silent: after 3 missed Hellos
    // the link cost is infinite and the route is gone.
    t.sent(secs(19));
    assert!(t.selected(p1()).is_none());
    t.sent(secs(70));
    assert!(t.e.neighbours().is_empty());
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
            }),
            Message::Update(UpdateRepr {
                prefix: None,
                interval: secs(16),
                seqno: 1,
                metric: 10,
                router_id: None,
                next_hop: None,
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
        })],
    );
    assert!(t.e.fib().is_empty());
}

#[test]
fn restart_with_lost_seqno_jumps_past_the_stale_one() {
    let mut t = T::new();
    t.e.add_xroute(pfx("fd00:aa::/64"), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    // A neighbour still announces our prefix with seqno 500 > 100.
    t.rx(T1, "fe80::2", &[update(pfx("fd00:aa::/64"), ME, 500, 96)]);
    assert_eq!(t.e.seqno(), 501);
    let events: Vec<_> = std::iter::from_fn(|| t.e.poll_event()).collect();
    assert!(events.contains(&Event::SeqnoChanged(501)));
    let ups = updates_for(&t.sent(ms(5)), pfx("fd00:aa::/64"));
    assert_eq!(ups.last().map(|u| u.1.seqno), Some(501));
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
fn api_misuse_is_an_error() {
    let now = Instant::now();
    assert!(Engine::new(Config::default(), RouterId([0; 8]), 0, now).is_err());
    assert!(Engine::new(Config::default(), RouterId([0xFF; 8]), 0, now).is_err());
    let mut e = Engine::new(Config::default(), ME, 0, now).unwrap();
    e.add_interface(T1, InterfaceKind::Tunnel, 1400, now)
        .unwrap();
    assert_eq!(
        e.add_interface(T1, InterfaceKind::Tunnel, 1400, now),
        Err(EngineError::DuplicateInterface(T1))
    );
    assert!(matches!(
        e.set_interface_budget(T1, 10),
        Err(EngineError::BudgetTooSmall { .. })
    ));
    assert!(e.add_xroute(p1(), INFINITY, now).is_err());
    let zero = Config {
        hello_interval: Duration::ZERO,
        ..Config::default()
    };
    assert!(matches!(
        Engine::new(zero, ME, 0, now),
        Err(EngineError::InvalidConfig(_))
    ));
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
fn packets_respect_the_interface_budget() {
    let mut t = T::tunnels(2);
    let ups: Vec<Message> = (0..60)
        .map(|i| update(pfx(&format!("fd00:9:{i:x}::/64")), SRC, 7, 100))
        .collect();
    t.rx(T1, "fe80::2", &ups);
    t.sent(ms(50));
    t.e.set_interface_budget(T2, 200).unwrap();
    t.rx(
        T2,
        "fe80::3",
        &[Message::RouteRequest(RouteRequestRepr { prefix: None })],
    );
    t.now += ms(20);
    let mut seen = 0;
    let mut packets = 0;
    while let Some(tx) = t.e.poll_transmit(t.now) {
        if tx.iface != T2 {
            continue;
        }
        packets += 1;
        assert!(tx.bytes.len() <= 200, "{} bytes", tx.bytes.len());
        let p = crate::wire::parse_packet(&tx.bytes).unwrap();
        seen += p
            .messages()
            .filter(|m| matches!(m, Ok(Message::Update(u)) if u.metric == 196))
            .count();
    }
    assert_eq!(
        seen, 60,
        "every route in the dump, split over {packets} packets"
    );
    assert!(packets >= 5);
    assert_eq!(t.e.counters().oversized_messages, 0);
}

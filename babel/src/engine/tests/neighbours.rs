//! Neighbours: Hello histories, IHU, RTT, link cost, interfaces.

use super::*;
use crate::engine::*;
use crate::wire::{IhuRepr, IhuTimestamp, Message, RouteRequestRepr, RouterId};

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
    assert!(kinds.contains(&Message::RouteRequest(RouteRequestRepr {
        prefix: None,
        proof_wanted: false
    })));
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
    assert!(sent.iter().any(|(_, _, m)| *m
        == Message::RouteRequest(RouteRequestRepr {
            prefix: None,
            proof_wanted: false
        })));
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
    // 60 ms after our first Hello the peer answers; it held it for 10 ms.
    let reply = t.tunnel_with_timestamped_ihu();
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
        &[Message::RouteRequest(RouteRequestRepr {
            prefix: None,
            proof_wanted: false,
        })],
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

#[test]
fn reconfigure_recosts_links_and_changes_the_advertised_intervals() {
    let mut t = T::new();
    let reply = t.tunnel_with_timestamped_ihu();
    t.rx(T1, "fe80::2", &[hello(1, Some(5_010_000)), reply]);
    assert_eq!(
        t.e.neighbours()[0].cost,
        96 + 80,
        "102 ms with babeld's tunnel"
    );
    // The network raises the RTT penalty and slows Hellos and updates.
    let d = Config::default();
    let new = Config {
        hello_interval: secs(8),
        ihu_interval: secs(24),
        update_interval: secs(32),
        tunnel: LinkParams {
            rtt: crate::metric::RttParams {
                max_penalty: 1000,
                max: ms(300),
                ..d.tunnel.rtt
            },
            ..d.tunnel
        },
        ..d.clone()
    };
    t.e.reconfigure(new.clone(), t.now).unwrap();
    // 1000 * (102 - 10) / 290 = 317: the existing link is costed again.
    let n = &t.e.neighbours()[0];
    assert_eq!(n.rtt_penalty, 317);
    assert_eq!(n.cost, 96 + 317);
    assert_eq!(t.e.config(), &new);
    // The next Hello and full dump say the new intervals.
    let sent = t.sent(secs(40));
    let hello_intervals: Vec<Duration> = sent
        .iter()
        .filter_map(|(_, _, m)| match m {
            Message::Hello(h) if !h.unicast => Some(h.interval),
            _ => None,
        })
        .collect();
    assert!(!hello_intervals.is_empty());
    assert!(
        hello_intervals.iter().all(|&i| i == secs(8)),
        "{hello_intervals:?}"
    );
    // Hellos 8 s apart (with jitter), not 4 s: at most 6 in 40 s.
    assert!(hello_intervals.len() <= 6, "{}", hello_intervals.len());
    // A new interface gets the new parameters too.
    t.e.add_interface(IfaceId(2), InterfaceKind::Tunnel, 1400, t.now)
        .unwrap();
    let sent = t.sent(ms(1));
    assert!(sent.iter().any(
        |(i, _, m)| *i == IfaceId(2) && matches!(m, Message::Hello(h) if h.interval == secs(8))
    ));
    // Fields that need state built at start are refused, nothing changes.
    let bad = Config {
        source_gc: secs(1),
        hello_interval: secs(2),
        ..new.clone()
    };
    assert!(matches!(
        t.e.reconfigure(bad, t.now),
        Err(EngineError::InvalidConfig(_))
    ));
    let zero = Config {
        hello_interval: Duration::ZERO,
        ..new.clone()
    };
    assert!(t.e.reconfigure(zero, t.now).is_err());
    assert_eq!(t.e.config(), &new);
}

#[test]
fn a_lan_has_many_neighbours_up_to_its_bound() {
    // RFC 8966 §3.2.4: neighbours are indexed by (interface, address), any
    // number per interface; ours are bounded by `max_neighbours`.
    let now = Instant::now();
    let config = Config {
        max_neighbours: 4,
        ..Config::default()
    };
    let mut e = Engine::new(config, ME, 1, now).unwrap();
    let me = addr("fe80::1");
    e.add_interface(LAN, InterfaceKind::Lan { address: me }, 1400, now)
        .unwrap();
    for k in 2..8 {
        e.handle_messages(LAN, addr(&format!("fe80::{k}")), &[hello(1, None)], now);
    }
    assert_eq!(e.neighbours().len(), 4);
    assert_eq!(e.counters().neighbour_limit, 2);
    // A tunnel is point-to-point: its IHUs carry no address (AE 0), which
    // only one neighbour can own; a second address is refused.
    e.add_interface(T1, InterfaceKind::Tunnel, 1400, now)
        .unwrap();
    e.handle_messages(T1, addr("fe80::a"), &[hello(1, None)], now);
    e.handle_messages(T1, addr("fe80::b"), &[hello(1, None)], now);
    assert_eq!(e.neighbours().iter().filter(|n| n.iface == T1).count(), 1);
    assert_eq!(e.counters().neighbour_limit, 3);
}

#[test]
fn once_everything_is_sent_the_next_deadline_is_in_the_future() {
    // The caller sleeps until poll_timeout: a deadline left at "now" after
    // the last packet was taken would wake it again for nothing, at every
    // burst (it did, once an interface had gone down).
    let mut t = T::tunnels(2);
    t.e.interface_down(T1, t.now).unwrap();
    for _ in 0..20 {
        let due = t.e.poll_timeout().unwrap();
        t.now = t.now.max(due);
        t.e.handle_timeout(t.now);
        let mut packets = 0;
        while t.e.poll_transmit(t.now).is_some() {
            packets += 1;
        }
        assert!(
            t.e.poll_timeout().unwrap() > t.now,
            "after {packets} packets"
        );
    }
    assert!(t.e.counters().packets_sent > 0);
}

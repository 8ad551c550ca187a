//! Our own seqno: echoes leave it alone, a seqno request moves it by one,
//! an Update proving we lost it makes us catch up, and a router that hears
//! a source behind its FD tells it.

use super::*;
use crate::engine::*;
use crate::wire::Message;

fn ours() -> IpNet {
    pfx("fd00:aa::/64")
}

/// An engine (seqno 100) originating `ours()` with one tunnel up.
fn origin() -> T {
    let mut t = T::new();
    t.e.add_xroute(ours(), 0, t.now).unwrap();
    t.tunnel(T1, "fe80::2");
    t.sent(ms(50));
    let _: Vec<_> = std::iter::from_fn(|| t.e.poll_event()).collect();
    t
}

fn seqno_events(t: &mut T) -> Vec<u16> {
    std::iter::from_fn(|| t.e.poll_event())
        .filter_map(|e| match e {
            Event::SeqnoChanged(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn seqno_echo_of_our_own_route_is_ignored() {
    let mut t = origin();
    // A neighbour without split horizon sends our prefix back: at our
    // seqno, at an older one, retracted.
    t.rx(T1, "fe80::2", &[update(ours(), ME, 100, 96)]);
    t.rx(T1, "fe80::2", &[update(ours(), ME, 99, 192)]);
    t.rx(T1, "fe80::2", &[update(ours(), ME, 100, INFINITY)]);
    assert_eq!(t.e.seqno(), 100);
    assert!(seqno_events(&mut t).is_empty());
    let c = t.e.counters();
    assert_eq!(
        (c.own_router_id, c.seqno_catch_ups, c.seqno_bumps),
        (3, 0, 0)
    );
    // Nothing urgent goes out in answer, and no route to our prefix is kept.
    assert!(updates_for(&t.sent(ms(5)), ours()).is_empty());
    assert!(t.e.routes(t.now).iter().all(|r| r.local));
    // The same on a LAN, where echoes are the rule (no split horizon).
    let me = addr("fe80::1");
    t.e.add_interface(LAN, InterfaceKind::Lan { address: me }, 1400, t.now)
        .unwrap();
    t.rx(
        LAN,
        "fe80::9",
        &[hello(1, None), update(ours(), ME, 100, 96)],
    );
    assert_eq!(t.e.seqno(), 100);
}

#[test]
fn seqno_request_moves_our_seqno_by_exactly_one() {
    let mut t = origin();
    let req = |s| seqno_request(ours(), ME, s, 5);
    // The usual request, for the next seqno, and its resend.
    t.rx(T1, "fe80::2", &[req(101)]);
    t.rx(T1, "fe80::2", &[req(101)]);
    assert_eq!(t.e.seqno(), 101);
    assert_eq!(seqno_events(&mut t), vec![101]);
    let ups = updates_for(&t.sent(ms(5)), ours());
    assert_eq!(ups.last().map(|u| u.1.seqno), Some(101));
    // A request far ahead (the requester's FD is from before a restart
    // that lost our seqno) still moves it by one only (RFC 8966 §3.8.1.2),
    // and not before a second has passed since the last bump: a flood of
    // requests moves our seqno once a second at most.
    t.rx(T1, "fe80::2", &[req(150)]);
    t.rx(T1, "fe80::2", &[req(150)]);
    assert_eq!(t.e.seqno(), 101);
    assert_eq!(t.e.counters().bumps_deferred, 2);
    let ups = updates_for(&t.sent(ms(900)), ours());
    assert!(ups.iter().all(|u| u.1.seqno == 101), "{ups:?}");
    let ups = updates_for(&t.sent(ms(200)), ours());
    assert_eq!(t.e.seqno(), 102);
    assert_eq!(seqno_events(&mut t), vec![102]);
    assert_eq!(ups.last().map(|u| u.1.seqno), Some(102));
    // An older seqno, or another router-id: an update, no bump.
    t.rx(T1, "fe80::2", &[req(90)]);
    t.rx(T1, "fe80::2", &[seqno_request(ours(), SRC, 9000, 5)]);
    assert_eq!(t.e.seqno(), 102);
    assert_eq!(updates_for(&t.sent(ms(5)), ours()).len(), 1);
    assert_eq!(t.e.counters().seqno_bumps, 2);
}

#[test]
fn seqno_newer_than_ours_in_an_update_means_we_lost_it() {
    let mut t = origin();
    t.e.add_xroute(pfx("fd00:ab::/64"), 0, t.now).unwrap();
    t.sent(ms(50));
    // A neighbour still holds our route from before a restart, at 500.
    t.rx(T1, "fe80::2", &[update(ours(), ME, 500, 96)]);
    assert_eq!(t.e.seqno(), 501);
    assert_eq!(seqno_events(&mut t), vec![501]);
    assert_eq!(t.e.counters().seqno_catch_ups, 1);
    // Every prefix of ours goes out urgently with the new seqno.
    let sent = t.sent(ms(3));
    for p in [ours(), pfx("fd00:ab::/64")] {
        let ups = updates_for(&sent, p);
        assert_eq!(ups.iter().map(|u| u.1.seqno).collect::<Vec<_>>(), [501]);
    }
    // A retraction carrying our router-id says the same (the catch-up
    // hint of a router that has no route left).
    t.rx(T1, "fe80::2", &[update(ours(), ME, 700, INFINITY)]);
    assert_eq!(t.e.seqno(), 701);
    // Our router-id on a prefix we do not originate proves nothing.
    t.rx(T1, "fe80::2", &[update(pfx("fd00:bb::/64"), ME, 9000, 96)]);
    assert_eq!(t.e.seqno(), 701);
    // 32768 ahead is not newer (RFC 8966 §3.2.1).
    t.rx(T1, "fe80::2", &[update(ours(), ME, 701 + 32768, 96)]);
    assert_eq!(t.e.seqno(), 701);
}

#[test]
fn seqno_catch_up_hint_tells_a_source_behind_our_fd() {
    let mut t = T::tunnels(2);
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 7, 100)]);
    t.sent(ms(50)); // announced on T2: FD (7, 196)

    // SRC comes back on T1 at seqno 3. Our selected route is through T1,
    // so split horizon keeps us from announcing it there: the hint is a
    // retraction carrying SRC and our FD's seqno, before the seqno request.
    t.rx(T1, "fe80::2", &[update(p1(), SRC, 3, 0)]);
    assert_eq!(t.e.counters().catch_up_hints, 1);
    let sent = t.sent(ms(5));
    let on_t1: Vec<&Message> = sent
        .iter()
        .filter(|(i, _, _)| *i == T1)
        .map(|(_, _, m)| m)
        .collect();
    let hint = on_t1
        .iter()
        .position(|m| matches!(m, Message::Update(u) if u.prefix == Some(p1())))
        .expect("hint");
    let Message::Update(u) = on_t1[hint] else {
        unreachable!()
    };
    assert_eq!(
        (u.router_id, u.seqno, u.metric),
        (Some(SRC), 7, INFINITY),
        "{on_t1:?}"
    );
    let request = on_t1
        .iter()
        .position(|m| matches!(m, Message::SeqnoRequest(r) if r.seqno == 8))
        .expect("seqno request");
    assert!(hint < request);

    // Through T2 instead, where we do announce our route: the hint is our
    // route itself, urgently.
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 3, 0)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert_eq!(
        ups.iter()
            .map(|u| (u.0, u.1.router_id, u.1.seqno, u.1.metric))
            .collect::<Vec<_>>(),
        [(T2, Some(SRC), 7, 196)]
    );

    // No route left at all: a retraction carrying the FD again.
    t.e.interface_down(T1, t.now).unwrap();
    t.sent(ms(50));
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 4, 0)]);
    let ups = updates_for(&t.sent(ms(3)), p1());
    assert!(
        ups.iter()
            .any(|u| u.0 == T2 && u.1.router_id == Some(SRC) && u.1.seqno == 7),
        "{ups:?}"
    );
    assert_eq!(t.e.counters().catch_up_hints, 3);
    // A worse metric at the FD's seqno is no sign of a lost seqno.
    t.rx(T2, "fe80::3", &[update(p1(), SRC, 7, 300)]);
    assert_eq!(t.e.counters().catch_up_hints, 3);
}

#[test]
fn seqno_restart_without_it_catches_up_in_one_round_trip() {
    // Two engines on a tunnel: B learns A's prefix, relays it to C (so it
    // holds an FD), then A restarts 1000 seqnos behind.
    let now = Instant::now();
    let a_id = RouterId([2, 0, 0, 0, 0, 0, 0, 0xA]);
    let mut a = Engine::new(Config::default(), a_id, 5000, now).unwrap();
    let mut b = Engine::new(Config::default(), ME, 1, now).unwrap();
    a.add_xroute(ours(), 0, now).unwrap();
    a.add_interface(T1, InterfaceKind::Tunnel, 1400, now)
        .unwrap();
    b.add_interface(T1, InterfaceKind::Tunnel, 1400, now)
        .unwrap();
    b.add_interface(T2, InterfaceKind::Tunnel, 1400, now)
        .unwrap();
    let mut pair = Pair { a, b, now };
    pair.run(ms(200));
    assert_eq!(pair.b.fib().len(), 1);
    // The restart: B sees the tunnel close, A comes back at seqno 4000.
    pair.b.interface_down(T1, pair.now).unwrap();
    pair.a = Engine::new(Config::default(), a_id, 4000, pair.now).unwrap();
    pair.a.add_xroute(ours(), 0, pair.now).unwrap();
    pair.a
        .add_interface(T1, InterfaceKind::Tunnel, 1400, pair.now)
        .unwrap();
    pair.b
        .add_interface(T1, InterfaceKind::Tunnel, 1400, pair.now)
        .unwrap();
    // One round trip (1 ms each way here) plus the urgent delays.
    pair.run(ms(20));
    assert_eq!(pair.a.seqno(), 5001);
    assert_eq!(pair.b.fib().len(), 1, "{:?}", pair.b.routes(pair.now));
    assert_eq!(pair.a.counters().seqno_catch_ups, 1);
}

/// Two engines joined by tunnel `T1`, packets delivered after 1 ms.
struct Pair {
    a: Engine,
    b: Engine,
    now: Instant,
}

impl Pair {
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut in_flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
        while self.now < end {
            self.now += ms(1);
            let now = self.now;
            for (at, to_b, bytes) in std::mem::take(&mut in_flight) {
                if at > now {
                    in_flight.push((at, to_b, bytes));
                } else if to_b {
                    self.b.handle_packet(T1, addr("fe80::a"), &bytes, now);
                } else {
                    self.a.handle_packet(T1, addr("fe80::b"), &bytes, now);
                }
            }
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            while let Some(t) = self.a.poll_transmit(now) {
                in_flight.push((now + ms(1), true, t.bytes));
            }
            while let Some(t) = self.b.poll_transmit(now) {
                if t.iface == T1 {
                    in_flight.push((now + ms(1), false, t.bytes));
                }
            }
        }
    }
}

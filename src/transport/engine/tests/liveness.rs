//! Liveness through real QUIC exchanges: keep-alives only on silent
//! tunnels, suspicion of a cut tunnel, its return, the idle timeout.

use super::*;

fn silent_or_heard(e: &TunnelEvent) -> Option<TunnelEvent> {
    matches!(e, TunnelEvent::Silent { .. } | TunnelEvent::Heard { .. }).then(|| e.clone())
}

#[test]
fn an_idle_tunnel_costs_one_keep_alive_and_its_ack_per_interval() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    net.run_for(1_000 * MS);
    let sent_before = net.nodes[0].sent + net.nodes[1].sent;
    let pings_before = net.nodes[0].engine.frame_stats().keep_alives
        + net.nodes[1].engine.frame_stats().keep_alives;
    net.run_for(10_000 * MS);
    let pings = net.nodes[0].engine.frame_stats().keep_alives
        + net.nodes[1].engine.frame_stats().keep_alives
        - pings_before;
    let sent = net.nodes[0].sent + net.nodes[1].sent - sent_before;
    // One side's keep-alive makes both sides heard: about one PING per
    // 100-150 ms interval between the two nodes (not one per node), and
    // one acknowledgement each.
    assert!((60..=110).contains(&pings), "{pings} keep-alives in 10 s");
    assert!(
        sent as u64 <= 2 * pings + 10,
        "{sent} datagrams for {pings} keep-alives"
    );
    for n in &mut net.nodes {
        let ev: Vec<_> = n
            .take_events()
            .into_iter()
            .filter_map(|e| silent_or_heard(&e))
            .collect();
        assert!(ev.is_empty(), "{ev:?}");
    }
}

#[test]
fn an_idle_tunnel_costs_three_wake_ups_per_keep_alive_all_from_the_dialler() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    net.run_for(1_000 * MS);
    let pings = |net: &Net, i: usize| net.nodes[i].engine.frame_stats().keep_alives as usize;
    let wakes = |net: &Net| -> usize { net.nodes.iter().map(|n| n.wakes).sum() };
    let (dialler, answerer, wakes_before) = (pings(&net, 0), pings(&net, 1), wakes(&net));
    net.run_for(10_000 * MS);
    let (dialler, answerer) = (pings(&net, 0) - dialler, pings(&net, 1) - answerer);
    let wakes = wakes(&net) - wakes_before;
    // The dialler leads: one PING per 100 ms interval (on the
    // keep-alive grid), none from the other side while they arrive.
    assert!(
        (70..=100).contains(&dialler),
        "{dialler} keep-alives in 10 s"
    );
    assert_eq!(answerer, 0, "the answering side pings too");
    // Per keep-alive: the dialler's check, the receipt at the peer (which
    // acknowledges at once, not after its ACK delay), the receipt of the
    // acknowledgement; no check that finds nothing to do.
    assert!(
        wakes <= 3 * dialler + 10,
        "{wakes} wake-ups for {dialler} keep-alives"
    );
}

#[test]
fn a_hub_hears_its_idle_tunnels_in_a_few_wake_ups_per_interval_not_one_per_tunnel() {
    // Node 0 dials nodes 1-3 and is dialled by 4-6; the tunnels come up
    // at scattered instants. Keep-alives leave on the shared keep-alive
    // grid all the same, so the hub wakes to send its PINGs, once more
    // when its peers' PINGs arrive, once more for the answers to its own.
    let mut net = Net::new(7);
    for k in 1..=6_u32 {
        let (peer, tunnel) = (k as usize, u64::from(k));
        if k <= 3 {
            net.connect_via(0, peer, (tunnel, NextHopId(k)), (1, NextHopId(1)));
        } else {
            net.connect_via(peer, 0, (1, NextHopId(1)), (tunnel, NextHopId(k)));
        }
        net.run_for(17 * k * MS);
    }
    net.run_for(1_000 * MS);
    let before = net.nodes[0].wakes;
    net.run_for(10_000 * MS);
    let wakes = net.nodes[0].wakes - before;
    // 100 keep-alive intervals in 10 s.
    assert!(
        wakes <= 3 * 100 + 10,
        "{wakes} wake-ups of the hub in 10 s for 6 idle tunnels"
    );
}

#[test]
fn a_busy_tunnel_sends_no_keep_alive() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    let before = net.nodes[0].engine.frame_stats().keep_alives;
    // A packet every 20 ms from a to b: b acknowledges, both are heard.
    for _ in 0..250 {
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), ipv6(a, b, 200, 0))
            .unwrap();
        net.run_for(20 * MS);
    }
    assert_eq!(net.nodes[0].engine.frame_stats().keep_alives, before);
    assert_eq!(net.nodes[1].engine.frame_stats().keep_alives, 0);
}

#[test]
fn a_cut_tunnel_is_suspected_then_heard_again_then_closed_after_the_idle_timeout() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 2);
    net.run_for(500 * MS);
    net.nodes[1].cut = true;
    let cut_at = net.now;
    let silent = net.wait_event(0, 2_000 * MS, |e| match e {
        TunnelEvent::Silent { tunnel, silent_for } => Some((*tunnel, *silent_for)),
        _ => None,
    });
    let took = net.now - cut_at;
    assert_eq!(silent.0, TunnelId(1));
    // Suspect time 300 ms + two RTTs, on the 25 ms grid, after the last
    // packet heard (up to a keep-alive interval and a round trip before
    // the cut).
    assert!(
        took >= 150 * MS && took <= 450 * MS,
        "suspected {took:?} after the cut"
    );
    assert!(silent.1 >= 300 * MS, "{:?}", silent.1);
    // Back within the idle timeout: heard again at the first keep-alive.
    net.run_for(300 * MS);
    net.nodes[1].cut = false;
    let back_at = net.now;
    let heard = net.wait_event(0, 1_000 * MS, |e| match e {
        TunnelEvent::Heard { tunnel } => Some(*tunnel),
        _ => None,
    });
    assert_eq!(heard, TunnelId(1));
    assert!(
        net.now - back_at <= 150 * MS,
        "heard {:?} after",
        net.now - back_at
    );
    // Cut for good: closed at the idle timeout, on both sides.
    net.nodes[1].cut = true;
    let cut_at = net.now;
    let reason = net.wait_event(0, 5_000 * MS, |e| match e {
        TunnelEvent::Closed { tunnel, reason } if *tunnel == TunnelId(1) => Some(reason.clone()),
        _ => None,
    });
    let took = net.now - cut_at;
    assert!(
        took >= 2_000 * MS && took < 2_500 * MS,
        "closed {took:?} after the cut: {reason}"
    );
    net.wait_event(1, 1_000 * MS, |e| match e {
        TunnelEvent::Closed { tunnel, .. } if *tunnel == TunnelId(2) => Some(()),
        _ => None,
    });
    assert_eq!(
        net.nodes[0].engine.poll_timeout(),
        None,
        "nothing left to wake for"
    );
}

#[test]
fn a_node_without_tunnels_never_wakes() {
    let mut net = Net::new(2);
    assert_eq!(net.nodes[0].engine.poll_timeout(), None);
    net.connect(0, 1, 1, 1);
    assert!(net.nodes[0].engine.poll_timeout().is_some());
}

#[test]
fn forged_packets_to_our_connection_id_do_not_keep_a_dead_tunnel_heard() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    net.run_for(300 * MS);
    // A real datagram from node 1 to node 0: its header carries node 0's
    // connection id, so forgeries built from it reach the connection.
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    net.nodes[1]
        .engine
        .send_datagram(NextHopId(1), ipv6(b, a, 200, 0))
        .unwrap();
    net.flush(1);
    let (_, to, from, real) = net.flight.back().cloned().expect("a datagram in flight");
    assert_eq!(to, net.nodes[0].addr);
    net.run_for(50 * MS);
    // Node 1 dies; an attacker on the path keeps sending forgeries.
    net.nodes[1].cut = true;
    let cut = net.now;
    let mut forged = 0;
    let silent = loop {
        let mut f = real.clone();
        let n = f.len();
        f[n - 20..].iter_mut().for_each(|x| *x ^= 0xa5);
        let at = net.now + MS;
        net.flight.push_back((at, to, from, f));
        forged += 1;
        net.run_for(20 * MS);
        if let Some(e) = net.take_event(0, |e| match e {
            TunnelEvent::Silent { tunnel, .. } => Some(*tunnel),
            _ => None,
        }) {
            break e;
        }
        assert!(net.now - cut < 2_000 * MS, "never suspected");
    };
    assert_eq!(silent, TunnelId(1));
    assert!(forged >= 10, "{forged} forgeries");
    // Suspected on time: 300 ms, two round trips, the 25 ms grid.
    assert!(net.now - cut < 500 * MS, "after {:?}", net.now - cut);
    assert!(
        net.take_event(0, |e| matches!(e, TunnelEvent::Heard { .. }).then_some(()))
            .is_none(),
        "a forgery made it heard"
    );
}

//! The engine's bounds under floods: incoming handshakes NodeCore has not
//! answered ([`MAX_PENDING`]), events NodeCore has not taken
//! ([`MAX_EVENTS`]), packets the packet loop has not taken
//! ([`MAX_PACKETS`]), and the control stream of a peer that stops reading
//! ([`MAX_BACKLOG`]). Each is flooded past its bound: the excess is
//! refused or dropped and counted, and the engine keeps working.

use super::*;
use crate::transport::engine::stream::MAX_BACKLOG;
use crate::transport::engine::{MAX_EVENTS, MAX_PACKETS, MAX_PENDING};

fn incoming(events: &[TunnelEvent]) -> usize {
    (events.iter())
        .filter(|e| matches!(e, TunnelEvent::Incoming { .. }))
        .count()
}

fn failed_dials(events: &[TunnelEvent]) -> usize {
    (events.iter())
        .filter(|e| matches!(e, TunnelEvent::Dialled { result: Err(_), .. }))
        .count()
}

#[test]
fn a_handshake_flood_stops_at_max_pending_and_frees_itself() {
    let mut net = Net::new(3);
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    // Node 0 opens far more handshakes than node 1 keeps waiting for its
    // NodeCore, which answers none of them.
    let flood = MAX_PENDING + 64;
    for t in 1..=flood as u64 {
        net.cmd(0, dial(t, peer, vec![addr]));
    }
    net.run_for(500 * MS);
    let seen = incoming(&net.nodes[1].take_events());
    assert_eq!(seen, MAX_PENDING, "Incoming events while flooded");
    let refused = net.nodes[1].engine.stats().refused_handshakes;
    assert!(refused >= 64, "{refused} handshakes refused");
    assert!(
        failed_dials(&net.nodes[0].take_events()) >= 64,
        "the refused dials fail at once"
    );
    // Unanswered, they are closed after the handshake timeout: a node that
    // dials afterwards gets in.
    net.run_for(3_000 * MS);
    net.nodes[0].take_events();
    assert_eq!(net.nodes[1].engine.connections(), 0);
    net.connect(2, 1, 1, 1);
}

#[test]
fn a_babel_flood_nodecore_does_not_take_is_capped_and_state_changes_pass() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    net.nodes[1].take_events();
    net.nodes[1].held = true;
    let flood = MAX_EVENTS + 2_000;
    for k in 0..flood {
        let now = net.now;
        net.nodes[0].engine.handle_command(
            TunnelCmd::SendBabel {
                tunnel: TunnelId(1),
                bytes: babel(k as u8),
            },
            now,
        );
        if k % 200 == 0 {
            net.run_for(5 * MS);
        }
    }
    net.run_for(500 * MS);
    let dropped = net.nodes[1].engine.frame_stats().babel_dropped;
    assert!(dropped >= 1_000, "{dropped} Babel packets dropped");
    // The tunnel closes meanwhile: that event is kept, past the bound.
    net.cmd(
        0,
        TunnelCmd::Close {
            tunnel: TunnelId(1),
            code: close::DONE,
            reason: "done".into(),
        },
    );
    net.run_for(500 * MS);
    net.nodes[1].held = false;
    net.flush(1);
    let events = net.nodes[1].take_events();
    let babel = (events.iter())
        .filter(|e| matches!(e, TunnelEvent::Babel { .. }))
        .count();
    assert!(babel <= MAX_EVENTS, "{babel} Babel events queued");
    assert_eq!(babel as u64 + dropped, flood as u64, "each one counted");
    assert!(
        matches!(events.last(), Some(TunnelEvent::Closed { .. })),
        "the close is reported: {:?}",
        events.last()
    );
}

#[test]
fn a_packet_flood_the_packet_loop_does_not_take_is_capped() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    net.nodes[1].held = true;
    let flood = MAX_PACKETS + 1_000;
    let p = ipv6(a, b, 100, 0);
    for k in 0..flood {
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), p.clone())
            .unwrap();
        if k % 200 == 0 {
            net.run_for(5 * MS);
        }
    }
    net.run_for(500 * MS);
    let dropped = net.nodes[1].engine.frame_stats().packets_dropped;
    net.nodes[1].held = false;
    net.flush(1);
    let taken = std::mem::take(&mut net.nodes[1].packets).len();
    assert_eq!(taken, MAX_PACKETS);
    let sent_dropped = (net.nodes[0].engine.tunnel_info(TunnelId(1)))
        .unwrap()
        .link
        .tx_dropped;
    assert_eq!(
        taken as u64 + dropped + sent_dropped,
        flood as u64,
        "each one counted"
    );
    // And the tunnel still carries traffic.
    net.nodes[0].engine.send_datagram(NextHopId(1), p).unwrap();
    net.run_for(50 * MS);
    assert_eq!(net.nodes[1].packets.len(), 1);
}

#[test]
fn a_peer_that_stops_reading_its_control_stream_is_closed() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    net.nodes[1].take_events();
    // Node 1's NodeCore is so far behind that its engine stops reading the
    // control stream (QUIC flow control holds node 0 back).
    net.nodes[1].held = true;
    for k in 0..MAX_EVENTS as u32 {
        let now = net.now;
        net.nodes[0].engine.handle_command(
            TunnelCmd::SendBabel {
                tunnel: TunnelId(1),
                bytes: babel(k as u8),
            },
            now,
        );
        if k % 200 == 0 {
            net.run_for(5 * MS);
        }
    }
    net.run_for(200 * MS);
    // CRLs of 64 KiB: node 0 queues them until its backlog passes the
    // bound, then closes the tunnel rather than buffer more.
    let crl = Bytes::from(vec![0u8; 64 * 1024]);
    let mut closed = None;
    for k in 0..(MAX_BACKLOG / crl.len() + 64) {
        net.cmd(
            0,
            TunnelCmd::SendControl {
                tunnel: TunnelId(1),
                msg: Control::Crl(crl.clone()),
            },
        );
        net.run_for(5 * MS);
        closed = net.take_event(0, |e| match e {
            TunnelEvent::Closed { reason, .. } => Some((k, reason.clone())),
            _ => None,
        });
        if closed.is_some() {
            break;
        }
    }
    let (k, reason) = closed.expect("the tunnel is closed");
    assert!(reason.contains("backlog"), "{reason}");
    assert!(
        (k + 1) * crl.len() > MAX_BACKLOG,
        "closed after {} bytes",
        (k + 1) * crl.len()
    );
}

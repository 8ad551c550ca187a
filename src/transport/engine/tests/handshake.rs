//! Handshakes: mutual TLS, `Open`/`Accept`, refusals, wrong identities,
//! revoked certificates, unreachable addresses, commands out of turn.

use super::*;
use crate::tunnels::policy::{Failure, Refusal};

#[test]
fn a_dial_gives_both_sides_the_handshake() {
    let mut net = Net::new(2);
    let (dialled, incoming) = net.connect(0, 1, 10, 20);
    // The dialler sees the node it dialled, and its own address as seen.
    assert_eq!(dialled.peer, net.nodes[1].cert);
    assert_eq!(dialled.remote, net.nodes[1].addr);
    assert_eq!(dialled.observed, Some(net.nodes[0].addr));
    assert_eq!(dialled.peer_crl, 0);
    // The acceptor sees the dialler.
    assert_eq!(incoming.peer, net.nodes[0].cert);
    assert_eq!(incoming.remote, net.nodes[0].addr);
    assert_eq!(incoming.observed, None);
    // Two round trips of 10 ms (handshake, then Open/Accept).
    assert!(
        dialled.rtt >= 10 * MS && dialled.rtt < 30 * MS,
        "{:?}",
        dialled.rtt
    );
    // 1414-byte datagrams from the start (initial MTU 1452).
    assert!(
        dialled.max_datagram.is_some_and(|m| m >= 1414),
        "{dialled:?}"
    );
    assert_eq!(net.nodes[0].engine.stats().dials, 1);
    assert_eq!(net.nodes[1].engine.stats().accepted_handshakes, 1);
    assert_eq!(net.nodes[0].engine.connections(), 1);
}

#[test]
fn the_crl_numbers_cross_in_open_and_accept() {
    let mut net = Net::new(0);
    let crl = net.pki.crl(5, &[]);
    net.add(1, Some(crl));
    net.add(2, None);
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    net.cmd(0, dial(1, peer, vec![addr]));
    let (conn, incoming) = net.wait_incoming(1);
    assert_eq!(
        incoming.peer_crl, 5,
        "Open carries the dialler's CRL number"
    );
    net.cmd(
        1,
        TunnelCmd::Accept {
            conn,
            tunnel: TunnelId(2),
            hop: NextHopId(3),
            reply: Control::Accept {
                crl_number: 0,
                observed: incoming.remote,
            },
        },
    );
    assert_eq!(net.wait_dialled(0, 1).unwrap().peer_crl, 0);
}

#[test]
fn a_refusal_reaches_the_dialler_with_its_reason() {
    for (code, reason, expected) in [
        (
            close::REFUSED_FULL,
            "full: 6 tunnels of at most 6",
            Refusal::Full { tunnels: 6, max: 6 },
        ),
        (close::REFUSED_DUPLICATE, "duplicate", Refusal::Duplicate),
        (close::REFUSED_LOOPBACK, "myself", Refusal::Loopback),
    ] {
        let mut net = Net::new(2);
        let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
        net.cmd(0, dial(1, peer, vec![addr]));
        let (conn, _) = net.wait_incoming(1);
        net.cmd(
            1,
            TunnelCmd::Refuse {
                conn,
                code,
                reason: reason.into(),
            },
        );
        let err = net.wait_dialled(0, 1).unwrap_err();
        assert_eq!(err.failure, Failure::Refused(expected), "{err:?}");
        assert_eq!(err.answered_by, None);
        // Both ends forget the connection.
        net.run_for(5_000 * MS);
        assert_eq!(net.nodes[0].engine.connections(), 0);
        assert_eq!(net.nodes[1].engine.connections(), 0);
    }
}

#[test]
fn another_node_at_the_address_is_named() {
    let mut net = Net::new(3);
    // Node 3's address is expected at node 2's socket: node 3 was
    // replaced there by node 2.
    let expected = net.nodes[2].address();
    let addr = net.nodes[1].addr;
    net.cmd(0, dial(1, expected, vec![addr]));
    let err = net.wait_dialled(0, 1).unwrap_err();
    assert_eq!(err.failure, Failure::Unreachable);
    let found = err.answered_by.expect("the certificate that answered");
    assert_eq!(*found, net.nodes[1].cert);
    assert!(err.reason.contains(&expected.to_string()), "{}", err.reason);
    assert_eq!(net.nodes[0].engine.stats().dials_other_node, 1);
    // The node that answered never hears an Open, and counts that the
    // dialler gave up on it.
    net.run_for(500 * MS);
    assert!(net.nodes[1].take_events().is_empty());
    assert_eq!(net.nodes[1].engine.stats().refused_by_dialler, 1);
}

#[test]
fn the_next_address_is_tried_after_a_wrong_node() {
    let mut net = Net::new(3);
    let expected = net.nodes[2].address();
    let addresses = vec![net.nodes[1].addr, net.nodes[2].addr];
    net.cmd(0, dial(1, expected, addresses));
    let (conn, incoming) = net.wait_incoming(2);
    net.cmd(
        2,
        TunnelCmd::Accept {
            conn,
            tunnel: TunnelId(9),
            hop: NextHopId(1),
            reply: Control::Accept {
                crl_number: 0,
                observed: incoming.remote,
            },
        },
    );
    let h = net.wait_dialled(0, 1).unwrap();
    assert_eq!(h.peer, net.nodes[2].cert);
}

#[test]
fn an_address_that_does_not_answer_fails_after_the_handshake_timeout() {
    let mut net = Net::new(1);
    let peer: Ipv6Addr = "fd00:77:0:9::1".parse().unwrap();
    let nobody: SocketAddr = "192.0.2.99:4433".parse().unwrap();
    // An IPv6 address is not usable from an IPv4 socket: skipped.
    let v6: SocketAddr = "[2001:db8::1]:4433".parse().unwrap();
    net.cmd(0, dial(1, peer, vec![v6, nobody]));
    let start = net.now;
    let err = net.wait_dialled(0, 1).unwrap_err();
    let took = net.now - start;
    assert_eq!(err.failure, Failure::Unreachable);
    assert!(err.reason.contains("no answer"), "{}", err.reason);
    assert!(took >= 1_000 * MS && took < 1_100 * MS, "{took:?}");
    assert_eq!(net.nodes[0].engine.stats().dials_failed, 1);
    // Only usable addresses at all: said so.
    net.cmd(0, dial(2, peer, vec![v6]));
    let err = net.wait_dialled(0, 2).unwrap_err();
    assert!(err.reason.contains("no usable address"), "{}", err.reason);
}

#[test]
fn a_revoked_dialler_is_refused_in_the_handshake() {
    let mut net = Net::new(0);
    let crl = net.pki.crl(1, &[1]);
    net.add(1, None);
    net.add(2, Some(crl));
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    net.cmd(0, dial(1, peer, vec![addr]));
    let err = net.wait_dialled(0, 1).unwrap_err();
    assert_eq!(err.failure, Failure::Unreachable);
    net.run_for(100 * MS);
    let s = net.nodes[1].engine.stats();
    assert_eq!(s.accepted_handshakes, 0);
    assert_eq!((s.refused_handshakes, s.refused_revoked), (1, 1), "{s:?}");
    assert!(net.nodes[1].take_events().is_empty());
}

#[test]
fn a_new_crl_refuses_new_handshakes_with_the_revoked_node() {
    let mut net = Net::new(2);
    let crl = net.pki.crl(2, &[2]);
    net.cmd(0, TunnelCmd::SetCrl(Box::new(crl.clone())));
    assert_eq!(net.nodes[0].engine.crl().map(|c| c.number), Some(2));
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    net.cmd(0, dial(1, peer, vec![addr]));
    let err = net.wait_dialled(0, 1).unwrap_err();
    assert!(err.reason.contains("evoked"), "{}", err.reason);
    assert_eq!(net.nodes[0].engine.stats().refused_revoked, 1);
    // An older CRL changes nothing.
    net.cmd(0, TunnelCmd::SetCrl(Box::new(net.pki.crl(1, &[]))));
    assert_eq!(net.nodes[0].engine.crl().map(|c| c.number), Some(2));
}

#[test]
fn a_renewed_certificate_is_presented_in_new_handshakes() {
    let mut net = Net::new(1);
    let (cert, key) = net.pki.node(2);
    let addr = "192.0.2.2:4433".parse().unwrap();
    net.add_at(cert.clone(), &key, addr, None);
    // Renewal: same key, same prefix, a new serial and validity.
    let der = net
        .pki
        .ca
        .issue_node(
            &key.spki_der(),
            cert.prefix,
            crate::identity::IssueParams {
                serial: 12,
                not_before: net.pki.now - 60 * 1_000 * MS,
                not_after: net.pki.now + 7_200 * 1_000 * MS,
            },
        )
        .unwrap();
    let renewed = NodeCert::from_der(&der).unwrap();
    net.cmd(1, TunnelCmd::SetIdentity(Box::new(renewed.clone())));
    assert_eq!(net.nodes[1].engine.me(), &renewed);
    let (dialled, _) = net.connect(0, 1, 1, 1);
    assert_eq!(dialled.peer, renewed);
}

#[test]
fn answers_for_gone_or_unknown_connections_report_closed() {
    let mut net = Net::new(2);
    // Accept of a connection that never existed.
    net.cmd(
        1,
        TunnelCmd::Accept {
            conn: ConnId(77),
            tunnel: TunnelId(5),
            hop: NextHopId(1),
            reply: Control::Drain,
        },
    );
    let ev = net.nodes[1].take_events();
    assert!(
        matches!(
            ev[..],
            [TunnelEvent::Closed {
                tunnel: TunnelId(5),
                ..
            }]
        ),
        "{ev:?}"
    );
    // Up for a tunnel never dialled.
    net.cmd(
        0,
        TunnelCmd::Up {
            tunnel: TunnelId(6),
            hop: NextHopId(1),
        },
    );
    let ev = net.nodes[0].take_events();
    assert!(
        matches!(
            ev[..],
            [TunnelEvent::Closed {
                tunnel: TunnelId(6),
                ..
            }]
        ),
        "{ev:?}"
    );
    // A dialler that goes away before the acceptor answers.
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    net.cmd(0, dial(1, peer, vec![addr]));
    let (conn, incoming) = net.wait_incoming(1);
    net.cmd(
        0,
        TunnelCmd::CancelDial {
            tunnel: TunnelId(1),
        },
    );
    net.run_for(200 * MS);
    net.cmd(
        1,
        TunnelCmd::Accept {
            conn,
            tunnel: TunnelId(2),
            hop: NextHopId(1),
            reply: Control::Accept {
                crl_number: 0,
                observed: incoming.remote,
            },
        },
    );
    let closed = net.wait_event(1, 1_000 * MS, |e| match e {
        TunnelEvent::Closed { tunnel, .. } => Some(*tunnel),
        _ => None,
    });
    assert_eq!(closed, TunnelId(2));
    // A cancelled dial reports nothing.
    assert!(net.nodes[0].take_events().is_empty());
}

#[test]
fn nodecore_silence_after_incoming_closes_the_connection() {
    let mut net = Net::new(2);
    let (peer, addr) = (net.nodes[1].address(), net.nodes[1].addr);
    net.cmd(0, dial(1, peer, vec![addr]));
    net.wait_incoming(1);
    // The dialled side gets Dialled only from an Accept; it sees the
    // connection close when the acceptor gives up waiting for NodeCore.
    let err = net.wait_dialled(0, 1).unwrap_err();
    assert_eq!(err.failure, Failure::Unreachable);
    net.run_for(5_000 * MS);
    assert_eq!(net.nodes[1].engine.connections(), 0);
}

#[test]
fn garbage_datagrams_change_nothing() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    let now = net.now;
    let from = net.nodes[0].addr;
    let mut x: u32 = 1;
    for len in [0usize, 1, 5, 20, 100, 1200, 1500, 3000] {
        let mut d = vec![0u8; len];
        for b in &mut d {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 16) as u8;
        }
        // A short header with a random connection id, and a long one.
        if len > 0 {
            d[0] = 0x40 | (d[0] & 0x3f);
        }
        net.nodes[1]
            .engine
            .handle_datagram(now, from, None, None, BytesMut::from(&d[..]));
        if len > 0 {
            d[0] |= 0x80;
        }
        net.nodes[1]
            .engine
            .handle_datagram(now, from, None, None, BytesMut::from(&d[..]));
    }
    net.run_for(200 * MS);
    assert!(net.nodes[1].take_events().is_empty());
    assert_eq!(net.nodes[1].engine.connections(), 1);
    assert!(net.nodes[1].packets.is_empty());
}

//! NodeCore's peer exchange and peer DB decisions, from hand-made inputs.

use bytes::Bytes;

use super::rig::{Rig, S};
use crate::node::core::boundary::{TunnelCmd, TunnelEvent};
use crate::node::core::{Command, PeerChange};
use crate::peers::{ExchangeMessage, exchange, wire};

/// The exchange packets NodeCore sends: (destination, asks an answer).
fn announcements(cmds: &[Command]) -> Vec<(std::net::Ipv6Addr, bool)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Tunnel(TunnelCmd::SendPacket { bytes }) => {
                let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[24..40]).ok()?);
                let (_, payload) = wire::match_packet(bytes, dst).ok()??;
                match ExchangeMessage::parse(payload).ok()? {
                    ExchangeMessage::Announce { reply, .. } => Some((dst, reply)),
                    ExchangeMessage::Unknown(_) => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// What peer `i` sends us over the overlay: its announcement.
fn from_peer(r: &Rig, i: usize, reply: bool) -> TunnelEvent {
    let p = &r.peers[i];
    let packet =
        exchange::packet(p.cert.address, r.me.address, reply, p.announcement.clone()).unwrap();
    TunnelEvent::Exchange {
        from: p.cert.address,
        payload: Bytes::copy_from_slice(&packet[48..]),
    }
}

#[test]
fn a_verified_announcement_is_stored_and_its_owner_answered_once() {
    let mut r = Rig::new(3, false);
    let _ = r.take();
    r.event(from_peer(&r, 0, true));
    let cmds = r.take();
    assert!(r.core.peers().get(&r.peers[0].cert.prefix).is_some());
    assert!(cmds.iter().any(
        |c| matches!(c, Command::PersistPeer(PeerChange::Store { prefix, .. })
        if *prefix == r.peers[0].cert.prefix)
    ));
    assert_eq!(announcements(&cmds), vec![(r.peers[0].cert.address, false)]);
    // Asked again at once: not answered twice (one answer per asker per
    // hold), and the DB does not change.
    r.event(from_peer(&r, 0, true));
    let cmds = r.take();
    assert!(announcements(&cmds).is_empty());
    assert!(!cmds.iter().any(|c| matches!(c, Command::PersistPeer(_))));
}

#[test]
fn an_announcement_relayed_by_a_third_node_is_stored_but_not_answered() {
    let mut r = Rig::new(3, false);
    let _ = r.take();
    let mut ev = from_peer(&r, 0, true);
    if let TunnelEvent::Exchange { from, .. } = &mut ev {
        *from = r.peers[1].cert.address;
    }
    r.event(ev);
    assert!(r.core.peers().get(&r.peers[0].cert.prefix).is_some());
    assert!(announcements(&r.take()).is_empty(), "no reflection");
}

#[test]
fn garbage_and_forgeries_are_counted_and_dropped() {
    let mut r = Rig::new(3, false);
    let _ = r.take();
    let from = r.peers[0].cert.address;
    for payload in [&b""[..], b"r6", b"r6\x01\x01\x00\x00\x05abc", b"xx\x01\x01"] {
        r.event(TunnelEvent::Exchange {
            from,
            payload: Bytes::copy_from_slice(payload),
        });
    }
    // A tampered announcement: parses, does not verify.
    let mut forged = r.peers[0].announcement.clone();
    forged.payload = forged.payload.replace("192.0.2.2", "192.0.2.99");
    let packet = exchange::packet(from, r.me.address, true, forged).unwrap();
    r.event(TunnelEvent::Exchange {
        from,
        payload: Bytes::copy_from_slice(&packet[48..]),
    });
    // Peer 1's certificate and key announcing peer 0's prefix.
    let payload = serde_json::to_string(&crate::identity::PeerAnnouncement {
        prefix: r.peers[0].cert.prefix,
        addresses: vec!["192.0.2.99:4326".parse().unwrap()],
        timestamp: crate::identity::unix_secs(r.now.wall),
        tcp_port: None,
        topology: None,
    })
    .unwrap();
    let lie = crate::identity::SignedAnnouncement {
        signature: crate::test_pki::sign_raw(&payload, &r.peers[1].key),
        payload,
        certificate: r.peers[1].announcement.certificate.clone(),
    };
    let from1 = r.peers[1].cert.address;
    let packet = exchange::packet(from1, r.me.address, true, lie).unwrap();
    r.event(TunnelEvent::Exchange {
        from: from1,
        payload: Bytes::copy_from_slice(&packet[48..]),
    });
    let s = r.core.status(r.now.mono);
    assert_eq!(s.exchange.received, 6);
    assert_eq!(s.exchange.malformed, 4);
    assert_eq!(s.peers.rejected_invalid, 1);
    assert_eq!(s.peers.rejected_prefix, 1);
    assert_eq!(r.core.peers().len(), 0);
    assert!(announcements(&r.take()).is_empty());
}

#[test]
fn exchange_rounds_go_to_routed_nodes_first_asking_them_to_answer() {
    let mut r = Rig::new(2, true);
    let _ = r.all_up();
    // No route to anyone yet (no Babel exchanged): the first round waits.
    r.advance(15 * S);
    assert!(announcements(&r.take()).is_empty());
    assert_eq!(r.core.status(r.now.mono).exchange.rounds, 0);
}

//! NodeCore's LAN-link decisions, from hand-made inputs.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use super::rig::{Rig, config};
use crate::lan::{LanEvent, LanPeer};
use crate::node::core::boundary::{ConnId, TunnelCmd, TunnelEvent};
use crate::node::core::{Command, LanNotice};
use crate::transport::control::close;

fn lan_rig() -> Rig {
    let mut c = config();
    c.lan = true;
    Rig::with(3, false, c, |_| {})
}

fn lan_peer(r: &Rig, i: usize) -> LanPeer {
    let p = &r.peers[i];
    LanPeer {
        prefix: p.cert.prefix,
        serial: p.cert.serial,
        address: p.cert.address,
        addr: SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2), 4326, 0, 3),
    }
}

fn notices(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Lan(LanNotice::LinkUp(p)) => Some(format!("up {p}")),
            Command::Lan(LanNotice::LinkDown { prefix, failed }) => {
                Some(format!("down {prefix} {failed}"))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_lan_neighbour_is_dialled_at_its_link_local_address_outside_k() {
    let mut r = lan_rig();
    let _ = r.take();
    let peer = lan_peer(&r, 0);
    r.core.handle_lan(LanEvent::Dial(peer), r.now);
    let cmds = r.tunnel_cmds();
    let [
        TunnelCmd::Dial {
            tunnel,
            peer: who,
            addresses,
            tcp_port: None,
        },
    ] = &cmds[..]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!(*who, peer.address);
    assert_eq!(addresses, &vec![SocketAddr::V6(peer.addr)]);
    let tunnel = *tunnel;
    // The same neighbour again while dialling: one dial.
    r.core.handle_lan(LanEvent::Dial(peer), r.now);
    assert!(r.tunnel_cmds().is_empty());
    r.event(TunnelEvent::Dialled {
        tunnel,
        result: Ok(r.handshake(0)),
    });
    let cmds = r.take();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Tunnel(TunnelCmd::Up { tunnel: t, .. }) if *t == tunnel))
    );
    assert_eq!(notices(&cmds), vec![format!("up {}", peer.prefix)]);
    let s = r.core.status(r.now.mono);
    assert_eq!(s.tunnels[0].direction, "lan");
    assert_eq!(r.core.driver().policy().tunnel_count(), 0, "not one of k");
    // A tunnel from that node is refused now: the LAN link is the way.
    let answer = r.incoming(0);
    assert!(
        matches!(answer, TunnelCmd::Refuse { code, .. } if code == close::REFUSED_DUPLICATE),
        "{answer:?}"
    );
    // It closes: LAN discovery may dial again.
    r.event(TunnelEvent::Closed {
        tunnel,
        reason: "gone".into(),
    });
    assert_eq!(
        notices(&r.take()),
        vec![format!("down {} false", peer.prefix)]
    );
}

#[test]
fn a_failed_lan_dial_is_reported_to_discovery() {
    let mut r = lan_rig();
    let _ = r.take();
    let peer = lan_peer(&r, 1);
    r.core.handle_lan(LanEvent::Dial(peer), r.now);
    let cmds = r.tunnel_cmds();
    let [TunnelCmd::Dial { tunnel, .. }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    r.event(TunnelEvent::Dialled {
        tunnel: *tunnel,
        result: Err(crate::node::core::DialError::unreachable("no answer")),
    });
    assert_eq!(
        notices(&r.take()),
        vec![format!("down {} true", peer.prefix)]
    );
}

#[test]
fn an_incoming_link_local_connection_is_a_lan_link_when_discovery_runs() {
    let mut r = lan_rig();
    let _ = r.take();
    let mut h = r.handshake(2);
    h.remote = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9),
        4326,
        0,
        3,
    ));
    r.event(TunnelEvent::Incoming {
        conn: ConnId(77),
        handshake: h.clone(),
    });
    let cmds = r.take();
    assert!(cmds.iter().any(
        |c| matches!(c, Command::Tunnel(TunnelCmd::Accept { conn, .. }) if *conn == ConnId(77))
    ));
    assert_eq!(
        notices(&cmds),
        vec![format!("up {}", r.peers[2].cert.prefix)]
    );
    assert_eq!(r.core.status(r.now.mono).tunnels[0].direction, "lan");
    // Without LAN discovery the same connection is an ordinary tunnel.
    let mut r = Rig::new(3, false);
    let _ = r.take();
    r.event(TunnelEvent::Incoming {
        conn: ConnId(78),
        handshake: h,
    });
    let _ = r.take();
    assert_eq!(r.core.status(r.now.mono).tunnels[0].direction, "incoming");
}

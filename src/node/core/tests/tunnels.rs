//! NodeCore's tunnel decisions, from hand-made inputs.

use super::rig::{MS, Rig, S, config};
use crate::identity::{PeerAnnouncement, unix_secs};
use crate::node::core::boundary::{
    DialError, NextHopId, TunnelCmd, TunnelEvent, TunnelId, refusal_of_close,
};
use crate::node::core::{Command, RegistryReply, RegistryRequest};
use crate::transport::control::{Control, close};
use crate::tunnels::policy::Refusal;

#[test]
fn it_dials_k_known_peers_and_keeps_those_that_answer() {
    let mut r = Rig::new(4, true);
    let cmds = r.tunnel_cmds();
    let dials = r.dials(&cmds);
    assert_eq!(dials.len(), 2, "k = 2: {cmds:?}");
    for c in &cmds {
        if let TunnelCmd::Dial {
            addresses, peer, ..
        } = c
        {
            let p = r.peers.iter().find(|p| p.cert.address == *peer).unwrap();
            assert_eq!(addresses, &vec![p.addr], "from the peer's announcement");
        }
    }
    let (t, i) = dials[0];
    let result = Ok(r.handshake(i));
    r.event(TunnelEvent::Dialled { tunnel: t, result });
    let cmds = r.tunnel_cmds();
    let hop = cmds
        .iter()
        .find_map(|c| match c {
            TunnelCmd::Up { tunnel, hop } if *tunnel == t => Some(*hop),
            _ => None,
        })
        .expect("Up");
    assert_eq!(r.state(t), Some("up"));
    // It carries Babel at once: a Hello on the new tunnel.
    assert!(
        cmds.iter()
            .any(|c| matches!(c, TunnelCmd::SendBabel { tunnel, .. } if *tunnel == t)),
        "{cmds:?}"
    );
    let hops: Vec<NextHopId> = r.core.tunnels().filter_map(|t| t.2).collect();
    assert_eq!(hops, vec![hop]);
}

#[test]
fn a_dial_answered_by_another_node_is_closed_and_the_peer_backed_off() {
    let mut r = Rig::new(3, true);
    let cmds = r.tunnel_cmds();
    let (t, i) = r.dials(&cmds)[0];
    let other = (i + 1) % 3;
    let result = Ok(r.handshake(other));
    r.event(TunnelEvent::Dialled { tunnel: t, result });
    let cmds = r.tunnel_cmds();
    assert!(
        cmds.contains(&TunnelCmd::Close {
            tunnel: t,
            code: close::BAD_PEER,
            reason: "not the node dialled".into()
        }),
        "{cmds:?}"
    );
    assert_eq!(r.state(t), None);
    assert_eq!(r.core.driver().policy().stats().failed, 1);
}

#[test]
fn a_failed_dial_tries_another_peer() {
    let mut r = Rig::new(3, true);
    let cmds = r.tunnel_cmds();
    let dials = r.dials(&cmds);
    let (t, i) = dials[0];
    r.event(TunnelEvent::Dialled {
        tunnel: t,
        result: Err(DialError::unreachable("timeout")),
    });
    let again = r.tunnel_cmds();
    let next = r.dials(&again);
    assert_eq!(next.len(), 1, "{again:?}");
    assert_ne!(next[0].1, i, "another peer");
    assert_ne!(next[0].1, dials[1].1, "not the one already dialled");
}

#[test]
fn an_incoming_tunnel_is_accepted_with_our_crl_and_its_address() {
    let mut r = Rig::new(3, false);
    let crl = r.pki.crl(4, &[]);
    r.registry(RegistryReply::Crl(Box::new(crl.clone())));
    let _ = r.take();
    match r.incoming(0) {
        TunnelCmd::Accept { tunnel, reply, .. } => {
            assert_eq!(
                reply,
                Control::Accept {
                    crl_number: 4,
                    observed: r.peers[0].addr
                }
            );
            assert_eq!(r.state(tunnel), Some("up"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_node_refuses_with_a_reason_the_dialler_reads_back() {
    // k = 2, at most 4 tunnels: 2 are kept for our own.
    let mut r = Rig::new(6, false);
    for i in 0..2 {
        let answer = r.incoming(i);
        assert!(matches!(answer, TunnelCmd::Accept { .. }), "{answer:?}");
    }
    match r.incoming(4) {
        TunnelCmd::Refuse { code, reason, .. } => {
            assert_eq!(
                refusal_of_close(u64::from(code), reason.as_bytes()),
                Some(Refusal::Full { tunnels: 2, max: 4 })
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_silent_tunnel_is_suspected_then_comes_back_when_heard() {
    let mut r = Rig::new(2, true);
    let up = r.all_up();
    let (t, _) = up[0];
    r.event(TunnelEvent::Silent {
        tunnel: t,
        silent_for: 700 * MS,
    });
    assert_eq!(r.state(t), Some("suspect"));
    let hops: Vec<_> = r.core.tunnels().filter(|x| x.0 == t).map(|x| x.2).collect();
    assert_eq!(hops, vec![None], "no next hop while suspected");
    // No Babel goes out on it while it is down in Babel.
    r.advance(5 * S);
    let cmds = r.tunnel_cmds();
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, TunnelCmd::SendBabel { tunnel, .. } if *tunnel == t)),
        "{cmds:?}"
    );
    r.event(TunnelEvent::Heard { tunnel: t });
    assert_eq!(r.state(t), Some("up"));
    r.advance(10 * MS);
    let cmds = r.tunnel_cmds();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, TunnelCmd::SendBabel { tunnel, .. } if *tunnel == t)),
        "Hello at once when heard again: {cmds:?}"
    );
    let s = r.core.status(r.now.mono).liveness;
    assert_eq!((s.suspected, s.recovered), (1, 1));
    // A second Silent for the same silence counts once.
    r.event(TunnelEvent::Heard { tunnel: t });
    assert_eq!(r.core.status(r.now.mono).liveness.recovered, 1);
}

#[test]
fn a_suspected_peer_that_dials_again_restarted_its_old_tunnel_is_closed() {
    let mut r = Rig::new(3, false);
    let TunnelCmd::Accept { tunnel: old, .. } = r.incoming(1) else {
        panic!("accepted");
    };
    r.event(TunnelEvent::Silent {
        tunnel: old,
        silent_for: 700 * MS,
    });
    let answer = r.incoming(1);
    assert!(matches!(answer, TunnelCmd::Accept { tunnel, .. } if tunnel != old));
    assert_eq!(r.state(old), None, "the old one is gone");
    // Without suspicion, the same dial is a duplicate the rule settles.
    let mut r = Rig::new(3, false);
    let _ = r.incoming(1);
    assert!(matches!(
        r.incoming(1),
        TunnelCmd::Accept { .. } | TunnelCmd::Refuse { .. }
    ));
}

#[test]
fn a_closed_tunnel_is_replaced_by_a_dial_to_another_peer() {
    let mut r = Rig::new(3, true);
    let up = r.all_up();
    let (t, _) = up[0];
    r.event(TunnelEvent::Closed {
        tunnel: t,
        reason: "idle timeout".into(),
    });
    assert_eq!(r.state(t), None);
    let cmds = r.tunnel_cmds();
    assert_eq!(r.dials(&cmds).len(), 1, "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| matches!(c, TunnelCmd::Close { .. })),
        "nothing to close: it is gone"
    );
}

#[test]
fn the_peer_drains_then_we_answer_drained_and_it_closes() {
    let mut r = Rig::new(3, false);
    let TunnelCmd::Accept { tunnel, .. } = r.incoming(0) else {
        panic!("accepted");
    };
    r.control(tunnel, Control::Drain);
    assert_eq!(r.state(tunnel), Some("draining"));
    // Nothing of ours goes through it: we say so at once.
    let cmds = r.tunnel_cmds();
    assert!(
        cmds.contains(&TunnelCmd::SendControl {
            tunnel,
            msg: Control::Drained
        }),
        "{cmds:?}"
    );
    r.event(TunnelEvent::Closed {
        tunnel,
        reason: "replaced".into(),
    });
    assert_eq!(r.state(tunnel), None);
}

#[test]
fn garbage_on_the_control_stream_or_an_unexpected_message_closes_the_tunnel() {
    let mut r = Rig::with(3, false, super::rig::config(), |n| n.max_tunnels = 9);
    let TunnelCmd::Accept { tunnel: a, .. } = r.incoming(0) else {
        panic!()
    };
    let TunnelCmd::Accept { tunnel: b, .. } = r.incoming(1) else {
        panic!()
    };
    let TunnelCmd::Accept { tunnel: c, .. } = r.incoming(2) else {
        panic!()
    };
    r.event(TunnelEvent::ControlError {
        tunnel: a,
        error: crate::transport::control::ControlError::Empty,
    });
    r.control(
        b,
        Control::Open {
            version: 1,
            crl_number: 0,
        },
    );
    r.control(c, Control::Crl(vec![1, 2, 3].into()));
    let closes: Vec<(TunnelId, u32)> = r
        .tunnel_cmds()
        .into_iter()
        .filter_map(|x| match x {
            TunnelCmd::Close { tunnel, code, .. } => Some((tunnel, code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        vec![
            (a, close::PROTOCOL),
            (b, close::PROTOCOL),
            (c, close::PROTOCOL)
        ]
    );
    // Unknown messages (a newer peer) are ignored.
    let TunnelCmd::Accept { tunnel: d, .. } = r.incoming(0) else {
        panic!()
    };
    r.control(d, Control::Unknown(0x42));
    assert_eq!(r.state(d), Some("up"));
}

#[test]
fn garbage_babel_and_events_about_unknown_tunnels_change_nothing() {
    let mut r = Rig::new(2, true);
    let up = r.all_up();
    let before = r.core.status(r.now.mono);
    r.babel(up[0].0, vec![0xff; 40]);
    r.babel(TunnelId(999), vec![42, 2, 0, 0]);
    r.event(TunnelEvent::Silent {
        tunnel: TunnelId(998),
        silent_for: S,
    });
    r.event(TunnelEvent::Closed {
        tunnel: TunnelId(997),
        reason: String::new(),
    });
    r.control(TunnelId(996), Control::Drain);
    let after = r.core.status(r.now.mono);
    assert_eq!(after.tunnels.len(), before.tunnels.len());
    assert_eq!(
        after.babel.bad_packets,
        before.babel.bad_packets + 1,
        "counted"
    );
    r.core.check_invariants().unwrap();
}

#[test]
fn a_peer_certificate_that_expires_closes_its_tunnel() {
    let mut r = Rig::new(2, true);
    let up = r.all_up();
    // The rig's certificates are valid for an hour: the wall clock jumps.
    r.now.wall += 2 * 3600 * S;
    r.advance(S);
    let cmds = r.tunnel_cmds();
    for (t, _) in up {
        assert!(
            cmds.iter()
                .any(|c| matches!(c, TunnelCmd::Close { tunnel, code, .. }
                if *tunnel == t && *code == close::BAD_PEER)),
            "{cmds:?}"
        );
    }
}

#[test]
fn a_dial_that_reached_a_replaced_node_forgets_the_peer_and_asks_the_new_one() {
    let mut r = Rig::new(3, true);
    let cmds = r.tunnel_cmds();
    let (t, i) = r.dials(&cmds)[0];
    let gone = r.peers[i].cert.prefix;
    let newcomer = r.pki.node(40).0;
    r.event(TunnelEvent::Dialled {
        tunnel: t,
        result: Err(DialError {
            answered_by: Some(Box::new(newcomer.clone())),
            ..DialError::unreachable("another node answered")
        }),
    });
    let cmds = r.take();
    assert!(r.core.peers().get(&gone).is_none());
    assert!(
        cmds.iter().any(
            |c| matches!(c, Command::PersistPeer(crate::peers::PeerChange::Remove(p)) if *p == gone)
        ),
        "{cmds:?}"
    );
    // It asks the newcomer for its announcement (our own, reply wanted),
    // over the overlay.
    let asked = cmds.iter().any(|c| match c {
        Command::Tunnel(TunnelCmd::SendPacket { bytes }) => {
            bytes[24..40] == newcomer.address.octets()
        }
        _ => false,
    });
    assert!(asked, "{cmds:?}");
    // Its old announcement, relayed by others, is refused from now on.
    let again = r.peers[i].announcement.clone();
    r.registry(RegistryReply::Bootstrapped(vec![again]));
    assert!(r.core.peers().get(&gone).is_none());
    assert_eq!(r.core.peers().stats().rejected_replaced, 1);
}

#[test]
fn dials_carry_the_announced_tcp_port_and_we_announce_ours() {
    let mut c = config();
    c.tcp_port = Some(8443);
    let mut r = Rig::with(2, false, c, |_| {});
    let ours = r
        .take()
        .into_iter()
        .find_map(|c| match c {
            Command::Registry(RegistryRequest::Round {
                announcement: Some(a),
            }) => Some(a),
            _ => None,
        })
        .expect("a registry round");
    let ours: PeerAnnouncement = serde_json::from_str(&ours.payload).unwrap();
    assert_eq!(ours.tcp_port, Some(8443));
    // Peer 0 announces its TCP port, peer 1 none (an older node).
    let p0 = &r.peers[0];
    let with_port = PeerAnnouncement {
        prefix: p0.cert.prefix,
        addresses: vec![p0.addr],
        timestamp: unix_secs(r.now.wall),
        tcp_port: Some(443),
        topology: None,
    }
    .sign(&p0.cert, &p0.key)
    .unwrap();
    let older = r.peers[1].announcement.clone();
    r.registry(RegistryReply::Bootstrapped(vec![with_port, older]));
    let mut dials: Vec<_> = r
        .tunnel_cmds()
        .into_iter()
        .filter_map(|c| match c {
            TunnelCmd::Dial { peer, tcp_port, .. } => Some((peer, tcp_port)),
            _ => None,
        })
        .collect();
    dials.sort();
    let mut want = vec![
        (r.peers[0].cert.address, Some(443)),
        (r.peers[1].cert.address, None),
    ];
    want.sort();
    assert_eq!(dials, want);
}

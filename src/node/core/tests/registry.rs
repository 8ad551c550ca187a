//! NodeCore and the registry, the CRL, renewal and live reconfiguration,
//! from hand-made inputs.

use std::time::Duration;

use super::rig::{MS, Rig, S, config};
use crate::identity::NetworkConfig;
use crate::node::core::boundary::{DialError, TunnelCmd, TunnelEvent};
use crate::node::core::{Command, LiveOptions, RegistryReply, RegistryRequest, SEQNO_FILE};
use crate::state_dir::files;
use crate::transport::control::{Control, close};

fn requests(cmds: &[Command]) -> Vec<RegistryRequest> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Registry(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn persisted(cmds: &[Command], name: &str) -> Option<Vec<u8>> {
    cmds.iter().find_map(|c| match c {
        Command::Persist { file, bytes } if *file == name => Some(bytes.clone()),
        _ => None,
    })
}

#[test]
fn a_new_node_announces_itself_and_asks_for_peers_with_back_off() {
    let mut r = Rig::new(3, false);
    let cmds = r.take();
    let reqs = requests(&cmds);
    assert!(
        matches!(
            reqs[0],
            RegistryRequest::Round {
                announcement: Some(_)
            }
        ),
        "{reqs:?}"
    );
    assert!(
        matches!(reqs[1], RegistryRequest::Bootstrap { n: 64 }),
        "{reqs:?}"
    );
    // The seqno of its fresh router-id is persisted at once.
    let seqno = String::from_utf8(persisted(&cmds, SEQNO_FILE).unwrap()).unwrap();
    assert_eq!(seqno.split_whitespace().count(), 2);
    // Unreachable registry: asked again after 5 s, 10 s, 20 s (doubling).
    let mut asked = Vec::new();
    for _ in 0..40 {
        r.registry(RegistryReply::BootstrapFailed("refused".into()));
        let t0 = r.now.mono;
        let mut waited = Duration::ZERO;
        while waited < 100 * S {
            r.advance(S);
            waited = r.now.mono - t0;
            if requests(&r.take())
                .iter()
                .any(|q| matches!(q, RegistryRequest::Bootstrap { .. }))
            {
                break;
            }
        }
        asked.push(waited.as_secs());
        if asked.len() == 3 {
            break;
        }
    }
    assert_eq!(asked, vec![5, 10, 20]);
    assert_eq!(r.core.status(r.now.mono).registry.failures, 3);
    // Enough peers: no more bootstraps, tunnels open.
    let list = r.peers.iter().map(|p| p.announcement.clone()).collect();
    r.registry(RegistryReply::Bootstrapped(list));
    let cmds = r.take();
    assert_eq!(r.core.peers().len(), 3);
    let stored = cmds
        .iter()
        .filter(|c| matches!(c, Command::PersistPeer(_)))
        .count();
    assert_eq!(stored, 3, "the durable copy follows");
    let tcmds: Vec<TunnelCmd> = cmds
        .into_iter()
        .filter_map(|c| match c {
            Command::Tunnel(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(r.dials(&tcmds).len(), 2);
    r.advance(3600 * S);
    assert!(
        !requests(&r.take())
            .iter()
            .any(|q| matches!(q, RegistryRequest::Bootstrap { .. }))
    );
}

#[test]
fn a_node_whose_peers_are_all_down_asks_for_more_once_per_retry_period() {
    let mut r = Rig::new(3, false);
    let _ = r.take();
    let list = r.peers.iter().map(|p| p.announcement.clone()).collect();
    r.registry(RegistryReply::Bootstrapped(list));
    // Every peer it has is down: no tunnel comes up.
    let mut bootstraps = 0;
    for _ in 0..80 {
        let cmds = r.take();
        bootstraps += requests(&cmds)
            .iter()
            .filter(|q| matches!(q, RegistryRequest::Bootstrap { .. }))
            .count();
        let tcmds: Vec<TunnelCmd> = cmds
            .into_iter()
            .filter_map(|c| match c {
                Command::Tunnel(t) => Some(t),
                _ => None,
            })
            .collect();
        for (tunnel, _) in r.dials(&tcmds) {
            r.event(TunnelEvent::Dialled {
                tunnel,
                result: Err(DialError::unreachable("no route")),
            });
        }
        if bootstraps > 0 {
            // The registry answers at once with the same peers.
            let list = r.peers.iter().map(|p| p.announcement.clone()).collect();
            r.registry(RegistryReply::Bootstrapped(list));
        }
        r.advance(100 * MS);
    }
    // 8 s with a retry period of 5 s: asked again once, not at every
    // answer.
    assert_eq!(bootstraps, 1, "asked {bootstraps} times in 8 s");
}

#[test]
fn the_round_comes_back_every_interval_and_sooner_when_addresses_change() {
    let mut c = config();
    c.registry_interval = 600 * S;
    let mut r = Rig::with(2, true, c, |_| {});
    let _ = r.take();
    r.registry(RegistryReply::Done);
    r.advance(599 * S);
    assert!(requests(&r.take()).is_empty());
    r.advance(2 * S);
    assert_eq!(requests(&r.take()).len(), 1);
    r.registry(RegistryReply::Done);
    // A new address (a UPnP mapping): announced soon, at most one forced
    // round per 10 s.
    r.advance(100 * S);
    let mapping = |port| crate::upnp::Mapping {
        external: std::net::SocketAddrV4::new([81, 2, 69, 160].into(), port),
        internal: std::net::SocketAddrV4::new([192, 168, 1, 2].into(), 4326),
        gateway: "192.168.1.1:5000".parse().unwrap(),
        lease_secs: 3600,
    };
    r.core.handle_upnp(Some(mapping(4326)), r.now);
    assert!(r.core.poll_timeout() <= r.now.mono, "due at once");
    r.advance(Duration::ZERO);
    let reqs = requests(&r.take());
    assert!(
        matches!(&reqs[..], [RegistryRequest::Round { announcement: Some(a) }] if a.payload.contains("81.2.69.160")),
        "{reqs:?}"
    );
    r.registry(RegistryReply::Done);
    r.core.handle_upnp(Some(mapping(4327)), r.now);
    r.advance(Duration::ZERO);
    assert!(requests(&r.take()).is_empty(), "not twice in 10 s");
    r.advance(10 * S);
    assert_eq!(requests(&r.take()).len(), 1);
}

/// Waits, one virtual second at a time, until NodeCore asks for a round;
/// how long it took (at most `limit`).
fn until_round(r: &mut Rig, limit: Duration) -> Option<Duration> {
    let t0 = r.now.mono;
    while r.now.mono - t0 < limit {
        r.advance(S);
        if requests(&r.take())
            .iter()
            .any(|q| matches!(q, RegistryRequest::Round { .. }))
        {
            return Some(r.now.mono - t0);
        }
    }
    None
}

#[test]
fn a_failed_round_is_retried_with_back_off_and_renewal_says_overdue() {
    let mut c = config();
    c.registry_interval = 600 * S;
    c.registry_retry = 30 * S;
    c.registry_retry_max = 120 * S;
    let mut r = Rig::with(2, true, c, |_| {});
    let reqs = requests(&r.take());
    assert!(
        matches!(reqs[..], [RegistryRequest::Round { .. }, ..]),
        "{reqs:?}"
    );
    // While a round is with the registry, none other starts, however long
    // it takes, and the status says the round is now.
    assert_eq!(until_round(&mut r, 1000 * S), None, "one round at a time");
    let st = r.core.status(r.now.mono);
    assert_eq!(st.registry.next_round_in_secs, Some(0));
    // The registry says the certificate is due from now on, then fails.
    r.registry(RegistryReply::RenewAfter(r.now.wall - S));
    let mut waits = Vec::new();
    for _ in 0..5 {
        r.registry(RegistryReply::RoundFailed("unreachable".into()));
        let st = r.core.status(r.now.mono);
        assert!(st.registry.next_round_in_secs.is_some_and(|s| s <= 120));
        assert_eq!(st.renewal, crate::node::renewal::Renewal::Overdue);
        assert_eq!(st.registry.last_error.as_deref(), Some("unreachable"));
        waits.push(until_round(&mut r, 200 * S).expect("retried").as_secs());
    }
    // Jittered between half and all of 30, 60, 120, 120, 120 s.
    for (w, step) in waits.iter().zip([30, 60, 120, 120, 120]) {
        assert!((step / 2..=step).contains(w), "{waits:?}");
    }
    assert_eq!(r.core.status(r.now.mono).registry.failures, 5);
    // A round that goes through: renewed, back to the regular period, and
    // the next failure starts from the first wait again.
    let (cert, _) = r.pki.node(1);
    r.registry(RegistryReply::Renewed(Box::new(cert)));
    r.registry(RegistryReply::Done);
    let st = r.core.status(r.now.mono);
    assert_eq!(st.renewal, crate::node::renewal::Renewal::Ok);
    assert!(st.registry.last_error.is_none());
    assert!(st.registry.next_round_in_secs.is_some_and(|s| s > 500));
    let w = until_round(&mut r, 700 * S).expect("the regular round");
    assert!(w > 500 * S, "{w:?}");
    r.registry(RegistryReply::RoundFailed("unreachable".into()));
    let w = until_round(&mut r, 200 * S).expect("retried");
    assert!(w <= 30 * S, "{w:?}");
}

#[test]
fn a_newer_crl_is_applied_persisted_flooded_and_cuts_the_revoked() {
    let mut r = Rig::with(3, false, config(), |n| n.max_tunnels = 9);
    let mut tunnels = Vec::new();
    for i in 0..3 {
        let TunnelCmd::Accept { tunnel, .. } = r.incoming(i) else {
            panic!()
        };
        tunnels.push(tunnel);
    }
    let _ = r.take();
    // Peer 0 (serial 2) is revoked; the CRL arrives from peer 1.
    let crl = r.pki.crl(3, &[2]);
    r.control(tunnels[1], Control::Crl(crl.der.clone().into()));
    let cmds = r.take();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Tunnel(TunnelCmd::SetCrl(x)) if x.number == 3))
    );
    assert!(persisted(&cmds, files::CRL).is_some());
    let tc: Vec<&TunnelCmd> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Tunnel(t) => Some(t),
            _ => None,
        })
        .collect();
    assert!(
        tc.iter()
            .any(|c| matches!(c, TunnelCmd::Close { tunnel, code, .. }
        if *tunnel == tunnels[0] && *code == close::REVOKED))
    );
    // Flooded to the peer that has an older one, not back to the sender.
    let flooded: Vec<_> = tc
        .iter()
        .filter_map(|c| match c {
            TunnelCmd::SendControl {
                tunnel,
                msg: Control::Crl(_),
            } => Some(*tunnel),
            _ => None,
        })
        .collect();
    assert_eq!(flooded, vec![tunnels[2]]);
    assert_eq!(r.core.crl().map(|c| c.number), Some(3));
    // The same CRL again, or an older one: nothing.
    r.control(tunnels[2], Control::Crl(crl.der.clone().into()));
    r.registry(RegistryReply::Crl(Box::new(r.pki.crl(2, &[]))));
    assert!(r.take().is_empty());
    // A revoked node's new tunnel is refused by the transport's TLS; its
    // announcement is refused by the peer DB.
    let revoked = r.peers[0].announcement.clone();
    r.registry(RegistryReply::Bootstrapped(vec![revoked]));
    assert!(r.core.peers().get(&r.peers[0].cert.prefix).is_none());
}

#[test]
fn a_renewed_certificate_is_used_persisted_and_one_for_another_prefix_ignored() {
    let mut r = Rig::new(1, false);
    let _ = r.take();
    let other = r.peers[0].cert.clone();
    r.registry(RegistryReply::Renewed(Box::new(other)));
    assert!(r.take().is_empty());
    assert_eq!(r.core.cert().serial, 1);
    // Same key and prefix, new serial.
    let mut renewed = r.me.clone();
    renewed.serial = 77;
    r.registry(RegistryReply::Renewed(Box::new(renewed)));
    let cmds = r.take();
    assert!(persisted(&cmds, files::CERT).is_some());
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Tunnel(TunnelCmd::SetIdentity(x)) if x.serial == 77))
    );
    assert_eq!(r.core.cert().serial, 77);
}

#[test]
fn a_newer_network_configuration_applies_live_and_an_older_one_not() {
    let mut r = Rig::new(5, true);
    let _ = r.all_up();
    let base = r.network.clone();
    let publish = |r: &mut Rig, cfg: NetworkConfig| {
        let signed = cfg.sign(&r.pki.ca).unwrap();
        r.registry(RegistryReply::Network {
            config: Box::new(cfg),
            signed: Box::new(signed),
        });
    };
    // Version 2: k = 3, faster Babel: one more dial, persisted.
    publish(
        &mut r,
        NetworkConfig {
            version: base.version + 1,
            tunnels: 3,
            max_tunnels: 9,
            babel_hello_ms: 1000,
            ..base.clone()
        },
    );
    let cmds = r.take();
    assert!(persisted(&cmds, files::NETWORK).is_some());
    let tc: Vec<TunnelCmd> = cmds
        .into_iter()
        .filter_map(|c| match c {
            Command::Tunnel(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(r.dials(&tc).len(), 1, "{tc:?}");
    assert_eq!(r.core.network().tunnels, 3);
    assert_eq!(r.core.engine().config().hello_interval, S);
    // An older or equal version changes nothing.
    publish(
        &mut r,
        NetworkConfig {
            version: base.version + 1,
            tunnels: 1,
            ..base.clone()
        },
    );
    assert!(r.take().is_empty());
    assert_eq!(r.core.network().tunnels, 3);
}

#[test]
fn local_options_reload_live() {
    let mut r = Rig::new(2, true);
    let _ = r.take();
    let gw = crate::gateway::GatewayConfig::new(&["2001:db8::/32".parse().unwrap()], 10);
    let changed = r
        .core
        .handle_reconfigure(
            LiveOptions {
                tunnel_replacement: None,
                gateway: gw.clone(),
            },
            r.now,
        )
        .unwrap();
    assert_eq!(changed, vec!["gateway"]);
    let fib = r.take().into_iter().find_map(|c| match c {
        Command::PublishFib(routes) => Some(routes),
        _ => None,
    });
    let fib = fib.expect("the FIB is published again");
    assert!(
        fib.iter().any(|(p, _)| p.to_string() == "2001:db8::/32"),
        "{fib:?}"
    );
    // A gateway prefix inside the overlay is refused; nothing changes.
    let bad = crate::gateway::GatewayConfig::new(&[r.network.network], 0);
    assert!(
        r.core
            .handle_reconfigure(
                LiveOptions {
                    tunnel_replacement: None,
                    gateway: bad,
                },
                r.now,
            )
            .is_err()
    );
    let again = LiveOptions {
        tunnel_replacement: None,
        gateway: gw,
    };
    assert_eq!(
        r.core.handle_reconfigure(again, r.now).unwrap(),
        Vec::<&str>::new()
    );
}

#[test]
fn a_registry_that_gains_ipv4_gives_running_nodes_their_ipv4() {
    let mut r = Rig::new(1, false);
    let _ = r.take();
    let ipv4 = |cmds: &[Command]| {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Ipv4(v) => Some(*v),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let fib = |cmds: &[Command]| {
        cmds.iter()
            .rev()
            .find_map(|c| match c {
                Command::PublishFib(routes) => Some(routes.clone()),
                _ => None,
            })
            .expect("the FIB is published again")
    };
    assert!(r.core.status(r.now.mono).ipv4.is_none());
    // The network configuration gains IPv4: the host routes it, and the
    // FIB rejects its unknown addresses.
    let network: ipnet::Ipv4Net = "10.42.0.0/16".parse().unwrap();
    let cfg = NetworkConfig {
        version: r.network.version + 1,
        ipv4: Some(network),
        ..r.network.clone()
    };
    let signed = cfg.sign(&r.pki.ca).unwrap();
    r.registry(RegistryReply::Network {
        config: Box::new(cfg),
        signed: Box::new(signed),
    });
    let cmds = r.take();
    assert_eq!(
        ipv4(&cmds),
        vec![crate::node::core::HostIpv4 {
            subnet: None,
            network: Some(network),
        }]
    );
    let routes = fib(&cmds);
    assert!(
        routes.contains(&(network.into(), re6st_dataplane::fib::Route::Unreachable)),
        "{routes:?}"
    );
    // The renewed certificate holds a subnet: announced in Babel, local in
    // the FIB, given to the host, shown by the status.
    let subnet: ipnet::Ipv4Net = "10.42.7.0/24".parse().unwrap();
    let der = r
        .pki
        .ca
        .issue_node_with_ipv4(
            &r.me.public_key.spki_der,
            r.me.prefix,
            Some(subnet),
            crate::identity::IssueParams {
                serial: 78,
                not_before: r.pki.now,
                not_after: r.pki.now + 3600 * S,
            },
        )
        .unwrap();
    let renewed = crate::identity::NodeCert::from_der(&der).unwrap();
    r.registry(RegistryReply::Renewed(Box::new(renewed)));
    let cmds = r.take();
    assert_eq!(
        ipv4(&cmds),
        vec![crate::node::core::HostIpv4 {
            subnet: Some(subnet),
            network: Some(network),
        }]
    );
    assert!(
        r.core.engine().xroutes().contains(&(subnet.into(), 0)),
        "{:?}",
        r.core.engine().xroutes()
    );
    let routes = fib(&cmds);
    assert!(
        routes.contains(&(subnet.into(), re6st_dataplane::fib::Route::Local)),
        "{routes:?}"
    );
    let st = r.core.status(r.now.mono).ipv4.expect("IPv4 in the status");
    assert_eq!(st.address, std::net::Ipv4Addr::new(10, 42, 7, 1));
}

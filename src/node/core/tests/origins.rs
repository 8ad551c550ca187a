//! Origin keys on one node: certificates asked of the neighbour that
//! relayed a claim, checked before they are learnt, given to neighbours
//! that ask, forgotten when revoked.

use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use re6st_babel::wire::{Message, PacketBuilder, UpdateRepr};

use super::rig::{Rig, config};
use crate::identity::origin::router_id;
use crate::node::core::boundary::TunnelCmd;
use crate::test_pki::Pki;
use crate::transport::control::Control;

/// A relayed Update for `prefix`, originated by `rid`, without proof.
fn update(prefix: IpNet, rid: re6st_babel::wire::RouterId) -> Vec<u8> {
    let mut b = PacketBuilder::new(1400);
    b.push(&Message::Update(UpdateRepr {
        prefix: Some(prefix),
        interval: Duration::from_secs(16),
        seqno: 1,
        metric: 96,
        router_id: Some(rid),
        next_hop: None,
        proof: None,
    }))
    .unwrap();
    b.finish()
}

#[test]
fn origin_certificates_are_fetched_checked_given_and_revoked() {
    let mut r = Rig::with(1, false, config(), |n| n.max_tunnels = 9);
    let TunnelCmd::Accept { tunnel, .. } = r.incoming(0) else {
        panic!("refused")
    };
    let _ = r.take();
    // An origin we have no key for, relayed by peer 0.
    let (far, _) = r.pki.node(50);
    let rid = router_id(far.prefix);
    r.babel(tunnel, update(far.prefix.into(), rid));
    let asked: Vec<_> = r
        .tunnel_cmds()
        .into_iter()
        .filter_map(|c| match c {
            TunnelCmd::SendControl {
                tunnel: t,
                msg: Control::WantCerts(rids),
            } if t == tunnel => Some(rids),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![vec![rid]]);
    assert_eq!(r.core.engine().counters().origin.unknown_origin, 1);
    // The answer: a stranger's certificate with the same router-id is
    // not ours to trust, garbage does not parse, one nobody asked for is
    // ignored; the one asked for is learnt.
    let stranger = Pki::new().node(50).0;
    let asked_before = r.core.engine().counters().origin.proofs_asked;
    let (unasked, _) = r.pki.node(51);
    r.control(
        tunnel,
        Control::Certs(vec![
            Bytes::from(stranger.der.clone()),
            Bytes::from_static(b"\x30\x03\x02\x01\x00"),
            Bytes::from(unasked.der.clone()),
            Bytes::from(far.der.clone()),
        ]),
    );
    let s = r.core.cert_fetch_stats().clone();
    assert_eq!((s.rejected, s.unsolicited, s.learnt), (2, 1, 1), "{s:?}");
    assert!(r.core.origins().cert_of(rid).is_some());
    assert!(
        r.core
            .origins()
            .cert_of(router_id(unasked.prefix))
            .is_none()
    );
    // The neighbour is asked for the route again, with its proof.
    assert_eq!(
        r.core.engine().counters().origin.proofs_asked,
        asked_before + 1
    );
    let _ = r.take();
    // A neighbour asks: what we hold goes back, once each.
    r.control(
        tunnel,
        Control::WantCerts(vec![rid, rid, router_id(unasked.prefix)]),
    );
    let given: Vec<_> = r
        .tunnel_cmds()
        .into_iter()
        .filter_map(|c| match c {
            TunnelCmd::SendControl {
                msg: Control::Certs(c),
                ..
            } => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(given, vec![vec![Bytes::from(far.der.clone())]]);
    // Revoked: forgotten.
    let crl = r.pki.crl(2, &[far.serial]);
    r.control(tunnel, Control::Crl(crl.der.clone().into()));
    assert!(r.core.origins().cert_of(rid).is_none());
    assert_eq!(r.core.origins().stats().forgotten, 1);
}

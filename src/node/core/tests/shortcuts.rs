//! The shortcut replacement's direct RTT probes on one node: a bounded
//! random sample per refresh, answers counted, and no more probes once
//! the shell says it cannot probe. (That the fed policy shortens routes
//! is measured on the virtual network, `vnet` tests.)

use std::collections::BTreeSet;

use super::rig::{MS, Rig, S, config};
use crate::node::core::shortcuts::PROBES_PER_REFRESH;
use crate::node::core::{Command, ProbeError};
use crate::tunnels::Replacement;

fn probes(rig: &mut Rig) -> Vec<(ipnet::Ipv6Net, Vec<std::net::SocketAddr>)> {
    rig.take()
        .into_iter()
        .filter_map(|c| match c {
            Command::ProbeRtt { peer, addresses } => Some((peer, addresses)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_shortcut_node_probes_a_bounded_sample_each_refresh() {
    let mut rig = Rig::with(40, true, config(), |n| {
        n.tunnel_replacement = Replacement::Shortcut { random: 1 };
    });
    rig.advance(59 * S);
    assert!(probes(&mut rig).is_empty(), "nothing before the refresh");
    rig.advance(2 * S);
    let sent = probes(&mut rig);
    assert_eq!(sent.len(), PROBES_PER_REFRESH);
    let peers: BTreeSet<_> = sent.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers.len(), sent.len(), "each peer once");
    for (peer, addresses) in &sent {
        let p = rig.peers.iter().find(|p| p.cert.prefix == *peer).unwrap();
        assert_eq!(addresses, &vec![p.addr]);
    }
    let (now, me) = (rig.now, rig.me.prefix);
    rig.core.handle_probe_rtt(sent[0].0, Ok(40 * MS), now);
    rig.core
        .handle_probe_rtt(sent[1].0, Err(ProbeError::Lost), now);
    rig.core.handle_probe_rtt(sent[0].0, Ok(40 * MS), now);
    rig.core.handle_probe_rtt(me, Ok(MS), now);
    let s = rig.core.probe_stats().clone();
    assert_eq!((s.sent, s.measured, s.lost, s.unexpected), (32, 1, 1, 2));
    // The shell cannot probe: no more probes, ever.
    rig.core
        .handle_probe_rtt(sent[2].0, Err(ProbeError::Unsupported), now);
    rig.advance(121 * S);
    assert!(probes(&mut rig).is_empty());
    assert_eq!(rig.core.probe_stats().sent, 32);
}

#[test]
fn other_replacements_probe_nothing() {
    let mut rig = Rig::new(40, true);
    rig.advance(200 * S);
    assert!(probes(&mut rig).is_empty());
}

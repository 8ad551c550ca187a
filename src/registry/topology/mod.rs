//! The map of the network, from what nodes report in their announcements
//! (see [`crate::identity::Topology`]): nodes with their version and
//! gateway prefixes, tunnels (with who dialled and the RTT) and LAN links.
//! Drawn as JSON, Graphviz DOT ([`dot`]) or SVG ([`svg`]); the registry
//! serves the SVG at `GET /v1/topology.svg` and `re6st registry topology`
//! prints any of the three.
//!
//! It is the network as the nodes last told it: each node reports at
//! start and at every registry round, and the map shows when.

pub mod dot;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::identity::{LinkKind, PeerAnnouncement, SignedAnnouncement, unix_secs};

/// Most nodes drawn (a map bigger than this is cut, and says so).
pub const MAX_NODES: usize = 5000;

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapNode {
    /// Its prefix.
    pub prefix: Ipv6Net,
    /// Its software version (none: it did not report one).
    pub version: Option<String>,
    /// Prefixes it is a gateway for.
    pub gateways: Vec<Ipv6Net>,
    /// When the registry received its announcement (UNIX seconds; none:
    /// known only as someone's peer).
    pub announced: Option<u64>,
    /// Whether it reported its links (older nodes do not).
    pub reported: bool,
}

/// One link of the map (each pair once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapLink {
    /// One end (the dialler of a tunnel when known).
    pub a: Ipv6Net,
    /// The other end.
    pub b: Ipv6Net,
    /// `tunnel` or `lan`.
    pub kind: String,
    /// Round-trip time in milliseconds, as reported (the lower of the two
    /// ends').
    pub rtt_ms: Option<u32>,
    /// Whether both ends reported it.
    pub confirmed: bool,
}

/// The map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Map {
    /// The network prefix.
    pub network: Option<Ipv6Net>,
    /// When it was made (UNIX seconds).
    pub generated: u64,
    /// Nodes, by prefix.
    pub nodes: Vec<MapNode>,
    /// Links, by ends.
    pub links: Vec<MapLink>,
    /// Nodes left out (over [`MAX_NODES`]).
    pub truncated: usize,
}

impl Map {
    /// The map of `announcements` (verified when stored; each with when it
    /// was received).
    pub fn build(
        network: Option<Ipv6Net>,
        announcements: &[(SignedAnnouncement, u64)],
        now: SystemTime,
    ) -> Self {
        let mut nodes: BTreeMap<Ipv6Net, MapNode> = BTreeMap::new();
        // (low, high, lan) -> (dialler, rtt, reporters)
        type Key = (Ipv6Net, Ipv6Net, bool);
        type Seen = (Option<Ipv6Net>, Option<u32>, BTreeSet<Ipv6Net>);
        let mut links: BTreeMap<Key, Seen> = BTreeMap::new();
        for (signed, received) in announcements {
            let Ok(a) = serde_json::from_str::<PeerAnnouncement>(&signed.payload) else {
                continue;
            };
            let t = a.topology.unwrap_or_default();
            let reported = !t.links.is_empty() || !t.version.is_empty();
            nodes.insert(
                a.prefix,
                MapNode {
                    prefix: a.prefix,
                    version: (!t.version.is_empty()).then_some(t.version),
                    gateways: t.gateways,
                    announced: Some(*received),
                    reported,
                },
            );
            for l in t.links {
                if l.peer == a.prefix {
                    continue;
                }
                let lan = l.kind == LinkKind::Lan;
                let key = (a.prefix.min(l.peer), a.prefix.max(l.peer), lan);
                let e = links.entry(key).or_default();
                match l.kind {
                    LinkKind::Out => e.0 = Some(a.prefix),
                    LinkKind::In => e.0 = e.0.or(Some(l.peer)),
                    LinkKind::Lan => {}
                }
                e.1 = match (e.1, l.rtt_ms) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                e.2.insert(a.prefix);
            }
        }
        // Peers that did not announce themselves are still on the map.
        for (lo, hi, _) in links.keys() {
            for p in [lo, hi] {
                nodes.entry(*p).or_insert(MapNode {
                    prefix: *p,
                    version: None,
                    gateways: vec![],
                    announced: None,
                    reported: false,
                });
            }
        }
        let truncated = nodes.len().saturating_sub(MAX_NODES);
        let nodes: Vec<MapNode> = nodes.into_values().take(MAX_NODES).collect();
        let kept: BTreeSet<Ipv6Net> = nodes.iter().map(|n| n.prefix).collect();
        let links = links
            .into_iter()
            .filter(|((lo, hi, _), _)| kept.contains(lo) && kept.contains(hi))
            .map(|((lo, hi, lan), (dialler, rtt, by))| {
                let (a, b) = match dialler {
                    Some(d) if d == hi => (hi, lo),
                    _ => (lo, hi),
                };
                MapLink {
                    a,
                    b,
                    kind: if lan { "lan" } else { "tunnel" }.into(),
                    rtt_ms: rtt,
                    confirmed: by.contains(&lo) && by.contains(&hi),
                }
            })
            .collect();
        Self {
            network,
            generated: unix_secs(now),
            nodes,
            links,
            truncated,
        }
    }

    /// Nodes that report, tunnels and LAN links.
    pub fn counts(&self) -> (usize, usize, usize) {
        let lan = self.links.iter().filter(|l| l.kind == "lan").count();
        (self.nodes.len(), self.links.len() - lan, lan)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::{LinkReport, Topology};

    /// An announcement of `prefix` with `links`, as the registry stores it
    /// (the signature does not matter to the map).
    pub(crate) fn stored(prefix: &str, links: &[(&str, LinkKind)], gw: bool) -> SignedAnnouncement {
        let a = PeerAnnouncement {
            prefix: prefix.parse().unwrap(),
            addresses: vec!["192.0.2.1:4326".parse().unwrap()],
            timestamp: 1,
            tcp_port: None,
            topology: Some(Topology::new(
                "0.1.0",
                links
                    .iter()
                    .map(|(p, k)| LinkReport {
                        peer: p.parse().unwrap(),
                        kind: *k,
                        rtt_ms: Some(7),
                    })
                    .collect(),
                if gw {
                    vec!["::/0".parse().unwrap()]
                } else {
                    vec![]
                },
            )),
        };
        SignedAnnouncement {
            payload: serde_json::to_string(&a).unwrap(),
            signature: String::new(),
            certificate: String::new(),
        }
    }

    /// A synthetic network of `n` nodes, each dialling `k` others, every
    /// fifth pair on a LAN, node 0 a gateway, one node not reporting.
    pub(crate) fn synthetic(n: usize, k: usize) -> Map {
        let p = |i: usize| format!("fd00:5:{:x}:{:x}::/64", i / 65536, i % 65536);
        let mut links: Vec<Vec<(String, LinkKind)>> = vec![vec![]; n];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..n {
            for _ in 0..k {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let j = (x % n as u64) as usize;
                if j != i {
                    links[i].push((p(j), LinkKind::Out));
                    links[j].push((p(i), LinkKind::In));
                }
            }
            if i % 5 == 1 && i + 1 < n {
                links[i].push((p(i + 1), LinkKind::Lan));
                links[i + 1].push((p(i), LinkKind::Lan));
            }
        }
        let anns: Vec<_> = (0..n)
            .filter(|i| *i != 3)
            .map(|i| {
                let l: Vec<(&str, LinkKind)> =
                    links[i].iter().map(|(s, k)| (s.as_str(), *k)).collect();
                (stored(&p(i), &l, i == 0), 1_000)
            })
            .collect();
        Map::build(
            Some("fd00:5::/32".parse().unwrap()),
            &anns,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000),
        )
    }

    #[test]
    fn links_are_merged_confirmed_and_directed() {
        let anns = vec![
            (
                stored(
                    "fd00::/64",
                    &[
                        ("fd00:0:0:1::/64", LinkKind::Out),
                        ("fd00:0:0:2::/64", LinkKind::Lan),
                    ],
                    true,
                ),
                10,
            ),
            (
                stored("fd00:0:0:1::/64", &[("fd00::/64", LinkKind::In)], false),
                11,
            ),
        ];
        let m = Map::build(None, &anns, SystemTime::UNIX_EPOCH);
        assert_eq!(
            m.nodes.len(),
            3,
            "the LAN peer that did not announce is drawn"
        );
        assert!(!m.nodes[2].reported && m.nodes[2].announced.is_none());
        assert_eq!(m.nodes[0].gateways.len(), 1);
        assert_eq!(m.counts(), (3, 1, 1));
        let t = m.links.iter().find(|l| l.kind == "tunnel").unwrap();
        assert_eq!(t.a.to_string(), "fd00::/64", "the dialler first");
        assert!(t.confirmed);
        let lan = m.links.iter().find(|l| l.kind == "lan").unwrap();
        assert!(!lan.confirmed);
        // A garbage stored payload is skipped.
        let bad = SignedAnnouncement {
            payload: "{".into(),
            signature: String::new(),
            certificate: String::new(),
        };
        assert!(
            Map::build(None, &[(bad, 1)], SystemTime::UNIX_EPOCH)
                .nodes
                .is_empty()
        );
    }

    #[test]
    fn a_map_past_its_bound_is_truncated_and_says_so() {
        let m = synthetic(MAX_NODES + 1_000, 2);
        assert_eq!((m.nodes.len(), m.truncated), (MAX_NODES, 1_000));
        let kept: BTreeSet<Ipv6Net> = m.nodes.iter().map(|n| n.prefix).collect();
        assert!(!m.links.is_empty());
        assert!(
            (m.links.iter()).all(|l| kept.contains(&l.a) && kept.contains(&l.b)),
            "no link to a node left out"
        );
    }

    #[test]
    fn synthetic_500() {
        let m = synthetic(500, 10);
        let (n, t, lan) = m.counts();
        assert_eq!(n, 500);
        assert!(t > 4500 && lan == 100, "{t} {lan}");
    }
}

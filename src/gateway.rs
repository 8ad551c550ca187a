//! The gateway role: a node that announces a default route (or other
//! prefixes outside the overlay) into the overlay and forwards what it
//! receives for them to its own host, whose kernel routes it on (to the
//! internet, a data-centre network, another VPN...), as re6stnet's gateways do.
//!
//! In the overlay the prefix is a Babel xroute of the gateway, so every
//! node learns a route to it with the usual RTT metric, and with several
//! gateways each node uses the nearest. In the gateway's FIB the prefix is
//! [`Route::Local`]: packets from a tunnel go to the TUN and the host's
//! kernel forwards them (packets the host itself routes into the TUN for
//! such a prefix are refused, not looped back). The overlay network
//! keeps its reject route on every node, so an unknown overlay address
//! never leaks out through a default route.
//!
//! What the operator sets up on the hosts (the node does not touch the
//! routing of prefixes it does not own):
//!
//! - on the gateway: IPv6 forwarding
//!   (`sysctl -w net.ipv6.conf.all.forwarding=1`), and a way back for the
//!   answers: either the upstream routes the overlay network to the
//!   gateway, or the gateway masquerades it (`nft add rule ip6 nat
//!   postrouting ip6 saddr <overlay> oifname <uplink> masquerade`);
//! - on the other nodes: a route into the TUN for what should use the
//!   gateway, preferably source-specific so only overlay-sourced traffic
//!   takes it (re6stnet does the same): `ip -6 route add default from
//!   <overlay> dev re6st0`.
//!
//! IPv4 inside the overlay is out of scope (the dataplane carries IPv6).

use ipnet::{IpNet, Ipv6Net};
use re6st_dataplane::fib::Route;

/// Gateway settings: which prefixes this node offers the overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Prefixes announced and delivered to the host (`--gateway`, with
    /// `::/0` as the default when the flag has no value).
    pub prefixes: Vec<Ipv6Net>,
    /// Metric added to the announcement: a backup gateway announces a
    /// higher one so the primary is preferred while it is up.
    pub metric: u16,
}

/// Why a gateway prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The prefix overlaps the overlay network: it would steal the
    /// traffic of overlay nodes.
    #[error("gateway prefix {prefix} overlaps the overlay network {network}")]
    OverlapsOverlay {
        /// The prefix.
        prefix: Ipv6Net,
        /// The overlay network.
        network: Ipv6Net,
    },
    /// Link-local, multicast or loopback: never routed.
    #[error("gateway prefix {0} is not routable (link-local, multicast or loopback)")]
    NotRoutable(Ipv6Net),
    /// The metric is Babel's infinity.
    #[error("gateway metric {0} is infinite (at most 65534)")]
    InfiniteMetric(u16),
}

impl GatewayConfig {
    /// A gateway for `prefixes` (the default route when empty).
    pub fn new(prefixes: &[Ipv6Net], metric: u16) -> Self {
        let prefixes = if prefixes.is_empty() {
            vec![Ipv6Net::default()]
        } else {
            let mut p: Vec<Ipv6Net> = prefixes.iter().map(Ipv6Net::trunc).collect();
            p.sort();
            p.dedup();
            p
        };
        Self { prefixes, metric }
    }

    /// Whether this node is a gateway at all.
    pub fn is_enabled(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Checks the prefixes against the overlay `network`.
    pub fn validate(&self, network: Ipv6Net) -> Result<(), GatewayError> {
        if self.metric == u16::MAX {
            return Err(GatewayError::InfiniteMetric(self.metric));
        }
        for p in &self.prefixes {
            // ::/0 contains the overlay but is less specific: the reject
            // route of the overlay network wins the longest match.
            if network.contains(p) || (p.contains(&network) && p.prefix_len() > 0) {
                return Err(GatewayError::OverlapsOverlay {
                    prefix: *p,
                    network,
                });
            }
            let a = p.network();
            let never_routed = p.prefix_len() > 0
                && (a.is_multicast() || a.is_unicast_link_local() || a.is_loopback());
            if never_routed {
                return Err(GatewayError::NotRoutable(*p));
            }
        }
        Ok(())
    }

    /// The Babel xroutes to add: `(prefix, metric)`.
    pub fn xroutes(&self) -> impl Iterator<Item = (IpNet, u16)> + '_ {
        self.prefixes.iter().map(|p| (IpNet::V6(*p), self.metric))
    }

    /// The FIB entries of the gateway itself: its prefixes go to the host.
    pub fn fib_routes(&self) -> impl Iterator<Item = (Ipv6Net, Route)> + '_ {
        self.prefixes.iter().map(|p| (*p, Route::Local))
    }
}

#[cfg(test)]
mod tests {
    use re6st_dataplane::fib::Fib;

    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_route_when_no_prefix_is_given() {
        let g = GatewayConfig::new(&[], 0);
        assert_eq!(g.prefixes, vec![net("::/0")]);
        assert!(g.is_enabled());
        assert!(!GatewayConfig::default().is_enabled());
        assert_eq!(
            g.xroutes().collect::<Vec<_>>(),
            vec![("::/0".parse().unwrap(), 0)]
        );
    }

    #[test]
    fn prefixes_are_normalised() {
        let g = GatewayConfig::new(&[net("2001:db8:1::5/48"), net("2001:db8:1::/48")], 7);
        assert_eq!(g.prefixes, vec![net("2001:db8:1::/48")]);
    }

    #[test]
    fn overlapping_or_unroutable_prefixes_are_refused() {
        let overlay = net("fd00:77::/48");
        let v = |p: &str| GatewayConfig::new(&[net(p)], 0).validate(overlay);
        assert_eq!(v("::/0"), Ok(()));
        assert_eq!(v("2000::/3"), Ok(()));
        assert_eq!(v("fd00:1::/64"), Ok(()));
        assert!(matches!(
            v("fd00:77:0:5::/64"),
            Err(GatewayError::OverlapsOverlay { .. })
        ));
        assert!(matches!(
            v("fd00::/8"),
            Err(GatewayError::OverlapsOverlay { .. })
        ));
        assert!(matches!(v("fe80::/64"), Err(GatewayError::NotRoutable(_))));
        assert!(matches!(v("ff00::/8"), Err(GatewayError::NotRoutable(_))));
        assert!(matches!(
            GatewayConfig::new(&[], u16::MAX).validate(overlay),
            Err(GatewayError::InfiniteMetric(_))
        ));
    }

    /// The gateway's FIB: outside addresses go to the host, overlay
    /// addresses keep their reject route and own prefix.
    #[test]
    fn gateway_fib_delivers_outside_traffic_to_the_host() {
        let g = GatewayConfig::new(&[], 0);
        let mut routes = vec![
            (net("fd00:77::/48"), Route::Unreachable),
            (net("fd00:77:0:5::/64"), Route::Local),
        ];
        routes.extend(g.fib_routes());
        let fib = Fib::from_routes(routes);
        let lookup = |a: &str| fib.lookup(a.parse().unwrap());
        assert_eq!(lookup("fd00:1::2"), Some(Route::Local));
        assert_eq!(lookup("2a01::1"), Some(Route::Local));
        assert_eq!(lookup("fd00:77:0:9::1"), Some(Route::Unreachable));
    }
}

//! The node's edges, gathered for the router task: the address
//! book ([`crate::addresses`]), the UPnP port mapper ([`crate::upnp`]), LAN
//! discovery ([`crate::lan`]) and the gateway prefixes
//! ([`crate::gateway`]). The router owns one [`Edges`]; it waits on
//! [`Edges::next`] with its other inputs and calls the small hooks below
//! where tunnels come and go.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::EdgesConfig;
use crate::addresses::{AddressConfig, Addresses, Candidate};
use crate::gateway::GatewayConfig;
use crate::identity::tls::CaVerifier;
use crate::identity::{NodeCert, NodeKey};
use crate::lan::{DiscoveryStats, LanCmd, LanEvent, LanInterfaces, LanPeer, LanService, LanStatus};
use crate::upnp::{Mapping, PortMapper};

/// Something that happened at the edges.
#[derive(Debug)]
pub(crate) enum EdgeEvent {
    /// The UPnP mapping changed (`None`: gone).
    Upnp(Option<Mapping>),
    /// LAN discovery has news.
    Lan(LanEvent),
}

/// What the edges report in `re6st status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EdgesStatus {
    /// Every address candidate, announced or not and why.
    pub addresses: Vec<Candidate>,
    /// Peers see us through a NAT (so we are reachable only through the
    /// announced addresses, if any).
    pub behind_nat: bool,
    /// Nothing to announce: the node dials out only.
    pub dial_out_only: bool,
    /// The UPnP mapping in force.
    pub upnp: Option<Mapping>,
    /// Nodes heard on a LAN: prefix and link-local address.
    pub lan_neighbours: Vec<(Ipv6Net, String)>,
    /// Prefixes we offer as a gateway.
    pub gateway: Vec<Ipv6Net>,
    /// LAN beacon counters, as of the last look (at most
    /// [`LAN_STATUS_EVERY`] old; `None`: LAN discovery is off or has not
    /// answered yet).
    pub lan_beacons: Option<DiscoveryStats>,
}

/// How often the router asks LAN discovery (its own task) for its
/// counters, so that `re6st status` and the metrics, answered
/// synchronously by the router, show them without waiting for that task.
pub const LAN_STATUS_EVERY: Duration = Duration::from_secs(5);

impl EdgesStatus {
    /// The control API's view (`re6st status`).
    pub fn info(&self) -> crate::control::api::EdgesInfo {
        crate::control::api::EdgesInfo {
            addresses: self
                .addresses
                .iter()
                .map(|c| crate::control::api::AddressInfo {
                    addr: c.addr,
                    source: serde_json::to_value(c.source)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    announced: c.announced,
                    reason: c.reason.map(str::to_owned),
                })
                .collect(),
            behind_nat: self.behind_nat,
            dial_out_only: self.dial_out_only,
            upnp: self
                .upnp
                .map(|m| (SocketAddr::V4(m.external), SocketAddr::V4(m.internal))),
            lan_neighbours: self.lan_neighbours.clone(),
            lan_links: 0,
            gateway: self.gateway.clone(),
            lan_beacons: self
                .lan_beacons
                .as_ref()
                .and_then(|s| serde_json::from_value(serde_json::to_value(s).ok()?).ok())
                .unwrap_or_default(),
        }
    }
}

/// The edge parts of one running node.
pub(crate) struct Edges {
    pub(crate) addresses: Addresses,
    pub(crate) gateway: GatewayConfig,
    upnp: Option<(PortMapper, watch::Receiver<Option<Mapping>>)>,
    mapping: Option<Mapping>,
    lan: Option<(LanService, mpsc::Receiver<LanEvent>)>,
    lan_neighbours: BTreeMap<Ipv6Net, LanPeer>,
    /// The last beacon counters of LAN discovery, the question out and
    /// when to ask again.
    lan_beacons: Option<DiscoveryStats>,
    lan_asked: Option<oneshot::Receiver<LanStatus>>,
    next_lan_status: Instant,
    config: EdgesConfig,
    next_scan: Instant,
    /// The last announced set, to notice changes.
    announced: Vec<SocketAddr>,
}

impl Edges {
    /// Starts the edge services of a node bound to `bound`. Must run in a
    /// tokio runtime.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        config: &EdgesConfig,
        advertise: &[SocketAddr],
        bound: SocketAddr,
        network: Ipv6Net,
        cert: &NodeCert,
        key: &Arc<NodeKey>,
        verifier: Arc<CaVerifier>,
        now: Instant,
    ) -> anyhow::Result<Self> {
        config
            .gateway
            .validate(network)
            .map_err(|e| anyhow::anyhow!("--gateway: {e}"))?;
        let mut addresses = Addresses::new(
            AddressConfig {
                configured: advertise.to_vec(),
                routable: config.routable.clone(),
                overlay: Some(network),
            },
            bound,
        );
        scan(&mut addresses);
        // UPnP maps IPv4; a socket bound to one IPv6 address has no use
        // for it.
        let v6_only = matches!(bound, SocketAddr::V6(a) if !a.ip().is_unspecified());
        let upnp = config.upnp.clone().filter(|_| !v6_only).map(|c| {
            let m = PortMapper::spawn(c, bound.port());
            let rx = m.subscribe();
            (m, rx)
        });
        let lan = if config.lan.interfaces == LanInterfaces::Off {
            None
        } else {
            let (tx, rx) = mpsc::channel(64);
            let svc = LanService::spawn(
                config.lan.clone(),
                cert.clone(),
                key.clone(),
                verifier,
                bound.port(),
                tx,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "LAN discovery: cannot bind UDP port {}: {e}",
                    config.lan.port
                )
            })?;
            Some((svc, rx))
        };
        let announced = addresses.announce();
        Ok(Self {
            addresses,
            gateway: config.gateway.clone(),
            upnp,
            mapping: None,
            lan,
            lan_neighbours: BTreeMap::new(),
            lan_beacons: None,
            lan_asked: None,
            next_lan_status: now,
            config: config.clone(),
            next_scan: now + config.address_scan,
            announced,
        })
    }

    /// The next event; pending forever when no edge service runs.
    pub(crate) async fn next(&mut self) -> EdgeEvent {
        let upnp = async {
            match &mut self.upnp {
                Some((_, rx)) => match rx.changed().await {
                    Ok(()) => *rx.borrow_and_update(),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let lan = async {
            match &mut self.lan {
                Some((_, rx)) => match rx.recv().await {
                    Some(e) => e,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = upnp => EdgeEvent::Upnp(m),
            e = lan => EdgeEvent::Lan(e),
        }
    }

    /// Applies an event to the edge state (the router acts on LAN dials
    /// itself). Returns whether the announced addresses changed.
    pub(crate) fn handle(&mut self, ev: &EdgeEvent) -> bool {
        match ev {
            EdgeEvent::Upnp(m) => {
                self.mapping = *m;
                self.addresses
                    .set_upnp(m.map(|m| SocketAddr::V4(m.external)));
            }
            EdgeEvent::Lan(LanEvent::Found(p) | LanEvent::Dial(p)) => {
                self.lan_neighbours.insert(p.prefix, *p);
            }
            EdgeEvent::Lan(LanEvent::Lost(prefix)) => {
                self.lan_neighbours.remove(prefix);
            }
        }
        self.announce_changed()
    }

    /// Time passed: rescan the interfaces when due, expire old
    /// observations. Returns whether the announced addresses changed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> bool {
        if now >= self.next_scan {
            self.next_scan = now + self.config.address_scan;
            scan(&mut self.addresses);
        }
        self.addresses.handle_timeout(now);
        self.poll_lan_status(now);
        self.announce_changed()
    }

    /// Takes the LAN counters asked for last time, if they came, and asks
    /// again every [`LAN_STATUS_EVERY`].
    fn poll_lan_status(&mut self, now: Instant) {
        if let Some(rx) = &mut self.lan_asked {
            match rx.try_recv() {
                Ok(s) => {
                    self.lan_beacons = Some(s.stats);
                    self.lan_asked = None;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.lan_asked = None,
            }
        }
        if self.lan.is_some() && self.lan_asked.is_none() && now >= self.next_lan_status {
            self.next_lan_status = now + LAN_STATUS_EVERY;
            let (tx, rx) = oneshot::channel();
            self.lan_cmd(LanCmd::Status(tx));
            self.lan_asked = Some(rx);
        }
    }

    /// A peer saw us at `addr` (dialler side of a handshake).
    pub(crate) fn handle_observed(&mut self, addr: SocketAddr, now: Instant) -> bool {
        self.addresses.handle_observed(addr, now);
        self.announce_changed()
    }

    /// A peer reached us at our local address `ip`.
    pub(crate) fn handle_reached(&mut self, ip: Option<IpAddr>, now: Instant) -> bool {
        if let Some(ip) = ip {
            self.addresses.handle_reached(ip, now);
        }
        self.announce_changed()
    }

    fn announce_changed(&mut self) -> bool {
        let now = self.addresses.announce();
        if now == self.announced {
            return false;
        }
        tracing::info!(addresses = ?now, "announced addresses changed");
        if now.is_empty() {
            tracing::warn!(
                "no reachable address: this node dials out only (behind NAT? see `re6st status`, \
                 --upnp, --advertise, --routable)"
            );
        }
        self.announced = now;
        true
    }

    /// Whether LAN discovery runs.
    pub(crate) fn lan_enabled(&self) -> bool {
        self.lan.is_some()
    }

    /// Tells LAN discovery something (dropped if it is busy: it re-learns
    /// from beacons).
    pub(crate) fn lan_cmd(&self, cmd: LanCmd) {
        if let Some((svc, _)) = &self.lan {
            let _ = svc.cmd.try_send(cmd);
        }
    }

    /// The status.
    pub(crate) fn status(&self) -> EdgesStatus {
        let addresses = self.addresses.candidates();
        EdgesStatus {
            dial_out_only: !addresses.iter().any(|c| c.announced),
            addresses,
            behind_nat: self.addresses.behind_nat(),
            upnp: self.mapping,
            lan_neighbours: self
                .lan_neighbours
                .values()
                .map(|p| (p.prefix, p.addr.to_string()))
                .collect(),
            gateway: self.gateway.prefixes.clone(),
            lan_beacons: self.lan_beacons.clone(),
        }
    }

    /// Stops the services; removes the UPnP mapping from the router.
    pub(crate) async fn shutdown(&mut self) {
        self.lan = None;
        if let Some((m, _)) = self.upnp.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), m.shutdown()).await;
        }
    }
}

/// The edge settings of `re6st node` from its options: UPnP on unless
/// `--no-upnp`, LAN discovery on the `--lan` interfaces, `--gateway`
/// prefixes, `--routable` networks.
pub(crate) fn config_from(opts: &super::NodeOptions) -> EdgesConfig {
    EdgesConfig {
        routable: opts.routable.clone(),
        upnp: (!opts.no_upnp).then(crate::upnp::UpnpConfig::default),
        lan: crate::lan::LanConfig {
            interfaces: LanInterfaces::from_args(&opts.lan),
            ..crate::lan::LanConfig::default()
        },
        gateway: if opts.gateway.is_empty() {
            GatewayConfig::default()
        } else {
            GatewayConfig::new(&opts.gateway, opts.gateway_metric.unwrap_or(0))
        },
        ..EdgesConfig::default()
    }
}

/// Feeds a fresh interface scan to the address book.
fn scan(addresses: &mut Addresses) {
    match crate::addresses::interface_addresses() {
        Ok(ips) => {
            addresses.set_local(ips);
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the interface addresses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::options::tests::flags;

    #[test]
    fn edge_options_from_flags_and_file() {
        let d = config_from(&flags(&[]));
        assert!(d.upnp.is_some(), "UPnP is on by default");
        assert_eq!(d.lan.interfaces, LanInterfaces::Off);
        assert!(!d.gateway.is_enabled());

        let c = config_from(&flags(&[
            "--no-upnp",
            "--lan",
            "eth0",
            "--lan",
            "wlan0",
            "--gateway",
            "--routable",
            "10.0.0.0/8",
        ]));
        assert!(c.upnp.is_none());
        assert_eq!(
            c.lan.interfaces,
            LanInterfaces::Named(vec!["eth0".into(), "wlan0".into()])
        );
        assert_eq!(c.gateway.prefixes, vec!["::/0".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(c.routable, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            config_from(&flags(&["--lan", "all"])).lan.interfaces,
            LanInterfaces::All
        );

        let file: super::super::NodeOptions = toml::from_str(
            r#"
            no-upnp = true
            lan = ["all"]
            gateway = ["2001:db8::/32", "::/0"]
            gateway-metric = 5
            routable = ["fd00:1::/64"]
            "#,
        )
        .unwrap();
        let m = flags(&["--gateway", "2001:db8:1::/48"]).merge(file);
        let c = config_from(&m);
        assert!(c.upnp.is_none());
        assert_eq!(c.lan.interfaces, LanInterfaces::All);
        assert_eq!(
            c.gateway.prefixes,
            vec!["2001:db8:1::/48".parse::<Ipv6Net>().unwrap()]
        );
        assert_eq!(c.gateway.metric, 5);
        assert_eq!(c.routable, vec!["fd00:1::/64".parse().unwrap()]);
    }
}

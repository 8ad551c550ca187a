//! The edge services of a running node, for the control loop: the UPnP
//! port mapper ([`crate::upnp`]) and LAN discovery ([`crate::lan`]), each a
//! task with a socket of its own, and the listing of the interface
//! addresses. What their news means (addresses to announce, LAN links to
//! dial) is NodeCore's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::config::EdgesConfig;
use super::core::LanNotice;
use crate::identity::tls::CaVerifier;
use crate::identity::{NodeCert, NodeKey};
use crate::lan::{DiscoveryStats, LanCmd, LanEvent, LanInterfaces, LanService, LanStatus};
use crate::upnp::{Mapping, PortMapper};

/// Something that happened at the edges.
#[derive(Debug)]
pub(crate) enum EdgeEvent {
    /// The UPnP mapping changed (`None`: gone).
    Upnp(Option<Mapping>),
    /// LAN discovery has news.
    Lan(LanEvent),
}

/// How often the control loop asks LAN discovery (its own task) for its
/// counters, so that `re6st status` and the metrics, answered at once, show
/// them without waiting for that task.
pub const LAN_STATUS_EVERY: Duration = Duration::from_secs(5);

/// The edge services of one running node.
pub(crate) struct EdgeServices {
    upnp: Option<(PortMapper, watch::Receiver<Option<Mapping>>)>,
    lan: Option<(LanService, mpsc::Receiver<LanEvent>)>,
    key: Arc<NodeKey>,
    /// The last beacon counters of LAN discovery, the question out and
    /// when to ask again.
    lan_beacons: Option<DiscoveryStats>,
    lan_asked: Option<oneshot::Receiver<LanStatus>>,
    next_lan_status: Instant,
}

impl EdgeServices {
    /// Starts the edge services of a node bound to `bound`. Must run in a
    /// tokio runtime.
    pub(crate) fn start(
        config: &EdgesConfig,
        bound: SocketAddr,
        cert: &NodeCert,
        key: &Arc<NodeKey>,
        verifier: Arc<CaVerifier>,
        now: Instant,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            upnp,
            lan,
            key: key.clone(),
            lan_beacons: None,
            lan_asked: None,
            next_lan_status: now,
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

    /// Tells LAN discovery what NodeCore decided (dropped if it is busy:
    /// it re-learns from beacons).
    pub(crate) fn lan_notice(&self, n: LanNotice) {
        let cmd = match n {
            LanNotice::LinkUp(p) => LanCmd::LinkUp(p),
            LanNotice::LinkDown { prefix, failed } => LanCmd::LinkDown { prefix, failed },
            LanNotice::Verifier(v) => LanCmd::Verifier(v),
            LanNotice::Identity(cert) => LanCmd::Identity(cert, self.key.clone()),
        };
        self.lan_cmd(cmd);
    }

    fn lan_cmd(&self, cmd: LanCmd) {
        if let Some((svc, _)) = &self.lan {
            let _ = svc.cmd.try_send(cmd);
        }
    }

    /// Takes the LAN counters asked for last time, if they came, and asks
    /// again every [`LAN_STATUS_EVERY`]; returns when to call again.
    pub(crate) fn poll_lan_status(&mut self, now: Instant) -> Option<Instant> {
        self.lan.as_ref()?;
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
        if self.lan_asked.is_none() && now >= self.next_lan_status {
            self.next_lan_status = now + LAN_STATUS_EVERY;
            let (tx, rx) = oneshot::channel();
            self.lan_cmd(LanCmd::Status(tx));
            self.lan_asked = Some(rx);
        }
        Some(self.next_lan_status)
    }

    /// LAN beacon counters, as of the last look.
    pub(crate) fn lan_beacons(&self) -> Option<DiscoveryStats> {
        self.lan_beacons.clone()
    }

    /// Stops the services; removes the UPnP mapping from the router.
    pub(crate) async fn shutdown(&mut self) {
        self.lan = None;
        if let Some((m, _)) = self.upnp.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), m.shutdown()).await;
        }
    }
}

/// The local interface addresses (errors are logged: none then).
pub(crate) fn scan_addresses() -> Vec<IpAddr> {
    match crate::addresses::interface_addresses() {
        Ok(ips) => ips,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the interface addresses");
            Vec::new()
        }
    }
}

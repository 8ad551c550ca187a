//! One NodeCore on a test bench: a throwaway PKI, peers with signed
//! announcements, virtual clocks, and the commands it gave since the last
//! look.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::identity::{NetworkConfig, NodeCert, NodeKey, SignedAnnouncement};
use crate::node::core::boundary::{ConnId, Handshake, NextHopId, TunnelCmd, TunnelEvent, TunnelId};
use crate::node::core::{Command, CoreParts, NodeCore, Now, RegistryReply};
use crate::node::{CoreConfig, NodeConfig};
use crate::test_pki::Pki;
use crate::transport::control::Control;

pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const S: Duration = Duration::from_secs(1);

pub(super) struct Peer {
    pub(super) cert: NodeCert,
    pub(super) key: NodeKey,
    pub(super) addr: SocketAddr,
    pub(super) announcement: SignedAnnouncement,
}

pub(super) struct Rig {
    pub(super) pki: Pki,
    pub(super) core: NodeCore,
    pub(super) now: Now,
    pub(super) me: NodeCert,
    pub(super) peers: Vec<Peer>,
    pub(super) network: NetworkConfig,
    next_conn: u64,
}

/// The settings of a bench node: k = 2, a registry, short timers.
pub(super) fn config() -> CoreConfig {
    let mut c = NodeConfig::default().core(Some("https://registry.invalid".into()));
    c.bootstrap_retry = 5 * S;
    c.backoff_min = 2 * S;
    c.driver.linger = 200 * MS;
    c.driver.peer_wait = 3 * S;
    c
}

pub(super) fn network(pki: &Pki) -> NetworkConfig {
    NetworkConfig {
        tunnels: 2,
        max_tunnels: 4,
        tunnel_refresh_secs: 60,
        ..NetworkConfig::defaults(pki.network, "https://registry.invalid".into())
    }
}

impl Rig {
    /// Node 1 with `peers` peers (serials 2..) known from its state
    /// directory when `known`.
    pub(super) fn new(peers: usize, known: bool) -> Self {
        Self::with(peers, known, config(), |_| {})
    }

    pub(super) fn with(
        n: usize,
        known: bool,
        config: CoreConfig,
        net: impl FnOnce(&mut NetworkConfig),
    ) -> Self {
        let pki = Pki::new();
        let (me, key) = pki.node(1);
        let peers: Vec<Peer> = (2..2 + n as u64)
            .map(|s| {
                let (cert, key) = pki.node(s);
                let addr = SocketAddr::from(([192, 0, 2, s as u8], 4326));
                let announcement = pki.announce(&cert, &key, &addr.to_string(), Duration::ZERO);
                Peer {
                    cert,
                    key,
                    addr,
                    announcement,
                }
            })
            .collect();
        let mut network = network(&pki);
        net(&mut network);
        let now = Now {
            mono: Instant::now(),
            wall: pki.now,
        };
        let stored_peers = if known {
            peers
                .iter()
                .map(|p| (p.cert.prefix.to_string(), p.announcement.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let core = NodeCore::new(
            CoreParts {
                config,
                network: network.clone(),
                cert: me.clone(),
                key: Arc::new(key),
                ca_der: pki.ca.cert_der().to_vec(),
                crl: None,
                bound: SocketAddr::from(([192, 0, 2, 1], 4326)),
                local_addresses: vec![IpAddr::from([192, 0, 2, 1])],
                seqno_file: None,
                stored_peers,
                rng: StdRng::seed_from_u64(5),
            },
            now,
        )
        .expect("the bench node starts");
        let mut rig = Self {
            pki,
            core,
            now,
            me,
            peers,
            network,
            next_conn: 0,
        };
        // What is due at start (the first maintenance, registry round).
        rig.advance(Duration::ZERO);
        rig
    }

    /// The commands given since the last call.
    pub(super) fn take(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.core.poll_command()).collect()
    }

    /// The tunnel commands given since the last call.
    pub(super) fn tunnel_cmds(&mut self) -> Vec<TunnelCmd> {
        self.take()
            .into_iter()
            .filter_map(|c| match c {
                Command::Tunnel(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// Both clocks move on by `d`; NodeCore wakes at each of its
    /// deadlines on the way, as its loop would make it.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now.mono + d;
        loop {
            let t = self.core.poll_timeout().max(self.now.mono);
            if t > end {
                break;
            }
            self.set_time(t);
            self.core.handle_timeout(self.now);
            // A deadline that does not move would spin the node's loop.
            assert!(
                self.core.poll_timeout() > self.now.mono,
                "poll_timeout stuck at now: engine {:?} driver {:?} now {:?}",
                self.core
                    .engine()
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(self.now.mono)),
                self.core
                    .driver()
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(self.now.mono)),
                self.now.mono
            );
        }
        self.set_time(end);
        self.core.handle_timeout(self.now);
    }

    fn set_time(&mut self, t: Instant) {
        self.now.wall += t - self.now.mono;
        self.now.mono = t;
    }

    pub(super) fn event(&mut self, ev: TunnelEvent) {
        self.core.handle_tunnel_event(ev, self.now);
    }

    pub(super) fn registry(&mut self, reply: RegistryReply) {
        self.core.handle_registry(reply, self.now);
    }

    /// What a handshake with peer `i` tells NodeCore.
    pub(super) fn handshake(&self, i: usize) -> Box<Handshake> {
        let p = &self.peers[i];
        Box::new(Handshake {
            peer: p.cert.clone(),
            peer_crl: 0,
            remote: p.addr,
            local_ip: Some(IpAddr::from([192, 0, 2, 1])),
            observed: Some(SocketAddr::from(([192, 0, 2, 1], 4326))),
            rtt: 20 * MS,
            max_datagram: Some(1300),
        })
    }

    /// Peer `i` dials us; NodeCore's answer.
    pub(super) fn incoming(&mut self, i: usize) -> TunnelCmd {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let handshake = self.handshake(i);
        self.event(TunnelEvent::Incoming { conn, handshake });
        self.tunnel_cmds()
            .into_iter()
            .find(|c| {
                matches!(c, TunnelCmd::Accept { conn: k, .. } | TunnelCmd::Refuse { conn: k, .. } if *k == conn)
            })
            .expect("an answer to the incoming connection")
    }

    /// The dials NodeCore asked for: (tunnel, peer index).
    pub(super) fn dials(&self, cmds: &[TunnelCmd]) -> Vec<(TunnelId, usize)> {
        cmds.iter()
            .filter_map(|c| match c {
                TunnelCmd::Dial { tunnel, peer, .. } => {
                    let i = self.peers.iter().position(|p| p.cert.address == *peer)?;
                    Some((*tunnel, i))
                }
                _ => None,
            })
            .collect()
    }

    /// Answers the dial of `tunnel` with peer `i`'s handshake; the next
    /// hop NodeCore gives it.
    pub(super) fn dialled(&mut self, tunnel: TunnelId, i: usize) -> Option<NextHopId> {
        let result = Ok(self.handshake(i));
        self.event(TunnelEvent::Dialled { tunnel, result });
        self.tunnel_cmds().into_iter().find_map(|c| match c {
            TunnelCmd::Up { tunnel: t, hop } if t == tunnel => Some(hop),
            _ => None,
        })
    }

    /// Brings up every dial NodeCore asked for; their tunnels.
    pub(super) fn all_up(&mut self) -> Vec<(TunnelId, usize)> {
        let cmds = self.tunnel_cmds();
        let dials = self.dials(&cmds);
        for (t, i) in &dials {
            self.dialled(*t, *i).expect("kept");
        }
        dials
    }

    /// A control message from the peer of `tunnel`.
    pub(super) fn control(&mut self, tunnel: TunnelId, msg: Control) {
        self.event(TunnelEvent::Control { tunnel, msg });
    }

    /// A Babel packet on `tunnel`.
    pub(super) fn babel(&mut self, tunnel: TunnelId, bytes: Vec<u8>) {
        self.event(TunnelEvent::Babel {
            tunnel,
            bytes: Bytes::from(bytes),
        });
    }

    /// The state `re6st status` shows for `tunnel`.
    pub(super) fn state(&self, tunnel: TunnelId) -> Option<&'static str> {
        self.core
            .status(self.now.mono)
            .tunnels
            .iter()
            .find(|t| t.id == tunnel.0)
            .map(|t| t.state)
    }
}

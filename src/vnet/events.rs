//! The event loop of the virtual network: what happens at each event, the
//! start of a node, and carrying out a NodeCore's commands (its tunnel
//! commands go to [`super::packet_loop`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::Ipv6Net;
use rand::SeedableRng;
use rand::rngs::StdRng;
use re6st_dataplane::fib::Fib;

use super::transport::{self, End};
use super::{Network, NodeCore};
use crate::node::core::boundary::TunnelEvent;
use crate::node::core::{Command, CoreParts, PeerChange, ProbeError, RegistryReply, SEQNO_FILE};

#[derive(Debug)]
pub(super) enum Ev {
    Start(usize),
    Wake(usize),
    Tunnel(usize, TunnelEvent),
    Registry(usize, RegistryReply),
    /// A dial's handshake reaches its target.
    Incoming {
        from: End,
        to: usize,
    },
    /// An IPv6 packet reaches the far end of the connection it was sent
    /// on (lost if that closed meanwhile).
    Packet {
        end: End,
        bytes: Bytes,
        ttl: u8,
    },
    /// The answer to node `node`'s probe of `peer`'s RTT.
    ProbeRtt {
        node: usize,
        peer: Ipv6Net,
        result: Result<Duration, ProbeError>,
    },
    /// The liveness clock of an end: report its silence (or close it).
    Liveness {
        end: End,
        silence: u64,
        closed: bool,
    },
}

pub(super) struct Scheduled {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) epoch: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl Network {
    pub(super) fn handle(&mut self, epoch: u64, ev: Ev) {
        match ev {
            Ev::Start(i) => self.start(i, epoch),
            Ev::Wake(i) => {
                if !self.alive(i, epoch) || self.nodes[i].wake != Some(self.now) {
                    return;
                }
                self.nodes[i].wake = None;
                let now = self.now_of(i);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_timeout(now);
                }
                self.drain(i);
            }
            Ev::Tunnel(i, ev) => {
                if !self.alive(i, epoch) {
                    return;
                }
                if let TunnelEvent::Closed { tunnel, .. } = &ev {
                    self.transport.closed((i, *tunnel));
                }
                let now = self.now_of(i);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_tunnel_event(ev, now);
                }
                self.drain(i);
            }
            Ev::Registry(i, reply) => {
                if !self.alive(i, epoch) {
                    return;
                }
                let now = self.now_of(i);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_registry(reply, now);
                }
                self.drain(i);
            }
            Ev::ProbeRtt { node, peer, result } => {
                if !self.alive(node, epoch) {
                    return;
                }
                let now = self.now_of(node);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_probe_rtt(peer, result, now);
                }
                self.drain(node);
            }
            Ev::Incoming { from, to } => self.incoming(from, to, epoch),
            Ev::Packet { end, bytes, ttl } => {
                if self.alive(end.0, epoch) && self.transport.conns.contains_key(&end) {
                    self.route_packet(end.0, bytes, ttl);
                } else {
                    self.stats.packets_dropped += 1;
                }
            }
            Ev::Liveness {
                end,
                silence,
                closed,
            } => {
                let Some(c) = self.transport.conns.get(&end) else {
                    return;
                };
                if c.silent != Some(silence) || !self.alive(end.0, epoch) {
                    return;
                }
                let tunnel = end.1;
                let ev = if closed {
                    self.transport.closed(end);
                    TunnelEvent::Closed {
                        tunnel,
                        reason: "idle timeout".into(),
                    }
                } else {
                    TunnelEvent::Silent {
                        tunnel,
                        silent_for: self.config.suspect_after,
                    }
                };
                let now = self.now_of(end.0);
                if let Some(core) = self.nodes[end.0].core.as_mut() {
                    core.handle_tunnel_event(ev, now);
                }
                self.drain(end.0);
            }
        }
    }
    pub(super) fn start(&mut self, i: usize, epoch: u64) {
        if self.nodes[i].epoch != epoch || self.nodes[i].core.is_some() {
            return;
        }
        let now = self.now_of(i);
        let node = &self.nodes[i];
        let mut config = self.config.core.clone();
        config.advertise = vec![node.addr];
        if self.config.registry_delay.is_none() {
            config.registry = None;
        }
        if let Some(tweak) = &self.config.tweak {
            tweak(i, &mut config);
        }
        let parts = CoreParts {
            config,
            network: self.config.network.clone(),
            cert: node.cert.clone(),
            key: node.key.clone(),
            ca_der: self.pki.ca.cert_der().to_vec(),
            crl: None,
            bound: node.addr,
            local_addresses: vec![node.addr.ip()],
            seqno_file: node.state.seqno.clone(),
            stored_peers: node.state.peers.values().cloned().collect(),
            rng: StdRng::seed_from_u64(self.config.seed ^ ((i as u64 + 1) << 20) ^ epoch),
        };
        match NodeCore::new(parts, now) {
            Ok(core) => {
                self.nodes[i].core = Some(core);
                self.drain(i);
            }
            Err(e) => self.note(format!("n{i} did not start: {e}")),
        }
    }
    pub(super) fn note(&mut self, violation: String) {
        if self.violation.is_none() {
            tracing::error!(violation, "virtual network invariant broken");
            self.violation = Some(violation);
        }
    }
    /// Carries out every command of node `i`, then schedules its wake-up
    /// and checks it.
    pub(super) fn drain(&mut self, i: usize) {
        loop {
            let Some(cmd) = self.nodes[i].core.as_mut().and_then(NodeCore::poll_command) else {
                break;
            };
            self.command(i, cmd);
        }
        let Some(t) = self.nodes[i].core.as_ref().map(NodeCore::poll_timeout) else {
            return;
        };
        let t = t.max(self.now);
        if self.nodes[i].wake.is_none_or(|w| t < w) {
            self.nodes[i].wake = Some(t);
            let epoch = self.nodes[i].epoch;
            self.schedule(t - self.now, epoch, Ev::Wake(i));
        }
        if self.config.check {
            let r = self.nodes[i]
                .core
                .as_ref()
                .map_or(Ok(()), NodeCore::check_invariants)
                .and_then(|()| self.check_hops(i));
            if let Err(e) = r {
                self.note(format!("n{i} at {:?}: {e}", self.elapsed()));
            }
        }
    }
    pub(super) fn command(&mut self, i: usize, cmd: Command) {
        match cmd {
            Command::Tunnel(c) => self.tunnel_cmd(i, c),
            Command::PublishFib(mut routes) => {
                routes.sort_unstable_by_key(|(p, _)| *p);
                routes.dedup_by_key(|(p, _)| *p);
                let changed = transport::route_changes(&self.transport.published[i], &routes);
                self.stats.route_changes += changed;
                self.transport.fibs[i] = Fib::from_routes(routes.iter().copied());
                self.transport.published[i] = routes;
            }
            Command::Ipv4(_) => {}
            Command::Persist { file, bytes } => {
                if file == SEQNO_FILE {
                    self.nodes[i].state.seqno = String::from_utf8(bytes).ok();
                }
            }
            Command::PersistPeer(change) => {
                let peers = &mut self.nodes[i].state.peers;
                match change {
                    PeerChange::Store { prefix, signed, .. } => {
                        peers.insert(prefix, (prefix.to_string(), signed));
                    }
                    PeerChange::Remove(prefix) => {
                        peers.remove(&prefix);
                    }
                }
            }
            Command::Registry(req) => self.registry_request(i, req),
            Command::Lan(_) => {}
            Command::ScanAddresses => {
                let (now, ip) = (self.now_of(i), self.nodes[i].addr.ip());
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_local_addresses(vec![ip], now);
                }
            }
            Command::ProbeRtt { peer, addresses } => self.probe_rtt(i, peer, &addresses),
        }
    }
    /// Answers node `i`'s probe of the node at `addresses` after the
    /// round trip: the pair's RTT with the link's jitter each way; a lost
    /// probe or answer, a cut, a node down or nobody at the addresses is
    /// a failure at the handshake timeout.
    fn probe_rtt(&mut self, i: usize, peer: Ipv6Net, addresses: &[std::net::SocketAddr]) {
        let to = addresses
            .iter()
            .find_map(|a| self.transport.by_addr.get(a).copied())
            .filter(|&to| to != i);
        let answered =
            to.filter(|&to| self.nodes[to].core.is_some() && !self.transport.is_cut(i, to));
        let (jitter, loss) = (self.config.jitter, self.config.loss);
        let rtt = answered.and_then(|to| {
            let there = transport::delay(self.one_way(i, to), jitter, loss, &mut self.rng)?;
            let back = transport::delay(self.one_way(to, i), jitter, loss, &mut self.rng)?;
            Some(there + back)
        });
        let (after, result) = match rtt {
            Some(rtt) => (rtt, Ok(rtt)),
            None => (self.config.handshake_timeout, Err(ProbeError::Lost)),
        };
        let epoch = self.nodes[i].epoch;
        self.schedule(
            after,
            epoch,
            Ev::ProbeRtt {
                node: i,
                peer,
                result,
            },
        );
    }
}

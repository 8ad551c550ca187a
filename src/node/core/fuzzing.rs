//! NodeCore driven by arbitrary bytes: the entry point of the `node_core`
//! fuzz target, of its corpus replay (`tests/node_fuzz_corpus.rs`) and of
//! the property test of `node::core`.
//!
//! The bytes are read as a script of inputs: tunnel events about real and
//! made-up tunnels (handshakes of genuine peers and of strangers, garbage
//! Babel packets, control messages, peer-exchange payloads, silences,
//! closes), registry answers (genuine and forged announcements, CRLs,
//! renewals, network configurations), LAN and UPnP news, and clock moves:
//! the monotonic clock forward by up to a minute, the wall clock either way
//! by up to a year. After every input the node's commands are taken and
//! its invariants checked ([`NodeCore::check_invariants`]); nothing may
//! panic but a broken invariant.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ipnet::Ipv6Net;
use rand::SeedableRng;
use rand::rngs::StdRng;
use re6st_babel::engine::{Engine, IfaceId, InterfaceKind};

use super::boundary::{ConnId, DialError, Handshake, TunnelCmd, TunnelEvent, TunnelId};
use super::{Command, CoreParts, NodeCore, Now, RegistryReply};
use crate::identity::{
    Crl, NetworkConfig, NodeCert, NodeKey, Origins, OriginsConfig, SignedAnnouncement,
};
use crate::lan::{LanEvent, LanPeer};
use crate::node::NodeConfig;
use crate::peers::exchange;
use crate::test_pki::Pki;
use crate::transport::control::Control;
use crate::tunnels::policy::{Failure, Refusal};

/// Peers of the fixture (genuine nodes of the fuzzing network).
const PEERS: usize = 6;

/// The identities every run shares: made once per process.
struct Fixture {
    pki: Pki,
    me: (NodeCert, Arc<NodeKey>),
    peers: Vec<(NodeCert, SignedAnnouncement)>,
    /// The peers' keys (their Babel proves its routes).
    peer_keys: Vec<Arc<NodeKey>>,
    /// A node of another CA.
    stranger: NodeCert,
    crls: Vec<Crl>,
    network: NetworkConfig,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = Pki::new();
        let (cert, key) = pki.node(1);
        let (peers, peer_keys) = (2..2 + PEERS as u64)
            .map(|s| {
                let (c, k) = pki.node(s);
                let a = pki.announce(&c, &k, &format!("192.0.2.{s}:4326"), Duration::ZERO);
                ((c, a), Arc::new(k))
            })
            .unzip();
        let stranger = Pki::new().node(3).0;
        let crls = vec![pki.crl(1, &[]), pki.crl(2, &[3]), pki.crl(3, &[3, 4])];
        let network = NetworkConfig {
            tunnels: 2,
            max_tunnels: 6,
            tunnel_refresh_secs: 30,
            ..NetworkConfig::defaults(pki.network, "https://registry.invalid".into())
        };
        Fixture {
            pki,
            me: (cert, Arc::new(key)),
            peers,
            peer_keys,
            stranger,
            crls,
            network,
        }
    })
}

/// Reads the script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self) -> &[u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// What the driver remembers of the node's commands, to answer them.
#[derive(Default)]
struct Seen {
    dials: Vec<TunnelId>,
    up: Vec<TunnelId>,
    conns: u64,
    /// The certificate each incoming connection and dial was answered with.
    conn_peer: BTreeMap<ConnId, Ipv6Net>,
    dial_peer: BTreeMap<TunnelId, Ipv6Net>,
    /// Whom each dial was for.
    dial_to: BTreeMap<TunnelId, Ipv6Addr>,
}

/// A fixture peer's Babel engine, so that real Babel exchanges (and so
/// routes through tunnels) happen: it speaks on the node's first tunnel to
/// a genuine peer, and a new one starts when that tunnel closes.
struct Mirror {
    engine: Engine<Origins>,
    tunnel: Option<TunnelId>,
}

impl Mirror {
    fn new(cert: &NodeCert, key: Arc<NodeKey>, tunnel: TunnelId, now: Now) -> Option<Self> {
        let f = fixture();
        let config = crate::node::config::babel_config(&f.network);
        let mut origins = Origins::new(
            OriginsConfig::default(),
            f.network.network,
            Vec::new(),
            cert.clone(),
            key,
            (now.mono, now.wall),
        );
        origins.learn(&f.me.0);
        let rid = crate::identity::origin::router_id(cert.prefix);
        let now = now.mono;
        let mut engine = Engine::with_origin_auth(origins, config, rid, 1, now).ok()?;
        engine.add_xroute(cert.prefix.into(), 0, now).ok()?;
        engine
            .add_interface(IfaceId(0), InterfaceKind::Tunnel, 1400, now)
            .ok()?;
        Some(Self {
            engine,
            tunnel: Some(tunnel),
        })
    }

    /// Babel packets the peer sends now, to the node.
    fn transmits(&mut self, now: Now) -> Vec<Bytes> {
        self.engine.origin_auth_mut().set_clock(now.mono, now.wall);
        let now = now.mono;
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        let mut out = Vec::new();
        while let Some(t) = self.engine.poll_transmit(now) {
            out.push(Bytes::from(t.bytes));
        }
        out
    }
}

impl Seen {
    fn tunnel(&self, b: u8) -> TunnelId {
        let all: Vec<TunnelId> = self.dials.iter().chain(&self.up).copied().collect();
        match all.get(usize::from(b) % (all.len() + 1)) {
            Some(t) => *t,
            None => TunnelId(u64::from(b)),
        }
    }
}

fn peer(b: u8) -> Option<&'static (NodeCert, SignedAnnouncement)> {
    fixture().peers.get(usize::from(b) % (PEERS + 1))
}

fn handshake(s: &mut Script, b: u8) -> Handshake {
    let f = fixture();
    let cert = match peer(b) {
        Some((c, _)) => c.clone(),
        None if b & 1 == 0 => f.stranger.clone(),
        None => f.me.0.clone(),
    };
    let remote = if b & 0x40 != 0 {
        let ip: Ipv6Addr = "fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST);
        SocketAddr::V6(SocketAddrV6::new(ip, 4326, 0, 2))
    } else {
        SocketAddr::from(([192, 0, 2, b], 4326))
    };
    Handshake {
        peer: cert,
        peer_crl: u64::from(s.byte().unwrap_or(0) % 5),
        remote,
        local_ip: (b & 0x20 != 0).then_some(IpAddr::from([198, 51, 100, 7])),
        observed: (b & 0x10 != 0).then_some(SocketAddr::from(([203, 0, 113, 9], 4326))),
        rtt: Duration::from_millis(u64::from(s.byte().unwrap_or(10))),
        max_datagram: (b & 0x08 != 0).then_some(usize::from(s.u16().unwrap_or(1200))),
    }
}

fn control(s: &mut Script) -> Control {
    let f = fixture();
    match s.byte().unwrap_or(0) % 10 {
        0 => Control::Drain,
        1 => Control::Drained,
        2 => {
            let i = usize::from(s.byte().unwrap_or(0)) % f.crls.len();
            Control::Crl(f.crls[i].der.clone().into())
        }
        3 => Control::Crl(Bytes::copy_from_slice(s.bytes())),
        4 => Control::Open {
            version: 1,
            crl_number: 0,
        },
        5 => Control::Accept {
            crl_number: 9,
            observed: SocketAddr::from(([192, 0, 2, 1], 1)),
        },
        6 => Control::WantCerts(
            f.peers
                .iter()
                .map(|(c, _)| crate::identity::origin::router_id(c.prefix))
                .chain([re6st_babel::wire::RouterId(
                    s.bytes()
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([1; 8]),
                )])
                .collect(),
        ),
        7 => Control::Certs(
            f.peers
                .iter()
                .map(|(c, _)| Bytes::from(c.der.clone()))
                .chain([Bytes::copy_from_slice(s.bytes())])
                .collect(),
        ),
        _ => Control::Unknown(s.byte().unwrap_or(0)),
    }
}

fn exchange_payload(s: &mut Script) -> (Ipv6Addr, Bytes) {
    let b = s.byte().unwrap_or(0);
    match peer(b) {
        Some((c, a)) if b & 0x80 == 0 => {
            let pkt = exchange::packet(c.address, fixture().me.0.address, b & 1 == 1, a.clone())
                .unwrap_or_default();
            let payload = pkt
                .get(48..)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            // Now and then the owner asks from elsewhere (no answer due).
            let from = if b & 2 == 0 {
                c.address
            } else {
                Ipv6Addr::LOCALHOST
            };
            (from, payload)
        }
        _ => (
            Ipv6Addr::from([0xfd, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b]),
            Bytes::copy_from_slice(s.bytes()),
        ),
    }
}

fn registry_reply(s: &mut Script) -> RegistryReply {
    let f = fixture();
    match s.byte().unwrap_or(0) % 8 {
        0 => {
            let n = usize::from(s.byte().unwrap_or(0));
            let mut list: Vec<SignedAnnouncement> = f
                .peers
                .iter()
                .take(n % (PEERS + 1))
                .map(|p| p.1.clone())
                .collect();
            if n & 0x80 != 0
                && let Some(first) = list.first_mut()
            {
                first.payload.push(' ');
            }
            RegistryReply::Bootstrapped(list)
        }
        1 => {
            let i = usize::from(s.byte().unwrap_or(0)) % f.crls.len();
            RegistryReply::Crl(Box::new(f.crls[i].clone()))
        }
        2 => {
            let who = s.byte().unwrap_or(0);
            let cert = match peer(who) {
                Some((c, _)) if who & 1 == 1 => c.clone(),
                _ => f.me.0.clone(),
            };
            RegistryReply::Renewed(Box::new(cert))
        }
        3 => {
            let b = s.byte().unwrap_or(0);
            let config = NetworkConfig {
                version: u64::from(b % 4),
                tunnels: u16::from(b % 5),
                max_tunnels: u16::from(s.byte().unwrap_or(0) % 16),
                tunnel_refresh_secs: u64::from(s.byte().unwrap_or(0)),
                babel_hello_ms: u64::from(s.u16().unwrap_or(4000)),
                ..f.network.clone()
            };
            match config.sign(&f.pki.ca) {
                Ok(signed) => RegistryReply::Network {
                    config: Box::new(config),
                    signed: Box::new(signed),
                },
                Err(_) => RegistryReply::Done,
            }
        }
        4 => RegistryReply::Done,
        5 => {
            let h = u64::from(s.byte().unwrap_or(0));
            RegistryReply::RenewAfter(f.pki.now + Duration::from_secs(h * 3600))
        }
        6 => RegistryReply::BootstrapFailed("fuzz".into()),
        _ => RegistryReply::RoundFailed("fuzz".into()),
    }
}

fn lan_event(s: &mut Script) -> LanEvent {
    let b = s.byte().unwrap_or(0);
    let (cert, _) = peer(b).unwrap_or(&fixture().peers[0]);
    let ip: Ipv6Addr = "fe80::2".parse().unwrap_or(Ipv6Addr::LOCALHOST);
    let p = LanPeer {
        prefix: cert.prefix,
        serial: cert.serial,
        address: cert.address,
        addr: SocketAddrV6::new(ip, 4326, 0, 2),
    };
    match b % 3 {
        0 => LanEvent::Found(p),
        1 => LanEvent::Dial(p),
        _ => LanEvent::Lost(p.prefix),
    }
}

/// The most a script reached (corpus seeds must reach the deep paths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Up tunnels at once.
    pub tunnels: usize,
    /// Selected routes at once.
    pub routes: usize,
    /// Suspected tunnels at once.
    pub suspected: usize,
}

/// Runs one script. Panics only if an invariant breaks.
pub fn node_core(data: &[u8]) -> Reached {
    let f = fixture();
    let mut config = NodeConfig::default().core(Some("https://registry.invalid".into()));
    config.lan = data.first().is_some_and(|b| b & 1 == 1);
    config.peer_db.capacity = 4;
    let mono0 = Instant::now();
    let wall0 = f.pki.now;
    let mut now = Now {
        mono: mono0,
        wall: wall0,
    };
    let parts = CoreParts {
        config,
        network: f.network.clone(),
        cert: f.me.0.clone(),
        key: f.me.1.clone(),
        ca_der: f.pki.ca.cert_der().to_vec(),
        crl: None,
        bound: SocketAddr::from(([192, 0, 2, 1], 4326)),
        local_addresses: vec![IpAddr::from([192, 0, 2, 1])],
        seqno_file: None,
        stored_peers: f
            .peers
            .iter()
            .take(2)
            .map(|(c, a)| (c.prefix.to_string(), a.clone()))
            .collect(),
        rng: StdRng::seed_from_u64(7),
    };
    let Ok(mut core) = NodeCore::new(parts, now) else {
        panic!("the fuzzing node starts");
    };
    let mut seen = Seen::default();
    let mut reached = Reached::default();
    let mut mirror: Option<Mirror> = None;
    take_commands(&mut core, &mut seen, &mut mirror, now);
    let mut s = Script(data);
    let mut steps = 0;
    while let Some(op) = s.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        match op % 16 {
            0 => {
                let b = s.byte().unwrap_or(0);
                seen.conns += 1;
                let h = handshake(&mut s, b);
                seen.conn_peer.insert(ConnId(seen.conns), h.peer.prefix);
                let ev = TunnelEvent::Incoming {
                    conn: ConnId(seen.conns),
                    handshake: Box::new(h),
                };
                core.handle_tunnel_event(ev, now);
            }
            1 => {
                let b = s.byte().unwrap_or(0);
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let result = match b % 4 {
                    0 | 1 => {
                        let mut h = handshake(&mut s, b);
                        // Mostly the node dialled; now and then another.
                        let dialled = seen
                            .dial_to
                            .get(&tunnel)
                            .and_then(|a| f.peers.iter().find(|(c, _)| c.address == *a));
                        if let Some((c, _)) = dialled.filter(|_| b & 0x80 == 0) {
                            h.peer = c.clone();
                        }
                        seen.dial_peer.insert(tunnel, h.peer.prefix);
                        Ok(Box::new(h))
                    }
                    2 => Err(DialError::unreachable("fuzz")),
                    _ => Err(DialError {
                        failure: Failure::Refused(Refusal::Duplicate),
                        reason: "fuzz".into(),
                        answered_by: (b & 4 != 0).then(|| Box::new(f.stranger.clone())),
                    }),
                };
                core.handle_tunnel_event(TunnelEvent::Dialled { tunnel, result }, now);
            }
            2 => {
                let b = s.byte().unwrap_or(0);
                match mirror.as_mut().and_then(|m| Some((m.tunnel?, m))) {
                    // The peer's own Babel packets, most of the time.
                    Some((tunnel, m)) if b % 4 != 0 => {
                        for bytes in m.transmits(now) {
                            core.handle_tunnel_event(TunnelEvent::Babel { tunnel, bytes }, now);
                        }
                    }
                    _ => {
                        let tunnel = seen.tunnel(b);
                        let bytes = Bytes::copy_from_slice(s.bytes());
                        core.handle_tunnel_event(TunnelEvent::Babel { tunnel, bytes }, now);
                    }
                }
            }
            3 => {
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let msg = control(&mut s);
                core.handle_tunnel_event(TunnelEvent::Control { tunnel, msg }, now);
            }
            4 => {
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let error = crate::transport::control::ControlError::Empty;
                core.handle_tunnel_event(TunnelEvent::ControlError { tunnel, error }, now);
            }
            5 => {
                let (from, payload) = exchange_payload(&mut s);
                core.handle_tunnel_event(TunnelEvent::Exchange { from, payload }, now);
            }
            6 => {
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let rtt = Duration::from_millis(u64::from(s.u16().unwrap_or(0)));
                let max_datagram = Some(usize::from(s.u16().unwrap_or(0)));
                let ev = TunnelEvent::Path {
                    tunnel,
                    rtt,
                    max_datagram,
                };
                core.handle_tunnel_event(ev, now);
            }
            7 => {
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let ev = if s.byte().unwrap_or(0) & 1 == 0 {
                    TunnelEvent::Silent {
                        tunnel,
                        silent_for: Duration::from_millis(700),
                    }
                } else {
                    TunnelEvent::Heard { tunnel }
                };
                core.handle_tunnel_event(ev, now);
            }
            8 => {
                let tunnel = seen.tunnel(s.byte().unwrap_or(0));
                let reason = "fuzz".into();
                core.handle_tunnel_event(TunnelEvent::Closed { tunnel, reason }, now);
            }
            9 | 10 => {
                let ms = u64::from(s.u16().unwrap_or(0));
                now.mono += Duration::from_millis(ms.min(60_000));
                core.handle_timeout(now);
            }
            11 => {
                // The wall clock jumps, either way, by up to a year.
                let b = s.byte().unwrap_or(0);
                let secs = u64::from(s.u16().unwrap_or(0)) * 481;
                let d = Duration::from_secs(secs);
                now.wall = if b & 1 == 0 {
                    now.wall + d
                } else {
                    now.wall.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)
                };
                core.handle_timeout(now);
            }
            12 => {
                let reply = registry_reply(&mut s);
                core.handle_registry(reply, now);
            }
            13 => {
                let ev = lan_event(&mut s);
                core.handle_lan(ev, now);
            }
            14 => {
                let b = s.byte().unwrap_or(0);
                match b % 4 {
                    0 => core.handle_registry_round_now(now),
                    1 => core.handle_local_addresses(vec![IpAddr::from([10, 0, 0, b])], now),
                    2 => core.handle_upnp(None, now),
                    _ => core.handle_shutdown(now),
                }
            }
            _ => {
                // An earlier monotonic time than the last input's.
                let back = Now {
                    mono: now
                        .mono
                        .checked_sub(Duration::from_secs(1))
                        .unwrap_or(now.mono),
                    wall: now.wall,
                };
                core.handle_timeout(back);
            }
        }
        take_commands(&mut core, &mut seen, &mut mirror, now);
        if seen.conn_peer.len() > 256 {
            seen.conn_peer.clear();
            seen.dial_peer.clear();
            seen.dial_to.clear();
        }
        for v in [&mut seen.dials, &mut seen.up] {
            let extra = v.len().saturating_sub(64);
            v.drain(..extra);
        }
        if let Err(e) = core.check_invariants() {
            panic!("invariant broken after input {steps} (op {op}): {e}");
        }
        let status = core.status(now.mono);
        reached.tunnels = reached.tunnels.max(status.tunnels.len());
        reached.routes = reached.routes.max(status.routes);
        let suspected = status.tunnels.iter().filter(|t| t.state == "suspect");
        reached.suspected = reached.suspected.max(suspected.count());
    }
    reached
}

/// Takes the node's commands, and remembers what the next inputs answer.
fn take_commands(core: &mut NodeCore, seen: &mut Seen, mirror: &mut Option<Mirror>, now: Now) {
    let f = fixture();
    while let Some(cmd) = core.poll_command() {
        let Command::Tunnel(c) = cmd else { continue };
        let peer = match &c {
            TunnelCmd::Accept { conn, tunnel, .. } => {
                seen.up.push(*tunnel);
                seen.conn_peer.get(conn).map(|p| (*tunnel, *p))
            }
            TunnelCmd::Up { tunnel, .. } => {
                seen.up.push(*tunnel);
                seen.dial_peer.get(tunnel).map(|p| (*tunnel, *p))
            }
            TunnelCmd::Dial { tunnel, peer, .. } => {
                seen.dials.push(*tunnel);
                seen.dial_to.insert(*tunnel, *peer);
                None
            }
            _ => None,
        };
        if mirror.as_ref().is_none_or(|m| m.tunnel.is_none())
            && let Some((tunnel, p)) = peer
            && let Some(i) = f.peers.iter().position(|(c, _)| c.prefix == p)
        {
            let key = f.peer_keys[i].clone();
            *mirror = Mirror::new(&f.peers[i].0, key, tunnel, now);
        }
        let Some(m) = mirror.as_mut() else { continue };
        match c {
            TunnelCmd::SendBabel { tunnel, bytes } if m.tunnel == Some(tunnel) => {
                let from = IpAddr::V6(f.me.0.address);
                m.engine.handle_packet(IfaceId(0), from, &bytes, now.mono);
            }
            TunnelCmd::Close { tunnel, .. } if m.tunnel == Some(tunnel) => m.tunnel = None,
            _ => {}
        }
    }
}

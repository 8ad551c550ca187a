//! Engines in memory, in virtual time (quinn's `Pair`, for N nodes): no
//! socket, no clock; time jumps to the next delivery or timer.

mod handshake;
mod limits;
mod liveness;
mod traffic;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Credentials, Engine, Packet};
use crate::identity::{Crl, NodeCert};
use crate::node::core::boundary::{ConnId, Handshake, NextHopId, TunnelCmd, TunnelEvent, TunnelId};
use crate::test_pki::Pki;
use crate::transport::TransportConfig;
use crate::transport::control::{Control, close};

const MS: Duration = Duration::from_millis(1);

/// Short timers, as the node's tests use.
fn config() -> TransportConfig {
    TransportConfig {
        keep_alive: 100 * MS,
        suspect_after: 300 * MS,
        idle_timeout: 2_000 * MS,
        handshake_timeout: 1_000 * MS,
        ..TransportConfig::default()
    }
}

/// One node of the harness.
struct Node {
    engine: Engine,
    addr: SocketAddr,
    cert: NodeCert,
    events: Vec<TunnelEvent>,
    packets: Vec<Packet>,
    /// Cut off: sends and receives nothing.
    cut: bool,
    /// NodeCore and the packet loop are busy: the harness takes neither
    /// events nor packets from the engine.
    held: bool,
    /// UDP datagrams sent.
    sent: usize,
    /// Instants at which the node had something to do (a datagram in or
    /// a timer due): what would wake its packet loop.
    wakes: usize,
}

impl Node {
    /// The overlay address.
    fn address(&self) -> Ipv6Addr {
        self.cert.address
    }

    /// Takes the events so far.
    fn take_events(&mut self) -> Vec<TunnelEvent> {
        std::mem::take(&mut self.events)
    }
}

/// N engines on a lossless virtual network with one latency.
struct Net {
    pki: Pki,
    nodes: Vec<Node>,
    now: Instant,
    latency: Duration,
    /// (delivery time, destination, source, bytes), in time order.
    flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Datagrams one `poll_transmit` may batch (the socket's GSO limit).
    segments: usize,
    /// Transmits dropped because they were above a UDP datagram's size,
    /// as the kernel refuses them (`EMSGSIZE`).
    too_big: usize,
}

impl Net {
    /// `n` nodes with serials 1..=n, 192.0.2.<serial>:4433, 5 ms apart.
    fn new(n: u64) -> Self {
        let t0 = Instant::now();
        let mut net = Net {
            pki: Pki::new(),
            nodes: Vec::new(),
            now: t0,
            latency: 5 * MS,
            flight: VecDeque::new(),
            buf: Vec::new(),
            segments: 10,
            too_big: 0,
        };
        for serial in 1..=n {
            net.add(serial, None);
        }
        net
    }

    /// Adds node `serial` (applying `crl`) at 192.0.2.<serial>; its index.
    fn add(&mut self, serial: u64, crl: Option<Crl>) -> usize {
        let (cert, key) = self.pki.node(serial);
        let addr: SocketAddr = format!("192.0.2.{serial}:4433").parse().unwrap();
        self.add_at(cert, &key, addr, crl)
    }

    fn add_at(
        &mut self,
        cert: NodeCert,
        key: &crate::identity::NodeKey,
        addr: SocketAddr,
        crl: Option<Crl>,
    ) -> usize {
        let mut seed = [7u8; 32];
        seed[0] = self.nodes.len() as u8;
        let me = Credentials {
            cert: cert.clone(),
            key,
            ca_der: self.pki.ca.cert_der(),
            crl,
        };
        let engine = Engine::new(me, config(), addr, Some(seed), self.now).unwrap();
        self.nodes.push(Node {
            engine,
            addr,
            cert,
            events: Vec::new(),
            packets: Vec::new(),
            cut: false,
            held: false,
            sent: 0,
            wakes: 0,
        });
        self.nodes.len() - 1
    }

    fn cmd(&mut self, i: usize, cmd: TunnelCmd) {
        let now = self.now;
        self.nodes[i].engine.handle_command(cmd, now);
        self.flush(i);
    }

    /// Sends what node `i` has to send and collects its outputs.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        while !node.held
            && let Some(p) = node.engine.poll_packet()
        {
            node.packets.push(p);
        }
        while !node.held
            && let Some(e) = node.engine.poll_event()
        {
            node.events.push(e);
        }
        while let Some(t) = node.engine.poll_transmit(now, self.segments, &mut self.buf) {
            if t.size > 65_535 - 8 - 20 {
                self.too_big += 1;
                continue;
            }
            let seg = t.segment_size.unwrap_or(t.size);
            for d in self.buf[..t.size].chunks(seg) {
                node.sent += 1;
                if !node.cut {
                    self.flight.push_back((
                        now + self.latency,
                        t.destination,
                        node.addr,
                        d.to_vec(),
                    ));
                }
            }
        }
    }

    /// Runs one event: the next delivery or timer. `false`: nothing left.
    fn step(&mut self) -> bool {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        let timer = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.poll_timeout())
            .min();
        let delivery = self.flight.front().map(|f| f.0);
        let Some(next) = [timer, delivery].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        let mut woken = vec![false; self.nodes.len()];
        while self.flight.front().is_some_and(|f| f.0 <= now) {
            let (_, to, from, bytes) = self.flight.pop_front().unwrap();
            if let Some(i) = self.nodes.iter().position(|n| n.addr == to && !n.cut) {
                woken[i] = true;
                self.nodes[i].engine.handle_datagram(
                    now,
                    from,
                    None,
                    None,
                    BytesMut::from(&bytes[..]),
                );
            }
        }
        for (n, woken) in self.nodes.iter_mut().zip(&mut woken) {
            if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                *woken = true;
                n.engine.handle_timeout(now);
            }
            n.wakes += usize::from(*woken);
        }
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        true
    }

    /// Runs for `d` of virtual time.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            for i in 0..self.nodes.len() {
                self.flush(i);
            }
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .chain(self.flight.front().map(|f| f.0))
                .min();
            if next.is_none_or(|t| t > end) {
                self.now = end;
                break;
            }
            self.step();
        }
    }

    /// Runs until `done` holds (checked after every step), for at most
    /// `max`; returns the virtual time it took.
    fn run_until(&mut self, max: Duration, mut done: impl FnMut(&mut Net) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(self.now - start <= max, "not within {max:?}");
            if !self.step() {
                assert!(done(self), "nothing left to run");
                break;
            }
        }
        self.now - start
    }

    /// The first event of node `i` matching `f`, taken out.
    fn take_event<T>(
        &mut self,
        i: usize,
        mut f: impl FnMut(&TunnelEvent) -> Option<T>,
    ) -> Option<T> {
        let events = &mut self.nodes[i].events;
        let at = events.iter().position(|e| f(e).is_some())?;
        f(&events.remove(at))
    }

    /// Waits for node `i`'s event matching `f`.
    fn wait_event<T>(
        &mut self,
        i: usize,
        max: Duration,
        mut f: impl FnMut(&TunnelEvent) -> Option<T>,
    ) -> T {
        let mut out = None;
        self.run_until(max, |net| {
            out = net.take_event(i, &mut f);
            out.is_some()
        });
        out.unwrap()
    }

    /// Node `a` dials node `b` as tunnel `ta`; `b` accepts as tunnel `tb`;
    /// both route it as next hop 1. Returns both handshakes.
    fn connect(&mut self, a: usize, b: usize, ta: u64, tb: u64) -> (Handshake, Handshake) {
        self.connect_via(a, b, (ta, NextHopId(1)), (tb, NextHopId(1)))
    }

    /// [`Net::connect`] with the next hops each side routes it as.
    fn connect_via(
        &mut self,
        a: usize,
        b: usize,
        (ta, hop_a): (u64, NextHopId),
        (tb, hop_b): (u64, NextHopId),
    ) -> (Handshake, Handshake) {
        let (peer, addr) = (self.nodes[b].address(), self.nodes[b].addr);
        self.cmd(a, dial(ta, peer, vec![addr]));
        let (conn, incoming) = self.wait_incoming(b);
        self.cmd(
            b,
            TunnelCmd::Accept {
                conn,
                tunnel: TunnelId(tb),
                hop: hop_b,
                reply: Control::Accept {
                    crl_number: 0,
                    observed: incoming.remote,
                },
            },
        );
        let dialled = self.wait_dialled(a, ta).expect("dial succeeds");
        self.cmd(
            a,
            TunnelCmd::Up {
                tunnel: TunnelId(ta),
                hop: hop_a,
            },
        );
        (dialled, incoming)
    }

    fn wait_incoming(&mut self, i: usize) -> (ConnId, Handshake) {
        self.wait_event(i, 3_000 * MS, |e| match e {
            TunnelEvent::Incoming { conn, handshake } => Some((*conn, (**handshake).clone())),
            _ => None,
        })
    }

    fn wait_dialled(
        &mut self,
        i: usize,
        t: u64,
    ) -> Result<Handshake, crate::node::core::DialError> {
        self.wait_event(i, 10_000 * MS, |e| match e {
            TunnelEvent::Dialled { tunnel, result } if *tunnel == TunnelId(t) => {
                Some(result.clone().map(|h| *h))
            }
            _ => None,
        })
    }
}

fn dial(t: u64, peer: Ipv6Addr, addresses: Vec<SocketAddr>) -> TunnelCmd {
    TunnelCmd::Dial {
        tunnel: TunnelId(t),
        peer,
        addresses,
        tcp_port: None,
    }
}

/// An IPv6 packet of `len` bytes from `src` to `dst` (UDP, no checksum).
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, len: usize, fill: u8) -> Bytes {
    let mut p = vec![fill; len];
    p[0] = 0x60;
    p[1..4].fill(0);
    let payload = (len - 40) as u16;
    p[4..6].copy_from_slice(&payload.to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    Bytes::from(p)
}

/// A Babel packet (magic 42, version 2, empty body).
fn babel(tag: u8) -> Bytes {
    Bytes::from(vec![42, 2, 0, 1, tag])
}

//! Packet loops on loopback, each on its own thread with a channel host:
//! tunnels set up by commands as NodeCore gives them, packets through the
//! FIB both ways and through a forwarding node, Babel and peer exchange to
//! the control loop, liveness, idle wake-ups, stopping.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::Ipv6Net;
use re6st_dataplane::fib::{Fib, Route, SharedFib};
use re6st_dataplane::forward::ForwardConfig;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::identity::NodeCert;
use crate::node::core::boundary::{ConnId, NextHopId};
use crate::test_pki::Pki;
use crate::transport::TransportConfig;
use crate::transport::control::Control;
use crate::transport::engine::Credentials;
use crate::transport::tcp::choice::Mode;

const MS: Duration = Duration::from_millis(1);

fn config() -> TransportConfig {
    TransportConfig {
        keep_alive: 100 * MS,
        suspect_after: 300 * MS,
        idle_timeout: 3_000 * MS,
        handshake_timeout: 2_000 * MS,
        ..TransportConfig::default()
    }
}

/// One node: its loop, its events, its host channels and its routes.
struct Node {
    lp: PacketLoop,
    events: mpsc::Receiver<TunnelEvent>,
    to_host: mpsc::Receiver<Bytes>,
    from_host: mpsc::Sender<BytesMut>,
    fib: Arc<SharedFib>,
    cert: NodeCert,
    switch: Arc<FaultSwitch>,
    /// A UDP socket nobody reads, at the port number of the node's TCP
    /// listener when it listens apart: QUIC dials there get no answer.
    hole: Option<std::net::UdpSocket>,
}

impl Node {
    async fn start(pki: &Pki, serial: u64) -> Node {
        Self::start_with(pki, serial, None, false).await
    }

    /// A node with tunnels over TCP too, choosing the transport by
    /// `mode`, listening on the UDP port's number, or (`apart`) on the
    /// port of a UDP hole: dialled there, it answers only over TCP.
    async fn start_with(pki: &Pki, serial: u64, mode: Option<Mode>, apart: bool) -> Node {
        let (cert, key) = pki.node(serial);
        let socket = crate::transport::socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = socket.local_addr().unwrap();
        let hole = apart.then(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let tcp_at = hole.as_ref().map_or(local, |h| h.local_addr().unwrap());
        let tcp = mode.map(|mode| TcpSetup {
            engine: crate::transport::tcp::TcpEngine::new(
                Credentials {
                    cert: cert.clone(),
                    key: &key,
                    ca_der: pki.ca.cert_der(),
                    crl: None,
                },
                config(),
                Instant::now(),
            )
            .unwrap(),
            listener: Some(tcp_listen(tcp_at).unwrap()),
            mode,
            prefer_tcp: Duration::from_secs(60),
        });
        let me = Credentials {
            cert: cert.clone(),
            key: &key,
            ca_der: pki.ca.cert_der(),
            crl: None,
        };
        let engine = Engine::new(me, config(), local, None, Instant::now()).unwrap();
        let fib = Arc::new(SharedFib::new(Fib::from_routes([(
            cert.prefix,
            Route::Local,
        )])));
        let (to_host_tx, to_host) = mpsc::channel(64);
        let (from_host, from_host_rx) = mpsc::channel(64);
        let switch = FaultSwitch::new();
        let (lp, events) = PacketLoop::start(
            engine,
            socket,
            LoopConfig {
                me: cert.address,
                forward: ForwardConfig {
                    mtu: 1400,
                    ..ForwardConfig::new(cert.address)
                },
                fib: fib.clone(),
                host: Host::Channel {
                    to_host: to_host_tx,
                    from_host: from_host_rx,
                },
                switch: Some(switch.clone()),
                tcp,
            },
        )
        .await
        .unwrap();
        Node {
            lp,
            events,
            to_host,
            from_host,
            fib,
            cert,
            switch,
            hole,
        }
    }

    /// Where others dial it: its UDP hole if it has one.
    fn dial_addr(&self) -> SocketAddr {
        self.hole
            .as_ref()
            .map_or_else(|| self.addr(), |h| h.local_addr().unwrap())
    }

    fn addr(&self) -> SocketAddr {
        self.lp.local_addr()
    }

    /// The next event matching `f`, skipping others (within 5 s).
    async fn event<T>(&mut self, mut f: impl FnMut(TunnelEvent) -> Option<T>) -> T {
        let wait = async {
            loop {
                let ev = self.events.recv().await.expect("loop alive");
                if let Some(t) = f(ev) {
                    return t;
                }
            }
        };
        timeout(Duration::from_secs(5), wait)
            .await
            .expect("event in time")
    }

    /// Routes `prefix` through next hop `hop` (and our own prefix here).
    fn route(&self, routes: &[(Ipv6Net, u32)]) {
        let mut all = vec![(self.cert.prefix, Route::Local)];
        all.extend(routes.iter().map(|(p, h)| (*p, Route::Via(NextHopId(*h)))));
        self.fib.publish(Fib::from_routes(all));
    }

    /// A packet from the host.
    async fn inject(&self, p: Bytes) {
        self.from_host.send(BytesMut::from(&p[..])).await.unwrap();
    }

    /// The next packet for the host (within 5 s).
    async fn delivered(&mut self) -> Bytes {
        timeout(Duration::from_secs(5), self.to_host.recv())
            .await
            .expect("packet in time")
            .expect("loop alive")
    }
}

/// `a` dials `b`: tunnel `ta` at `a`, `tb` at `b`, next hop `hop` on both.
async fn connect(a: &mut Node, b: &mut Node, ta: u64, tb: u64, hop: u32) {
    let at = b.dial_addr();
    connect_at(a, b, (ta, tb, hop), at, None).await;
}

/// [`connect`] at `addr`, with `tcp_port` announced.
async fn connect_at(
    a: &mut Node,
    b: &mut Node,
    (ta, tb, hop): (u64, u64, u32),
    addr: SocketAddr,
    tcp_port: Option<u16>,
) {
    let ok =
        a.lp.send(TunnelCmd::Dial {
            tunnel: TunnelId(ta),
            peer: b.cert.address,
            addresses: vec![addr],
            tcp_port,
        })
        .await;
    assert!(ok);
    let (conn, remote): (ConnId, SocketAddr) = b
        .event(|e| match e {
            TunnelEvent::Incoming { conn, handshake } => Some((conn, handshake.remote)),
            _ => None,
        })
        .await;
    b.lp.send(TunnelCmd::Accept {
        conn,
        tunnel: TunnelId(tb),
        hop: NextHopId(hop),
        reply: Control::Accept {
            crl_number: 0,
            observed: remote,
        },
    })
    .await;
    let dialled = a
        .event(|e| match e {
            TunnelEvent::Dialled { tunnel, result } if tunnel == TunnelId(ta) => Some(result),
            _ => None,
        })
        .await;
    assert_eq!(dialled.expect("dial succeeds").peer, b.cert);
    a.lp.send(TunnelCmd::Up {
        tunnel: TunnelId(ta),
        hop: NextHopId(hop),
    })
    .await;
}

/// A UDP packet from `src` to `dst` with hop limit 64.
fn packet(src: Ipv6Addr, dst: Ipv6Addr, len: usize, fill: u8) -> Bytes {
    let mut p = vec![fill; len];
    p[0] = 0x60;
    p[1..4].fill(0);
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    Bytes::from(p)
}

/// An address of `cert`'s prefix other than the node's own.
fn host_in(cert: &NodeCert) -> Ipv6Addr {
    let mut o = cert.prefix.network().octets();
    o[15] = 9;
    Ipv6Addr::from(o)
}

#[tokio::test]
async fn packets_cross_a_tunnel_both_ways() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    connect(&mut a, &mut b, 10, 20, 1).await;
    a.route(&[(b.cert.prefix, 1)]);
    b.route(&[(a.cert.prefix, 1)]);
    let (ha, hb) = (host_in(&a.cert), host_in(&b.cert));
    for k in 0..50u8 {
        let p = packet(ha, hb, 100 + usize::from(k) * 20, k);
        a.inject(p.clone()).await;
        assert_eq!(b.delivered().await, p, "packet {k} a -> b");
        let q = packet(hb, ha, 1_400, k);
        b.inject(q.clone()).await;
        assert_eq!(a.delivered().await, q, "packet {k} b -> a");
    }
    let s = a.lp.status().await.unwrap();
    assert_eq!(s.host.rx_packets, 50);
    assert_eq!(s.host.tx_packets, 50);
    assert_eq!(s.forward.forwarded, 50);
    assert_eq!(s.forward.delivered, 50);
    assert_eq!(s.tunnels.len(), 1);
    assert_eq!(s.tunnels[0].0, TunnelId(10));
    assert!(s.tunnels[0].1.link.tx_packets >= 50);
    assert!(s.udp.blocks <= 2, "{:?}", s.udp);
}

#[tokio::test]
async fn a_forwarding_node_relays_in_its_own_pass() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    let mut c = Node::start(&pki, 3).await;
    connect(&mut a, &mut b, 1, 1, 1).await;
    connect(&mut b, &mut c, 2, 2, 2).await;
    a.route(&[(b.cert.prefix, 1), (c.cert.prefix, 1)]);
    b.route(&[(a.cert.prefix, 1), (c.cert.prefix, 2)]);
    c.route(&[(a.cert.prefix, 2), (b.cert.prefix, 2)]);
    let (ha, hc) = (host_in(&a.cert), host_in(&c.cert));
    for k in 0..20u8 {
        a.inject(packet(ha, hc, 1_000, k)).await;
        let got = c.delivered().await;
        assert_eq!(
            got[7], 63,
            "hop limit decremented by b, the forwarding node"
        );
        assert_eq!(&got[40..], &[k; 960][..]);
        c.inject(packet(hc, ha, 200, k)).await;
        assert_eq!(a.delivered().await[40..], [k; 160]);
    }
    let s = b.lp.status().await.unwrap();
    assert_eq!(s.forward.forwarded, 40, "b forwarded both ways");
    assert_eq!(s.host.tx_packets, 0, "nothing for b's host");
}

#[tokio::test]
async fn babel_and_peer_exchange_reach_the_control_loop() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    connect(&mut a, &mut b, 10, 20, 1).await;
    a.route(&[(b.cert.prefix, 1)]);
    let babel = Bytes::from_static(&[42, 2, 0, 1, 7]);
    a.lp.send(TunnelCmd::SendBabel {
        tunnel: TunnelId(10),
        bytes: babel.clone(),
    })
    .await;
    let got = b
        .event(|e| match e {
            TunnelEvent::Babel { tunnel, bytes } => Some((tunnel, bytes)),
            _ => None,
        })
        .await;
    assert_eq!(got, (TunnelId(20), babel));
    let message = b"r6 peer exchange".to_vec();
    let p = crate::peers::wire::build_packet(a.cert.address, b.cert.address, &message);
    a.lp.send(TunnelCmd::SendPacket {
        bytes: Bytes::from(p),
    })
    .await;
    let (from, payload) = b
        .event(|e| match e {
            TunnelEvent::Exchange { from, payload } => Some((from, payload)),
            _ => None,
        })
        .await;
    assert_eq!(from, a.cert.address);
    assert_eq!(&payload[..], &message[..]);
    assert_eq!(b.lp.status().await.unwrap().host.tx_packets, 0);
}

#[tokio::test]
async fn a_cut_peer_is_suspected_then_heard_again() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    connect(&mut a, &mut b, 10, 20, 1).await;
    b.switch.set_blackhole(true);
    let cut = Instant::now();
    let silent = a
        .event(|e| match e {
            TunnelEvent::Silent { tunnel, silent_for } => Some((tunnel, silent_for)),
            _ => None,
        })
        .await;
    assert_eq!(silent.0, TunnelId(10));
    let took = cut.elapsed();
    assert!(took < 1_000 * MS, "suspected after {took:?}");
    b.switch.set_blackhole(false);
    let heard = a
        .event(|e| match e {
            TunnelEvent::Heard { tunnel } => Some(tunnel),
            _ => None,
        })
        .await;
    assert_eq!(heard, TunnelId(10));
}

#[tokio::test]
async fn an_idle_loop_sleeps() {
    let pki = Pki::new();
    let a = Node::start(&pki, 1).await;
    let before = a.lp.status().await.unwrap().wakeups;
    tokio::time::sleep(500 * MS).await;
    let after = a.lp.status().await.unwrap().wakeups;
    // Only the status requests woke it.
    assert!(after - before <= 1, "{before} -> {after}");
}

#[tokio::test]
async fn an_idle_tunnel_costs_a_few_wake_ups_per_keep_alive() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    connect(&mut a, &mut b, 10, 20, 1).await;
    tokio::time::sleep(300 * MS).await;
    let before = a.lp.status().await.unwrap();
    tokio::time::sleep(2_000 * MS).await;
    let after = a.lp.status().await.unwrap();
    let wakes = after.wakeups - before.wakeups;
    let pings = after.frames.keep_alives - before.frames.keep_alives;
    // A keep-alive every 100-150 ms of silence from one side or the other,
    // each a send and an answer: tens of wake-ups in 2 s, not hundreds.
    assert!(
        wakes <= 120,
        "{wakes} wake-ups in 2 s ({pings} keep-alives)"
    );
    assert!(pings <= 25, "{pings} keep-alives in 2 s");
}

#[tokio::test]
async fn stopping_closes_the_tunnels() {
    let pki = Pki::new();
    let mut a = Node::start(&pki, 1).await;
    let mut b = Node::start(&pki, 2).await;
    connect(&mut a, &mut b, 10, 20, 1).await;
    let started = Instant::now();
    a.lp.stop(close::SHUTDOWN, "bye").await;
    assert!(started.elapsed() < 2_000 * MS);
    let reason = b
        .event(|e| match e {
            TunnelEvent::Closed {
                tunnel: TunnelId(20),
                reason,
            } => Some(reason),
            _ => None,
        })
        .await;
    assert!(reason.contains("bye"), "{reason}");
}

/// Packets both ways through a tunnel, and the status's transport.
async fn packets_cross(a: &mut Node, b: &mut Node, hop: u32) {
    a.route(&[(b.cert.prefix, hop)]);
    b.route(&[(a.cert.prefix, hop)]);
    let p = packet(host_in(&a.cert), host_in(&b.cert), 1200, 7);
    a.inject(p.clone()).await;
    assert_eq!(b.delivered().await, p);
    let q = packet(host_in(&b.cert), host_in(&a.cert), 300, 9);
    b.inject(q.clone()).await;
    assert_eq!(a.delivered().await, q);
}

#[tokio::test]
async fn a_tunnel_over_tcp_carries_packets_both_ways() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Tcp), false).await;
    let mut b = Node::start_with(&pki, 2, Some(Mode::Auto), false).await;
    connect(&mut a, &mut b, 1, 1, 3).await;
    packets_cross(&mut a, &mut b, 3).await;
    let s = a.lp.status().await.unwrap();
    assert_eq!(s.tcp_tunnels, [TunnelId(1)]);
    assert_eq!(s.tcp.unwrap().fallbacks, 0);
    let s = b.lp.status().await.unwrap();
    assert_eq!(s.tcp_tunnels, [TunnelId(1)]);
    assert_eq!(s.tcp.unwrap().accepted, 1);
}

#[tokio::test]
async fn a_quic_dial_without_answer_falls_back_to_tcp() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Auto), false).await;
    // QUIC to where a dials b gets no answer; TCP does.
    let mut b = Node::start_with(&pki, 2, Some(Mode::Auto), true).await;
    connect(&mut a, &mut b, 1, 1, 3).await;
    packets_cross(&mut a, &mut b, 3).await;
    let s = a.lp.status().await.unwrap();
    assert_eq!(s.tcp_tunnels, [TunnelId(1)]);
    assert_eq!(s.tcp.unwrap().fallbacks, 1);
}

#[tokio::test]
async fn tcp_dials_go_to_the_announced_tcp_port() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Tcp), false).await;
    // b listens on TCP apart from its QUIC port, and announces where.
    let mut b = Node::start_with(&pki, 2, Some(Mode::Auto), true).await;
    let (quic, tcp) = (b.addr(), b.dial_addr());
    connect_at(&mut a, &mut b, (1, 1, 3), quic, Some(tcp.port())).await;
    packets_cross(&mut a, &mut b, 3).await;
    assert_eq!(a.lp.status().await.unwrap().tcp_tunnels, [TunnelId(1)]);
}

#[tokio::test]
async fn a_fallback_dial_goes_to_the_announced_tcp_port() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Auto), false).await;
    let mut b = Node::start_with(&pki, 2, Some(Mode::Auto), true).await;
    // QUIC to the announced address gets no answer, and nothing listens
    // on TCP at its port: only the announced TCP port reaches b.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = dead.local_addr().unwrap();
    let tcp = b.dial_addr().port();
    connect_at(&mut a, &mut b, (1, 1, 3), at, Some(tcp)).await;
    let s = a.lp.status().await.unwrap();
    assert_eq!(s.tcp_tunnels, [TunnelId(1)]);
    assert_eq!(s.tcp.unwrap().fallbacks, 1);
}

#[tokio::test]
async fn quic_only_nodes_do_not_fall_back() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Quic), false).await;
    let b = Node::start_with(&pki, 2, Some(Mode::Auto), true).await;
    a.lp.send(TunnelCmd::Dial {
        tunnel: TunnelId(1),
        peer: b.cert.address,
        addresses: vec![b.dial_addr()],
        tcp_port: None,
    })
    .await;
    let result = a
        .event(|e| match e {
            TunnelEvent::Dialled { result, .. } => Some(result),
            _ => None,
        })
        .await;
    assert!(result.is_err());
    assert_eq!(a.lp.status().await.unwrap().tcp.unwrap().fallbacks, 0);
}

#[tokio::test]
async fn a_cut_node_is_cut_over_tcp_too() {
    let pki = Pki::new();
    let mut a = Node::start_with(&pki, 1, Some(Mode::Auto), false).await;
    let b = Node::start_with(&pki, 2, Some(Mode::Auto), false).await;
    // A crash or outage cuts the whole host: no TCP fallback.
    b.switch.set_blackhole(true);
    a.lp.send(TunnelCmd::Dial {
        tunnel: TunnelId(1),
        peer: b.cert.address,
        addresses: vec![b.addr()],
        tcp_port: None,
    })
    .await;
    let result = a
        .event(|e| match e {
            TunnelEvent::Dialled { result, .. } => Some(result),
            _ => None,
        })
        .await;
    let err = result.expect_err("b is cut off");
    assert!(err.reason.contains("TCP"), "{}", err.reason);
    let s = a.lp.status().await.unwrap().tcp.unwrap();
    assert_eq!(s.fallbacks, 1);
}

//! Two TCP engines in memory: sockets are byte pipes the harness moves
//! bytes along, time is a parameter.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::identity::NodeCert;
use crate::test_pki::Pki;
use crate::tunnels::policy::Refusal;

const MS: Duration = Duration::from_millis(1);

fn config() -> TransportConfig {
    TransportConfig {
        keep_alive: 100 * MS,
        suspect_after: 300 * MS,
        handshake_timeout: 1_000 * MS,
        ..TransportConfig::default()
    }
}

struct Side {
    engine: TcpEngine,
    cert: NodeCert,
    addr: SocketAddr,
    events: Vec<TunnelEvent>,
    packets: Vec<Packet>,
}

/// A socket pair: handle at a, handle at b.
struct Link {
    a: TcpHandle,
    b: TcpHandle,
    open: bool,
}

struct Pair {
    s: [Side; 2],
    links: Vec<Link>,
    now: Instant,
    /// Connects to this address are refused (nothing listens).
    closed_port: Option<SocketAddr>,
}

impl Pair {
    fn new() -> Self {
        let pki = Pki::new();
        let now = Instant::now();
        let side = |serial: u64, port: u16| {
            let (cert, key) = pki.node(serial);
            let engine = TcpEngine::new(
                Credentials {
                    cert: cert.clone(),
                    key: &key,
                    ca_der: pki.ca.cert_der(),
                    crl: None,
                },
                config(),
                now,
            )
            .unwrap();
            Side {
                engine,
                cert,
                addr: SocketAddr::from(([192, 0, 2, serial as u8], port)),
                events: Vec::new(),
                packets: Vec::new(),
            }
        };
        Pair {
            s: [side(1, 326), side(2, 326)],
            links: Vec::new(),
            now,
            closed_port: None,
        }
    }

    /// Moves everything that can move until nothing does.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..2 {
                while let Some((h, addr)) = self.s[i].engine.poll_connect() {
                    moved = true;
                    let j = 1 - i;
                    if Some(addr) == self.closed_port || addr != self.s[j].addr {
                        self.s[i]
                            .engine
                            .handle_io_error(h, "connection refused", self.now);
                        continue;
                    }
                    let from = self.s[i].addr;
                    let ip = Some(self.s[j].addr.ip());
                    let hj = self.s[j]
                        .engine
                        .handle_accepted(from, ip, self.now)
                        .unwrap();
                    self.s[i].engine.handle_connected(h, self.now);
                    let (a, b) = if i == 0 { (h, hj) } else { (hj, h) };
                    self.links.push(Link { a, b, open: true });
                }
            }
            for l in &mut self.links {
                if !l.open {
                    continue;
                }
                for (from, to, hf, ht) in [(0, 1, l.a, l.b), (1, 0, l.b, l.a)] {
                    if !self.s[to].engine.wants_read(ht) {
                        continue;
                    }
                    let bytes = self.s[from].engine.transmit(hf).to_vec();
                    if !bytes.is_empty() {
                        moved = true;
                        self.s[from].engine.consume(hf, bytes.len());
                        self.s[to].engine.handle_read(ht, &bytes, self.now);
                    }
                }
            }
            for i in 0..2 {
                while let Some(h) = self.s[i].engine.poll_release() {
                    moved = true;
                    self.s[i].engine.released(h);
                    for l in &mut self.links {
                        let (mine, other) = if i == 0 { (l.a, l.b) } else { (l.b, l.a) };
                        if l.open && mine == h {
                            l.open = false;
                            self.s[1 - i]
                                .engine
                                .handle_io_error(other, "end of stream", self.now);
                        }
                    }
                }
                while let Some(ev) = self.s[i].engine.poll_event() {
                    moved = true;
                    self.s[i].events.push(ev);
                }
                while let Some(p) = self.s[i].engine.poll_packet() {
                    moved = true;
                    self.s[i].packets.push(p);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pair does not settle");
    }

    /// Jumps to `dt` later and runs the timers.
    fn advance(&mut self, dt: Duration) {
        self.now += dt;
        for i in 0..2 {
            self.s[i].engine.handle_timeout(self.now);
        }
        self.run();
    }

    fn cmd(&mut self, i: usize, cmd: TunnelCmd) {
        self.s[i].engine.handle_command(cmd, self.now);
        self.run();
    }

    /// 0 dials 1; tunnel 1 at both; next hop 3 at both.
    fn connect(&mut self) {
        self.connect_without_up();
        self.cmd(
            0,
            TunnelCmd::Up {
                tunnel: TunnelId(1),
                hop: NextHopId(3),
            },
        );
    }

    /// [`Pair::connect`] up to 0's `Dialled`: 1 carries traffic, 0 waits
    /// for NodeCore's `Up`.
    fn connect_without_up(&mut self) {
        let (peer, addr) = (self.s[1].cert.address, self.s[1].addr);
        self.cmd(
            0,
            TunnelCmd::Dial {
                tunnel: TunnelId(1),
                peer,
                addresses: vec![addr],
                tcp_port: None,
            },
        );
        let me = self.s[0].cert.address;
        let conn = self.s[1]
            .events
            .drain(..)
            .find_map(|e| match e {
                TunnelEvent::Incoming { conn, handshake } => {
                    assert_eq!(handshake.peer.address, me);
                    Some(conn)
                }
                _ => None,
            })
            .expect("Incoming");
        assert!(TcpEngine::is_ours(conn));
        self.cmd(
            1,
            TunnelCmd::Accept {
                conn,
                tunnel: TunnelId(1),
                hop: NextHopId(3),
                reply: Control::Accept {
                    crl_number: 0,
                    observed: self.s[0].addr,
                },
            },
        );
        let dialled = self.s[0].events.drain(..).find_map(|e| match e {
            TunnelEvent::Dialled { result, .. } => Some(result),
            _ => None,
        });
        let h = dialled.expect("Dialled").expect("dial succeeds");
        assert_eq!(h.peer, self.s[1].cert);
        assert_eq!(h.observed, None);
    }
}

#[test]
fn a_tunnel_carries_packets_babel_and_control_both_ways() {
    let mut p = Pair::new();
    p.connect();
    let packet = Bytes::from_static(&[0x60, 0, 0, 0, 0, 0, 59, 64]);
    for i in 0..2 {
        p.s[i]
            .engine
            .send_datagram(NextHopId(3), packet.clone())
            .unwrap();
    }
    p.cmd(
        0,
        TunnelCmd::SendBabel {
            tunnel: TunnelId(1),
            bytes: Bytes::from_static(&[42, 2, 0, 0]),
        },
    );
    p.cmd(
        1,
        TunnelCmd::SendControl {
            tunnel: TunnelId(1),
            msg: Control::Drain,
        },
    );
    for i in 0..2 {
        assert_eq!(p.s[i].packets.len(), 1, "side {i}");
        assert_eq!(p.s[i].packets[0].bytes, packet);
        assert_eq!(p.s[i].packets[0].from, Some(NextHopId(3)));
    }
    assert!(p.s[1].events.contains(&TunnelEvent::Babel {
        tunnel: TunnelId(1),
        bytes: Bytes::from_static(&[42, 2, 0, 0]),
    }));
    assert!(p.s[0].events.contains(&TunnelEvent::Control {
        tunnel: TunnelId(1),
        msg: Control::Drain,
    }));
    let infos = p.s[0].engine.tunnel_infos();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].1.link.tx_packets, 1);
    assert_eq!(infos[0].1.link.rx_packets, 1);
}

#[test]
fn a_large_control_message_crosses_in_several_frames() {
    let mut p = Pair::new();
    p.connect();
    let certs = vec![Bytes::from(vec![7u8; 60_000]); 3];
    p.cmd(
        0,
        TunnelCmd::SendControl {
            tunnel: TunnelId(1),
            msg: Control::Certs(certs.clone()),
        },
    );
    let got: Vec<_> = p.s[1]
        .events
        .iter()
        .filter(|e| !matches!(e, TunnelEvent::Heard { .. } | TunnelEvent::Path { .. }))
        .collect();
    assert_eq!(
        got,
        [&TunnelEvent::Control {
            tunnel: TunnelId(1),
            msg: Control::Certs(certs),
        }]
    );
}

#[test]
fn close_reaches_the_peer_and_frees_the_sockets() {
    let mut p = Pair::new();
    p.connect();
    p.cmd(
        0,
        TunnelCmd::Close {
            tunnel: TunnelId(1),
            code: close::REPLACED,
            reason: "replaced".into(),
        },
    );
    assert!(p.s[1].events.iter().any(|e| matches!(e,
        TunnelEvent::Closed { tunnel, reason } if *tunnel == TunnelId(1) && reason.contains("replaced"))));
    assert_eq!(
        p.s[0]
            .engine
            .send_datagram(NextHopId(3), Bytes::from_static(&[0x60])),
        Err(NextHopError::Unknown)
    );
    p.advance(conn::CLOSE_LINGER);
    assert_eq!(p.s[0].engine.connections(), 0);
    assert_eq!(p.s[1].engine.connections(), 0);
}

#[test]
fn a_refusal_is_reported_as_such() {
    let mut p = Pair::new();
    let (peer, addr) = (p.s[1].cert.address, p.s[1].addr);
    p.cmd(
        0,
        TunnelCmd::Dial {
            tunnel: TunnelId(1),
            peer,
            addresses: vec![addr],
            tcp_port: None,
        },
    );
    let conn = p.s[1]
        .events
        .drain(..)
        .find_map(|e| match e {
            TunnelEvent::Incoming { conn, .. } => Some(conn),
            _ => None,
        })
        .unwrap();
    p.cmd(
        1,
        TunnelCmd::Refuse {
            conn,
            code: close::REFUSED_DUPLICATE,
            reason: "duplicate".into(),
        },
    );
    let err = p.s[0]
        .events
        .iter()
        .find_map(|e| match e {
            TunnelEvent::Dialled { result: Err(e), .. } => Some(e.clone()),
            _ => None,
        })
        .expect("failed dial");
    assert_eq!(err.failure, Failure::Refused(Refusal::Duplicate));
}

#[test]
fn a_dial_to_the_wrong_node_names_it() {
    let mut p = Pair::new();
    let addr = p.s[1].addr;
    p.cmd(
        0,
        TunnelCmd::Dial {
            tunnel: TunnelId(1),
            peer: "fd00::99".parse().unwrap(),
            addresses: vec![addr],
            tcp_port: None,
        },
    );
    let err = p.s[0]
        .events
        .iter()
        .find_map(|e| match e {
            TunnelEvent::Dialled { result: Err(e), .. } => Some(e.clone()),
            _ => None,
        })
        .expect("failed dial");
    assert_eq!(err.answered_by.as_deref(), Some(&p.s[1].cert));
}

#[test]
fn refused_connects_try_the_next_address_then_fail() {
    let mut p = Pair::new();
    let peer = p.s[1].cert.address;
    let dead: SocketAddr = "192.0.2.9:326".parse().unwrap();
    p.cmd(
        0,
        TunnelCmd::Dial {
            tunnel: TunnelId(1),
            peer,
            addresses: vec![dead, dead],
            tcp_port: None,
        },
    );
    let err = p.s[0]
        .events
        .iter()
        .find_map(|e| match e {
            TunnelEvent::Dialled { result: Err(e), .. } => Some(e.clone()),
            _ => None,
        })
        .expect("failed dial");
    assert_eq!(err.failure, Failure::Unreachable);
    assert!(err.reason.contains("refused"), "{}", err.reason);
    p.advance(MS);
    assert_eq!(p.s[0].engine.connections(), 0);
}

#[test]
fn a_silent_tunnel_is_pinged_and_the_answer_keeps_it_heard() {
    let mut p = Pair::new();
    p.connect();
    for _ in 0..20 {
        p.advance(50 * MS);
    }
    assert!(p.s[0].engine.frame_stats().keep_alives > 0);
    for i in 0..2 {
        assert!(
            !p.s[i]
                .events
                .iter()
                .any(|e| matches!(e, TunnelEvent::Silent { .. })),
            "side {i} suspects a tunnel that answers"
        );
    }
}

#[test]
fn a_full_tunnel_drops_packets_and_counts_them() {
    let mut p = Pair::new();
    p.connect();
    let big = Bytes::from(vec![0x60u8; 60_000]);
    // Nothing is moved between the sends: the output fills up.
    let mut sent = 0;
    while sent < 2 * conn::MAX_TX / big.len() + 2 {
        p.s[0]
            .engine
            .send_datagram(NextHopId(3), big.clone())
            .unwrap();
        sent += 1;
    }
    let info = p.s[0].engine.tunnel_infos()[0].1;
    assert!(info.link.tx_dropped > 0, "{info:?}");
    assert!(info.link.tx_packets as usize <= conn::MAX_TX / big.len() + 1);
}

#[test]
fn garbage_after_the_handshake_is_counted_not_fatal() {
    // A frame with an unknown type between two packets.
    let mut p = Pair::new();
    p.connect();
    let h = p.links[0].a;
    let c = p.s[0].engine.conn_mut(h).unwrap();
    c.send(&Repr::Ping).unwrap();
    // Unknown type 99, empty payload, written raw into the plaintext.
    let _ = c.send(&Repr::Packet(&[0x60]));
    p.run();
    assert_eq!(p.s[1].packets.len(), 1);
}

#[test]
fn traffic_before_up_waits_in_the_socket_and_arrives_after() {
    let mut p = Pair::new();
    p.connect_without_up();
    // More than the plaintext buffer holds, sent while 0 has no answer
    // from NodeCore yet.
    let packet = Bytes::from(vec![0x60u8; 1000]);
    for _ in 0..200 {
        p.s[1]
            .engine
            .send_datagram(NextHopId(3), packet.clone())
            .unwrap();
    }
    p.run();
    assert!(p.s[0].packets.is_empty());
    let h = p.links[0].a;
    assert!(
        !p.s[0].engine.wants_read(h),
        "the socket is not read meanwhile"
    );
    p.cmd(
        0,
        TunnelCmd::Up {
            tunnel: TunnelId(1),
            hop: NextHopId(3),
        },
    );
    assert_eq!(p.s[0].packets.len(), 200);
    assert!(p.s[0].engine.wants_read(h));
}

#[test]
fn dials_go_to_the_announced_tcp_port() {
    let mut p = Pair::new();
    let (peer, tcp) = (p.s[1].cert.address, p.s[1].addr);
    // The peer's QUIC port is not its TCP port.
    let quic = SocketAddr::new(tcp.ip(), 4433);
    let dial = |tunnel, tcp_port| TunnelCmd::Dial {
        tunnel: TunnelId(tunnel),
        peer,
        addresses: vec![quic],
        tcp_port,
    };
    let reached = |p: &mut Pair| {
        p.s[1]
            .events
            .drain(..)
            .any(|e| matches!(e, TunnelEvent::Incoming { .. }))
    };
    // No port announced (an older node): the QUIC port is tried, in vain.
    p.cmd(0, dial(1, None));
    assert!(!reached(&mut p));
    let failed = p.s[0].events.drain(..).any(|e| {
        matches!(e, TunnelEvent::Dialled { tunnel: TunnelId(1), result: Err(ref e) }
            if e.reason.contains(&quic.to_string()))
    });
    assert!(failed);
    // Announced: the same IP at that port.
    p.cmd(0, dial(2, Some(tcp.port())));
    assert!(reached(&mut p));
}

#[test]
fn tcp_addresses_keep_the_ips_and_take_the_announced_port() {
    let a: Vec<SocketAddr> = vec![
        "192.0.2.1:4433".parse().unwrap(),
        "[2001:db8::1]:4434".parse().unwrap(),
    ];
    assert_eq!(tcp_addresses(&a, None), a);
    assert_eq!(
        tcp_addresses(&a, Some(443)),
        vec![
            "192.0.2.1:443".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ]
    );
}

//! The packet loop's TCP side: the listening socket, one nonblocking
//! socket per TCP tunnel (all registered with the loop's runtime, no task
//! of their own), the [`TcpEngine`] they feed, and the transport choice
//! ([`Chooser`]) that sends each of NodeCore's commands to the QUIC or the
//! TCP engine.
//!
//! In auto mode, it also carries out the chooser's QUIC probes of the
//! tunnels that fell back to TCP, and closes those that can move back.
//!
//! Each pass: accept what waits, open the sockets the engine asks for,
//! read what every socket has (a bounded number of reads each), write
//! what the engine has for it, drop the sockets it released. The loop
//! sleeps on [`TcpIo::ready`]: a listener or socket readable, a socket
//! with output writable, a connect completed.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use crate::node::core::boundary::{TunnelCmd, TunnelEvent, TunnelId};
use crate::transport::control::close;
use crate::transport::engine::Engine;
use crate::transport::socket::FaultSwitch;
use crate::transport::tcp::choice::{Chooser, Kind, Mode};
use crate::transport::tcp::{TcpEngine, TcpHandle};

/// Reads per socket per pass.
const READS_PER_PASS: usize = 8;
/// Connections accepted per pass.
const ACCEPTS_PER_PASS: usize = 64;
/// How long dials go straight to TCP once QUIC looks blocked.
pub const PREFER_TCP: Duration = Duration::from_secs(300);

/// What the packet loop needs for TCP tunnels.
#[derive(Debug)]
pub struct TcpSetup {
    /// The engine.
    pub engine: TcpEngine,
    /// The listening socket (bound, listening, nonblocking); `None`: dial
    /// only.
    pub listener: Option<std::net::TcpListener>,
    /// QUIC, TCP or QUIC first.
    pub mode: Mode,
    /// How long to prefer TCP once QUIC looks blocked.
    pub prefer_tcp: Duration,
}

impl TcpSetup {
    /// Cuts the TCP side off with the UDP socket (tests of crashes and
    /// outages): while the switch is a blackhole, no socket is read,
    /// written, accepted or opened, and a loop that ends then leaves its
    /// connections open, as a crashed host would.
    pub(super) fn io(self, switch: Option<std::sync::Arc<FaultSwitch>>) -> io::Result<TcpIo> {
        let mut t = TcpIo::new(self)?;
        t.switch = switch;
        Ok(t)
    }
}

/// The TCP side's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpStats {
    /// The listening address.
    pub listen: Option<SocketAddr>,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused at once (too many).
    pub accept_refused: u64,
    /// QUIC dials tried again over TCP.
    pub fallbacks: u64,
    /// QUIC probes of tunnels that fell back to TCP.
    pub probes: u64,
    /// Tunnels closed to move back to QUIC.
    pub moved_back: u64,
    /// Whether dials go straight to TCP now.
    pub prefer_tcp: bool,
    /// TCP dials started.
    pub dials: u64,
    /// TCP dials that failed.
    pub dials_failed: u64,
    /// Incoming TCP handshakes completed.
    pub accepted_handshakes: u64,
    /// Incoming TCP handshakes refused.
    pub refused_handshakes: u64,
}

struct Sock {
    stream: TcpStream,
    connecting: bool,
}

/// The TCP side of the loop. See the module documentation.
pub(super) struct TcpIo {
    pub engine: TcpEngine,
    listener: Option<TcpListener>,
    /// Accepted while waiting, handled at the next pass.
    accepted: Vec<(TcpStream, SocketAddr)>,
    socks: HashMap<TcpHandle, Sock>,
    chooser: Chooser,
    /// The transport of each dial in progress.
    dials: HashMap<TunnelId, Kind>,
    buf: Vec<u8>,
    stats: TcpStats,
    /// Commands for the QUIC engine (probes), given at the next pass.
    quic_cmds: Vec<TunnelCmd>,
    /// Events of the loop's own for NodeCore (tunnels moved back).
    out: VecDeque<TunnelEvent>,
    switch: Option<std::sync::Arc<FaultSwitch>>,
}

impl Drop for TcpIo {
    fn drop(&mut self) {
        if self.cut() {
            // A crash leaves the peers' connections open: they notice by
            // silence, as over QUIC.
            for (_, s) in self.socks.drain() {
                if let Ok(std) = s.stream.into_std() {
                    std::mem::forget(std);
                }
            }
        }
    }
}

impl TcpIo {
    pub fn new(setup: TcpSetup) -> io::Result<Self> {
        let listen = setup
            .listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()?;
        let listener = setup.listener.map(TcpListener::from_std).transpose()?;
        Ok(Self {
            engine: setup.engine,
            chooser: Chooser::new(setup.mode, true, setup.prefer_tcp),
            listener,
            accepted: Vec::new(),
            socks: HashMap::new(),
            dials: HashMap::new(),
            buf: vec![0; 64 * 1024],
            quic_cmds: Vec::new(),
            out: VecDeque::new(),
            switch: None,
            stats: TcpStats {
                listen,
                ..TcpStats::default()
            },
        })
    }

    pub fn stats(&self, now: Instant) -> TcpStats {
        let e = self.engine.stats();
        TcpStats {
            prefer_tcp: self.chooser.prefers_tcp(now),
            dials: e.dials,
            dials_failed: e.dials_failed,
            accepted_handshakes: e.accepted_handshakes,
            refused_handshakes: e.refused_handshakes,
            ..self.stats
        }
    }

    /// Gives one of NodeCore's commands to the engine it is for.
    pub fn command(&mut self, quic: &mut Engine, cmd: TunnelCmd, now: Instant) {
        let tcp = match &cmd {
            TunnelCmd::Dial {
                tunnel,
                peer,
                addresses,
                tcp_port,
            } => {
                let kind = self.chooser.dial(*tunnel, *peer, addresses, *tcp_port, now);
                self.dials.insert(*tunnel, kind);
                kind == Kind::Tcp
            }
            TunnelCmd::CancelDial { tunnel } | TunnelCmd::Close { tunnel, .. } => {
                self.chooser.forget(*tunnel);
                self.dials.remove(tunnel);
                self.engine.has_tunnel(*tunnel)
            }
            TunnelCmd::Up { tunnel, .. }
            | TunnelCmd::SendBabel { tunnel, .. }
            | TunnelCmd::SendControl { tunnel, .. } => self.engine.has_tunnel(*tunnel),
            TunnelCmd::Accept { conn, .. } | TunnelCmd::Refuse { conn, .. } => {
                TcpEngine::is_ours(*conn)
            }
            TunnelCmd::SendPacket { .. } => false,
            TunnelCmd::SetCrl(_) | TunnelCmd::SetIdentity(_) => {
                self.engine.handle_command(cmd.clone(), now);
                false
            }
        };
        if tcp {
            self.engine.handle_command(cmd, now);
        } else {
            quic.handle_command(cmd, now);
        }
    }

    /// An event of either engine on its way to NodeCore: a QUIC dial that
    /// got no answer is tried again over TCP instead (auto mode).
    pub fn filter(&mut self, ev: TunnelEvent, from: Kind, now: Instant) -> Option<TunnelEvent> {
        if let Some(t) = tunnel_of(&ev)
            && Chooser::is_probe(t)
        {
            self.probe_event(t, &ev, now);
            return None;
        }
        if let TunnelEvent::Closed { tunnel, .. } = &ev {
            self.chooser.forget(*tunnel);
        }
        let TunnelEvent::Dialled { tunnel, result } = &ev else {
            return Some(ev);
        };
        let tunnel = *tunnel;
        self.dials.remove(&tunnel);
        let redial = self
            .chooser
            .dialled(tunnel, from, result.as_ref().map(|_| ()), now);
        match redial {
            Some(r) => {
                self.stats.fallbacks += 1;
                if let Err(e) = result {
                    tracing::info!(%tunnel, peer = %r.peer, reason = %e.reason,
                        "QUIC dial got no answer; dialling over TCP");
                }
                self.dials.insert(tunnel, Kind::Tcp);
                self.engine.handle_command(
                    TunnelCmd::Dial {
                        tunnel,
                        peer: r.peer,
                        addresses: r.addresses,
                        tcp_port: r.tcp_port,
                    },
                    now,
                );
                None
            }
            None => Some(ev),
        }
    }

    /// A probe's event: its answer decides whether its tunnel moves back
    /// to QUIC; its connection is closed at once.
    fn probe_event(&mut self, probe: TunnelId, ev: &TunnelEvent, now: Instant) {
        let TunnelEvent::Dialled { result, .. } = ev else {
            return;
        };
        if result.is_ok() {
            self.quic_cmds.push(TunnelCmd::Close {
                tunnel: probe,
                code: close::DONE,
                reason: "probe".into(),
            });
        }
        let Some(tunnel) = self.chooser.probed(probe, result.as_ref().map(|_| ()), now) else {
            return;
        };
        let reason = "UDP gets through again: moving to QUIC";
        tracing::info!(%tunnel, "{reason}");
        self.stats.moved_back += 1;
        self.engine.handle_command(
            TunnelCmd::Close {
                tunnel,
                code: close::REPLACED,
                reason: reason.into(),
            },
            now,
        );
        self.out.push_back(TunnelEvent::Closed {
            tunnel,
            reason: reason.into(),
        });
    }

    /// The loop's own events for NodeCore.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.out.pop_front()
    }

    /// Whether [`TcpIo::poll_event`] or the engine have events.
    pub fn has_events(&self) -> bool {
        !self.out.is_empty() || self.engine.has_events()
    }

    /// When the engine's timers or the next probe are due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.engine.poll_timeout(), self.chooser.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn cut(&self) -> bool {
        self.switch.as_ref().is_some_and(|s| s.is_blackhole())
    }

    /// Accepts, connects, reads and writes what can be now, and starts
    /// the probes that are due; `true` if anything moved.
    pub fn pump(&mut self, quic: &mut Engine, now: Instant) -> bool {
        if self.cut() {
            return false;
        }
        let mut moved = !self.quic_cmds.is_empty();
        for cmd in self.quic_cmds.drain(..) {
            quic.handle_command(cmd, now);
        }
        while let Some(p) = self.chooser.poll_probe(now) {
            moved = true;
            self.stats.probes += 1;
            tracing::debug!(probe = %p.probe, peer = %p.peer, "probing QUIC");
            quic.handle_command(
                TunnelCmd::Dial {
                    tunnel: p.probe,
                    peer: p.peer,
                    addresses: p.addresses,
                    tcp_port: None,
                },
                now,
            );
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Accept.
        let mut accepted = std::mem::take(&mut self.accepted);
        if let Some(l) = &self.listener {
            while accepted.len() < ACCEPTS_PER_PASS {
                match l.poll_accept(&mut cx) {
                    Poll::Ready(Ok(a)) => accepted.push(a),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "TCP accept failed");
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        for (stream, remote) in accepted.drain(..) {
            moved = true;
            let local = stream.local_addr().ok().map(|a| a.ip());
            let Some(h) = self.engine.handle_accepted(remote, local, now) else {
                self.stats.accept_refused += 1;
                continue;
            };
            self.stats.accepted += 1;
            let _ = stream.set_nodelay(true);
            self.socks.insert(
                h,
                Sock {
                    stream,
                    connecting: false,
                },
            );
        }
        self.accepted = accepted;
        // Connect.
        while let Some((h, addr)) = self.engine.poll_connect() {
            moved = true;
            match connect(addr) {
                Ok(stream) => {
                    self.socks.insert(
                        h,
                        Sock {
                            stream,
                            connecting: true,
                        },
                    );
                }
                Err(e) => self
                    .engine
                    .handle_io_error(h, &format!("connecting: {e}"), now),
            }
        }
        let handles: Vec<TcpHandle> = self.socks.keys().copied().collect();
        for h in handles {
            moved |= self.pump_one(h, &mut cx, now);
        }
        while let Some(h) = self.engine.poll_release() {
            moved = true;
            if let Some(s) = self.socks.remove(&h) {
                // Whatever could not be written is lost with the socket.
                drop(s.stream);
            }
            self.engine.released(h);
        }
        moved
    }

    fn pump_one(&mut self, h: TcpHandle, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut moved = false;
        let Some(s) = self.socks.get_mut(&h) else {
            return false;
        };
        if s.connecting {
            if s.stream.poll_write_ready(cx).is_pending() {
                return false;
            }
            match s.stream.take_error() {
                Ok(None) if s.stream.peer_addr().is_ok() => {
                    s.connecting = false;
                    moved = true;
                    self.engine.handle_connected(h, now);
                }
                Ok(None) => return false,
                Ok(Some(e)) | Err(e) => {
                    self.engine.handle_io_error(h, &e.to_string(), now);
                    return true;
                }
            }
        }
        for _ in 0..READS_PER_PASS {
            if !self.engine.wants_read(h) {
                break;
            }
            let Some(s) = self.socks.get(&h) else { break };
            match s.stream.try_read(&mut self.buf) {
                Ok(0) => {
                    self.engine.handle_io_error(h, "end of stream", now);
                    return true;
                }
                Ok(n) => {
                    moved = true;
                    self.engine.handle_read(h, &self.buf[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.engine.handle_io_error(h, &e.to_string(), now);
                    return true;
                }
            }
        }
        while let Some(s) = self.socks.get(&h) {
            let out = self.engine.transmit(h);
            if out.is_empty() {
                break;
            }
            match s.stream.try_write(out) {
                Ok(n) => {
                    moved = true;
                    self.engine.consume(h, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.engine.handle_io_error(h, &e.to_string(), now);
                    return true;
                }
            }
        }
        moved
    }

    /// Ready when a socket wants attention: the listener or a socket
    /// readable, a connect completed, a socket with output writable.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.cut() {
            return Poll::Pending;
        }
        let mut ready = false;
        if let Some(l) = &self.listener
            && self.accepted.len() < ACCEPTS_PER_PASS
            && let Poll::Ready(r) = l.poll_accept(cx)
        {
            ready = true;
            if let Ok(a) = r {
                self.accepted.push(a);
            }
        }
        for (h, s) in &self.socks {
            if s.connecting {
                ready |= s.stream.poll_write_ready(cx).is_ready();
                continue;
            }
            if self.engine.wants_read(*h) {
                ready |= s.stream.poll_read_ready(cx).is_ready();
            }
            if !self.engine.output_empty(*h) {
                ready |= s.stream.poll_write_ready(cx).is_ready();
            }
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Closes every connection (the loop stops).
    pub fn close_all(&mut self, now: Instant, code: u32, reason: &str) {
        self.engine.close_all(now, code, reason);
    }

    /// Connections still open.
    pub fn connections(&self) -> usize {
        self.engine.connections()
    }
}

/// The tunnel an event is about.
fn tunnel_of(ev: &TunnelEvent) -> Option<TunnelId> {
    match ev {
        TunnelEvent::Dialled { tunnel, .. }
        | TunnelEvent::Babel { tunnel, .. }
        | TunnelEvent::Control { tunnel, .. }
        | TunnelEvent::ControlError { tunnel, .. }
        | TunnelEvent::Path { tunnel, .. }
        | TunnelEvent::Silent { tunnel, .. }
        | TunnelEvent::Heard { tunnel }
        | TunnelEvent::Closed { tunnel, .. } => Some(*tunnel),
        TunnelEvent::Incoming { .. } | TunnelEvent::Exchange { .. } => None,
    }
}

/// A nonblocking socket connecting to `addr`.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    TcpStream::from_std(s.into())
}

/// A listening socket at `addr` for TCP tunnels (nonblocking; on IPv6
/// wildcards dual-stack, as the UDP socket).
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

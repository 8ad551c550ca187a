//! The packet loop: one thread that owns the UDP socket, every QUIC
//! tunnel's state ([`Engine`]), the host side (TUN queue) and reads the FIB
//! snapshot. A packet is received, decrypted, looked up and written to the
//! TUN, or re-encrypted to the next tunnel, in the same pass of the same
//! thread; a packet from the TUN likewise. Nothing crosses a thread on the
//! packet path, nothing is locked and nothing allocated per packet.
//!
//! The control loop talks to it in tunnels (`docs/architecture.md`):
//! [`TunnelCmd`]s in through a bounded channel (the channel's wake-up is
//! the runtime's eventfd), [`TunnelEvent`]s out through another. The loop
//! never waits for the control loop: it takes events out of the engine
//! only while the channel has room, and the engine bounds what waits (Babel
//! packets beyond its queue are dropped, control streams stop being read,
//! state changes are kept).
//!
//! Each wake-up: read every source that is ready without waiting (UDP
//! batches through quinn-udp with GRO, TUN batches with offload, commands),
//! run what is due (QUIC timers, liveness, reassembly), route the packets
//! that came out of the tunnels and the host, pass events on, send what
//! QUIC has (GSO batches), write the TUN batch; again until nothing moved;
//! then sleep until a source is ready or the engine's earliest deadline.
//! An idle node with no deadline sleeps for good.
//!
//! Queues and their bounds: the command and event channels (their
//! capacity), the engine's queues ([`crate::transport::engine`]), each
//! tunnel's datagram send queue (`datagram_send_buffer` bytes; when it is
//! full the oldest datagrams are dropped, so a queue never holds more than
//! its size of delay), the TUN write batch (one batch), the host channel.

mod host;
mod tcp;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use re6st_dataplane::fib::SharedFib;
use re6st_dataplane::forward::{Action, ForwardConfig, ForwardStats, Forwarder, Ingress};
use re6st_dataplane::icmp::MAX_ERROR_LEN;
use re6st_dataplane::nexthop::NextHopError;
use re6st_dataplane::tun::TunError;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use host::HostIo;
pub use host::{Host, HostSlot, HostStats};
use tcp::TcpIo;
pub use tcp::{PREFER_TCP, TcpSetup, TcpStats, listen as tcp_listen};

use super::core::boundary::{TunnelCmd, TunnelEvent, TunnelId};
use crate::peers::wire;
use crate::transport::TransportStats;
use crate::transport::control::close;
use crate::transport::engine::{Engine, FrameStats, Packet, TunnelInfo};
use crate::transport::socket::FaultSwitch;
use crate::transport::tcp::choice::Kind;
use crate::transport::udp::{Arena, UdpIo, UdpStats};

/// Commands waiting for the loop, at most (the control loop waits when
/// the channel is full).
pub const COMMAND_QUEUE: usize = 1024;
/// Events waiting for the control loop, at most.
pub const EVENT_QUEUE: usize = 1024;
/// Batches read from one source per pass before the others get a turn.
const BATCHES_PER_PASS: usize = 4;
/// Commands taken per pass at most.
const COMMANDS_PER_PASS: usize = 256;
/// How long a stopping loop lets its connections send their close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the control loop sends.
#[derive(Debug)]
enum Msg {
    Tunnel(TunnelCmd),
    Status(oneshot::Sender<LoopStatus>),
    Stop {
        code: u32,
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// The loop's counters and tunnels, for the node's status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoopStatus {
    /// The socket.
    pub udp: UdpStats,
    /// Handshakes.
    pub transport: TransportStats,
    /// Datagrams and keep-alives.
    pub frames: FrameStats,
    /// Forwarding decisions.
    #[serde(skip)]
    pub forward: ForwardStats,
    /// The host side.
    pub host: HostStats,
    /// Peer-exchange packets dropped because the event channel was full.
    pub exchange_dropped: u64,
    /// Peer-exchange packets with a bad UDP header or checksum.
    pub exchange_malformed: u64,
    /// Packets routed to a next hop that is gone.
    pub no_next_hop: u64,
    /// Packets a tunnel refused (too large, no datagrams).
    pub send_failed: u64,
    /// Wake-ups so far.
    pub wakeups: u64,
    /// Wake-ups by the engine's deadline (the others: a ready source).
    pub timer_wakeups: u64,
    /// Passes over the sources (several per wake-up under load).
    pub passes: u64,
    /// The bound UDP address.
    pub local: Option<SocketAddr>,
    /// Tunnels over TCP (`None`: TCP is off).
    pub tcp: Option<TcpStats>,
    /// Up tunnels.
    #[serde(skip)]
    pub tunnels: Vec<(TunnelId, TunnelInfo)>,
    /// Those of them over TCP.
    #[serde(skip)]
    pub tcp_tunnels: Vec<TunnelId>,
}

impl LoopStatus {
    /// The packet path's counters.
    pub fn path(&self) -> PathStats {
        let f = &self.forward;
        PathStats {
            forward: f.clone(),
            delivered: f.delivered,
            forwarded: f.forwarded,
            dropped: f.dropped_malformed
                + f.dropped_bad_source
                + f.dropped_multicast
                + f.dropped_scope
                + f.dropped_no_route
                + f.dropped_hop_limit
                + f.dropped_too_big,
            dropped_malformed: f.dropped_malformed,
            icmp_sent: f.icmp_sent,
            fragments_rejected: self.frames.reassembly.rejected,
            bad_frames: self.frames.bad_frames,
            unknown_frames: self.frames.unknown_frames,
            babel_dropped: self.frames.babel_dropped,
            packets_dropped: self.frames.packets_dropped,
            exchange_dropped: self.exchange_dropped,
            exchange_malformed: self.exchange_malformed,
            no_next_hop: self.no_next_hop,
            send_failed: self.send_failed,
            keep_alives: self.frames.keep_alives,
            wakeups: self.wakeups,
            timer_wakeups: self.timer_wakeups,
            passes: self.passes,
            udp: self.udp,
            host: self.host,
        }
    }

    /// Adds what only the loop knows to NodeCore's status: each tunnel's
    /// traffic, live RTT and datagram size, the transport's and the
    /// packet path's counters.
    pub(crate) fn fill(&self, s: &mut super::status::NodeStatus) {
        for t in &mut s.tunnels {
            if let Some((_, info)) = self.tunnels.iter().find(|(id, _)| id.0 == t.id) {
                t.link = info.link;
                t.quic = info.quic;
                t.rtt_ms = info.rtt.as_secs_f64() * 1000.0;
                t.max_datagram_size = info.max_datagram;
            }
            if self.tcp_tunnels.iter().any(|id| id.0 == t.id) {
                t.transport = "tcp";
            }
        }
        s.listen = self.local;
        s.transport = self.transport.clone();
        s.tcp = self.tcp;
        s.path = self.path();
    }
}

/// The packet path's counters as the node's status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathStats {
    /// Forwarding decisions (delivered, forwarded, ICMPv6, drops by reason).
    #[serde(skip)]
    pub forward: ForwardStats,
    /// Packets delivered to the host.
    pub delivered: u64,
    /// Packets forwarded to a tunnel.
    pub forwarded: u64,
    /// Packets dropped by the forwarder (malformed, no route, scope...).
    pub dropped: u64,
    /// Malformed IPv6 packets (part of `dropped`).
    pub dropped_malformed: u64,
    /// ICMPv6 errors sent.
    pub icmp_sent: u64,
    /// Fragments that were refused (bad header, overlap, too many pieces).
    pub fragments_rejected: u64,
    /// Empty datagrams or datagrams starting with the reserved code 0.
    pub bad_frames: u64,
    /// Datagrams with a control code we do not know.
    pub unknown_frames: u64,
    /// Babel packets dropped because the control loop was behind.
    pub babel_dropped: u64,
    /// Received packets dropped because the loop's queue was full.
    pub packets_dropped: u64,
    /// Peer-exchange packets dropped because the control loop was behind.
    pub exchange_dropped: u64,
    /// Peer-exchange packets with a bad UDP header or checksum.
    pub exchange_malformed: u64,
    /// Packets routed to a next hop that is gone.
    pub no_next_hop: u64,
    /// Packets a tunnel refused (too large, no datagrams).
    pub send_failed: u64,
    /// Keep-alives sent on silent tunnels.
    pub keep_alives: u64,
    /// The loop's wake-ups.
    pub wakeups: u64,
    /// Wake-ups by the engine's deadline.
    pub timer_wakeups: u64,
    /// Passes over the sources.
    pub passes: u64,
    /// The UDP socket.
    pub udp: UdpStats,
    /// The host side (TUN or channel): the status's `host` counters.
    #[serde(skip)]
    pub host: HostStats,
}

/// What the loop needs besides its socket and engine.
#[derive(Debug)]
pub struct LoopConfig {
    /// This node's overlay address (peer exchange is addressed to it).
    pub me: Ipv6Addr,
    /// Forwarding: overlay MTU, ICMPv6 source and rate.
    pub forward: ForwardConfig,
    /// The routes, as the control loop publishes them.
    pub fib: Arc<SharedFib>,
    /// Where the host's packets come from and go.
    pub host: Host,
    /// Cuts the socket off in tests.
    pub switch: Option<Arc<FaultSwitch>>,
    /// Tunnels over TCP (`None`: QUIC only).
    pub tcp: Option<TcpSetup>,
}

/// The control loop's side of a running packet loop.
#[derive(Debug)]
pub struct PacketLoop {
    commands: mpsc::Sender<Msg>,
    local: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Option<oneshot::Receiver<io::Error>>,
}

/// Why the loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket could not be set up.
    #[error("UDP socket: {0}")]
    Socket(io::Error),
    /// The TUN device could not be opened.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The thread could not be started.
    #[error("packet loop thread: {0}")]
    Thread(io::Error),
}

impl PacketLoop {
    /// Starts the loop on its own thread with `engine` on `socket` (bound,
    /// non-blocking); its events come out of the returned receiver.
    pub async fn start(
        engine: Engine,
        socket: std::net::UdpSocket,
        config: LoopConfig,
    ) -> Result<(Self, mpsc::Receiver<TunnelEvent>), StartError> {
        let local = socket.local_addr().map_err(StartError::Socket)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (fail_tx, fail_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("re6st-packets".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Runner::new(engine, socket, config, (cmd_rx, ev_tx), fail_tx) {
                        Ok(r) => {
                            let _ = ready_tx.send(Ok(()));
                            r.run().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(StartError::Thread)?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Thread(io::Error::other(
                    "the packet loop ended while starting",
                )));
            }
        }
        let me = Self {
            commands: cmd_tx,
            local,
            thread: Some(thread),
            failed: Some(fail_rx),
        };
        Ok((me, ev_rx))
    }

    /// The UDP address the loop listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Fires once if the host side fails for good (the TUN device went
    /// away); taken once.
    pub fn take_failure(&mut self) -> Option<oneshot::Receiver<io::Error>> {
        self.failed.take()
    }

    /// Passes a command on (waits while the queue is full); `false` once
    /// the loop is gone.
    pub async fn send(&self, cmd: TunnelCmd) -> bool {
        self.commands.send(Msg::Tunnel(cmd)).await.is_ok()
    }

    /// The loop's counters and tunnels; `None` once it is gone.
    pub async fn status(&self) -> Option<LoopStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Msg::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Closes every tunnel with `code` and `reason`, lets the closes go
    /// out (at most a second), and ends the loop.
    pub async fn stop(&mut self, code: u32, reason: &str) {
        let (done, wait) = oneshot::channel();
        let msg = Msg::Stop {
            code,
            reason: reason.into(),
            done,
        };
        if self.commands.send(msg).await.is_ok() {
            let _ = wait.await;
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The loop's state, on its thread.
struct Runner {
    engine: Engine,
    udp: UdpIo,
    host: HostIo,
    fib: Arc<SharedFib>,
    me: Ipv6Addr,
    forwarder: Forwarder,
    icmp: Box<[u8; MAX_ERROR_LEN]>,
    commands: mpsc::Receiver<Msg>,
    events: mpsc::Sender<TunnelEvent>,
    /// A transmit the socket did not take yet (it was full).
    blocked: Option<Blocked>,
    tx_buf: Vec<u8>,
    /// Packets received from the host this pass, routed after the read.
    from_host: Vec<BytesMut>,
    stopping: Option<(Instant, oneshot::Sender<()>)>,
    /// The host side failed for good; told once.
    host_dead: bool,
    failed: Option<oneshot::Sender<io::Error>>,
    host_stats: HostStats,
    exchange_dropped: u64,
    exchange_malformed: u64,
    no_next_hop: u64,
    send_failed: u64,
    arena: Arena,
    wakeups: u64,
    tcp: Option<TcpIo>,
    timer_wakeups: u64,
    passes: u64,
}

/// A transmit waiting for room in the socket.
struct Blocked {
    destination: SocketAddr,
    ecn: Option<quinn_proto::EcnCodepoint>,
    src_ip: Option<std::net::IpAddr>,
    segment_size: Option<usize>,
    len: usize,
}

/// What ended a wait.
enum Wake {
    Msg(Option<Msg>),
    Ready,
    Timer,
}

impl Runner {
    fn new(
        engine: Engine,
        socket: std::net::UdpSocket,
        config: LoopConfig,
        (commands, events): (mpsc::Receiver<Msg>, mpsc::Sender<TunnelEvent>),
        failed: oneshot::Sender<io::Error>,
    ) -> Result<Self, StartError> {
        let udp = UdpIo::new(socket, config.switch.clone()).map_err(StartError::Socket)?;
        let host = HostIo::open(config.host)?;
        let switch = config.switch.clone();
        let tcp = config
            .tcp
            .map(|t| t.io(switch))
            .transpose()
            .map_err(StartError::Socket)?;
        Ok(Self {
            engine,
            udp,
            host,
            fib: config.fib,
            me: config.me,
            forwarder: Forwarder::new(config.forward),
            icmp: Box::new([0; MAX_ERROR_LEN]),
            commands,
            events,
            blocked: None,
            tx_buf: Vec::with_capacity(64 * 1024),
            from_host: Vec::with_capacity(re6st_dataplane::tun::BATCH_SIZE),
            stopping: None,
            host_dead: false,
            failed: Some(failed),
            host_stats: HostStats::default(),
            exchange_dropped: 0,
            exchange_malformed: 0,
            no_next_hop: 0,
            send_failed: 0,
            arena: Arena::default(),
            wakeups: 0,
            tcp,
            timer_wakeups: 0,
            passes: 0,
        })
    }

    async fn run(mut self) {
        loop {
            self.work().await;
            if let Some((until, _)) = &self.stopping
                && ((self.engine.connections() == 0
                    && self.tcp.as_ref().is_none_or(|t| t.connections() == 0))
                    || Instant::now() >= *until)
            {
                if let Some((_, done)) = self.stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
            let deadline = self.engine.poll_timeout();
            let tcp_deadline = self.tcp.as_ref().and_then(TcpIo::poll_timeout);
            let deadline = match (deadline, tcp_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let deadline = match &self.stopping {
                Some((until, _)) => Some(deadline.map_or(*until, |d| d.min(*until))),
                None => deadline,
            };
            let want_events =
                self.engine.has_events() || self.tcp.as_ref().is_some_and(TcpIo::has_events);
            let tcp = &mut self.tcp;
            let blocked = self.blocked.is_some();
            let wake = tokio::select! {
                biased;
                m = self.commands.recv(), if self.stopping.is_none() => Wake::Msg(m),
                _ = self.udp.readable() => Wake::Ready,
                _ = self.udp.writable(), if blocked => Wake::Ready,
                _ = self.host.readable(), if !self.host_dead => Wake::Ready,
                _ = self.events.reserve(), if want_events => Wake::Ready,
                () = std::future::poll_fn(|cx| match tcp.as_mut() {
                    Some(t) => t.poll_ready(cx),
                    None => std::task::Poll::Pending,
                }) => Wake::Ready,
                () = sleep_until(deadline) => Wake::Timer,
            };
            self.wakeups += 1;
            match wake {
                Wake::Msg(Some(m)) => self.on_msg(m),
                Wake::Msg(None) => {
                    // The node is gone without a stop: close and end.
                    let (done, _) = oneshot::channel();
                    self.begin_stop(close::SHUTDOWN, "node shutting down", done);
                }
                Wake::Ready => {}
                Wake::Timer => self.timer_wakeups += 1,
            }
        }
    }

    fn on_msg(&mut self, m: Msg) {
        let now = Instant::now();
        match m {
            Msg::Tunnel(cmd) => {
                // A renewed certificate may bring another IPv4 address:
                // the ICMPv4 errors come from it from now on.
                if let TunnelCmd::SetIdentity(cert) = &cmd {
                    self.forwarder.set_icmp_source_v4(cert.ipv4_address());
                }
                match &mut self.tcp {
                    Some(t) => t.command(&mut self.engine, cmd, now),
                    None => self.engine.handle_command(cmd, now),
                }
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Msg::Stop { code, reason, done } => self.begin_stop(code, &reason, done),
        }
    }

    fn begin_stop(&mut self, code: u32, reason: &str, done: oneshot::Sender<()>) {
        let now = Instant::now();
        self.engine.close_all(now, code, reason);
        if let Some(t) = &mut self.tcp {
            t.close_all(now, code, reason);
        }
        self.stopping = Some((now + CLOSE_GRACE, done));
    }

    fn status(&mut self) -> LoopStatus {
        let now = Instant::now();
        let mut tunnels = self.engine.tunnel_infos();
        let mut tcp_tunnels = Vec::new();
        if let Some(t) = &self.tcp {
            for (id, info) in t.engine.tunnel_infos() {
                tcp_tunnels.push(id);
                tunnels.push((id, info));
            }
            tunnels.sort_by_key(|(id, _)| *id);
        }
        LoopStatus {
            udp: self.udp.stats(),
            transport: self.engine.stats(),
            frames: self.engine.frame_stats(),
            forward: self.forwarder.stats().clone(),
            host: self.host_stats,
            exchange_dropped: self.exchange_dropped,
            exchange_malformed: self.exchange_malformed,
            no_next_hop: self.no_next_hop,
            send_failed: self.send_failed,
            wakeups: self.wakeups,
            timer_wakeups: self.timer_wakeups,
            passes: self.passes,
            local: Some(self.udp.local_addr()),
            tcp: self.tcp.as_ref().map(|t| t.stats(now)),
            tunnels,
            tcp_tunnels,
        }
    }

    /// Moves everything that can move now, until nothing does.
    async fn work(&mut self) {
        loop {
            self.passes += 1;
            let mut moved = false;
            // Commands first: under load, the passes follow each other
            // without a wait, and the control plane must not starve.
            for _ in 0..COMMANDS_PER_PASS {
                if self.stopping.is_some() {
                    break;
                }
                let Ok(m) = self.commands.try_recv() else {
                    break;
                };
                self.on_msg(m);
                moved = true;
            }
            let now = Instant::now();
            for _ in 0..BATCHES_PER_PASS {
                let engine = &mut self.engine;
                match self.udp.try_recv(|r| {
                    engine.handle_datagram(now, r.remote, r.local_ip, r.ecn, r.data);
                }) {
                    Ok(0) => break,
                    Ok(_) => moved = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive failed");
                        break;
                    }
                }
            }
            for _ in 0..BATCHES_PER_PASS {
                if self.host_dead {
                    break;
                }
                let (stats, from_host) = (&mut self.host_stats, &mut self.from_host);
                match self.host.try_recv(stats, |p| from_host.push(p)) {
                    Ok(0) => break,
                    Ok(_) => moved = true,
                    Err(e) if HostIo::fatal(&e) => {
                        tracing::error!(error = %e, "the TUN device is gone");
                        self.host_dead = true;
                        if let Some(f) = self.failed.take() {
                            let _ = f.send(e);
                        }
                        break;
                    }
                    Err(e) => {
                        self.host_stats.rx_errors += 1;
                        tracing::debug!(error = %e, "TUN read failed");
                        break;
                    }
                }
                let fib = self.fib.load_full();
                let mut packets = std::mem::take(&mut self.from_host);
                for p in packets.drain(..) {
                    self.route(&fib, Ingress::Tun, p, now).await;
                }
                self.from_host = packets;
            }
            if let Some(t) = &mut self.tcp {
                moved |= t.pump(&mut self.engine, now);
                if t.engine.poll_timeout().is_some_and(|d| d <= now) {
                    t.engine.handle_timeout(now);
                }
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            if self.route_engine_packets(now).await {
                moved = true;
            }
            self.pass_events();
            self.host.flush(&mut self.host_stats).await;
            if self.transmit(now) {
                moved = true;
            }
            if let Some(t) = &mut self.tcp {
                moved |= t.pump(&mut self.engine, now);
            }
            if !moved {
                return;
            }
        }
    }

    /// Routes what the tunnels received and what the node originates.
    async fn route_engine_packets(&mut self, now: Instant) -> bool {
        let mut any = false;
        let fib = self.fib.load_full();
        while let Some(Packet { from, bytes }) = self
            .engine
            .poll_packet()
            .or_else(|| self.tcp.as_mut().and_then(|t| t.engine.poll_packet()))
        {
            any = true;
            let ingress = from.map_or(Ingress::Local, Ingress::Tunnel);
            // quinn hands datagrams out frozen (views of the decrypted
            // QUIC packet): the forwarder needs the packet writable (Hop
            // Limit), so it is copied once, into the arena.
            let packet = match bytes.try_into_mut() {
                Ok(p) => p,
                Err(b) => self.arena.copy(&b),
            };
            self.route(&fib, ingress, packet, now).await;
        }
        any
    }

    /// One packet through the forwarder: to a tunnel, to the host, or to
    /// the control loop (peer exchange for this node).
    async fn route(
        &mut self,
        fib: &re6st_dataplane::fib::Fib,
        ingress: Ingress,
        mut packet: BytesMut,
        now: Instant,
    ) {
        let base = packet.as_ptr() as usize;
        let (out, hop) =
            match self
                .forwarder
                .handle_packet(fib, ingress, &mut packet[..], &mut self.icmp, now)
            {
                Action::NextHop(id, b) => (place(base, b), Some(id)),
                Action::Tun(b) => (place(base, b), None),
                Action::Drop => return,
            };
        let bytes = match out {
            Out::InPlace(len) => {
                packet.truncate(len);
                packet.freeze()
            }
            Out::Copy(b) => b,
        };
        match hop {
            Some(id) => match match &mut self.tcp {
                Some(t) if t.engine.has_hop(id) => t.engine.send_datagram(id, bytes),
                _ => self.engine.send_datagram(id, bytes),
            } {
                Ok(()) => {}
                Err(NextHopError::Unknown) => self.no_next_hop += 1,
                Err(_) => self.send_failed += 1,
            },
            None => self.deliver(bytes).await,
        }
    }

    /// Local delivery, except peer exchange, which goes to the control
    /// loop.
    async fn deliver(&mut self, bytes: Bytes) {
        match wire::match_packet(&bytes, self.me) {
            Ok(None) => self.host.deliver(bytes, &mut self.host_stats).await,
            Ok(Some((from, payload))) => {
                let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
                let payload = bytes.slice(start..start + payload.len());
                if self
                    .events
                    .try_send(TunnelEvent::Exchange { from, payload })
                    .is_err()
                {
                    self.exchange_dropped += 1;
                }
            }
            Err(_) => self.exchange_malformed += 1,
        }
    }

    /// Hands the engine's events to the control loop while the channel has
    /// room.
    fn pass_events(&mut self) {
        let now = Instant::now();
        while self.engine.has_events() {
            let Ok(permit) = self.events.try_reserve() else {
                return;
            };
            let Some(ev) = self.engine.poll_event() else {
                break;
            };
            let ev = match &mut self.tcp {
                Some(t) => t.filter(ev, Kind::Quic, now),
                None => Some(ev),
            };
            if let Some(ev) = ev {
                permit.send(ev);
            }
        }
        let Some(t) = &mut self.tcp else { return };
        while let Some(permit) = t
            .has_events()
            .then(|| self.events.try_reserve().ok())
            .flatten()
            && let Some(ev) = t.poll_event()
        {
            permit.send(ev);
        }
        while t.engine.has_events() {
            let Ok(permit) = self.events.try_reserve() else {
                return;
            };
            let Some(ev) = t.engine.poll_event() else {
                return;
            };
            if let Some(ev) = t.filter(ev, Kind::Tcp, now) {
                permit.send(ev);
            }
        }
    }

    /// Sends what QUIC has; `true` if anything went out.
    fn transmit(&mut self, now: Instant) -> bool {
        let mut any = false;
        if let Some(b) = &self.blocked {
            match self.udp.try_send(
                b.destination,
                b.ecn,
                b.src_ip,
                b.segment_size,
                &self.tx_buf[..b.len],
            ) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                _ => {
                    self.blocked = None;
                    any = true;
                }
            }
        }
        let segments = self.udp.max_gso_segments();
        while let Some(t) = self.engine.poll_transmit(now, segments, &mut self.tx_buf) {
            any = true;
            let len = t.size.min(self.tx_buf.len());
            let result = self.udp.try_send(
                t.destination,
                t.ecn,
                t.src_ip,
                t.segment_size,
                &self.tx_buf[..len],
            );
            if let Err(e) = result
                && e.kind() == io::ErrorKind::WouldBlock
            {
                self.blocked = Some(Blocked {
                    destination: t.destination,
                    ecn: t.ecn,
                    src_ip: t.src_ip,
                    segment_size: t.segment_size,
                    len,
                });
                return true;
            }
        }
        any
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Where a forwarded packet's bytes are.
enum Out {
    /// The packet itself, trimmed to this length.
    InPlace(usize),
    /// An ICMPv6 error built in the scratch buffer.
    Copy(Bytes),
}

/// Whether the forwarder's output is the packet itself (a prefix of it) or
/// an ICMPv6 error in the scratch buffer.
fn place(base: usize, bytes: &[u8]) -> Out {
    if bytes.as_ptr() as usize == base {
        Out::InPlace(bytes.len())
    } else {
        Out::Copy(Bytes::copy_from_slice(bytes))
    }
}

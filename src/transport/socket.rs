//! The node's one UDP socket, and a switch that can cut it for tests.
//!
//! One socket serves every tunnel in both directions. An
//! IPv6 wildcard bind is dual-stack (`IPV6_V6ONLY` off), so `[::]:port`
//! reaches peers over IPv4 and IPv6 alike.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use socket2::{Domain, Protocol, Socket, Type};

/// Creates the UDP socket for `addr`: dual-stack when it is the IPv6
/// wildcard, non-blocking, with larger buffers (quinn batches with GSO/GRO,
/// bursts of datagrams must not overflow the kernel queue).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Best effort: the kernel caps them at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Cuts a node off the network without telling anyone, as a crash or a
/// pulled cable would: every datagram sent or received is dropped. Or
/// makes its paths lossy: each transmit it sends (a datagram, or a GSO
/// batch of them) is dropped at random. Also counts
/// dropped datagrams, to show in tests that a node really went silent.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    blackhole: AtomicBool,
    /// Random loss of sent transmits, per million.
    loss_ppm: AtomicU32,
    dropped: AtomicU64,
}

impl FaultSwitch {
    /// A switch in the "connected" position.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Drop everything from now on (or stop dropping).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }

    /// Whether the node is cut off.
    pub fn is_blackhole(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }

    /// Drops each transmit sent with probability `loss` (0 to 1; 0 turns
    /// it off).
    pub fn set_loss(&self, loss: f64) {
        let ppm = (loss.clamp(0.0, 1.0) * 1e6) as u32;
        self.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Whether to drop the next transmit: cut off, or lost at random.
    pub(crate) fn drops_send(&self) -> bool {
        if self.is_blackhole() {
            return true;
        }
        let ppm = self.loss_ppm.load(Ordering::Relaxed);
        ppm > 0 && rand::random_range(0..1_000_000u32) < ppm
    }

    /// Counts `n` datagrams dropped.
    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A quinn socket behind a [`FaultSwitch`]. When the switch is off it only
/// adds one relaxed atomic load per batch; GSO and GRO are kept.
#[derive(Debug)]
pub struct SwitchedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    switch: Arc<FaultSwitch>,
}

impl SwitchedSocket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, switch: Arc<FaultSwitch>) -> Self {
        Self { inner, switch }
    }
}

impl AsyncUdpSocket for SwitchedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.switch.drops_send() {
            self.switch.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) if self.switch.is_blackhole() => {
                    self.switch.dropped.fetch_add(n as u64, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_v6_is_dual_stack() {
        let s = match bind("[::]:0".parse().unwrap()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: no IPv6 here ({e})");
                return;
            }
        };
        let port = s.local_addr().unwrap().port();
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(b"hi", ("127.0.0.1", port)).unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        // An IPv4 peer shows up as an IPv4-mapped address.
        assert!(from.is_ipv6());
    }
}

//! The packet loop's UDP socket: quinn-udp's batched I/O (recvmmsg with
//! GRO, sendmsg with GSO, ECN, the local address a datagram reached) on a
//! socket registered with the loop's own runtime, so that its readiness
//! wakes that thread and no other.
//!
//! A receive reads one batch into a fixed buffer (a slot per `recvmmsg`
//! entry, each large enough for a GRO train), then copies each datagram
//! (a GRO train is split at its `stride`) into an [`Arena`] as its own
//! `BytesMut` (quinn-proto decrypts in place). Nothing is allocated per
//! datagram.
//!
//! The socket is registered for reading only. A socket registered for
//! writing too is reported writable each time the kernel frees a sent
//! datagram's buffer: one more return from `epoll_wait` per send, or a
//! wake-up of its own where the NIC completes transmissions later. A send
//! that finds the buffer full registers a duplicate of the descriptor for
//! writing, kept until a send goes through again.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use quinn_proto::EcnCodepoint;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::socket::FaultSwitch;

/// Receive buffers per `recvmmsg` call, at most.
const RECV_BATCH: usize = if quinn_udp::BATCH_SIZE < 32 {
    quinn_udp::BATCH_SIZE
} else {
    32
};

/// Room for one received buffer: a whole GRO train (the kernel coalesces
/// at most 64 KiB).
const SLOT: usize = 64 * 1024;

/// Bytes of one receive block: room for thousands of datagrams between
/// renewals.
const BLOCK: usize = 4 << 20;

/// One received datagram.
#[derive(Debug)]
pub struct Received {
    /// Who sent it.
    pub remote: SocketAddr,
    /// Our address it reached, when the socket tells it.
    pub local_ip: Option<IpAddr>,
    /// Its ECN bits.
    pub ecn: Option<EcnCodepoint>,
    /// The datagram.
    pub data: BytesMut,
}

/// Socket counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpStats {
    /// `recvmmsg` calls that returned datagrams.
    pub recv_calls: u64,
    /// Datagrams received (GRO trains counted per datagram).
    pub rx_datagrams: u64,
    /// `sendmsg` calls (a GSO batch is one).
    pub send_calls: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Sends that failed, `EMSGSIZE` included (the datagrams are lost;
    /// QUIC retransmits what needs it).
    pub send_errors: u64,
    /// Receive blocks allocated (a reclaimed one is not counted).
    pub blocks: u64,
    /// Received buffers that held more than one datagram (GRO trains).
    pub gro_trains: u64,
    /// Sends of more than one datagram (GSO batches).
    pub gso_sends: u64,
    /// Sends that found the socket's buffer full (retried once writable).
    pub send_blocked: u64,
}

/// The loop's UDP socket.
#[derive(Debug)]
pub struct UdpIo {
    /// The socket, registered for reading.
    socket: AsyncFd<std::net::UdpSocket>,
    /// The socket again (a duplicate descriptor), registered for writing
    /// while a send is blocked.
    blocked: Option<AsyncFd<std::net::UdpSocket>>,
    state: UdpSocketState,
    local: SocketAddr,
    switch: Option<Arc<FaultSwitch>>,
    buf: Box<[u8]>,
    arena: Arena,
    meta: [RecvMeta; RECV_BATCH],
    stats: UdpStats,
}

impl UdpIo {
    /// Takes over `socket` (non-blocking, bound); must run inside the
    /// runtime that will poll it. With `switch`, tests can cut it off.
    pub fn new(socket: std::net::UdpSocket, switch: Option<Arc<FaultSwitch>>) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let local = socket.local_addr()?;
        let socket = register(socket, Interest::READABLE)?;
        Ok(Self {
            socket,
            blocked: None,
            state,
            local,
            switch,
            buf: vec![0; RECV_BATCH * SLOT].into_boxed_slice(),
            arena: Arena::default(),
            meta: [RecvMeta::default(); RECV_BATCH],
            stats: UdpStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams one GSO send may carry.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Counters.
    pub fn stats(&self) -> UdpStats {
        UdpStats {
            blocks: self.arena.blocks(),
            ..self.stats
        }
    }

    /// Waits until the socket may have datagrams (a false alarm is
    /// possible: [`UdpIo::try_recv`] then reads nothing).
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await?.retain_ready();
        Ok(())
    }

    /// Waits until the socket may take a send again (at once if no send
    /// is blocked).
    pub async fn writable(&self) -> io::Result<()> {
        if let Some(w) = &self.blocked {
            // The next send tells whether the buffer really has room; if
            // not, it waits for the next edge.
            w.writable().await?.clear_ready();
        }
        Ok(())
    }

    /// Reads one batch without waiting and gives each datagram to `each`.
    /// Returns how many were read (0: nothing was there).
    pub fn try_recv(&mut self, mut each: impl FnMut(Received)) -> io::Result<usize> {
        let n = {
            let (state, meta) = (&self.state, &mut self.meta);
            let mut slots = self.buf.chunks_mut(SLOT);
            let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
            match self.socket.try_io(Interest::READABLE, |sock| {
                state.recv(sock.into(), &mut bufs, meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        self.stats.recv_calls += 1;
        let cut = self.switch.as_ref().is_some_and(|s| s.is_blackhole());
        let mut count = 0;
        for (i, meta) in self.meta[..n].iter().enumerate() {
            let slot = &self.buf[i * SLOT..][..meta.len.min(SLOT)];
            if meta.len > meta.stride {
                self.stats.gro_trains += 1;
            }
            for data in slot.chunks(meta.stride.max(1)) {
                count += 1;
                if cut {
                    continue;
                }
                each(Received {
                    remote: meta.addr,
                    local_ip: meta.dst_ip,
                    ecn: meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8)),
                    data: self.arena.copy(data),
                });
            }
        }
        if cut && let Some(s) = &self.switch {
            s.count_dropped(count as u64);
        }
        self.stats.rx_datagrams += count as u64;
        Ok(count)
    }

    /// Sends `contents` (one datagram, or a GSO batch of `segment_size`
    /// ones) to `destination`. `Err(WouldBlock)`: the socket is full, try
    /// again once [`UdpIo::writable`]; other errors are counted and the
    /// datagrams dropped (QUIC retransmits).
    pub fn try_send(
        &mut self,
        destination: SocketAddr,
        ecn: Option<EcnCodepoint>,
        src_ip: Option<IpAddr>,
        segment_size: Option<usize>,
        contents: &[u8],
    ) -> io::Result<()> {
        let datagrams = segment_size.map_or(1, |s| contents.len().div_ceil(s.max(1)));
        if let Some(s) = &self.switch
            && s.drops_send()
        {
            s.count_dropped(datagrams as u64);
            return Ok(());
        }
        let transmit = Transmit {
            destination,
            ecn: ecn.and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size,
            src_ip,
        };
        // `try_send`, not `send`: quinn-udp's `send` reports some failures
        // (EMSGSIZE among them) as success, and their datagrams would be
        // lost without a trace.
        match self.state.try_send(self.socket.get_ref().into(), &transmit) {
            Ok(()) => {
                // Deregisters the duplicate: writability is not news any
                // more.
                self.blocked = None;
                self.stats.send_calls += 1;
                self.stats.tx_datagrams += datagrams as u64;
                if datagrams > 1 {
                    self.stats.gso_sends += 1;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.send_blocked += 1;
                if self.blocked.is_none() {
                    // Registering reports the socket writable at once if
                    // room came back since the send: no edge is missed.
                    match self.register_writable() {
                        Ok(w) => self.blocked = Some(w),
                        Err(error) => {
                            // Nothing would wake a wait: drop the datagrams
                            // instead (QUIC retransmits).
                            self.stats.send_errors += 1;
                            tracing::debug!(%error, "cannot wait for UDP writability");
                            return Ok(());
                        }
                    }
                }
                Err(e)
            }
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(%destination, error = %e, "UDP send failed");
                Ok(())
            }
        }
    }

    /// A duplicate of the socket registered for writing only.
    fn register_writable(&self) -> io::Result<AsyncFd<std::net::UdpSocket>> {
        register(self.socket.get_ref().try_clone()?, Interest::WRITABLE)
    }
}

/// Registers `socket` with the runtime for `interest` only.
fn register(
    socket: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the `AsyncFd` owns the socket, whose descriptor stays open
    // and the same until the `AsyncFd` drops it.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// Writable copies of packets without an allocation per packet: each
/// copy goes to the end of one large block and is split off as its own
/// `BytesMut`. The block's allocation is reclaimed once no copy of it is
/// alive any more, or a new block is taken.
#[derive(Debug, Default)]
pub struct Arena {
    block: BytesMut,
    /// Where the block's allocation starts.
    base: usize,
    blocks: u64,
}

impl Arena {
    /// `data`, copied.
    pub fn copy(&mut self, data: &[u8]) -> BytesMut {
        if self.block.capacity() - self.block.len() < data.len() {
            self.block.reserve(BLOCK.max(data.len()));
            if self.block.as_ptr() as usize != self.base {
                self.base = self.block.as_ptr() as usize;
                self.blocks += 1;
            }
        }
        self.block.extend_from_slice(data);
        self.block.split()
    }

    /// Blocks allocated so far (a reclaimed one is not counted).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> UdpIo {
        let s = super::super::socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        UdpIo::new(s, None).unwrap()
    }

    /// Sends as the packet loop does: again once writable.
    async fn send(u: &mut UdpIo, to: SocketAddr, segment: Option<usize>, contents: &[u8]) {
        loop {
            match u.try_send(to, None, None, segment, contents) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.writable().await.unwrap(),
                other => return other.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn datagrams_arrive_whole_and_blocks_are_reused() {
        let mut a = io();
        let mut b = io();
        let to = b.local_addr();
        for round in 0..1_000u32 {
            for k in 0..5u8 {
                let payload = vec![k; 1_000 + usize::from(k) * 100];
                send(&mut a, to, None, &payload).await;
            }
            let mut got = Vec::new();
            while got.len() < 5 {
                b.readable().await.unwrap();
                b.try_recv(|r| got.push(r)).unwrap();
            }
            for (k, r) in got.iter().enumerate() {
                assert_eq!(r.remote, a.local_addr(), "round {round}");
                assert_eq!(r.data.len(), 1_000 + k * 100);
                assert!(r.data.iter().all(|x| usize::from(*x) == k));
            }
        }
        // 6 MB of datagrams, dropped after each round: the first block
        // comes back each time it is full.
        assert_eq!(b.stats().blocks, 1, "{:?}", b.stats());
        assert_eq!(b.stats().rx_datagrams, 5_000);
    }

    #[tokio::test]
    async fn a_gso_batch_arrives_as_its_datagrams() {
        let mut a = io();
        let mut b = io();
        if a.max_gso_segments() < 2 {
            eprintln!("SKIPPED: no UDP GSO here");
            return;
        }
        let mut batch = Vec::new();
        for k in 0..4u8 {
            batch.extend(std::iter::repeat_n(k, 1200));
        }
        batch.extend(std::iter::repeat_n(9u8, 500));
        send(&mut a, b.local_addr(), Some(1200), &batch).await;
        let mut got = Vec::new();
        while got.len() < 5 {
            b.readable().await.unwrap();
            b.try_recv(|r| got.push(r.data)).unwrap();
        }
        let lens: Vec<usize> = got.iter().map(|d| d.len()).collect();
        assert_eq!(lens, [1200, 1200, 1200, 1200, 500]);
        assert!(got[3].iter().all(|x| *x == 3));
        assert_eq!(a.stats().send_calls, 1);
        assert_eq!(a.stats().tx_datagrams, 5);
    }

    #[tokio::test]
    async fn a_cut_socket_drops_both_ways_and_counts() {
        let switch = FaultSwitch::new();
        let s = super::super::socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut a = UdpIo::new(s, Some(switch.clone())).unwrap();
        let mut b = io();
        switch.set_blackhole(true);
        send(&mut a, b.local_addr(), None, b"x").await;
        send(&mut b, a.local_addr(), None, b"y").await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(b.try_recv(|_| panic!("nothing was sent")).unwrap(), 0);
        let mut seen = 0;
        a.try_recv(|_| seen += 1).unwrap();
        assert_eq!(seen, 0, "received while cut off");
        assert_eq!(switch.dropped(), 2);
    }
}

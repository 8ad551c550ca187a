//! Caller-owned packet buffers for batched TUN I/O: allocated once, reused
//! for every batch, so the packet path allocates nothing in steady state.

use std::io;

use bytes::{Bytes, BytesMut};
use tun_rs::AsyncDevice;

use crate::packet::ipv6::Ipv6Packet;

/// Packets per batch: tun-rs's `IDEAL_BATCH_SIZE`, enough for the segments
/// of one 64 KiB GSO super-packet at MTU 1280.
pub const BATCH_SIZE: usize = 128;

/// Packets each receive buffer holds back to back before it needs a new
/// allocation: [`RecvBatch::take`] splits a packet off the front and the
/// next receive goes right after it, so the zero-copy path allocates once
/// per this many packets, not per packet. Offload batches have many
/// buffers, each mostly used for one packet per read; a single-packet
/// batch reuses its one buffer for every read.
const PACKETS_PER_BLOCK_OFFLOAD: usize = 4;
const PACKETS_PER_BLOCK_SINGLE: usize = 64;

/// Bytes reserved before each packet of a [`SendBatch`] for the virtio
/// header that offload needs.
#[cfg(target_os = "linux")]
const HEADROOM: usize = tun_rs::VIRTIO_NET_HDR_LEN;
#[cfg(not(target_os = "linux"))]
const HEADROOM: usize = 0;

/// Capacity of each [`SendBatch`] buffer: tun-rs's GRO needs
/// `2 * headroom + coalesced length` (up to 64 KiB) in the head buffer.
const GRO_CAPACITY: usize = 2 * HEADROOM + super::MAX_PACKET_LEN;

/// Buffers for [`crate::tun::Tun::recv_batch`].
#[derive(Debug)]
pub struct RecvBatch {
    /// The raw read (virtio header + super-packet) before splitting.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    original: Vec<u8>,
    bufs: Vec<BytesMut>,
    sizes: Vec<usize>,
    count: usize,
    buf_len: usize,
}

impl RecvBatch {
    /// Buffers for packets of up to `max_packet` bytes (the TUN MTU; at
    /// most 65535). With `offload`, room for a whole GSO super-packet.
    pub fn new(max_packet: usize, offload: bool) -> Self {
        let buf_len = max_packet.clamp(1280, super::MAX_PACKET_LEN);
        let (n, per_block) = if offload {
            (BATCH_SIZE, PACKETS_PER_BLOCK_OFFLOAD)
        } else {
            (1, PACKETS_PER_BLOCK_SINGLE)
        };
        let original = if offload {
            vec![0; HEADROOM + super::MAX_PACKET_LEN]
        } else {
            Vec::new()
        };
        RecvBatch {
            original,
            bufs: (0..n)
                .map(|_| {
                    let mut b = BytesMut::with_capacity(buf_len * per_block);
                    b.resize(buf_len, 0);
                    b
                })
                .collect(),
            sizes: vec![0; n],
            count: 0,
            buf_len,
        }
    }

    /// Packets read by the last receive.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Did the last receive read nothing?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Packet `i` of the last receive, mutable (the forwarder decrements
    /// Hop Limit in place). Empty after [`RecvBatch::take`].
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        match self.bufs.get_mut(i) {
            Some(b) if i < self.count => &mut b[..self.sizes[i]],
            _ => &mut [],
        }
    }

    /// Packet `i` as `Bytes` without a copy (for `send_datagram`),
    /// trimmed to its IPv6 length when it is a valid IPv6 packet (as the
    /// forwarder's actions are). The next receive goes right after it in
    /// the same buffer.
    pub fn take(&mut self, i: usize) -> Bytes {
        self.take_mut(i).freeze()
    }

    /// Packet `i` as a mutable buffer without a copy: the forwarder edits
    /// it in place and freezes it for `send_datagram` (converting
    /// [`RecvBatch::take`]'s `Bytes` back would copy, since the split-off
    /// packet shares its block with the rest of the buffer).
    pub fn take_mut(&mut self, i: usize) -> BytesMut {
        match self.bufs.get_mut(i) {
            Some(b) if i < self.count => {
                let size = std::mem::take(&mut self.sizes[i]);
                let mut bytes = b.split_to(size);
                if let Ok(p) = Ipv6Packet::new_checked(&bytes[..]) {
                    let len = p.total_len();
                    bytes.truncate(len);
                }
                bytes
            }
            _ => BytesMut::new(),
        }
    }

    fn refill(&mut self) {
        for b in &mut self.bufs {
            if b.len() < self.buf_len {
                b.resize(self.buf_len, 0);
            }
        }
        self.count = 0;
    }

    pub(super) async fn recv(&mut self, dev: &AsyncDevice, offload: bool) -> io::Result<usize> {
        self.refill();
        let _ = offload;
        #[cfg(target_os = "linux")]
        let n = dev
            .recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
            .await?;
        #[cfg(target_os = "macos")]
        let n = {
            self.sizes[0] = super::macos::recv(dev, &mut self.bufs[0]).await?;
            1
        };
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        let n = {
            self.sizes[0] = dev.recv(&mut self.bufs[0]).await?;
            1
        };
        self.count = n;
        Ok(n)
    }

    /// [`RecvBatch::recv`] without waiting: `Ok(0)` when nothing is there.
    pub(super) fn try_recv(&mut self, dev: &AsyncDevice) -> io::Result<usize> {
        self.refill();
        #[cfg(target_os = "linux")]
        let n = dev.try_recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0);
        #[cfg(target_os = "macos")]
        let n = super::macos::try_recv(dev, &mut self.bufs[0]).map(|len| {
            self.sizes[0] = len;
            1
        });
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        let n = dev.try_recv(&mut self.bufs[0]).map(|len| {
            self.sizes[0] = len;
            1
        });
        match n {
            Ok(n) => {
                self.count = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Packets queued for [`crate::tun::Tun::send_batch`], each copied once
/// into a reused buffer with room for the virtio header.
#[derive(Debug, Default)]
pub struct SendBatch {
    bufs: Vec<BytesMut>,
    len: usize,
    #[cfg(target_os = "linux")]
    gro: GroTable,
}

/// tun-rs's GRO state, which has no `Debug`.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct GroTable(tun_rs::GROTable);

#[cfg(target_os = "linux")]
impl std::fmt::Debug for GroTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroTable")
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a copy of `packet`.
    pub fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            // Room for a whole coalesced super-packet: tun-rs's GRO only
            // merges segments into a buffer whose capacity already holds
            // the result (it never reallocates), so a packet-sized buffer
            // would silently turn off coalescing. Only the pages written
            // are resident.
            self.bufs.push(BytesMut::with_capacity(GRO_CAPACITY));
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.resize(HEADROOM, 0);
        b.extend_from_slice(packet);
        self.len += 1;
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Has it reached [`BATCH_SIZE`] (time to flush)?
    pub fn is_full(&self) -> bool {
        self.len >= BATCH_SIZE
    }

    /// Queued packet `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        self.bufs.get(i).map_or(&[], |b| &b[HEADROOM..])
    }

    /// Forgets the queued packets (buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    #[cfg(target_os = "linux")]
    pub(super) async fn send_offload(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        dev.send_multiple(&mut self.gro.0, &mut self.bufs[..self.len], HEADROOM)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_packets_does_not_allocate_per_packet() {
        let mut r = RecvBatch::new(1400, false);
        let start = r.bufs[0].as_ptr() as usize;
        let mut taken = Vec::new();
        for i in 0..PACKETS_PER_BLOCK_SINGLE - 1 {
            r.refill();
            // The next read lands right after the previous packet.
            assert_eq!(r.bufs[0].as_ptr() as usize, start + i * 1000);
            r.bufs[0][..1000].fill(i as u8);
            r.sizes[0] = 1000;
            r.count = 1;
            taken.push(r.take(0));
        }
        // Every taken packet kept its bytes.
        for (i, t) in taken.iter().enumerate() {
            assert!(t.iter().all(|b| *b == i as u8));
        }
    }

    #[test]
    fn send_batch_reuses_buffers() {
        let mut b = SendBatch::new();
        b.push(&[0x60, 1, 2]);
        b.push(&[0x60, 3]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.packet(0), [0x60, 1, 2]);
        assert_eq!(b.packet(1), [0x60, 3]);
        assert_eq!(b.packet(2), [0u8; 0]);
        assert!(
            b.bufs.iter().all(|x| x.capacity() >= GRO_CAPACITY),
            "every buffer can become the head of a 64 KiB GRO super-packet"
        );
        let first = b.bufs[0].as_ptr();
        b.clear();
        assert!(b.is_empty());
        b.push(&[0x60, 9]);
        assert_eq!(b.packet(0), [0x60, 9]);
        assert_eq!(b.bufs[0].as_ptr(), first, "buffer reused");
    }

    #[test]
    fn recv_batch_take_and_refill() {
        let mut r = RecvBatch::new(1400, true);
        assert_eq!(r.bufs.len(), BATCH_SIZE);
        // Pretend a receive of two packets.
        r.bufs[0][..3].copy_from_slice(&[0x60, 1, 2]);
        r.bufs[1][..2].copy_from_slice(&[0x60, 7]);
        r.sizes[..2].copy_from_slice(&[3, 2]);
        r.count = 2;
        r.packet_mut(1)[1] = 8;
        let taken = r.take(0);
        // A valid IPv6 packet with trailing bytes is trimmed to its length.
        let mut ip = vec![0u8; 50];
        ip[0] = 0x60;
        ip[5] = 2; // payload length 2: 42 bytes
        r.bufs[2][..50].copy_from_slice(&ip);
        r.sizes[2] = 50;
        r.count = 3;
        assert_eq!(r.take(2).len(), 42);
        assert_eq!(&taken[..], [0x60, 1, 2]);
        assert_eq!(r.packet_mut(0), [0u8; 0], "taken packets are gone");
        assert_eq!(r.take(0), Bytes::new());
        assert_eq!(r.packet_mut(1), [0x60, 8]);
        assert_eq!(r.packet_mut(5), [0u8; 0], "beyond the count");
        r.refill();
        assert!(r.bufs.iter().all(|b| b.len() == 1400));
        assert!(r.is_empty());
        // The taken bytes are untouched by the refill.
        assert_eq!(&taken[..], [0x60, 1, 2]);
    }
}

//! Overlay fragmentation: our own framing for datagrams bigger than what a
//! tunnel carries now (a QUIC path whose `max_datagram_size()` is below the
//! packet, e.g. 1162 bytes before path MTU discovery), so that a 1280-byte
//! IPv6 packet always gets through (RFC 8200 section 5).
//!
//! Frame (first byte [`code::FRAGMENT`], see [`crate::frame`]):
//!
//! ```text
//!  0        1                               5               7               9
//! +--------+-------------------------------+---------------+---------------+----------
//! | 0x01   | ident (u32, per sender)       | offset (u16)  | total (u16)   | bytes ...
//! +--------+-------------------------------+---------------+---------------+----------
//! ```
//!
//! `offset` and `total` are in bytes of the original datagram (which is
//! itself an IPv6 or Babel datagram, never a fragment). The
//! [`Reassembler`] is sans-IO: [`Reassembler::handle_fragment`] with `now`,
//! [`Reassembler::poll_timeout`] and [`Reassembler::handle_timeout`]; it
//! bounds memory with a cap and drops partial datagrams after a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::frame::code;
use crate::nexthop::{NextHop, NextHopError, NextHopId};

/// Length of the fragment header.
pub const HEADER_LEN: usize = 9;

/// Smallest fragment payload a sender uses, which bounds a datagram to
/// `65535 / 512 = 128` fragments and the receiver's work per datagram.
pub const MIN_FRAGMENT_PAYLOAD: usize = 512;

/// Smallest tunnel datagram size that can carry fragments.
pub const MIN_DATAGRAM_SIZE: usize = HEADER_LEN + MIN_FRAGMENT_PAYLOAD;

/// Most disjoint pieces a partial datagram may have; more is an attack
/// (our senders produce at most 128 fragments).
const MAX_HOLES: usize = 128;

/// One fragment, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRepr<'a> {
    /// Identifies the datagram among the sender's.
    pub ident: u32,
    /// Offset of `bytes` in the datagram.
    pub offset: u16,
    /// Length of the whole datagram.
    pub total: u16,
    /// The piece of the datagram.
    pub bytes: &'a [u8],
}

/// Why a fragment was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// Shorter than the header.
    #[error("fragment truncated: {len} bytes, header is {HEADER_LEN}")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// The first byte is not [`code::FRAGMENT`].
    #[error("not a fragment frame (first byte {0:#04x})")]
    NotFragment(u8),
    /// A fragment with no bytes, or a datagram of length 0.
    #[error("empty fragment")]
    Empty,
    /// `offset + len` exceeds `total`.
    #[error("fragment {offset}+{len} beyond datagram length {total}")]
    OutOfBounds {
        /// Offset field.
        offset: u16,
        /// Bytes carried.
        len: usize,
        /// Total field.
        total: u16,
    },
    /// Another fragment of the same datagram announced another length.
    #[error("datagram length {got} differs from the {expected} announced before")]
    TotalMismatch {
        /// Length announced first.
        expected: u16,
        /// Length in this fragment.
        got: u16,
    },
    /// A datagram bigger than the memory cap or the configured maximum.
    #[error("datagram of {total} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Total field.
        total: u16,
        /// The limit.
        limit: usize,
    },
    /// The reassembled datagram would itself be a fragment.
    #[error("nested fragment")]
    Nested,
    /// The datagram arrived in too many disjoint pieces.
    #[error("too many pieces in one datagram")]
    TooManyPieces,
}

impl<'a> FragmentRepr<'a> {
    /// Parses a fragment frame (first byte included).
    pub fn parse(frame: &'a [u8]) -> Result<Self, FragmentError> {
        if frame.len() < HEADER_LEN {
            return Err(FragmentError::Truncated { len: frame.len() });
        }
        if frame[0] != code::FRAGMENT {
            return Err(FragmentError::NotFragment(frame[0]));
        }
        let ident = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        let offset = u16::from_be_bytes([frame[5], frame[6]]);
        let total = u16::from_be_bytes([frame[7], frame[8]]);
        let bytes = &frame[HEADER_LEN..];
        if bytes.is_empty() || total == 0 {
            return Err(FragmentError::Empty);
        }
        if usize::from(offset) + bytes.len() > usize::from(total) {
            return Err(FragmentError::OutOfBounds {
                offset,
                len: bytes.len(),
                total,
            });
        }
        if offset == 0 && bytes[0] == code::FRAGMENT {
            return Err(FragmentError::Nested);
        }
        Ok(FragmentRepr {
            ident,
            offset,
            total,
            bytes,
        })
    }

    /// Bytes [`FragmentRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.bytes.len()
    }

    /// Appends the frame to `out`.
    pub fn emit(&self, out: &mut impl BufMut) {
        out.put_u8(code::FRAGMENT);
        out.put_u32(self.ident);
        out.put_u16(self.offset);
        out.put_u16(self.total);
        out.put_slice(self.bytes);
    }
}

/// Splits `datagram` into fragment frames of at most `max_datagram_size`
/// bytes, of nearly equal sizes, and passes each to `sink` in order.
/// Returns the number of fragments.
pub fn split(
    datagram: &[u8],
    ident: u32,
    max_datagram_size: usize,
    mut sink: impl FnMut(Bytes) -> Result<(), NextHopError>,
) -> Result<usize, NextHopError> {
    if max_datagram_size < MIN_DATAGRAM_SIZE {
        return Err(NextHopError::DatagramSizeTooSmall {
            max: max_datagram_size,
            min: MIN_DATAGRAM_SIZE,
        });
    }
    let total = u16::try_from(datagram.len()).map_err(|_| NextHopError::TooLarge {
        len: datagram.len(),
        max: usize::from(u16::MAX),
    })?;
    if datagram.is_empty() {
        return Ok(0);
    }
    let room = max_datagram_size - HEADER_LEN;
    let count = datagram.len().div_ceil(room);
    let piece = datagram.len().div_ceil(count);
    let mut buf = BytesMut::with_capacity(count * HEADER_LEN + datagram.len());
    for (i, bytes) in datagram.chunks(piece).enumerate() {
        let repr = FragmentRepr {
            ident,
            // i * piece < datagram.len() <= u16::MAX.
            offset: (i * piece) as u16,
            total,
            bytes,
        };
        repr.emit(&mut buf);
        sink(buf.split().freeze())?;
    }
    Ok(count)
}

/// Hands datagrams to next hops, fragmenting those above the tunnel's
/// current datagram size. Shared by all packet tasks (an atomic ident
/// counter; the fast path touches nothing).
#[derive(Debug, Default)]
pub struct Fragmenter {
    next_ident: AtomicU32,
}

/// How a datagram left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// As one datagram.
    Whole,
    /// As this many fragments.
    Fragments(usize),
}

impl Fragmenter {
    /// A fragmenter whose idents start at `first` (a random start keeps
    /// idents of a restarted node apart from its old ones).
    pub fn new(first: u32) -> Self {
        Fragmenter {
            next_ident: AtomicU32::new(first),
        }
    }

    /// Sends `datagram` through `hop`, whole if it fits, else as fragments.
    pub fn send<H: NextHop + ?Sized>(
        &self,
        hop: &H,
        datagram: Bytes,
    ) -> Result<Sent, NextHopError> {
        let max = hop.max_datagram_size().ok_or(NextHopError::Unsupported)?;
        if datagram.len() <= max {
            hop.send_datagram(datagram)?;
            return Ok(Sent::Whole);
        }
        let ident = self.next_ident.fetch_add(1, Ordering::Relaxed);
        split(&datagram, ident, max, |frame| hop.send_datagram(frame)).map(Sent::Fragments)
    }
}

/// Reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// A partial datagram is dropped this long after its first fragment.
    pub timeout: Duration,
    /// Bytes of all partial datagrams together; the oldest are dropped to
    /// make room.
    pub memory_cap: usize,
}

impl Default for ReassemblyConfig {
    /// 3 s (fragments of one datagram leave back to back, so anything
    /// later is lost) and 4 MiB.
    fn default() -> Self {
        ReassemblyConfig {
            timeout: Duration::from_secs(3),
            memory_cap: 4 << 20,
        }
    }
}

/// Reassembly counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the field names say it
pub struct ReassemblyStats {
    pub fragments: u64,
    pub duplicates: u64,
    pub reassembled: u64,
    pub timed_out: u64,
    pub evicted: u64,
    pub rejected: u64,
}

#[derive(Debug)]
struct Partial {
    buf: Vec<u8>,
    /// Received byte ranges, sorted, disjoint and not adjacent.
    have: SmallVec<[(usize, usize); 4]>,
    deadline: Instant,
}

impl Partial {
    /// Records `[start, end)`; returns `false` if it was all there already.
    fn add(&mut self, start: usize, end: usize) -> Result<bool, FragmentError> {
        if self.have.iter().any(|&(s, e)| s <= start && end <= e) {
            return Ok(false);
        }
        let mut merged = (start, end);
        self.have.retain(|&mut (s, e)| {
            if e < merged.0 || s > merged.1 {
                true
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
                false
            }
        });
        let at = self.have.partition_point(|&(s, _)| s < merged.0);
        self.have.insert(at, merged);
        if self.have.len() > MAX_HOLES {
            return Err(FragmentError::TooManyPieces);
        }
        Ok(true)
    }

    fn complete(&self) -> bool {
        self.have.as_slice() == [(0, self.buf.len())]
    }
}

/// Reassembles fragments per (next hop, ident). Sans-IO.
#[derive(Debug, Default)]
pub struct Reassembler {
    config: ReassemblyConfig,
    partial: HashMap<(NextHopId, u32), Partial>,
    used: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler with these limits.
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            config,
            ..Default::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Bytes held by partial datagrams.
    pub fn memory_used(&self) -> usize {
        self.used
    }

    /// Number of partial datagrams.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Takes one fragment frame received from `from`. Returns the whole
    /// datagram when this fragment completes it (demux it again with
    /// [`crate::frame::demux`]). Bad fragments are errors (count and
    /// drop); their partial datagram, if any, is dropped too.
    pub fn handle_fragment(
        &mut self,
        from: NextHopId,
        frame: &[u8],
        now: Instant,
    ) -> Result<Option<Bytes>, FragmentError> {
        self.stats.fragments += 1;
        let result = self.insert(from, frame, now);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        result
    }

    fn insert(
        &mut self,
        from: NextHopId,
        frame: &[u8],
        now: Instant,
    ) -> Result<Option<Bytes>, FragmentError> {
        let f = FragmentRepr::parse(frame)?;
        let key = (from, f.ident);
        let total = usize::from(f.total);
        if self.partial.get(&key).is_some_and(|p| p.deadline <= now) {
            self.drop_partial(key);
            self.stats.timed_out += 1;
        }
        if !self.partial.contains_key(&key) {
            if total > self.config.memory_cap {
                return Err(FragmentError::TooLarge {
                    total: f.total,
                    limit: self.config.memory_cap,
                });
            }
            while self.used + total > self.config.memory_cap {
                if !self.evict_oldest() {
                    break;
                }
            }
            self.used += total;
            self.partial.insert(
                key,
                Partial {
                    buf: vec![0; total],
                    have: SmallVec::new(),
                    deadline: now + self.config.timeout,
                },
            );
        }
        let Some(p) = self.partial.get_mut(&key) else {
            return Ok(None); // just inserted; unreachable
        };
        if p.buf.len() != total {
            let expected = p.buf.len() as u16;
            self.drop_partial(key);
            return Err(FragmentError::TotalMismatch {
                expected,
                got: f.total,
            });
        }
        let (start, end) = (usize::from(f.offset), usize::from(f.offset) + f.bytes.len());
        match p.add(start, end) {
            Ok(true) => p.buf[start..end].copy_from_slice(f.bytes),
            Ok(false) => {
                self.stats.duplicates += 1;
                return Ok(None);
            }
            Err(e) => {
                self.drop_partial(key);
                return Err(e);
            }
        }
        if !p.complete() {
            return Ok(None);
        }
        let Some(p) = self.partial.remove(&key) else {
            return Ok(None);
        };
        self.used -= p.buf.len();
        self.stats.reassembled += 1;
        Ok(Some(Bytes::from(p.buf)))
    }

    fn drop_partial(&mut self, key: (NextHopId, u32)) {
        if let Some(p) = self.partial.remove(&key) {
            self.used -= p.buf.len();
        }
    }

    /// Drops the oldest partial datagram; `false` if there was none.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .partial
            .iter()
            .min_by_key(|(_, p)| p.deadline)
            .map(|(k, _)| *k);
        let Some(key) = oldest else {
            return false;
        };
        self.drop_partial(key);
        self.stats.evicted += 1;
        true
    }

    /// Drops every partial datagram of `from` (the tunnel went down).
    pub fn forget(&mut self, from: NextHopId) {
        let keys: Vec<_> = self
            .partial
            .keys()
            .filter(|k| k.0 == from)
            .copied()
            .collect();
        for key in keys {
            self.drop_partial(key);
        }
    }

    /// When [`Reassembler::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.deadline).min()
    }

    /// Drops the partial datagrams whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let keep = p.deadline > now;
            if !keep {
                freed += p.buf.len();
            }
            keep
        });
        self.used -= freed;
        self.stats.timed_out += (before - self.partial.len()) as u64;
    }
}

#[cfg(test)]
#[path = "fragment_tests.rs"]
mod tests;

//! Next hops: the tunnels behind FIB entries.
//!
//! The FIB maps prefixes to small integer [`NextHopId`]s (the node uses its
//! Babel interface ids). A separate, swappable [`NextHops`] table maps ids to
//! handles the node implements with QUIC connections, so that a tunnel
//! coming or going swaps one small table and never rebuilds the trie.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

/// Identifies a next hop. Small integers chosen by the node (the same as its
/// Babel interface ids), used as indexes into [`NextHops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopId(pub u32);

impl fmt::Display for NextHopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nh{}", self.0)
    }
}

/// Why a next hop did not take a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NextHopError {
    /// The tunnel is closed or closing.
    #[error("tunnel closed")]
    Closed,
    /// The datagram exceeds what the tunnel accepts now.
    #[error("datagram of {len} bytes exceeds the tunnel's {max}")]
    TooLarge {
        /// Datagram length.
        len: usize,
        /// Current maximum.
        max: usize,
    },
    /// The peer does not accept datagrams.
    #[error("peer does not accept datagrams")]
    Unsupported,
    /// The id names no next hop in the current table.
    #[error("no next hop with this id")]
    Unknown,
    /// The datagram is smaller than one fragment header can carry.
    #[error("tunnel datagram size {max} below the minimum of {min} bytes")]
    DatagramSizeTooSmall {
        /// Current maximum datagram size of the tunnel.
        max: usize,
        /// Minimum needed to fragment.
        min: usize,
    },
}

/// A tunnel as the dataplane sees it. The node implements it over a
/// `quinn::Connection` (`max_datagram_size`, `send_datagram`).
///
/// Both methods are called on the packet path: they must not block. A full
/// send queue is the tunnel's business (quinn drops the oldest datagram).
pub trait NextHop: Send + Sync {
    /// The largest datagram the tunnel accepts now, or `None` if it accepts
    /// none (datagrams unsupported or disabled). Packets above it are sent
    /// as fragments ([`crate::fragment`]).
    fn max_datagram_size(&self) -> Option<usize>;

    /// Queues one datagram (an IPv6 packet, a Babel packet or one of our
    /// control frames, see [`crate::frame`]).
    fn send_datagram(&self, datagram: Bytes) -> Result<(), NextHopError>;
}

impl<H: NextHop + ?Sized> NextHop for Arc<H> {
    fn max_datagram_size(&self) -> Option<usize> {
        (**self).max_datagram_size()
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), NextHopError> {
        (**self).send_datagram(datagram)
    }
}

/// An immutable id -> handle table; slot `i` holds next hop `NextHopId(i)`.
#[derive(Debug)]
pub struct NextHopTable<H> {
    slots: Vec<Option<H>>,
}

impl<H> Default for NextHopTable<H> {
    fn default() -> Self {
        NextHopTable { slots: Vec::new() }
    }
}

impl<H: Clone> NextHopTable<H> {
    /// The handle of `id`, if any.
    #[inline]
    pub fn get(&self, id: NextHopId) -> Option<&H> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Number of next hops present.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Is the table empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids present, ascending.
    pub fn ids(&self) -> impl Iterator<Item = NextHopId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| NextHopId(i as u32))
    }

    fn with(&self, id: NextHopId, handle: Option<H>) -> Self {
        let mut slots = self.slots.clone();
        let i = id.0 as usize;
        if i >= slots.len() {
            slots.resize_with(i + 1, || None);
        }
        slots[i] = handle;
        while matches!(slots.last(), Some(None)) {
            slots.pop();
        }
        NextHopTable { slots }
    }
}

/// The shared, swappable next-hop table. Readers ([`NextHops::load`]) never
/// lock or block; writers copy the small table and swap it in.
#[derive(Debug)]
pub struct NextHops<H> {
    table: ArcSwap<NextHopTable<H>>,
}

impl<H> Default for NextHops<H> {
    fn default() -> Self {
        NextHops {
            table: ArcSwap::from_pointee(NextHopTable::default()),
        }
    }
}

impl<H: Clone> NextHops<H> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current table; hold the guard for a batch of packets, not for
    /// long (it delays freeing a replaced table).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<NextHopTable<H>>> {
        self.table.load()
    }

    /// Adds or replaces the handle of `id`.
    ///
    /// Ids index a vector: keep them small (the node reuses freed ones).
    pub fn insert(&self, id: NextHopId, handle: H) {
        self.table.rcu(|table| table.with(id, Some(handle.clone())));
    }

    /// Removes `id` (the tunnel went down).
    pub fn remove(&self, id: NextHopId) {
        self.table.rcu(|table| table.with(id, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let hops = NextHops::<&'static str>::new();
        hops.insert(NextHopId(3), "c");
        hops.insert(NextHopId(0), "a");
        let table = hops.load();
        assert_eq!(table.get(NextHopId(3)), Some(&"c"));
        assert_eq!(table.get(NextHopId(0)), Some(&"a"));
        assert_eq!(table.get(NextHopId(1)), None);
        assert_eq!(table.get(NextHopId(99)), None);
        assert_eq!(
            table.ids().collect::<Vec<_>>(),
            [NextHopId(0), NextHopId(3)]
        );
        hops.remove(NextHopId(3));
        // The old snapshot is unchanged; the new one lost the entry.
        assert_eq!(table.get(NextHopId(3)), Some(&"c"));
        let table = hops.load();
        assert_eq!(table.get(NextHopId(3)), None);
        assert_eq!(table.len(), 1);
        hops.remove(NextHopId(0));
        assert!(hops.load().is_empty());
    }
}

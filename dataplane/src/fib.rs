//! The forwarding table: an immutable longest-prefix-match snapshot,
//! published with `arc_swap` so packet tasks never lock or block.
//!
//! The routing engine owns the RIB. Whenever its selected routes change
//! (coalesced over a few milliseconds), the node builds a new [`Fib`] from
//! `prefix -> Route` pairs and [`SharedFib::publish`]es it. Readers
//! [`SharedFib::load`] once per batch of packets and call [`Fib::lookup`]
//! per packet. The trie is an `iptrie` level-compressed trie
//! (the fastest IPv6 longest-prefix match we measured, `benches/fib.rs`).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::Ipv6Net;
use iptrie::Ipv6Prefix;
use iptrie::map::{LCTrieMap, RTrieMap};

use crate::nexthop::NextHopId;

/// Where a prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// One of our own prefixes: deliver to the local TUN.
    Local,
    /// Forward through this next hop.
    Via(NextHopId),
    /// Known unreachable (a reject route, e.g. the whole overlay prefix):
    /// answer with ICMPv6 Destination Unreachable "reject route" instead of
    /// following a shorter, default route out of the overlay.
    Unreachable,
}

/// An immutable FIB snapshot: longest-prefix match over IPv6 prefixes.
pub struct Fib {
    trie: LCTrieMap<Ipv6Prefix, Option<Route>>,
    len: usize,
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib").field("len", &self.len).finish()
    }
}

impl Default for Fib {
    fn default() -> Self {
        Fib::from_routes(std::iter::empty())
    }
}

impl Fib {
    /// An empty FIB: every lookup misses.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a snapshot. Host bits of each prefix are ignored; when a
    /// prefix repeats, the last route wins.
    pub fn from_routes(routes: impl IntoIterator<Item = (Ipv6Net, Route)>) -> Self {
        let mut trie = RTrieMap::with_root(None);
        let mut len = 0;
        for (net, route) in routes {
            // The root slot (`::/0`) starts as `Some(None)`: count a prefix
            // only when it had no route yet.
            let previous = trie.insert(Ipv6Prefix::from(net.trunc()), Some(route));
            if !matches!(previous, Some(Some(_))) {
                len += 1;
            }
        }
        Fib {
            trie: trie.compress(),
            len,
        }
    }

    /// The route of the longest prefix covering `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<Route> {
        *self.trie.lookup(&addr).1
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the FIB empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All `(prefix, route)` entries (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Net, Route)> + '_ {
        self.trie.iter().filter_map(|(prefix, route)| {
            let net = Ipv6Net::from(*prefix);
            Some((net, (*route)?))
        })
    }
}

/// A mutable set of routes from which snapshots are built: apply a batch of
/// changes, then [`FibBuilder::build`].
#[derive(Debug, Clone, Default)]
pub struct FibBuilder {
    routes: BTreeMap<Ipv6Net, Route>,
}

impl FibBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the route of `prefix` (host bits ignored).
    pub fn insert(&mut self, prefix: Ipv6Net, route: Route) -> Option<Route> {
        self.routes.insert(prefix.trunc(), route)
    }

    /// Withdraws `prefix`.
    pub fn remove(&mut self, prefix: Ipv6Net) -> Option<Route> {
        self.routes.remove(&prefix.trunc())
    }

    /// Withdraws every route through `next_hop` (the tunnel went down).
    pub fn remove_next_hop(&mut self, next_hop: NextHopId) {
        self.routes.retain(|_, r| *r != Route::Via(next_hop));
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// A snapshot of the current routes.
    pub fn build(&self) -> Fib {
        Fib::from_routes(self.routes.iter().map(|(n, r)| (*n, *r)))
    }
}

/// The published FIB: one writer swaps whole snapshots in, any number of
/// readers load them without locks. A reader holding a snapshot keeps it
/// alive; it never sees a half-updated table.
#[derive(Debug, Default)]
pub struct SharedFib {
    current: ArcSwap<Fib>,
}

impl SharedFib {
    /// Starts with `fib`.
    pub fn new(fib: Fib) -> Self {
        SharedFib {
            current: ArcSwap::from_pointee(fib),
        }
    }

    /// The current snapshot. Cheap (about 15 ns): load once per batch of
    /// packets and drop the guard before awaiting.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Fib>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc` (for long-lived holders).
    pub fn load_full(&self) -> Arc<Fib> {
        self.current.load_full()
    }

    /// Replaces the snapshot; packets looked up after this see `fib`.
    pub fn publish(&self, fib: Fib) {
        self.current.store(Arc::new(fib));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let fib = Fib::from_routes([
            (net("::/0"), Route::Via(NextHopId(9))),
            (net("fd00::/16"), Route::Unreachable),
            (net("fd00:1::/48"), Route::Via(NextHopId(1))),
            (net("fd00:1:0:2::/64"), Route::Local),
            (net("fd00:1:0:2::7/128"), Route::Via(NextHopId(7))),
        ]);
        assert_eq!(fib.len(), 5);
        assert_eq!(
            fib.lookup(addr("2001:db8::1")),
            Some(Route::Via(NextHopId(9)))
        );
        assert_eq!(fib.lookup(addr("fd00:2::1")), Some(Route::Unreachable));
        assert_eq!(
            fib.lookup(addr("fd00:1:0:3::1")),
            Some(Route::Via(NextHopId(1)))
        );
        assert_eq!(fib.lookup(addr("fd00:1:0:2::1")), Some(Route::Local));
        assert_eq!(
            fib.lookup(addr("fd00:1:0:2::7")),
            Some(Route::Via(NextHopId(7)))
        );
    }

    #[test]
    fn empty_misses() {
        let fib = Fib::empty();
        assert!(fib.is_empty());
        assert_eq!(fib.lookup(addr("fd00::1")), None);
        let fib = Fib::from_routes([(net("fd00::/8"), Route::Local)]);
        assert_eq!(fib.lookup(addr("fe80::1")), None);
    }

    #[test]
    fn host_bits_ignored_and_last_wins() {
        let fib = Fib::from_routes([
            (net("fd00:1::5/48"), Route::Local),
            (net("fd00:1::/48"), Route::Via(NextHopId(2))),
        ]);
        assert_eq!(fib.len(), 1);
        assert_eq!(
            fib.lookup(addr("fd00:1::1")),
            Some(Route::Via(NextHopId(2)))
        );
        assert_eq!(
            fib.iter().collect::<Vec<_>>(),
            [(net("fd00:1::/48"), Route::Via(NextHopId(2)))]
        );
    }

    #[test]
    fn builder_batches_and_link_down() {
        let mut b = FibBuilder::new();
        b.insert(net("fd00:1::/48"), Route::Via(NextHopId(1)));
        b.insert(net("fd00:2::/48"), Route::Via(NextHopId(2)));
        b.insert(net("fd00:3::/48"), Route::Via(NextHopId(1)));
        let shared = SharedFib::new(b.build());
        let before = shared.load_full();
        b.remove_next_hop(NextHopId(1));
        shared.publish(b.build());
        assert_eq!(before.len(), 3);
        let after = shared.load();
        assert_eq!(after.len(), 1);
        assert_eq!(after.lookup(addr("fd00:1::1")), None);
        assert_eq!(
            after.lookup(addr("fd00:2::1")),
            Some(Route::Via(NextHopId(2)))
        );
    }
}

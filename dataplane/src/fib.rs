//! The forwarding table: an immutable longest-prefix-match snapshot,
//! published with `arc_swap` so packet tasks never lock or block.
//!
//! The routing engine owns the RIB. Whenever its selected routes change
//! (coalesced over a few milliseconds), the node builds a new [`Fib`] from
//! `prefix -> Route` pairs and [`SharedFib::publish`]es it. Readers
//! [`SharedFib::load`] once per batch of packets and call [`Fib::lookup`]
//! (IPv6) or [`Fib::lookup_v4`] (IPv4) per packet. Each family is an
//! `iptrie` level-compressed trie (the fastest longest-prefix match we
//! measured, `benches/fib.rs`); one snapshot holds both, so a route
//! change of either family is one swap.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use iptrie::map::{LCTrieMap, RTrieMap};
use iptrie::{IpRootPrefix, Ipv4Prefix, Ipv6Prefix};

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

/// An immutable FIB snapshot: longest-prefix match over IPv6 and IPv4
/// prefixes.
pub struct Fib {
    v6: LCTrieMap<Ipv6Prefix, Option<Route>>,
    v4: LCTrieMap<Ipv4Prefix, Option<Route>>,
    len: usize,
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib").field("len", &self.len).finish()
    }
}

impl Default for Fib {
    fn default() -> Self {
        Fib::from_routes(std::iter::empty::<(IpNet, Route)>())
    }
}

impl Fib {
    /// An empty FIB: every lookup misses.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a snapshot from IPv6 and IPv4 prefixes. Host bits of each
    /// prefix are ignored; when a prefix repeats, the last route wins.
    pub fn from_routes<N: Into<IpNet>>(routes: impl IntoIterator<Item = (N, Route)>) -> Self {
        let mut v6 = Trie::<Ipv6Prefix>::default();
        let mut v4 = Trie::<Ipv4Prefix>::default();
        for (net, route) in routes {
            match net.into() {
                IpNet::V6(net) => v6.insert(Ipv6Prefix::from(net.trunc()), route),
                IpNet::V4(net) => v4.insert(Ipv4Prefix::from(net.trunc()), route),
            }
        }
        Fib {
            len: v6.len + v4.len,
            v6: v6.trie.compress(),
            v4: v4.trie.compress(),
        }
    }

    /// The route of the longest IPv6 prefix covering `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<Route> {
        *self.v6.lookup(&addr).1
    }

    /// The route of the longest IPv4 prefix covering `addr`, if any.
    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<Route> {
        *self.v4.lookup(&addr).1
    }

    /// Number of prefixes, both families.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the FIB empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All IPv6 `(prefix, route)` entries (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Net, Route)> + '_ {
        self.v6
            .iter()
            .filter_map(|(prefix, route)| Some((Ipv6Net::from(*prefix), (*route)?)))
    }

    /// All IPv4 `(prefix, route)` entries (order unspecified).
    pub fn iter_v4(&self) -> impl Iterator<Item = (Ipv4Net, Route)> + '_ {
        self.v4
            .iter()
            .filter_map(|(prefix, route)| Some((Ipv4Net::from(*prefix), (*route)?)))
    }
}

/// One family's trie while a snapshot is built, with its prefix count.
struct Trie<P: IpRootPrefix> {
    trie: RTrieMap<P, Option<Route>>,
    len: usize,
}

impl<P: IpRootPrefix> Default for Trie<P> {
    fn default() -> Self {
        Trie {
            trie: RTrieMap::with_root(None),
            len: 0,
        }
    }
}

impl<P: IpRootPrefix> Trie<P> {
    fn insert(&mut self, prefix: P, route: Route) {
        // The root slot (`/0`) starts as `Some(None)`: count a prefix only
        // when it had no route yet.
        if !matches!(self.trie.insert(prefix, Some(route)), Some(Some(_))) {
            self.len += 1;
        }
    }
}

/// A mutable set of routes from which snapshots are built: apply a batch of
/// changes, then [`FibBuilder::build`].
#[derive(Debug, Clone, Default)]
pub struct FibBuilder {
    routes: BTreeMap<IpNet, Route>,
}

impl FibBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the route of `prefix` (host bits ignored).
    pub fn insert(&mut self, prefix: impl Into<IpNet>, route: Route) -> Option<Route> {
        self.routes.insert(prefix.into().trunc(), route)
    }

    /// Withdraws `prefix`.
    pub fn remove(&mut self, prefix: impl Into<IpNet>) -> Option<Route> {
        self.routes.remove(&prefix.into().trunc())
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

    #[test]
    fn ipv4_and_ipv6_in_one_snapshot() {
        let v4 = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let fib = Fib::from_routes([
            (IpNet::V6(net("fd00::/16")), Route::Unreachable),
            (IpNet::V4(v4("0.0.0.0/0")), Route::Via(NextHopId(9))),
            (IpNet::V4(v4("10.0.0.0/8")), Route::Unreachable),
            (IpNet::V4(v4("10.1.0.0/24")), Route::Local),
            (IpNet::V4(v4("10.1.0.7/32")), Route::Via(NextHopId(7))),
            (IpNet::V4(v4("10.2.0.9/16")), Route::Via(NextHopId(2))),
        ]);
        assert_eq!(fib.len(), 6);
        let lookup = |a: &str| fib.lookup_v4(a.parse().unwrap());
        assert_eq!(lookup("192.0.2.1"), Some(Route::Via(NextHopId(9))));
        assert_eq!(lookup("10.9.0.1"), Some(Route::Unreachable));
        assert_eq!(lookup("10.1.0.1"), Some(Route::Local));
        assert_eq!(lookup("10.1.0.7"), Some(Route::Via(NextHopId(7))));
        assert_eq!(lookup("10.2.255.1"), Some(Route::Via(NextHopId(2))));
        // The families do not leak into each other: ::ffff:10.1.0.1 and
        // ::a01:1 are IPv6 addresses, 0.0.0.0/0 is not ::/0.
        assert_eq!(fib.lookup(addr("::ffff:10.1.0.1")), None);
        assert_eq!(fib.lookup(addr("::a01:1")), None);
        assert_eq!(fib.lookup(addr("fd00::1")), Some(Route::Unreachable));
        let mut v4s: Vec<_> = fib.iter_v4().collect();
        v4s.sort_by_key(|(n, _)| *n);
        assert_eq!(v4s[0], (v4("0.0.0.0/0"), Route::Via(NextHopId(9))));
        assert_eq!(v4s[4], (v4("10.2.0.0/16"), Route::Via(NextHopId(2))));
        assert_eq!(fib.iter().count(), 1);
    }

    #[test]
    fn builder_takes_both_families() {
        let mut b = FibBuilder::new();
        b.insert(net("fd00:1::/48"), Route::Via(NextHopId(1)));
        b.insert(
            "10.1.0.0/24".parse::<Ipv4Net>().unwrap(),
            Route::Via(NextHopId(1)),
        );
        b.insert(
            "10.2.0.0/24".parse::<Ipv4Net>().unwrap(),
            Route::Via(NextHopId(2)),
        );
        b.remove_next_hop(NextHopId(1));
        let fib = b.build();
        assert_eq!(fib.len(), 1);
        assert_eq!(fib.lookup_v4("10.1.0.1".parse().unwrap()), None);
        assert_eq!(
            fib.lookup_v4("10.2.0.1".parse().unwrap()),
            Some(Route::Via(NextHopId(2)))
        );
    }
}

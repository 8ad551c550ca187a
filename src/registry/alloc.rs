//! Buddy allocation of node prefixes inside the network prefix.
//!
//! The free space is kept as one ordered set of free blocks per prefix
//! length. Allocating a /L takes the lowest free block of the longest length
//! ≤ L and splits it down to /L, leaving each unused half free; freeing a
//! block merges it with its free buddy as far up as possible. So mixed node
//! sizes pack tightly and a /48 of /64s costs nothing until used.
//!
//! The registry's store is the source of truth: at start it rebuilds the
//! allocator by [`BuddyAllocator::reserve`]-ing every prefix in use.

use std::collections::BTreeSet;

use ipnet::Ipv6Net;

/// Why an allocation operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// No free block is large enough.
    #[error("no free /{len} left in {network}")]
    Exhausted {
        /// The network.
        network: Ipv6Net,
        /// The length asked for.
        len: u8,
    },
    /// The prefix length is not inside the network.
    #[error("cannot allocate a /{len} in {network}")]
    BadLength {
        /// The network.
        network: Ipv6Net,
        /// The length asked for.
        len: u8,
    },
    /// The prefix is not inside the network (or has host bits set).
    #[error("{0} is not a prefix inside the network")]
    Outside(Ipv6Net),
    /// Reserving a prefix that is (partly) in use already.
    #[error("{0} overlaps a prefix in use")]
    InUse(Ipv6Net),
    /// Freeing a prefix that is (partly) free already.
    #[error("{0} is already free")]
    AlreadyFree(Ipv6Net),
}

/// The allocator.
#[derive(Debug, Clone)]
pub struct BuddyAllocator {
    network: Ipv6Net,
    /// `free[l]` holds the network addresses of the free /l blocks.
    free: Vec<BTreeSet<u128>>,
}

fn bit(len: u8) -> u128 {
    // The size of a /len block; len is in 1..=128 wherever this is used.
    1u128 << (128 - u32::from(len))
}

fn mask(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (!0u128 << (128 - u32::from(len)))
    }
}

fn net(addr: u128, len: u8) -> Ipv6Net {
    // len <= 128 always holds here.
    Ipv6Net::new(addr.into(), len).unwrap_or_default()
}

impl BuddyAllocator {
    /// All of `network` free.
    pub fn new(network: Ipv6Net) -> Self {
        let network = network.trunc();
        let mut free = vec![BTreeSet::new(); 129];
        free[usize::from(network.prefix_len())].insert(u128::from(network.network()));
        Self { network, free }
    }

    /// The network.
    pub fn network(&self) -> Ipv6Net {
        self.network
    }

    fn check_len(&self, len: u8) -> Result<(), AllocError> {
        if len <= self.network.prefix_len() || len > 128 {
            return Err(AllocError::BadLength {
                network: self.network,
                len,
            });
        }
        Ok(())
    }

    fn check_inside(&self, p: Ipv6Net) -> Result<(), AllocError> {
        if p != p.trunc() || !self.network.contains(&p) {
            return Err(AllocError::Outside(p));
        }
        self.check_len(p.prefix_len())
            .map_err(|_| AllocError::Outside(p))
    }

    /// Allocates the lowest free /`len`.
    pub fn allocate(&mut self, len: u8) -> Result<Ipv6Net, AllocError> {
        self.check_len(len)?;
        let from = (self.network.prefix_len()..=len)
            .rev()
            .find(|l| !self.free[usize::from(*l)].is_empty())
            .ok_or(AllocError::Exhausted {
                network: self.network,
                len,
            })?;
        let addr = self.free[usize::from(from)]
            .pop_first()
            .ok_or(AllocError::Exhausted {
                network: self.network,
                len,
            })?;
        for l in from + 1..=len {
            self.free[usize::from(l)].insert(addr | bit(l));
        }
        Ok(net(addr, len))
    }

    /// Marks `p` as in use (when rebuilding from the store).
    pub fn reserve(&mut self, p: Ipv6Net) -> Result<(), AllocError> {
        self.check_inside(p)?;
        let addr = u128::from(p.network());
        let len = p.prefix_len();
        let from = (self.network.prefix_len()..=len)
            .find(|l| self.free[usize::from(*l)].contains(&mask(addr, *l)))
            .ok_or(AllocError::InUse(p))?;
        self.free[usize::from(from)].remove(&mask(addr, from));
        // Split down, keeping free the halves that do not contain `p`.
        for l in from + 1..=len {
            let half = mask(addr, l);
            self.free[usize::from(l)].insert(half ^ bit(l));
        }
        Ok(())
    }

    /// Returns `p` to the free space, merging buddies.
    pub fn free(&mut self, p: Ipv6Net) -> Result<(), AllocError> {
        self.check_inside(p)?;
        if self.overlaps_free(p) {
            return Err(AllocError::AlreadyFree(p));
        }
        let mut addr = u128::from(p.network());
        let mut len = p.prefix_len();
        while len > self.network.prefix_len() {
            let buddy = addr ^ bit(len);
            if !self.free[usize::from(len)].remove(&buddy) {
                break;
            }
            addr = mask(addr, len - 1);
            len -= 1;
        }
        self.free[usize::from(len)].insert(addr);
        Ok(())
    }

    /// Whether any part of `p` is free.
    fn overlaps_free(&self, p: Ipv6Net) -> bool {
        let addr = u128::from(p.network());
        let len = p.prefix_len();
        // A free block containing p.
        if (self.network.prefix_len()..=len)
            .any(|l| self.free[usize::from(l)].contains(&mask(addr, l)))
        {
            return true;
        }
        // A free block inside p.
        let last = addr | (bit(len) - 1);
        (len + 1..=128).any(|l| {
            self.free[usize::from(l)]
                .range(addr..=last)
                .next()
                .is_some()
        })
    }

    /// How many /`len` blocks could still be allocated.
    pub fn free_count(&self, len: u8) -> u128 {
        (self.network.prefix_len()..=len)
            .map(|l| (self.free[usize::from(l)].len() as u128) << (len - l).min(127))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_first_and_exhaustion() {
        let mut a = BuddyAllocator::new(p("fd00::/62"));
        let got: Vec<_> = (0..4).map(|_| a.allocate(64).unwrap()).collect();
        assert_eq!(
            got,
            vec![
                p("fd00::/64"),
                p("fd00:0:0:1::/64"),
                p("fd00:0:0:2::/64"),
                p("fd00:0:0:3::/64")
            ]
        );
        assert!(matches!(a.allocate(64), Err(AllocError::Exhausted { .. })));
        a.free(p("fd00:0:0:2::/64")).unwrap();
        assert_eq!(a.allocate(64).unwrap(), p("fd00:0:0:2::/64"));
        assert!(matches!(
            a.free(p("fd00:1::/64")),
            Err(AllocError::Outside(_))
        ));
        assert!(matches!(a.allocate(62), Err(AllocError::BadLength { .. })));
    }

    #[test]
    fn merge_restores_whole() {
        let mut a = BuddyAllocator::new(p("fd00::/48"));
        let x = a.allocate(64).unwrap();
        let y = a.allocate(60).unwrap();
        assert_eq!(y, p("fd00:0:0:10::/60"));
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert_eq!(a.free_count(48), 1);
        assert!(matches!(a.free(x), Err(AllocError::AlreadyFree(_))));
    }

    #[test]
    fn reserve_then_allocate_skips() {
        let mut a = BuddyAllocator::new(p("fd00::/48"));
        a.reserve(p("fd00:0:0:1::/64")).unwrap();
        assert!(matches!(
            a.reserve(p("fd00:0:0:1::/64")),
            Err(AllocError::InUse(_))
        ));
        assert_eq!(a.allocate(64).unwrap(), p("fd00::/64"));
        assert_eq!(a.allocate(64).unwrap(), p("fd00:0:0:2::/64"));
        assert_eq!(a.free_count(64), 65536 - 3);
    }

    proptest! {
        /// Random allocations and frees never hand out overlapping prefixes,
        /// and freeing everything restores the whole network.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((any::<bool>(), 52u8..=58, any::<prop::sample::Index>()), 1..200)) {
            let mut a = BuddyAllocator::new(p("fd00::/50"));
            let mut used: Vec<Ipv6Net> = vec![];
            for (alloc, len, idx) in ops {
                if alloc || used.is_empty() {
                    match a.allocate(len) {
                        Ok(n) => {
                            prop_assert!(used.iter().all(|u| !u.contains(&n) && !n.contains(u)), "{n} overlaps");
                            used.push(n);
                        }
                        Err(AllocError::Exhausted { .. }) => {
                            prop_assert!(a.free_count(len) == 0);
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                } else {
                    let n = used.swap_remove(idx.index(used.len()));
                    a.free(n).unwrap();
                }
            }
            // Rebuilding from the used list gives the same free space.
            let mut b = BuddyAllocator::new(p("fd00::/50"));
            for u in &used { b.reserve(*u).unwrap(); }
            prop_assert_eq!(&a.free, &b.free);
            for u in used { a.free(u).unwrap(); }
            prop_assert_eq!(a.free_count(50), 1);
        }
    }
}

//! The free prefixes, in memory, kept exact across replicas by the prefix
//! log.
//!
//! Every allocation and release appends a row to `prefix_log` in the same
//! transaction that records the node. Every write transaction first
//! catches up with the rows it has not seen (other replicas' changes,
//! committed before it took the write lock), so the buddy allocator it
//! allocates from is the database's free space. A replica that is too far
//! behind (the log was pruned), or whose own commit failed, rebuilds it
//! from the live prefixes instead.
//!
//! Changes made by one operation of a batch are journalled, so the group
//! commit can undo them in memory when it rolls that operation back.
//!
//! Nodes' IPv4 subnets (in networks with IPv4 inside the overlay) are
//! allocated the same way, by a second buddy allocator over the
//! IPv4-mapped IPv6 space (`::ffff:a.b.c.d/96+len`), and logged in the same
//! log (a row's family is its prefix's). That allocator is built when
//! first used, from the live subnets.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::db::{Tx, vals};
use super::{StoreError, live_ipv4, live_prefixes};
use crate::registry::alloc::{AllocError, BuddyAllocator};

/// Most log rows applied at once before a full rebuild is cheaper.
const CATCH_UP_MAX: usize = 10_000;
/// Log rows kept behind the newest (older ones are pruned by the sweep).
pub const LOG_KEEP: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Took(IpNet),
    Freed(IpNet),
}

/// `subnet` in the IPv4-mapped IPv6 space the IPv4 allocator works in.
fn mapped(subnet: Ipv4Net) -> Ipv6Net {
    // 96 + at most 32 is a valid IPv6 prefix length.
    Ipv6Net::new(subnet.network().to_ipv6_mapped(), 96 + subnet.prefix_len()).unwrap_or_default()
}

/// The IPv4 subnet of a mapped prefix.
fn unmapped(p: Ipv6Net) -> Ipv4Net {
    let v4 = Ipv4Addr::from((u128::from(p.network()) & 0xffff_ffff) as u32);
    Ipv4Net::new(v4, p.prefix_len().saturating_sub(96)).unwrap_or_default()
}

/// Parses a log row's or a node's prefix.
fn parse_net(p: &str) -> Result<IpNet, StoreError> {
    p.parse()
        .map_err(|_| StoreError::Internal(format!("bad prefix {p:?} in the database")))
}

/// The allocators and how far into the log they are.
#[derive(Debug)]
pub struct Prefixes {
    alloc: BuddyAllocator,
    /// Nodes' IPv4 subnets, in mapped space; `None` until first used.
    v4: Option<BuddyAllocator>,
    /// The last log row applied; `None`: rebuild before use.
    seen: Option<i64>,
    /// Changes of the operation in progress (see [`Self::begin_op`]).
    journal: Vec<Change>,
}

impl Prefixes {
    /// An allocator for `network`, built at the first [`Self::sync`].
    pub fn new(network: Ipv6Net) -> Self {
        Self {
            alloc: BuddyAllocator::new(network),
            v4: None,
            seen: None,
            journal: vec![],
        }
    }

    /// The allocator (read only).
    pub fn allocator(&self) -> &BuddyAllocator {
        &self.alloc
    }

    /// Forgets everything: the next [`Self::sync`] rebuilds.
    pub fn invalidate(&mut self) {
        self.seen = None;
        self.journal.clear();
    }

    /// Brings the allocator up to date. Call first in a write transaction.
    pub fn sync(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        self.journal.clear();
        if let Some(seen) = self.seen {
            let rows = tx.query(
                "SELECT seq, prefix, op FROM prefix_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                vals![seen, (CATCH_UP_MAX + 1) as i64],
            )?;
            let contiguous = rows.first().is_none_or(|r| r.int(0).ok() == Some(seen + 1));
            if contiguous && rows.len() <= CATCH_UP_MAX {
                let mut last = seen;
                let mut ok = true;
                for r in &rows {
                    let p = parse_net(&r.text(1)?)?;
                    let take = r.text(2)? == "take";
                    ok &= self.apply(p, take).is_ok();
                    last = r.int(0)?;
                }
                if ok {
                    self.seen = Some(last);
                    return Ok(());
                }
                tracing::warn!("the prefix log disagrees with the allocator: rebuilding it");
            }
        }
        self.rebuild(tx)
    }

    /// Takes (or frees) `p` in the allocator of its family; an IPv4
    /// subnet while the IPv4 allocator is not built changes nothing (it
    /// is built from the live subnets).
    fn apply(&mut self, p: IpNet, take: bool) -> Result<(), AllocError> {
        let (alloc, p) = match p {
            IpNet::V6(p) => (&mut self.alloc, p),
            IpNet::V4(p) => match &mut self.v4 {
                Some(a) => (a, mapped(p)),
                None => return Ok(()),
            },
        };
        if take {
            alloc.reserve(p)
        } else {
            alloc.free(p)
        }
    }

    fn rebuild(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let mut alloc = BuddyAllocator::new(self.alloc.network());
        for p in live_prefixes(tx)? {
            alloc
                .reserve(p)
                .map_err(|e| StoreError::Internal(format!("rebuilding the allocator: {e}")))?;
        }
        let v4 = match &self.v4 {
            Some(a) => Some(build_v4(tx, unmapped(a.network()))?),
            None => None,
        };
        let last = tx
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM prefix_log", &[])?
            .int(0)?;
        self.alloc = alloc;
        self.v4 = v4;
        self.seen = Some(last);
        Ok(())
    }

    fn log(&mut self, tx: &mut dyn Tx, p: IpNet, op: &str) -> Result<(), StoreError> {
        let seq = self
            .seen
            .ok_or_else(|| StoreError::Internal("allocator used before sync".into()))?
            + 1;
        tx.execute(
            "INSERT INTO prefix_log(seq, prefix, op) VALUES ($1, $2, $3)",
            vals![seq, p.to_string(), op],
        )?;
        self.seen = Some(seq);
        Ok(())
    }

    /// Starts an operation: its changes can be undone by [`Self::undo_op`].
    pub fn begin_op(&mut self) {
        self.journal.clear();
    }

    /// Undoes the changes made since [`Self::begin_op`] (its transaction
    /// or savepoint was rolled back, log rows included).
    pub fn undo_op(&mut self) {
        while let Some(c) = self.journal.pop() {
            let undone = match c {
                Change::Took(p) => self.apply(p, false),
                Change::Freed(p) => self.apply(p, true),
            };
            if undone.is_err() {
                self.invalidate();
                return;
            }
            self.seen = self.seen.map(|s| s - 1);
        }
    }

    /// Allocates the lowest free /`len` and logs it.
    pub fn allocate(&mut self, tx: &mut dyn Tx, len: u8) -> Result<Ipv6Net, StoreError> {
        let p = self.alloc.allocate(len).map_err(StoreError::Exhausted)?;
        self.took(tx, IpNet::V6(p))?;
        Ok(p)
    }

    /// Allocates the lowest free IPv4 /`len` in `network` and logs it.
    /// The IPv4 network of a registry is fixed once set: live subnets
    /// outside `network` are an error.
    pub fn allocate_v4(
        &mut self,
        tx: &mut dyn Tx,
        network: Ipv4Net,
        len: u8,
    ) -> Result<Ipv4Net, StoreError> {
        if self.v4.as_ref().map(|a| unmapped(a.network())) != Some(network.trunc()) {
            self.v4 = Some(build_v4(tx, network.trunc())?);
        }
        let alloc = self
            .v4
            .as_mut()
            .ok_or_else(|| StoreError::Internal("no IPv4 allocator".into()))?;
        let p = alloc.allocate(96 + len).map_err(|e| match e {
            AllocError::Exhausted { .. } | AllocError::BadLength { .. } => StoreError::Exhausted(e),
            e => StoreError::Internal(e.to_string()),
        })?;
        let subnet = unmapped(p);
        self.took(tx, IpNet::V4(subnet))?;
        Ok(subnet)
    }

    /// Logs an allocation (undone in memory if the log write fails).
    fn took(&mut self, tx: &mut dyn Tx, p: IpNet) -> Result<(), StoreError> {
        if let Err(e) = self.log(tx, p, "take") {
            let _ = self.apply(p, false);
            return Err(e);
        }
        self.journal.push(Change::Took(p));
        Ok(())
    }

    /// Frees `p` (a node prefix or an IPv4 subnet) and logs it.
    pub fn release(&mut self, tx: &mut dyn Tx, p: impl Into<IpNet>) -> Result<(), StoreError> {
        let p = p.into();
        self.apply(p, false)
            .map_err(|e: AllocError| StoreError::Internal(format!("freeing {p}: {e}")))?;
        if let Err(e) = self.log(tx, p, "free") {
            let _ = self.apply(p, true);
            return Err(e);
        }
        self.journal.push(Change::Freed(p));
        Ok(())
    }

    /// Deletes log rows no replica needs any more (one far behind rebuilds).
    pub fn prune(&self, tx: &mut dyn Tx) -> Result<u64, StoreError> {
        match self.seen {
            Some(s) if s > LOG_KEEP => tx.execute(
                "DELETE FROM prefix_log WHERE seq <= $1",
                vals![s - LOG_KEEP],
            ),
            _ => Ok(0),
        }
    }
}

/// An IPv4 allocator for `network` with every live subnet taken.
fn build_v4(tx: &mut dyn Tx, network: Ipv4Net) -> Result<BuddyAllocator, StoreError> {
    let mut alloc = BuddyAllocator::new(mapped(network));
    for subnet in live_ipv4(tx)? {
        alloc.reserve(mapped(subnet)).map_err(|e| {
            StoreError::Config(format!(
                "node subnet {subnet} does not fit the IPv4 network {network} ({e}); the IPv4 \
                 network of a registry is fixed once set"
            ))
        })?;
    }
    Ok(alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_roundtrips() {
        for s in ["10.42.0.0/16", "10.42.3.0/24", "10.42.3.7/32", "0.0.0.0/0"] {
            let subnet: Ipv4Net = s.parse().unwrap();
            assert_eq!(unmapped(mapped(subnet)), subnet, "{s}");
        }
        assert_eq!(
            mapped("10.42.3.0/24".parse().unwrap()),
            "::ffff:10.42.3.0/120".parse::<Ipv6Net>().unwrap()
        );
    }
}

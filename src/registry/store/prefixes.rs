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

use ipnet::Ipv6Net;

use super::db::{Tx, vals};
use super::{StoreError, live_prefixes, parse_prefix};
use crate::registry::alloc::{AllocError, BuddyAllocator};

/// Most log rows applied at once before a full rebuild is cheaper.
const CATCH_UP_MAX: usize = 10_000;
/// Log rows kept behind the newest (older ones are pruned by the sweep).
pub const LOG_KEEP: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Took(Ipv6Net),
    Freed(Ipv6Net),
}

/// The allocator and how far into the log it is.
#[derive(Debug)]
pub struct Prefixes {
    alloc: BuddyAllocator,
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
                    let p = parse_prefix(&r.text(1)?)?;
                    ok &= match r.text(2)?.as_str() {
                        "take" => self.alloc.reserve(p).is_ok(),
                        _ => self.alloc.free(p).is_ok(),
                    };
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

    fn rebuild(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let mut alloc = BuddyAllocator::new(self.alloc.network());
        for p in live_prefixes(tx)? {
            alloc
                .reserve(p)
                .map_err(|e| StoreError::Internal(format!("rebuilding the allocator: {e}")))?;
        }
        let last = tx
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM prefix_log", &[])?
            .int(0)?;
        self.alloc = alloc;
        self.seen = Some(last);
        Ok(())
    }

    fn log(&mut self, tx: &mut dyn Tx, p: Ipv6Net, op: &str) -> Result<(), StoreError> {
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
                Change::Took(p) => self.alloc.free(p),
                Change::Freed(p) => self.alloc.reserve(p),
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
        if let Err(e) = self.log(tx, p, "take") {
            let _ = self.alloc.free(p);
            return Err(e);
        }
        self.journal.push(Change::Took(p));
        Ok(p)
    }

    /// Frees `p` and logs it.
    pub fn release(&mut self, tx: &mut dyn Tx, p: Ipv6Net) -> Result<(), StoreError> {
        self.alloc
            .free(p)
            .map_err(|e: AllocError| StoreError::Internal(format!("freeing {p}: {e}")))?;
        if let Err(e) = self.log(tx, p, "free") {
            let _ = self.alloc.reserve(p);
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

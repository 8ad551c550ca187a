//! Output buffers (babeld's `struct buffered` and `buffered_updates`).
//!
//! Messages are not encoded when they are decided but collected per
//! (interface, destination) with a flush deadline. Updates are buffered as
//! prefixes and resolved against the tables at flush time, so a burst of
//! changes to one prefix costs one Update carrying the latest state; this is
//! the coalescing of triggered updates. Hellos are stamped at flush time,
//! as late as a sans-IO engine can.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

use super::IfaceId;
use super::neighbour::NeighbourId;
use crate::wire::Message;

/// Where a buffer goes: an interface, multicast (`None`) or one neighbour.
pub(crate) type BufferKey = (IfaceId, Option<IpAddr>);

/// What is waiting to be sent to one destination.
#[derive(Clone, Debug, Default)]
pub(crate) struct Buffer {
    pub(crate) deadline: Option<Instant>,
    /// A scheduled Hello is due.
    pub(crate) hello: bool,
    /// Neighbours to send an IHU to.
    pub(crate) ihus: BTreeSet<NeighbourId>,
    /// Send everything we announce.
    pub(crate) full_dump: bool,
    /// Prefixes whose current state to announce.
    pub(crate) updates: BTreeSet<IpNet>,
    /// Other messages, ready-made (requests, acks).
    pub(crate) messages: Vec<Message>,
}

impl Buffer {
    fn schedule(&mut self, at: Instant) {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }
}

/// A group of messages for one destination, to be packed into packets.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) iface: IfaceId,
    pub(crate) dst: Option<IpAddr>,
    pub(crate) messages: Vec<Message>,
}

/// All buffers, and the flushed groups waiting for `poll_transmit`.
#[derive(Debug, Default)]
pub(crate) struct Output {
    buffers: BTreeMap<BufferKey, Buffer>,
    pub(crate) ready: VecDeque<Outgoing>,
}

impl Output {
    /// The buffer for `key`, flushed no later than `at`.
    pub(crate) fn buffer(&mut self, key: BufferKey, at: Instant) -> &mut Buffer {
        let b = self.buffers.entry(key).or_default();
        b.schedule(at);
        b
    }

    /// Takes the buffers due at `now`, in key order.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(BufferKey, Buffer)> {
        let keys: Vec<BufferKey> = self
            .buffers
            .iter()
            .filter(|(_, b)| b.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| Some((k, self.buffers.remove(&k)?)))
            .collect()
    }

    /// Drops everything queued for an interface that went down.
    pub(crate) fn drop_interface(&mut self, iface: IfaceId) {
        self.buffers.retain(|(i, _), _| *i != iface);
        self.ready.retain(|o| o.iface != iface);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.buffers.values().filter_map(|b| b.deadline).min()
    }
}

//! The packet path: forwarding between the tunnels and the local host
//! (a TUN device, or a packet sink in tests), by the lock-free FIB.
//!
//! Each packet task (one per tunnel, one for the host side) owns a
//! [`PacketPath`]: its own [`Forwarder`] (ICMPv6 rate limit, counters) and
//! nothing shared but the FIB and next-hop snapshots (`ArcSwap` loads) and
//! relaxed atomic counters. A packet read from a tunnel is forwarded in
//! place: its `Bytes` becomes mutable without a copy when quinn handed us
//! the only reference (Hop Limit is decremented in place), and leaves as the
//! same buffer.
//!
//! Packets for this node's own address on the peer-exchange port are taken
//! out here, before local delivery, and handed to the router.

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use re6st_babel::engine::IfaceId;
use re6st_dataplane::fib::SharedFib;
use re6st_dataplane::forward::{Action, ForwardConfig, ForwardStats, Forwarder, Ingress};
use re6st_dataplane::fragment::{Fragmenter, Reassembler, ReassemblyStats};
use re6st_dataplane::frame::{self, Frame};
use re6st_dataplane::icmp::MAX_ERROR_LEN;
use re6st_dataplane::nexthop::{NextHopId, NextHops};
use serde::Serialize;
use tokio::sync::mpsc;

use super::link::TunnelLink;
use super::router::RouterIn;
use crate::peers::wire;
use crate::tunnels::policy::TunnelId;

/// Where packets for this node's prefix go: the TUN device or a
/// test sink. Called on the packet path: must not block.
pub trait Host: Send + Sync + 'static {
    /// Delivers one IPv6 packet to the local host.
    fn deliver(&self, packet: Bytes);
}

/// Packet-path counters that are not the forwarder's.
#[derive(Debug, Default)]
pub(crate) struct PathCounters {
    pub(crate) bad_frames: AtomicU64,
    pub(crate) unknown_frames: AtomicU64,
    pub(crate) babel_dropped: AtomicU64,
    pub(crate) exchange_dropped: AtomicU64,
    pub(crate) exchange_malformed: AtomicU64,
    pub(crate) no_next_hop: AtomicU64,
    pub(crate) send_failed: AtomicU64,
    pub(crate) rx_copies: AtomicU64,
}

/// A snapshot of the packet path's counters, all tasks together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathStats {
    /// Forwarding decisions (delivered, forwarded, ICMPv6, drops by reason).
    #[serde(skip)]
    pub forward: ForwardStats,
    /// Packets delivered to the host.
    pub delivered: u64,
    /// Packets forwarded to a tunnel.
    pub forwarded: u64,
    /// Packets dropped by the forwarder (malformed, no route, scope...).
    pub dropped: u64,
    /// Malformed IPv6 packets (part of `dropped`).
    pub dropped_malformed: u64,
    /// ICMPv6 errors sent.
    pub icmp_sent: u64,
    /// Fragment reassembly.
    #[serde(skip)]
    pub reassembly: ReassemblyStats,
    /// Fragments that were refused (bad header, overlap, too many pieces).
    pub fragments_rejected: u64,
    /// Empty datagrams or datagrams starting with the reserved code 0.
    pub bad_frames: u64,
    /// Datagrams with a control code we do not know.
    pub unknown_frames: u64,
    /// Babel packets dropped because the router was busy.
    pub babel_dropped: u64,
    /// Peer-exchange packets dropped because the router was busy.
    pub exchange_dropped: u64,
    /// Peer-exchange packets with a bad UDP header or checksum.
    pub exchange_malformed: u64,
    /// Packets routed to a next hop that was gone.
    pub no_next_hop: u64,
    /// Packets a tunnel refused (closed, too large).
    pub send_failed: u64,
    /// Received datagrams that had to be copied to be forwarded (their
    /// buffer was shared); the rest were forwarded in place.
    pub rx_copies: u64,
}

#[derive(Debug, Default, Clone)]
struct TaskStats {
    forward: ForwardStats,
    reassembly: ReassemblyStats,
}

fn add_reassembly(a: &mut ReassemblyStats, b: &ReassemblyStats) {
    a.fragments += b.fragments;
    a.duplicates += b.duplicates;
    a.reassembled += b.reassembled;
    a.timed_out += b.timed_out;
    a.evicted += b.evicted;
    a.rejected += b.rejected;
}

impl TaskStats {
    fn merge(&mut self, o: &TaskStats) {
        self.forward.merge(&o.forward);
        add_reassembly(&mut self.reassembly, &o.reassembly);
    }
}

/// Per-task counters, summed on demand: each task publishes its own slot
/// every few milliseconds (an uncontended lock, never per packet); a
/// finished task's counts are kept in `retired`.
#[derive(Debug, Default)]
pub(crate) struct StatsBoard {
    retired: Mutex<TaskStats>,
    live: Mutex<Vec<Arc<Mutex<TaskStats>>>>,
}

impl StatsBoard {
    fn slot(self: &Arc<Self>) -> Slot {
        let mine = Arc::new(Mutex::new(TaskStats::default()));
        lock(&self.live).push(mine.clone());
        Slot {
            board: self.clone(),
            mine,
        }
    }

    fn sum(&self) -> TaskStats {
        let mut total = lock(&self.retired).clone();
        for s in lock(&self.live).iter() {
            total.merge(&lock(s));
        }
        total
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Slot {
    board: Arc<StatsBoard>,
    mine: Arc<Mutex<TaskStats>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let last = lock(&self.mine).clone();
        lock(&self.board.live).retain(|s| !Arc::ptr_eq(s, &self.mine));
        lock(&self.board.retired).merge(&last);
    }
}

/// What every packet task shares.
pub(crate) struct PathShared {
    pub(crate) fib: SharedFib,
    pub(crate) hops: NextHops<Arc<TunnelLink>>,
    pub(crate) fragmenter: Fragmenter,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) me: Ipv6Addr,
    pub(crate) router: mpsc::Sender<RouterIn>,
    pub(crate) forward: ForwardConfig,
    pub(crate) counters: PathCounters,
    pub(crate) board: Arc<StatsBoard>,
    /// Registers up tunnels with the node's liveness clock.
    pub(crate) liveness: mpsc::Sender<super::tunnel::Watch>,
}

impl PathShared {
    /// All counters, summed over the tasks.
    pub(crate) fn stats(&self) -> PathStats {
        let t = self.board.sum();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let f = &t.forward;
        PathStats {
            delivered: f.delivered,
            forwarded: f.forwarded,
            dropped: f.dropped_malformed
                + f.dropped_bad_source
                + f.dropped_multicast
                + f.dropped_scope
                + f.dropped_no_route
                + f.dropped_hop_limit
                + f.dropped_too_big,
            dropped_malformed: f.dropped_malformed,
            icmp_sent: f.icmp_sent,
            fragments_rejected: t.reassembly.rejected,
            forward: t.forward.clone(),
            reassembly: t.reassembly.clone(),
            bad_frames: get(&c.bad_frames),
            unknown_frames: get(&c.unknown_frames),
            babel_dropped: get(&c.babel_dropped),
            exchange_dropped: get(&c.exchange_dropped),
            exchange_malformed: get(&c.exchange_malformed),
            no_next_hop: get(&c.no_next_hop),
            send_failed: get(&c.send_failed),
            rx_copies: get(&c.rx_copies),
        }
    }
}

/// How often a task publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// One task's view of the packet path. Clone it for each packet task (a
/// clone gets its own forwarder and counter slot).
pub struct PacketPath {
    shared: Arc<PathShared>,
    forwarder: Forwarder,
    icmp: Box<[u8; MAX_ERROR_LEN]>,
    slot: Slot,
    next_publish: Instant,
}

impl Clone for PacketPath {
    fn clone(&self) -> Self {
        PacketPath::new(self.shared.clone())
    }
}

impl std::fmt::Debug for PacketPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketPath")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

/// Where a forwarded packet's bytes are.
enum Out {
    /// The packet itself, trimmed to this length.
    InPlace(usize),
    /// An ICMPv6 error built in the scratch buffer.
    Copy(Bytes),
}

impl PacketPath {
    pub(crate) fn new(shared: Arc<PathShared>) -> Self {
        let slot = shared.board.slot();
        Self {
            forwarder: Forwarder::new(shared.forward),
            shared,
            icmp: Box::new([0; MAX_ERROR_LEN]),
            slot,
            next_publish: Instant::now(),
        }
    }

    /// Hands an up tunnel's connection to the liveness clock; `Err` when
    /// the node is stopping.
    pub(crate) async fn watch(&self, tunnel: TunnelId, conn: quinn::Connection) -> Result<(), ()> {
        self.shared
            .liveness
            .send((tunnel, conn))
            .await
            .map_err(|_| ())
    }

    /// A packet from the local host (TUN or sink): route it into the
    /// overlay, or answer with an ICMPv6 error.
    pub fn handle_host_packet(&mut self, packet: BytesMut, now: Instant) {
        self.route(Ingress::Tun, packet, now);
    }

    /// A packet this node originates (peer exchange).
    pub(crate) fn handle_local_packet(&mut self, packet: BytesMut, now: Instant) {
        self.route(Ingress::Local, packet, now);
    }

    /// A datagram received on the tunnel of `iface`.
    pub(crate) fn handle_datagram(
        &mut self,
        iface: IfaceId,
        datagram: Bytes,
        reassembler: &mut Reassembler,
        now: Instant,
    ) {
        let c = &self.shared.counters;
        match frame::demux(&datagram) {
            Ok(Frame::Ipv6(_)) => {
                let packet = self.make_mut(datagram);
                self.route(Ingress::Tunnel(NextHopId(iface.0)), packet, now);
            }
            Ok(Frame::Babel(_)) => self.to_babel(iface, datagram),
            Ok(Frame::Fragment(f)) => {
                if reassembler.poll_timeout().is_some_and(|t| t <= now) {
                    reassembler.handle_timeout(now);
                }
                let whole = reassembler.handle_fragment(NextHopId(iface.0), f, now);
                if let Ok(Some(whole)) = whole {
                    match frame::demux(&whole) {
                        Ok(Frame::Ipv6(_)) => {
                            let packet = self.make_mut(whole);
                            self.route(Ingress::Tunnel(NextHopId(iface.0)), packet, now);
                        }
                        Ok(Frame::Babel(_)) => self.to_babel(iface, whole),
                        // A fragment of fragments, or garbage: not ours.
                        _ => {
                            c.bad_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                self.publish(Some(reassembler.stats()), now);
            }
            Ok(Frame::Control { .. }) => {
                c.unknown_frames.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.bad_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The datagram as a mutable buffer (Hop Limit is decremented in
    /// place): free when we hold the only reference, a copy otherwise.
    fn make_mut(&self, datagram: Bytes) -> BytesMut {
        datagram.try_into_mut().unwrap_or_else(|b| {
            self.shared
                .counters
                .rx_copies
                .fetch_add(1, Ordering::Relaxed);
            BytesMut::from(&b[..])
        })
    }

    fn to_babel(&self, iface: IfaceId, bytes: Bytes) {
        if self
            .shared
            .router
            .try_send(RouterIn::Babel { iface, bytes })
            .is_err()
        {
            self.shared
                .counters
                .babel_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn route(&mut self, ingress: Ingress, mut packet: BytesMut, now: Instant) {
        let fib = self.shared.fib.load();
        let base = packet.as_ptr() as usize;
        let (out, hop) =
            match self
                .forwarder
                .handle_packet(&fib, ingress, &mut packet[..], &mut self.icmp, now)
            {
                Action::NextHop(id, bytes) => (place(base, bytes), Some(id)),
                Action::Tun(bytes) => (place(base, bytes), None),
                Action::Drop => {
                    self.publish(None, now);
                    return;
                }
            };
        let bytes = match out {
            Out::InPlace(len) => {
                packet.truncate(len);
                packet.freeze()
            }
            Out::Copy(b) => b,
        };
        match hop {
            Some(id) => self.send(id, bytes),
            None => self.deliver(bytes),
        }
        self.publish(None, now);
    }

    fn send(&self, id: NextHopId, bytes: Bytes) {
        let table = self.shared.hops.load();
        let c = &self.shared.counters;
        match table.get(id) {
            Some(hop) => {
                if self.shared.fragmenter.send(hop, bytes).is_err() {
                    c.send_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                c.no_next_hop.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Local delivery, except peer exchange, which goes to the router.
    fn deliver(&self, bytes: Bytes) {
        let c = &self.shared.counters;
        match wire::match_packet(&bytes, self.shared.me) {
            Ok(None) => self.shared.host.deliver(bytes),
            Ok(Some((from, payload))) => {
                let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
                let payload = bytes.slice(start..start + payload.len());
                if self
                    .shared
                    .router
                    .try_send(RouterIn::Exchange { from, payload })
                    .is_err()
                {
                    c.exchange_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                c.exchange_malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn publish(&mut self, reassembly: Option<&ReassemblyStats>, now: Instant) {
        if now < self.next_publish && reassembly.is_none() {
            return;
        }
        self.next_publish = now + PUBLISH_EVERY;
        let mut s = lock(&self.slot.mine);
        s.forward = self.forwarder.stats().clone();
        if let Some(r) = reassembly {
            s.reassembly = r.clone();
        }
    }

    /// Publishes the counters now (end of a batch, end of the task).
    pub fn flush_stats(&mut self, reassembly: Option<&ReassemblyStats>) {
        let mut s = lock(&self.slot.mine);
        s.forward = self.forwarder.stats().clone();
        if let Some(r) = reassembly {
            s.reassembly = r.clone();
        }
    }
}

/// Whether the forwarder's output is the packet itself (a prefix of it) or
/// an ICMPv6 error in the scratch buffer.
fn place(base: usize, bytes: &[u8]) -> Out {
    if bytes.as_ptr() as usize == base {
        Out::InPlace(bytes.len())
    } else {
        Out::Copy(Bytes::copy_from_slice(bytes))
    }
}

//! The TUN device as the node's host side: packets the kernel routes into
//! the device enter the overlay, and packets for this node's prefix leave
//! through it.
//!
//! - One **reader** task per device queue: `recv_batch` (with Linux offload
//!   one read returns a whole GSO super-packet, split into MTU-sized IPv6
//!   packets), then each packet through the task's own [`PacketPath`]
//!   (forwarder, lock-free FIB load, `send_datagram` on the tunnel). The
//!   packet buffers come from the batch, split off without a copy.
//! - One **writer** task: the tunnels' datagram tasks hand packets for the
//!   host to [`QueueDeliver`] (a bounded channel, never blocking them); the
//!   writer drains up to a batch at a time into a reused [`SendBatch`] and
//!   writes it with one `send_batch`, which coalesces TCP segments (GRO) so
//!   the kernel receives 64 KiB super-packets instead of 45 segments.
//!
//! Nothing on the packet path takes a lock; counters are relaxed atomics.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use re6st_dataplane::tun::{BATCH_SIZE, RecvBatch, SendBatch, Tun};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::path::{Host, PacketPath};

/// Packets waiting for the writer before new ones are dropped (about
/// 6 MB of 1400-byte packets: several GRO batches, well under a second).
pub const DELIVER_QUEUE: usize = 4096;

/// Counters of the host side (relaxed atomics).
#[derive(Debug, Default)]
pub struct HostCounters {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_reads: AtomicU64,
    pub(crate) rx_errors: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_writes: AtomicU64,
    pub(crate) tx_errors: AtomicU64,
    pub(crate) tx_queue_full: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
}

/// A snapshot of [`HostCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostStats {
    /// Packets read from the device.
    pub rx_packets: u64,
    /// Reads (with offload, one read can carry tens of packets).
    pub rx_reads: u64,
    /// Failed reads.
    pub rx_errors: u64,
    /// Packets written to the device (or answered, without a device).
    pub tx_packets: u64,
    /// Batched writes.
    pub tx_writes: u64,
    /// Failed writes (their packets are lost).
    pub tx_errors: u64,
    /// Packets dropped because the writer was behind.
    pub tx_queue_full: u64,
    /// Packets for a host without a device (not a ping): dropped.
    pub undeliverable: u64,
}

impl HostCounters {
    /// Counters now.
    pub fn stats(&self) -> HostStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HostStats {
            rx_packets: g(&self.rx_packets),
            rx_reads: g(&self.rx_reads),
            rx_errors: g(&self.rx_errors),
            tx_packets: g(&self.tx_packets),
            tx_writes: g(&self.tx_writes),
            tx_errors: g(&self.tx_errors),
            tx_queue_full: g(&self.tx_queue_full),
            undeliverable: g(&self.undeliverable),
        }
    }

    pub(crate) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// The [`Host`] half given to the node: queues packets for the host's
/// task (the TUN writer, or the userspace ping responder) without ever
/// blocking the tunnels; a full queue drops the packet and counts it.
#[derive(Debug)]
pub struct QueueDeliver {
    tx: mpsc::Sender<Bytes>,
    counters: Arc<HostCounters>,
}

impl QueueDeliver {
    /// Delivers into `tx`, counting drops in `counters`.
    pub(crate) fn new(tx: mpsc::Sender<Bytes>, counters: Arc<HostCounters>) -> Arc<Self> {
        Arc::new(QueueDeliver { tx, counters })
    }
}

impl Host for QueueDeliver {
    fn deliver(&self, packet: Bytes) {
        if self.tx.try_send(packet).is_err() {
            HostCounters::add(&self.counters.tx_queue_full, 1);
        }
    }
}

/// The writer's end, until the device tasks start.
#[derive(Debug)]
pub struct TunQueue {
    rx: mpsc::Receiver<Bytes>,
    counters: Arc<HostCounters>,
}

/// The host side's two halves: give [`QueueDeliver`] to the node
/// ([`super::HostConfig::External`]), then start the device tasks with the
/// [`TunQueue`] once the node runs.
pub fn channel(counters: Arc<HostCounters>) -> (Arc<QueueDeliver>, TunQueue) {
    let (tx, rx) = mpsc::channel(DELIVER_QUEUE);
    (
        QueueDeliver::new(tx, counters.clone()),
        TunQueue { rx, counters },
    )
}

/// The device tasks of a running node.
#[derive(Debug)]
pub struct TunTasks {
    tasks: JoinSet<io::Error>,
}

impl TunTasks {
    /// Starts one reader per queue in `queues` (the first one is also the
    /// writer's) feeding `path`, and the writer draining `queue`.
    pub fn start(queues: Vec<Tun>, path: PacketPath, mtu: u16, queue: TunQueue) -> Self {
        let mut tasks = JoinSet::new();
        let queues: Vec<Arc<Tun>> = queues.into_iter().map(Arc::new).collect();
        let counters = queue.counters.clone();
        if let Some(first) = queues.first() {
            tasks.spawn(writer(first.clone(), queue));
        }
        for q in queues {
            tasks.spawn(reader(q, path.clone(), mtu, counters.clone()));
        }
        Self { tasks }
    }

    /// Waits until a device task fails (the device went away); pending
    /// forever when there is none.
    pub async fn failed(&mut self) -> io::Error {
        match self.tasks.join_next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => io::Error::other(format!("TUN task ended: {e}")),
            None => std::future::pending().await,
        }
    }

    /// Stops the tasks (the device closes when its last queue is dropped).
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Errors after which a device is gone for good (it was deleted, or the
/// descriptor closed).
fn fatal(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(libc::EBADFD) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENODEV | libc::ENXIO)
    )
}

async fn reader(
    tun: Arc<Tun>,
    mut path: PacketPath,
    mtu: u16,
    counters: Arc<HostCounters>,
) -> io::Error {
    let mut batch = RecvBatch::new(usize::from(mtu), tun.offload());
    loop {
        match tun.recv_batch(&mut batch).await {
            Ok(n) => {
                HostCounters::add(&counters.rx_reads, 1);
                HostCounters::add(&counters.rx_packets, n as u64);
                let now = Instant::now();
                for i in 0..n {
                    path.handle_host_packet(batch.take_mut(i), now);
                }
            }
            Err(e) if fatal(&e) => {
                path.flush_stats(None);
                return e;
            }
            Err(e) => {
                HostCounters::add(&counters.rx_errors, 1);
                tracing::debug!(tun = tun.name(), error = %e, "TUN read failed");
            }
        }
    }
}

async fn writer(tun: Arc<Tun>, mut queue: TunQueue) -> io::Error {
    let mut batch = SendBatch::new();
    let mut pending = Vec::with_capacity(BATCH_SIZE);
    loop {
        if queue.rx.recv_many(&mut pending, BATCH_SIZE).await == 0 {
            // The node is gone: nothing more to write.
            return std::future::pending().await;
        }
        for p in pending.drain(..) {
            batch.push(&p);
        }
        let n = batch.len() as u64;
        match tun.send_batch(&mut batch).await {
            Ok(()) => {
                HostCounters::add(&queue.counters.tx_writes, 1);
                HostCounters::add(&queue.counters.tx_packets, n);
            }
            Err(e) if fatal(&e) => return e,
            Err(e) => {
                HostCounters::add(&queue.counters.tx_errors, 1);
                tracing::debug!(tun = tun.name(), error = %e, "TUN write failed");
            }
        }
    }
}

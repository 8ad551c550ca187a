//! The packet loop's host side: the TUN device (registered with the loop's
//! own runtime, so that its readiness wakes that thread), or a pair of
//! bounded channels (in-process nodes, tests, the userspace ping
//! responder).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use re6st_dataplane::tun::{BATCH_SIZE, DetachedTun, RecvBatch, SendBatch, Tun, TunError};
use serde::Serialize;
use tokio::sync::mpsc;

/// Where packets for this node's prefix go, and where the host's packets
/// come from.
pub enum Host {
    /// A TUN device, opened by the caller and registered by the loop on its
    /// thread. `mtu` sizes the receive buffers.
    Tun {
        /// The device.
        tun: DetachedTun,
        /// The device's MTU.
        mtu: u16,
    },
    /// Bounded channels: packets for the host are dropped (and counted)
    /// when `to_host` is full.
    Channel {
        /// Packets delivered to the host.
        to_host: mpsc::Sender<Bytes>,
        /// Packets from the host, to route into the overlay.
        from_host: mpsc::Receiver<BytesMut>,
    },
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Tun { mtu, .. } => f.debug_struct("Tun").field("mtu", mtu).finish(),
            Host::Channel { .. } => f.write_str("Channel"),
        }
    }
}

/// Counters of the host side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostStats {
    /// Packets read from the host.
    pub rx_packets: u64,
    /// Reads (with TUN offload, one read can carry tens of packets).
    pub rx_reads: u64,
    /// Failed reads.
    pub rx_errors: u64,
    /// Packets written to the host.
    pub tx_packets: u64,
    /// Writes (a TUN batch coalesces TCP segments into one).
    pub tx_writes: u64,
    /// Failed writes (their packets are lost).
    pub tx_errors: u64,
    /// Packets dropped because the host's channel was full.
    pub tx_queue_full: u64,
}

/// The host side as the loop drives it.
pub(super) enum HostIo {
    Tun {
        tun: Tun,
        recv: Box<RecvBatch>,
        send: Box<SendBatch>,
    },
    Channel {
        to_host: mpsc::Sender<Bytes>,
        from_host: mpsc::Receiver<BytesMut>,
        /// A packet taken while waiting, not yet routed.
        early: Option<BytesMut>,
        /// The host hung up: nothing more comes from it.
        closed: bool,
    },
}

/// A host side in a configuration that is cloned: the node that starts
/// with it takes it, once.
#[derive(Clone)]
pub struct HostSlot(Arc<Mutex<Option<Host>>>);

impl HostSlot {
    /// A slot holding `host`.
    pub fn new(host: Host) -> Self {
        Self(Arc::new(Mutex::new(Some(host))))
    }

    /// The host side, if nobody took it yet.
    pub fn take(&self) -> Option<Host> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for HostSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostSlot")
    }
}

impl HostIo {
    /// Registers the host side with the loop's runtime (on its thread).
    pub(super) fn open(host: Host) -> Result<Self, TunError> {
        Ok(match host {
            Host::Tun { tun, mtu } => {
                let tun: Tun = tun.attach()?;
                let recv = Box::new(RecvBatch::new(usize::from(mtu), tun.offload()));
                HostIo::Tun {
                    tun,
                    recv,
                    send: Box::default(),
                }
            }
            Host::Channel { to_host, from_host } => HostIo::Channel {
                to_host,
                from_host,
                early: None,
                closed: false,
            },
        })
    }

    /// Waits until the host may have packets.
    pub(super) async fn readable(&mut self) -> io::Result<()> {
        match self {
            HostIo::Tun { tun, .. } => tun.readable().await,
            HostIo::Channel {
                from_host,
                early,
                closed,
                ..
            } => {
                if early.is_some() || *closed {
                    return std::future::pending().await;
                }
                match from_host.recv().await {
                    Some(p) => *early = Some(p),
                    None => *closed = true,
                }
                Ok(())
            }
        }
    }

    /// Reads what the host has now, at most one batch, giving each packet
    /// to `each`; returns how many.
    pub(super) fn try_recv(
        &mut self,
        stats: &mut HostStats,
        mut each: impl FnMut(BytesMut),
    ) -> io::Result<usize> {
        let n = match self {
            HostIo::Tun { tun, recv, .. } => {
                let n = tun.try_recv_batch(recv)?;
                for i in 0..n {
                    each(recv.take_mut(i));
                }
                n
            }
            HostIo::Channel {
                from_host, early, ..
            } => {
                let mut n = 0;
                if let Some(p) = early.take() {
                    each(p);
                    n += 1;
                }
                while n < BATCH_SIZE {
                    let Ok(p) = from_host.try_recv() else { break };
                    each(p);
                    n += 1;
                }
                n
            }
        };
        if n > 0 {
            stats.rx_reads += 1;
            stats.rx_packets += n as u64;
        }
        Ok(n)
    }

    /// Queues a packet for the host: a TUN batch is written by
    /// [`HostIo::flush`] (or here once full), a channel gets it at once.
    pub(super) async fn deliver(&mut self, packet: Bytes, stats: &mut HostStats) {
        match self {
            HostIo::Tun { send, .. } => {
                send.push(&packet);
                if send.is_full() {
                    self.flush(stats).await;
                }
            }
            HostIo::Channel { to_host, .. } => match to_host.try_send(packet) {
                Ok(()) => {
                    stats.tx_packets += 1;
                    stats.tx_writes += 1;
                }
                Err(_) => stats.tx_queue_full += 1,
            },
        }
    }

    /// Writes the queued packets (one batched write, TCP segments
    /// coalesced when the device has offload).
    pub(super) async fn flush(&mut self, stats: &mut HostStats) {
        let HostIo::Tun { tun, send, .. } = self else {
            return;
        };
        if send.is_empty() {
            return;
        }
        let n = send.len() as u64;
        match tun.send_batch(send).await {
            Ok(()) => {
                stats.tx_writes += 1;
                stats.tx_packets += n;
            }
            Err(e) => {
                stats.tx_errors += 1;
                tracing::debug!(tun = tun.name(), error = %e, "TUN write failed");
            }
        }
    }

    /// Whether a read error means the device is gone for good.
    pub(super) fn fatal(e: &io::Error) -> bool {
        #[cfg(target_os = "linux")]
        if e.raw_os_error() == Some(libc::EBADFD) {
            return true;
        }
        matches!(
            e.raw_os_error(),
            Some(libc::EBADF | libc::ENODEV | libc::ENXIO)
        )
    }
}

//! A tunnel as the dataplane sees it: a QUIC connection behind the
//! dataplane's [`NextHop`] trait, with its traffic counters.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quinn::SendDatagramError;
use re6st_dataplane::nexthop::{NextHop, NextHopError};
use serde::Serialize;

/// Traffic counters of one tunnel (relaxed atomics: one add per packet,
/// no lock).
#[derive(Debug, Default)]
pub struct LinkCounters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
}

/// A tunnel's traffic counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Datagrams handed to QUIC.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Datagrams QUIC refused (too large, connection lost).
    pub tx_dropped: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
}

/// One tunnel's connection, shared by the packet tasks and the router.
#[derive(Debug)]
pub struct TunnelLink {
    conn: quinn::Connection,
    counters: LinkCounters,
}

impl TunnelLink {
    /// Wraps `conn`.
    pub fn new(conn: quinn::Connection) -> Self {
        Self {
            conn,
            counters: LinkCounters::default(),
        }
    }

    /// The connection.
    pub fn conn(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Counts a received datagram.
    #[inline]
    pub fn count_rx(&self, len: usize) {
        self.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .rx_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counters now.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            tx_dropped: c.tx_dropped.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

impl NextHop for TunnelLink {
    #[inline]
    fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    #[inline]
    fn send_datagram(&self, datagram: Bytes) -> Result<(), NextHopError> {
        let len = datagram.len();
        match self.conn.send_datagram(datagram) {
            Ok(()) => {
                self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .tx_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    SendDatagramError::TooLarge => NextHopError::TooLarge {
                        len,
                        max: self.conn.max_datagram_size().unwrap_or(0),
                    },
                    SendDatagramError::ConnectionLost(_) => NextHopError::Closed,
                    _ => NextHopError::Unsupported,
                })
            }
        }
    }
}

//! What QUIC's congestion control and loss recovery do on one tunnel, as
//! the status shows it: an overlay that carries TCP is only as fast as
//! the QUIC connection under it, and these counters say whether it is the
//! window, losses or the datagram send queue that holds it back.

use serde::{Deserialize, Serialize};

/// One tunnel's QUIC path counters (quinn's `PathStats`, plus the UDP
/// datagrams and ACK frames each way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicStats {
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Congestion events (the window was cut).
    pub congestion_events: u64,
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// QUIC packets declared lost.
    pub lost_packets: u64,
    /// Their bytes.
    pub lost_bytes: u64,
    /// UDP datagrams sent.
    pub udp_tx: u64,
    /// `sendmsg` calls quinn counted for them (GSO batches count once).
    pub udp_tx_ios: u64,
    /// UDP datagrams received.
    pub udp_rx: u64,
    /// ACK frames sent.
    pub acks_tx: u64,
    /// ACK frames received.
    pub acks_rx: u64,
    /// The path MTU in use (UDP payload).
    pub mtu: u16,
    /// Smallest RTT seen, microseconds.
    pub min_rtt_us: u64,
}

impl QuicStats {
    /// The counters of `q` now.
    pub fn of(q: &quinn_proto::Connection) -> Self {
        let s = q.stats();
        Self {
            cwnd: s.path.cwnd,
            congestion_events: s.path.congestion_events,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            lost_bytes: s.path.lost_bytes,
            udp_tx: s.udp_tx.datagrams,
            udp_tx_ios: s.udp_tx.ios,
            udp_rx: s.udp_rx.datagrams,
            acks_tx: s.frame_tx.acks,
            acks_rx: s.frame_rx.acks,
            mtu: s.path.current_mtu,
            min_rtt_us: u64::try_from(s.path.min_rtt.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

//! The host side of a node: where packets for its own prefix go and where
//! the host's packets come from. The packet loop reads and writes it
//! ([`crate::node::packet_loop::Host`]): a TUN device (with the kernel
//! route into it, [`kernel_route`]; its IPv4, [`ipv4`]), or channels to a task: the userspace
//! ping responder ([`echo`], for nodes without a TUN) or a test's
//! [`PacketSink`].

pub mod echo;
pub mod ipv4;
pub mod kernel_route;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::packet_loop::Host;

/// The test stand-in for a TUN device: packets in and out of the node's
/// host side through channels.
#[derive(Debug)]
pub struct PacketSink {
    to_node: mpsc::Sender<BytesMut>,
    from_node: mpsc::Receiver<Bytes>,
}

impl PacketSink {
    /// Injects an IPv6 packet as if the host had written it to the TUN.
    /// `false` if the node's queue is full (the packet is dropped).
    pub fn send(&self, packet: &[u8]) -> bool {
        self.to_node.try_send(BytesMut::from(packet)).is_ok()
    }

    /// The next packet the node delivered to the host.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.from_node.recv().await
    }

    /// A delivered packet, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.from_node.try_recv().ok()
    }
}

/// A host side of channels holding `capacity` packets each way: the
/// packet loop's end and the caller's.
pub fn sink(capacity: usize) -> (Host, PacketSink) {
    let (to_host, from_node) = mpsc::channel(capacity);
    let (to_node, from_host) = mpsc::channel(capacity);
    (
        Host::Channel { to_host, from_host },
        PacketSink { to_node, from_node },
    )
}

//! The host side of a node without a TUN device (`re6st node --no-tun`,
//! the userspace demo): the node routes and forwards transit traffic,
//! answers ICMPv6 Echo Requests to its own address (so that `ping` from
//! other nodes works), and can ping other nodes itself ([`EchoHost::ping`]).
//! Every other packet for the host is dropped and counted.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use re6st_dataplane::packet::icmpv6::{Icmpv6Packet, Icmpv6Repr};
use re6st_dataplane::packet::ipv6::{self, Ipv6Packet, Ipv6Repr};
use tokio::sync::{mpsc, oneshot};

use super::PacketSink;
use crate::node::packet_loop::Host;

/// IPv6 Next Header of ICMPv6.
const ICMPV6: u8 = 58;

/// Packets waiting for the responder before new ones are dropped.
const QUEUE: usize = 1024;

type Waiters = Mutex<HashMap<(u16, u16), oneshot::Sender<Instant>>>;

/// The responder's counters (the packet loop counts the packets it
/// exchanges with the responder).
#[derive(Debug, Default)]
pub struct EchoCounters {
    /// Packets for the host that were not pings: dropped.
    pub undeliverable: AtomicU64,
}

impl EchoCounters {
    /// The counters now, by name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        let n = self.undeliverable.load(Ordering::Relaxed);
        [("undeliverable".to_string(), n)].into_iter().collect()
    }
}

fn add(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A host without a device: answers and sends pings.
#[derive(Debug)]
pub struct EchoHost {
    me: Ipv6Addr,
    ident: u16,
    seq: AtomicU16,
    waiters: Arc<Waiters>,
    inject: mpsc::Sender<BytesMut>,
    counters: Arc<EchoCounters>,
}

/// The responder's end of the node's host side, until the node runs.
#[derive(Debug)]
pub struct EchoQueue(PacketSink);

/// The host side for the node, and the queue to start [`EchoHost`] with.
pub fn channel() -> (Host, EchoQueue) {
    let (host, sink) = super::sink(QUEUE);
    (host, EchoQueue(sink))
}

impl EchoHost {
    /// Starts the responder for the node at `me` on its host side.
    pub fn start(me: Ipv6Addr, queue: EchoQueue, counters: Arc<EchoCounters>) -> Self {
        let waiters: Arc<Waiters> = Arc::default();
        let (inject, inject_rx) = mpsc::channel(QUEUE);
        tokio::spawn(respond(
            me,
            queue.0,
            inject_rx,
            waiters.clone(),
            counters.clone(),
        ));
        Self {
            me,
            ident: rand::random(),
            seq: AtomicU16::new(0),
            waiters,
            inject,
            counters,
        }
    }

    /// Sends one Echo Request to `dst` through the overlay and waits up to
    /// `timeout` for the reply; the round-trip time, or `None`.
    pub async fn ping(&self, dst: Ipv6Addr, timeout: Duration) -> Option<Duration> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert((self.ident, seq), tx);
        let packet = echo(
            self.me,
            dst,
            Icmpv6Repr::EchoRequest {
                ident: self.ident,
                seq_no: seq,
                data: b"re6st ping payload",
            },
        );
        let sent = Instant::now();
        let answer = if self.inject.send(packet).await.is_ok() {
            tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&self.waiters).remove(&(self.ident, seq));
        answer.map(|t| t.saturating_duration_since(sent))
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<EchoCounters> {
        &self.counters
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<(u16, u16), oneshot::Sender<Instant>>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// An IPv6 packet carrying `msg` from `src` to `dst`.
fn echo(src: Ipv6Addr, dst: Ipv6Addr, msg: Icmpv6Repr<'_>) -> BytesMut {
    let len = msg.buffer_len();
    let mut buf = BytesMut::zeroed(ipv6::HEADER_LEN + len);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ICMPV6,
        payload_len: u16::try_from(len).unwrap_or(u16::MAX),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
    msg.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut buf[ipv6::HEADER_LEN..]),
    );
    buf
}

/// What to do with a packet for the host.
enum Verdict {
    Reply(BytesMut),
    Answer(u16, u16),
    Drop,
}

fn classify(me: Ipv6Addr, packet: &[u8]) -> Verdict {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Verdict::Drop;
    };
    if ip.next_header() != ICMPV6 || ip.dst_addr() != me {
        return Verdict::Drop;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
        return Verdict::Drop;
    };
    match Icmpv6Repr::parse(&src, &dst, &icmp) {
        Ok(Icmpv6Repr::EchoRequest {
            ident,
            seq_no,
            data,
        }) => Verdict::Reply(echo(
            me,
            src,
            Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            },
        )),
        Ok(Icmpv6Repr::EchoReply { ident, seq_no, .. }) => Verdict::Answer(ident, seq_no),
        _ => Verdict::Drop,
    }
}

async fn respond(
    me: Ipv6Addr,
    mut node: PacketSink,
    mut inject: mpsc::Receiver<BytesMut>,
    waiters: Arc<Waiters>,
    counters: Arc<EchoCounters>,
) {
    loop {
        let packet: Bytes = tokio::select! {
            p = node.recv() => match p { Some(p) => p, None => return },
            Some(out) = inject.recv() => {
                node.send(&out);
                continue;
            }
        };
        let now = Instant::now();
        match classify(me, &packet) {
            Verdict::Reply(reply) => {
                node.send(&reply);
            }
            Verdict::Answer(ident, seq) => {
                if let Some(w) = lock(&waiters).remove(&(ident, seq)) {
                    let _ = w.send(now);
                }
            }
            Verdict::Drop => add(&counters.undeliverable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_to_me_are_answered_and_replies_matched() {
        let me: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let other: Ipv6Addr = "fd00:2::1".parse().unwrap();
        let req = echo(
            other,
            me,
            Icmpv6Repr::EchoRequest {
                ident: 7,
                seq_no: 9,
                data: b"abc",
            },
        );
        let Verdict::Reply(reply) = classify(me, &req) else {
            panic!("no reply")
        };
        let ip = Ipv6Packet::new_checked(&reply[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (me, other));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&me, &other, &icmp).unwrap(),
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: b"abc"
            }
        );
        // The reply, seen by the pinger, is matched by (ident, seq).
        assert!(matches!(classify(other, &reply), Verdict::Answer(7, 9)));
        // Not for me, bad checksum, truncated, not ICMPv6: dropped.
        assert!(matches!(classify(other, &req), Verdict::Drop));
        let mut bad = req.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(classify(me, &bad), Verdict::Drop));
        assert!(matches!(classify(me, &req[..45]), Verdict::Drop));
        let mut udp = req.clone();
        udp[6] = 17;
        assert!(matches!(classify(me, &udp), Verdict::Drop));
    }
}

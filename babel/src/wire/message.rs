//! Decoded Babel messages: what the engine consumes and produces.
//!
//! Times are [`Duration`]s here; centiseconds exist only inside the codec.
//! Metrics and costs are `u16` with [`INFINITY`] meaning unreachable.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// Metric value meaning "unreachable" (RFC 8966 §2.1).
pub const INFINITY: u16 = 0xFFFF;

/// An 8-byte router-id (RFC 8966 §4.6.7). All-zeros and all-ones are invalid
/// on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(pub [u8; 8]);

/// One Babel message, after the per-packet parser state (default prefixes,
/// current router-id, next hops) has been applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Acknowledgment Request (type 2).
    AckRequest(AckRequestRepr),
    /// Acknowledgment (type 3).
    Ack(AckRepr),
    /// Hello (type 4), with its optional RTT timestamp.
    Hello(HelloRepr),
    /// I Heard You (type 5), with its optional RTT timestamps.
    Ihu(IhuRepr),
    /// Update (type 8) with its router-id and next hop resolved.
    Update(UpdateRepr),
    /// Route Request (type 9).
    RouteRequest(RouteRequestRepr),
    /// Seqno Request (type 10).
    SeqnoRequest(SeqnoRequestRepr),
}

/// Acknowledgment Request: the receiver must answer within `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRequestRepr {
    /// Opaque value echoed in the Ack.
    pub opaque: u16,
    /// Deadline for the Ack (never zero on the wire).
    pub interval: Duration,
}

/// Acknowledgment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRepr {
    /// The opaque value of the request being acknowledged.
    pub opaque: u16,
}

/// Hello (RFC 8966 §4.6.5) with the RFC 9616 origin timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// The U flag: this Hello belongs to the per-neighbour unicast sequence.
    pub unicast: bool,
    /// Hello seqno.
    pub seqno: u16,
    /// Interval until the next scheduled Hello; zero means unscheduled.
    pub interval: Duration,
    /// Sender's clock in microseconds modulo 2^32, when timestamps are on.
    pub timestamp: Option<u32>,
}

/// The two timestamps an IHU carries (RFC 9616 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IhuTimestamp {
    /// Timestamp copied from the neighbour's last timestamped Hello.
    pub origin: u32,
    /// Our clock when that Hello arrived.
    pub receive: u32,
}

/// I Heard You (RFC 8966 §4.6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IhuRepr {
    /// Cost of receiving from the addressed neighbour.
    pub rxcost: u16,
    /// Interval until the next IHU (never zero on the wire).
    pub interval: Duration,
    /// The neighbour this IHU is for; `None` is AE 0 (whoever receives it).
    pub address: Option<IpAddr>,
    /// RTT timestamps, when present.
    pub timestamp: Option<IhuTimestamp>,
}

/// The Origin Proof of an Update (our sub-TLV 112): opaque bytes by which
/// the caller proves that the route's router-id originated its prefix at
/// its seqno (the node puts the origin's signature there). The codec only
/// carries it; what it means is the engine's caller's business.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OriginProof(Box<[u8]>);

impl OriginProof {
    /// The longest proof: an Update's value holds at most 255 bytes, of
    /// which 10 are fixed fields, up to 16 the prefix and 2 the sub-TLV
    /// header.
    pub const MAX_LEN: usize = 255 - 10 - 16 - 2;

    /// A proof of 1 to [`OriginProof::MAX_LEN`] bytes; `None` otherwise.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (1..=Self::MAX_LEN)
            .contains(&bytes.len())
            .then(|| OriginProof(bytes.into()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for OriginProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OriginProof({} bytes)", self.0.len())
    }
}

/// Update (RFC 8966 §4.6.9), fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRepr {
    /// The prefix; `None` is an AE 0 update, which retracts every route
    /// learned from the sender (plen 0, metric infinite only). Bits past the
    /// prefix length are zero when decoded and not sent when encoded.
    pub prefix: Option<IpNet>,
    /// Interval until the next scheduled update of this prefix.
    pub interval: Duration,
    /// Source seqno.
    pub seqno: u16,
    /// Metric; [`INFINITY`] is a retraction.
    pub metric: u16,
    /// Router-id in force; required for finite updates.
    pub router_id: Option<RouterId>,
    /// Next hop in force for the prefix's address family; `None` means the
    /// sender's source address. An IPv4 prefix with an IPv6 next hop, or
    /// the sender's, is v4-via-v6 (AE 4, RFC 9229); with an IPv4 next hop
    /// it is AE 1, which the decoder refuses when finite without one (the
    /// sender's IPv6 address cannot be an IPv4 next hop; babeld refuses it
    /// too), so a finite IPv4 route always has a next hop it can use.
    pub next_hop: Option<IpAddr>,
    /// The Origin Proof sub-TLV, if the Update carried one.
    pub proof: Option<OriginProof>,
}

/// Route Request (RFC 8966 §4.6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRequestRepr {
    /// The requested prefix; `None` is a wildcard request (full dump).
    pub prefix: Option<IpNet>,
    /// The Proof Wanted sub-TLV: the answer should carry the Origin Proof
    /// (the requester could not check the origin of what it was sent).
    pub proof_wanted: bool,
}

/// Seqno Request (RFC 8966 §4.6.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqnoRequestRepr {
    /// The prefix whose source should increase its seqno.
    pub prefix: IpNet,
    /// The requested seqno.
    pub seqno: u16,
    /// Remaining hop count (never zero on the wire).
    pub hop_count: u8,
    /// Router-id of the source the request is for.
    pub router_id: RouterId,
}

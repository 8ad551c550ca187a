//! The forwarding decision (RFC 8200 section 3, RFC 4443 section 3 for
//! IPv6; RFC 1812 sections 4 and 5 for IPv4): a pure [`verdict`] per
//! packet, and a [`Forwarder`] that adds the stateful parts (ICMP rate
//! limit, counters) and builds the errors. The version nibble picks the
//! family; both go through the same FIB snapshot and the same checks.
//!
//! Hop Limit (IPv4: TTL): the node is one router. Packets from the TUN
//! come from the local kernel, which already did its routing hop; packets
//! delivered to the TUN are routed on by the kernel, which decrements them
//! itself. So Hop Limit is decremented (and checked) only when a packet
//! received from a tunnel leaves through a tunnel, which is also what
//! makes `traceroute` show every overlay router.
//!
//! IPv4 sizes: a packet above the MTU with Don't Fragment set is answered
//! with "fragmentation needed" (RFC 1191) like IPv6's Packet Too Big; one
//! without DF is carried whole (the overlay fragments what its tunnels
//! cannot carry, so no router fragmentation is needed).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::fib::{Fib, Route};
use crate::icmp::{self, IcmpError, MAX_ERROR_LEN};
use crate::nexthop::NextHopId;
use crate::packet::ParseError;
use crate::packet::ipv4::{self, Ipv4Packet};
use crate::packet::ipv6::{self, Ipv6Packet};
use crate::ratelimit::TokenBucket;

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// From the local TUN device (the host's kernel).
    Tun,
    /// From a tunnel (a datagram of this next hop).
    Tunnel(NextHopId),
    /// Originated by the dataplane itself (an ICMP error).
    Local,
}

/// Per-node forwarding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Overlay MTU: packets above it get ICMPv6 Packet Too Big. At least
    /// 1280; normally the TUN MTU.
    pub mtu: u16,
    /// Source address of the ICMPv6 errors this node originates: one of
    /// its own overlay addresses.
    pub icmp_source: Ipv6Addr,
    /// Source address of the ICMPv4 errors: the node's IPv4 address in the
    /// overlay; without one, IPv4 packets that deserve an error are
    /// dropped silently (and counted).
    pub icmp_source_v4: Option<Ipv4Addr>,
    /// ICMP errors per second (token bucket rate, both families).
    pub icmp_rate: u32,
    /// ICMP error burst (token bucket size).
    pub icmp_burst: u32,
}

impl ForwardConfig {
    /// Defaults for a node whose address is `icmp_source`: MTU 1280, no
    /// IPv4 address, errors limited to 100 per second with bursts of 50.
    pub fn new(icmp_source: Ipv6Addr) -> Self {
        ForwardConfig {
            mtu: ipv6::MIN_MTU as u16,
            icmp_source,
            icmp_source_v4: None,
            icmp_rate: 100,
            icmp_burst: 50,
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it to the local TUN.
    Deliver,
    /// Send it through this next hop (Hop Limit or TTL already
    /// decremented).
    Forward(NextHopId),
    /// Drop it, and answer with this error if the rate limit allows (its
    /// eligibility was already checked).
    Icmp(IcmpError),
    /// Drop it without an answer.
    Drop(DropReason),
}

/// Why a packet was dropped; every drop is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a valid IPv6 or IPv4 packet (an IPv4 header with a bad
    /// checksum included).
    Malformed(ParseError),
    /// Multicast, unspecified or loopback source (IPv4: also broadcast
    /// and `240.0.0.0/4`).
    BadSource,
    /// Multicast (or IPv4 broadcast) destination: the overlay carries
    /// unicast only (Babel has its own frame type).
    Multicast,
    /// Link-local source or destination, or loopback destination: never
    /// forwarded (RFC 4291 section 2.5.6, RFC 3927 section 7).
    Scope,
    /// No route, and no error may be sent.
    NoRoute,
    /// Hop limit exhausted, and no error may be sent.
    HopLimit,
    /// Above the MTU, and no error may be sent.
    TooBig,
    /// An error was due but the rate limit refused it.
    RateLimited,
}

impl DropReason {
    fn from_error(error: IcmpError) -> Self {
        match error {
            IcmpError::NoRoute | IcmpError::AddressUnreachable | IcmpError::RejectRoute => {
                DropReason::NoRoute
            }
            IcmpError::HopLimitExceeded => DropReason::HopLimit,
            IcmpError::PacketTooBig { .. } => DropReason::TooBig,
        }
    }
}

/// Decides what to do with `packet` (whole buffer, trailing bytes allowed),
/// IPv6 or IPv4 by its version nibble. Pure but for one write: when
/// forwarding a packet received from a tunnel, it decrements Hop Limit (or
/// TTL, and the IPv4 header checksum with it) in place.
pub fn verdict(packet: &mut [u8], ingress: Ingress, fib: &Fib, config: &ForwardConfig) -> Verdict {
    match packet.first().map(|b| b >> 4) {
        Some(4) => verdict_v4(packet, ingress, fib, config),
        _ => verdict_v6(packet, ingress, fib, config),
    }
}

fn verdict_v6(packet: &mut [u8], ingress: Ingress, fib: &Fib, config: &ForwardConfig) -> Verdict {
    let header = match Ipv6Packet::new_checked(&*packet) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(DropReason::Malformed(e)),
    };
    let (src, dst) = (header.src_addr(), header.dst_addr());
    if src.is_multicast() || src.is_unspecified() || src.is_loopback() {
        return Verdict::Drop(DropReason::BadSource);
    }
    if dst.is_multicast() {
        return Verdict::Drop(DropReason::Multicast);
    }
    if ipv6::is_link_local(&src) || ipv6::is_link_local(&dst) || dst.is_loopback() {
        return Verdict::Drop(DropReason::Scope);
    }
    let too_big = header.total_len() > usize::from(config.mtu);
    let answer = |error: IcmpError| match icmp::eligible(error, &header) {
        Ok(()) => Verdict::Icmp(error),
        Err(_) => Verdict::Drop(DropReason::from_error(error)),
    };
    let next_hop = match fib.lookup(dst) {
        None => return answer(IcmpError::NoRoute),
        Some(Route::Unreachable) => return answer(IcmpError::RejectRoute),
        Some(Route::Local) if ingress == Ingress::Tun => {
            // The kernel routed one of our own addresses into the TUN: it
            // has no host there, and writing it back would loop.
            return answer(IcmpError::AddressUnreachable);
        }
        Some(Route::Local) => return Verdict::Deliver,
        Some(Route::Via(id)) => id,
    };
    let hop_limit = header.hop_limit();
    let transit = matches!(ingress, Ingress::Tunnel(_));
    if transit && hop_limit <= 1 {
        return answer(IcmpError::HopLimitExceeded);
    }
    if too_big {
        return answer(IcmpError::PacketTooBig {
            mtu: u32::from(config.mtu),
        });
    }
    if transit {
        Ipv6Packet::new_unchecked(&mut *packet).set_hop_limit(hop_limit - 1);
    }
    Verdict::Forward(next_hop)
}

fn verdict_v4(packet: &mut [u8], ingress: Ingress, fib: &Fib, config: &ForwardConfig) -> Verdict {
    let header = match Ipv4Packet::new_checked(&*packet) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(DropReason::Malformed(e)),
    };
    if !header.verify_checksum() {
        return Verdict::Drop(DropReason::Malformed(ParseError::BadChecksum));
    }
    let (src, dst) = (header.src_addr(), header.dst_addr());
    if ipv4::is_bad_source(&src) {
        return Verdict::Drop(DropReason::BadSource);
    }
    if dst.is_multicast() || dst.is_broadcast() {
        return Verdict::Drop(DropReason::Multicast);
    }
    if ipv4::is_link_local(&src) || ipv4::is_link_local(&dst) || dst.is_loopback() {
        return Verdict::Drop(DropReason::Scope);
    }
    let too_big = header.dont_frag() && header.total_len() > usize::from(config.mtu);
    let answer = |error: IcmpError| match (config.icmp_source_v4, icmp::eligible_v4(&header)) {
        (Some(_), Ok(())) => Verdict::Icmp(error),
        _ => Verdict::Drop(DropReason::from_error(error)),
    };
    let next_hop = match fib.lookup_v4(dst) {
        None => return answer(IcmpError::NoRoute),
        Some(Route::Unreachable) => return answer(IcmpError::RejectRoute),
        Some(Route::Local) if ingress == Ingress::Tun => {
            return answer(IcmpError::AddressUnreachable);
        }
        Some(Route::Local) => return Verdict::Deliver,
        Some(Route::Via(id)) => id,
    };
    let transit = matches!(ingress, Ingress::Tunnel(_));
    if transit && header.ttl() <= 1 {
        return answer(IcmpError::HopLimitExceeded);
    }
    if too_big {
        return answer(IcmpError::PacketTooBig {
            mtu: u32::from(config.mtu),
        });
    }
    if transit {
        Ipv4Packet::new_unchecked(&mut *packet).decrement_ttl();
    }
    Verdict::Forward(next_hop)
}

/// What the caller must do after [`Forwarder::handle_packet`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Write these bytes to the TUN.
    Tun(&'a [u8]),
    /// Send these bytes through this next hop (fragmenting if needed).
    NextHop(NextHopId, &'a [u8]),
    /// Nothing: the packet was dropped and counted.
    Drop,
}

/// Packet counters of one [`Forwarder`]. Plain integers: each packet task
/// owns its forwarder; the node sums them for its metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the field names say it
pub struct ForwardStats {
    pub delivered: u64,
    pub forwarded: u64,
    pub icmp_sent: u64,
    pub icmp_rate_limited: u64,
    pub icmp_undeliverable: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_source: u64,
    pub dropped_multicast: u64,
    pub dropped_scope: u64,
    pub dropped_no_route: u64,
    pub dropped_hop_limit: u64,
    pub dropped_too_big: u64,
    /// IPv4 packets among all the above (each also counted there).
    pub ipv4: u64,
}

impl ForwardStats {
    fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed(_) => &mut self.dropped_malformed,
            DropReason::BadSource => &mut self.dropped_bad_source,
            DropReason::Multicast => &mut self.dropped_multicast,
            DropReason::Scope => &mut self.dropped_scope,
            DropReason::NoRoute => &mut self.dropped_no_route,
            DropReason::HopLimit => &mut self.dropped_hop_limit,
            DropReason::TooBig => &mut self.dropped_too_big,
            DropReason::RateLimited => &mut self.icmp_rate_limited,
        };
        *counter += 1;
    }

    /// Adds `other` into `self` (to aggregate per-task counters).
    pub fn merge(&mut self, other: &ForwardStats) {
        self.delivered += other.delivered;
        self.forwarded += other.forwarded;
        self.icmp_sent += other.icmp_sent;
        self.icmp_rate_limited += other.icmp_rate_limited;
        self.icmp_undeliverable += other.icmp_undeliverable;
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_bad_source += other.dropped_bad_source;
        self.dropped_multicast += other.dropped_multicast;
        self.dropped_scope += other.dropped_scope;
        self.dropped_no_route += other.dropped_no_route;
        self.dropped_hop_limit += other.dropped_hop_limit;
        self.dropped_too_big += other.dropped_too_big;
        self.ipv4 += other.ipv4;
    }
}

/// The forwarding decision with its state: ICMP rate limit and counters.
/// One per packet task (it is not shared, so it needs no lock).
#[derive(Debug, Clone)]
pub struct Forwarder {
    config: ForwardConfig,
    limiter: TokenBucket,
    stats: ForwardStats,
}

impl Forwarder {
    /// A forwarder with `config`.
    pub fn new(config: ForwardConfig) -> Self {
        Forwarder {
            limiter: TokenBucket::new(config.icmp_rate, config.icmp_burst),
            config,
            stats: ForwardStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// A new source of ICMPv4 errors (the node's IPv4 address changed
    /// with a renewed certificate).
    pub fn set_icmp_source_v4(&mut self, source: Option<Ipv4Addr>) {
        self.config.icmp_source_v4 = source;
    }

    /// Counters so far.
    pub fn stats(&self) -> &ForwardStats {
        &self.stats
    }

    /// Decides and acts on one packet. `packet` may be modified (Hop
    /// Limit, TTL); an ICMP error is built into `icmp_buf`. The returned
    /// slices borrow one of the two, trimmed to the packet's length.
    pub fn handle_packet<'a>(
        &mut self,
        fib: &Fib,
        ingress: Ingress,
        packet: &'a mut [u8],
        icmp_buf: &'a mut [u8; MAX_ERROR_LEN],
        now: Instant,
    ) -> Action<'a> {
        let v4 = packet.first().is_some_and(|b| b >> 4 == 4);
        self.stats.ipv4 += u64::from(v4);
        match verdict(packet, ingress, fib, &self.config) {
            Verdict::Deliver => {
                self.stats.delivered += 1;
                Action::Tun(trimmed(packet))
            }
            Verdict::Forward(id) => {
                self.stats.forwarded += 1;
                Action::NextHop(id, trimmed(packet))
            }
            Verdict::Drop(reason) => {
                self.stats.count_drop(reason);
                Action::Drop
            }
            Verdict::Icmp(error) => {
                self.stats.count_drop(DropReason::from_error(error));
                if !self.limiter.try_take(now) {
                    self.stats.icmp_rate_limited += 1;
                    return Action::Drop;
                }
                let len = match self.config.icmp_source_v4 {
                    // `verdict` answers IPv4 only with a source.
                    Some(source) if v4 => {
                        let invoking = Ipv4Packet::new_unchecked(&*packet);
                        icmp::emit_error_v4(error, source, &invoking, icmp_buf)
                    }
                    _ => {
                        let invoking = Ipv6Packet::new_unchecked(&*packet);
                        icmp::emit_error(error, self.config.icmp_source, &invoking, icmp_buf)
                    }
                };
                self.stats.icmp_sent += 1;
                let reply = &mut icmp_buf[..len];
                if ingress == Ingress::Tun {
                    return Action::Tun(reply);
                }
                // Route the error like a packet we originate.
                match verdict(reply, Ingress::Local, fib, &self.config) {
                    Verdict::Deliver => Action::Tun(reply),
                    Verdict::Forward(id) => Action::NextHop(id, reply),
                    Verdict::Icmp(_) | Verdict::Drop(_) => {
                        self.stats.icmp_undeliverable += 1;
                        Action::Drop
                    }
                }
            }
        }
    }
}

/// `packet` without bytes past its Payload (IPv4: Total) Length, already
/// checked.
fn trimmed(packet: &mut [u8]) -> &[u8] {
    let len = match packet.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_unchecked(&*packet).total_len(),
        _ => Ipv6Packet::new_unchecked(&*packet).total_len(),
    };
    &packet[..len]
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "forward_v4_tests.rs"]
mod tests_v4;

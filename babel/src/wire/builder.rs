//! The packet builder: appends messages to one packet within a byte budget,
//! encoding them the way babeld does (RFC 8966 §4.5, babeld `message.c`).
//!
//! * A Router-Id TLV is emitted only when an Update's router-id differs
//!   from the one in force, and not at all when flag 0x40 can carry it (an
//!   IPv6 /128 whose low 8 bytes are the router-id).
//! * Prefix compression of IPv6 prefixes (babeld `really_buffer_update`):
//!   flag 0x80 when there is no default prefix yet or plen ≥ 48; `omitted`
//!   = the leading whole bytes shared with the default prefix. IPv4
//!   prefixes are sent whole, without 0x80, as babeld does.
//! * A Next Hop TLV only when an Update names a next hop different from the
//!   one in force. IPv4 prefixes use AE 1 with an IPv4 next hop and AE 4
//!   (RFC 9229) with an IPv6 one or with none (the sender).
//! * TLVs are never split: a message that does not fit leaves the packet
//!   unchanged and returns [`BuildError::Full`].
//! * At most one Hello per packet (a second one would corrupt the
//!   receiver's Hello history): the second returns `Full`.
//! * An IHU with timestamps needs a timestamped Hello earlier in the same
//!   packet (RFC 9616 §3.2): push the Hello first, then the IHUs. When the
//!   IHUs overflow into a new packet, push a Hello (an unscheduled one,
//!   interval 0, as babeld does) into that packet first.
//!
//! Every packet the builder produces is accepted by [`super::parse_packet`]
//! and decodes to the messages pushed (prefixes masked to their length,
//! intervals rounded to centiseconds): the proptests check it.

use std::net::IpAddr;

use thiserror::Error;

use super::address::{Ae, high_mask, prefix_bytes};
use super::update::flags;
use super::{
    HEADER_LEN, Header, HelloRepr, INFINITY, IhuRepr, MAX_PACKET_LEN, Message, NextHopRepr,
    OriginProof, RouterId, RouterIdRepr, Tlv, UpdateRepr, UpdateTlv, duration_to_centis,
};

/// Why a message could not be appended to a packet.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The message does not fit in the remaining budget, or cannot be
    /// expressed in this packet's parser state (a second Hello; an Update
    /// without router-id or next hop after one that set them): send this
    /// packet and push the message into a new one. Never returned by an
    /// empty packet.
    #[error("packet full")]
    Full,
    /// The message alone exceeds the budget of an empty packet.
    #[error("message of {need} bytes exceeds the packet budget of {budget}")]
    TooBig {
        /// Bytes the message needs, header included.
        need: usize,
        /// The budget.
        budget: usize,
    },
    /// An IHU with timestamps pushed into a packet without a timestamped
    /// Hello (RFC 9616 §3.2): push the Hello first.
    #[error("IHU timestamps need a timestamped Hello earlier in the packet")]
    IhuTimestampWithoutHello,
    /// The message cannot be encoded validly; a caller bug.
    #[error("message cannot be encoded: {0}")]
    Invalid(&'static str),
}

/// What the receiver's parser state will be after the TLVs written so far.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// The IPv6 default prefix (the only one babeld's encoder uses).
    default_v6: Option<u128>,
    router_id: Option<RouterId>,
    next_hop_v4: Option<IpAddr>,
    next_hop_v6: Option<IpAddr>,
    /// `Some(timestamped)` once a Hello is in the packet.
    hello: Option<bool>,
}

/// Builds one Babel packet of at most `budget` bytes (header included;
/// clamped to the 65539 bytes a body length can describe).
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    budget: usize,
    buf: Vec<u8>,
    state: State,
}

impl PacketBuilder {
    /// An empty packet that will never exceed `budget` bytes.
    pub fn new(budget: usize) -> Self {
        let budget = budget.min(MAX_PACKET_LEN);
        let mut buf = Vec::with_capacity(budget.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        PacketBuilder {
            budget,
            buf,
            state: State::default(),
        }
    }

    /// Appends `msg`, with whatever Router-Id or Next Hop TLV it needs. On
    /// error the packet is unchanged.
    pub fn push(&mut self, msg: &Message) -> Result<(), BuildError> {
        let start = self.buf.len();
        let saved = self.state;
        let result = self.write(msg).and_then(|()| self.check_budget(start));
        if result.is_err() {
            self.buf.truncate(start);
            self.state = saved;
        }
        result
    }

    /// `Ok` if the packet, which was `start` bytes before this push, is
    /// still within the budget.
    fn check_budget(&self, start: usize) -> Result<(), BuildError> {
        if self.buf.len() <= self.budget {
            Ok(())
        } else if start == HEADER_LEN {
            Err(BuildError::TooBig {
                need: self.buf.len(),
                budget: self.budget,
            })
        } else {
            Err(BuildError::Full)
        }
    }

    /// True when no message has been pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// The size of the packet so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes left in the budget.
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.buf.len())
    }

    /// The finished packet: header, body, no trailer.
    pub fn finish(mut self) -> Vec<u8> {
        // The budget is clamped to MAX_PACKET_LEN, so the body fits a u16.
        let body_len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX);
        Header::new_unchecked(&mut self.buf[..]).emit(body_len);
        self.buf
    }

    /// Appends `len` bytes and lets `f` write a TLV into them.
    fn tlv(&mut self, len: usize, f: impl FnOnce(&mut Tlv<&mut [u8]>)) {
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        f(&mut Tlv::new_unchecked(&mut self.buf[start..]));
    }

    fn write(&mut self, msg: &Message) -> Result<(), BuildError> {
        match msg {
            Message::Hello(h) => self.hello(h),
            Message::Ihu(ihu) => self.ihu(ihu),
            Message::Update(u) => self.update(u),
            Message::AckRequest(r) => {
                self.tlv(r.buffer_len(), |t| r.emit(t));
                Ok(())
            }
            Message::Ack(r) => {
                self.tlv(r.buffer_len(), |t| r.emit(t));
                Ok(())
            }
            Message::RouteRequest(r) => {
                self.tlv(r.buffer_len(), |t| r.emit(t));
                Ok(())
            }
            Message::SeqnoRequest(r) => {
                if r.hop_count == 0 {
                    return Err(BuildError::Invalid("seqno request with hop count 0"));
                }
                self.tlv(r.buffer_len(), |t| r.emit(t));
                Ok(())
            }
        }
    }

    fn hello(&mut self, h: &HelloRepr) -> Result<(), BuildError> {
        if self.state.hello.is_some() {
            return Err(BuildError::Full);
        }
        self.state.hello = Some(h.timestamp.is_some());
        self.tlv(h.buffer_len(), |t| h.emit(t));
        Ok(())
    }

    fn ihu(&mut self, ihu: &IhuRepr) -> Result<(), BuildError> {
        if ihu.timestamp.is_some() && self.state.hello != Some(true) {
            return Err(BuildError::IhuTimestampWithoutHello);
        }
        self.tlv(ihu.buffer_len(), |t| ihu.emit(t));
        Ok(())
    }

    fn update(&mut self, u: &UpdateRepr) -> Result<(), BuildError> {
        if u.metric != INFINITY && u.router_id.is_none() {
            return Err(BuildError::Invalid("finite update without router-id"));
        }
        if u.router_id.is_some_and(|id| !id.is_valid()) {
            return Err(BuildError::Invalid("router-id all zeros or all ones"));
        }
        let interval = duration_to_centis(u.interval).max(1);
        let Some(net) = u.prefix else {
            if u.metric != INFINITY || u.next_hop.is_some() {
                return Err(BuildError::Invalid(
                    "wildcard update must be a retraction without next hop",
                ));
            }
            self.set_router_id(u.router_id)?;
            let tlv = UpdateTlv {
                ae: Ae::Wildcard,
                flags: 0,
                plen: 0,
                omitted: 0,
                interval,
                seqno: u.seqno,
                metric: u.metric,
                prefix: &[],
            };
            self.tlv(tlv.buffer_len(), |t| tlv.emit(t));
            return Ok(());
        };
        let plen = net.prefix_len();
        // The prefix as a masked 128-bit value (IPv4 in the top 32 bits):
        // compared and stored in registers, not byte by byte.
        let bits = match net {
            ipnet::IpNet::V4(n) => u128::from(n.addr().to_bits()) << 96,
            ipnet::IpNet::V6(n) => n.addr().to_bits(),
        } & high_mask(u32::from(plen));
        let bytes = bits.to_be_bytes();
        let ae = self.next_hop(net.addr(), u.next_hop)?;
        let mut flag_bits = 0;
        if u.router_id != self.state.router_id {
            let id = u.router_id;
            if ae == Ae::Ipv6
                && plen == 128
                && id.is_some_and(|id| bits as u64 == u64::from_be_bytes(id.0))
            {
                flag_bits |= flags::ROUTER_ID;
                self.state.router_id = id;
            } else {
                self.set_router_id(id)?;
            }
        }
        // IPv6 only, as babeld: IPv4 prefixes are at most 4 bytes anyway.
        let mut omitted = 0;
        if ae == Ae::Ipv6 {
            let default = self.state.default_v6;
            if default.is_none() || plen >= 48 {
                flag_bits |= flags::DEFAULT_PREFIX;
                self.state.default_v6 = Some(bits);
            }
            // Leading whole bytes shared with the default, at most plen/8.
            omitted = default.map_or(0, |d| {
                let shared = (d ^ bits).leading_zeros() / 8;
                shared.min(u32::from(plen / 8)) as usize
            });
        }
        let tlv = UpdateTlv {
            ae,
            flags: flag_bits,
            plen,
            // At most 16.
            omitted: omitted as u8,
            interval,
            seqno: u.seqno,
            metric: u.metric,
            prefix: &bytes[omitted..prefix_bytes(plen)],
        };
        let proof = u.proof.as_ref().map(OriginProof::as_bytes);
        self.tlv(tlv.buffer_len_with(proof), |t| tlv.emit_with(t, proof));
        Ok(())
    }

    /// Makes `id` the router-id in force, with a Router-Id TLV if needed.
    fn set_router_id(&mut self, id: Option<RouterId>) -> Result<(), BuildError> {
        if id == self.state.router_id {
            return Ok(());
        }
        // The state cannot go back to "no router-id" within a packet.
        let id = id.ok_or(BuildError::Full)?;
        let r = RouterIdRepr { router_id: id };
        self.tlv(r.buffer_len(), |t| r.emit(t));
        self.state.router_id = Some(id);
        Ok(())
    }

    /// Chooses the AE of a prefix and makes its next hop the one in force,
    /// with a Next Hop TLV if needed.
    fn next_hop(&mut self, addr: IpAddr, next_hop: Option<IpAddr>) -> Result<Ae, BuildError> {
        let (ae, slot_is_v4) = match (addr, next_hop) {
            (IpAddr::V6(_), Some(IpAddr::V4(_))) => {
                return Err(BuildError::Invalid("IPv6 prefix with an IPv4 next hop"));
            }
            (IpAddr::V6(_), _) => (Ae::Ipv6, false),
            (IpAddr::V4(_), Some(IpAddr::V4(_))) => (Ae::Ipv4, true),
            (IpAddr::V4(_), Some(IpAddr::V6(_))) => (Ae::Ipv4ViaIpv6, false),
            // The sender as next hop: AE 4 (AE 1 would need an IPv4 one).
            (IpAddr::V4(_), None) => (Ae::Ipv4ViaIpv6, false),
        };
        let current = if slot_is_v4 {
            self.state.next_hop_v4
        } else {
            self.state.next_hop_v6
        };
        if current != next_hop {
            let address = next_hop.ok_or(BuildError::Full)?;
            let r = NextHopRepr { address };
            self.tlv(r.buffer_len(), |t| r.emit(t));
            if slot_is_v4 {
                self.state.next_hop_v4 = next_hop;
            } else {
                self.state.next_hop_v6 = next_hop;
            }
        }
        Ok(ae)
    }
}

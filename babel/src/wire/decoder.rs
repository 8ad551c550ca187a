//! The stateful packet decoder (RFC 8966 §4.5): per-packet parser state
//! applied to the TLVs of one packet body.
//!
//! The state is reset for every packet: a default prefix for each of AE 1,
//! 2 and 4 (set by Updates with flag 0x80, used by `omitted`), the current
//! router-id (Router-Id TLVs, or flag 0x40), and the IPv4 and IPv6 next hops
//! (Next Hop TLVs; absent means the sender's source address).
//!
//! Malformed TLVs follow babeld where the RFC leaves room:
//! * a TLV shorter than its fixed part is skipped and the walk goes on;
//! * a TLV overrunning the body ends the walk;
//! * Router-Id, Next Hop and Update change the state before their sub-TLVs
//!   are checked, so an unknown mandatory sub-TLV ignores the TLV but keeps
//!   its effect on the state;
//! * a Router-Id TLV that is malformed or carries an all-zeros/all-ones id
//!   clears the router-id (the following finite Updates are then rejected
//!   rather than attributed to the previous router);
//! * an Update with flag 0x80 that fails to parse clears the default
//!   prefixes of every AE (as babeld does);
//! * a malformed Next Hop leaves the next hops unchanged (as babeld does);
//! * a finite AE 1 Update with no IPv4 Next Hop before it is refused (as
//!   babeld does: over IPv6 it has no next hop).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::address::{Ae, high_mask, place_bytes, to_net};
use super::update::flags;
use super::{
    AckRepr, AckRequestRepr, HEADER_LEN, Header, HelloRepr, INFINITY, IhuRepr, MAGIC, Message,
    NextHopRepr, OriginProof, ParseError, RouteRequestRepr, RouterId, RouterIdRepr,
    SeqnoRequestRepr, Tlv, TlvIter, TlvType, UpdateRepr, UpdateTlv, VERSION, centis_to_duration,
    subtlv,
};

/// Validates the packet header and bounds the body.
///
/// Rejects a bad magic or version and a body length past the datagram
/// (babeld would clamp it; BIRD drops, and so do we).
pub fn parse_packet(bytes: &[u8]) -> Result<Packet<'_>, ParseError> {
    let header = Header::new_unchecked(bytes);
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        });
    }
    if header.magic() != MAGIC {
        return Err(ParseError::BadMagic(header.magic()));
    }
    if header.version() != VERSION {
        return Err(ParseError::BadVersion(header.version()));
    }
    header.check_len()?;
    let body_end = HEADER_LEN + usize::from(header.body_len());
    Ok(Packet {
        body: &bytes[HEADER_LEN..body_end],
        trailer: &bytes[body_end..],
    })
}

/// A Babel packet whose header has been validated.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    body: &'a [u8],
    trailer: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The decoded messages, in order. See the module docs for error handling.
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            inner: self.decode(),
        }
    }

    /// Every TLV of the body with what it meant, pads and state-only TLVs
    /// included (for tools such as `babel-dump`).
    pub fn decode(&self) -> Decoder<'a> {
        Decoder {
            tlvs: TlvIter::new(self.body),
            state: State::default(),
        }
    }

    /// The body (TLVs).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The trailer: bytes past the body (RFC 8967 MAC TLVs, padding). It is
    /// ignored unless MAC authentication is configured, which we never do.
    pub fn trailer(&self) -> &'a [u8] {
        self.trailer
    }
}

/// What one TLV meant once the packet state was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Element {
    /// Pad1 or PadN.
    Pad,
    /// A Router-Id TLV: the router-id of the following Updates.
    RouterId(RouterId),
    /// A Next Hop TLV: the next hop of the following Updates of its family.
    NextHop(IpAddr),
    /// A message for the engine.
    Message(Message),
}

/// One TLV of a body and its meaning, from [`Packet::decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The TLV type (for an overrun, the type byte that started it).
    pub kind: TlvType,
    /// The TLV's bytes, header included (for an overrun: what remained).
    pub bytes: &'a [u8],
    /// Its meaning, or why it is ignored.
    pub result: Result<Element, ParseError>,
    /// For an Update, the prefix it named once decompressed, even when the
    /// Update is then ignored (an unknown mandatory sub-TLV, say).
    pub prefix: Option<ipnet::IpNet>,
}

/// The per-packet parser state.
#[derive(Clone, Debug, Default)]
struct State {
    /// Default prefixes of AE 1, 2 and 4 (IPv4 in the top 32 bits).
    defaults: [Option<u128>; 3],
    router_id: Option<RouterId>,
    next_hop_v4: Option<Ipv4Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    /// The prefix of the last Update decompressed (for [`Decoded::prefix`]).
    last_prefix: Option<ipnet::IpNet>,
}

/// Walks a body TLV by TLV; see [`Packet::decode`].
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    tlvs: TlvIter<'a>,
    state: State,
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Decoded<'a>;

    fn next(&mut self) -> Option<Decoded<'a>> {
        let remaining = self.tlvs.remaining();
        match self.tlvs.next()? {
            Ok(tlv) => {
                self.state.last_prefix = None;
                let result = self.state.apply(&tlv);
                Some(Decoded {
                    kind: tlv.kind(),
                    bytes: tlv.tlv_bytes(),
                    result,
                    prefix: self.state.last_prefix.take(),
                })
            }
            Err(err) => Some(Decoded {
                kind: remaining
                    .first()
                    .map_or(TlvType::Pad1, |&b| TlvType::from(b)),
                bytes: remaining,
                result: Err(err),
                prefix: None,
            }),
        }
    }
}

impl State {
    fn apply(&mut self, tlv: &Tlv<&[u8]>) -> Result<Element, ParseError> {
        let msg = match tlv.kind() {
            TlvType::Pad1 | TlvType::PadN => return Ok(Element::Pad),
            TlvType::RouterId => return self.router_id(tlv),
            TlvType::NextHop => return self.next_hop(tlv),
            TlvType::Update => Message::Update(self.update(tlv)?),
            TlvType::AckRequest => Message::AckRequest(AckRequestRepr::parse(tlv)?),
            TlvType::Ack => Message::Ack(AckRepr::parse(tlv)?),
            TlvType::Hello => Message::Hello(HelloRepr::parse(tlv)?),
            TlvType::Ihu => Message::Ihu(IhuRepr::parse(tlv)?),
            TlvType::RouteRequest => Message::RouteRequest(RouteRequestRepr::parse(tlv)?),
            TlvType::SeqnoRequest => Message::SeqnoRequest(SeqnoRequestRepr::parse(tlv)?),
            TlvType::Unknown(code) => return Err(ParseError::UnknownTlv(code)),
            other => return Err(ParseError::Unsupported(other)),
        };
        Ok(Element::Message(msg))
    }

    fn router_id(&mut self, tlv: &Tlv<&[u8]>) -> Result<Element, ParseError> {
        match RouterIdRepr::parse_fixed(tlv) {
            Ok((repr, subs)) => {
                self.router_id = Some(repr.router_id);
                subtlv::scan(TlvType::RouterId, subs)?;
                Ok(Element::RouterId(repr.router_id))
            }
            Err(err) => {
                self.router_id = None;
                Err(err)
            }
        }
    }

    fn next_hop(&mut self, tlv: &Tlv<&[u8]>) -> Result<Element, ParseError> {
        let (repr, subs) = NextHopRepr::parse_fixed(tlv)?;
        match repr.address {
            IpAddr::V4(a) => self.next_hop_v4 = Some(a),
            IpAddr::V6(a) => self.next_hop_v6 = Some(a),
        }
        subtlv::scan(TlvType::NextHop, subs)?;
        Ok(Element::NextHop(repr.address))
    }

    fn update(&mut self, tlv: &Tlv<&[u8]>) -> Result<UpdateRepr, ParseError> {
        let sets_default = tlv
            .value()
            .get(1)
            .is_some_and(|f| f & flags::DEFAULT_PREFIX != 0);
        let parsed = UpdateTlv::parse_fixed(tlv).and_then(|(u, subs)| {
            let bytes = self.resolve(&u)?;
            Ok((u, subs, bytes))
        });
        let (u, subs, bytes) = match parsed {
            Ok(ok) => ok,
            Err(err) => {
                if sets_default {
                    self.defaults = [None; 3];
                }
                return Err(err);
            }
        };
        let t = TlvType::Update;
        // AE 0 has no prefix: its flags are meaningless (babeld sets 0x40).
        let slot = u.ae.default_slot();
        if let Some(slot) = slot {
            if u.flags & flags::DEFAULT_PREFIX != 0 {
                self.defaults[slot] = Some(bytes);
            }
            if u.flags & flags::ROUTER_ID != 0 {
                // IPv6: the low 8 bytes; IPv4 (babeld): 4 zeros, the address.
                let id = if u.ae == Ae::Ipv6 {
                    bytes as u64
                } else {
                    (bytes >> 96) as u64
                };
                let id = RouterId(id.to_be_bytes());
                if !id.is_valid() {
                    self.router_id = None;
                    return Err(ParseError::BadRouterId(id.0));
                }
                self.router_id = Some(id);
            }
        }
        let prefix = to_net(u.ae, bytes, u.plen);
        self.last_prefix = prefix;
        if u.interval == 0 {
            return Err(ParseError::ZeroInterval(t));
        }
        let found = subtlv::scan_all(t, subs)?;
        if u.metric != INFINITY && self.router_id.is_none() {
            return Err(ParseError::MissingRouterId);
        }
        let next_hop = match u.ae {
            Ae::Ipv4 if self.next_hop_v4.is_none() && u.metric != INFINITY => {
                return Err(ParseError::MissingIpv4NextHop);
            }
            Ae::Ipv4 => self.next_hop_v4.map(IpAddr::V4),
            Ae::Ipv6 | Ae::Ipv4ViaIpv6 => self.next_hop_v6.map(IpAddr::V6),
            _ => None,
        };
        Ok(UpdateRepr {
            prefix,
            interval: centis_to_duration(u.interval),
            seqno: u.seqno,
            metric: u.metric,
            router_id: self.router_id,
            next_hop,
            proof: found.proof.and_then(OriginProof::new),
        })
    }

    /// The full prefix of an Update: `omitted` bytes of the AE's default
    /// prefix, then the transmitted ones, masked to plen.
    fn resolve(&self, u: &UpdateTlv<'_>) -> Result<u128, ParseError> {
        let omitted = usize::from(u.omitted);
        let mut bits = 0;
        if omitted > 0 {
            let default =
                u.ae.default_slot()
                    .and_then(|slot| self.defaults[slot])
                    .ok_or(ParseError::NoDefaultPrefix { ae: u.ae.into() })?;
            // omitted ≤ 16 (checked against plen).
            bits = default & high_mask(8 * u32::from(u.omitted));
        }
        bits |= place_bytes(u.prefix, omitted);
        Ok(bits & high_mask(u32::from(u.plen)))
    }
}

/// Iterator over the messages of a packet; see [`Packet::messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    inner: Decoder<'a>,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The same walk as `Decoder::next`, without building `Decoded`s.
        loop {
            let result = match self.inner.tlvs.next()? {
                Ok(tlv) => self.inner.state.apply(&tlv),
                Err(err) => Err(err),
            };
            match result {
                Ok(Element::Message(msg)) => return Some(Ok(msg)),
                Ok(_) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

//! The peer-exchange message and the IPv6/UDP packet that carries it.
//!
//! Peer exchange reaches *any* node of the routing table, not just tunnel
//! neighbours (report §6), so it travels as an ordinary IPv6 packet over
//! the overlay: UDP from the sender's overlay address to the receiver's
//! (`prefix::1`), port [`PORT`] both ways, forwarded hop by hop like any
//! packet. The destination node takes it out of the packet path before
//! local delivery, so it works with or without a TUN, and a relay node
//! never looks inside. Nothing here needs to be trusted: the announcement is
//! signed and verified against the CA before it is stored.
//!
//! # Wire format (UDP payload)
//!
//! ```text
//! message  = "r6" version:u8 (=1) type:u8 body
//! type 1, Announce:
//!   flags:u8         bit 0: the receiver should answer with its own
//!   payload:u16be-len bytes   the announcement JSON, exactly as signed
//!   signature:u16be-len bytes the raw signature
//!   certificate:u16be-len bytes the signer's certificate, DER
//! other types: ignored (a newer sender)
//! ```
//!
//! Parsing is total (fuzz target `exchange_message`).

use std::net::Ipv6Addr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::identity::SignedAnnouncement;

/// UDP port of peer exchange (re6stnet's peer protocol port).
pub const PORT: u16 = 326;

/// First bytes of every message.
pub const MAGIC: [u8; 2] = *b"r6";

/// Protocol version.
pub const VERSION: u8 = 1;

/// Largest message accepted or built: well inside one overlay packet.
pub const MAX_MESSAGE: usize = 4096;

const TYPE_ANNOUNCE: u8 = 1;
const FLAG_REPLY: u8 = 1;

/// UDP next-header value.
const UDP: u8 = 17;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;

/// One peer-exchange message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeMessage {
    /// "Here is how to reach me."
    Announce {
        /// The receiver should answer with its own announcement.
        reply: bool,
        /// The signed announcement (verify before use).
        signed: SignedAnnouncement,
    },
    /// A type this version does not know.
    Unknown(u8),
}

/// Why a message or packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// Shorter than the fixed header, or a field runs past the end.
    #[error("peer-exchange message truncated at {0} bytes")]
    Truncated(usize),
    /// Not our magic.
    #[error("not a peer-exchange message (bad magic)")]
    BadMagic,
    /// A version we do not speak.
    #[error("peer-exchange version {0} not supported")]
    BadVersion(u8),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the message")]
    TrailingData(usize),
    /// The payload is not UTF-8 JSON text.
    #[error("announcement payload is not UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_MESSAGE`] (or a field longer than 64 KiB).
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
    /// Our own announcement holds a signature or certificate that is not
    /// base64 (a bug, never a peer's fault).
    #[error("announcement fields are not base64")]
    BadBase64,
    /// The UDP length or checksum is wrong.
    #[error("bad UDP header or checksum")]
    BadUdp,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ExchangeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(ExchangeError::Truncated(self.buf.len()))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ExchangeError> {
        Ok(self.take(1)?[0])
    }

    fn field(&mut self) -> Result<&'a [u8], ExchangeError> {
        let l = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([l[0], l[1]])))
    }
}

fn push_field(out: &mut Vec<u8>, f: &[u8]) -> Result<(), ExchangeError> {
    let len = u16::try_from(f.len()).map_err(|_| ExchangeError::TooLarge(f.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(f);
    Ok(())
}

impl ExchangeMessage {
    /// Parses a UDP payload.
    pub fn parse(msg: &[u8]) -> Result<Self, ExchangeError> {
        if msg.len() > MAX_MESSAGE {
            return Err(ExchangeError::TooLarge(msg.len()));
        }
        let mut r = Reader { buf: msg, at: 0 };
        if r.take(2)? != MAGIC {
            return Err(ExchangeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(ExchangeError::BadVersion(version));
        }
        let m = match r.u8()? {
            TYPE_ANNOUNCE => {
                let flags = r.u8()?;
                let payload = std::str::from_utf8(r.field()?)
                    .map_err(|_| ExchangeError::NotUtf8)?
                    .to_string();
                let signature = B64.encode(r.field()?);
                let certificate = B64.encode(r.field()?);
                ExchangeMessage::Announce {
                    reply: flags & FLAG_REPLY != 0,
                    signed: SignedAnnouncement {
                        payload,
                        signature,
                        certificate,
                    },
                }
            }
            other => return Ok(ExchangeMessage::Unknown(other)),
        };
        if r.at != msg.len() {
            return Err(ExchangeError::TrailingData(msg.len() - r.at));
        }
        Ok(m)
    }

    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), ExchangeError> {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        match self {
            ExchangeMessage::Announce { reply, signed } => {
                out.push(TYPE_ANNOUNCE);
                out.push(if *reply { FLAG_REPLY } else { 0 });
                push_field(out, signed.payload.as_bytes())?;
                let sig = B64
                    .decode(&signed.signature)
                    .map_err(|_| ExchangeError::BadBase64)?;
                push_field(out, &sig)?;
                let cert = B64
                    .decode(&signed.certificate)
                    .map_err(|_| ExchangeError::BadBase64)?;
                push_field(out, &cert)?;
            }
            ExchangeMessage::Unknown(t) => out.push(*t),
        }
        let len = out.len() - start;
        if len > MAX_MESSAGE {
            out.truncate(start);
            return Err(ExchangeError::TooLarge(len));
        }
        Ok(())
    }
}

/// The UDP checksum (RFC 8200 section 8.1 pseudo-header) of `segment`
/// (header and data, its checksum field included as found).
fn udp_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        }
        if let [last] = chunks.remainder() {
            sum = sum.wrapping_add(u32::from(*last) << 8);
        }
        // Fold early so the 32-bit sum never overflows (segments < 64 KiB).
        sum = (sum & 0xffff) + (sum >> 16);
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(segment.len() as u32).to_be_bytes());
    add(&[0, 0, 0, UDP]);
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds the IPv6/UDP packet carrying `message` from `src` to `dst`.
pub fn build_packet(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HEADER + message.len();
    let mut p = Vec::with_capacity(IPV6_HEADER + udp_len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.push(UDP);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&PORT.to_be_bytes());
    p.extend_from_slice(&PORT.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(message);
    let sum = match udp_checksum(&src, &dst, &p[IPV6_HEADER..]) {
        0 => 0xffff,
        s => s,
    };
    p[IPV6_HEADER + 6..IPV6_HEADER + 8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// If `packet` (a valid IPv6 packet for one of our prefixes, as the
/// forwarder delivers it) is peer exchange for `me`, returns its source and
/// UDP payload; `Ok(None)` if it is ordinary traffic for the host.
pub fn match_packet(
    packet: &[u8],
    me: Ipv6Addr,
) -> Result<Option<(Ipv6Addr, &[u8])>, ExchangeError> {
    // Cheap tests first: this runs on every packet delivered locally.
    if packet.len() < IPV6_HEADER + UDP_HEADER
        || packet[6] != UDP
        || packet[24..40] != me.octets()
        || packet[IPV6_HEADER + 2..IPV6_HEADER + 4] != PORT.to_be_bytes()
    {
        return Ok(None);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&packet[8..24]);
    let src = Ipv6Addr::from(src);
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let segment = packet
        .get(IPV6_HEADER..IPV6_HEADER + payload_len)
        .filter(|s| s.len() >= UDP_HEADER)
        .ok_or(ExchangeError::BadUdp)?;
    let udp_len = usize::from(u16::from_be_bytes([segment[4], segment[5]]));
    if udp_len != segment.len() {
        return Err(ExchangeError::BadUdp);
    }
    let sum = u16::from_be_bytes([segment[6], segment[7]]);
    if sum == 0 || udp_checksum(&src, &me, segment) != 0 {
        return Err(ExchangeError::BadUdp);
    }
    Ok(Some((src, &segment[UDP_HEADER..])))
}

/// Fuzzing entry (fuzz target `exchange_message`): parse a UDP payload and,
/// if it parses, emit it and parse again to the same message; also try it
/// as a whole IPv6 packet.
pub fn fuzz(data: &[u8]) {
    if let Ok(m) = ExchangeMessage::parse(data) {
        let mut out = Vec::new();
        if m.emit(&mut out).is_ok() {
            assert_eq!(ExchangeMessage::parse(&out), Ok(m));
        }
    }
    let me = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let _ = match_packet(data, me);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExchangeMessage {
        ExchangeMessage::Announce {
            reply: true,
            signed: SignedAnnouncement {
                payload: r#"{"prefix":"fd00::/64"}"#.into(),
                signature: B64.encode([1u8, 2, 3]),
                certificate: B64.encode([0x30u8, 0x00]),
            },
        }
    }

    #[test]
    fn roundtrip_and_bytes() {
        let m = sample();
        let mut out = Vec::new();
        m.emit(&mut out).unwrap();
        assert_eq!(&out[..6], b"r6\x01\x01\x01\x00");
        assert_eq!(ExchangeMessage::parse(&out).unwrap(), m);
        let mut u = Vec::new();
        ExchangeMessage::Unknown(9).emit(&mut u).unwrap();
        assert_eq!(
            ExchangeMessage::parse(&u).unwrap(),
            ExchangeMessage::Unknown(9)
        );
    }

    #[test]
    fn bad_messages_are_typed() {
        let mut out = Vec::new();
        sample().emit(&mut out).unwrap();
        assert_eq!(
            ExchangeMessage::parse(b"r"),
            Err(ExchangeError::Truncated(1))
        );
        assert_eq!(
            ExchangeMessage::parse(b"xx\x01\x01"),
            Err(ExchangeError::BadMagic)
        );
        assert_eq!(
            ExchangeMessage::parse(b"r6\x02\x01"),
            Err(ExchangeError::BadVersion(2))
        );
        for cut in 4..out.len() {
            assert!(ExchangeMessage::parse(&out[..cut]).is_err(), "cut {cut}");
        }
        let mut long = out.clone();
        long.push(0);
        assert_eq!(
            ExchangeMessage::parse(&long),
            Err(ExchangeError::TrailingData(1))
        );
        let mut bad_utf8 = b"r6\x01\x01\x00\x00\x01\xff".to_vec();
        bad_utf8.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            ExchangeMessage::parse(&bad_utf8),
            Err(ExchangeError::NotUtf8)
        );
        assert_eq!(
            ExchangeMessage::parse(&vec![0; MAX_MESSAGE + 1]),
            Err(ExchangeError::TooLarge(MAX_MESSAGE + 1))
        );
    }

    #[test]
    fn packets_are_recognised_and_checked() {
        let a: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:2::1".parse().unwrap();
        let p = build_packet(a, b, b"hello");
        assert_eq!(p.len(), 40 + 8 + 5);
        assert_eq!(match_packet(&p, b).unwrap(), Some((a, &b"hello"[..])));
        // Another address of ours, or another port: ordinary traffic.
        assert_eq!(match_packet(&p, a).unwrap(), None);
        let mut other = p.clone();
        other[42] = 0x12;
        assert_eq!(match_packet(&other, b).unwrap(), None);
        // A flipped bit fails the checksum.
        let mut bad = p.clone();
        bad[50] ^= 1;
        assert_eq!(match_packet(&bad, b), Err(ExchangeError::BadUdp));
        // The checksum field, against a value computed independently (a
        // Python one-liner over the RFC 8200 pseudo-header).
        assert_eq!(&p[46..48], &0xbf6fu16.to_be_bytes());
        // A payload length too short for the UDP header, or past the end.
        let mut short = p.clone();
        short[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(match_packet(&short, b), Err(ExchangeError::BadUdp));
        let mut past = p.clone();
        past[4..6].copy_from_slice(&999u16.to_be_bytes());
        assert_eq!(match_packet(&past, b), Err(ExchangeError::BadUdp));
        // Odd lengths are padded.
        let q = build_packet(a, b, b"odd");
        assert!(match_packet(&q, b).unwrap().is_some());
    }
}

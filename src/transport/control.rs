//! The control stream of a tunnel: the one reliable, ordered channel of a
//! QUIC connection between two nodes (docs/design.md: what must arrive
//! goes on a stream, packets as datagrams).
//!
//! The dialler opens one bidirectional stream right after the handshake and
//! sends [`Control::Open`]. The acceptor asks its tunnel policy and answers
//! [`Control::Accept`], or closes the connection with a refusal code (see
//! [`close`]) and the reason as text, so the dialler can report it and try
//! another peer. Afterwards either side may send [`Control::Crl`] (a newer
//! CRL, which floods through the overlay); the dialler sends
//! [`Control::Drain`] when its refresh replaces the tunnel (move routes away
//! from it), and the acceptor answers [`Control::Drained`] once nothing of
//! its own is routed through it. Either side may send [`Control::WantCerts`]
//! (the router-ids of route origins it has no certificate for, learnt from
//! Updates this neighbour relayed) and is answered [`Control::Certs`] with
//! those the neighbour holds: every node that accepted a route holds its
//! origin's certificate, so the certificate follows the route.
//!
//! # Wire format
//!
//! ```text
//! frame   = length:u32be (1..=MAX_FRAME) message
//! message = type:u8 body
//!   0x01 Open    version:u8 crl_number:u64be
//!   0x02 Accept  crl_number:u64be observed:addr
//!   0x03 Crl     der:bytes (the rest of the frame)
//!   0x04 Drain   (empty)
//!   0x05 Drained (empty)
//!   0x06 WantCerts count:u8 (1..=MAX_WANT_CERTS) router-id:[8]*count
//!   0x07 Certs   (length:u16be der:[length])* (at most MAX_CERTS)
//!   other        ignored (a newer peer), counted
//! addr    = 4:u8 ipv4:[4] port:u16be | 6:u8 ipv6:[16] port:u16be
//! ```
//!
//! Parsing is total: every byte string yields a [`Control`] or a
//! [`ControlError`]; nothing panics (the fuzz target `control_frame` checks
//! it, and that `parse(emit(m)) == m`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use re6st_babel::wire::RouterId;

/// Version of the control protocol we speak.
pub const VERSION: u8 = 1;

/// Largest control frame (a CRL of a big network fits easily).
pub const MAX_FRAME: usize = 256 * 1024;

/// Router-ids one [`Control::WantCerts`] asks for, at most.
pub const MAX_WANT_CERTS: usize = 32;

/// Certificates one [`Control::Certs`] carries, at most.
pub const MAX_CERTS: usize = MAX_WANT_CERTS;

/// QUIC application close codes used between nodes. The reason bytes carry
/// the human-readable text.
pub mod close {
    /// A normal close (shutdown, replaced tunnel, duplicate resolved).
    pub const DONE: u32 = 0;
    /// Refused: the acceptor has its maximum number of tunnels.
    pub const REFUSED_FULL: u32 = 1;
    /// Refused: the two nodes already have a tunnel, the other one stays.
    pub const REFUSED_DUPLICATE: u32 = 2;
    /// Refused: the dialler is the acceptor itself.
    pub const REFUSED_LOOPBACK: u32 = 3;
    /// The peer's certificate is revoked (or became so).
    pub const REVOKED: u32 = 4;
    /// The peer broke the control protocol.
    pub const PROTOCOL: u32 = 5;
    /// The peer's certificate is not acceptable (not a node certificate,
    /// not the expected node, expired).
    pub const BAD_PEER: u32 = 6;
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 7;
    /// The policy replaced this tunnel (after draining it).
    pub const REPLACED: u32 = 8;
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Dialler to acceptor, first message: "be my tunnel".
    Open {
        /// The dialler's control protocol version.
        version: u8,
        /// Number of the dialler's CRL (0: none), so a node with a newer
        /// one can push it.
        crl_number: u64,
    },
    /// Acceptor to dialler: accepted.
    Accept {
        /// Number of the acceptor's CRL.
        crl_number: u64,
        /// The dialler's UDP address as the acceptor sees it (what it
        /// should announce when it is behind a NAT or bound to `[::]`).
        observed: SocketAddr,
    },
    /// A CRL (DER), sent when the peer's is older than ours.
    Crl(Bytes),
    /// The sender is removing this tunnel: move routes away from it (raise
    /// its cost); it closes the connection once both ends have.
    Drain,
    /// The answer to `Drain`: nothing of the sender's is routed through
    /// this tunnel any more.
    Drained,
    /// "Send me the certificates of these route origins" (1 to
    /// [`MAX_WANT_CERTS`] router-ids).
    WantCerts(Vec<RouterId>),
    /// Node certificates (DER, each under 64 KiB; at most [`MAX_CERTS`]),
    /// the answer to `WantCerts`. The receiver checks each against the CA
    /// and the CRL.
    Certs(Vec<Bytes>),
    /// A message type this version does not know (ignored).
    Unknown(u8),
}

/// Why a control frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The frame is empty (no type byte).
    #[error("empty control frame")]
    Empty,
    /// The frame length prefix is 0 or above [`MAX_FRAME`].
    #[error("control frame length {0} out of range (1..={MAX_FRAME})")]
    BadLength(usize),
    /// The body is shorter than its type needs.
    #[error("control message type {kind:#04x} truncated: {len} bytes, needs {min}")]
    Truncated {
        /// Message type.
        kind: u8,
        /// Body length.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// The body is longer than its type allows.
    #[error("control message type {kind:#04x} has {extra} trailing bytes")]
    TrailingData {
        /// Message type.
        kind: u8,
        /// Bytes after the message.
        extra: usize,
    },
    /// An address family byte other than 4 or 6.
    #[error("bad address family {0}")]
    BadFamily(u8),
    /// A list of router-ids or certificates that is empty or too long.
    #[error("control message type {kind:#04x} carries {count} items (1..={max})")]
    BadCount {
        /// Message type.
        kind: u8,
        /// Items found.
        count: usize,
        /// Items allowed.
        max: usize,
    },
}

mod kind {
    pub const OPEN: u8 = 0x01;
    pub const ACCEPT: u8 = 0x02;
    pub const CRL: u8 = 0x03;
    pub const DRAIN: u8 = 0x04;
    pub const DRAINED: u8 = 0x05;
    pub const WANT_CERTS: u8 = 0x06;
    pub const CERTS: u8 = 0x07;
}

/// A bounds-checked reader over a message body (rustls' `Reader` idea).
struct Reader<'a> {
    kind: u8,
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.body.len());
        let Some(end) = end else {
            return Err(ControlError::Truncated {
                kind: self.kind,
                len: self.body.len(),
                min: self.at.saturating_add(n),
            });
        };
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ControlError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn left(&self) -> usize {
        self.body.len() - self.at
    }

    fn u64(&mut self) -> Result<u64, ControlError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn addr(&mut self) -> Result<SocketAddr, ControlError> {
        let ip = match self.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            f => return Err(ControlError::BadFamily(f)),
        };
        let p = self.take(2)?;
        Ok(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])))
    }

    /// Rejects bytes left over.
    fn finish(self) -> Result<(), ControlError> {
        if self.at == self.body.len() {
            Ok(())
        } else {
            Err(ControlError::TrailingData {
                kind: self.kind,
                extra: self.body.len() - self.at,
            })
        }
    }
}

fn emit_addr(a: &SocketAddr, out: &mut Vec<u8>) {
    match a.ip() {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

impl Control {
    /// Parses one message (a frame without its length prefix).
    pub fn parse(message: &[u8]) -> Result<Self, ControlError> {
        let Some((&kind, body)) = message.split_first() else {
            return Err(ControlError::Empty);
        };
        let mut r = Reader { kind, body, at: 0 };
        let m = match kind {
            kind::OPEN => Control::Open {
                version: r.u8()?,
                crl_number: r.u64()?,
            },
            kind::ACCEPT => Control::Accept {
                crl_number: r.u64()?,
                observed: r.addr()?,
            },
            kind::CRL => {
                let der = r.take(body.len())?;
                Control::Crl(Bytes::copy_from_slice(der))
            }
            kind::DRAIN => Control::Drain,
            kind::DRAINED => Control::Drained,
            kind::WANT_CERTS => {
                let count = usize::from(r.u8()?);
                if count == 0 || count > MAX_WANT_CERTS {
                    return Err(ControlError::BadCount {
                        kind,
                        count,
                        max: MAX_WANT_CERTS,
                    });
                }
                let mut rids = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut id = [0u8; 8];
                    id.copy_from_slice(r.take(8)?);
                    rids.push(RouterId(id));
                }
                Control::WantCerts(rids)
            }
            kind::CERTS => {
                let mut certs = Vec::new();
                while r.left() > 0 {
                    if certs.len() == MAX_CERTS {
                        return Err(ControlError::BadCount {
                            kind,
                            count: certs.len() + 1,
                            max: MAX_CERTS,
                        });
                    }
                    let len = usize::from(r.u16()?);
                    certs.push(Bytes::copy_from_slice(r.take(len)?));
                }
                Control::Certs(certs)
            }
            other => return Ok(Control::Unknown(other)),
        };
        r.finish()?;
        Ok(m)
    }

    /// Appends the whole frame (length prefix included) to `out`.
    /// `Unknown` emits an empty message of that type (tests only need it).
    pub fn emit_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Control::Open {
                version,
                crl_number,
            } => {
                out.push(kind::OPEN);
                out.push(*version);
                out.extend_from_slice(&crl_number.to_be_bytes());
            }
            Control::Accept {
                crl_number,
                observed,
            } => {
                out.push(kind::ACCEPT);
                out.extend_from_slice(&crl_number.to_be_bytes());
                emit_addr(observed, out);
            }
            Control::Crl(der) => {
                out.push(kind::CRL);
                out.extend_from_slice(der);
            }
            Control::Drain => out.push(kind::DRAIN),
            Control::Drained => out.push(kind::DRAINED),
            Control::WantCerts(rids) => {
                // Callers send at most MAX_WANT_CERTS; more are cut.
                let rids = &rids[..rids.len().min(MAX_WANT_CERTS)];
                out.push(kind::WANT_CERTS);
                out.push(rids.len() as u8);
                for r in rids {
                    out.extend_from_slice(&r.0);
                }
            }
            Control::Certs(certs) => {
                out.push(kind::CERTS);
                // Callers send at most MAX_CERTS, each under 64 KiB; the
                // others are left out.
                for der in certs
                    .iter()
                    .filter(|d| d.len() <= usize::from(u16::MAX))
                    .take(MAX_CERTS)
                {
                    out.extend_from_slice(&(der.len() as u16).to_be_bytes());
                    out.extend_from_slice(der);
                }
            }
            Control::Unknown(k) => out.push(*k),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Checks a frame length prefix.
    pub fn check_length(len: u32) -> Result<usize, ControlError> {
        let len = len as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(ControlError::BadLength(len));
        }
        Ok(len)
    }
}

/// Splits complete frames off the front of a byte stream (for the fuzz
/// target and tests; the node reads frames with [`read`]).
pub fn split_frames(mut stream: &[u8]) -> Vec<Result<Control, ControlError>> {
    let mut out = Vec::new();
    while stream.len() >= 4 {
        let len = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]);
        let len = match Control::check_length(len) {
            Ok(l) => l,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let Some(frame) = stream.get(4..4 + len) else {
            break;
        };
        out.push(Control::parse(frame));
        stream = &stream[4 + len..];
    }
    out
}

/// Why reading the control stream stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer sent a bad frame.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The stream or connection failed.
    #[error("control stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing failed.
    #[error("control stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// Opening or accepting the stream failed.
    #[error("control stream: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// Reads one frame from `recv` into `buf` (reused) and parses it. `Ok(None)`
/// is a clean end of stream.
pub async fn read(
    recv: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Control>, StreamError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = Control::check_length(u32::from_be_bytes(len))?;
    buf.clear();
    buf.resize(len, 0);
    recv.read_exact(buf).await?;
    Ok(Some(Control::parse(buf)?))
}

/// Writes one message.
pub async fn write(send: &mut quinn::SendStream, message: &Control) -> Result<(), StreamError> {
    let mut buf = Vec::with_capacity(32);
    message.emit_frame(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}

/// Fuzzing entry (fuzz target `control_frame`): split a byte stream into
/// frames; every frame that parses must emit the same bytes back.
pub fn fuzz(data: &[u8]) {
    for m in split_frames(data).into_iter().flatten() {
        let mut out = Vec::new();
        m.emit_frame(&mut out);
        assert_eq!(split_frames(&out), vec![Ok(m)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Control) {
        let mut out = Vec::new();
        m.emit_frame(&mut out);
        let frames = split_frames(&out);
        assert_eq!(frames, vec![Ok(m)]);
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Control::Open {
            version: 1,
            crl_number: 0x0102_0304_0506_0708,
        });
        roundtrip(Control::Accept {
            crl_number: 9,
            observed: "192.0.2.7:4433".parse().unwrap(),
        });
        roundtrip(Control::Accept {
            crl_number: 0,
            observed: "[2001:db8::1]:1".parse().unwrap(),
        });
        roundtrip(Control::Crl(Bytes::from_static(b"\x30\x03\x02\x01\x00")));
        roundtrip(Control::Drain);
        roundtrip(Control::Drained);
        roundtrip(Control::Unknown(0x7f));
        roundtrip(Control::WantCerts(vec![RouterId([1; 8]), RouterId([2; 8])]));
        roundtrip(Control::Certs(vec![]));
        roundtrip(Control::Certs(vec![
            Bytes::from_static(b"\x30\x00"),
            Bytes::new(),
        ]));
    }

    #[test]
    fn certificate_lists_are_bounded() {
        assert_eq!(
            Control::parse(&[0x06, 0]),
            Err(ControlError::BadCount {
                kind: 6,
                count: 0,
                max: MAX_WANT_CERTS
            })
        );
        let mut many = vec![0x06, 33];
        many.extend_from_slice(&[1; 33 * 8]);
        assert!(matches!(
            Control::parse(&many),
            Err(ControlError::BadCount { count: 33, .. })
        ));
        assert!(matches!(
            Control::parse(&[0x06, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(ControlError::Truncated { .. })
        ));
        // A length running past the frame, a lone length byte.
        assert!(matches!(
            Control::parse(&[0x07, 0, 5, 1, 2]),
            Err(ControlError::Truncated { .. })
        ));
        assert!(matches!(
            Control::parse(&[0x07, 0]),
            Err(ControlError::Truncated { .. })
        ));
        let mut certs = vec![0x07];
        for _ in 0..=MAX_CERTS {
            certs.extend_from_slice(&[0, 1, 0x30]);
        }
        assert!(matches!(
            Control::parse(&certs),
            Err(ControlError::BadCount { .. })
        ));
    }

    #[test]
    fn open_bytes() {
        let mut out = Vec::new();
        Control::Open {
            version: 1,
            crl_number: 5,
        }
        .emit_frame(&mut out);
        assert_eq!(out, [0, 0, 0, 10, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn bad_input_is_typed() {
        assert_eq!(Control::parse(&[]), Err(ControlError::Empty));
        assert_eq!(
            Control::parse(&[0x01, 1, 0, 0]),
            Err(ControlError::Truncated {
                kind: 1,
                len: 3,
                min: 9
            })
        );
        assert_eq!(
            Control::parse(&[0x04, 0]),
            Err(ControlError::TrailingData { kind: 4, extra: 1 })
        );
        let mut accept = vec![0x02];
        accept.extend_from_slice(&[0; 8]);
        accept.push(5);
        assert_eq!(Control::parse(&accept), Err(ControlError::BadFamily(5)));
        assert_eq!(
            split_frames(&[0, 0, 0, 0]),
            vec![Err(ControlError::BadLength(0))]
        );
        assert_eq!(
            split_frames(&[0xff, 0, 0, 0]),
            vec![Err(ControlError::BadLength(0xff00_0000))]
        );
        // An incomplete frame is not an error: more bytes may come.
        assert_eq!(split_frames(&[0, 0, 0, 9, 1]), vec![]);
    }
}

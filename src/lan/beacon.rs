//! The LAN beacon: "node `prefix` (this certificate) listens for QUIC on
//! UDP port `port` at the link-local address this came from", signed by
//! the node's key.
//!
//! # Wire format (one UDP datagram, at most [`MAX_LEN`] bytes)
//!
//! ```text
//! 0      8        9      10       12          20         22
//! +------+--------+------+--------+-----------+----------+------//-----+---------+---//---+
//! |magic |version | flags| port   | timestamp | cert_len | cert (DER)  | sig_len | sig     |
//! |8 B   |1 (=1)  | 0    | u16 BE | u64 BE s  | u16 BE   | cert_len B  | u16 BE  | sig_len |
//! +------+--------+------+--------+-----------+----------+------//-----+---------+---//---+
//! ```
//!
//! `magic` is `re6st-lb`; `timestamp` is UNIX seconds; the signature (the
//! certificate key's) covers `re6st lan beacon v1\0` followed by every byte
//! before `sig_len`. Unknown flags are ignored (a newer sender); a newer
//! version is refused. Parsing is total: every byte string gives a
//! [`BeaconRepr`] or a [`BeaconError`], never a panic (fuzz target
//! `lan_beacon`).

use std::time::{Duration, SystemTime};

use crate::identity::tls::CaVerifier;
use crate::identity::{IdentityError, NodeCert, NodeKey, unix_secs};

/// First bytes of every beacon.
pub const MAGIC: &[u8; 8] = b"re6st-lb";
/// The version we speak.
pub const VERSION: u8 = 1;
/// Largest beacon: it must fit an IPv6 minimum-MTU packet (1280 - 40 - 8).
pub const MAX_LEN: usize = 1232;
/// Largest signature accepted (ECDSA P-384 DER is at most 104 bytes).
pub const MAX_SIG: usize = 128;
/// How far a timestamp may be from our clock (either way): beacons are
/// fresh, and clocks of machines on one LAN roughly agree.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

const HEADER: usize = 22;
const SIGNING_CONTEXT: &[u8] = b"re6st lan beacon v1\0";

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 9;
    pub const PORT: Range<usize> = 10..12;
    pub const TIMESTAMP: Range<usize> = 12..20;
    pub const CERT_LEN: Range<usize> = 20..22;
}

/// Why a beacon was dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeaconError {
    /// Shorter than its header or than its length fields say.
    #[error("beacon truncated: {len} bytes, needs {min}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// Longer than [`MAX_LEN`].
    #[error("beacon of {0} bytes is too long (max {MAX_LEN})")]
    TooLong(usize),
    /// Not a re6st beacon.
    #[error("not a re6st LAN beacon (bad magic)")]
    BadMagic,
    /// A version we do not speak.
    #[error("beacon version {0} is not supported (we speak {VERSION})")]
    UnsupportedVersion(u8),
    /// Bytes after the signature.
    #[error("{0} trailing bytes after the beacon")]
    TrailingData(usize),
    /// A zero port or a signature longer than [`MAX_SIG`].
    #[error("bad beacon field {0}")]
    BadField(&'static str),
    /// The certificate does not parse, chain to the CA, or is revoked or
    /// expired.
    #[error("beacon certificate refused: {0}")]
    Certificate(#[source] IdentityError),
    /// The signature is not the certificate key's.
    #[error("bad beacon signature")]
    BadSignature,
    /// The timestamp is too far from our clock.
    #[error("beacon timestamp {timestamp} is {skew:?} away from our clock")]
    Stale {
        /// The beacon's timestamp.
        timestamp: u64,
        /// How far.
        skew: Duration,
    },
}

/// A parsed (not yet verified) beacon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconRepr {
    /// Flags: none defined yet (sent as 0, kept as received: they are
    /// signed).
    pub flags: u8,
    /// The sender's QUIC port.
    pub port: u16,
    /// When it was made (UNIX seconds).
    pub timestamp: u64,
    /// The sender's certificate (DER).
    pub cert_der: Vec<u8>,
    /// The sender's signature.
    pub signature: Vec<u8>,
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

impl BeaconRepr {
    /// Parses a datagram (checks lengths and fields, not the signature).
    pub fn parse(b: &[u8]) -> Result<Self, BeaconError> {
        if b.len() > MAX_LEN {
            return Err(BeaconError::TooLong(b.len()));
        }
        if b.len() < HEADER {
            return Err(BeaconError::Truncated {
                len: b.len(),
                min: HEADER,
            });
        }
        if &b[field::MAGIC] != MAGIC {
            return Err(BeaconError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(BeaconError::UnsupportedVersion(b[field::VERSION]));
        }
        let port = u16::from_be_bytes([b[field::PORT.start], b[field::PORT.start + 1]]);
        if port == 0 {
            return Err(BeaconError::BadField("port 0"));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[field::TIMESTAMP]);
        let cert_end = HEADER + be16(&b[field::CERT_LEN]);
        let sig_at = cert_end + 2;
        if b.len() < sig_at {
            return Err(BeaconError::Truncated {
                len: b.len(),
                min: sig_at,
            });
        }
        let sig_len = be16(&b[cert_end..sig_at]);
        if sig_len > MAX_SIG {
            return Err(BeaconError::BadField("signature length"));
        }
        let end = sig_at + sig_len;
        if b.len() < end {
            return Err(BeaconError::Truncated {
                len: b.len(),
                min: end,
            });
        }
        if b.len() > end {
            return Err(BeaconError::TrailingData(b.len() - end));
        }
        Ok(Self {
            flags: b[field::FLAGS],
            port,
            timestamp: u64::from_be_bytes(ts),
            cert_der: b[HEADER..cert_end].to_vec(),
            signature: b[sig_at..end].to_vec(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        HEADER + self.cert_der.len() + 2 + self.signature.len()
    }

    /// Appends the encoding to `out`. The caller keeps the certificate and
    /// signature within the limits ([`BeaconRepr::sign`] does).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.flags);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&len16(self.cert_der.len()).to_be_bytes());
        out.extend_from_slice(&self.cert_der);
        out.extend_from_slice(&len16(self.signature.len()).to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// The bytes the signature covers.
    fn signed_message(&self) -> Vec<u8> {
        let mut m = SIGNING_CONTEXT.to_vec();
        let mut b = Vec::with_capacity(self.buffer_len());
        self.emit(&mut b);
        m.extend_from_slice(&b[..HEADER + self.cert_der.len()]);
        m
    }

    /// Our beacon: `port` at `now`, signed with `key`.
    pub fn sign(
        port: u16,
        now: SystemTime,
        cert: &NodeCert,
        key: &NodeKey,
    ) -> Result<Vec<u8>, IdentityError> {
        let mut repr = Self {
            flags: 0,
            port,
            timestamp: unix_secs(now),
            cert_der: cert.der.clone(),
            signature: Vec::new(),
        };
        repr.signature = key.sign(&repr.signed_message())?;
        if repr.buffer_len() > MAX_LEN || repr.signature.len() > MAX_SIG {
            return Err(IdentityError::Internal(format!(
                "a beacon of {} bytes does not fit {MAX_LEN}",
                repr.buffer_len()
            )));
        }
        let mut out = Vec::with_capacity(repr.buffer_len());
        repr.emit(&mut out);
        Ok(out)
    }

    /// Checks the certificate against the CA and CRL (`verifier`), the
    /// signature and the timestamp at `now`; returns the sender's
    /// certificate.
    pub fn verify(&self, verifier: &CaVerifier, now: SystemTime) -> Result<NodeCert, BeaconError> {
        let ours = unix_secs(now);
        let skew = Duration::from_secs(ours.abs_diff(self.timestamp));
        if skew > MAX_SKEW {
            return Err(BeaconError::Stale {
                timestamp: self.timestamp,
                skew,
            });
        }
        let cert = NodeCert::from_der(&self.cert_der).map_err(BeaconError::Certificate)?;
        verifier
            .verify(&self.cert_der, now)
            .map_err(BeaconError::Certificate)?;
        if !cert
            .public_key
            .verify(&self.signed_message(), &self.signature)
        {
            return Err(BeaconError::BadSignature);
        }
        Ok(cert)
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BeaconRepr {
        BeaconRepr {
            flags: 0,
            port: 4326,
            timestamp: 0x0102_0304_0506_0708,
            cert_der: vec![0xaa, 0xbb, 0xcc],
            signature: vec![0x11, 0x22],
        }
    }

    #[rustfmt::skip]
    const SAMPLE: [u8; 29] = [
        b'r', b'e', b'6', b's', b't', b'-', b'l', b'b',
        1, 0,
        0x10, 0xe6,
        1, 2, 3, 4, 5, 6, 7, 8,
        0, 3, 0xaa, 0xbb, 0xcc,
        0, 2, 0x11, 0x22,
    ];

    #[test]
    fn emit_and_parse() {
        let mut b = Vec::new();
        sample().emit(&mut b);
        assert_eq!(b, SAMPLE);
        assert_eq!(sample().buffer_len(), SAMPLE.len());
        assert_eq!(BeaconRepr::parse(&SAMPLE).unwrap(), sample());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let p = |b: &[u8]| BeaconRepr::parse(b).unwrap_err();
        assert!(matches!(
            p(&SAMPLE[..5]),
            BeaconError::Truncated { min: 22, .. }
        ));
        assert!(matches!(
            p(&SAMPLE[..24]),
            BeaconError::Truncated { min: 27, .. }
        ));
        assert!(matches!(
            p(&SAMPLE[..28]),
            BeaconError::Truncated { min: 29, .. }
        ));
        let mut t = SAMPLE.to_vec();
        t.push(0);
        assert!(matches!(p(&t), BeaconError::TrailingData(1)));
        let mut m = SAMPLE;
        m[0] = b'R';
        assert!(matches!(p(&m), BeaconError::BadMagic));
        let mut v = SAMPLE;
        v[8] = 2;
        assert!(matches!(p(&v), BeaconError::UnsupportedVersion(2)));
        let mut z = SAMPLE;
        z[10] = 0;
        z[11] = 0;
        assert!(matches!(p(&z), BeaconError::BadField("port 0")));
        let mut s = SAMPLE;
        s[25] = 1; // signature length 258
        assert!(matches!(p(&s), BeaconError::BadField(_)));
        assert!(matches!(p(&[0; MAX_LEN + 1]), BeaconError::TooLong(_)));
        // Unknown flags are kept (they are signed).
        let mut f = SAMPLE;
        f[9] = 0x80;
        assert_eq!(BeaconRepr::parse(&f).unwrap().flags, 0x80);
    }
}

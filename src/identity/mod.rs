//! Node and network identity: keys, certificates, the CRL, the signed
//! network configuration, signed peer announcements and the mutual-TLS
//! configurations built from them.
//!
//! Everything in the overlay is authenticated by one certificate authority,
//! the registry's CA (ECDSA P-256, made with rcgen):
//!
//! - a **node certificate** binds a node's key to its prefix: the subject CN
//!   is the prefix (`fd12:3456:789a:1::/64`), the only IP SAN is the node's
//!   overlay address (the prefix's first host, `fd12:3456:789a:1::1`), and the
//!   serial is unique (a counter kept by the registry). Both EKUs (server and
//!   client auth) are set because every node is both a QUIC server and client.
//!   In a network with IPv4 inside the overlay, it also holds the node's
//!   IPv4 subnet ([`ipv4`]).
//! - the **CRL** lists the serials of revoked certificates that have not yet
//!   expired; [`tls`] enforces it on every tunnel.
//! - the **network configuration** ([`NetworkConfig`]) is signed by the CA so
//!   that a copy that reached a node through other nodes can be trusted.
//! - a **peer announcement** ([`PeerAnnouncement`]) is signed by the node's
//!   own key and carries the node's certificate, so any node can check it
//!   against the CA and the CRL; the announced prefix must be the one in the
//!   certificate, so no node can announce addresses for another's prefix.
//! - a **route-origin proof** ([`origin`]) is the node's signature of each
//!   (prefix, router-id, seqno) it originates in Babel; [`Origins`] checks
//!   them, and what each certificate may originate (its own prefix, and
//!   the gateway prefixes the network configuration grants it).
//!
//! Time is always a parameter (`now: SystemTime`), never read inside.

mod announce;
mod ca;
mod cert;
mod crl;
mod csr;
pub mod fuzzing;
pub mod ipv4;
mod key;
mod netconfig;
pub mod origin;
pub mod origins;
mod signed;
pub mod tls;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use announce::{
    LinkKind, LinkReport, MAX_ADDRESSES, PeerAnnouncement, SignedAnnouncement, Topology,
    VerifiedAnnouncement,
};
pub use ca::{Ca, IssueParams};
pub use cert::{NodeCert, node_address};
pub use crl::{Crl, CrlEntry};
pub use csr::{CertificateRequest, make_csr};
pub use key::{KeyKind, NodeKey, PublicKey};
pub use netconfig::{
    GatewayGrant, MAX_GATEWAY_GRANTS, NetworkConfig, PROTOCOL_VERSION, SignedNetworkConfig,
};
pub use origins::{OriginStats, Origins, OriginsConfig};
pub use signed::{Fingerprint, SignatureContext};

/// Why an identity object (key, certificate, CRL, signed blob) was refused.
///
/// Variants name the fault so that the registry can turn each into a 4xx
/// answer that tells the client what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text is not PEM of the expected label.
    #[error("bad PEM: expected a {expected} block")]
    BadPem {
        /// The PEM label that was expected (`CERTIFICATE REQUEST`, ...).
        expected: &'static str,
    },
    /// The DER inside is not a well-formed object of that kind.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A signature does not verify (CSR self-signature, CRL, signed blob).
    #[error("bad signature on {what}")]
    BadSignature {
        /// What carried the signature.
        what: &'static str,
    },
    /// The public key is of a type we do not accept.
    #[error("unsupported key type {algorithm} (accepted: ECDSA P-256, ECDSA P-384, Ed25519)")]
    UnsupportedKeyType {
        /// The algorithm (and curve) OID found.
        algorithm: String,
    },
    /// A certificate does not have the shape of a re6st node certificate.
    #[error("not a re6st node certificate: {0}")]
    NotNodeCertificate(&'static str),
    /// The certificate chain does not verify against the CA (or is revoked,
    /// expired, not yet valid).
    #[error("certificate rejected: {0}")]
    CertificateRejected(String),
    /// A signed announcement names a prefix that is not its certificate's.
    #[error("announcement for {announced} signed by the holder of {certified}")]
    PrefixMismatch {
        /// The prefix in the announcement.
        announced: ipnet::Ipv6Net,
        /// The prefix in the certificate.
        certified: ipnet::Ipv6Net,
    },
    /// A timestamped object is too old or too far in the future.
    #[error("stale or future timestamp {timestamp} (now {now})")]
    BadTimestamp {
        /// The object's timestamp (UNIX seconds).
        timestamp: u64,
        /// The verifier's clock (UNIX seconds).
        now: u64,
    },
    /// An announcement's address list is empty, too long or has an address
    /// nobody can send to.
    #[error("bad address list: {0}")]
    BadAddresses(String),
    /// A field is outside its allowed range.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        detail: String,
    },
    /// Our own mistake or a crypto library failure (not the peer's fault).
    #[error("internal identity error: {0}")]
    Internal(String),
}

/// Extracts the DER of a PEM `CERTIFICATE` (e.g. `ca.crt`).
pub fn ca_der_from_pem(pem: &str) -> Result<Vec<u8>, IdentityError> {
    cert::cert_der_from_pem(pem)
}

/// PEM-encodes a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    cert::der_to_pem("CERTIFICATE", der)
}

/// PEM-encodes a DER CRL (`X509 CRL`).
pub fn crl_pem(der: &[u8]) -> String {
    cert::der_to_pem("X509 CRL", der)
}

/// The public key of a CA certificate, which must be a CA (basic
/// constraints) and of a supported key type.
pub fn ca_public_key(der: &[u8]) -> Result<PublicKey, IdentityError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed {
        what: "CA certificate",
        detail: e.to_string(),
    })?;
    if !c.is_ca() {
        return Err(IdentityError::Invalid {
            field: "CA certificate",
            detail: "not a CA (basic constraints)".into(),
        });
    }
    PublicKey::from_spki(c.public_key())
}

/// Seconds since the UNIX epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the UNIX epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Converts to the time type used by rcgen.
pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = i64::try_from(unix_secs(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Lowercase hex, used for fingerprints.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

//! Signed peer announcements: "the node holding prefix P is reachable at
//! these UDP addresses", signed by that node's key and carrying its
//! certificate.
//!
//! Any node can check one against the CA and CRL ([`SignedAnnouncement::verify`]),
//! so announcements can be relayed by the registry (bootstrap) and by other
//! nodes (peer exchange) without trusting the relay. The prefix must be the
//! certificate's: a node cannot announce addresses for another's prefix.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::signed::{SignatureContext, sign_payload, verify_payload};
use super::tls::CaVerifier;
use super::{IdentityError, NodeCert, NodeKey, unix_secs};

/// Most addresses one announcement may carry.
pub const MAX_ADDRESSES: usize = 16;

/// How far in the future a timestamp may be (clock skew between nodes).
const MAX_SKEW: Duration = Duration::from_secs(300);

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAnnouncement {
    /// The announcing node's prefix (must be its certificate's).
    pub prefix: Ipv6Net,
    /// UDP socket addresses where its QUIC endpoint can be reached.
    pub addresses: Vec<SocketAddr>,
    /// When it was made (UNIX seconds); newer replaces older.
    pub timestamp: u64,
}

impl PeerAnnouncement {
    /// Signs this announcement with the node's key and attaches its
    /// certificate. Fails if `cert` is not for `self.prefix` or the
    /// addresses are unusable.
    pub fn sign(
        &self,
        cert: &NodeCert,
        key: &NodeKey,
    ) -> Result<SignedAnnouncement, IdentityError> {
        if cert.prefix != self.prefix {
            return Err(IdentityError::PrefixMismatch {
                announced: self.prefix,
                certified: cert.prefix,
            });
        }
        check_addresses(&self.addresses)?;
        let payload =
            serde_json::to_string(self).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let signature = sign_payload(SignatureContext::PeerAnnouncement, &payload, |m| {
            key.sign(m)
        })?;
        Ok(SignedAnnouncement {
            payload,
            signature,
            certificate: B64.encode(&cert.der),
        })
    }
}

fn check_addresses(addrs: &[SocketAddr]) -> Result<(), IdentityError> {
    if addrs.is_empty() || addrs.len() > MAX_ADDRESSES {
        return Err(IdentityError::BadAddresses(format!(
            "{} addresses (1 to {MAX_ADDRESSES} allowed)",
            addrs.len()
        )));
    }
    for a in addrs {
        if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
            return Err(IdentityError::BadAddresses(format!(
                "{a} cannot be sent to"
            )));
        }
        // A link-local address means nothing away from its link (and carries
        // no scope here): LAN neighbours find each other by beacon instead.
        let link_local = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.is_link_local(),
            std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if link_local {
            return Err(IdentityError::BadAddresses(format!("{a} is link-local")));
        }
    }
    Ok(())
}

/// A [`PeerAnnouncement`] as signed JSON text, with the signer's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnnouncement {
    /// The announcement's JSON text, exactly as signed.
    pub payload: String,
    /// Base64 signature by the node key (context "re6st peer announcement v1").
    pub signature: String,
    /// Base64 DER of the node certificate.
    pub certificate: String,
}

/// An announcement that passed [`SignedAnnouncement::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAnnouncement {
    /// What was announced.
    pub announcement: PeerAnnouncement,
    /// The signer's certificate (chain and CRL checked).
    pub cert: NodeCert,
}

impl SignedAnnouncement {
    /// Checks everything: the certificate chains to the CA and is neither
    /// expired nor revoked (per `verifier`'s CRL), the signature is the
    /// certificate key's, the prefix is the certificate's, the timestamp is
    /// at most `max_age` old and not in the future, and the addresses are
    /// usable.
    pub fn verify(
        &self,
        verifier: &CaVerifier,
        now: SystemTime,
        max_age: Duration,
    ) -> Result<VerifiedAnnouncement, IdentityError> {
        if self.certificate.len() > 8 * 1024 {
            return Err(IdentityError::Invalid {
                field: "certificate",
                detail: "too long".into(),
            });
        }
        let der = B64
            .decode(&self.certificate)
            .map_err(|_| IdentityError::Malformed {
                what: "announcement certificate",
                detail: "not base64".into(),
            })?;
        let cert = NodeCert::from_der(&der)?;
        verifier.verify(&der, now)?;
        verify_payload(
            SignatureContext::PeerAnnouncement,
            &self.payload,
            &self.signature,
            &cert.public_key,
            "peer announcement",
        )?;
        let announcement: PeerAnnouncement =
            serde_json::from_str(&self.payload).map_err(|e| IdentityError::Malformed {
                what: "peer announcement",
                detail: e.to_string(),
            })?;
        if announcement.prefix != cert.prefix {
            return Err(IdentityError::PrefixMismatch {
                announced: announcement.prefix,
                certified: cert.prefix,
            });
        }
        let now_s = unix_secs(now);
        let ts = announcement.timestamp;
        if ts > now_s.saturating_add(MAX_SKEW.as_secs())
            || ts.saturating_add(max_age.as_secs()) < now_s
        {
            return Err(IdentityError::BadTimestamp {
                timestamp: ts,
                now: now_s,
            });
        }
        check_addresses(&announcement.addresses)?;
        Ok(VerifiedAnnouncement { announcement, cert })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;

    fn ann(prefix: &str, ts: u64) -> PeerAnnouncement {
        PeerAnnouncement {
            prefix: prefix.parse().unwrap(),
            addresses: vec![
                "192.0.2.1:4433".parse().unwrap(),
                "[2001:db8::1]:4433".parse().unwrap(),
            ],
            timestamp: ts,
        }
    }

    #[test]
    fn roundtrip_and_rules() {
        let f = Pki::new();
        let v = f.verifier(None);
        let now_s = unix_secs(f.now);
        let (cert, key) = f.node(2);
        let signed = ann("fd00:77:0:2::/64", now_s).sign(&cert, &key).unwrap();
        let ok = signed.verify(&v, f.now, Duration::from_secs(600)).unwrap();
        assert_eq!(ok.cert.serial, 2);
        assert_eq!(ok.announcement.addresses.len(), 2);

        // Too old, or from the future.
        assert!(matches!(
            signed.verify(
                &v,
                f.now + Duration::from_secs(601),
                Duration::from_secs(600)
            ),
            Err(IdentityError::BadTimestamp { .. })
        ));
        let future = ann("fd00:77:0:2::/64", now_s + 3600)
            .sign(&cert, &key)
            .unwrap();
        assert!(matches!(
            future.verify(&v, f.now, Duration::from_secs(600)),
            Err(IdentityError::BadTimestamp { .. })
        ));

        // Another node's prefix: sign refuses, and a forged payload fails.
        assert!(matches!(
            ann("fd00:77:0:3::/64", now_s).sign(&cert, &key),
            Err(IdentityError::PrefixMismatch { .. })
        ));
        let (cert2, key2) = f.node(3);
        let mut forged = ann("fd00:77:0:3::/64", now_s).sign(&cert2, &key2).unwrap();
        forged.certificate = signed.certificate.clone();
        assert!(forged.verify(&v, f.now, Duration::from_secs(600)).is_err());
        // Signed with node 1's key for node 2's prefix but carrying node 1's cert.
        let payload = serde_json::to_string(&ann("fd00:77:0:3::/64", now_s)).unwrap();
        let sig = sign_payload(SignatureContext::PeerAnnouncement, &payload, |m| {
            key.sign(m)
        })
        .unwrap();
        let lie = SignedAnnouncement {
            payload,
            signature: sig,
            certificate: signed.certificate.clone(),
        };
        assert!(matches!(
            lie.verify(&v, f.now, Duration::from_secs(600)),
            Err(IdentityError::PrefixMismatch { .. })
        ));

        // Revoked signer.
        let rv = f.verifier(Some(&f.crl(1, &[2])));
        assert!(matches!(
            signed.verify(&rv, f.now, Duration::from_secs(600)),
            Err(IdentityError::CertificateRejected(_))
        ));
    }

    #[test]
    fn bad_addresses() {
        let f = Pki::new();
        let (cert, key) = f.node(2);
        let mut a = ann("fd00:77:0:2::/64", 1);
        a.addresses = vec![];
        assert!(matches!(
            a.sign(&cert, &key),
            Err(IdentityError::BadAddresses(_))
        ));
        a.addresses = vec!["0.0.0.0:1".parse().unwrap()];
        assert!(a.sign(&cert, &key).is_err());
        a.addresses = vec!["192.0.2.1:0".parse().unwrap()];
        assert!(a.sign(&cert, &key).is_err());
        a.addresses = vec!["[fe80::1]:4326".parse().unwrap()];
        assert!(matches!(
            a.sign(&cert, &key),
            Err(IdentityError::BadAddresses(m)) if m.contains("link-local")
        ));
        a.addresses = vec!["169.254.3.4:4326".parse().unwrap()];
        assert!(a.sign(&cert, &key).is_err());
        a.addresses = vec!["192.0.2.1:1".parse().unwrap(); MAX_ADDRESSES + 1];
        assert!(a.sign(&cert, &key).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let f = Pki::new();
        let v = f.verifier(None);
        for s in [
            SignedAnnouncement {
                payload: "{".into(),
                signature: "".into(),
                certificate: "".into(),
            },
            SignedAnnouncement {
                payload: "".into(),
                signature: "@@".into(),
                certificate: "AAAA".into(),
            },
        ] {
            assert!(s.verify(&v, f.now, Duration::from_secs(1)).is_err());
        }
    }
}

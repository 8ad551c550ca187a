//! Signed peer announcements: "the node holding prefix P is reachable at
//! these UDP addresses", signed by that node's key and carrying its
//! certificate.
//!
//! Any node can check one against the CA and CRL ([`SignedAnnouncement::verify`]),
//! so announcements can be relayed by the registry (bootstrap) and by other
//! nodes (peer exchange) without trusting the relay. The prefix must be the
//! certificate's: a node cannot announce addresses for another's prefix.
//!
//! The announcement a node sends to the registry also carries its
//! [`Topology`] (its tunnels, LAN links, gateway prefixes and version),
//! from which the registry draws the network. The field is optional and
//! bounded ([`MAX_TOPOLOGY_LINKS`], [`MAX_PAYLOAD`]): older nodes omit it,
//! and older readers ignore it (unknown JSON fields are skipped; the
//! signature covers the payload text as sent).

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

/// Most links one topology report may list (3k tunnels for k = 10, LAN
/// links, and room for larger k).
pub const MAX_TOPOLOGY_LINKS: usize = 128;
/// Most gateway prefixes one topology report may list.
pub const MAX_TOPOLOGY_GATEWAYS: usize = 16;
/// Longest software version string in a topology report.
pub const MAX_VERSION_LEN: usize = 32;
/// Longest announcement payload accepted (with a full topology report it
/// stays under 10 KiB).
pub const MAX_PAYLOAD: usize = 16 * 1024;

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
    /// The port its TCP tunnels listen on, at the same IP addresses
    /// (`None`: it does not listen on TCP, or is an older node; dials over
    /// TCP then use each address's own port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
    /// The node's place in the overlay (only in what it sends the
    /// registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

/// How a node is linked to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A tunnel the node opened (one of its k).
    Out,
    /// A tunnel the peer opened.
    In,
    /// A LAN link (found by beacon, outside k).
    Lan,
}

/// One link of a node, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The peer's prefix.
    pub peer: Ipv6Net,
    /// What kind of link.
    pub kind: LinkKind,
    /// Round-trip time, milliseconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
}

/// What a node reports of its place in the overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Its software version.
    #[serde(default)]
    pub version: String,
    /// Its tunnels and LAN links that are up.
    #[serde(default)]
    pub links: Vec<LinkReport>,
    /// Prefixes it is a gateway for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Ipv6Net>,
}

impl Topology {
    /// A report, cut to the bounds (a node with more links than
    /// [`MAX_TOPOLOGY_LINKS`] reports its first ones).
    pub fn new(version: &str, mut links: Vec<LinkReport>, mut gateways: Vec<Ipv6Net>) -> Self {
        links.truncate(MAX_TOPOLOGY_LINKS);
        gateways.truncate(MAX_TOPOLOGY_GATEWAYS);
        let version = version.chars().take(MAX_VERSION_LEN).collect();
        Self {
            version,
            links,
            gateways,
        }
    }

    fn check(&self) -> Result<(), IdentityError> {
        let bad = |detail: String| IdentityError::Invalid {
            field: "topology",
            detail,
        };
        if self.links.len() > MAX_TOPOLOGY_LINKS {
            return Err(bad(format!(
                "{} links (at most {MAX_TOPOLOGY_LINKS})",
                self.links.len()
            )));
        }
        if self.gateways.len() > MAX_TOPOLOGY_GATEWAYS {
            return Err(bad(format!(
                "{} gateway prefixes (at most {MAX_TOPOLOGY_GATEWAYS})",
                self.gateways.len()
            )));
        }
        if self.version.len() > MAX_VERSION_LEN || self.version.chars().any(|c| c.is_control()) {
            return Err(bad("unreadable version".into()));
        }
        Ok(())
    }
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
        check_tcp_port(self.tcp_port)?;
        if let Some(t) = &self.topology {
            t.check()?;
        }
        let payload =
            serde_json::to_string(self).map_err(|e| IdentityError::Internal(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(IdentityError::Invalid {
                field: "announcement",
                detail: format!("{} bytes (at most {MAX_PAYLOAD})", payload.len()),
            });
        }
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

fn check_tcp_port(port: Option<u16>) -> Result<(), IdentityError> {
    if port == Some(0) {
        return Err(IdentityError::BadAddresses(
            "TCP port 0 cannot be dialled".into(),
        ));
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
        if self.payload.len() > MAX_PAYLOAD {
            return Err(IdentityError::Invalid {
                field: "announcement",
                detail: format!("{} bytes (at most {MAX_PAYLOAD})", self.payload.len()),
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
        check_tcp_port(announcement.tcp_port)?;
        if let Some(t) = &announcement.topology {
            t.check()?;
        }
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
            tcp_port: None,
            topology: None,
        }
    }

    #[test]
    fn topology_is_optional_bounded_and_ignored_by_older_readers() {
        let f = Pki::new();
        let v = f.verifier(None);
        let (cert, key) = f.node(2);
        let now_s = unix_secs(f.now);
        let link = |i: u16, kind| LinkReport {
            peer: format!("fd00:77:0:{i:x}::/64").parse().unwrap(),
            kind,
            rtt_ms: Some(u32::from(i)),
        };
        let links: Vec<_> = (0..200).map(|i| link(i, LinkKind::Out)).collect();
        let mut a = ann("fd00:77:0:2::/64", now_s);
        a.topology = Some(Topology::new(
            &"v".repeat(99),
            links,
            vec!["::/0".parse().unwrap()],
        ));
        let signed = a.sign(&cert, &key).unwrap();
        assert!(signed.payload.len() < 10 * 1024, "{}", signed.payload.len());
        let got = signed.verify(&v, f.now, Duration::from_secs(60)).unwrap();
        let t = got.announcement.topology.unwrap();
        assert_eq!(
            (t.links.len(), t.version.len()),
            (MAX_TOPOLOGY_LINKS, MAX_VERSION_LEN)
        );
        // What an older node reads: the same fields, the topology skipped.
        #[derive(Deserialize)]
        struct Old {
            prefix: Ipv6Net,
            timestamp: u64,
        }
        let old: Old = serde_json::from_str(&signed.payload).unwrap();
        assert_eq!((old.prefix, old.timestamp), (cert.prefix, now_s));
        // An older node's announcement (no field) reads as no topology.
        assert!(
            ann("fd00:77:0:2::/64", now_s)
                .sign(&cert, &key)
                .unwrap()
                .verify(&v, f.now, Duration::from_secs(60))
                .unwrap()
                .announcement
                .topology
                .is_none()
        );
        // Over the bounds (a hand-made payload): refused.
        let mut big = ann("fd00:77:0:2::/64", now_s);
        big.topology = Some(Topology {
            version: String::new(),
            links: (0..129).map(|i| link(i, LinkKind::In)).collect(),
            gateways: vec![],
        });
        let payload = serde_json::to_string(&big).unwrap();
        let signature = sign_payload(SignatureContext::PeerAnnouncement, &payload, |m| {
            key.sign(m)
        })
        .unwrap();
        let forged = SignedAnnouncement {
            payload,
            signature,
            certificate: signed.certificate.clone(),
        };
        assert!(matches!(
            forged.verify(&v, f.now, Duration::from_secs(60)),
            Err(IdentityError::Invalid {
                field: "topology",
                ..
            })
        ));
        let huge = SignedAnnouncement {
            payload: "x".repeat(MAX_PAYLOAD + 1),
            ..signed
        };
        assert!(huge.verify(&v, f.now, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn tcp_port_is_optional_both_ways() {
        let f = Pki::new();
        let v = f.verifier(None);
        let (cert, key) = f.node(2);
        let now_s = unix_secs(f.now);
        let verify = |s: &SignedAnnouncement| {
            s.verify(&v, f.now, Duration::from_secs(60))
                .map(|ok| ok.announcement)
        };
        let mut a = ann("fd00:77:0:2::/64", now_s);
        // Without a port, the payload is what an older node writes.
        let plain = a.sign(&cert, &key).unwrap();
        assert!(!plain.payload.contains("tcp_port"), "{}", plain.payload);
        assert_eq!(verify(&plain).unwrap().tcp_port, None);
        // With one, it round-trips.
        a.tcp_port = Some(443);
        let with = a.sign(&cert, &key).unwrap();
        assert_eq!(verify(&with).unwrap(), a);
        // An older node reads it, skipping the field.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Old {
            prefix: Ipv6Net,
            addresses: Vec<SocketAddr>,
            timestamp: u64,
            #[serde(default)]
            topology: Option<Topology>,
        }
        let old: Old = serde_json::from_str(&with.payload).unwrap();
        assert_eq!(old.addresses, a.addresses);
        // Port 0: refused when signing and when verifying.
        a.tcp_port = Some(0);
        assert!(matches!(
            a.sign(&cert, &key),
            Err(IdentityError::BadAddresses(_))
        ));
        let payload = serde_json::to_string(&a).unwrap();
        let forged = SignedAnnouncement {
            signature: sign_payload(SignatureContext::PeerAnnouncement, &payload, |m| {
                key.sign(m)
            })
            .unwrap(),
            payload,
            certificate: with.certificate,
        };
        assert!(matches!(
            verify(&forged),
            Err(IdentityError::BadAddresses(_))
        ));
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

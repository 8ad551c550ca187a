//! A throwaway PKI for unit tests: a CA, node certificates, CRLs, and
//! transports on loopback with short timers.
#![cfg(test)]

use std::time::{Duration, SystemTime};

use crate::identity::{
    Ca, Crl, IssueParams, NodeCert, NodeKey, PeerAnnouncement, SignedAnnouncement, unix_secs,
};
use crate::transport::socket::FaultSwitch;
use crate::transport::{Transport, TransportConfig};

pub struct Pki {
    pub ca: Ca,
    pub now: SystemTime,
}

impl Pki {
    pub fn new() -> Self {
        let now = SystemTime::now();
        let ca = Ca::generate(
            "fd00:77::/48".parse().unwrap(),
            1,
            now - Duration::from_secs(60),
            Duration::from_secs(86_400),
        )
        .unwrap();
        Self { ca, now }
    }

    pub fn node(&self, serial: u64) -> (NodeCert, NodeKey) {
        let key = NodeKey::generate().unwrap();
        let prefix = format!("fd00:77:0:{serial:x}::/64").parse().unwrap();
        let der = self
            .ca
            .issue_node(
                &key.spki_der(),
                prefix,
                IssueParams {
                    serial,
                    not_before: self.now - Duration::from_secs(60),
                    not_after: self.now + Duration::from_secs(3600),
                },
            )
            .unwrap();
        (NodeCert::from_der(&der).unwrap(), key)
    }

    pub fn crl(&self, number: u64, revoked: &[u64]) -> Crl {
        let entries: Vec<(u64, SystemTime)> = revoked.iter().map(|s| (*s, self.now)).collect();
        let der = self
            .ca
            .sign_crl(
                number,
                &entries,
                self.now - Duration::from_secs(10),
                self.now + Duration::from_secs(3600),
            )
            .unwrap();
        Crl::from_der(&der, self.ca.cert_der()).unwrap()
    }

    pub fn transport(&self, serial: u64, crl: Option<Crl>) -> Transport {
        let (cert, key) = self.node(serial);
        self.transport_for(cert, &key, crl)
    }

    pub fn transport_for(&self, cert: NodeCert, key: &NodeKey, crl: Option<Crl>) -> Transport {
        Transport::bind(
            "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
            self.ca.cert_der(),
            crl,
            fast(),
            Some(FaultSwitch::new()),
        )
        .unwrap()
    }
}

pub fn fast() -> TransportConfig {
    TransportConfig {
        keep_alive: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        handshake_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    }
}

impl Pki {
    /// A signed announcement of `cert`'s prefix at `addr`, made `age` ago.
    pub fn announce(
        &self,
        cert: &NodeCert,
        key: &NodeKey,
        addr: &str,
        age: Duration,
    ) -> SignedAnnouncement {
        PeerAnnouncement {
            prefix: cert.prefix,
            addresses: vec![addr.parse().unwrap()],
            timestamp: unix_secs(self.now - age),
        }
        .sign(cert, key)
        .unwrap()
    }

    /// A verifier for the CA, with `crl` when given.
    pub fn verifier(&self, crl: Option<&Crl>) -> crate::identity::tls::CaVerifier {
        crate::identity::tls::CaVerifier::new(&crate::identity::tls::Trust::new(
            self.ca.cert_der(),
            crl,
        ))
        .unwrap()
    }
}

/// Signs any payload as a peer announcement (to forge one in tests).
pub fn sign_raw(payload: &str, key: &NodeKey) -> String {
    use base64::Engine;
    let m = crate::identity::SignatureContext::PeerAnnouncement.message(payload);
    base64::engine::general_purpose::STANDARD.encode(key.sign(&m).unwrap())
}

//! A throwaway PKI for tests and benchmarks: a CA, node certificates,
//! CRLs, signed announcements and transports on loopback with short timers.
//!
//! The one source of test identities for the unit tests, the integration
//! tests (`tests/`) and the benchmarks (`benches/`), which reach it as
//! `re6st::test_pki` (hidden from the docs: it is no API). It panics on any
//! failure, as a test fixture should; nothing in the binary calls it.

use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;

use crate::identity::{
    Ca, Crl, IssueParams, NodeCert, NodeKey, PeerAnnouncement, SignedAnnouncement, unix_secs,
};
use crate::transport::socket::FaultSwitch;
use crate::transport::{Transport, TransportConfig};

/// A CA made a minute ago for a day, and `now`, the time its documents
/// are dated from.
pub struct Pki {
    /// The CA.
    pub ca: Ca,
    /// When the PKI was made.
    pub now: SystemTime,
    /// The overlay network of the CA (`fd00:77::/48` by default).
    pub network: Ipv6Net,
    /// How long node certificates are valid (an hour by default).
    pub validity: Duration,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A CA for the overlay `fd00:77::/48`.
    pub fn new() -> Self {
        Self::with_network("fd00:77::/48".parse().unwrap())
    }

    /// A CA for the overlay `network` (a /48 or shorter).
    pub fn with_network(network: Ipv6Net) -> Self {
        Self::with_validity(network, Duration::from_secs(3600))
    }

    /// A CA for `network` whose node certificates are valid for
    /// `validity` (the CA a day longer): long virtual runs.
    pub fn with_validity(network: Ipv6Net, validity: Duration) -> Self {
        let now = SystemTime::now();
        let ca = Ca::generate(
            network,
            1,
            now - Duration::from_secs(60),
            validity.max(Duration::from_secs(3600)) + Duration::from_secs(86_400),
        )
        .unwrap();
        Self {
            ca,
            now,
            network,
            validity,
        }
    }

    /// The node with `serial` and the /64 number `serial` of the network
    /// (`fd00:77:0:<serial>::/64` by default), valid for
    /// [`Pki::validity`] (an hour by default).
    pub fn node(&self, serial: u64) -> (NodeCert, NodeKey) {
        self.node_with_ipv4(serial, None)
    }

    /// [`Pki::node`] with the IPv4 subnet `ipv4` in its certificate.
    pub fn node_with_ipv4(&self, serial: u64, ipv4: Option<ipnet::Ipv4Net>) -> (NodeCert, NodeKey) {
        let key = NodeKey::generate().unwrap();
        let subnet = u128::from(self.network.network()) | (u128::from(serial) << 64);
        let prefix = Ipv6Net::new(subnet.into(), 64).unwrap();
        let der = self
            .ca
            .issue_node_with_ipv4(
                &key.spki_der(),
                prefix,
                ipv4,
                IssueParams {
                    serial,
                    not_before: self.now - Duration::from_secs(60),
                    not_after: self.now + self.validity,
                },
            )
            .unwrap();
        (NodeCert::from_der(&der).unwrap(), key)
    }

    /// CRL number `number` revoking the serials `revoked`.
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

    /// A transport on loopback for a new node `serial`, with [`fast`] timers.
    pub fn transport(&self, serial: u64, crl: Option<Crl>) -> Transport {
        let (cert, key) = self.node(serial);
        self.transport_for(cert, &key, crl)
    }

    /// A transport on loopback for `cert`, with [`fast`] timers.
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

/// Transport timers short enough for tests on loopback.
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
            tcp_port: None,
            topology: None,
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

//! A throwaway CA and node identities for the edge tests.

use std::time::{Duration, SystemTime};

use re6st::identity::tls::{CaVerifier, Trust};
use re6st::identity::{Ca, IssueParams, NodeCert, NodeKey};

pub struct Pki {
    pub ca: Ca,
    pub now: SystemTime,
}

impl Pki {
    /// A CA for the overlay `fd00:77::/48`.
    pub fn new() -> Self {
        let now = SystemTime::now();
        let ca = Ca::generate(
            "fd00:77::/48".parse().unwrap(),
            1,
            now - Duration::from_secs(60),
            Duration::from_secs(86_400),
        )
        .unwrap();
        Pki { ca, now }
    }

    /// The node with `serial` and prefix `fd00:77:0:<serial>::/64`.
    pub fn node(&self, serial: u64) -> (NodeCert, NodeKey) {
        let key = NodeKey::generate().unwrap();
        let der = self
            .ca
            .issue_node(
                &key.spki_der(),
                format!("fd00:77:0:{serial:x}::/64").parse().unwrap(),
                IssueParams {
                    serial,
                    not_before: self.now - Duration::from_secs(60),
                    not_after: self.now + Duration::from_secs(3600),
                },
            )
            .unwrap();
        (NodeCert::from_der(&der).unwrap(), key)
    }

    pub fn verifier(&self) -> CaVerifier {
        CaVerifier::new(&Trust::new(self.ca.cert_der(), None)).unwrap()
    }
}

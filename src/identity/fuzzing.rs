//! Entry points of the identity fuzz targets (`fuzz/fuzz_targets/identity_*.rs`)
//! and of the stable corpus replay (`tests/registry_fuzz_corpus.rs`), in
//! rustls' `fuzzing` module style: parse, and when parsing succeeds, encode
//! again and check the round trip. Nothing here may panic on any input
//! except a failed round-trip assertion (a real bug).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::tls::{CaVerifier, Trust};
use super::{Ca, CertificateRequest, Crl, NodeCert, SignedAnnouncement, SignedNetworkConfig};

/// A CA made for fuzzing only (its key is public: never trust it). Seeds in
/// the corpus are signed by it so that the success paths are reached.
pub const FUZZ_CA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlDCCATqgAwIBAgIBATAKBggqhkjOPQQDAjAvMQ4wDAYDVQQKDAVyZTZzdDEd
MBsGA1UEAwwUcmU2c3QgQ0EgZmQwMDpmOjovNDgwIBcNMjMxMTE0MjExMzIwWhgP
MjEyMzEwMjEyMjEzMjBaMC8xDjAMBgNVBAoMBXJlNnN0MR0wGwYDVQQDDBRyZTZz
dCBDQSBmZDAwOmY6Oi80ODBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABOuBfRpT
EklBKOwXKJxvp+7hndgkfgKG8WItC5AZmPM6jVLpGFErdDxTpknIN1YTNP7zOs6a
lIs7T7WBzXQgWFejRTBDMA4GA1UdDwEB/wQEAwIBhjAdBgNVHQ4EFgQUzr4Lbrli
xTqubUKil4Pn8yAFsgowEgYDVR0TAQH/BAgwBgEB/wIBADAKBggqhkjOPQQDAgNI
ADBFAiEA1jWPWt8v8qyUTEBbPh+HW/PcveIGV4lPGTs+qgmAvygCIEEj74TcOMI+
5H3JYI72B575sudulWGGkxeezuE2SI2M
-----END CERTIFICATE-----
-----END CERTIFICATE-----
";

/// The fuzzing CA's key (public on purpose).
pub const FUZZ_CA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKVNO4iNGZ9yfDGlM
WWo9HgrtyOkgRJAooqsUQUb0KlyhRANCAATrgX0aUxJJQSjsFyicb6fu4Z3YJH4C
hvFiLQuQGZjzOo1S6RhRK3Q8U6ZJyDdWEzT+8zrOmpSLO0+1gc10IFhX
-----END PRIVATE KEY-----
";

/// The clock the fuzz targets verify at (inside the fuzzing CA's validity).
pub fn fuzz_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100)
}

/// The fuzzing CA.
pub fn fuzz_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::from_pem(FUZZ_CA_CERT, FUZZ_CA_KEY).expect("the fuzzing CA loads"))
}

fn verifier() -> &'static CaVerifier {
    static V: OnceLock<CaVerifier> = OnceLock::new();
    V.get_or_init(|| CaVerifier::new(&Trust::new(fuzz_ca().cert_der(), None)).expect("verifier"))
}

/// DER inputs; the first byte picks the parser: 0 node certificate, 1 CSR,
/// 2 CRL (checked against the fuzzing CA), 3 the IP address block
/// extension of a node's IPv4 subnet.
pub fn identity_der(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok(c) = NodeCert::from_der(rest) {
                let again =
                    NodeCert::from_pem(&c.to_pem()).expect("a parsed certificate re-parses");
                assert_eq!(again, c);
                let _ = verifier().verify(rest, fuzz_now());
            }
        }
        1 => {
            let _ = CertificateRequest::from_der(rest);
        }
        3 => {
            // The parser takes DER only: what it accepts encodes back the same.
            if let Ok(subnet) = super::ipv4::parse(rest) {
                assert_eq!(super::ipv4::encode(subnet), rest);
            }
        }
        _ => {
            if let Ok(crl) = Crl::from_der(rest, fuzz_ca().cert_der()) {
                let again = Crl::from_pem(&crl.to_pem(), fuzz_ca().cert_der())
                    .expect("a parsed CRL re-parses");
                assert_eq!(again, crl);
            }
        }
    }
}

/// JSON and PEM inputs; the first byte picks: 0 signed announcement, 1
/// signed network configuration, 2 registry API bodies, 3 PEM parsers.
pub fn signed_json(data: &[u8]) {
    use crate::registry::api;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok(a) = serde_json::from_slice::<SignedAnnouncement>(rest)
                && let Ok(v) = a.verify(verifier(), fuzz_now(), Duration::from_secs(86_400))
            {
                assert_eq!(v.announcement.prefix, v.cert.prefix);
            }
        }
        1 => {
            if let Ok(c) = serde_json::from_slice::<SignedNetworkConfig>(rest)
                && let Ok(cfg) = c.verify(fuzz_ca().public_key())
            {
                cfg.validate().expect("a verified configuration is valid");
            }
        }
        2 => {
            let _ = serde_json::from_slice::<api::EnrolRequest>(rest);
            let _ = serde_json::from_slice::<api::RenewRequest>(rest);
            let _ = serde_json::from_slice::<api::BootstrapResponse>(rest);
            let _ = serde_json::from_slice::<api::ApiError>(rest);
        }
        _ => {
            let s = String::from_utf8_lossy(rest);
            let _ = NodeCert::from_pem(&s);
            let _ = CertificateRequest::from_pem(&s);
            let _ = Crl::from_pem(&s, fuzz_ca().cert_der());
            let _ = super::NodeKey::from_pem(&s);
        }
    }
}

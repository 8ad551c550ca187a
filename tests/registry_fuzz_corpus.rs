//! Replays the identity fuzz corpus (fuzz/corpus/identity_der and
//! fuzz/corpus/signed_json) and the registry API's (fuzz/corpus/registry_api)
//! on stable. `cargo test --test registry_fuzz_corpus -- --ignored`
//! rewrites the seed files.

use std::path::PathBuf;
use std::time::Duration;

use re6st::identity::fuzzing::{fuzz_ca, fuzz_now, identity_der, signed_json};
use re6st::identity::{
    IssueParams, NetworkConfig, NodeCert, NodeKey, PeerAnnouncement, make_csr, unix_secs,
};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(corpus(target)).unwrap_or_else(|e| panic!("{target} corpus: {e}")) {
        let p = e.unwrap().path();
        f(&std::fs::read(&p).unwrap());
        n += 1;
    }
    n
}

#[test]
fn replay_identity_corpus() {
    assert!(replay("identity_der", identity_der) >= 5);
    assert!(replay("signed_json", signed_json) >= 4);
    // The seeds reach the success paths (they are signed by the fuzzing CA).
    let seed = std::fs::read(corpus("signed_json").join("announcement")).unwrap();
    let a: re6st::identity::SignedAnnouncement = serde_json::from_slice(&seed[1..]).unwrap();
    let v = re6st::identity::tls::CaVerifier::new(&re6st::identity::tls::Trust::new(
        fuzz_ca().cert_der(),
        None,
    ))
    .unwrap();
    a.verify(&v, fuzz_now(), Duration::from_secs(60)).unwrap();
    let seed = std::fs::read(corpus("identity_der").join("cert_ipv4")).unwrap();
    let cert = NodeCert::from_der(&seed[1..]).unwrap();
    assert_eq!(cert.ipv4, Some("10.42.3.0/24".parse().unwrap()));
    let seed = std::fs::read(corpus("identity_der").join("crl")).unwrap();
    assert!(
        re6st::identity::Crl::from_der(&seed[1..], fuzz_ca().cert_der())
            .unwrap()
            .is_revoked(9)
    );
}

#[test]
fn replay_registry_api_corpus() {
    let api = re6st::registry::fuzzing::ApiFuzzer::new().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(corpus("registry_api")).expect("registry_api corpus") {
        api.request(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 10, "{n} seeds");
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let ca = fuzz_ca();
    let now = fuzz_now();
    let key = NodeKey::generate().unwrap();
    let p = IssueParams {
        serial: 7,
        not_before: now,
        not_after: now + Duration::from_secs(86_400),
    };
    let cert_der = ca
        .issue_node(&key.spki_der(), "fd00:f:0:1::/64".parse().unwrap(), p)
        .unwrap();
    let cert = NodeCert::from_der(&cert_der).unwrap();
    let subnet = "10.42.3.0/24".parse().unwrap();
    let cert_v4 = ca
        .issue_node_with_ipv4(&key.spki_der(), cert.prefix, Some(subnet), p)
        .unwrap();
    let csr = make_csr(&key).unwrap();
    let csr_der =
        re6st::identity::ca_der_from_pem(&csr.replace("CERTIFICATE REQUEST", "CERTIFICATE"))
            .unwrap();
    let crl = ca
        .sign_crl(
            3,
            &[(5, now), (9, now)],
            now,
            now + Duration::from_secs(600),
        )
        .unwrap();
    let w = |t: &str, name: &str, sel: u8, body: &[u8]| {
        std::fs::create_dir_all(corpus(t)).unwrap();
        let mut v = vec![sel];
        v.extend_from_slice(body);
        std::fs::write(corpus(t).join(name), v).unwrap();
    };
    w("identity_der", "cert", 0, &cert_der);
    w("identity_der", "csr", 1, &csr_der);
    w("identity_der", "crl", 2, &crl);
    w("identity_der", "cert_ipv4", 0, &cert_v4);
    w(
        "identity_der",
        "ipv4_block",
        3,
        &re6st::identity::ipv4::encode(subnet),
    );
    let ann = PeerAnnouncement {
        prefix: cert.prefix,
        addresses: vec![
            "192.0.2.1:4433".parse().unwrap(),
            "[2001:db8::2]:4433".parse().unwrap(),
        ],
        timestamp: unix_secs(now),
        tcp_port: None,
        topology: None,
    }
    .sign(&cert, &key)
    .unwrap();
    w(
        "signed_json",
        "announcement",
        0,
        serde_json::to_string(&ann).unwrap().as_bytes(),
    );
    let cfg = NetworkConfig::defaults(
        "fd00:f::/48".parse().unwrap(),
        "https://registry.example:8443".into(),
    );
    w(
        "signed_json",
        "network",
        1,
        serde_json::to_string(&cfg.sign(ca).unwrap())
            .unwrap()
            .as_bytes(),
    );
    w("signed_json", "enrol", 2, br#"{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQA=\n-----END CERTIFICATE REQUEST-----\n","token":"abc"}"#);
    w("signed_json", "pem", 3, csr.as_bytes());
    // Registry API: endpoint 3 (enrol), flags 1 (POST, JSON).
    let enrol = serde_json::json!({ "csr": csr });
    let mut body = vec![1u8];
    body.extend_from_slice(enrol.to_string().as_bytes());
    w("registry_api", "enrol", 3, &body);
}

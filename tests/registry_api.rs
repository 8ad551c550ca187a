//! The registry's HTTPS API end to end, with a real HTTPS client (reqwest
//! over rustls/ring) against a registry on a random loopback port.

mod registry_support;

use std::time::{Duration, SystemTime};

use re6st::identity::tls::{CaVerifier, Trust};
use re6st::identity::{Crl, Fingerprint, NodeCert, NodeKey, PeerAnnouncement, make_csr, unix_secs};
use re6st::registry::api::{self, ApiError, ErrorCode};
use re6st::registry::client::{ClientError, fetch_ca};
use re6st::registry::core::off_runtime;
use re6st::registry::store::RevokeTarget;
use registry_support::{Db, Node, TestRegistry};

/// An RSA-1024 CSR made with `openssl req -new -newkey rsa:1024`.
const RSA_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTTCBtwIBADAOMQwwCgYDVQQDDANyc2EwgZ8wDQYJKoZIhvcNAQEBBQADgY0A
MIGJAoGBAKYpVOi4YHStLOHTPTeJd+p4wZRN3bYonvKV+lFC93zpqBElKOkKkz9W
E14+WiExvsu0FH8UuLPrBbNxQbrSq5jp+bcD6/87O2GGIXWlaBQLRwW9BWby1YDD
91cT8NfZG2MeMDv8nRZVwQXQ0udGY6kg40RbyJknwPlJVOK9G3XNAgMBAAGgADAN
BgkqhkiG9w0BAQsFAAOBgQCZWTHOk1pYFlCFgm8yDRJnnf4fThGiFwVFMb30UgiG
PHWOFkxP+NiN6PPI9YvFMOA7zHmtCJbPLqsrSfR+1NcrMK7FXrCU4UxGusGU5Aa3
BXmtVUMK1cQ88Toc+LWo8+SIIIkMuC1TJh6+bmvq1ps22FPQZnpGW4toyK6YcxYm
2Q==
-----END CERTIFICATE REQUEST-----
";

fn announcement(n: &Node, port: u16) -> re6st::identity::SignedAnnouncement {
    PeerAnnouncement {
        prefix: n.cert.prefix,
        addresses: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        timestamp: unix_secs(SystemTime::now()),
        tcp_port: None,
        topology: None,
    }
    .sign(&n.cert, &n.key)
    .unwrap()
}

/// Every test of the suite, on SQLite and on PostgreSQL.
macro_rules! suite {
    ($($test:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test]
        async fn $sqlite() {
            $test(Db::Sqlite).await
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(db) = Db::postgres() else { return };
            $test(db).await
        }
    )*};
}

suite! {
    enrol_and_fetch_signed_documents => sqlite_enrol_and_fetch_signed_documents, postgres_enrol_and_fetch_signed_documents;
    renewal_keeps_prefix_and_announcements_feed_bootstrap => sqlite_renewal_keeps_prefix_and_announcements_feed_bootstrap, postgres_renewal_keeps_prefix_and_announcements_feed_bootstrap;
    bootstrap_excludes_revoked_and_revoked_are_refused => sqlite_bootstrap_excludes_revoked_and_revoked_are_refused, postgres_bootstrap_excludes_revoked_and_revoked_are_refused;
    bad_input_gets_a_4xx_json_error_and_changes_nothing => sqlite_bad_input_gets_a_4xx_json_error_and_changes_nothing, postgres_bad_input_gets_a_4xx_json_error_and_changes_nothing;
    exhausted_prefix_space_is_a_409 => sqlite_exhausted_prefix_space_is_a_409, postgres_exhausted_prefix_space_is_a_409;
    concurrent_enrolments_get_distinct_prefixes_and_serials => sqlite_concurrent_enrolments_get_distinct_prefixes_and_serials, postgres_concurrent_enrolments_get_distinct_prefixes_and_serials;
    expired_prefixes_are_released_after_the_grace_period => sqlite_expired_prefixes_are_released_after_the_grace_period, postgres_expired_prefixes_are_released_after_the_grace_period;
    network_config_version_changes_only_with_parameters => sqlite_network_config_version_changes_only_with_parameters, postgres_network_config_version_changes_only_with_parameters;
    ipv4_given_later_reaches_running_nodes_at_renewal => sqlite_ipv4_given_later_reaches_running_nodes_at_renewal, postgres_ipv4_given_later_reaches_running_nodes_at_renewal;
}

fn api_code(e: ClientError) -> (u16, ErrorCode) {
    match e {
        ClientError::Api { status, error } => (status, error.error),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn enrol_and_fetch_signed_documents(db: Db) {
    let r = TestRegistry::start_with(&db, &["--network", "fd00:6::/48"]).await;
    let tok = r.tokens(1);
    let node = r.enrol(Some(&tok[0])).await;
    assert_eq!(node.cert.prefix.to_string(), "fd00:6::/64");
    assert_eq!(node.cert.address.to_string(), "fd00:6::1");
    assert_eq!(node.cert.public_key, node.key.public_key().unwrap());
    CaVerifier::new(&r.trust())
        .unwrap()
        .verify(&node.cert.der, SystemTime::now())
        .unwrap();
    let life = node
        .cert
        .not_after
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        life > Duration::from_secs(364 * 86_400) && life <= Duration::from_secs(365 * 86_400),
        "1-year default"
    );

    // The CA, by TOFU (which checks the server's own certificate) and pinned.
    let ca = fetch_ca(&r.url).await.unwrap();
    assert_eq!(ca, r.ca_der);
    let c = r.anon().ca().await.unwrap();
    assert_eq!(c.fingerprint, Fingerprint::of(&r.ca_der).to_string());

    let crl = Crl::from_pem(&r.anon().crl().await.unwrap(), &r.ca_der).unwrap();
    assert_eq!(crl.entries().count(), 0);

    let cfg = r.anon().network().await.unwrap();
    let ca_key = re6st::identity::ca_public_key(&r.ca_der).unwrap();
    let cfg = cfg.verify(&ca_key).unwrap();
    assert_eq!(
        (cfg.tunnels, cfg.max_tunnels, cfg.node_prefix_len),
        (10, 30, 64)
    );
    assert_eq!(cfg.registry_url, r.url);
    assert_eq!(cfg.network.to_string(), "fd00:6::/48");

    // A client that trusts another CA refuses this registry.
    let other = re6st::identity::Ca::generate(
        "fd00::/48".parse().unwrap(),
        1,
        SystemTime::now(),
        Duration::from_secs(999),
    )
    .unwrap();
    let wrong = re6st::registry::client::RegistryClient::new(
        &r.url,
        &Trust::new(other.cert_der(), None),
        None,
    )
    .unwrap();
    assert!(matches!(wrong.ca().await, Err(ClientError::Http(_))));
}

async fn renewal_keeps_prefix_and_announcements_feed_bootstrap(db: Db) {
    // Lifetime shorter than the renewal window: every renewal is due.
    let r = TestRegistry::start_with(
        &db,
        &[
            "--enrolment",
            "open",
            "--cert-lifetime",
            "1h",
            "--renew-window",
            "2h",
        ],
    )
    .await;
    let a = r.enrol(None).await;
    let b = r.enrol(None).await;
    assert_ne!(a.cert.prefix, b.cert.prefix);

    let renewed = r.client(&a).renew(None).await.unwrap();
    assert!(renewed.renewed);
    let a2 = NodeCert::from_pem(&renewed.certificate).unwrap();
    assert_eq!(a2.prefix, a.cert.prefix);
    assert!(a2.serial > b.cert.serial);
    assert_eq!(a2.public_key, a.cert.public_key);

    // Key rotation through a CSR.
    let k3 = NodeKey::generate().unwrap();
    let r3 = r
        .client(&a)
        .renew(Some(&make_csr(&k3).unwrap()))
        .await
        .unwrap();
    let a3 = Node {
        cert: NodeCert::from_pem(&r3.certificate).unwrap(),
        key: k3,
    };
    assert_eq!(a3.cert.prefix, a.cert.prefix);

    // Announce with the rotated identity; b bootstraps and gets a, never itself.
    assert!(
        r.client(&a3)
            .announce(&announcement(&a3, 4000))
            .await
            .unwrap()
            .stored
    );
    let peers = r.client(&b).bootstrap(5).await.unwrap();
    assert_eq!(peers.len(), 1);
    let v = CaVerifier::new(&r.trust()).unwrap();
    let got = peers[0]
        .verify(&v, SystemTime::now(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(got.announcement.prefix, a.cert.prefix);
    assert!(
        r.client(&a3).bootstrap(5).await.unwrap().is_empty(),
        "never the requester itself"
    );

    // An older announcement does not replace a newer one.
    let mut old = PeerAnnouncement {
        prefix: a3.cert.prefix,
        addresses: vec!["127.0.0.1:1".parse().unwrap()],
        timestamp: unix_secs(SystemTime::now()) - 100,
        tcp_port: None,
        topology: None,
    };
    assert!(
        !r.client(&a3)
            .announce(&old.sign(&a3.cert, &a3.key).unwrap())
            .await
            .unwrap()
            .stored
    );
    old.timestamp += 200;
    assert!(
        r.client(&a3)
            .announce(&old.sign(&a3.cert, &a3.key).unwrap())
            .await
            .unwrap()
            .stored
    );

    // a may not relay b's announcement as its own.
    let e = r
        .client(&a3)
        .announce(&announcement(&b, 4001))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), (400, ErrorCode::BadAnnouncement));
}

async fn bootstrap_excludes_revoked_and_revoked_are_refused(db: Db) {
    let r = TestRegistry::start_with(&db, &["--enrolment", "open"]).await;
    let mut nodes = vec![];
    for i in 0..4 {
        let n = r.enrol(None).await;
        r.client(&n)
            .announce(&announcement(&n, 5000 + i))
            .await
            .unwrap();
        nodes.push(n);
    }
    let prefixes = |v: Vec<re6st::identity::SignedAnnouncement>| -> Vec<String> {
        let ver = CaVerifier::new(&Trust::new(&r.ca_der, None)).unwrap();
        let mut p: Vec<String> = v
            .iter()
            .map(|s| {
                s.verify(&ver, SystemTime::now(), Duration::from_secs(60))
                    .unwrap()
                    .announcement
                    .prefix
                    .to_string()
            })
            .collect();
        p.sort();
        p
    };
    let got = prefixes(r.client(&nodes[0]).bootstrap(10).await.unwrap());
    assert_eq!(got.len(), 3);
    assert!(!got.contains(&nodes[0].cert.prefix.to_string()));
    assert_eq!(r.client(&nodes[0]).bootstrap(2).await.unwrap().len(), 2);

    let reg = &r.registry;
    off_runtime(|| {
        reg.store.revoke(
            &reg.ca,
            RevokeTarget::Prefix(nodes[1].cert.prefix),
            SystemTime::now(),
        )
    })
    .unwrap();
    let got = prefixes(r.client(&nodes[0]).bootstrap(10).await.unwrap());
    assert_eq!(got.len(), 2);
    assert!(!got.contains(&nodes[1].cert.prefix.to_string()));
    // The CRL lists it.
    let crl = Crl::from_pem(&r.anon().crl().await.unwrap(), &r.ca_der).unwrap();
    assert!(crl.is_revoked(nodes[1].cert.serial));
    // Revoked certificate: 403 certificate_revoked on every mTLS endpoint.
    let c1 = r.client(&nodes[1]);
    assert_eq!(
        api_code(c1.bootstrap(3).await.unwrap_err()),
        (403, ErrorCode::CertificateRevoked)
    );
    assert_eq!(
        api_code(c1.renew(None).await.unwrap_err()),
        (403, ErrorCode::CertificateRevoked)
    );
    assert_eq!(
        api_code(c1.announce(&announcement(&nodes[1], 1)).await.unwrap_err()),
        (403, ErrorCode::CertificateRevoked)
    );
}

async fn expect_error(resp: reqwest::Response, status: u16, code: ErrorCode) {
    assert_eq!(resp.status().as_u16(), status);
    let body: ApiError = resp.json().await.expect("a JSON error body");
    assert_eq!(body.error, code, "{}", body.message);
    assert!(!body.message.is_empty());
}

async fn bad_input_gets_a_4xx_json_error_and_changes_nothing(db: Db) {
    let r = TestRegistry::start_with(&db, &[]).await;
    let tok = r.tokens(2);
    let first = r.enrol(Some(&tok[0])).await;
    let raw = r.raw(None);
    let url = |p: &str| format!("{}{p}", r.url);
    let serial = || {
        off_runtime(|| {
            r.registry
                .store
                .meta(re6st::registry::store::META_NEXT_SERIAL)
                .unwrap()
        })
    };
    let before = (r.counts(), serial());
    let good_csr = make_csr(&NodeKey::generate().unwrap()).unwrap();
    let mut tampered = {
        use base64::Engine;
        let b64: String = good_csr
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let n = tampered.len();
    tampered[n - 2] ^= 0x41;
    let tampered =
        re6st::identity::cert_pem(&tampered).replace("CERTIFICATE", "CERTIFICATE REQUEST");

    let enrol = |csr: &str, token: Option<&str>| {
        raw.post(url(api::PATH_ENROL)).json(&api::EnrolRequest {
            csr: csr.into(),
            token: token.map(Into::into),
        })
    };
    expect_error(
        enrol("hello", Some(&tok[1])).send().await.unwrap(),
        400,
        ErrorCode::BadPem,
    )
    .await;
    expect_error(
        enrol(&tampered, Some(&tok[1])).send().await.unwrap(),
        400,
        ErrorCode::BadCsrSignature,
    )
    .await;
    expect_error(
        enrol(RSA_CSR, Some(&tok[1])).send().await.unwrap(),
        400,
        ErrorCode::UnsupportedKeyType,
    )
    .await;
    let garbage =
        "-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQA=\n-----END CERTIFICATE REQUEST-----\n";
    expect_error(
        enrol(garbage, Some(&tok[1])).send().await.unwrap(),
        400,
        ErrorCode::MalformedCsr,
    )
    .await;
    expect_error(
        enrol(&good_csr, Some(&tok[0])).send().await.unwrap(),
        403,
        ErrorCode::TokenUsed,
    )
    .await;
    expect_error(
        enrol(&good_csr, Some("no-such-token"))
            .send()
            .await
            .unwrap(),
        403,
        ErrorCode::UnknownToken,
    )
    .await;
    expect_error(
        enrol(&good_csr, None).send().await.unwrap(),
        401,
        ErrorCode::TokenRequired,
    )
    .await;
    let big = format!("{{\"csr\":\"{}\"}}", "A".repeat(api::MAX_BODY + 10));
    let resp = raw
        .post(url(api::PATH_ENROL))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, ErrorCode::PayloadTooLarge).await;
    let resp = raw
        .post(url(api::PATH_ENROL))
        .header("content-type", "application/json")
        .body("{\"csr\":")
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, ErrorCode::BadRequest).await;
    let resp = raw
        .post(url(api::PATH_ENROL))
        .header("content-type", "application/json")
        .body("{\"token\":\"x\"}")
        .send()
        .await
        .unwrap();
    expect_error(resp, 422, ErrorCode::BadRequest).await;
    let resp = raw
        .post(url(api::PATH_ENROL))
        .body("csr=x")
        .send()
        .await
        .unwrap();
    expect_error(resp, 415, ErrorCode::UnsupportedMediaType).await;
    expect_error(
        raw.get(url("/v1/nothing")).send().await.unwrap(),
        404,
        ErrorCode::NotFound,
    )
    .await;
    expect_error(
        raw.get(url("/")).send().await.unwrap(),
        404,
        ErrorCode::NotFound,
    )
    .await;
    expect_error(
        raw.get(url(api::PATH_ENROL)).send().await.unwrap(),
        405,
        ErrorCode::MethodNotAllowed,
    )
    .await;

    // mTLS endpoints without a client certificate.
    let resp = raw
        .post(url(api::PATH_RENEW))
        .json(&api::RenewRequest::default())
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, ErrorCode::ClientCertificateRequired).await;
    let resp = raw
        .post(url(api::PATH_ANNOUNCE))
        .json(&announcement(&first, 9))
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, ErrorCode::ClientCertificateRequired).await;
    expect_error(
        raw.get(url("/v1/bootstrap?n=3")).send().await.unwrap(),
        401,
        ErrorCode::ClientCertificateRequired,
    )
    .await;

    // With a certificate, bad parameters.
    let mtls = r.raw(Some(first.identity()));
    expect_error(
        mtls.get(url("/v1/bootstrap?n=0")).send().await.unwrap(),
        400,
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        mtls.get(url(&format!("/v1/bootstrap?n={}", api::MAX_BOOTSTRAP + 1)))
            .send()
            .await
            .unwrap(),
        400,
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        mtls.get(url("/v1/bootstrap?n=abc")).send().await.unwrap(),
        400,
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        mtls.get(url("/v1/bootstrap")).send().await.unwrap(),
        400,
        ErrorCode::BadRequest,
    )
    .await;
    let resp = mtls
        .post(url(api::PATH_RENEW))
        .json(&api::RenewRequest {
            csr: Some("junk".into()),
        })
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, ErrorCode::BadPem).await;
    let mut forged = announcement(&first, 7);
    forged.signature = forged.signature.chars().rev().collect();
    expect_error(
        mtls.post(url(api::PATH_ANNOUNCE))
            .json(&forged)
            .send()
            .await
            .unwrap(),
        400,
        ErrorCode::BadAnnouncement,
    )
    .await;

    // A client certificate from another CA fails the TLS handshake.
    let other_ca = re6st::identity::Ca::generate(
        "fd00::/48".parse().unwrap(),
        1,
        SystemTime::now(),
        Duration::from_secs(999),
    )
    .unwrap();
    let k = NodeKey::generate().unwrap();
    let now = SystemTime::now();
    let p = re6st::identity::IssueParams {
        serial: 2,
        not_before: now,
        not_after: now + Duration::from_secs(99),
    };
    let stranger = Node {
        cert: NodeCert::from_der(
            &other_ca
                .issue_node(&k.spki_der(), first.cert.prefix, p)
                .unwrap(),
        )
        .unwrap(),
        key: k,
    };
    assert!(
        r.raw(Some(stranger.identity()))
            .get(url("/v1/bootstrap?n=1"))
            .send()
            .await
            .is_err()
    );

    // Nothing changed: same nodes, certificates, tokens used, serial counter.
    assert_eq!((r.counts(), serial()), before);
    // And the unused token still works.
    r.enrol(Some(&tok[1])).await;
}

async fn exhausted_prefix_space_is_a_409(db: Db) {
    let r =
        TestRegistry::start_with(&db, &["--network", "fd00:7::/63", "--enrolment", "open"]).await;
    r.enrol(None).await;
    r.enrol(None).await;
    let before = r.counts();
    let e = r
        .anon()
        .enrol(&make_csr(&NodeKey::generate().unwrap()).unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(api_code(e), (409, ErrorCode::PrefixSpaceExhausted));
    assert_eq!(r.counts(), before);
}

async fn concurrent_enrolments_get_distinct_prefixes_and_serials(db: Db) {
    let r = TestRegistry::start_with(&db, &["--enrolment", "open"]).await;
    let keys: Vec<String> = (0..200)
        .map(|_| make_csr(&NodeKey::generate().unwrap()).unwrap())
        .collect();
    let client = r.anon();
    let mut tasks = tokio::task::JoinSet::new();
    for csr in keys {
        let c = client.clone();
        tasks.spawn(async move {
            NodeCert::from_pem(&c.enrol(&csr, None).await.unwrap().certificate).unwrap()
        });
    }
    let mut prefixes = std::collections::HashSet::new();
    let mut serials = std::collections::HashSet::new();
    while let Some(c) = tasks.join_next().await {
        let c = c.unwrap();
        assert!(
            prefixes.insert(c.prefix),
            "prefix {} issued twice",
            c.prefix
        );
        assert!(serials.insert(c.serial), "serial {} issued twice", c.serial);
    }
    assert_eq!((prefixes.len(), serials.len()), (200, 200));
    assert_eq!(r.counts().0, 200);
}

async fn expired_prefixes_are_released_after_the_grace_period(db: Db) {
    // Two /64s, 1-second certificates, 1 second of grace, sweeps every 100 ms.
    let r = TestRegistry::start_with(
        &db,
        &[
            "--network",
            "fd00:8::/63",
            "--enrolment",
            "open",
            "--cert-lifetime",
            "1s",
            "--grace-period",
            "1s",
            "--sweep-every",
            "100ms",
        ],
    )
    .await;
    let a = r.enrol(None).await;
    let b = r.enrol(None).await;
    let csr = || make_csr(&NodeKey::generate().unwrap()).unwrap();
    assert_eq!(
        api_code(r.anon().enrol(&csr(), None).await.unwrap_err()),
        (409, ErrorCode::PrefixSpaceExhausted)
    );
    // An expired node may not bootstrap, but may still renew within the grace period
    // (renewal keeps its prefix, so only the other one is released).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api_code(r.client(&a).bootstrap(1).await.unwrap_err()),
        (403, ErrorCode::CertificateExpired)
    );
    let renewed = r.client(&a).renew(None).await.unwrap();
    assert!(renewed.renewed);
    assert_eq!(
        NodeCert::from_pem(&renewed.certificate).unwrap().prefix,
        a.cert.prefix
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let c = loop {
        match r.anon().enrol(&csr(), None).await {
            Ok(resp) => break NodeCert::from_pem(&resp.certificate).unwrap(),
            Err(e) => assert_eq!(api_code(e), (409, ErrorCode::PrefixSpaceExhausted)),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prefix never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        c.prefix, b.cert.prefix,
        "b's prefix was released and reused"
    );
    assert_eq!(
        api_code(r.client(&b).renew(None).await.unwrap_err()),
        (403, ErrorCode::UnknownCertificate)
    );
}

#[test]
fn https_certificate_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let reg = re6st::registry::core::Registry::open(
        dir.path(),
        None,
        "https://127.0.0.1:1".into(),
        |_| {},
        now,
    )
    .unwrap();
    let tls = re6st::registry::server::server_tls(&reg, &["127.0.0.1".into()], now).unwrap();
    let first = tls.config();
    assert!(
        !tls.refresh_if_due(&reg, now + Duration::from_secs(59 * 86_400))
            .unwrap()
    );
    assert!(
        tls.refresh_if_due(&reg, now + Duration::from_secs(61 * 86_400))
            .unwrap()
    );
    assert!(!std::sync::Arc::ptr_eq(&first, &tls.config()));
}

async fn network_config_version_changes_only_with_parameters(db: Db) {
    use re6st::registry::core::Registry;
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let url = "https://r.example:8443".to_string();
    let place = db.place(dir.path());
    let open = |f: fn(&mut re6st::registry::core::Settings)| {
        Registry::open_at(&place, None, url.clone(), f, now).unwrap()
    };
    let v1 = open(|_| {}).settings().network.version;
    let again = open(|_| {});
    assert_eq!(again.settings().network.version, v1);
    let ca_key = again.ca.public_key().clone();
    drop(again);
    let r = open(|s| s.network.tunnels = 6);
    assert_eq!(r.settings().network.version, v1 + 1);
    let cfg = r.config().network_config.verify(&ca_key).unwrap();
    assert_eq!((cfg.tunnels, cfg.version), (6, v1 + 1));
    drop(r);
    // Settings persist: a plain restart keeps k = 6.
    assert_eq!(open(|_| {}).settings().network.tunnels, 6);
}

/// A registry without IPv4 gets `--ipv4` on a restart: the signed network
/// configuration says it, new nodes get a subnet with their certificate,
/// and a node enrolled before gets one at its next renewal (due for that
/// alone). The IPv4 network cannot change afterwards.
async fn ipv4_given_later_reaches_running_nodes_at_renewal(db: Db) {
    let r =
        TestRegistry::start_with(&db, &["--network", "fd00:9::/48", "--enrolment", "open"]).await;
    let ca_key = re6st::identity::ca_public_key(&r.ca_der).unwrap();
    let old = r.enrol(None).await;
    assert_eq!(old.cert.ipv4, None);
    let v1 = r.anon().network().await.unwrap().verify(&ca_key).unwrap();
    assert_eq!(v1.ipv4, None);
    let not_due = r.client(&old).renew(None).await.unwrap();
    assert!(!not_due.renewed);

    let r = r
        .restart(&["--ipv4", "10.42.0.0/16", "--ipv4-prefix-len", "24"])
        .await;
    let v2 = r.anon().network().await.unwrap().verify(&ca_key).unwrap();
    assert_eq!(v2.ipv4, Some("10.42.0.0/16".parse().unwrap()));
    assert_eq!(v2.version, v1.version + 1);
    let new = r.enrol(None).await;
    assert_eq!(new.cert.ipv4, Some("10.42.0.0/24".parse().unwrap()));
    assert_eq!(new.cert.ipv4_address(), Some("10.42.0.1".parse().unwrap()));
    let renewed = r.client(&old).renew(None).await.unwrap();
    assert!(renewed.renewed);
    let cert = NodeCert::from_pem(&renewed.certificate).unwrap();
    assert_eq!(cert.prefix, old.cert.prefix);
    assert_eq!(cert.ipv4, Some("10.42.1.0/24".parse().unwrap()));
    CaVerifier::new(&r.trust())
        .unwrap()
        .verify(&cert.der, SystemTime::now())
        .unwrap();
    // The subnet is the node's from now on.
    let again = r.client(&old).renew(None).await.unwrap();
    assert!(!again.renewed);
    assert_eq!(
        NodeCert::from_pem(&again.certificate).unwrap().serial,
        cert.serial
    );

    // A plain restart keeps IPv4; another network is refused.
    let r = r.restart(&[]).await;
    let v3 = r.anon().network().await.unwrap().verify(&ca_key).unwrap();
    assert_eq!((v3.ipv4, v3.version), (v2.ipv4, v2.version));
    let stopped = r.pause().await;
    let place = db.place(stopped.dir());
    let mut e = String::new();
    // Connections still being served hold the old registry's directory
    // lock for a moment.
    for _ in 0..100 {
        let refused = off_runtime(|| {
            re6st::registry::core::Registry::open_at(
                &place,
                None,
                "https://x:1".into(),
                |s| s.network.ipv4 = Some("10.43.0.0/16".parse().unwrap()),
                SystemTime::now(),
            )
            .map(|_| ())
        });
        e = format!("{:#}", refused.unwrap_err());
        if !e.contains("another registry is running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(e.contains("fixed once set"), "{e}");
}

/// What a node that waits for its registry retries and what it gives up
/// on: an outage is transient, a refusal or a registry of another CA is
/// final.
#[tokio::test]
async fn client_errors_say_whether_retrying_can_help() {
    let r = TestRegistry::start(&["--network", "fd00:8::/63"]).await;
    // A refusal: no token.
    let key = NodeKey::generate().unwrap();
    let e = r
        .anon()
        .enrol(&make_csr(&key).unwrap(), None)
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert_eq!(e.code(), Some(ErrorCode::TokenRequired));
    // A registry whose certificate is not from the CA we trust.
    let other = re6st::test_pki::Pki::new();
    let client = re6st::registry::client::RegistryClient::new(
        &r.url,
        &Trust::new(other.ca.cert_der(), None),
        None,
    )
    .unwrap();
    let e = client.network().await.unwrap_err();
    assert!(matches!(e, ClientError::Http(_)), "{e}");
    assert!(!e.is_transient(), "a foreign CA is not an outage: {e}");
    // Nobody listening: an outage, and the message says so.
    let url = r.url.clone();
    r.stop().await;
    let e = fetch_ca(&url).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    // Refused once the listener is gone; reset if the connection met it
    // while it was closing (the machine is loaded).
    let m = e.to_string();
    assert!(
        m.contains("Connection refused") || m.contains("Connection reset"),
        "{e}"
    );
    // Failures of the registry (or of a proxy in front of it) are
    // transient; refusals are not.
    let api = |status, error| ClientError::Api {
        status,
        error: ApiError {
            error,
            message: String::new(),
        },
    };
    for (status, code, transient) in [
        (500, ErrorCode::Internal, true),
        (502, ErrorCode::Unknown, true),
        (503, ErrorCode::Unknown, true),
        (429, ErrorCode::Unknown, true),
        (403, ErrorCode::TokenUsed, false),
        (403, ErrorCode::TokenExpired, false),
        (403, ErrorCode::CertificateRevoked, false),
        (409, ErrorCode::PrefixSpaceExhausted, false),
        (404, ErrorCode::NotFound, false),
    ] {
        assert_eq!(
            api(status, code).is_transient(),
            transient,
            "{status} {code}"
        );
    }
}

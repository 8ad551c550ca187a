//! Several registry replicas on one PostgreSQL database: concurrent
//! enrolments, token reuse and revocations across replicas stay correct;
//! SIGKILL of a replica in the middle of enrolments leaves nothing
//! half-written and clients finish on the other replica.

mod registry_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use re6st::identity::{Crl, NodeCert, NodeKey, make_csr};
use re6st::registry::api::ErrorCode;
use re6st::registry::client::{ClientError, RegistryClient, fetch_ca};
use re6st::registry::core::off_runtime;
use re6st::registry::store::{Location, RevokeTarget, Store};
use registry_support::{Db, TestRegistry, check_consistency, spawn_registry};

fn csr() -> String {
    make_csr(&NodeKey::generate().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_200_concurrent_enrolments() {
    let Some(db) = Db::postgres() else { return };
    let a = TestRegistry::start_with(&db, &["--network", "fd00:42::/48"]).await;
    let b = TestRegistry::start_with(&db, &[]).await;
    assert_eq!(a.ca_der, b.ca_der, "the replicas share one CA");
    // 100 tokens, each raced by two keys, one on each replica.
    let tokens = a.tokens(100);
    let (ca, cb) = (a.anon(), b.anon());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in tokens.iter().enumerate() {
        for (j, c) in [&ca, &cb].into_iter().enumerate() {
            let (c, t, csr) = (c.clone(), t.clone(), csr());
            tasks.spawn(async move {
                let r = c.enrol(&csr, Some(&t)).await;
                (i, j, r.map(|r| NodeCert::from_pem(&r.certificate).unwrap()))
            });
        }
    }
    // Revocations on both replicas while enrolments run; a client that
    // reads the CRL from one replica then the other never sees its number
    // go down.
    let revoker = {
        let (ra, rb) = (a.registry.clone(), b.registry.clone());
        let (ua, ub) = (a.anon(), b.anon());
        tokio::spawn(async move {
            let mut seen = vec![];
            let mut revoked = 0;
            for round in 0..20 {
                let reg = if round % 2 == 0 { &ra } else { &rb };
                let reg2 = reg.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let nodes = reg2.store.list_nodes(false).unwrap();
                    nodes
                        .iter()
                        .find(|n| n.state == re6st::registry::store::NodeState::Active)
                        .map(|n| {
                            reg2.store
                                .revoke(&reg2.ca, RevokeTarget::Serial(n.serial), SystemTime::now())
                                .unwrap()
                        })
                })
                .await
                .unwrap();
                revoked += usize::from(done.is_some());
                for c in [&ua, &ub] {
                    let pem = c.crl().await.unwrap();
                    seen.push(Crl::from_pem(&pem, reg.ca.cert_der()).unwrap().number);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, revoked)
        })
    };
    let mut certs = vec![];
    let mut winners = vec![0usize; tokens.len()];
    while let Some(r) = tasks.join_next().await {
        let (i, _, r) = r.unwrap();
        match r {
            Ok(c) => {
                winners[i] += 1;
                certs.push(c);
            }
            Err(ClientError::Api { status, error }) => {
                assert_eq!((status, error.error), (403, ErrorCode::TokenUsed));
            }
            Err(e) => panic!("enrolment failed: {e}"),
        }
    }
    assert!(
        winners.iter().all(|w| *w == 1),
        "each token used exactly once"
    );
    assert_eq!(certs.len(), 100);
    let (seen, revoked) = revoker.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "CRL numbers went backwards: {seen:?}"
    );
    assert!(revoked > 0);
    // Then 100 open enrolments at once, half on each replica.
    let mut tasks = tokio::task::JoinSet::new();
    let open_a = TestRegistry::start_with(&db, &["--enrolment", "open"]).await;
    let open_b = TestRegistry::start_with(&db, &[]).await;
    for i in 0..100 {
        let c = if i % 2 == 0 {
            open_a.anon()
        } else {
            open_b.anon()
        };
        tasks.spawn(async move {
            NodeCert::from_pem(&c.enrol(&csr(), None).await.unwrap().certificate).unwrap()
        });
    }
    while let Some(c) = tasks.join_next().await {
        certs.push(c.unwrap());
    }
    let mut prefixes = HashSet::new();
    let mut serials = HashSet::new();
    for c in &certs {
        assert!(
            prefixes.insert(c.prefix),
            "prefix {} issued twice",
            c.prefix
        );
        assert!(serials.insert(c.serial), "serial {} issued twice", c.serial);
    }
    assert_eq!(certs.len(), 200);
    let (active, rev, issued, used) = a.counts();
    assert_eq!(
        (active + rev, issued, used),
        (200, 200, 100),
        "every certificate recorded once"
    );
    check_consistency(&a.registry.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_of_a_replica_mid_enrolment_leaves_nothing_half_written() {
    let Some(Db::Postgres(url)) = Db::postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let args = |net: bool| {
        let mut v = vec!["--database", url.as_str()];
        if net {
            v.extend(["--network", "fd00:43::/48"]);
        }
        v
    };
    let mut a = spawn_registry(&tmp.path().join("a"), &args(true));
    let b = spawn_registry(&tmp.path().join("b"), &args(false));
    let both = format!("{},{}", a.url, b.url);
    let ca = fetch_ca(&both).await.unwrap();
    let trust = re6st::identity::tls::Trust::new(&ca, None);
    let store = off_runtime(|| Store::open(&Location::Postgres(url.clone()))).unwrap();
    let tokens = off_runtime(|| {
        store
            .create_tokens(300, None, None, "sigkill", SystemTime::now())
            .unwrap()
    });
    // Every client prefers replica a (the first URL).
    let client = RegistryClient::new(&both, &trust, None).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens {
        let (c, done, sem) = (client.clone(), done.clone(), sem.clone());
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = c.enrol(&csr(), Some(&t)).await;
            done.fetch_add(1, Ordering::SeqCst);
            r.map(|r| NodeCert::from_pem(&r.certificate).unwrap())
        });
    }
    while done.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut received = vec![];
    while let Some(r) = tasks.join_next().await {
        received.push(
            r.unwrap()
                .expect("the other replica finished the enrolment"),
        );
    }
    assert_eq!(received.len(), 300);
    let mut prefixes = HashSet::new();
    let mut serials = HashSet::new();
    for c in &received {
        assert!(
            prefixes.insert(c.prefix),
            "prefix {} issued twice",
            c.prefix
        );
        assert!(serials.insert(c.serial), "serial {} issued twice", c.serial);
    }
    // Every certificate received is the node's newest in the database, and
    // nothing else was recorded.
    let rows = off_runtime(|| store.list_nodes(true).unwrap());
    assert_eq!(rows.len(), 300);
    let by_prefix: std::collections::HashMap<_, _> =
        rows.iter().map(|r| (r.prefix.clone(), r.serial)).collect();
    for c in &received {
        assert_eq!(by_prefix.get(&c.prefix.to_string()), Some(&c.serial));
    }
    let used = off_runtime(|| store.list_tokens().unwrap())
        .iter()
        .filter(|t| t.used_by.is_some())
        .count();
    assert_eq!(used, 300, "each token used once");
    check_consistency(&store);
    drop(b);
}

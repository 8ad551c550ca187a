//! Killing the registry (SIGKILL) during concurrent enrolments loses no
//! certificate that a client received and never reissues a prefix.

mod registry_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use re6st::identity::{NodeCert, NodeKey, make_csr};
use re6st::registry::client::{RegistryClient, fetch_ca};
use re6st::registry::store::{Location, Store};
use registry_support::spawn_registry;

async fn client(url: &str) -> RegistryClient {
    let ca = fetch_ca(url).await.unwrap();
    RegistryClient::new(url, &re6st::identity::tls::Trust::new(&ca, None), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_enrolments_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let mut reg = spawn_registry(&dir, &["--enrolment", "open", "--network", "fd00:99::/48"]);
    let c = client(&reg.url).await;
    let csrs: Vec<String> = (0..300)
        .map(|_| make_csr(&NodeKey::generate().unwrap()).unwrap())
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for csr in csrs {
        let (c, done, sem) = (c.clone(), done.clone(), sem.clone());
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = c
                .enrol(&csr, None)
                .await
                .ok()
                .map(|r| NodeCert::from_pem(&r.certificate).unwrap());
            done.fetch_add(1, Ordering::SeqCst);
            r
        });
    }
    // Kill mid-way, with enrolments in flight.
    while done.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    reg.child.kill().unwrap();
    reg.child.wait().unwrap();
    let mut received = vec![];
    while let Some(r) = tasks.join_next().await {
        received.extend(r.unwrap());
    }
    assert!(
        received.len() >= 100 && received.len() < 300,
        "killed mid-way: {} received",
        received.len()
    );

    // Restart on the same directory and enrol more.
    let reg = spawn_registry(&dir, &[]);
    let c = client(&reg.url).await;
    let mut after = vec![];
    for _ in 0..50 {
        let r = c
            .enrol(&make_csr(&NodeKey::generate().unwrap()).unwrap(), None)
            .await
            .unwrap();
        after.push(NodeCert::from_pem(&r.certificate).unwrap());
    }

    // Every certificate a client received is in the store, as issued.
    let store = Store::open(&Location::Sqlite(dir.join("registry.db"))).unwrap();
    let rows: HashMap<String, u64> = store
        .list_nodes(true)
        .unwrap()
        .into_iter()
        .map(|r| (r.prefix, r.serial))
        .collect();
    for c in &received {
        assert_eq!(
            rows.get(&c.prefix.to_string()),
            Some(&c.serial),
            "lost {} (serial {})",
            c.prefix,
            c.serial
        );
    }
    // No prefix or serial was issued twice, before or after the crash.
    let mut prefixes = HashSet::new();
    let mut serials = HashSet::new();
    for c in received.iter().chain(&after) {
        assert!(prefixes.insert(c.prefix), "prefix {} reissued", c.prefix);
        assert!(serials.insert(c.serial), "serial {} reissued", c.serial);
    }
    assert_eq!(rows.len(), store.list_nodes(false).unwrap().len());
    assert!(rows.len() >= received.len() + after.len());
}

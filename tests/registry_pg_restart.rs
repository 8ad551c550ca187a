//! PostgreSQL itself restarts (stopped as by a crash) while nodes renew:
//! the registry answers 503 `database_unavailable` meanwhile (never a 500,
//! never a hang), its health check says so, and everything works again,
//! with no half-written row, once the database is back. Its own binary:
//! it stops the test cluster, which other tests must not see.

mod registry_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use re6st::identity::NodeCert;
use re6st::registry::api::{self, ErrorCode};
use re6st::registry::client::ClientError;
use registry_support::{Db, TestRegistry, check_consistency, postgres};

async fn health(r: &TestRegistry) -> u16 {
    r.raw(None)
        .get(format!("{}{}", r.url, api::PATH_HEALTH))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_nodes_renew() {
    let Some(db) = Db::postgres() else { return };
    let cluster = postgres::cluster().unwrap();
    // Every renewal is due: each one issues a certificate.
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
    let mut nodes = vec![];
    for _ in 0..10 {
        nodes.push(r.enrol(None).await);
    }
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for n in &nodes {
        let (c, outage, stop) = (r.client(n), outage.clone(), stop.clone());
        tasks.spawn(async move {
            let (mut ok_before, mut unavailable, mut ok_after, mut serials) = (0, 0, 0, vec![]);
            while !stop.load(Ordering::SeqCst) {
                let start = Instant::now();
                match c.renew(None).await {
                    Ok(resp) => {
                        serials.push(NodeCert::from_pem(&resp.certificate).unwrap().serial);
                        if outage.load(Ordering::SeqCst) {
                            ok_after += 1;
                        } else {
                            ok_before += 1;
                        }
                    }
                    Err(ClientError::Api { status, error }) => {
                        assert_eq!(
                            (status, error.error),
                            (503, ErrorCode::DatabaseUnavailable),
                            "{}",
                            error.message
                        );
                        unavailable += 1;
                    }
                    Err(e) => panic!("renewal failed otherwise: {e}"),
                }
                assert!(start.elapsed() < Duration::from_secs(15), "a renewal hung");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok_before, unavailable, ok_after, serials)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health(&r).await, 200);
    cluster.stop();
    outage.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        health(&r).await,
        503,
        "the health check sees the database down"
    );
    cluster.start();
    // Back within seconds: health, then renewals.
    let back = Instant::now();
    while health(&r).await != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut serials = HashSet::new();
    let mut total_unavailable = 0;
    while let Some(t) = tasks.join_next().await {
        let (before, unavailable, after, s) = t.unwrap();
        assert!(
            before > 0 && after > 0,
            "{before} renewals before, {after} after"
        );
        total_unavailable += unavailable;
        for x in s {
            assert!(serials.insert(x), "serial {x} issued twice");
        }
    }
    assert!(total_unavailable > 0, "the outage was seen");
    println!(
        "{} renewals, {total_unavailable} answered 503 during the outage; healthy {:?} after the restart",
        serials.len(),
        back.elapsed()
    );
    check_consistency(&r.registry.store);
}

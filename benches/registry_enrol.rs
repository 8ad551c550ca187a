//! Enrolments per second: real HTTPS (reqwest over rustls with ring, HTTP/2)
//! to in-process registries on loopback. CSRs are made before the clock
//! starts. Every figure is printed with its baseline from the same run:
//!
//! - SQLite, one commit (one fsync) per enrolment, then group commit, at
//!   16 and 64 concurrent clients: the ratio is what batching the fsyncs
//!   buys; both keep `synchronous=FULL` (an answered enrolment is on disk).
//! - PostgreSQL (when installed): one replica, then two replicas on the
//!   same database with the clients split between them.
//!
//! cargo bench --bench registry_enrol [-- --quick] [-- --enrolments N]

#[path = "../tests/registry_support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use re6st::identity::tls::Trust;
use re6st::identity::{NodeKey, make_csr};
use re6st::registry::client::RegistryClient;
use re6st::registry::core::{Place, Registry};

struct Server {
    client: RegistryClient,
    registry: Arc<Registry>,
}

// The registries keep serving after `serve` returns (their task holds
// them); each figure starts new ones.

/// A registry on `place` (open enrolment, a /32 of /64s), serving on a
/// loopback port.
async fn serve(place: &Place) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let now = SystemTime::now();
    let net = "fd00:be::/32".parse().unwrap();
    let reg = Registry::open_at(place, Some(net), url.clone(), |s| s.open = true, now).unwrap();
    let tls = re6st::registry::server::server_tls(&reg, &["127.0.0.1".into()], now).unwrap();
    let trust = Trust::new(reg.ca.cert_der(), None);
    let registry = Arc::new(reg);
    tokio::spawn(re6st::registry::server::serve(
        registry.clone(),
        listener,
        tls,
        Duration::from_secs(3600),
        std::future::pending(),
    ));
    Server {
        client: RegistryClient::new(&url, &trust, None).unwrap(),
        registry,
    }
}

/// Enrolments per second of `n` enrolments, `concurrency` at a time,
/// spread over `clients` in turn.
async fn rate(clients: &[RegistryClient], n: usize, concurrency: usize) -> f64 {
    let csrs: Vec<String> = (0..n)
        .map(|_| make_csr(&NodeKey::generate().unwrap()).unwrap())
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, csr) in csrs.into_iter().enumerate() {
        let (c, sem) = (clients[i % clients.len()].clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            c.enrol(&csr, None).await.unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = arg("--enrolments")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 3000 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("registry_enrol: {n} enrolments per figure, HTTPS over loopback, a fresh database each");
        for concurrency in [16, 64] {
            let mut r = [0.0; 2];
            for (i, max_batch) in [1, usize::MAX].into_iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                let s = serve(&Place::sqlite(dir.path())).await;
                s.registry.writer.set_max_batch(max_batch);
                // Warm up (connection, TLS, caches).
                rate(std::slice::from_ref(&s.client), 20, 4).await;
                r[i] = rate(std::slice::from_ref(&s.client), n, concurrency).await;
            }
            println!(
                "sqlite   {concurrency:>3} clients: one commit per enrolment {:>6.0}/s, group commit {:>6.0}/s, ratio {:.2}",
                r[0],
                r[1],
                r[1] / r[0]
            );
        }
        let Some(cluster) = postgres::cluster() else {
            return;
        };
        for concurrency in [16, 64] {
            let mut r = [0.0; 2];
            for (i, replicas) in [1usize, 2].into_iter().enumerate() {
                let url = cluster.database();
                let place = |d: &std::path::Path| Place {
                    dir: d.to_path_buf(),
                    database: re6st::registry::store::Location::Postgres(url.clone()),
                    secret: Some(
                        re6st::registry::ca_key::CaSecret::new(postgres::TEST_SECRET.as_bytes())
                            .unwrap(),
                    ),
                };
                let mut clients = vec![];
                let mut dirs = vec![];
                for _ in 0..replicas {
                    let d = tempfile::tempdir().unwrap();
                    clients.push(serve(&place(d.path())).await.client);
                    dirs.push(d);
                }
                rate(&clients, 20, 4).await;
                r[i] = rate(&clients, n, concurrency).await;
            }
            println!(
                "postgres {concurrency:>3} clients: one replica {:>6.0}/s, two replicas {:>6.0}/s, ratio {:.2}",
                r[0],
                r[1],
                r[1] / r[0]
            );
        }
    });
}

//! Enrolments per second on one registry: real HTTPS (reqwest over rustls
//! with ring) to an in-process registry on loopback, SQLite with
//! synchronous=FULL (one fsync per enrolment). CSRs are made outside the
//! timed part. Throughput is reported in elements (enrolments) per second.
//!
//! cargo bench --bench registry_enrol

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use re6st::identity::tls::Trust;
use re6st::identity::{NodeKey, make_csr};
use re6st::registry::client::RegistryClient;
use re6st::registry::core::Registry;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let now = SystemTime::now();
        // A /32 of /64s: room for every iteration criterion runs.
        let net = "fd00:be::/32".parse().unwrap();
        let reg =
            Registry::open(dir.path(), Some(net), url.clone(), |s| s.open = true, now).unwrap();
        let tls = re6st::registry::server::server_tls(&reg, &["127.0.0.1".into()], now).unwrap();
        let trust = Trust::new(reg.ca.cert_der(), None);
        tokio::spawn(re6st::registry::server::serve(
            Arc::new(reg),
            listener,
            tls,
            Duration::from_secs(3600),
            std::future::pending(),
        ));
        RegistryClient::new(&url, &trust, None).unwrap()
    });
    let mut g = c.benchmark_group("registry_enrol");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    for concurrency in [1usize, 16] {
        g.bench_function(format!("concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let csrs: Vec<String> = (0..iters)
                    .map(|_| make_csr(&NodeKey::generate().unwrap()).unwrap())
                    .collect();
                rt.block_on(async {
                    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
                    let start = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for csr in csrs {
                        let (c, sem) = (client.clone(), sem.clone());
                        set.spawn(async move {
                            let _p = sem.acquire().await.unwrap();
                            c.enrol(&csr, None).await.unwrap();
                        });
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

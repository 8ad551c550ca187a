//! Abusive clients do not stop the others: an oversized body gets its 413
//! (not a reset) even under load, slow clients (slowloris: headers or body
//! one byte at a time) are cut off, and 10,000 idle TLS connections cost a
//! bounded amount of memory while enrolments go on.

mod registry_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use re6st::identity::tls::Trust;
use re6st::identity::{NodeKey, make_csr};
use re6st::registry::api::{self, ApiError, ErrorCode};
use re6st::registry::client::{RegistryClient, fetch_ca};
use registry_support::{TestRegistry, spawn_registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the registry at `addr` (HTTP/1.1), handshake done.
async fn tls(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

fn http1(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut cfg = Trust::new(ca_der, None).client_config(None).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Reads an HTTP/1.1 answer to its end (the server closes): status and body.
async fn answer(s: &mut Tls) -> (u16, String) {
    let mut buf = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Whether the server closed `s` within `within` (EOF or error on read).
async fn closed(s: &mut Tls, within: Duration) -> bool {
    let mut b = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn csr() -> String {
    make_csr(&NodeKey::generate().unwrap()).unwrap()
}

async fn enrol_timed(c: &RegistryClient) -> Duration {
    let start = Instant::now();
    c.enrol(&csr(), None).await.unwrap();
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_under_load_and_changes_nothing() {
    let r = TestRegistry::start(&["--enrolment", "open"]).await;
    let before = r.counts();
    let body = format!("{{\"csr\":\"{}\"}}", "A".repeat(200 * 1024));
    let h2 = r.raw(None);
    let h1 = {
        let mut cfg = r.trust().client_config(None).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .http1_only()
            .build()
            .unwrap()
    };
    let cfg = http1(&r.ca_der);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..96 {
        let (url, body, addr, cfg) = (
            format!("{}{}", r.url, api::PATH_ENROL),
            body.clone(),
            r.addr,
            cfg.clone(),
        );
        let c = if i % 2 == 0 { h1.clone() } else { h2.clone() };
        tasks.spawn(async move {
            if i % 3 == 0 {
                // Chunked, without a Content-Length: the limit is found
                // while reading.
                let mut s = tls(addr, cfg).await.unwrap();
                let mut req = format!(
                    "POST {} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    api::PATH_ENROL
                )
                .into_bytes();
                for chunk in body.as_bytes().chunks(8192) {
                    req.extend(format!("{:x}\r\n", chunk.len()).bytes());
                    req.extend(chunk);
                    req.extend(b"\r\n");
                }
                req.extend(b"0\r\n\r\n");
                s.write_all(&req).await.expect("the whole body is read");
                let (status, body) = answer(&mut s).await;
                assert_eq!(status, 413, "{body}");
                assert!(body.contains("payload_too_large"), "{body}");
                return;
            }
            let resp = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer, not a reset");
            assert_eq!(resp.status().as_u16(), 413);
            let e: ApiError = resp.json().await.expect("the 413's JSON body");
            assert_eq!(e.error, ErrorCode::PayloadTooLarge);
        });
    }
    // Real enrolments at the same time.
    let c = r.anon();
    for _ in 0..10 {
        enrol_timed(&c).await;
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let after = r.counts();
    assert_eq!((after.0 - before.0, after.2 - before.2), (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_delay_others() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = spawn_registry(
        &tmp.path().join("r"),
        &["--enrolment", "open", "--request-timeout", "2s"],
    );
    let ca = fetch_ca(&reg.url).await.unwrap();
    let addr: SocketAddr = reg.url.trim_start_matches("https://").parse().unwrap();
    let cfg = http1(&ca);
    // 150 connections trickling headers, 50 trickling a body, 50 that never
    // start TLS.
    let mut slow = vec![];
    for i in 0..200 {
        let mut s = tls(addr, cfg.clone()).await.unwrap();
        let head = if i < 150 {
            format!("POST {} HTTP/1.1\r\nHost: r\r\n", api::PATH_ENROL)
        } else {
            format!(
                "POST {} HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
                api::PATH_ENROL
            )
        };
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    let mut mute = vec![];
    for _ in 0..50 {
        mute.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let trickle = tokio::spawn(async move {
        // One byte per connection every 500 ms, for 4 s.
        for _ in 0..8 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"x").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        slow
    });
    let c = RegistryClient::new(&reg.url, &Trust::new(&ca, None), None).unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(enrol_timed(&c).await);
    }
    assert!(
        worst < Duration::from_secs(2),
        "an enrolment took {worst:?}"
    );
    // Past the 2 s request timeout, every slow connection was closed: the
    // header ones silently, the body ones with a 408.
    let mut slow = trickle.await.unwrap();
    let mut timeouts = 0;
    for (i, s) in slow.iter_mut().enumerate() {
        if i < 150 {
            assert!(
                closed(s, Duration::from_secs(3)).await,
                "slow headers {i} still open"
            );
        } else {
            let (status, _) = answer(s).await;
            timeouts += usize::from(status == 408);
        }
    }
    assert_eq!(timeouts, 50, "slow bodies get a 408");
    for mut m in mute {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(3), m.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a mute connection stayed open"
        );
    }
}

/// Raises this process's open-file limit to `n` (root may raise the hard
/// limit too); returns what it got.
fn raise_nofile(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct in and out.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit {
            rlim_cur: n,
            rlim_max: lim.rlim_max.max(n),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_tls_connections_do_not_stop_enrolments() {
    const IDLE: usize = 10_000;
    let got = raise_nofile(IDLE as u64 + 2048);
    assert!(
        got >= IDLE as u64 + 256,
        "the open-file limit is {got}: the test needs {IDLE} connections (run as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    // The registry inherits the raised limit.
    let reg = spawn_registry(
        &tmp.path().join("r"),
        &["--enrolment", "open", "--max-connections", "1000"],
    );
    let pid = reg.child.id();
    let ca = fetch_ca(&reg.url).await.unwrap();
    let addr: SocketAddr = reg.url.trim_start_matches("https://").parse().unwrap();
    let c = RegistryClient::new(&reg.url, &Trust::new(&ca, None), None).unwrap();
    enrol_timed(&c).await;
    let base_rss = rss_kib(pid);
    let cfg = http1(&ca);
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..IDLE {
        let (cfg, sem) = (cfg.clone(), sem.clone());
        opening.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            tls(addr, cfg).await
        });
    }
    // Enrolments while the idle connections pile up, and after.
    let mut worst = Duration::ZERO;
    let mut held = Vec::with_capacity(IDLE);
    let mut failed = 0;
    while let Some(r) = opening.join_next().await {
        match r.unwrap() {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
        if (held.len() + failed) % 1000 == 0 {
            worst = worst.max(enrol_timed(&c).await);
        }
    }
    let opened = start.elapsed();
    for _ in 0..10 {
        worst = worst.max(enrol_timed(&c).await);
    }
    let rss = rss_kib(pid);
    let metrics_note = format!(
        "{} TLS connections opened in {opened:?} ({failed} failed), registry RSS {} -> {} MiB, slowest enrolment {worst:?}",
        held.len(),
        base_rss / 1024,
        rss / 1024
    );
    println!("{metrics_note}");
    assert!(held.len() + failed == IDLE);
    // The attack's handshakes share the CPU; the enrolling client keeps
    // its connection (it served requests), so it needs none.
    assert!(worst < Duration::from_secs(5), "{metrics_note}");
    assert!(
        rss < base_rss + 300 * 1024,
        "memory grew without bound: {metrics_note}"
    );
    // The server kept at most 1000: the oldest idle ones were closed.
    let mut open = 0;
    for s in held.iter_mut().rev().take(1500) {
        if !closed(s, Duration::from_millis(1)).await {
            open += 1;
        }
    }
    assert!(open <= 1000, "{open} of the newest 1500 still open");
}

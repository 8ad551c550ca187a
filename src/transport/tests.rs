//! Transport tests over loopback: mutual TLS, peer checks, CRL, liveness.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::test_pki::{Pki, fast};

/// Accepts one connection on `t` in the background.
fn accept_one(t: Arc<Transport>) -> tokio::task::JoinHandle<Option<Connected>> {
    tokio::spawn(async move {
        let incoming = t.accept().await?;
        t.handshake(incoming).await
    })
}

/// Nodes 2 and 3, and a tunnel from 2 to 3 (dialler's and acceptor's
/// ends).
async fn pair(pki: &Pki) -> (Arc<Transport>, Arc<Transport>, Connected, Connected) {
    let a = Arc::new(pki.transport(2, None));
    let b = Arc::new(pki.transport(3, None));
    let acc = accept_one(b.clone());
    let out = a
        .dial(&[b.local_addr().unwrap()], b.me().address)
        .await
        .unwrap();
    let inc = acc.await.unwrap().expect("accepted");
    (a, b, out, inc)
}

#[tokio::test]
async fn mutual_tls_identifies_both_sides_and_carries_datagrams() {
    let pki = Pki::new();
    let (a, b, out, inc) = pair(&pki).await;
    assert_eq!(out.peer.serial, 3);
    assert_eq!(inc.peer.serial, 2);
    assert_eq!(inc.peer.prefix, a.me().prefix);
    // 1414-byte datagrams from the first packet (initial MTU 1452).
    let max = out.conn.max_datagram_size().unwrap();
    assert!(max >= 1414, "max datagram {max}");
    out.conn
        .send_datagram(Bytes::from(vec![0x60; 1280]))
        .unwrap();
    let got = inc.conn.read_datagram().await.unwrap();
    assert_eq!(got.len(), 1280);
    assert_eq!(a.stats().dials, 1);
    assert_eq!(b.stats().accepted_handshakes, 1);
}

#[tokio::test]
async fn dialling_an_address_that_another_node_holds_names_that_node() {
    let pki = Pki::new();
    let a = pki.transport(2, None);
    let b = Arc::new(pki.transport(3, None));
    let acc = accept_one(b.clone());
    // b's socket, but we expect node 4's overlay address: node 4 was
    // replaced there by node 3.
    let expect: Ipv6Addr = "fd00:77:0:4::1".parse().unwrap();
    let err = a
        .dial(&[b.local_addr().unwrap()], expect)
        .await
        .unwrap_err();
    let DialError::OtherNode {
        addr,
        expected,
        found,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(
        (*addr, *expected, found.serial),
        (b.local_addr().unwrap(), expect, 3)
    );
    assert_eq!((a.stats().dials_failed, a.stats().dials_other_node), (1, 1));
    // The acceptor completed its handshake; the dialler closed at once.
    let inc = acc.await.unwrap().expect("handshake completed");
    let closed = inc.conn.closed().await;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == control::close::BAD_PEER.into()),
        "{closed}"
    );

    // The node dialled answers at another of its addresses: the dial
    // succeeds there.
    let c = Arc::new(pki.transport(4, None));
    let acc = accept_one(b.clone());
    let acc4 = accept_one(c.clone());
    let ok = a
        .dial(&[b.local_addr().unwrap(), c.local_addr().unwrap()], expect)
        .await
        .unwrap();
    assert_eq!(ok.peer.serial, 4);
    assert!(acc4.await.unwrap().is_some());
    acc.abort();
}

#[tokio::test]
async fn a_certificate_of_another_ca_still_fails_the_handshake() {
    let pki = Pki::new();
    let a = pki.transport(2, None);
    let stranger = Pki::new();
    let b = Arc::new(stranger.transport(3, None));
    let _acc = accept_one(b.clone());
    let err = a
        .dial(&[b.local_addr().unwrap()], b.me().address)
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Handshake(_)), "{err}");
    // Nor does another name make it acceptable.
    let _acc = accept_one(b.clone());
    let other: Ipv6Addr = "fd00:77:0:9::1".parse().unwrap();
    let err = a.dial(&[b.local_addr().unwrap()], other).await.unwrap_err();
    assert!(matches!(err, DialError::Handshake(_)), "{err}");
    assert_eq!(a.stats().dials_other_node, 0);
}

#[tokio::test]
async fn revoked_certificates_are_refused_both_ways_and_after_an_update() {
    let pki = Pki::new();
    // b knows that 2 is revoked: a (serial 2) cannot get in.
    let a = Arc::new(pki.transport(2, None));
    let b = Arc::new(pki.transport(3, Some(pki.crl(1, &[2]))));
    let acc = accept_one(b.clone());
    let r = a.dial(&[b.local_addr().unwrap()], b.me().address).await;
    // TLS 1.3: the client may see success, then a close; either way no tunnel.
    if let Ok(c) = r {
        let e = c.conn.closed().await;
        assert!(e.to_string().contains("evoked") || !e.to_string().is_empty());
    }
    assert!(acc.await.unwrap().is_none());
    assert_eq!(b.stats().refused_revoked, 1);

    // b dials a revoked a: the server certificate check fails.
    let acc = accept_one(a.clone());
    let err = b
        .dial(&[a.local_addr().unwrap()], a.me().address)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("evoked"), "{err}");
    acc.abort();
    // Also when b expected another node there: revoked is revoked.
    let acc = accept_one(a.clone());
    let err = b
        .dial(
            &[a.local_addr().unwrap()],
            "fd00:77:0:9::1".parse().unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("evoked"), "{err}");
    assert_eq!(b.stats().dials_other_node, 0);
    acc.abort();

    // a CRL update applies to new handshakes of a node that did not know.
    let c = Arc::new(pki.transport(4, None));
    let acc = accept_one(c.clone());
    assert!(
        a.dial(&[c.local_addr().unwrap()], c.me().address)
            .await
            .is_ok()
    );
    assert!(acc.await.unwrap().is_some());
    assert!(c.set_crl(pki.crl(2, &[2])).unwrap());
    assert!(!c.set_crl(pki.crl(1, &[])).unwrap(), "older CRL ignored");
    assert!(c.is_revoked(2) && !c.is_revoked(3));
    let acc = accept_one(c.clone());
    let _ = a.dial(&[c.local_addr().unwrap()], c.me().address).await;
    assert!(acc.await.unwrap().is_none());
}

#[tokio::test]
async fn a_silent_peer_is_noticed_within_the_idle_timeout() {
    let pki = Pki::new();
    let (_a, b, out, _inc) = pair(&pki).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(out.conn.close_reason().is_none(), "keep-alives hold it up");
    let cut = std::time::Instant::now();
    b.fault_switch().unwrap().set_blackhole(true);
    let e = out.conn.closed().await;
    let took = cut.elapsed();
    assert!(matches!(e, quinn::ConnectionError::TimedOut), "{e}");
    assert!(took < Duration::from_millis(1500), "noticed after {took:?}");
    assert!(b.fault_switch().unwrap().dropped() > 0);
}

#[tokio::test]
async fn dual_stack_wildcard_reaches_ipv4_peers() {
    let pki = Pki::new();
    let (cert, key) = pki.node(2);
    let a = match Transport::bind(
        "[::]:0".parse().unwrap(),
        cert,
        &key,
        pki.ca.cert_der(),
        None,
        fast(),
        None,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: no IPv6 socket here ({e})");
            return;
        }
    };
    let b = Arc::new(pki.transport(3, None));
    let acc = accept_one(b.clone());
    let port = b.local_addr().unwrap().port();
    let out = a
        .dial(
            &[format!("127.0.0.1:{port}").parse().unwrap()],
            b.me().address,
        )
        .await
        .unwrap();
    assert_eq!(out.peer.serial, 3);
    assert!(acc.await.unwrap().is_some());
}

//! The node-to-node mutual TLS configs of `identity::tls` in real
//! handshakes (tokio-rustls over loopback): the server is dialled by its
//! overlay address (IP SAN), both sides check the CA and the CRL.

use std::sync::Arc;

use re6st::identity::tls::{TlsIdentity, Trust};
use re6st::test_pki::Pki;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One handshake plus a ping/pong; Err(text) when either side refused.
async fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    name: &str,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        s.write_all(b"pong").await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let client_side = async {
        let mut c = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        c.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let c = client_side.await;
    let s = srv.await.unwrap();
    c.and(s)
}

#[tokio::test]
async fn mutual_tls_between_nodes() {
    let net = Pki::new();
    let (a, ka) = net.node(2);
    let (b, kb) = net.node(3);
    let none = Trust::new(net.ca.cert_der(), Some(&net.crl(1, &[])));
    let server = |t: &Trust| t.server_config(TlsIdentity::node(&a, &ka)).unwrap();
    let client = |t: &Trust| t.client_config(Some(TlsIdentity::node(&b, &kb))).unwrap();

    // Dialled by its overlay address: accepted both ways.
    exchange(server(&none), client(&none), "fd00:77:0:2::1")
        .await
        .unwrap();
    // Another address: the IP SAN does not match.
    let e = exchange(server(&none), client(&none), "fd00:77:0:3::1")
        .await
        .unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    // The server's CRL revokes the client.
    let rev_b = Trust::new(net.ca.cert_der(), Some(&net.crl(1, &[3])));
    let e = exchange(server(&rev_b), client(&none), "fd00:77:0:2::1")
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("revoked"), "{e}");
    // The client's CRL revokes the server.
    let rev_a = Trust::new(net.ca.cert_der(), Some(&net.crl(1, &[2])));
    let e = exchange(server(&none), client(&rev_a), "fd00:77:0:2::1")
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("revoked"), "{e}");
    // No client certificate: refused.
    let anon = none.client_config(None).unwrap();
    assert!(
        exchange(server(&none), anon, "fd00:77:0:2::1")
            .await
            .is_err()
    );
    // A certificate from another CA: refused.
    let other = Pki::new();
    let (c, kc) = other.node(3);
    let stranger = none
        .client_config(Some(TlsIdentity::node(&c, &kc)))
        .unwrap();
    assert!(
        exchange(server(&none), stranger, "fd00:77:0:2::1")
            .await
            .is_err()
    );
}

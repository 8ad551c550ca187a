//! Route-origin authentication's CPU: verifying one origin proof (what a
//! node does once per claim, i.e. per prefix and seqno of another origin)
//! and signing one (once per own prefix and seqno), with the node's key
//! kind (ECDSA P-256). The verification cost times the verification rate
//! the virtual network measures gives the share of a core
//! (docs/security.md).
//!
//! cargo bench --bench origin_proof

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use re6st::identity::origin::{router_id, sign, verify};
use re6st::test_pki::Pki;
use re6st_babel::engine::Claim;

fn proof(c: &mut Criterion) {
    let pki = Pki::new();
    let (cert, key) = pki.node(2);
    let claim = Claim {
        prefix: cert.prefix.into(),
        router_id: router_id(cert.prefix),
        seqno: 7,
    };
    let p = sign(&key, cert.public_key.kind, &claim, 1_000_000).unwrap();
    assert!(verify(&cert.public_key, &claim, &p));
    let mut g = c.benchmark_group("origin_proof");
    g.bench_function("verify", |b| {
        b.iter(|| {
            verify(
                black_box(&cert.public_key),
                black_box(&claim),
                black_box(&p),
            )
        })
    });
    g.bench_function("sign", |b| {
        b.iter(|| sign(&key, cert.public_key.kind, black_box(&claim), 1_000_000).unwrap())
    });
    g.finish();
}

criterion_group!(benches, proof);
criterion_main!(benches);

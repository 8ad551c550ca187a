//! Route-origin proofs: a node signs, with its certificate's key, each
//! (prefix, router-id, seqno) it originates, with the time it signed; any
//! node holding the certificate checks the signature. The proof rides in
//! the Origin Proof sub-TLV of a Babel Update ([`re6st_babel::engine::Claim`],
//! [`re6st_babel::wire::OriginProof`]); what may be claimed at all, and how
//! old a proof may be, is [`super::origins`]'s business.
//!
//! The router-id is bound to the certificate by construction: it is a hash
//! of the certificate's prefix ([`router_id`]), so a verifier recomputes it
//! from the certificate and never takes a router-id on trust.
//!
//! The signing time is there because Babel's seqnos are 16 bits and
//! compared modulo 2^16: a proof of seqno S kept for long enough (32,768
//! seqnos later) would claim a seqno *newer* than the origin's current one,
//! and win everywhere. Verifiers refuse proofs older than a lifetime much
//! shorter than the time the origin needs to go half-way round (its seqno
//! moves at most once a second), and origins move their seqno, hence sign
//! afresh, within that lifetime.
//!
//! The signed message is fixed-size binary, with its own context string
//! (so no other re6st signature can be replayed as a proof):
//!
//! ```text
//! "re6st route origin v1\0" | family:u8 (4|6) | plen:u8 | address:[16] |
//! router-id:[8] | seqno:u16be | signed_at:u32be (Unix seconds)
//! ```
//!
//! (an IPv4 address fills the first 4 bytes of `address`, the rest zero).
//! The proof is `signed_at:u32be | signature`, the signature in the
//! fixed-size form (ECDSA r||s: 64 bytes on P-256, 96 on P-384; Ed25519:
//! 64), not DER: smaller, and one length per key type. A P-256 proof is 68
//! bytes, its sub-TLV 70.

use ipnet::{IpNet, Ipv6Net};
use re6st_babel::engine::Claim;
use re6st_babel::wire::{OriginProof, RouterId};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, UnparsedPublicKey,
};

use super::{IdentityError, KeyKind, NodeKey, PublicKey};

const CONTEXT: &[u8] = b"re6st route origin v1\0";

/// Length of the signed message.
const MESSAGE_LEN: usize = CONTEXT.len() + 1 + 1 + 16 + 8 + 2 + 4;

/// Length of the signing time at the head of a proof.
const TIME_LEN: usize = 4;

/// The router-id of the node holding `prefix`: the first 8 bytes of
/// SHA-256("re6st router-id\0" | address | plen). It is the same across
/// restarts and renewals (same prefix), and every verifier recomputes it
/// from the certificate. All zeros and all ones are invalid in Babel: the
/// low bit of the first byte is flipped then (never happens in practice,
/// but the function must be total).
pub fn router_id(prefix: Ipv6Net) -> RouterId {
    let mut input = b"re6st router-id\0".to_vec();
    input.extend_from_slice(&prefix.network().octets());
    input.push(prefix.prefix_len());
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    if id == [0; 8] || id == [0xff; 8] {
        id[0] ^= 1;
    }
    RouterId(id)
}

/// The bytes signed for `claim` at `signed_at` (Unix seconds).
pub fn message(claim: &Claim, signed_at: u32) -> [u8; MESSAGE_LEN] {
    let mut m = [0u8; MESSAGE_LEN];
    let (head, rest) = m.split_at_mut(CONTEXT.len());
    head.copy_from_slice(CONTEXT);
    let (family, address) = match claim.prefix {
        IpNet::V4(p) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&p.network().octets());
            (4, a)
        }
        IpNet::V6(p) => (6, p.network().octets()),
    };
    rest[0] = family;
    rest[1] = claim.prefix.prefix_len();
    rest[2..18].copy_from_slice(&address);
    rest[18..26].copy_from_slice(&claim.router_id.0);
    rest[26..28].copy_from_slice(&claim.seqno.to_be_bytes());
    rest[28..32].copy_from_slice(&signed_at.to_be_bytes());
    m
}

/// The proof of `claim` by `key` (the origin's own key), signed at
/// `signed_at` (Unix seconds).
pub fn sign(
    key: &NodeKey,
    kind: KeyKind,
    claim: &Claim,
    signed_at: u32,
) -> Result<OriginProof, IdentityError> {
    let sig = key.sign(&message(claim, signed_at))?;
    let fixed = match kind {
        KeyKind::EcdsaP256 => ecdsa_der_to_fixed(&sig, 32)?,
        KeyKind::EcdsaP384 => ecdsa_der_to_fixed(&sig, 48)?,
        KeyKind::Ed25519 => sig,
    };
    let mut bytes = Vec::with_capacity(TIME_LEN + fixed.len());
    bytes.extend_from_slice(&signed_at.to_be_bytes());
    bytes.extend_from_slice(&fixed);
    OriginProof::new(&bytes)
        .ok_or_else(|| IdentityError::Internal(format!("{} byte origin proof", bytes.len())))
}

/// When `proof` says it was signed (Unix seconds), without checking it:
/// `None` if it is too short to say. Verifiers refuse a stale proof before
/// spending a signature check on it.
pub fn signed_at(proof: &OriginProof) -> Option<u32> {
    let t = proof.as_bytes().get(..TIME_LEN)?;
    Some(u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
}

/// Whether `proof` is `key`'s signature of `claim` (at the time it
/// carries).
pub fn verify(key: &PublicKey, claim: &Claim, proof: &OriginProof) -> bool {
    let Some(at) = signed_at(proof) else {
        return false;
    };
    let alg: &dyn ring::signature::VerificationAlgorithm = match key.kind {
        KeyKind::EcdsaP256 => &ECDSA_P256_SHA256_FIXED,
        KeyKind::EcdsaP384 => &ECDSA_P384_SHA384_FIXED,
        KeyKind::Ed25519 => &ED25519,
    };
    UnparsedPublicKey::new(alg, &key.raw)
        .verify(&message(claim, at), &proof.as_bytes()[TIME_LEN..])
        .is_ok()
}

/// An ASN.1 DER ECDSA signature (`SEQUENCE { INTEGER r, INTEGER s }`, what
/// ring signs) as r||s, each left-padded to `n` bytes.
fn ecdsa_der_to_fixed(der: &[u8], n: usize) -> Result<Vec<u8>, IdentityError> {
    let bad = || IdentityError::Internal("malformed ECDSA signature".into());
    let body = der_take(der, 0x30).ok_or_else(bad)?.0;
    let (r, rest) = der_take(body, 0x02).ok_or_else(bad)?;
    let (s, rest) = der_take(rest, 0x02).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let mut out = vec![0u8; 2 * n];
    for (i, int) in [r, s].into_iter().enumerate() {
        let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
        let int = &int[start..];
        if int.len() > n {
            return Err(bad());
        }
        out[(i + 1) * n - int.len()..(i + 1) * n].copy_from_slice(int);
    }
    Ok(out)
}

/// One DER element of type `tag` with a short or one-byte long length:
/// its content and what follows.
fn der_take(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = bytes.split_first()?;
    if t != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0..=0x7f => (usize::from(len), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;

    fn claim(prefix: &str, rid: RouterId, seqno: u16) -> Claim {
        Claim {
            prefix: prefix.parse().unwrap(),
            router_id: rid,
            seqno,
        }
    }

    #[test]
    fn sign_and_verify_with_every_key_kind() {
        let f = Pki::new();
        let (cert, key) = f.node(2);
        let rid = router_id(cert.prefix);
        let c = claim("fd00:77:0:2::/64", rid, 7);
        let p = sign(&key, cert.public_key.kind, &c, 1_000_000).unwrap();
        assert_eq!(p.as_bytes().len(), 68);
        assert_eq!(signed_at(&p), Some(1_000_000));
        assert!(verify(&cert.public_key, &c, &p));
        // Another signing time in front of the same signature: refused.
        let mut moved = p.as_bytes().to_vec();
        moved[3] ^= 1;
        assert!(!verify(
            &cert.public_key,
            &c,
            &OriginProof::new(&moved).unwrap()
        ));
        assert!(!verify(
            &cert.public_key,
            &c,
            &OriginProof::new(&[0; 3]).unwrap()
        ));
        // Any other seqno, prefix, router-id or key: refused.
        for other in [
            claim("fd00:77:0:2::/64", rid, 8),
            claim("fd00:77:0:2::/65", rid, 7),
            claim("fd00:77:0:3::/64", rid, 7),
            claim("fd00:77:0:2::/64", RouterId([1; 8]), 7),
        ] {
            assert!(!verify(&cert.public_key, &other, &p), "{other:?}");
        }
        let (cert3, _) = f.node(3);
        assert!(!verify(&cert3.public_key, &c, &p));
        // An IPv4 claim is a different message from the IPv6 one sharing
        // its first bytes.
        let v4 = claim("10.0.0.0/8", rid, 7);
        let v6 = claim("a00::/8", rid, 7);
        assert_ne!(message(&v4, 1), message(&v6, 1));
        // Ed25519 and P-384 keys too.
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let k = NodeKey::from_key_pair(rcgen::KeyPair::generate_for(alg).unwrap());
            let pk = k.public_key().unwrap();
            let p = sign(&k, pk.kind, &c, 1).unwrap();
            assert!(verify(&pk, &c, &p), "{:?}", pk.kind);
            assert!(!verify(&pk, &v4, &p));
        }
    }

    #[test]
    fn router_id_is_the_prefix_hash() {
        let a: Ipv6Net = "fd00:77:0:2::/64".parse().unwrap();
        let b: Ipv6Net = "fd00:77:0:2::/65".parse().unwrap();
        assert_eq!(router_id(a), router_id(a));
        assert_ne!(router_id(a), router_id(b));
        assert!(router_id(a).is_valid());
    }

    #[test]
    fn der_signatures_become_fixed_size() {
        // r = 0x00ff (a leading zero byte, as DER adds for a high bit),
        // s = 0x01.
        let der = [0x30, 7, 0x02, 2, 0x00, 0xff, 0x02, 1, 0x01];
        let fixed = ecdsa_der_to_fixed(&der, 4).unwrap();
        assert_eq!(fixed, [0, 0, 0, 0xff, 0, 0, 0, 1]);
        assert!(ecdsa_der_to_fixed(&der[..8], 4).is_err());
        assert!(ecdsa_der_to_fixed(&[0x30, 0], 4).is_err());
        let long = [0x30, 10, 0x02, 5, 1, 2, 3, 4, 5, 0x02, 1, 1];
        assert!(ecdsa_der_to_fixed(&long, 4).is_err());
    }
}

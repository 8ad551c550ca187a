//! Signed JSON blobs and certificate fingerprints.
//!
//! A signed object travels as `{"payload": "<JSON text>", "signature":
//! "<base64>"}`: the signature covers the exact payload bytes (no
//! re-serialisation), prefixed by a context string so that a signature made
//! for one kind of object can never be replayed as another.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::{IdentityError, PublicKey};

/// Upper bound on a signed payload: larger ones are refused before parsing.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// What a signature is for (domain separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureContext {
    /// The network configuration, signed by the CA.
    NetworkConfig,
    /// A peer announcement, signed by the node.
    PeerAnnouncement,
}

impl SignatureContext {
    fn prefix(self) -> &'static [u8] {
        match self {
            SignatureContext::NetworkConfig => b"re6st network config v1\0",
            SignatureContext::PeerAnnouncement => b"re6st peer announcement v1\0",
        }
    }

    /// The bytes actually signed for `payload`.
    pub fn message(self, payload: &str) -> Vec<u8> {
        let mut m = self.prefix().to_vec();
        m.extend_from_slice(payload.as_bytes());
        m
    }
}

/// Signs `payload` in `ctx` with `sign` and returns the base64 signature.
pub(crate) fn sign_payload(
    ctx: SignatureContext,
    payload: &str,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, IdentityError>,
) -> Result<String, IdentityError> {
    Ok(B64.encode(sign(&ctx.message(payload))?))
}

/// Checks a base64 `signature` over `payload` in `ctx` with `key`.
pub(crate) fn verify_payload(
    ctx: SignatureContext,
    payload: &str,
    signature: &str,
    key: &PublicKey,
    what: &'static str,
) -> Result<(), IdentityError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(IdentityError::Invalid {
            field: "payload",
            detail: format!("{} bytes (max {MAX_PAYLOAD})", payload.len()),
        });
    }
    let sig = B64
        .decode(signature)
        .map_err(|_| IdentityError::Malformed {
            what,
            detail: "signature is not base64".into(),
        })?;
    if key.verify(&ctx.message(payload), &sig) {
        Ok(())
    } else {
        Err(IdentityError::BadSignature { what })
    }
}

/// A SHA-256 certificate fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of DER bytes.
    pub fn of(der: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl std::fmt::Display for Fingerprint {
    /// `sha256:` then lowercase hex, the form `re6st join` prints and accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", super::hex(&self.0))
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = IdentityError;

    /// Accepts hex with or without a `sha256:` prefix, colons or spaces, in
    /// any case (the forms `openssl x509 -fingerprint -sha256` and we print).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .or_else(|| s.strip_prefix("sha256="))
            .or_else(|| s.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(s);
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !matches!(b, b':' | b' ' | b'-'))
            .collect();
        let bad = || IdentityError::Invalid {
            field: "fingerprint",
            detail: "expected 64 hex digits of a SHA-256 digest".into(),
        };
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            out[i] = u8::try_from(hi * 16 + lo).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let f = Fingerprint::of(b"abc");
        let s = f.to_string();
        assert!(s.starts_with("sha256:ba7816bf"));
        assert_eq!(s.parse::<Fingerprint>().unwrap(), f);
        let colons = super::super::hex(&f.0)
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), f);
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn contexts_differ() {
        let k = crate::identity::NodeKey::generate().unwrap();
        let pk = k.public_key().unwrap();
        let sig = sign_payload(SignatureContext::NetworkConfig, "{}", |m| k.sign(m)).unwrap();
        verify_payload(SignatureContext::NetworkConfig, "{}", &sig, &pk, "x").unwrap();
        assert!(verify_payload(SignatureContext::PeerAnnouncement, "{}", &sig, &pk, "x").is_err());
        assert!(verify_payload(SignatureContext::NetworkConfig, "{ }", &sig, &pk, "x").is_err());
        assert!(verify_payload(SignatureContext::NetworkConfig, "{}", "!!", &pk, "x").is_err());
    }
}

//! The CA key at rest: encrypted with a secret the registry is given (a
//! file or an environment variable), never stored next to it.
//!
//! Format (PEM armour `RE6ST ENCRYPTED CA KEY`), base64 of:
//!
//! ```text
//! "r6k1" | iterations:u32be | salt[16] | nonce[12] | AES-256-GCM(PKCS#8 PEM) with tag
//! ```
//!
//! The AES key is PBKDF2-HMAC-SHA256(secret, salt, iterations), so a
//! passphrase works as well as a random key file; the additional data is
//! the format tag, so a blob cannot be taken for another kind. Everything
//! is ring's (the only crypto provider of the tree).

use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Environment variable holding the secret itself.
pub const SECRET_ENV: &str = "RE6ST_CA_KEY_SECRET";

const TAG: &[u8; 4] = b"r6k1";
const LABEL: &str = "RE6ST ENCRYPTED CA KEY";
/// PBKDF2 iterations for new blobs (OWASP's 2023 figure for SHA-256).
const ITERATIONS: u32 = 600_000;
/// Fewest iterations accepted when reading (a tampered header cannot make
/// the derivation cheap).
const MIN_ITERATIONS: u32 = 100_000;
/// Shortest secret accepted.
pub const MIN_SECRET: usize = 16;

/// Why the CA key could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaKeyError {
    /// The secret is too short to protect the network's root key.
    #[error("the CA key secret is {0} bytes; at least {MIN_SECRET} are needed")]
    WeakSecret(usize),
    /// The blob is not ours or is damaged.
    #[error("the encrypted CA key is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: a wrong secret, or a modified blob.
    #[error(
        "the CA key secret does not decrypt the CA key (wrong {SECRET_ENV} or \
         --ca-key-secret-file, or the stored key was modified)"
    )]
    WrongSecret,
    /// No randomness.
    #[error("no randomness available")]
    Random,
}

/// The key-encryption secret.
pub struct CaSecret(Vec<u8>);

impl std::fmt::Debug for CaSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaSecret(..)")
    }
}

impl CaSecret {
    /// A secret from its bytes (a trailing newline of a file is dropped).
    pub fn new(bytes: &[u8]) -> Result<Self, CaKeyError> {
        let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let b = b.strip_suffix(b"\r").unwrap_or(b);
        if b.len() < MIN_SECRET {
            return Err(CaKeyError::WeakSecret(b.len()));
        }
        Ok(Self(b.to_vec()))
    }

    fn key(&self, salt: &[u8], iterations: NonZeroU32) -> Result<LessSafeKey, CaKeyError> {
        let mut k = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            &self.0,
            &mut k,
        );
        UnboundKey::new(&AES_256_GCM, &k)
            .map(LessSafeKey::new)
            .map_err(|_| CaKeyError::Malformed("key"))
    }

    /// Encrypts `key_pem`.
    pub fn seal(&self, key_pem: &str) -> Result<String, CaKeyError> {
        self.seal_with(key_pem, ITERATIONS)
    }

    fn seal_with(&self, key_pem: &str, iterations: u32) -> Result<String, CaKeyError> {
        let rng = SystemRandom::new();
        let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
        rng.fill(&mut salt).map_err(|_| CaKeyError::Random)?;
        rng.fill(&mut nonce).map_err(|_| CaKeyError::Random)?;
        let n = NonZeroU32::new(iterations).ok_or(CaKeyError::Malformed("iterations"))?;
        let mut data = key_pem.as_bytes().to_vec();
        self.key(&salt, n)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(TAG),
                &mut data,
            )
            .map_err(|_| CaKeyError::Malformed("seal"))?;
        let mut blob = TAG.to_vec();
        blob.extend_from_slice(&iterations.to_be_bytes());
        blob.extend_from_slice(&salt);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&data);
        let b64 = B64.encode(blob);
        let mut out = format!("-----BEGIN {LABEL}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {LABEL}-----\n"));
        Ok(out)
    }

    /// Decrypts what [`Self::seal`] made.
    pub fn open(&self, sealed: &str) -> Result<String, CaKeyError> {
        let body: String = sealed
            .trim()
            .strip_prefix(&format!("-----BEGIN {LABEL}-----"))
            .and_then(|s| s.strip_suffix(&format!("-----END {LABEL}-----")))
            .ok_or(CaKeyError::Malformed("not an encrypted CA key"))?
            .split_whitespace()
            .collect();
        let blob = B64
            .decode(body)
            .map_err(|_| CaKeyError::Malformed("not base64"))?;
        if blob.len() < 4 + 4 + 16 + 12 + 16 || &blob[..4] != TAG {
            return Err(CaKeyError::Malformed("unknown format"));
        }
        let iterations = u32::from_be_bytes([blob[4], blob[5], blob[6], blob[7]]);
        if iterations < MIN_ITERATIONS {
            return Err(CaKeyError::Malformed("too few iterations"));
        }
        let n = NonZeroU32::new(iterations).ok_or(CaKeyError::Malformed("iterations"))?;
        let (salt, rest) = blob[8..].split_at(16);
        let (nonce, ct) = rest.split_at(12);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CaKeyError::Malformed("nonce"))?;
        let mut data = ct.to_vec();
        let plain = self
            .key(salt, n)?
            .open_in_place(nonce, Aad::from(TAG), &mut data)
            .map_err(|_| CaKeyError::WrongSecret)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CaKeyError::Malformed("not UTF-8"))
    }
}

/// Whether `text` is an encrypted CA key (rather than a plain PEM key).
pub fn is_sealed(text: &str) -> bool {
    text.trim_start()
        .starts_with(&format!("-----BEGIN {LABEL}-----"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let s = CaSecret::new(b"correct horse battery staple\n").unwrap();
        // The minimum work factor keeps the test quick.
        let sealed = s
            .seal_with("-----BEGIN PRIVATE KEY-----\nx\n", MIN_ITERATIONS)
            .unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("PRIVATE KEY"));
        assert_eq!(s.open(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----\nx\n");
        let other = CaSecret::new(b"another secret of some length").unwrap();
        assert_eq!(other.open(&sealed), Err(CaKeyError::WrongSecret));
        // A flipped ciphertext bit is caught by the tag.
        let mut lines: Vec<String> = sealed.lines().map(String::from).collect();
        let mut b = lines[1].clone().into_bytes();
        b[60] = if b[60] == b'A' { b'B' } else { b'A' };
        lines[1] = String::from_utf8(b).unwrap();
        assert!(s.open(&lines.join("\n")).is_err());
        assert_eq!(
            CaSecret::new(b"short").unwrap_err(),
            CaKeyError::WeakSecret(5)
        );
        assert!(matches!(s.open("garbage"), Err(CaKeyError::Malformed(_))));
        assert!(!is_sealed("-----BEGIN PRIVATE KEY-----"));
        // A header claiming few iterations is refused before any work.
        let cheap = s.seal_with("k", 1).unwrap();
        assert_eq!(
            s.open(&cheap),
            Err(CaKeyError::Malformed("too few iterations"))
        );
    }
}

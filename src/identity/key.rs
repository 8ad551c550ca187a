//! Node key pairs and the public keys found in certificates and CSRs.

use rcgen::{KeyPair, PublicKeyData, SigningKey};
use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, UnparsedPublicKey};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::IdentityError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// The key types a node may use: those that rustls/ring verify in TLS 1.3
/// and that we can verify signed announcements with. RSA is refused: large,
/// slow, and never needed by our own tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256 (what `re6st join` makes).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// Reads the key type from a SubjectPublicKeyInfo.
    pub fn of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, IdentityError> {
        let alg = spki.algorithm.algorithm.to_id_string();
        if alg == OID_ED25519 {
            return Ok(KeyKind::Ed25519);
        }
        if alg == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            return match curve.as_str() {
                OID_P256 => Ok(KeyKind::EcdsaP256),
                OID_P384 => Ok(KeyKind::EcdsaP384),
                _ => Err(IdentityError::UnsupportedKeyType {
                    algorithm: format!("EC curve {curve}"),
                }),
            };
        }
        Err(IdentityError::UnsupportedKeyType { algorithm: alg })
    }
}

/// A public key taken from a certificate or CSR, able to verify signatures
/// made by [`NodeKey::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key type.
    pub kind: KeyKind,
    /// The DER SubjectPublicKeyInfo (what the registry records).
    pub spki_der: Vec<u8>,
    /// The raw key bits inside the SPKI.
    pub raw: Vec<u8>,
}

impl PublicKey {
    /// Extracts the key from a parsed SPKI; fails on unsupported types.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, IdentityError> {
        Ok(Self {
            kind: KeyKind::of_spki(spki)?,
            spki_der: spki.raw.to_vec(),
            raw: spki.subject_public_key.data.to_vec(),
        })
    }

    /// SHA-256 of the SPKI: a stable key identifier.
    pub fn id(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.spki_der);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// Verifies `signature` over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.kind {
            KeyKind::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            KeyKind::EcdsaP384 => &ECDSA_P384_SHA384_ASN1,
            KeyKind::Ed25519 => &ED25519,
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(msg, signature)
            .is_ok()
    }
}

/// A node's (or the CA's) private key.
pub struct NodeKey {
    inner: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("algorithm", &self.inner.algorithm())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<Self, IdentityError> {
        KeyPair::generate()
            .map(|inner| Self { inner })
            .map_err(|e| IdentityError::Internal(format!("key generation: {e}")))
    }

    /// Loads a PKCS#8 PEM key (as written by [`NodeKey::to_pem`]).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        KeyPair::from_pem(pem)
            .map(|inner| Self { inner })
            .map_err(|e| IdentityError::Malformed {
                what: "private key",
                detail: e.to_string(),
            })
    }

    /// PKCS#8 PEM (`PRIVATE KEY`). Store it with mode 0600.
    pub fn to_pem(&self) -> String {
        self.inner.serialize_pem()
    }

    /// PKCS#8 DER, as rustls wants it.
    pub fn to_rustls(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.inner.serialize_der().into())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    /// The public half.
    pub fn public_key(&self) -> Result<PublicKey, IdentityError> {
        use x509_parser::prelude::FromDer;
        let der = self.spki_der();
        let (_, spki) = SubjectPublicKeyInfo::from_der(&der)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        PublicKey::from_spki(&spki)
    }

    /// Signs `msg` (ECDSA signatures are ASN.1 DER, as ring verifies them).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.inner
            .sign(msg)
            .map_err(|e| IdentityError::Internal(format!("signing: {e}")))
    }

    /// Wraps a key pair made by rcgen (tests use other key types).
    #[cfg(test)]
    pub(crate) fn from_key_pair(inner: KeyPair) -> Self {
        Self { inner }
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.inner
    }

    pub(crate) fn into_key_pair(self) -> KeyPair {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_tamper() {
        let k = NodeKey::generate().unwrap();
        let pk = k.public_key().unwrap();
        assert_eq!(pk.kind, KeyKind::EcdsaP256);
        let sig = k.sign(b"hello").unwrap();
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellp", &sig));
        let other = NodeKey::generate().unwrap().public_key().unwrap();
        assert!(!other.verify(b"hello", &sig));
        let again = NodeKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(again.public_key().unwrap(), pk);
    }

    #[test]
    fn ed25519_is_accepted() {
        let kp = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let k = NodeKey { inner: kp };
        let pk = k.public_key().unwrap();
        assert_eq!(pk.kind, KeyKind::Ed25519);
        assert!(pk.verify(b"x", &k.sign(b"x").unwrap()));
    }

    #[test]
    fn bad_pem_key_is_refused() {
        assert!(matches!(
            NodeKey::from_pem("not a key"),
            Err(IdentityError::Malformed { .. })
        ));
    }
}

//! RFC 9068 JWT access tokens: the authorization server's signing keys and the tokens it signs.
//!
//! With [`DeviceFlowBuilder::jwt_access_tokens`](crate::DeviceFlowBuilder::jwt_access_tokens)
//! the token endpoint issues access tokens that resource servers verify on their own, with the
//! public keys the flow publishes at `GET /.well-known/jwks.json` (and as `jwks_uri` in its
//! metadata); see [`JwtVerifier`](crate::resource_server::JwtVerifier). Tokens are signed
//! with EdDSA (Ed25519) or ES256 by the [`jsonwebtoken`] crate on RustCrypto; this module only
//! holds keys and writes claims.
//!
//! Each access token's digest and [`crate::store::TokenInfo`] are stored exactly as
//! for random tokens, so introspection and revocation keep answering for JWTs. But a resource
//! server that verifies the signature does not ask: **a JWT stays valid until its `exp`**, even
//! after revocation. Keep access tokens short-lived
//! ([`access_token_lifetime`](crate::DeviceFlowBuilder::access_token_lifetime)), or have the
//! resource servers that must see revocations at once introspect instead.
//!
//! Rotation: [`JwtKeys::rotate`] makes a new key the signing key and keeps the old one's public
//! key in the JWKS, so tokens it signed still verify until they expire; [`JwtKeys::retire`]
//! drops it after that.
//!
//! ```
//! use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
//!
//! let keys = JwtKeys::new(SigningKey::generate(JwsAlgorithm::EdDSA).unwrap());
//! let first = keys.current_kid();
//! keys.rotate(SigningKey::generate(JwsAlgorithm::ES256).unwrap());
//! let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks()).unwrap();
//! assert_eq!(jwks["keys"].as_array().unwrap().len(), 2); // the old key still verifies
//! keys.retire(&first);
//! let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks()).unwrap();
//! assert_eq!(jwks["keys"][0]["alg"], "ES256");
//! ```

mod claims;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

pub(crate) use claims::{AccessTokenClaims, ACCESS_TOKEN_TYP};

use crate::clock::Timestamp;
use crate::store::TokenInfo;

/// The signature algorithms this crate signs and accepts access tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 3.4).
    ES256,
}

impl JwsAlgorithm {
    pub(crate) fn jose(self) -> Algorithm {
        match self {
            JwsAlgorithm::EdDSA => Algorithm::EdDSA,
            JwsAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    /// The `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::EdDSA => "EdDSA",
            JwsAlgorithm::ES256 => "ES256",
        }
    }
}

/// A signing key that cannot be used: malformed, of another algorithm, or of another curve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unusable signing key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

fn key_error(e: impl fmt::Display) -> KeyError {
    KeyError(e.to_string())
}

/// A private signing key with its key id and public JWK. `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey {
    alg: JwsAlgorithm,
    encoding: EncodingKey,
    public: Jwk,
}

impl SigningKey {
    /// A fresh random key. Its `kid` is its RFC 7638 JWK thumbprint.
    pub fn generate(alg: JwsAlgorithm) -> Result<Self, KeyError> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        loop {
            rand::rng().fill_bytes(&mut secret[..]);
            match alg {
                JwsAlgorithm::EdDSA => return Self::ed25519(&secret),
                JwsAlgorithm::ES256 => {
                    // A 32-byte string is a P-256 scalar unless it is zero or >= n (p ~ 2^-32).
                    if let Ok(key) = p256::SecretKey::from_slice(&secret[..]) {
                        return Self::es256(&key);
                    }
                }
            }
        }
    }

    /// A key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for either algorithm, or SEC1
    /// (`BEGIN EC PRIVATE KEY`) for ES256.
    pub fn from_pem(alg: JwsAlgorithm, pem: &str) -> Result<Self, KeyError> {
        match alg {
            JwsAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(key_error)?;
                Self::ed25519(&key.to_bytes())
            }
            JwsAlgorithm::ES256 => Self::es256(&p256::SecretKey::from_pem(pem).map_err(key_error)?),
        }
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8_der(alg: JwsAlgorithm, der: &[u8]) -> Result<Self, KeyError> {
        match alg {
            JwsAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(key_error)?;
                Self::ed25519(&key.to_bytes())
            }
            JwsAlgorithm::ES256 => Self::es256(&p256::SecretKey::from_der(der).map_err(key_error)?),
        }
    }

    fn ed25519(secret: &[u8; 32]) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        // PKCS#8 v1 (no public key inside), the form jsonwebtoken reads.
        let der = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: *secret,
            public_key: None,
        }
        .to_pkcs8_der()
        .map_err(key_error)?;
        Self::from_der(
            JwsAlgorithm::EdDSA,
            EncodingKey::from_ed_der(der.as_bytes()),
        )
    }

    fn es256(key: &p256::SecretKey) -> Result<Self, KeyError> {
        use p256::pkcs8::EncodePrivateKey as _;
        let der = key.to_pkcs8_der().map_err(key_error)?;
        Self::from_der(
            JwsAlgorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    fn from_der(alg: JwsAlgorithm, encoding: EncodingKey) -> Result<Self, KeyError> {
        let mut public = Jwk::from_encoding_key(&encoding, alg.jose()).map_err(key_error)?;
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(key_error)?;
        public.common.key_id = Some(kid);
        Ok(SigningKey {
            alg,
            encoding,
            public,
        })
    }

    /// The same key under another key id (default: its RFC 7638 thumbprint).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.public.common.key_id = Some(kid.into());
        self
    }

    /// The key id, as the `kid` of tokens and of the JWKS entry.
    pub fn kid(&self) -> &str {
        self.public.common.key_id.as_deref().unwrap_or_default()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The public key as a JWK (`kty`, `crv`, `x`[, `y`], `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::to_value(&self.public).unwrap_or_default()
    }

    /// Signs `claims` as a JWT with `typ: at+jwt` and this key's `kid`.
    pub(crate) fn sign(&self, claims: &AccessTokenClaims) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg.jose());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(key_error)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

struct KeySet {
    current: Arc<SigningKey>,
    /// Public keys of earlier signing keys, still published so their tokens verify.
    retired: Vec<Jwk>,
    /// The JWKS document, rendered on every change.
    jwks: Bytes,
}

impl KeySet {
    fn render(current: Arc<SigningKey>, retired: Vec<Jwk>) -> Self {
        let set = JwkSet {
            keys: std::iter::once(current.public.clone())
                .chain(retired.iter().cloned())
                .collect(),
        };
        let jwks = Bytes::from(serde_json::to_vec(&set).unwrap_or_default());
        KeySet {
            current,
            retired,
            jwks,
        }
    }
}

/// The authorization server's JWT signing keys: one current key that signs, and retired keys
/// whose public halves stay in the JWKS. Shared by the token endpoint and the JWKS endpoint;
/// rotating takes effect for both at once.
pub struct JwtKeys {
    set: RwLock<KeySet>,
}

impl JwtKeys {
    /// Keys signing with `current`.
    pub fn new(current: SigningKey) -> Self {
        JwtKeys {
            set: RwLock::new(KeySet::render(Arc::new(current), Vec::new())),
        }
    }

    /// The same keys, also publishing the public half of `old` (an earlier signing key whose
    /// tokens may still be live).
    pub fn with_retired(self, old: &SigningKey) -> Self {
        {
            let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
            let mut retired = std::mem::take(&mut set.retired);
            retired.push(old.public.clone());
            *set = KeySet::render(set.current.clone(), retired);
        }
        self
    }

    /// Signs from now on with `next`; the current key's public half stays published.
    pub fn rotate(&self, next: SigningKey) {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let mut retired = std::mem::take(&mut set.retired);
        retired.insert(0, set.current.public.clone());
        retired.retain(|k| k.common.key_id.as_deref() != Some(next.kid()));
        *set = KeySet::render(Arc::new(next), retired);
    }

    /// Stops publishing the retired key `kid` (once every token it signed has expired). The
    /// current key cannot be retired: rotate first.
    pub fn retire(&self, kid: &str) {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let mut retired = std::mem::take(&mut set.retired);
        retired.retain(|k| k.common.key_id.as_deref() != Some(kid));
        *set = KeySet::render(set.current.clone(), retired);
    }

    /// The key id of the current signing key.
    pub fn current_kid(&self) -> String {
        self.current().kid().to_owned()
    }

    /// The JWK Set document (RFC 7517 5) of every published key, current first.
    pub fn jwks(&self) -> Bytes {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .jwks
            .clone()
    }

    fn current(&self) -> Arc<SigningKey> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .clone()
    }

    /// A signed access token standing for `info`, issued by `issuer` at `now`.
    pub(crate) fn sign(
        &self,
        issuer: &str,
        info: &TokenInfo,
        now: Timestamp,
    ) -> Result<String, KeyError> {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let claims = AccessTokenClaims::new(issuer, info, URL_SAFE_NO_PAD.encode(jti), now);
        self.current().sign(&claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("JwtKeys")
            .field("current", &set.current)
            .field("retired", &set.retired.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_publish_their_public_half_only() {
        for alg in [JwsAlgorithm::EdDSA, JwsAlgorithm::ES256] {
            let key = SigningKey::generate(alg).unwrap();
            let jwk = key.public_jwk();
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "no private part in {jwk}");
            assert!(!format!("{key:?}").contains(&format!("{:?}", key.encoding.as_bytes())));
        }
    }

    #[test]
    fn keys_load_from_pem() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        // A v2 PKCS#8 document (with the public key), as `openssl genpkey` writes.
        let ed = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let pem = ed.to_pkcs8_pem(Default::default()).unwrap();
        let key = SigningKey::from_pem(JwsAlgorithm::EdDSA, &pem).unwrap();
        assert_eq!(key.algorithm(), JwsAlgorithm::EdDSA);
        let ec = p256::SecretKey::from_slice(&[3; 32]).unwrap();
        let sec1 = ec.to_sec1_pem(Default::default()).unwrap();
        let key = SigningKey::from_pem(JwsAlgorithm::ES256, &sec1).unwrap();
        assert_eq!(key.public_jwk()["crv"], "P-256");
        // The same key twice has the same thumbprint kid.
        let again = SigningKey::from_pem(JwsAlgorithm::ES256, &sec1).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert!(SigningKey::from_pem(JwsAlgorithm::ES256, &pem).is_err());
        assert!(SigningKey::from_pem(JwsAlgorithm::EdDSA, "nonsense").is_err());
    }

    #[test]
    fn rotation_keeps_old_public_keys() {
        let a = SigningKey::generate(JwsAlgorithm::EdDSA).unwrap();
        let b = SigningKey::generate(JwsAlgorithm::EdDSA).unwrap();
        let keys = JwtKeys::new(a.clone());
        keys.rotate(b.clone());
        assert_eq!(keys.current_kid(), b.kid());
        let kids = |keys: &JwtKeys| {
            let v: serde_json::Value = serde_json::from_slice(&keys.jwks()).unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(&keys), [b.kid(), a.kid()]);
        keys.retire(a.kid());
        assert_eq!(kids(&keys), [b.kid()]);
        let keys = JwtKeys::new(b.clone()).with_retired(&a);
        assert_eq!(kids(&keys), [b.kid(), a.kid()]);
    }
}

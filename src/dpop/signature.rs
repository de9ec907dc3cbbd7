//! A proof's signature, checked with the public key its header embeds.
//!
//! jsonwebtoken's RustCrypto backend checks every algorithm. With the feature `ring`, ES256 and
//! ES384 are checked by ring instead: its P-256 (assembly) is about five times faster than
//! RustCrypto's pure-Rust one, and the signature is most of what a DPoP request costs. EdDSA
//! stays on ed25519-dalek, which is faster than ring's here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::config::DpopAlgorithm;

/// A public key from a proof's `jwk`, ready to check signatures of its algorithm.
pub(super) enum ProofKey {
    /// Checked by jsonwebtoken (RustCrypto).
    Jose(DecodingKey),
    /// An EC key as a SEC1 uncompressed point (`0x04 || x || y`), checked by ring.
    #[cfg(feature = "ring")]
    RingEc(Vec<u8>),
}

impl ProofKey {
    /// An EC key from its base64url coordinates, each `len` bytes long.
    pub(super) fn ec(x: &str, y: &str, len: usize) -> Option<Self> {
        #[cfg(feature = "ring")]
        {
            Self::ring_ec(x, y, len)
        }
        #[cfg(not(feature = "ring"))]
        {
            Self::jose_ec(x, y, len)
        }
    }

    // With `ring`, only its agreement test builds EC keys this way.
    #[cfg_attr(all(feature = "ring", not(test)), allow(dead_code))]
    fn jose_ec(x: &str, y: &str, len: usize) -> Option<Self> {
        (decoded(x)?.len() == len && decoded(y)?.len() == len).then_some(())?;
        DecodingKey::from_ec_components(x, y).ok().map(Self::Jose)
    }

    #[cfg(feature = "ring")]
    fn ring_ec(x: &str, y: &str, len: usize) -> Option<Self> {
        let (x, y) = (decoded(x)?, decoded(y)?);
        if x.len() != len || y.len() != len {
            return None;
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Some(Self::RingEc(point))
    }

    /// An Ed25519 key from its base64url `x`.
    pub(super) fn ed25519(x: &str) -> Option<Self> {
        (decoded(x)?.len() == 32).then_some(())?;
        DecodingKey::from_ed_components(x).ok().map(Self::Jose)
    }

    /// An RSA key from its base64url modulus and exponent: 2048 to 4096 bits (smaller keys are
    /// weak, larger ones cost too much to check), an exponent of at most 8 bytes.
    pub(super) fn rsa(n: &str, e: &str) -> Option<Self> {
        let bits = decoded(n)?.len() * 8;
        if !(2048..=4096).contains(&bits) || decoded(e)?.len() > 8 {
            return None;
        }
        DecodingKey::from_rsa_components(n, e).ok().map(Self::Jose)
    }

    /// Whether `signature` is `alg`'s signature of `message` by this key. Taken by value:
    /// jsonwebtoken's verifiers want a `&Vec<u8>`, so a slice would be copied once per proof.
    pub(super) fn verifies(&self, alg: DpopAlgorithm, message: &[u8], signature: Vec<u8>) -> bool {
        match self {
            Self::Jose(key) => jose_verifies(alg, key, message, &signature),
            #[cfg(feature = "ring")]
            Self::RingEc(point) => {
                use ring::signature::{
                    UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
                };
                // JWS ECDSA signatures are the fixed-width `r || s` (RFC 7518 3.4).
                let algorithm = match alg {
                    DpopAlgorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
                    DpopAlgorithm::ES384 => &ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(message, &signature)
                    .is_ok()
            }
        }
    }
}

fn decoded(b64: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(b64).ok()
}

fn jose_algorithm(alg: DpopAlgorithm) -> Algorithm {
    match alg {
        DpopAlgorithm::ES256 => Algorithm::ES256,
        DpopAlgorithm::ES384 => Algorithm::ES384,
        DpopAlgorithm::EdDSA => Algorithm::EdDSA,
        DpopAlgorithm::PS256 => Algorithm::PS256,
        DpopAlgorithm::PS384 => Algorithm::PS384,
        DpopAlgorithm::PS512 => Algorithm::PS512,
        DpopAlgorithm::RS256 => Algorithm::RS256,
        DpopAlgorithm::RS384 => Algorithm::RS384,
        DpopAlgorithm::RS512 => Algorithm::RS512,
    }
}

/// jsonwebtoken's RustCrypto provider. It is the process default when only its `rust_crypto`
/// feature is on; if another crate also turned on `aws_lc_rs`, neither is, and the RustCrypto
/// one is installed here rather than letting jsonwebtoken panic.
fn provider() -> Option<&'static CryptoProvider> {
    CryptoProvider::try_get_default().or_else(|| {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        CryptoProvider::try_get_default()
    })
}

// `&Vec`: what jsonwebtoken's `Verifier<Vec<u8>>` takes.
#[allow(clippy::ptr_arg)]
fn jose_verifies(
    alg: DpopAlgorithm,
    key: &DecodingKey,
    message: &[u8],
    signature: &Vec<u8>,
) -> bool {
    let Some(provider) = provider() else {
        return false;
    };
    match (provider.verifier_factory)(&jose_algorithm(alg), key) {
        Ok(verifier) => verifier.verify(message, signature).is_ok(),
        Err(_) => false,
    }
}

#[cfg(all(test, feature = "ring"))]
mod tests {
    //! Both backends must give the same verdict on every EC signature: CI runs the tests with
    //! every feature on, so this is where the RustCrypto path of ES256 and ES384 is exercised.
    use super::*;

    // An independent P-256 implementation (RustCrypto's older line, a dev-dependency) signs.
    use p256_client::ecdsa::signature::Signer as _;
    use p256_client::ecdsa::{Signature, SigningKey};

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `(x, y)` of a P-256 key, and its signature of `message`.
    fn p256_signed(seed: u8, message: &[u8]) -> (String, String, Vec<u8>) {
        let key = SigningKey::from_slice(&[seed; 32]).expect("a valid scalar");
        let signature: Signature = key.sign(message);
        let point = key.verifying_key().to_encoded_point(false);
        let bytes = point.as_bytes();
        (
            b64(&bytes[1..33]),
            b64(&bytes[33..65]),
            signature.to_bytes().to_vec(),
        )
    }

    fn verdicts(alg: DpopAlgorithm, x: &str, y: &str, len: usize, m: &[u8], s: &[u8]) -> [bool; 2] {
        let jose = ProofKey::jose_ec(x, y, len).map(|k| k.verifies(alg, m, s.to_vec()));
        let ring = ProofKey::ring_ec(x, y, len).map(|k| k.verifies(alg, m, s.to_vec()));
        assert_eq!(
            jose.is_some(),
            ring.is_some(),
            "both backends parse the key or neither"
        );
        [jose.unwrap_or(false), ring.unwrap_or(false)]
    }

    /// The cases every curve shares: `signature` (of `message`, by the key `(x, y)` of
    /// `len`-byte coordinates) passes under `alg` and under no other algorithm, and a flipped
    /// bit, another message or a truncated signature fails, on both backends alike.
    fn assert_backends_agree(
        alg: DpopAlgorithm,
        other: DpopAlgorithm,
        (x, y, len): (&str, &str, usize),
        message: &[u8],
        signature: &[u8],
    ) {
        assert_eq!(verdicts(alg, x, y, len, message, signature), [true, true]);
        let mut flipped = signature.to_vec();
        flipped[len / 3] ^= 0x80;
        assert_eq!(verdicts(alg, x, y, len, message, &flipped), [false, false]);
        assert_eq!(
            verdicts(alg, x, y, len, b"header.claimz", signature),
            [false, false]
        );
        let truncated = &signature[..signature.len() - 1];
        assert_eq!(verdicts(alg, x, y, len, message, truncated), [false, false]);
        // The right key under the wrong algorithm.
        assert_eq!(
            verdicts(other, x, y, len, message, signature),
            [false, false]
        );
    }

    #[test]
    fn ring_and_rustcrypto_agree_on_es256() {
        let message = b"header.claims";
        let (x, y, signature) = p256_signed(7, message);
        let es256 = DpopAlgorithm::ES256;
        assert_backends_agree(
            es256,
            DpopAlgorithm::ES384,
            (&x, &y, 32),
            message,
            &signature,
        );
        // DER instead of the fixed-width JWS form.
        let der = Signature::from_slice(&signature)
            .expect("64 bytes")
            .to_der();
        assert_eq!(
            verdicts(es256, &x, &y, 32, message, der.as_bytes()),
            [false, false]
        );
        // Another key's signature.
        let (x2, y2, _) = p256_signed(9, message);
        assert_eq!(
            verdicts(es256, &x2, &y2, 32, message, &signature),
            [false, false]
        );
        // A point off the curve (y of another key).
        assert_eq!(
            verdicts(es256, &x, &y2, 32, message, &signature),
            [false, false]
        );
    }

    #[test]
    fn ring_and_rustcrypto_agree_on_es384() {
        use p384_client::ecdsa::signature::Signer as _;
        let message = b"header.claims";
        let key = p384_client::ecdsa::SigningKey::from_slice(&[5; 48]).expect("a valid scalar");
        let signature: p384_client::ecdsa::Signature = key.sign(message);
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (
            b64(&point.as_bytes()[1..49]),
            b64(&point.as_bytes()[49..97]),
        );
        assert_backends_agree(
            DpopAlgorithm::ES384,
            DpopAlgorithm::ES256,
            (&x, &y, 48),
            message,
            &signature.to_bytes(),
        );
    }

    #[test]
    fn both_backends_refuse_coordinates_of_the_wrong_length() {
        let (x, y, _) = p256_signed(7, b"m");
        let short = b64(&[1u8; 31]);
        for (x, y) in [(short.as_str(), y.as_str()), (x.as_str(), short.as_str())] {
            assert!(ProofKey::jose_ec(x, y, 32).is_none());
            assert!(ProofKey::ring_ec(x, y, 32).is_none());
        }
        assert!(ProofKey::ring_ec("not base64!", &y, 32).is_none());
        assert!(ProofKey::jose_ec("not base64!", &y, 32).is_none());
    }
}

//! The configuration of proof checks, the algorithms, per-client policy and refusal reasons.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::nonce::DpopNonces;
use crate::error::ErrorCode;

/// The name of the request header carrying a proof, and of the response header carrying a
/// nonce (RFC 9449 4.1, 8).
pub const DPOP_HEADER: &str = "dpop";
/// The response header supplying a nonce (RFC 9449 8).
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";

/// A JWS algorithm a DPoP proof may be signed with: asymmetric signatures only (RFC 9449 4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
#[non_exhaustive]
pub enum DpopAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519 (`EdDSA` with an `OKP` key on `Ed25519`).
    EdDSA,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
}

impl DpopAlgorithm {
    /// Every algorithm this crate verifies.
    pub const ALL: [DpopAlgorithm; 9] = [
        DpopAlgorithm::ES256,
        DpopAlgorithm::EdDSA,
        DpopAlgorithm::ES384,
        DpopAlgorithm::PS256,
        DpopAlgorithm::PS384,
        DpopAlgorithm::PS512,
        DpopAlgorithm::RS256,
        DpopAlgorithm::RS384,
        DpopAlgorithm::RS512,
    ];

    /// The `alg` name (RFC 7518 3.1, RFC 8037 3.1).
    pub const fn as_str(self) -> &'static str {
        match self {
            DpopAlgorithm::ES256 => "ES256",
            DpopAlgorithm::ES384 => "ES384",
            DpopAlgorithm::EdDSA => "EdDSA",
            DpopAlgorithm::PS256 => "PS256",
            DpopAlgorithm::PS384 => "PS384",
            DpopAlgorithm::PS512 => "PS512",
            DpopAlgorithm::RS256 => "RS256",
            DpopAlgorithm::RS384 => "RS384",
            DpopAlgorithm::RS512 => "RS512",
        }
    }

    /// The algorithm named `alg`, if it is one of these (never `none` or a MAC).
    pub fn from_name(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == alg)
    }
}

impl fmt::Display for DpopAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a client must use DPoP at the token endpoint (RFC 9449 5.2
/// `dpop_bound_access_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DpopPolicy {
    /// A request with a valid proof gets DPoP-bound tokens; one without gets bearer tokens.
    #[default]
    Allowed,
    /// Every token request must carry a valid proof; one without is refused
    /// `invalid_dpop_proof`.
    Required,
}

/// Why a DPoP proof was refused. Every variant but [`UseNonce`](ProofError::UseNonce) is
/// answered `invalid_dpop_proof` (RFC 9449 5, 7.1); that one is `use_dpop_nonce` with a fresh
/// `DPoP-Nonce` (RFC 9449 8, 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProofError {
    /// A proof is required and none was sent.
    Missing,
    /// More than one `DPoP` header.
    Multiple,
    /// Not a well-formed compact JWS with the required header parameters and claims.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    Type,
    /// `alg` is `none`, a MAC, unknown, or not accepted here.
    Algorithm,
    /// `jwk` is missing, not a public key of the kind `alg` needs, or holds a private key.
    Key,
    /// The signature does not verify with the `jwk`.
    Signature,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI.
    Uri,
    /// `iat` is outside the accepted window.
    Time,
    /// `ath` is missing or is not the hash of the presented access token.
    AccessTokenHash,
    /// The server requires a nonce and the proof has none, or a stale or unknown one.
    UseNonce,
    /// The proof was already used (its `jti` was seen within its window).
    Replayed,
    /// The proof's key is not the key the token is bound to.
    KeyMismatch,
}

impl ProofError {
    /// The RFC 9449 error code it is answered with.
    pub const fn code(self) -> ErrorCode {
        match self {
            ProofError::UseNonce => ErrorCode::UseDpopNonce,
            _ => ErrorCode::InvalidDpopProof,
        }
    }

    /// A description for the error response (never holds request data).
    pub const fn description(self) -> &'static str {
        match self {
            ProofError::Missing => "a DPoP proof is required",
            ProofError::Multiple => "more than one DPoP header",
            ProofError::Malformed => "the DPoP proof is not a well-formed DPoP proof JWT",
            ProofError::Type => "the DPoP proof's typ must be dpop+jwt",
            ProofError::Algorithm => {
                "the DPoP proof's alg is not an asymmetric signature algorithm accepted here"
            }
            ProofError::Key => "the DPoP proof's jwk is not a public key usable with its alg",
            ProofError::Signature => "the DPoP proof's signature does not verify",
            ProofError::Method => "the DPoP proof's htm is not the method of this request",
            ProofError::Uri => "the DPoP proof's htu is not the URI of this request",
            ProofError::Time => "the DPoP proof's iat is outside the accepted window",
            ProofError::AccessTokenHash => {
                "the DPoP proof's ath is not the hash of the presented access token"
            }
            ProofError::UseNonce => {
                "a DPoP proof with the nonce in the DPoP-Nonce header is required"
            }
            ProofError::Replayed => "the DPoP proof was already used",
            ProofError::KeyMismatch => {
                "the DPoP proof is not signed with the key the token is bound to"
            }
        }
    }
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ProofError {}

/// The longest proof accepted, in bytes: room for an RSA-4096 `jwk` and generous claims, and a
/// bound on the work an unauthenticated header can cause.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// How proofs are checked: accepted algorithms, the `iat` window and, optionally, nonces.
/// Cheap to clone.
///
/// The default accepts every [`DpopAlgorithm`], proofs whose `iat` is within 60 seconds of the
/// server's clock (either way), and needs no nonce.
#[derive(Clone)]
pub struct DpopConfig {
    pub(super) algorithms: Arc<[DpopAlgorithm]>,
    pub(super) window: Duration,
    pub(super) nonces: Option<DpopNonces>,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            algorithms: Arc::new(DpopAlgorithm::ALL),
            window: Duration::from_secs(60),
            nonces: None,
        }
    }
}

impl fmt::Debug for DpopConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopConfig")
            .field("algorithms", &self.algorithms)
            .field("window", &self.window)
            .field("nonces", &self.nonces)
            .finish()
    }
}

impl DpopConfig {
    /// Accept proofs signed with these algorithms only (in this order in the metadata and
    /// challenges). An empty list accepts no proof at all.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = DpopAlgorithm>) -> Self {
        let mut list: Vec<DpopAlgorithm> = Vec::new();
        for a in algorithms {
            if !list.contains(&a) {
                list.push(a);
            }
        }
        self.algorithms = list.into();
        self
    }

    /// Accept proofs whose `iat` is at most `window` before or after the server's clock
    /// (RFC 9449 11.1); a proof's `jti` is remembered that long after its `iat`.
    pub fn iat_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Require a server nonce in every proof (RFC 9449 8, 9), or not (`None`, the default).
    pub fn nonces(mut self, nonces: Option<DpopNonces>) -> Self {
        self.nonces = nonces;
        self
    }

    /// The accepted algorithms.
    pub fn algorithms_supported(&self) -> &[DpopAlgorithm] {
        &self.algorithms
    }

    /// The accepted algorithms, space-separated (the challenges' `algs` parameter).
    pub fn algs_param(&self) -> String {
        let names: Vec<&str> = self.algorithms.iter().map(|a| a.as_str()).collect();
        names.join(" ")
    }

    /// The `iat` window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The nonces, if required.
    pub fn nonce_issuer(&self) -> Option<&DpopNonces> {
        self.nonces.as_ref()
    }
}

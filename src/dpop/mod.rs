//! DPoP (RFC 9449) proof rules: plain synchronous checks of a `DPoP` proof JWT against the
//! request it came with, the key thumbprint tokens are bound to, and stateless nonces.
//!
//! Nothing here does I/O. The token endpoint and the bearer layer read the `DPoP` header, call
//! [`DpopConfig::check`], then claim the proof's [`replay_key`](DpopProof::replay_key) once in
//! a [`ReplayCache`](crate::replay::ReplayCache) (the store's `claim_once`), so a proof is
//! accepted once within its window across every instance sharing the store.
//!
//! Signatures are checked with `jsonwebtoken` on its RustCrypto backend (p256, p384,
//! ed25519-dalek, rsa), or, with the feature `ring`, ES256 and ES384 by ring (about five times
//! faster for P-256); only asymmetric algorithms can be configured, so `none` and the `HS*`
//! MACs are refused whatever the configuration says.
//!
//! ```
//! use std::time::Duration;
//! use tower_device_flow::dpop::{DpopAlgorithm, DpopConfig, Htu, ProofError, ProofRequest};
//! use tower_device_flow::Timestamp;
//!
//! let config = DpopConfig::default()
//!     .algorithms([DpopAlgorithm::ES256, DpopAlgorithm::EdDSA])
//!     .iat_window(Duration::from_secs(30));
//! assert_eq!(config.algs_param(), "ES256 EdDSA");
//! let htu = Htu::parse("HTTPS://Server.Example.COM:443/token?x=1").unwrap();
//! assert_eq!(htu.as_str(), "https://server.example.com/token");
//! let request = ProofRequest { method: "POST", htu: &htu, access_token: None };
//! let now = Timestamp::from_unix_millis(1_700_000_000_000);
//! assert_eq!(config.check("not.a.proof", &request, now).unwrap_err(), ProofError::Malformed);
//! ```

mod config;
mod htu;
mod nonce;
mod proof;
mod signature;

pub use config::{
    DpopAlgorithm, DpopConfig, DpopPolicy, ProofError, DPOP_HEADER, DPOP_NONCE_HEADER,
    MAX_PROOF_BYTES,
};
pub use htu::Htu;
pub use nonce::DpopNonces;
pub use proof::{DpopProof, ProofRequest};

/// The proof of a request: the value of its one `DPoP` header, `None` without one, an error
/// for several (RFC 9449 4.3 step 1) or a value that is not visible ASCII.
pub fn proof_header(headers: &http::HeaderMap) -> Result<Option<&str>, ProofError> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProofError::Multiple);
    }
    value.to_str().map(Some).map_err(|_| ProofError::Malformed)
}

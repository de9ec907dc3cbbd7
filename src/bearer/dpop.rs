//! DPoP at a protected resource (RFC 9449 7): what the bearer layer needs to check proofs.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use crate::clock::Timestamp;
use crate::dpop::{proof_header, DpopConfig, DpopProof, Htu, ProofError, ProofRequest};
use crate::replay::ReplayCache;

/// How a bearer layer checks DPoP proofs: the rules, the resource's external base URL, and
/// where accepted proofs are remembered.
///
/// The `htu` a proof must name is the base URL followed by the request's path (the query is
/// not part of it). The base URL is configured, never taken from the request: behind a proxy
/// or load balancer the `Host` header and scheme the server sees are not the ones the client
/// signed, and a client-supplied `Host` must not decide what a proof is checked against. Give
/// the URL clients call, with any path prefix a proxy strips:
/// `https://api.example.com` or `https://example.com/api`.
///
/// ```
/// use tower_device_flow::bearer::DpopCheck;
/// use tower_device_flow::replay::MemoryReplayCache;
///
/// let check = DpopCheck::new("https://api.example.com", MemoryReplayCache::default()).unwrap();
/// assert_eq!(check.base_url(), "https://api.example.com");
/// assert!(DpopCheck::new("api.example.com", MemoryReplayCache::default()).is_err());
/// ```
#[derive(Clone)]
pub struct DpopCheck {
    config: DpopConfig,
    base: Arc<str>,
    replay: Arc<dyn ReplayCache>,
}

/// The base URL given to [`DpopCheck::new`] is not an absolute `http(s)` URL without query
/// and fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBaseUrl(pub String);

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an absolute http(s) URL without query and fragment",
            self.0
        )
    }
}

impl std::error::Error for InvalidBaseUrl {}

impl DpopCheck {
    /// Checks proofs for requests under `base_url` with the default [`DpopConfig`], claiming
    /// each accepted proof once in `replay` (the authorization server's store, shared by every
    /// instance, or a [`MemoryReplayCache`](crate::replay::MemoryReplayCache) for one process).
    pub fn new(base_url: &str, replay: impl ReplayCache) -> Result<Self, InvalidBaseUrl> {
        Self::from_parts(base_url, DpopConfig::default(), Arc::new(replay))
    }

    pub(crate) fn from_parts(
        base_url: &str,
        config: DpopConfig,
        replay: Arc<dyn ReplayCache>,
    ) -> Result<Self, InvalidBaseUrl> {
        let invalid = || InvalidBaseUrl(base_url.to_owned());
        if base_url.contains(['?', '#']) {
            return Err(invalid());
        }
        let htu = Htu::parse(base_url).ok_or_else(invalid)?;
        Ok(DpopCheck {
            config,
            base: Arc::from(htu.as_str().trim_end_matches('/')),
            replay,
        })
    }

    /// The same check with other rules (algorithms, `iat` window, nonces).
    pub fn with_config(mut self, config: DpopConfig) -> Self {
        self.config = config;
        self
    }

    /// The rules.
    pub fn config(&self) -> &DpopConfig {
        &self.config
    }

    /// The normalized base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The proof of a request for `path` with `method`, presenting `access_token`: every check
    /// but the replay claim.
    pub(super) fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        access_token: &str,
        now: Timestamp,
    ) -> Result<DpopProof, ProofError> {
        let proof = proof_header(headers)?.ok_or(ProofError::Missing)?;
        let htu = Htu::parse(&format!("{}{path}", self.base)).ok_or(ProofError::Uri)?;
        let request = ProofRequest {
            method,
            htu: &htu,
            access_token: Some(access_token),
        };
        self.config.check(proof, &request, now)
    }

    /// Claims `proof` once (RFC 9449 11.1).
    pub(super) fn replay(&self) -> &dyn ReplayCache {
        &*self.replay
    }
}

impl fmt::Debug for DpopCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopCheck")
            .field("base_url", &self.base)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

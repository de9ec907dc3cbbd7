//! [`TokenVerifier`]: who decides what a presented access token stands for.
//!
//! The bearer layer parses the request, asks its verifier about the token, then checks expiry
//! and scope itself, so every verifier gets the same RFC 6750 challenges and gRPC statuses.
//! Every [`Store`] is a verifier (it looks the token's digest up), which is what
//! [`DeviceFlow::require_oauth`](crate::DeviceFlow::require_oauth) uses; a resource server in
//! another process brings its own (remote introspection, JWT verification, or a shared store).

use std::fmt;
use std::future::Future;

use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::observe::metric::StoreOperation;
use crate::observe::record::timed;
use crate::store::{Store, StoreError, TokenInfo};

/// Why a verifier could not decide (not: why a token is bad; a bad token is `Ok(None)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// What the verifier depends on (the store, the authorization server, its keys) cannot be
    /// reached right now: answered 503 `temporarily_unavailable` (gRPC `UNAVAILABLE`), never
    /// as a valid token.
    Unavailable(String),
    /// The verifier failed otherwise: answered 500 `server_error` (gRPC `INTERNAL`).
    Failed(String),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Unavailable(m) => write!(f, "token verifier unavailable: {m}"),
            VerifyError::Failed(m) => write!(f, "token verifier failed: {m}"),
        }
    }
}

impl std::error::Error for VerifyError {}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => VerifyError::Unavailable(m),
            StoreError::Backend(m) => VerifyError::Failed(m),
        }
    }
}

/// Decides what a presented access token stands for.
///
/// Answer `Ok(None)` for a token that is unknown, revoked, malformed or otherwise not valid;
/// the layer answers it `invalid_token`. Expiry (`TokenInfo::expires_at`) and scope are checked
/// by the layer after the verifier answers, so a verifier may return an expired token's info.
///
/// ```
/// use tower_device_flow::bearer::{TokenVerifier, VerifyError};
/// use tower_device_flow::{ClientId, Scope, Subject, Timestamp, TokenInfo};
///
/// /// Accepts one fixed token (a test double).
/// struct Fixed;
///
/// impl TokenVerifier for Fixed {
///     async fn verify(&self, token: &str, now: Timestamp) -> Result<Option<TokenInfo>, VerifyError> {
///         Ok((token == "let-me-in").then(|| {
///             TokenInfo::new(
///                 Subject::new("alice"),
///                 ClientId::new("tv"),
///                 Scope::parse("profile").unwrap(),
///                 now.saturating_add(std::time::Duration::from_secs(60)),
///             )
///         }))
///     }
/// }
/// ```
pub trait TokenVerifier: Send + Sync + 'static {
    /// What `token` stands for at `now`, or `None` if it is not a valid token.
    fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<TokenInfo>, VerifyError>> + Send;
}

/// Every store verifies the tokens it holds, by their digest.
impl<S: Store> TokenVerifier for S {
    fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<TokenInfo>, VerifyError>> + Send {
        let digest = Digest::of(token.as_bytes());
        // Timed here: the bearer layers hold the store itself, not the services' timed one.
        async move { Ok(timed(StoreOperation::AccessToken, self.access_token(&digest, now)).await?) }
    }
}

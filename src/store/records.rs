//! The records a [`Store`](super::Store) keeps besides grants: clients and access tokens, and
//! the small answers of its primitives, and the errors a store reports.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};
use crate::error::{ErrorCode, OAuthError};
use crate::family::Grant;
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;

/// A registered client (RFC 6749 2).
///
/// ```
/// use tower_device_flow::{Client, Scope};
///
/// let tv = Client::public("tv-app", Scope::parse("profile email").unwrap());
/// let cli = Client::confidential("cli", "s3cret", Scope::parse("profile").unwrap())
///     .with_name("Example CLI");
/// assert!(cli.verify_secret("s3cret"));
/// assert!(!cli.verify_secret("guess"));
/// assert!(!tv.is_confidential());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    id: ClientId,
    secret: Option<Digest>,
    allowed_scope: Scope,
    default_scope: Scope,
    name: Option<Arc<str>>,
    resources: Option<Audience>,
    #[cfg(feature = "dpop")]
    dpop: crate::dpop::DpopPolicy,
}

impl Client {
    /// A public client (no secret) allowed `allowed_scope`, which is also its default scope.
    pub fn public(id: impl AsRef<str>, allowed_scope: Scope) -> Self {
        Client {
            id: ClientId::new(id),
            secret: None,
            default_scope: allowed_scope.clone(),
            allowed_scope,
            name: None,
            resources: None,
            #[cfg(feature = "dpop")]
            dpop: crate::dpop::DpopPolicy::Allowed,
        }
    }

    /// A confidential client authenticated by `secret`, kept only as a SHA-256 digest.
    pub fn confidential(id: impl AsRef<str>, secret: &str, allowed_scope: Scope) -> Self {
        Self::public(id, allowed_scope).with_secret_digest(Digest::of(secret.as_bytes()))
    }

    /// Sets the secret from its stored digest (as a database would hold it).
    pub fn with_secret_digest(mut self, digest: Digest) -> Self {
        self.secret = Some(digest);
        self
    }

    /// Sets the scope used when a request names none. It must lie within the allowed scope.
    pub fn with_default_scope(mut self, scope: Scope) -> Self {
        self.default_scope = scope;
        self
    }

    /// Sets the name shown to end users on the verification page.
    pub fn with_name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Arc::from(name.as_ref()));
        self
    }

    /// Sets the resources (RFC 8707 resource indicators) the client may ask tokens for with the
    /// `resource` parameter. Without it the client may name none: a request naming a resource
    /// is answered `invalid_target`.
    ///
    /// ```
    /// use tower_device_flow::{Audience, Client, Scope};
    ///
    /// let api = Audience::from_resources(["https://api.example.com/"]).unwrap();
    /// let tv = Client::public("tv", Scope::parse("profile").unwrap()).with_resources(api.clone());
    /// assert!(tv.may_request(&api));
    /// assert!(!tv.may_request(&Audience::from_resources(["https://other.example/"]).unwrap()));
    /// ```
    pub fn with_resources(mut self, resources: Audience) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The resources the client may ask tokens for, if any.
    pub fn allowed_resources(&self) -> Option<&Audience> {
        self.resources.as_ref()
    }

    /// True if every resource of `requested` is one the client may ask for.
    pub fn may_request(&self, requested: &Audience) -> bool {
        self.resources
            .as_ref()
            .is_some_and(|allowed| requested.is_subset_of(allowed))
    }

    /// Sets whether the client must use DPoP at the token endpoint (default
    /// [`Allowed`](crate::dpop::DpopPolicy::Allowed); RFC 9449 5.2).
    ///
    /// ```
    /// use tower_device_flow::dpop::DpopPolicy;
    /// use tower_device_flow::{Client, Scope};
    ///
    /// let tv = Client::public("tv", Scope::parse("profile").unwrap()).with_dpop(DpopPolicy::Required);
    /// assert_eq!(tv.dpop(), DpopPolicy::Required);
    /// ```
    #[cfg(feature = "dpop")]
    pub fn with_dpop(mut self, policy: crate::dpop::DpopPolicy) -> Self {
        self.dpop = policy;
        self
    }

    /// Whether the client must use DPoP.
    #[cfg(feature = "dpop")]
    pub fn dpop(&self) -> crate::dpop::DpopPolicy {
        self.dpop
    }

    /// The client identifier.
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The human-readable name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The scopes the client may ask for.
    pub fn allowed_scope(&self) -> &Scope {
        &self.allowed_scope
    }

    /// The scope granted when a request names none.
    pub fn default_scope(&self) -> &Scope {
        &self.default_scope
    }

    /// True for a client that must authenticate with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret.is_some()
    }

    /// The digest of the client secret, if confidential.
    pub fn secret_digest(&self) -> Option<&Digest> {
        self.secret.as_ref()
    }

    /// Checks a presented secret in constant time (over the digests, so neither the secret's
    /// content nor its length shows in the timing).
    pub fn verify_secret(&self, presented: &str) -> bool {
        match &self.secret {
            Some(stored) => stored.ct_eq(&Digest::of(presented.as_bytes())),
            None => false,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("confidential", &self.is_confidential())
            .field("allowed_scope", &self.allowed_scope)
            .field("default_scope", &self.default_scope)
            .field("name", &self.name)
            .field("resources", &self.resources)
            .finish()
    }
}

/// What an access token stands for. The bearer layer puts it in the request extensions of the
/// inner service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The end user who approved.
    pub subject: Subject,
    /// The client the token was issued to.
    pub client_id: ClientId,
    /// The granted scope.
    pub scope: Scope,
    /// When the token stops being valid.
    pub expires_at: Timestamp,
    /// The grant the token belongs to. Always known for tokens this crate issued; a token
    /// verified by another authorization server's introspection may not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<GrantId>,
    /// The resources the token is for (`aud`, RFC 8707), if it is restricted to some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// The DPoP key the token is bound to (`cnf.jkt`, RFC 9449 6), if it is bound: then it is
    /// accepted only with a proof of possession of that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Thumbprint>,
}

impl TokenInfo {
    /// A token for `subject` and `client_id` with `scope`, valid until `expires_at`, not bound to
    /// a grant, an audience or a key (add them with the `with_*` methods).
    pub fn new(subject: Subject, client_id: ClientId, scope: Scope, expires_at: Timestamp) -> Self {
        TokenInfo {
            subject,
            client_id,
            scope,
            expires_at,
            grant_id: None,
            audience: None,
            cnf: None,
        }
    }

    /// The token, belonging to grant `id`.
    pub fn with_grant_id(mut self, id: Option<GrantId>) -> Self {
        self.grant_id = id;
        self
    }

    /// The token, meant for `audience`.
    pub fn with_audience(mut self, audience: Option<Audience>) -> Self {
        self.audience = audience;
        self
    }

    /// The token, bound to the DPoP key `cnf`.
    pub fn with_cnf(mut self, cnf: Option<Thumbprint>) -> Self {
        self.cnf = cnf;
        self
    }

    /// True once the token has expired.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// What a redemption stores in the same step as it marks the device grant redeemed: the new
/// [`Grant`] and its first access token, stored under `grant.access_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedGrant {
    /// The new grant (version 0).
    pub grant: Grant,
    /// Its access token.
    pub access: TokenInfo,
}

/// Whether [`Store::insert_device_grant`](super::Store::insert_device_grant) stored the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Stored.
    Inserted,
    /// The device code or the user code is taken by a live grant: nothing was written (the
    /// caller draws new codes).
    Taken,
    /// The store holds as many pending grants as it may (a memory ceiling): nothing was
    /// written. Room should free up within `retry_after`, as pending grants expire or are
    /// decided.
    Full {
        /// When to try again.
        retry_after: Duration,
    },
}

/// The answer of [`Store::try_increment`](super::Store::try_increment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    /// True if the counter was below the maximum and was incremented; false if it was at the
    /// maximum and was left alone.
    pub counted: bool,
    /// The counter's value after the call.
    pub value: u64,
    /// When the counter's window ends and it starts again from zero.
    pub resets_at: Timestamp,
}

/// A record with the version a compare-and-swap must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Incremented by every successful swap.
    pub version: u64,
    /// The record.
    pub record: T,
}

/// A failure of the store itself (not of the client's request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot be reached right now; answered `temporarily_unavailable` (503).
    Unavailable(String),
    /// The backend failed otherwise; answered `server_error` (500).
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::Backend(m) => write!(f, "store failed: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the credential store is unavailable; retry later",
            )
            .with_retry_after(1),
            StoreError::Backend(_) => {
                OAuthError::new(ErrorCode::ServerError, "the credential store failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn store_errors_map_to_500_and_503() {
        let e: OAuthError = StoreError::Unavailable("down".into()).into();
        assert_eq!(e.code(), ErrorCode::TemporarilyUnavailable);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: OAuthError = StoreError::Backend("bad".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

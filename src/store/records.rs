//! The records a [`Store`](super::Store) keeps: clients, access and refresh tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::ids::{ClientId, Subject};
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
            .finish()
    }
}

/// Clients registered in this process: what stores that keep clients in memory (rather than in
/// their database) use to answer [`Store::client`](super::Store::client).
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: RwLock<HashMap<Box<str>, Client>>,
}

impl ClientRegistry {
    /// A registry holding `clients`.
    pub fn new(clients: impl IntoIterator<Item = Client>) -> Self {
        let registry = ClientRegistry::default();
        for c in clients {
            registry.add(c);
        }
        registry
    }

    /// Registers (or replaces) a client. Grants already issued keep their scope.
    pub fn add(&self, client: Client) {
        // A panic elsewhere cannot leave the map half-written (every write is one insert), so a
        // poisoned lock is safe to keep using.
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        clients.insert(Box::from(client.id().as_str()), client);
    }

    /// The client registered as `client_id`.
    pub fn get(&self, client_id: &str) -> Option<Client> {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        clients.get(client_id).cloned()
    }
}

/// What an access token stands for. The bearer layer puts it in the request extensions of the
/// inner service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The end user who approved.
    pub subject: Subject,
    /// The client the token was issued to.
    pub client_id: ClientId,
    /// The granted scope.
    pub scope: Scope,
    /// When the token stops being valid.
    pub expires_at: Timestamp,
}

impl TokenInfo {
    /// True once the token has expired.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// What a refresh token stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    /// The end user who approved.
    pub subject: Subject,
    /// The client the token was issued to; only it may redeem it.
    pub client_id: ClientId,
    /// The scope of the original grant: a refresh may narrow it, never widen it.
    pub scope: Scope,
    /// When the token stops being valid.
    pub expires_at: Timestamp,
    /// Digest of the access token issued alongside, revoked with it.
    pub access_token: Digest,
}

impl RefreshTokenRecord {
    /// True once the token has expired.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// The tokens of one token response, as stored: an access token and, usually, a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedTokens {
    /// Digest and record of the access token.
    pub access: (Digest, TokenInfo),
    /// Digest and record of the refresh token, if one is issued.
    pub refresh: Option<(Digest, RefreshTokenRecord)>,
}

/// A record with the version a compare-and-swap must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Incremented by every successful swap.
    pub version: u64,
    /// The record.
    pub record: T,
}

//! The configuration and state every endpoint and layer shares, built by
//! [`DeviceFlowBuilder`](crate::DeviceFlowBuilder) and read by the services.

use std::sync::Arc;
use std::time::Duration;

use crate::account_status::DynAccountStatus;
use crate::client_auth::ClientAuthMethods;
use crate::clock::Clock;
use crate::codes::{DeviceCodeGenerator, UserCodeGenerator};
use crate::end_user::EndUserResolver;
use crate::form::BodyLimits;
use crate::ids::Audience;
#[cfg(feature = "jwt")]
use crate::jwt::JwtKeys;
use crate::limits::Limiter;
use crate::observe::record;
use crate::observer::Observer;
use crate::page::VerificationPage;
use crate::scope::Scope;
use crate::sign_in::SignIn;
use crate::store::{Clients, DynClientSource, Store, TimedStore};

/// Where the endpoints are served by [`DeviceFlow::endpoints_layer`](crate::DeviceFlow::endpoints_layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// RFC 8628 device authorization endpoint. Default `/oauth/device_authorization`.
    pub device_authorization: String,
    /// RFC 6749 token endpoint. Default `/oauth/token`.
    pub token: String,
    /// The end user's verification page. Default `/device`.
    pub verification: String,
    /// RFC 7009 revocation endpoint. Default `/oauth/revoke`.
    pub revocation: String,
    /// RFC 7662 introspection endpoint. Default `/oauth/introspect`.
    pub introspection: String,
    /// RFC 8414 metadata. Default `/.well-known/oauth-authorization-server`.
    pub metadata: String,
    /// The JWK Set of the JWT signing keys (served with JWT access tokens on). Default
    /// `/.well-known/jwks.json`.
    pub jwks: String,
    /// The end user's connected devices, listed by `GET`. Default `/account/devices`.
    pub connected_devices: String,
    /// Where the connected-devices page posts a device's sign-out. Default
    /// `/account/devices/revoke`.
    pub revoke_device: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            device_authorization: "/oauth/device_authorization".into(),
            token: "/oauth/token".into(),
            verification: "/device".into(),
            revocation: "/oauth/revoke".into(),
            introspection: "/oauth/introspect".into(),
            metadata: "/.well-known/oauth-authorization-server".into(),
            jwks: "/.well-known/jwks.json".into(),
            connected_devices: "/account/devices".into(),
            revoke_device: "/account/devices/revoke".into(),
        }
    }
}

/// Builds `verification_uri_complete` from the verification URI and the displayed user code.
pub type CompleteUriFn = dyn Fn(&str, &str) -> String + Send + Sync;

pub use crate::limits::AttemptLimit;

pub(crate) struct Config {
    pub(crate) issuer: String,
    pub(crate) verification_uri: String,
    pub(crate) verification_uri_complete: Option<Arc<CompleteUriFn>>,
    pub(crate) device_codes: Arc<dyn DeviceCodeGenerator>,
    pub(crate) user_codes: Arc<dyn UserCodeGenerator>,
    pub(crate) expires_in: Duration,
    pub(crate) interval: Duration,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) refresh_token_lifetime: Option<Duration>,
    pub(crate) refresh_grace: Duration,
    pub(crate) device_authorization_auth: ClientAuthMethods,
    pub(crate) token_auth: ClientAuthMethods,
    pub(crate) body: BodyLimits,
    pub(crate) paths: Paths,
    pub(crate) end_user: Arc<dyn EndUserResolver>,
    pub(crate) account_status: Option<Arc<dyn DynAccountStatus>>,
    pub(crate) page: Arc<dyn VerificationPage>,
    pub(crate) sign_in: SignIn,
    pub(crate) limiter: Limiter,
    pub(crate) realm: String,
    pub(crate) scopes_supported: Option<Scope>,
    /// The application's own client source, asked instead of the store when set.
    pub(crate) clients: Option<Arc<dyn DynClientSource>>,
    pub(crate) grants_per_client: Option<u64>,
    pub(crate) grants_overall: Option<u64>,
    /// The audience of tokens whose request names no resource (RFC 8707).
    pub(crate) default_audience: Option<Audience>,
    /// Signs access tokens as RFC 9068 JWTs when set.
    #[cfg(feature = "jwt")]
    pub(crate) jwt: Option<Arc<JwtKeys>>,
    /// How DPoP proofs are checked; `None` when DPoP is off (proofs ignored, bearer tokens).
    #[cfg(feature = "dpop")]
    pub(crate) dpop: Option<crate::dpop::DpopConfig>,
    /// Where metrics and audit events go (the limiter holds the same one).
    pub(crate) observer: Observer,
}

pub(crate) struct Shared<S> {
    // Every call the services make is timed; the bearer layers hold the store itself
    // (`store.inner()`) as their token verifier.
    pub(crate) store: TimedStore<S>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Config,
}

impl<S: Store> Shared<S> {
    /// Where clients are looked up: the application's source if the flow has one, else the store.
    pub(crate) fn clients(&self) -> Clients<'_, TimedStore<S>> {
        Clients::new(&self.store, self.config.clients.as_deref())
    }
}

impl<S: Store> Shared<S> {
    /// Refreshes the pending-grants gauge from the store when it is due (at most once per
    /// configured interval across all requests), after a request that changed the count.
    pub(crate) async fn refresh_pending_gauge(&self) {
        let now = self.clock.now();
        if !self.config.observer.pending_due(now) {
            return;
        }
        record_pending(&self.store, now).await;
    }
}

/// Reads the number of pending grants from `store` into the gauge; a store that cannot tell,
/// or fails to, leaves it as it was.
pub(crate) async fn record_pending<S: Store>(store: &S, now: crate::clock::Timestamp) {
    match store.pending_device_grants(now).await {
        Ok(Some(n)) => record::pending_grants(n),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "could not count the pending device grants"),
    }
}

//! [`DeviceFlow`]: the configuration and store every service and layer of the crate shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::{AttemptLimit, CompleteUriFn, Paths};

use crate::account_status::{AccountStatus, DynAccountStatus};
use crate::bearer::{RequireOAuthLayer, ScopeRequirement};
use crate::client_addr::{ClientAddrs, TrustedProxies};
use crate::client_auth::ClientAuthMethods;
use crate::clock::{Clock, SystemClock};
use crate::codes::{DeviceCodeGenerator, RandomDeviceCode, UserCodeFormat, UserCodeGenerator};
use crate::config::{Config, Shared};
use crate::connected_devices::{self, ConnectedDevice, ConnectedDevices};
use crate::device_authorization::DeviceAuthorization;
use crate::end_user::{EndUserResolver, FromExtensions};
use crate::endpoints::EndpointsLayer;
use crate::family::DEFAULT_REFRESH_GRACE;
use crate::form::BodyLimits;
use crate::ids::Audience;
use crate::ids::{GrantId, Subject};
use crate::introspection::Introspection;
#[cfg(feature = "jwt")]
use crate::jwks::Jwks;
#[cfg(feature = "jwt")]
use crate::jwt::JwtKeys;
use crate::limits::{Limiter, Limits};
use crate::metadata::Metadata;
use crate::observe::AuditSink;
use crate::observer::Observer;
use crate::page::{DefaultPage, VerificationPage};
use crate::revocation::Revocation;
use crate::scope::Scope;
use crate::sign_in::SignIn;
use crate::store::{ClientSource, DynClientSource, Store, StoreResult, TimedStore};
use crate::token::Token;
use crate::verification::Verification;

/// The device flow: a store plus configuration, handing out the endpoint services and layers.
/// Cheap to clone; every service it hands out shares it.
///
/// ```
/// use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope};
///
/// let store = MemoryStore::builder()
///     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
///     .build();
/// let flow = DeviceFlow::builder(store)
///     .issuer("https://auth.example.com")
///     .build();
/// let endpoints = flow.endpoints_layer(); // serves every endpoint in front of your app
/// let guard = flow.require_oauth("profile"); // guards a route by scope
/// # let _ = (endpoints, guard);
/// ```
pub struct DeviceFlow<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for DeviceFlow<S> {
    fn clone(&self) -> Self {
        DeviceFlow {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for DeviceFlow<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.shared.config;
        f.debug_struct("DeviceFlow")
            .field("issuer", &c.issuer)
            .field("verification_uri", &c.verification_uri)
            .field("expires_in", &c.expires_in)
            .field("interval", &c.interval)
            .field("paths", &c.paths)
            .finish_non_exhaustive()
    }
}

impl<S: Store> DeviceFlow<S> {
    /// Starts configuring a flow on `store`.
    pub fn builder(store: S) -> DeviceFlowBuilder<S> {
        DeviceFlowBuilder {
            store,
            clock: Arc::new(SystemClock),
            issuer: None,
            verification_uri: None,
            verification_uri_complete: None,
            device_codes: Arc::new(RandomDeviceCode),
            user_codes: Arc::new(UserCodeFormat::default()),
            expires_in: Duration::from_secs(1800),
            interval: Duration::from_secs(5),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Some(Duration::from_secs(30 * 24 * 3600)),
            refresh_grace: DEFAULT_REFRESH_GRACE,
            device_authorization_auth: ClientAuthMethods::all(),
            token_auth: ClientAuthMethods::all(),
            body: BodyLimits::default(),
            paths: Paths::default(),
            end_user: Arc::new(FromExtensions),
            account_status: None,
            page: Arc::new(DefaultPage::default()),
            sign_in: SignIn::Challenge,
            limits: Limits::default(),
            proxies: TrustedProxies::none(),
            ipv6_prefix: 64,
            realm: "api".into(),
            scopes_supported: None,
            clients: None,
            grants_per_client: None,
            grants_overall: None,
            default_audience: None,
            #[cfg(feature = "jwt")]
            jwt: None,
            #[cfg(feature = "dpop")]
            dpop: Some(crate::dpop::DpopConfig::default()),
            allow_plain_http: false,
            audit: None,
            pending_grants_every: Some(DEFAULT_PENDING_GRANTS_EVERY),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        self.shared.store.inner()
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.shared.config.issuer
    }

    /// The configured endpoint paths.
    pub fn paths(&self) -> &Paths {
        &self.shared.config.paths
    }

    /// The device authorization endpoint service (RFC 8628 3.1).
    pub fn device_authorization(&self) -> DeviceAuthorization<S> {
        DeviceAuthorization::new(self.shared.clone())
    }

    /// The token endpoint service (device code and refresh token grants).
    pub fn token(&self) -> Token<S> {
        Token::new(self.shared.clone())
    }

    /// The end user's verification page service.
    pub fn verification(&self) -> Verification<S> {
        Verification::new(self.shared.clone())
    }

    /// The RFC 7009 revocation endpoint service.
    pub fn revocation(&self) -> Revocation<S> {
        Revocation::new(self.shared.clone())
    }

    /// The RFC 7662 introspection endpoint service.
    pub fn introspection(&self) -> Introspection<S> {
        Introspection::new(self.shared.clone())
    }

    /// The JWT signing keys, when the flow issues JWT access tokens (rotate them here).
    #[cfg(feature = "jwt")]
    pub fn jwt_keys(&self) -> Option<&Arc<JwtKeys>> {
        self.shared.config.jwt.as_ref()
    }

    /// The JWK Set endpoint service, when the flow issues JWT access tokens.
    #[cfg(feature = "jwt")]
    pub fn jwks(&self) -> Option<Jwks> {
        self.shared.config.jwt.clone().map(Jwks::new)
    }

    /// The connected-devices service: the signed-in end user's devices, listed and signed out
    /// (see the [connected-devices module](crate::connected_devices)).
    pub fn connected_devices(&self) -> ConnectedDevices<S> {
        ConnectedDevices::new(self.shared.clone())
    }

    /// The devices `subject` approved that still hold a live grant, most recently used first:
    /// for the application's own account pages. "Last used" is when tokens were last issued
    /// from the grant (its redemption or its latest refresh).
    pub async fn connected_devices_of(
        &self,
        subject: &Subject,
    ) -> StoreResult<Vec<ConnectedDevice>> {
        let shared = &self.shared;
        connected_devices::connected_devices(
            &shared.store,
            shared.clients(),
            subject,
            shared.clock.now(),
        )
        .await
    }

    /// Reads the number of pending device grants from the store into the
    /// [`device_flow_pending_grants`](crate::observe::metric::PENDING_GRANTS) gauge now (feature
    /// `metrics`; a store that cannot tell leaves it unset). The endpoints refresh it on their
    /// own at most every [`pending_grants_gauge`](DeviceFlowBuilder::pending_grants_gauge);
    /// call this before rendering a scrape for an exact figure.
    pub async fn record_pending_grants(&self) {
        if cfg!(feature = "metrics") {
            let now = self.shared.clock.now();
            crate::config::record_pending(&self.shared.store, now).await;
        }
    }

    /// Signs one device out: revokes grant `id`, with its refresh token and its access token,
    /// if and only if it is `subject`'s. `Ok(false)`, revoking nothing, for a grant that is
    /// someone else's, already gone or unknown.
    pub async fn revoke_device(&self, subject: &Subject, id: &GrantId) -> StoreResult<bool> {
        connected_devices::revoke_device(&self.shared, subject, id, None).await
    }

    /// Signs every device of `subject` out (for "sign out everywhere", or when the account
    /// is disabled: make the [`AccountStatus`] refuse it first); the ids of the grants revoked.
    pub async fn revoke_all_devices(&self, subject: &Subject) -> StoreResult<Vec<GrantId>> {
        connected_devices::revoke_all_devices(&self.shared, subject, None).await
    }

    /// The RFC 8414 metadata service.
    pub fn metadata(&self) -> Metadata {
        Metadata::new(&self.shared)
    }

    /// A layer requiring a bearer token with every scope in `scopes` (space-separated),
    /// checked against the flow's store.
    ///
    /// # Panics
    ///
    /// If `scopes` is not valid scope syntax: it is written in code, so this is a programming
    /// error caught at start-up. Use [`require`](Self::require) to handle it instead.
    pub fn require_oauth(&self, scopes: &str) -> RequireOAuthLayer<S> {
        match Scope::parse(scopes) {
            Ok(scope) => self.require(ScopeRequirement::AllOf(scope)),
            Err(e) => panic!("require_oauth({scopes:?}): {e}"),
        }
    }

    /// A layer requiring a bearer token that meets `requirement`, checked against the flow's
    /// store, challenging with the flow's realm.
    ///
    /// When the flow takes DPoP (the default with the `dpop` feature), so does the layer:
    /// DPoP-bound tokens with the DPoP scheme and a proof for a URL under the flow's issuer,
    /// each proof claimed once in the store. For routes served under another URL, give the
    /// layer [`dpop_check`](Self::dpop_check) of that URL.
    pub fn require(&self, requirement: ScopeRequirement) -> RequireOAuthLayer<S> {
        let layer = RequireOAuthLayer::from_parts(
            self.shared.store.inner().clone(),
            requirement,
            &self.shared.config.realm,
            self.shared.clock.clone(),
        );
        #[cfg(feature = "dpop")]
        let layer = match &self.shared.config.dpop {
            Some(_) => layer.with_dpop(self.dpop_check(&self.shared.config.issuer).ok()),
            None => layer,
        };
        layer
    }

    /// A DPoP check for resources served under `base_url` with the flow's rules (algorithms,
    /// `iat` window, nonces), claiming proofs in the flow's store, for
    /// [`RequireOAuthLayer::with_dpop`].
    #[cfg(feature = "dpop")]
    pub fn dpop_check(
        &self,
        base_url: &str,
    ) -> Result<crate::bearer::DpopCheck, crate::bearer::InvalidBaseUrl> {
        let config = self.shared.config.dpop.clone().unwrap_or_default();
        let replay: Arc<dyn crate::replay::ReplayCache> = Arc::new(self.shared.store.clone());
        crate::bearer::DpopCheck::from_parts(base_url, config, replay)
    }

    /// A layer serving every endpoint at its [`Paths`] in front of an inner service, which gets
    /// every other request.
    pub fn endpoints_layer(&self) -> EndpointsLayer<S> {
        EndpointsLayer::new(self.shared.clone())
    }
}

/// Configures a [`DeviceFlow`].
pub struct DeviceFlowBuilder<S> {
    store: S,
    clock: Arc<dyn Clock>,
    issuer: Option<String>,
    verification_uri: Option<String>,
    verification_uri_complete: Option<Arc<CompleteUriFn>>,
    device_codes: Arc<dyn DeviceCodeGenerator>,
    user_codes: Arc<dyn UserCodeGenerator>,
    expires_in: Duration,
    interval: Duration,
    access_token_lifetime: Duration,
    refresh_token_lifetime: Option<Duration>,
    refresh_grace: Duration,
    device_authorization_auth: ClientAuthMethods,
    token_auth: ClientAuthMethods,
    body: BodyLimits,
    paths: Paths,
    end_user: Arc<dyn EndUserResolver>,
    account_status: Option<Arc<dyn DynAccountStatus>>,
    page: Arc<dyn VerificationPage>,
    sign_in: SignIn,
    limits: Limits,
    proxies: TrustedProxies,
    ipv6_prefix: u8,
    realm: String,
    scopes_supported: Option<Scope>,
    clients: Option<Arc<dyn DynClientSource>>,
    grants_per_client: Option<u64>,
    grants_overall: Option<u64>,
    default_audience: Option<Audience>,
    #[cfg(feature = "jwt")]
    jwt: Option<Arc<JwtKeys>>,
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::DpopConfig>,
    allow_plain_http: bool,
    audit: Option<Arc<dyn AuditSink>>,
    pending_grants_every: Option<Duration>,
}

/// How often, at most, the endpoints read the number of pending grants from the store for the
/// `device_flow_pending_grants` gauge, by default.
pub const DEFAULT_PENDING_GRANTS_EVERY: Duration = Duration::from_secs(15);

impl<S> fmt::Debug for DeviceFlowBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceFlowBuilder")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl<S: Store> DeviceFlowBuilder<S> {
    /// The issuer identifier (RFC 8414 section 2): an absolute `https` URL without query or
    /// fragment, such as `https://auth.example.com`; plain `http` only on a loopback host
    /// (`localhost`, `127.0.0.1`, `[::1]`), for development. Trailing slashes are dropped: every
    /// endpoint URL is the issuer followed by its path. The verification URI defaults to the
    /// issuer plus the verification path.
    ///
    /// There is no default to ship by accident: [`try_build`](Self::try_build) refuses a flow
    /// without an issuer, and [`build`](Self::build) panics without one in release builds
    /// (debug builds fall back to [`DEV_ISSUER`] with a warning).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into().trim_end_matches('/').to_owned());
        self
    }

    /// Accepts a plain `http` issuer and verification URI on any host, not only on loopback.
    ///
    /// For a demo or a lab on a private network only: RFC 8414 requires an `https` issuer, and
    /// over plain HTTP anyone on the path reads every code and token. Behind a proxy that
    /// terminates TLS, give the public `https` URL as the issuer instead.
    pub fn allow_plain_http(mut self, allow: bool) -> Self {
        self.allow_plain_http = allow;
        self
    }

    /// The `verification_uri` shown to end users (default: issuer + verification path).
    pub fn verification_uri(mut self, uri: impl Into<String>) -> Self {
        self.verification_uri = Some(uri.into());
        self
    }

    /// How `verification_uri_complete` is built from the verification URI and the displayed
    /// user code. Default: `{uri}?user_code={code}`.
    pub fn verification_uri_complete(
        mut self,
        f: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.verification_uri_complete = Some(Arc::new(f));
        self
    }

    /// The time source (default: the system clock). Tests pass a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Lifetime of device and user codes (`expires_in`, default 1800 s).
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = d;
        self
    }

    /// Minimum polling interval (`interval`, default 5 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Access token lifetime (default 1 hour).
    pub fn access_token_lifetime(mut self, d: Duration) -> Self {
        self.access_token_lifetime = d;
        self
    }

    /// Refresh token lifetime (default 30 days); `None` issues no refresh tokens.
    pub fn refresh_token_lifetime(mut self, d: Option<Duration>) -> Self {
        self.refresh_token_lifetime = d;
        self
    }

    /// How long after a refresh the refresh token it replaced may be presented once more and
    /// still be answered, as the retry of a device that never received the reply (default
    /// 30 s; zero for none). The retry gets a fresh pair and revokes the pair it replaces.
    /// Past the grace period, or for any older token of the grant, a presented refresh token is
    /// reuse: the whole grant is revoked (RFC 9700 4.14.2).
    pub fn refresh_token_grace(mut self, d: Duration) -> Self {
        self.refresh_grace = d;
        self
    }

    /// The user code format or generator (default: 8 base-20 characters, `XXXX-XXXX`).
    pub fn user_codes(mut self, g: impl UserCodeGenerator) -> Self {
        self.user_codes = Arc::new(g);
        self
    }

    /// The device code generator (default: 256 random bits).
    pub fn device_codes(mut self, g: impl DeviceCodeGenerator) -> Self {
        self.device_codes = Arc::new(g);
        self
    }

    /// Client authentication methods accepted at every endpoint (default: all three).
    pub fn client_auth_methods(mut self, m: ClientAuthMethods) -> Self {
        self.device_authorization_auth = m;
        self.token_auth = m;
        self
    }

    /// Client authentication methods accepted at the device authorization endpoint.
    pub fn device_authorization_auth_methods(mut self, m: ClientAuthMethods) -> Self {
        self.device_authorization_auth = m;
        self
    }

    /// Client authentication methods accepted at the token, revocation and introspection
    /// endpoints.
    pub fn token_auth_methods(mut self, m: ClientAuthMethods) -> Self {
        self.token_auth = m;
        self
    }

    /// Largest accepted request body (default 16 KiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body.max_bytes = bytes;
        self
    }

    /// Time allowed to receive a request body, answered 408 past it (default: no limit;
    /// [`RECOMMENDED_BODY_TIMEOUT`](crate::form::RECOMMENDED_BODY_TIMEOUT) is 10 s). It runs
    /// on the Tokio timer, so the services must run on a Tokio runtime with time enabled (as
    /// every `#[tokio::main]` runtime is).
    pub fn body_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.body.read_timeout = timeout;
        self
    }

    /// Endpoint paths for [`DeviceFlow::endpoints_layer`].
    pub fn paths(mut self, paths: Paths) -> Self {
        self.paths = paths;
        self
    }

    /// How the verification page learns who the end user is (default: a
    /// [`Subject`] in the request extensions, put there by the application's
    /// login layer).
    pub fn end_user(mut self, r: impl EndUserResolver) -> Self {
        self.end_user = Arc::new(r);
        self
    }

    /// Asks the application, whenever tokens are handed out (at redemption and at every
    /// refresh), whether the grant's end user may still have them (default: nobody is asked).
    /// A refused end user gets `invalid_grant` and loses every grant at once; see
    /// [`AccountStatus`].
    pub fn account_status(mut self, check: impl AccountStatus) -> Self {
        self.account_status = Some(Arc::new(check));
        self
    }

    /// The verification page template (default: [`DefaultPage`]).
    pub fn page(mut self, p: impl VerificationPage) -> Self {
        self.page = Arc::new(p);
        self
    }

    /// What a signed-out visitor of the verification page gets (default
    /// [`SignIn::Challenge`], a 401): [`SignIn::redirect`] sends browsers to the
    /// application's login page, with a return address back to the code they were entering.
    pub fn sign_in(mut self, sign_in: SignIn) -> Self {
        self.sign_in = sign_in;
        self
    }

    /// Failed user-code entries allowed per end user (default 5 per 15 minutes); see
    /// [`GuessingLimits`](crate::limits::GuessingLimits).
    pub fn failed_attempts_per_user(mut self, limit: AttemptLimit) -> Self {
        self.limits.guessing.per_user = limit;
        self
    }

    /// Failed user-code entries across all end users past which the budgets of those who
    /// already failed tighten (default 1 000 per 15 minutes; `None` never to tighten). It
    /// never refuses an end user who has not entered a wrong code; see
    /// [`GuessingLimits`](crate::limits::GuessingLimits).
    pub fn failed_attempts_overall(mut self, limit: Option<AttemptLimit>) -> Self {
        self.limits.guessing.under_attack = limit;
        self
    }

    /// Every flood, guessing and failed-authentication limit (default [`Limits::default`]).
    /// The per-source ones need the client address: see [`client_addr`](crate::client_addr).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The reverse proxies whose forwarding header names the client (default: none, the TCP
    /// peer is the client).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// How many leading bits of an IPv6 address make one source for the limits (default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// The realm of the bearer layer's challenges (default `api`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The scopes advertised in metadata (`scopes_supported`).
    pub fn scopes_supported(mut self, scope: Scope) -> Self {
        self.scopes_supported = Some(scope);
        self
    }

    /// Where clients are looked up (default: the store, which is a [`ClientSource`]): every
    /// endpoint that authenticates a client or shows its name asks `source` instead, on every
    /// request, so removing or changing a client there takes effect at once. For an
    /// application that keeps its clients in its own database and the flow's grants and tokens
    /// in one of the crate's stores. See [`ClientSource`] for an example.
    pub fn clients(mut self, source: impl ClientSource) -> Self {
        self.clients = Some(Arc::new(source));
        self
    }

    /// At most this many device authorizations per client within one `expires_in` window
    /// (default: no cap). Beware: a public client's id ships in every device of a product, so
    /// anyone can spend this budget and lock every device of the product out until the window
    /// ends. Past it the device authorization endpoint answers 429 `temporarily_unavailable`
    /// with the `Retry-After` of the window's end. The memory ceiling of the store (for
    /// [`MemoryStore`](crate::MemoryStore), `max_pending_grants`) bounds memory without that
    /// risk.
    pub fn max_grants_per_client(mut self, max: Option<u64>) -> Self {
        self.grants_per_client = max;
        self
    }

    /// At most this many device authorizations across all clients within one `expires_in`
    /// window (default: no cap).
    pub fn max_grants_overall(mut self, max: Option<u64>) -> Self {
        self.grants_overall = max;
        self
    }

    /// The audience (RFC 8707) of tokens whose device authorization request names no
    /// `resource` (default: none, so such tokens carry no `aud`, unless JWT access tokens are
    /// on: RFC 9068 requires an `aud`, and it then defaults to the issuer identifier). A
    /// resource server checking its audience
    /// ([`RequireOAuthLayer::with_audience`](crate::RequireOAuthLayer::with_audience)) refuses
    /// tokens without one, so set this to the API's resource indicator when devices do not
    /// name one. Which resources a device may name is up to its client
    /// ([`Client::with_resources`](crate::Client::with_resources)).
    pub fn default_audience(mut self, audience: Option<Audience>) -> Self {
        self.default_audience = audience;
        self
    }

    /// Issues access tokens as RFC 9068 JWTs signed with `keys` (see [`crate::jwt`]), and
    /// publishes the keys at [`Paths::jwks`] and as `jwks_uri` in the metadata. Every token's
    /// digest is still stored, so introspection and revocation answer for JWTs as for random
    /// tokens; a resource server that verifies JWTs itself accepts them until they expire.
    #[cfg(feature = "jwt")]
    pub fn jwt_access_tokens(mut self, keys: Arc<JwtKeys>) -> Self {
        self.jwt = Some(keys);
        self
    }

    /// How DPoP proofs (RFC 9449) are checked at the token endpoint and by the flow's bearer
    /// layers: algorithms, `iat` window, nonces (default: [`DpopConfig::default`](crate::dpop::DpopConfig),
    /// no nonces). `None` turns DPoP off: proofs are ignored and every token is a bearer token
    /// (a client that [requires](crate::dpop::DpopPolicy::Required) DPoP then gets none).
    #[cfg(feature = "dpop")]
    pub fn dpop(mut self, config: Option<crate::dpop::DpopConfig>) -> Self {
        self.dpop = config;
        self
    }

    /// Where the flow's audit events go (default: nowhere): device authorized, approved or
    /// denied, tokens issued, refreshed and revoked, refresh-token reuse, wrong user codes and
    /// limits hit, as typed [`AuditEvent`](crate::observe::AuditEvent)s with the ids involved
    /// and never a secret. The sink is called on the request path; see [`crate::observe`].
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// How often, at most, the endpoints read the number of pending device grants from the
    /// store ([`Store::pending_device_grants`]) into the `device_flow_pending_grants` gauge
    /// (feature `metrics`; default [`DEFAULT_PENDING_GRANTS_EVERY`], 15 s): after a device
    /// authorization, a decision or a poll, once the interval has passed. `None` never reads
    /// it (call [`DeviceFlow::record_pending_grants`] instead, for instance on each scrape).
    pub fn pending_grants_gauge(mut self, every: Option<Duration>) -> Self {
        self.pending_grants_every = every;
        self
    }

    /// The flow, or what is wrong with its configuration: no issuer (there is no default
    /// here, in any build), an issuer or verification URI that is not an absolute `https` URL
    /// (plain `http` only on loopback hosts) or has a fragment (or, for the issuer, a query),
    /// an endpoint path that does not start with `/`, or two endpoints at one path.
    pub fn try_build(self) -> Result<DeviceFlow<S>, BuildError> {
        let issuer = self.issuer.clone().ok_or(BuildError::MissingIssuer)?;
        if issuer.contains('?') {
            return Err(BuildError::InvalidIssuer {
                issuer,
                reason: "it has a query",
            });
        }
        if let Err(reason) = check_url(&issuer, self.allow_plain_http) {
            return Err(BuildError::InvalidIssuer { issuer, reason });
        }
        if let Some(uri) = &self.verification_uri {
            if let Err(reason) = check_url(uri, self.allow_plain_http) {
                return Err(BuildError::InvalidVerificationUri {
                    uri: uri.clone(),
                    reason,
                });
            }
        }
        check_paths(&self.paths)?;
        Ok(self.assemble(issuer))
    }

    /// The flow.
    ///
    /// # Panics
    ///
    /// When [`try_build`](Self::try_build) would refuse it: a configuration written in code
    /// is checked at start-up. One exception, for development: a debug build
    /// (`debug_assertions`) without an issuer falls back to [`DEV_ISSUER`] and logs a warning
    /// (once per process); a release build without an issuer panics.
    pub fn build(self) -> DeviceFlow<S> {
        self.build_as(cfg!(debug_assertions))
    }

    /// [`build`](Self::build) as a debug (`true`) or a release build does it: a parameter, so
    /// the release rule is tested in the (debug) test run too.
    fn build_as(mut self, debug: bool) -> DeviceFlow<S> {
        if self.issuer.is_none() && debug {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    issuer = DEV_ISSUER,
                    "DeviceFlowBuilder: no issuer set, using the development default; \
                     a release build refuses to start without one"
                );
            });
            self.issuer = Some(DEV_ISSUER.to_owned());
        }
        match self.try_build() {
            Ok(flow) => flow,
            Err(e) => panic!("DeviceFlowBuilder::build: {e}"),
        }
    }

    /// The flow from a checked configuration.
    fn assemble(self, issuer: String) -> DeviceFlow<S> {
        #[cfg(feature = "jwt")]
        let default_audience = self.default_audience.or_else(|| {
            self.jwt
                .as_ref()
                .and_then(|_| Audience::from_resources([&issuer]).ok())
        });
        #[cfg(not(feature = "jwt"))]
        let default_audience = self.default_audience;
        let verification_uri = self
            .verification_uri
            .unwrap_or_else(|| format!("{}{}", issuer, self.paths.verification));
        let clients = ClientAddrs {
            proxies: self.proxies,
            ipv6_prefix: self.ipv6_prefix,
        };
        let observer = Observer::new(self.audit, self.pending_grants_every);
        let limiter = Limiter::new(self.limits, clients, self.clock.clone(), observer.clone());
        DeviceFlow {
            shared: Arc::new(Shared {
                store: TimedStore::new(Arc::new(self.store)),
                clock: self.clock,
                config: Config {
                    issuer,
                    verification_uri,
                    verification_uri_complete: self.verification_uri_complete,
                    device_codes: self.device_codes,
                    user_codes: self.user_codes,
                    expires_in: self.expires_in,
                    interval: self.interval,
                    access_token_lifetime: self.access_token_lifetime,
                    refresh_token_lifetime: self.refresh_token_lifetime,
                    refresh_grace: self.refresh_grace,
                    device_authorization_auth: self.device_authorization_auth,
                    token_auth: self.token_auth,
                    body: self.body,
                    paths: self.paths,
                    end_user: self.end_user,
                    account_status: self.account_status,
                    page: self.page,
                    sign_in: self.sign_in,
                    limiter,
                    realm: self.realm,
                    scopes_supported: self.scopes_supported,
                    clients: self.clients,
                    grants_per_client: self.grants_per_client,
                    grants_overall: self.grants_overall,
                    default_audience,
                    #[cfg(feature = "jwt")]
                    jwt: self.jwt,
                    #[cfg(feature = "dpop")]
                    dpop: self.dpop,
                    observer,
                },
            }),
        }
    }
}

/// The issuer a debug build falls back to when none is set: [`DeviceFlowBuilder::build`] in a
/// release build refuses to start without one.
pub const DEV_ISSUER: &str = "http://localhost:8080";

/// What is wrong with a [`DeviceFlowBuilder`]'s configuration, from
/// [`try_build`](DeviceFlowBuilder::try_build).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No [`issuer`](DeviceFlowBuilder::issuer) was set.
    MissingIssuer,
    /// The issuer is not an RFC 8414 issuer identifier.
    InvalidIssuer {
        /// The issuer as configured (trailing slashes dropped).
        issuer: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The [`verification_uri`](DeviceFlowBuilder::verification_uri) cannot be shown to end
    /// users as it is.
    InvalidVerificationUri {
        /// The URI as configured.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An endpoint path would never be served.
    InvalidPath {
        /// Which of the [`Paths`] (its field name).
        endpoint: &'static str,
        /// The path as configured.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two endpoints are configured at one path: only one of them would be served.
    DuplicatePath {
        /// The path.
        path: String,
        /// The two endpoints (their field names in [`Paths`]).
        endpoints: (&'static str, &'static str),
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingIssuer => f.write_str(
                "no issuer set: call .issuer(\"https://your-server.example\") with the URL \
                 devices and clients reach this server at",
            ),
            BuildError::InvalidIssuer { issuer, reason } => write!(
                f,
                "issuer {issuer:?} is not an RFC 8414 issuer identifier: {reason}"
            ),
            BuildError::InvalidVerificationUri { uri, reason } => {
                write!(f, "verification_uri {uri:?} is not usable: {reason}")
            }
            BuildError::InvalidPath {
                endpoint,
                path,
                reason,
            } => write!(f, "path {path:?} of the {endpoint} endpoint: {reason}"),
            BuildError::DuplicatePath {
                path,
                endpoints: (a, b),
            } => write!(f, "the {a} and {b} endpoints are both at {path:?}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Checks an absolute URL the flow publishes: `https`, or `http` on a loopback host only (on
/// any host when `plain_http` is allowed), with a host and no fragment.
fn check_url(url: &str, plain_http: bool) -> Result<(), &'static str> {
    if url.contains('#') {
        return Err("it has a fragment");
    }
    let uri: http::Uri = url.parse().map_err(|_| "it is not a URL")?;
    let scheme = uri.scheme_str().ok_or(
        "it is not an absolute URL (give the scheme and host, as in https://auth.example.com)",
    )?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("it is not an absolute URL (no host)")?;
    match scheme {
        "https" => Ok(()),
        "http" if plain_http || is_loopback(host) => Ok(()),
        "http" => {
            Err("plain http is only for loopback hosts (localhost, 127.0.0.1, [::1]); use https")
        }
        _ => Err("its scheme is not https"),
    }
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Every endpoint path starts with `/` (a request path always does, so another would never
/// match) and no two endpoints share one.
fn check_paths(paths: &Paths) -> Result<(), BuildError> {
    let Paths {
        device_authorization,
        token,
        verification,
        revocation,
        introspection,
        metadata,
        jwks,
        connected_devices,
        revoke_device,
    } = paths;
    let all = [
        ("device_authorization", device_authorization),
        ("token", token),
        ("verification", verification),
        ("revocation", revocation),
        ("introspection", introspection),
        ("metadata", metadata),
        ("jwks", jwks),
        ("connected_devices", connected_devices),
        ("revoke_device", revoke_device),
    ];
    for (i, (endpoint, path)) in all.iter().enumerate() {
        if !path.starts_with('/') {
            return Err(BuildError::InvalidPath {
                endpoint,
                path: path.to_string(),
                reason: "it does not start with `/`, so no request would ever reach it",
            });
        }
        if let Some((other, _)) = all[..i].iter().find(|(_, p)| p == path) {
            return Err(BuildError::DuplicatePath {
                path: path.to_string(),
                endpoints: (other, endpoint),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    #[should_panic(expected = "no issuer set")]
    fn a_release_build_refuses_to_start_without_an_issuer() {
        let _ = DeviceFlow::builder(MemoryStore::default()).build_as(false);
    }

    #[test]
    fn a_debug_build_falls_back_to_the_development_issuer() {
        let flow = DeviceFlow::builder(MemoryStore::default()).build_as(true);
        assert_eq!(flow.issuer(), DEV_ISSUER);
    }
}

//! [`IntrospectionVerifier`]: asks the authorization server about each token (RFC 7662), and
//! remembers the answer for a while.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body::Body;
use http_body_util::Full;
use serde::Deserialize;
use tower_service::Service;

use super::cache::{AnswerCache, Singleflight};
use super::http::{BoxError, HttpError, TowerTransport, Transport};
use super::wire::{absolute_url, audience_of, InvalidUrl, OneOrMany};
use crate::bearer::{TokenVerifier, VerifyError};
use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};
use crate::ids::{ClientId, GrantId, Subject};
use crate::scope::Scope;
use crate::store::TokenInfo;

type Answer = Result<Option<TokenInfo>, VerifyError>;

/// Verifies tokens by RFC 7662 introspection at a remote authorization server, authenticating
/// as a confidential client (`client_secret_basic`).
///
/// - Answers are cached in memory, by the token's SHA-256 digest: an active token at most
///   [`cache_ttl`](IntrospectionVerifierBuilder::cache_ttl) (default 30 s) and never past its
///   `exp`; an inactive one [`negative_cache_ttl`](IntrospectionVerifierBuilder::negative_cache_ttl)
///   (default 2 s); at most [`cache_capacity`](IntrospectionVerifierBuilder::cache_capacity)
///   answers (default 100 000). A revoked token is thus refused at most `cache_ttl` after its
///   revocation. Failures are not cached.
/// - However many requests present the same uncached token at once, one introspection request
///   is in flight for it; the others wait for its answer.
/// - No answer within [`timeout`](IntrospectionVerifierBuilder::timeout) (default 5 s), a
///   refused connection or a 5xx/429 answer is [`VerifyError::Unavailable`]: the bearer layer
///   answers 503 (gRPC `UNAVAILABLE`), never lets the request through.
/// - Refresh tokens (`token_type: refresh_token`), and tokens of another issuer (`iss`), are
///   refused.
///
/// The HTTP client is any Tower service, so the application chooses it and its TLS. For plain
/// HTTP, hyper-util's client:
///
/// ```
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_device_flow::resource_server::IntrospectionVerifier;
/// use tower_device_flow::ScopeRequirement;
/// use tower_device_flow::{RequireOAuthLayer, Scope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let http = Client::builder(TokioExecutor::new()).build_http();
/// let verifier = IntrospectionVerifier::builder(http, "http://127.0.0.1:8080/oauth/introspect")
///     .unwrap()
///     .client_credentials("demo-confidential", "demo-secret")
///     .expected_issuer("http://127.0.0.1:8080")
///     .build();
/// let layer = RequireOAuthLayer::new(
///     verifier,
///     ScopeRequirement::AllOf(Scope::parse("profile").unwrap()),
/// )
/// .with_audience("http://127.0.0.1:8080/api");
/// # let _ = layer;
/// # }
/// ```
///
/// For HTTPS, build the client with an HTTPS connector (for example `hyper-rustls`'s
/// `HttpsConnectorBuilder::new().with_webpki_roots().https_only().enable_http1().build()`
/// passed to `Client::builder(TokioExecutor::new()).build(connector)`).
#[derive(Clone)]
pub struct IntrospectionVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    http: Box<dyn Transport>,
    endpoint: Uri,
    authorization: Option<HeaderValue>,
    issuer: Option<String>,
    timeout: Duration,
    ttl: Duration,
    negative_ttl: Duration,
    cache: AnswerCache<Option<TokenInfo>>,
    inflight: Singleflight<Answer>,
}

/// Configures an [`IntrospectionVerifier`].
pub struct IntrospectionVerifierBuilder {
    http: Box<dyn Transport>,
    endpoint: Uri,
    authorization: Option<HeaderValue>,
    issuer: Option<String>,
    timeout: Duration,
    ttl: Duration,
    negative_ttl: Duration,
    capacity: usize,
}

impl IntrospectionVerifier {
    /// Starts configuring a verifier that introspects at `endpoint` with the HTTP client `http`.
    pub fn builder<C, B>(
        http: C,
        endpoint: &str,
    ) -> Result<IntrospectionVerifierBuilder, InvalidUrl>
    where
        C: Service<Request<Full<Bytes>>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Ok(IntrospectionVerifierBuilder {
            http: Box::new(TowerTransport(http)),
            endpoint: absolute_url(endpoint)?,
            authorization: None,
            issuer: None,
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            capacity: 100_000,
        })
    }
}

impl IntrospectionVerifierBuilder {
    /// Authenticates as `client_id` with `secret` (`client_secret_basic`, RFC 6749 2.3.1).
    pub fn client_credentials(mut self, client_id: &str, secret: &str) -> Self {
        let enc = |s: &str| {
            serde_urlencoded::to_string([("", s)])
                .map(|e| e[1..].to_owned())
                .unwrap_or_default()
        };
        let basic = STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)));
        self.authorization = HeaderValue::try_from(format!("Basic {basic}"))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self
    }

    /// Refuses active answers whose `iss` is not `issuer` (default: `iss` is not checked).
    pub fn expected_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// How long to wait for the authorization server (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long an active answer is kept, at most (default 30 s; never past the token's
    /// `exp`). Zero asks the authorization server every time. This bounds how long a revoked
    /// token is still accepted.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an inactive answer is kept (default 2 s), so a flood of one bad token costs the
    /// authorization server one request per period.
    pub fn negative_cache_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How many answers are kept at most (default 100 000; about 200 bytes each).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The verifier.
    pub fn build(self) -> IntrospectionVerifier {
        IntrospectionVerifier {
            inner: Arc::new(Inner {
                http: self.http,
                endpoint: self.endpoint,
                authorization: self.authorization,
                issuer: self.issuer,
                timeout: self.timeout,
                ttl: self.ttl,
                negative_ttl: self.negative_ttl,
                cache: AnswerCache::new(self.capacity),
                inflight: Singleflight::new(),
            }),
        }
    }
}

impl fmt::Debug for IntrospectionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionVerifier")
            .field("endpoint", &self.inner.endpoint)
            .field("cache_ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IntrospectionVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionVerifierBuilder")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The RFC 7662 2.2 members this verifier reads.
#[derive(Deserialize)]
struct IntrospectionAnswer {
    active: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    grant_id: Option<String>,
    #[serde(default)]
    cnf: Option<Cnf>,
}

#[derive(Deserialize)]
struct Cnf {
    #[serde(default)]
    jkt: Option<String>,
}

impl Inner {
    async fn introspect(&self, token: &str) -> Answer {
        let body =
            serde_urlencoded::to_string([("token", token), ("token_type_hint", "access_token")])
                .map_err(|e| VerifyError::Failed(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| VerifyError::Failed(e.to_string()))?;
        let (status, body) = self
            .http
            .send(req, self.timeout)
            .await
            .map_err(|e| match e {
                HttpError::Unreachable(m) => {
                    VerifyError::Unavailable(format!("introspection at {}: {m}", self.endpoint))
                }
            })?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(VerifyError::Unavailable(format!(
                "introspection at {} answered {status}",
                self.endpoint
            )));
        }
        if status != StatusCode::OK {
            // 401/400: this resource server is misconfigured (credentials, endpoint).
            return Err(VerifyError::Failed(format!(
                "introspection at {} answered {status}",
                self.endpoint
            )));
        }
        let answer: IntrospectionAnswer = serde_json::from_slice(&body).map_err(|e| {
            VerifyError::Failed(format!("introspection answer is not RFC 7662 JSON: {e}"))
        })?;
        Ok(self.token_info(answer))
    }

    /// What an answer says the token stands for; `None` for an inactive token, a refresh
    /// token, another issuer's token, or one whose members do not parse.
    fn token_info(&self, a: IntrospectionAnswer) -> Option<TokenInfo> {
        if !a.active || a.token_type.as_deref() == Some("refresh_token") {
            return None;
        }
        if let (Some(expected), Some(iss)) = (&self.issuer, &a.iss) {
            if expected != iss {
                return None;
            }
        }
        let scope = match &a.scope {
            Some(s) => Scope::parse(s).ok()?,
            None => Scope::default(),
        };
        // Without `exp` the answer is only good for the cache TTL.
        let expires_at = a.exp.map_or(Timestamp::from_unix_millis(u64::MAX), |exp| {
            Timestamp::from_unix_millis(exp.saturating_mul(1000))
        });
        let audience = match a.aud {
            Some(aud) => Some(audience_of(aud)?),
            None => None,
        };
        let cnf = match a.cnf.and_then(|c| c.jkt) {
            Some(jkt) => Some(Thumbprint::parse(&jkt)?),
            None => None,
        };
        let subject = a.sub.or(a.username).unwrap_or_default();
        Some(
            TokenInfo::new(
                Subject::new(subject),
                ClientId::new(a.client_id.unwrap_or_default()),
                scope,
                expires_at,
            )
            .with_grant_id(a.grant_id.as_deref().and_then(GrantId::parse))
            .with_audience(audience)
            .with_cnf(cnf),
        )
    }

    /// The answer for `token`, from the one introspection in flight for it, cached.
    async fn introspect_once(&self, token: &str, key: Digest, now: Timestamp) -> Answer {
        self.inflight
            .run(&key, || async {
                let answer = self.introspect(token).await;
                if let Ok(found) = &answer {
                    self.cache
                        .insert(&key, found.clone(), self.keep_until(found, now), now);
                }
                answer
            })
            .await
    }

    /// How long an answer obtained at `now` may be kept.
    fn keep_until(&self, answer: &Option<TokenInfo>, now: Timestamp) -> Timestamp {
        match answer {
            Some(t) => now.saturating_add(self.ttl).min(t.expires_at),
            None => now.saturating_add(self.negative_ttl),
        }
    }
}

impl TokenVerifier for IntrospectionVerifier {
    fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<Option<TokenInfo>, VerifyError>> + Send {
        let inner = &self.inner;
        let key = Digest::of(token.as_bytes());
        let cached = inner.cache.get(&key, now);
        async move {
            match cached {
                Some(answer) => Ok(answer),
                // Boxed: a cache hit stays a small future.
                None => Box::pin(inner.introspect_once(token, key, now)).await,
            }
        }
    }
}

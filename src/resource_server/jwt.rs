//! [`JwtVerifier`]: verifies RFC 9068 JWT access tokens against the issuer's JWKS.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tower_service::Service;

use super::cache::AnswerCache;
use super::http::{BoxError, HttpError, TowerTransport, Transport};
use super::wire::{absolute_url, InvalidUrl};
use crate::bearer::{TokenVerifier, VerifyError};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::jwt::{AccessTokenClaims, ACCESS_TOKEN_TYP};
use crate::store::TokenInfo;

/// Verifies RFC 9068 JWT access tokens on its own, with the public keys the issuer publishes.
///
/// A token is accepted only if all of these hold, else it is `invalid_token`:
/// - its header has `typ: at+jwt`, a `kid`, and `alg` `EdDSA` or `ES256`, the algorithm of the
///   key with that `kid` (so `alg: none`, `HS256` and key confusion are refused);
/// - its signature verifies with that key, from the issuer's JWKS. An unknown `kid` refetches
///   the JWKS (after a rotation), at most once per
///   [`min_refresh_interval`](JwtVerifierBuilder::min_refresh_interval) (default 10 s), and
///   keys older than [`max_key_age`](JwtVerifierBuilder::max_key_age) (15 min) are refetched,
///   so a key the issuer withdraws stops verifying new tokens;
/// - `iss` is the configured issuer; `exp` is after now and `nbf`, `iat` (if present) not
///   after now, within a [`leeway`](JwtVerifierBuilder::leeway) (default 5 s) for clock skew;
/// - `sub`, `client_id`, `jti` are present and `scope` is valid scope syntax.
///
/// `aud` and the scope are checked by the bearer layer
/// ([`RequireOAuthLayer::with_audience`](crate::RequireOAuthLayer::with_audience)), as for
/// every verifier. Verified tokens are remembered by digest until they expire (at most
/// [`cache_capacity`](JwtVerifierBuilder::cache_capacity), default 100 000), so a client
/// presenting its token again costs a hash lookup, not a signature check.
///
/// Revocation: the verifier never asks the authorization server about a token, so a revoked
/// JWT is accepted until its `exp`. Keep access tokens short-lived, or introspect where a
/// revocation must take effect at once.
///
/// When the JWKS cannot be fetched (the authorization server is down) tokens signed by known
/// keys still verify; a token with an unknown `kid` is then answered 503, as nothing can be
/// decided about it.
///
/// ```
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_device_flow::resource_server::JwtVerifier;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let http = Client::builder(TokioExecutor::new()).build_http();
/// // The JWKS location is read from the issuer's RFC 8414 metadata (`jwks_uri`).
/// let verifier = JwtVerifier::builder(http, "http://127.0.0.1:8080").unwrap().build();
/// # let _ = verifier;
/// # }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    http: Box<dyn Transport>,
    issuer: String,
    /// Where the JWKS is; found in the issuer's metadata when not configured.
    jwks_uri: RwLock<Option<Uri>>,
    keys: RwLock<Keys>,
    /// One JWKS fetch at a time.
    refresh: tokio::sync::Mutex<()>,
    min_refresh_interval: Duration,
    max_key_age: Duration,
    leeway: u64,
    timeout: Duration,
    verified: AnswerCache<TokenInfo>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (Algorithm, Arc<DecodingKey>)>,
    /// When the JWKS was last fetched, and whether that worked.
    last_fetch: Option<(Timestamp, bool)>,
}

/// Configures a [`JwtVerifier`].
pub struct JwtVerifierBuilder {
    http: Box<dyn Transport>,
    issuer: String,
    jwks_uri: Option<Uri>,
    min_refresh_interval: Duration,
    max_key_age: Duration,
    leeway: Duration,
    timeout: Duration,
    capacity: usize,
}

impl JwtVerifier {
    /// Starts configuring a verifier of tokens issued by `issuer`, fetching keys with `http`.
    pub fn builder<C, B>(http: C, issuer: &str) -> Result<JwtVerifierBuilder, InvalidUrl>
    where
        C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        absolute_url(issuer)?;
        Ok(JwtVerifierBuilder {
            http: Box::new(TowerTransport(http)),
            issuer: issuer.trim_end_matches('/').to_owned(),
            jwks_uri: None,
            min_refresh_interval: Duration::from_secs(10),
            max_key_age: Duration::from_secs(15 * 60),
            leeway: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            capacity: 100_000,
        })
    }
}

impl JwtVerifierBuilder {
    /// Fetches the keys from `url` (default: the `jwks_uri` of the issuer's RFC 8414 metadata
    /// at `{issuer}/.well-known/oauth-authorization-server`).
    pub fn jwks_uri(mut self, url: &str) -> Result<Self, InvalidUrl> {
        self.jwks_uri = Some(absolute_url(url)?);
        Ok(self)
    }

    /// The least time between two JWKS fetches for unknown `kid`s (default 10 s), so tokens
    /// with made-up key ids cannot make the verifier hammer the authorization server.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// How long fetched keys are trusted before the JWKS is fetched again (default 15 min), so
    /// a key the issuer stops publishing (retired, or withdrawn after a compromise) stops
    /// verifying new tokens. If that fetch fails, the keys in hand stay in use.
    pub fn max_key_age(mut self, age: Duration) -> Self {
        self.max_key_age = age;
        self
    }

    /// Allowed clock skew for `exp`, `nbf` and `iat`, in whole seconds (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long to wait for the authorization server (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many verified tokens are remembered at most (default 100 000); zero checks every
    /// signature every time.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The verifier. It fetches the keys on first use.
    pub fn build(self) -> JwtVerifier {
        JwtVerifier {
            inner: Arc::new(Inner {
                http: self.http,
                issuer: self.issuer,
                jwks_uri: RwLock::new(self.jwks_uri),
                keys: RwLock::new(Keys::default()),
                refresh: tokio::sync::Mutex::new(()),
                min_refresh_interval: self.min_refresh_interval,
                max_key_age: self.max_key_age,
                leeway: self.leeway.as_secs(),
                timeout: self.timeout,
                verified: AnswerCache::new(self.capacity),
            }),
        }
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.inner.issuer)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JwtVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifierBuilder")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The public keys of a JWKS this verifier can use: Ed25519 (`OKP`) for EdDSA and P-256
/// (`EC`) for ES256, with a `kid`. Anything else (RSA, symmetric `oct` keys) is ignored.
fn usable_keys(set: JwkSet) -> HashMap<String, (Algorithm, Arc<DecodingKey>)> {
    let mut out = HashMap::new();
    for jwk in set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        // A key that names another algorithm than its type implies is not used at all.
        if jwk
            .common
            .key_algorithm
            .is_some_and(|a| Algorithm::try_from(a).ok() != Some(alg))
        {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            out.insert(kid, (alg, Arc::new(key)));
        }
    }
    out
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: Option<String>,
}

impl Inner {
    async fn get(&self, uri: Uri) -> Result<Bytes, VerifyError> {
        let req = Request::get(uri.clone())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::default())
            .map_err(|e| VerifyError::Failed(e.to_string()))?;
        match self.http.send(req, self.timeout).await {
            Ok((StatusCode::OK, body)) => Ok(body),
            Ok((status, _))
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Err(VerifyError::Unavailable(format!("{uri} answered {status}")))
            }
            Ok((status, _)) => Err(VerifyError::Failed(format!("{uri} answered {status}"))),
            Err(HttpError::Unreachable(m)) => Err(VerifyError::Unavailable(format!("{uri}: {m}"))),
        }
    }

    async fn jwks_uri(&self) -> Result<Uri, VerifyError> {
        if let Some(uri) = self
            .jwks_uri
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(uri);
        }
        let url = format!("{}/.well-known/oauth-authorization-server", self.issuer);
        let uri = absolute_url(&url).map_err(|e| VerifyError::Failed(e.to_string()))?;
        let body = self.get(uri).await?;
        let meta: Metadata = serde_json::from_slice(&body)
            .map_err(|e| VerifyError::Failed(format!("issuer metadata: {e}")))?;
        // RFC 8414 3.3: the metadata must be the issuer's own.
        if meta.issuer.trim_end_matches('/') != self.issuer {
            return Err(VerifyError::Failed(format!(
                "issuer metadata names issuer {:?}",
                meta.issuer
            )));
        }
        let jwks = meta
            .jwks_uri
            .ok_or_else(|| VerifyError::Failed("issuer metadata has no jwks_uri".into()))?;
        let uri = absolute_url(&jwks).map_err(|e| VerifyError::Failed(e.to_string()))?;
        *self
            .jwks_uri
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(uri.clone());
        Ok(uri)
    }

    fn key(&self, kid: &str) -> Option<(Algorithm, Arc<DecodingKey>)> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_kid
            .get(kid)
            .cloned()
    }

    /// Refetches the JWKS when the keys in hand are older than `max_key_age`; on failure they
    /// stay in use (the next attempt waits `min_refresh_interval`).
    async fn refresh_if_old(&self, now: Timestamp) {
        let due = |last: Option<(Timestamp, bool)>| match last {
            Some((at, true)) => now >= at.saturating_add(self.max_key_age),
            Some((at, false)) => now >= at.saturating_add(self.min_refresh_interval),
            None => false,
        };
        let last = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_fetch;
        if !due(last)
            || self
                .keys
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .by_kid
                .is_empty()
        {
            return;
        }
        let _one_fetch = self.refresh.lock().await;
        let last = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_fetch;
        if !due(last) {
            return; // another request refreshed meanwhile
        }
        let fetched = self.fetch_jwks().await;
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(set) => {
                keys.by_kid = usable_keys(set);
                keys.last_fetch = Some((now, true));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the issuer's JWKS; keeping the keys in hand");
                keys.last_fetch = Some((now, false));
            }
        }
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, VerifyError> {
        let body = self.get(self.jwks_uri().await?).await?;
        serde_json::from_slice::<JwkSet>(&body)
            .map_err(|e| VerifyError::Failed(format!("JWKS: {e}")))
    }

    /// The key `kid`, refetching the JWKS if it is unknown and the last fetch is old enough.
    /// `Ok(None)`: still unknown after a fetch, or fetched too recently to try again.
    async fn key_refreshed(
        &self,
        kid: &str,
        now: Timestamp,
    ) -> Result<Option<(Algorithm, Arc<DecodingKey>)>, VerifyError> {
        let _one_fetch = self.refresh.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.key(kid) {
            return Ok(Some(key));
        }
        let last = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_fetch;
        if let Some((at, ok)) = last {
            if now < at.saturating_add(self.min_refresh_interval) {
                return if ok {
                    Ok(None)
                } else {
                    Err(VerifyError::Unavailable(
                        "the issuer's keys could not be fetched recently".into(),
                    ))
                };
            }
        }
        let fetched = self.fetch_jwks().await;
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(set) => {
                keys.by_kid = usable_keys(set);
                keys.last_fetch = Some((now, true));
                tracing::debug!(keys = keys.by_kid.len(), "fetched the issuer's JWKS");
                Ok(keys.by_kid.get(kid).cloned())
            }
            Err(e) => {
                keys.last_fetch = Some((now, false));
                Err(e)
            }
        }
    }

    async fn verify_uncached(
        &self,
        token: &str,
        digest: Digest,
        now: Timestamp,
    ) -> Result<Option<TokenInfo>, VerifyError> {
        // `alg: none` and unknown algorithms do not even parse as a header.
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok || !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Ok(None);
        }
        let Some(kid) = header.kid.as_deref() else {
            return Ok(None);
        };
        self.refresh_if_old(now).await;
        let key = match self.key(kid) {
            Some(key) => key,
            None => match self.key_refreshed(kid, now).await? {
                Some(key) => key,
                None => return Ok(None),
            },
        };
        let (alg, key) = key;
        if alg != header.alg {
            return Ok(None);
        }
        let mut validation = Validation::new(alg);
        // Time is checked below against the injected clock; `aud` by the layer.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let Ok(data) = jsonwebtoken::decode::<AccessTokenClaims>(token, &key, &validation) else {
            return Ok(None);
        };
        let claims = data.claims;
        let now_secs = now.as_unix_secs();
        let not_before = claims
            .nbf
            .into_iter()
            .chain([claims.iat])
            .max()
            .unwrap_or(0);
        if claims.iss.trim_end_matches('/') != self.issuer
            || not_before > now_secs.saturating_add(self.leeway)
            || claims.jti.is_empty()
            || claims.sub.is_empty()
        {
            return Ok(None);
        }
        let Some(info) = claims.into_token_info(self.leeway) else {
            return Ok(None);
        };
        self.verified
            .insert(&digest, info.clone(), info.expires_at, now);
        Ok(Some(info))
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<Option<TokenInfo>, VerifyError>> + Send {
        let digest = Digest::of(token.as_bytes());
        let known = self.inner.verified.get(&digest, now);
        async move {
            match known {
                Some(info) => Ok(Some(info)),
                // Boxed: the common case above stays a small future.
                None => Box::pin(self.inner.verify_uncached(token, digest, now)).await,
            }
        }
    }
}

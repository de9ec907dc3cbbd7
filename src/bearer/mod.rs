//! Guarding routes by scope with bearer tokens (RFC 6750), in the style of `require_oauth`.
//!
//! [`RequireOAuthLayer`] wraps any service. It reads `Authorization: Bearer <token>`, asks its
//! [`TokenVerifier`] what the token stands for (the flow's store, by default), checks expiry
//! and the required scopes, and on success hands the token's [`TokenInfo`](crate::TokenInfo)
//! to the inner service in the request extensions. Otherwise:
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no bearer token | 401 | `Bearer realm="api"` |
//! | malformed header | 400 | `Bearer realm="api", error="invalid_request"` |
//! | unknown, revoked or expired token | 401 | `Bearer realm="api", error="invalid_token"` |
//! | token for another resource, or for none ([`with_audience`](RequireOAuthLayer::with_audience)) | 401 | `Bearer realm="api", error="invalid_token"` |
//! | scope missing | 403 | `Bearer realm="api", error="insufficient_scope", scope="..."` |
//! | verifier (store, authorization server) unreachable | 503 | none |
//!
//! each with a JSON body `{"error": ..., "error_description": ...}`. For gRPC requests
//! (`content-type: application/grpc...`) the same refusals are HTTP 200 with `grpc-status` 16
//! (UNAUTHENTICATED), 7 (PERMISSION_DENIED), 14 (UNAVAILABLE) or 13 (INTERNAL) and a
//! `grpc-message`, which is how gRPC clients expect errors.
//!
//! With [`with_dpop`](RequireOAuthLayer::with_dpop) (feature `dpop`; layers of a
//! [`DeviceFlow`](crate::DeviceFlow) have it when the flow takes DPoP) the layer also takes
//! DPoP-bound tokens (RFC 9449 7): `Authorization: DPoP <token>` with a `DPoP` proof of the
//! request, checked by a [`DpopCheck`] and claimed once in its replay cache. A bound token sent
//! as `Bearer` is refused `invalid_token`; every challenge then also offers
//! `DPoP realm="api", algs="..."`, and refusals of DPoP requests carry their error in the DPoP
//! challenge (`invalid_dpop_proof`, `use_dpop_nonce` with a `DPoP-Nonce`, `invalid_token`,
//! `insufficient_scope`), with status 401 (403 for scope).
//!
//! The inner body is never boxed: responses are a [`ResponseBody`] that is either the inner
//! body or the crate's JSON. The layer works with any `Clone` service whose response body
//! yields [`Bytes`], so it fits hyper, axum's `route_layer` and tonic's `Server::layer` (every
//! service behind one guard) or, with feature `tonic`, `Server::add_service` (one guard per
//! service: [`RequireOAuth`] is a `NamedService` when the service it wraps is).
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_device_flow::{DeviceFlow, MemoryStore, TokenInfo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .build();
//! let me = service_fn(|req: Request<Full<bytes::Bytes>>| async move {
//!     let token = req.extensions().get::<TokenInfo>().cloned();
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::from(token.map_or(String::new(), |t| t.subject.to_string()))))
//! });
//! let guarded = flow.require_oauth("profile").layer(me);
//! let res = guarded.oneshot(Request::get("/me").body(Full::default()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"api\"");
//! # }
//! ```

#[cfg(feature = "dpop")]
mod dpop;
mod future;
mod guard;
mod verifier;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use future::ResponseFuture;
pub use guard::ScopeRequirement;

pub use verifier::{TokenVerifier, VerifyError};

#[cfg(feature = "dpop")]
pub use dpop::{DpopCheck, InvalidBaseUrl};

use crate::clock::{Clock, SystemClock};
use crate::observe::record::{self, Answer};
use crate::response::{OAuthBody, ResponseBody};
use guard::{Guard, Refusal};

/// Applies [`RequireOAuth`] to a service. Obtain it from
/// [`DeviceFlow::require_oauth`](crate::DeviceFlow::require_oauth) or
/// [`DeviceFlow::require`](crate::DeviceFlow::require) (tokens checked against the flow's
/// store), or build it over any [`TokenVerifier`] with [`RequireOAuthLayer::new`] (a resource
/// server in another process).
pub struct RequireOAuthLayer<V> {
    checks: Arc<Checks<V>>,
}

/// What a layer checks with, shared by every service it makes and every request they take: one
/// reference count per request, whatever it holds.
struct Checks<V> {
    verifier: Arc<V>,
    guard: Guard,
    clock: Arc<dyn Clock>,
}

impl<V: TokenVerifier> RequireOAuthLayer<V> {
    /// A layer letting through requests whose bearer token `verifier` accepts and whose scope
    /// meets `requirement`; challenges name the realm `api`, and time is the system clock.
    pub fn new(verifier: V, requirement: ScopeRequirement) -> Self {
        Self::from_parts(
            Arc::new(verifier),
            requirement,
            "api",
            Arc::new(SystemClock),
        )
    }

    pub(crate) fn from_parts(
        verifier: Arc<V>,
        requirement: ScopeRequirement,
        realm: &str,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let guard = Guard::new(
            realm,
            requirement,
            #[cfg(feature = "dpop")]
            None,
        );
        RequireOAuthLayer {
            checks: Arc::new(Checks {
                verifier,
                guard,
                clock,
            }),
        }
    }

    /// The same layer checking with `guard`.
    fn with_guard(self, guard: Guard) -> Self {
        let clock = self.checks.clock.clone();
        self.rebuilt(guard, clock)
    }

    /// The same verifier, checking with `guard` on `clock`.
    fn rebuilt(&self, guard: Guard, clock: Arc<dyn Clock>) -> Self {
        RequireOAuthLayer {
            checks: Arc::new(Checks {
                verifier: self.checks.verifier.clone(),
                guard,
                clock,
            }),
        }
    }

    /// The same layer, challenging with `realm` (RFC 6750 3).
    pub fn with_realm(self, realm: &str) -> Self {
        let guard = Guard::new(
            realm,
            self.checks.guard.requirement.clone(),
            #[cfg(feature = "dpop")]
            self.dpop().cloned(),
        )
        .with_audience(self.checks.guard.audience.as_deref());
        self.with_guard(guard)
    }

    /// The same layer, accepting only tokens meant for `resource` (RFC 8707): its `aud`, in
    /// JWTs and introspection answers, must name it. Tokens without an audience are refused
    /// too (401 `invalid_token`), whatever the verifier; leave this unset only for an API
    /// that accepts every token its authorization server issues.
    pub fn with_audience(self, resource: &str) -> Self {
        let guard = Guard::new(
            &self.checks.guard.realm,
            self.checks.guard.requirement.clone(),
            #[cfg(feature = "dpop")]
            self.dpop().cloned(),
        )
        .with_audience(Some(resource));
        self.with_guard(guard)
    }

    /// The same layer taking DPoP-bound tokens too (RFC 9449 7), with the DPoP scheme and a
    /// proof checked by `check`; `None` for bearer tokens only (a DPoP-bound token is then
    /// always refused). Layers from [`DeviceFlow::require`](crate::DeviceFlow::require) take
    /// DPoP when the flow does, with the flow's issuer as base URL.
    #[cfg(feature = "dpop")]
    pub fn with_dpop(self, check: Option<DpopCheck>) -> Self {
        let g = &self.checks.guard;
        let guard =
            Guard::new(&g.realm, g.requirement.clone(), check).with_audience(g.audience.as_deref());
        self.with_guard(guard)
    }

    /// How DPoP proofs are checked, if the layer takes DPoP-bound tokens.
    #[cfg(feature = "dpop")]
    pub fn dpop(&self) -> Option<&DpopCheck> {
        self.checks.guard.dpop.as_ref().map(|d| &d.check)
    }

    /// The same layer on another clock (tests pass a [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.rebuilt(self.checks.guard.clone(), Arc::new(clock))
    }

    /// The verifier.
    pub fn verifier(&self) -> &V {
        &self.checks.verifier
    }
}

impl<V> Clone for RequireOAuthLayer<V> {
    fn clone(&self) -> Self {
        RequireOAuthLayer {
            checks: self.checks.clone(),
        }
    }
}

impl<V> fmt::Debug for RequireOAuthLayer<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireOAuthLayer")
            .field("requirement", &self.checks.guard.requirement)
            .finish_non_exhaustive()
    }
}

impl<V, Svc> Layer<Svc> for RequireOAuthLayer<V> {
    type Service = RequireOAuth<Svc, V>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RequireOAuth {
            inner,
            checks: self.checks.clone(),
        }
    }
}

/// A service that lets through only requests with a valid bearer token of the required scope.
pub struct RequireOAuth<Svc, V> {
    inner: Svc,
    checks: Arc<Checks<V>>,
}

impl<Svc: Clone, V> Clone for RequireOAuth<Svc, V> {
    fn clone(&self) -> Self {
        RequireOAuth {
            inner: self.inner.clone(),
            checks: self.checks.clone(),
        }
    }
}

impl<Svc: fmt::Debug, V> fmt::Debug for RequireOAuth<Svc, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireOAuth")
            .field("inner", &self.inner)
            .field("requirement", &self.checks.guard.requirement)
            .finish_non_exhaustive()
    }
}

/// With feature `tonic`: a guarded gRPC service keeps its inner service's name, so
/// `Server::add_service` routes to it and each service can have its own guard:
///
/// ```text
/// Server::builder()
///     .add_service(flow.require_oauth("profile").layer(ProfileServer::new(profile)))
///     .add_service(flow.require_oauth("email").layer(EmailServer::new(email)))
/// ```
///
/// `tests/tonic.rs` runs exactly that. The name passes through:
///
/// ```
/// use tonic::server::NamedService;
/// use tower::Layer;
/// use tower_device_flow::{DeviceFlow, MemoryStore};
///
/// #[derive(Clone)]
/// struct ProfileServer; // what tonic-build generates for `service Profile` in `package demo`
/// impl NamedService for ProfileServer {
///     const NAME: &'static str = "demo.Profile";
/// }
///
/// fn name_of<T: NamedService>(_: &T) -> &'static str {
///     T::NAME
/// }
///
/// let flow = DeviceFlow::builder(MemoryStore::default())
///     .issuer("https://auth.example.com")
///     .build();
/// let guarded = flow.require_oauth("profile").layer(ProfileServer);
/// assert_eq!(name_of(&guarded), "demo.Profile");
/// ```
#[cfg(feature = "tonic")]
impl<Svc, V> tonic::server::NamedService for RequireOAuth<Svc, V>
where
    Svc: tonic::server::NamedService,
{
    const NAME: &'static str = Svc::NAME;
}

/// Why no token could be read from the request.
enum NoToken {
    Missing,
    Malformed,
}

/// The characters of RFC 6750 `b64token` (before its `=` padding), as a table: JWTs make
/// tokens of a kilobyte, checked on every request.
const B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// The bearer token of `Authorization: Bearer <b64token>` (RFC 6750 2.1).
#[cfg(test)]
fn bearer_token(headers: &HeaderMap) -> Result<&str, NoToken> {
    access_token(headers, false).map(|(_, presented)| presented.token)
}

/// The access token of `Authorization: Bearer <b64token>` (RFC 6750 2.1) or, when `dpop`,
/// `Authorization: DPoP <token68>` (RFC 9449 7.1), and whether it came with the DPoP scheme.
fn access_token(headers: &HeaderMap, dpop: bool) -> Result<(bool, Presented<'_>), NoToken> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let header = values.next().ok_or(NoToken::Missing)?;
    if values.next().is_some() {
        return Err(NoToken::Malformed);
    }
    let value = header.to_str().map_err(|_| NoToken::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let is_dpop = dpop && scheme.eq_ignore_ascii_case("dpop");
    if !is_dpop && !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme carries no access token: answered like a missing token.
        return Err(NoToken::Missing);
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64token =
        !body.is_empty() && token.len() <= 4096 && body.bytes().all(|b| B64TOKEN[usize::from(b)]);
    if b64token {
        // The token is the value's tail.
        let start = value.len() - token.len();
        Ok((
            is_dpop,
            Presented {
                header,
                token,
                start,
            },
        ))
    } else {
        Err(NoToken::Malformed)
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<Svc, V, ReqBody, ResBody> Service<Request<ReqBody>> for RequireOAuth<Svc, V>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    V: TokenVerifier,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        let checks = &self.checks;
        let guard = &checks.guard;
        let (with_dpop, presented) = match access_token(req.headers(), guard.dpop.is_some()) {
            Ok(found) => found,
            Err(NoToken::Missing) => {
                record::bearer(Answer::Missing);
                return ResponseFuture::refuse(guard.missing.response(grpc));
            }
            Err(NoToken::Malformed) => {
                record::bearer(Answer::Error(guard.malformed.code));
                return ResponseFuture::refuse(guard.malformed.response(grpc));
            }
        };
        let now = checks.clock.now();
        // The proof is checked before the token is looked up: it is plain computation, and a
        // bad one needs no store.
        #[cfg(feature = "dpop")]
        let proof = match (&guard.dpop, with_dpop) {
            (Some(d), true) => {
                let (method, path) = (req.method().as_str(), req.uri().path());
                match d
                    .check
                    .check(method, path, req.headers(), presented.token, now)
                {
                    Ok(proof) => Some(proof),
                    Err(e) => {
                        tracing::debug!(error = e.code().as_str(), reason = %e, "DPoP proof refused");
                        let refusal = guard.proof_refusal(e, now);
                        record::bearer(Answer::Error(refusal.code));
                        return ResponseFuture::refuse(refusal.response(grpc));
                    }
                }
            }
            _ => None,
        };
        #[cfg(not(feature = "dpop"))]
        let (_, proof) = (with_dpop, None);
        let token = presented.to_owned();
        let checks = checks.clone();
        let lookup = Box::pin(async move {
            let verdict = check(&checks, token.as_str(), now, proof, grpc).await;
            if verdict.is_ok() {
                record::bearer(Answer::Ok);
            }
            verdict
        });
        // The clone is not the service that was polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(lookup, inner, req)
    }
}

/// The presented token: a tail of the request's one `Authorization` value.
struct Presented<'a> {
    header: &'a HeaderValue,
    token: &'a str,
    start: usize,
}

impl Presented<'_> {
    /// The token held for the lookup without copying it: the header value shares the
    /// connection's buffer.
    fn to_owned(&self) -> OwnedToken {
        OwnedToken {
            header: self.header.clone(),
            start: self.start,
        }
    }
}

/// A [`Presented`] token that outlives the request's borrow.
struct OwnedToken {
    header: HeaderValue,
    start: usize,
}

impl OwnedToken {
    /// The token ("" cannot happen: the value was read as text when it was presented).
    fn as_str(&self) -> &str {
        self.header
            .to_str()
            .ok()
            .and_then(|v| v.get(self.start..))
            .unwrap_or("")
    }
}

/// A DPoP proof that passed every check but the replay claim.
#[cfg(feature = "dpop")]
type Proof = crate::dpop::DpopProof;
#[cfg(not(feature = "dpop"))]
type Proof = std::convert::Infallible;

/// The checks after parsing: the token's lookup, its verdict and, for DPoP, the proof's claim.
async fn check<V: TokenVerifier>(
    checks: &Checks<V>,
    token: &str,
    now: crate::clock::Timestamp,
    proof: Option<Proof>,
    grpc: bool,
) -> Result<crate::store::TokenInfo, Response<OAuthBody>> {
    // Every refusal is counted by its code.
    let refuse = |r: &Refusal| {
        record::bearer(Answer::Error(r.code));
        r.response(grpc)
    };
    let guard = &checks.guard;
    let found = match checks.verifier.verify(token, now).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "bearer token verification failed");
            return Err(refuse(&Refusal::unavailable(&e)));
        }
    };
    #[cfg(feature = "dpop")]
    let jkt = proof.as_ref().map(|p| p.jkt());
    #[cfg(not(feature = "dpop"))]
    let jkt = proof.map(|never| match never {});
    let token = guard.check(found, now, jkt).map_err(|r| {
        tracing::debug!(error = r.code.as_str(), "bearer token refused");
        refuse(r)
    })?;
    // Last, once everything else holds: the proof is spent (RFC 9449 11.1).
    #[cfg(feature = "dpop")]
    if let (Some(proof), Some(d)) = (&proof, &guard.dpop) {
        match d
            .check
            .replay()
            .claim_once(proof.replay_key(), proof.replay_until(), now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    security_event = "dpop_proof_replay",
                    client_id = token.client_id.as_str(),
                    "a DPoP proof was presented again"
                );
                let e = crate::dpop::ProofError::Replayed;
                return Err(refuse(&guard.proof_refusal(e, now)));
            }
            Err(e) => {
                tracing::error!(error = %e, "DPoP replay check failed");
                return Err(refuse(&Refusal::unavailable(&e.into())));
            }
        }
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn parses_bearer_tokens() {
        assert!(matches!(
            bearer_token(&headers("Bearer abc-._~+/==")),
            Ok("abc-._~+/==")
        ));
        assert!(matches!(bearer_token(&headers("bearer abc")), Ok("abc")));
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(NoToken::Missing)
        ));
        assert!(matches!(
            bearer_token(&headers("Basic YTpi")),
            Err(NoToken::Missing)
        ));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer ===",
            "Bearer a=b",
            "Bearer ä",
        ] {
            let h = match bad.parse::<HeaderValue>() {
                Ok(v) => {
                    let mut h = HeaderMap::new();
                    h.insert(header::AUTHORIZATION, v);
                    h
                }
                Err(_) => continue,
            };
            assert!(matches!(bearer_token(&h), Err(NoToken::Malformed)), "{bad}");
        }
        let mut h = headers("Bearer a");
        h.append(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert!(matches!(bearer_token(&h), Err(NoToken::Malformed)));
    }
}

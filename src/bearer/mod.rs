//! Guarding routes by scope with bearer tokens (RFC 6750), in the style of `require_oauth`.
//!
//! [`RequireOAuthLayer`] wraps any service. It reads `Authorization: Bearer <token>`, looks the
//! token up in the store, checks expiry and the required scopes, and on success hands the
//! token's [`TokenInfo`] to the inner service in the request extensions. Otherwise:
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no bearer token | 401 | `Bearer realm="api"` |
//! | malformed header | 400 | `Bearer realm="api", error="invalid_request"` |
//! | unknown, revoked or expired token | 401 | `Bearer realm="api", error="invalid_token"` |
//! | scope missing | 403 | `Bearer realm="api", error="insufficient_scope", scope="..."` |
//! | store unreachable | 503 | none |
//!
//! each with a JSON body `{"error": ..., "error_description": ...}`. For gRPC requests
//! (`content-type: application/grpc...`) the same refusals are HTTP 200 with `grpc-status` 16
//! (UNAUTHENTICATED), 7 (PERMISSION_DENIED), 14 (UNAVAILABLE) or 13 (INTERNAL) and a
//! `grpc-message`, which is how gRPC clients expect errors.
//!
//! The inner body is never boxed: responses are a [`ResponseBody`] that is either the inner
//! body or the crate's JSON. The layer works with any `Clone` service whose response body
//! yields [`Bytes`], so it fits hyper, axum's `route_layer` and tonic's `Server::layer`.
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_device_flow::{DeviceFlow, MemoryStore, TokenInfo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flow = DeviceFlow::builder(MemoryStore::default()).build();
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

mod future;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use future::ResponseFuture;

use crate::codes::Digest;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::flow::Shared;
use crate::response::{OAuthBody, ResponseBody};
use crate::scope::Scope;
use crate::store::{Store, StoreError, TokenInfo};

/// Which scopes a route requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeRequirement {
    /// Every one of these scopes.
    AllOf(Scope),
    /// At least one of these scopes.
    AnyOf(Scope),
}

impl ScopeRequirement {
    /// True if a token with `granted` scope meets the requirement.
    pub fn is_met_by(&self, granted: &Scope) -> bool {
        match self {
            ScopeRequirement::AllOf(s) => granted.contains_all(s),
            ScopeRequirement::AnyOf(s) => granted.contains_any(s),
        }
    }

    /// The scopes named in the requirement.
    pub fn scope(&self) -> &Scope {
        match self {
            ScopeRequirement::AllOf(s) | ScopeRequirement::AnyOf(s) => s,
        }
    }
}

/// A refusal prepared once per layer, so refusing a request costs no formatting.
#[derive(Clone)]
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    challenge: Option<HeaderValue>,
    body: Bytes,
    grpc_message: HeaderValue,
}

impl Refusal {
    fn new(
        realm: &str,
        code: ErrorCode,
        status: StatusCode,
        description: &str,
        extra: &str,
    ) -> Self {
        let challenge = match code {
            // RFC 6750 3.1: with no authentication information, no error attributes.
            _ if status == StatusCode::UNAUTHORIZED && extra == "missing" => {
                format!("Bearer realm=\"{realm}\"")
            }
            _ => format!(
                "Bearer realm=\"{realm}\", error=\"{}\"{extra}",
                code.as_str()
            ),
        };
        Refusal {
            status,
            code,
            challenge: HeaderValue::try_from(challenge).ok(),
            body: OAuthError::new(code, description.to_owned()).to_json(),
            grpc_message: HeaderValue::try_from(description)
                .unwrap_or(HeaderValue::from_static("unauthenticated")),
        }
    }

    fn store(e: &StoreError) -> Self {
        let e = OAuthError::from(e.clone());
        Refusal {
            status: e.status(),
            code: e.code(),
            challenge: None,
            body: e.to_json(),
            grpc_message: HeaderValue::from_static("credential store unavailable"),
        }
    }

    fn response(&self, grpc: bool) -> Response<OAuthBody> {
        let mut res = if grpc {
            let mut res = Response::new(OAuthBody::default());
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            let status = match self.status {
                StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => "16",
                StatusCode::FORBIDDEN => "7",
                StatusCode::SERVICE_UNAVAILABLE => "14",
                _ => "13",
            };
            h.insert("grpc-status", HeaderValue::from_static(status));
            h.insert("grpc-message", self.grpc_message.clone());
            res
        } else {
            json_response(self.status, self.body.clone())
        };
        if let Some(c) = &self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if self.code == ErrorCode::TemporarilyUnavailable {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// What one layer checks and how it refuses.
struct Guard {
    requirement: ScopeRequirement,
    missing: Refusal,
    malformed: Refusal,
    invalid: Refusal,
    expired: Refusal,
    insufficient: Refusal,
}

impl Guard {
    fn new(realm: &str, requirement: ScopeRequirement) -> Self {
        let realm = realm.replace(['"', '\\'], "");
        let scope = format!(", scope=\"{}\"", requirement.scope());
        Guard {
            missing: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
                "missing",
            ),
            malformed: Refusal::new(
                &realm,
                ErrorCode::InvalidRequest,
                StatusCode::BAD_REQUEST,
                "malformed Authorization header",
                "",
            ),
            invalid: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is invalid or revoked",
                "",
            ),
            expired: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token expired",
                "",
            ),
            insufficient: Refusal::new(
                &realm,
                ErrorCode::InsufficientScope,
                StatusCode::FORBIDDEN,
                "the access token lacks a required scope",
                &scope,
            ),
            requirement,
        }
    }

    /// The verdict on a looked-up token.
    fn check(
        &self,
        token: Option<TokenInfo>,
        now: crate::Timestamp,
    ) -> Result<TokenInfo, &Refusal> {
        match token {
            None => Err(&self.invalid),
            Some(t) if t.is_expired(now) => Err(&self.expired),
            Some(t) if !self.requirement.is_met_by(&t.scope) => Err(&self.insufficient),
            Some(t) => Ok(t),
        }
    }
}

/// Applies [`RequireOAuth`] to a service. Obtain it from
/// [`DeviceFlow::require_oauth`](crate::DeviceFlow::require_oauth) or
/// [`DeviceFlow::require`](crate::DeviceFlow::require).
pub struct RequireOAuthLayer<S> {
    shared: Arc<Shared<S>>,
    guard: Arc<Guard>,
}

impl<S> RequireOAuthLayer<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, requirement: ScopeRequirement) -> Self {
        let guard = Arc::new(Guard::new(&shared.config.realm, requirement));
        RequireOAuthLayer { shared, guard }
    }
}

impl<S> Clone for RequireOAuthLayer<S> {
    fn clone(&self) -> Self {
        RequireOAuthLayer {
            shared: self.shared.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S> fmt::Debug for RequireOAuthLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireOAuthLayer")
            .field("requirement", &self.guard.requirement)
            .finish_non_exhaustive()
    }
}

impl<S, Svc> Layer<Svc> for RequireOAuthLayer<S> {
    type Service = RequireOAuth<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RequireOAuth {
            inner,
            shared: self.shared.clone(),
            guard: self.guard.clone(),
        }
    }
}

/// A service that lets through only requests with a valid bearer token of the required scope.
pub struct RequireOAuth<Svc, S> {
    inner: Svc,
    shared: Arc<Shared<S>>,
    guard: Arc<Guard>,
}

impl<Svc: Clone, S> Clone for RequireOAuth<Svc, S> {
    fn clone(&self) -> Self {
        RequireOAuth {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<Svc: fmt::Debug, S> fmt::Debug for RequireOAuth<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireOAuth")
            .field("inner", &self.inner)
            .field("requirement", &self.guard.requirement)
            .finish_non_exhaustive()
    }
}

/// Why no token could be read from the request.
enum NoToken {
    Missing,
    Malformed,
}

/// The bearer token of `Authorization: Bearer <b64token>` (RFC 6750 2.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, NoToken> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(NoToken::Missing)?;
    if values.next().is_some() {
        return Err(NoToken::Malformed);
    }
    let value = value.to_str().map_err(|_| NoToken::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme carries no bearer credentials: answered like a missing token.
        return Err(NoToken::Missing);
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64token = !body.is_empty()
        && token.len() <= 4096
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if b64token {
        Ok(token)
    } else {
        Err(NoToken::Malformed)
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<Svc, S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireOAuth<Svc, S>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S: Store,
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
        let digest = match bearer_token(req.headers()) {
            Ok(token) => Digest::of(token.as_bytes()),
            Err(NoToken::Missing) => {
                return ResponseFuture::refuse(self.guard.missing.response(grpc))
            }
            Err(NoToken::Malformed) => {
                return ResponseFuture::refuse(self.guard.malformed.response(grpc))
            }
        };
        let now = self.shared.clock.now();
        let shared = self.shared.clone();
        let lookup = Box::pin(async move { shared.store.access_token(&digest, now).await });
        // The clone is not the service that was polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(lookup, inner, req, self.guard.clone(), now, grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn requirements() {
        let granted = Scope::parse("email profile").unwrap();
        let all = ScopeRequirement::AllOf(Scope::parse("email admin").unwrap());
        let any = ScopeRequirement::AnyOf(Scope::parse("email admin").unwrap());
        assert!(!all.is_met_by(&granted));
        assert!(any.is_met_by(&granted));
    }

    #[test]
    fn challenges() {
        let g = Guard::new(
            "api",
            ScopeRequirement::AllOf(Scope::parse("email").unwrap()),
        );
        let r = g.insufficient.response(false);
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"email\""
        );
        let r = g.invalid.response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        assert_eq!(
            g.missing.response(false).headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
    }
}

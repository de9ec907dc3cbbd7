//! Resource servers anywhere: guarding routes in a service that does not hold the store.
//!
//! In a real deployment the authorization server is one service and the APIs that accept its
//! tokens are others. Those guard their routes with the same [`RequireOAuthLayer`] (same
//! RFC 6750 challenges, same gRPC statuses) over a [`TokenVerifier`] that asks, or checks,
//! remotely:
//!
//! - [`IntrospectionVerifier`]: RFC 7662 introspection at the authorization server, as a
//!   confidential client, with a bounded answer cache, one request in flight per token, and a
//!   timeout; an unreachable authorization server is 503 (gRPC `UNAVAILABLE`), never a pass.
//! - [`JwtVerifier`] (feature `jwt`): RFC 9068 JWT access tokens verified on the spot against
//!   the issuer's JWKS; the authorization server issues them with
//!   [`DeviceFlowBuilder::jwt_access_tokens`](crate::DeviceFlowBuilder::jwt_access_tokens).
//!
//! Each resource server checks that a token is meant for it with
//! [`RequireOAuthLayer::with_audience`] (RFC 8707 `aud`), whatever the verifier.
//!
//! Both verifiers send their requests with an HTTP client the application picks: any Tower
//! service from `http::Request<Full<Bytes>>` to `http::Response<B>`, such as hyper-util's
//! legacy client (plain HTTP with `build_http()`, or HTTPS with a `hyper-rustls` connector).
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{service_fn, Layer};
//! use tower_device_flow::resource_server::IntrospectionVerifier;
//! use tower_device_flow::{RequireOAuthLayer, Scope, ScopeRequirement, TokenInfo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let http = Client::builder(TokioExecutor::new()).build_http();
//! let verifier = IntrospectionVerifier::builder(http, "https://auth.example.com/oauth/introspect")
//!     .unwrap()
//!     .client_credentials("api", "api-secret")
//!     .build();
//! let guard = RequireOAuthLayer::new(verifier, ScopeRequirement::AllOf(Scope::parse("profile").unwrap()))
//!     .with_audience("https://api.example.com/");
//! let me = guard.layer(service_fn(|req: Request<Full<bytes::Bytes>>| async move {
//!     let who = req.extensions().get::<TokenInfo>().map(|t| t.subject.to_string());
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::<bytes::Bytes>::from(who.unwrap_or_default())))
//! }));
//! # let _ = me;
//! # }
//! ```
//!
//! [`RequireOAuthLayer`]: crate::RequireOAuthLayer
//! [`RequireOAuthLayer::with_audience`]: crate::RequireOAuthLayer::with_audience
//! [`TokenVerifier`]: crate::bearer::TokenVerifier

mod cache;
mod http;
mod introspection;
#[cfg(feature = "jwt")]
mod jwt;
mod wire;

pub use self::http::BoxError;
pub use introspection::{IntrospectionVerifier, IntrospectionVerifierBuilder};
#[cfg(feature = "jwt")]
pub use jwt::{JwtVerifier, JwtVerifierBuilder};
pub use wire::InvalidUrl;

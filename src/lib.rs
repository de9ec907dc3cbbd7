//! # tower-device-flow
//!
//! An OAuth 2.0 Device Authorization Grant ([RFC 8628]) server and a bearer-token guard
//! ([RFC 6750]), as composable [Tower] services and layers for hyper, axum and tonic.
//!
//! Devices without a browser or keyboard (TVs, CLIs, printers) get a user's authorization like
//! this:
//!
//! 1. The device POSTs to the **device authorization endpoint** and receives a `device_code`
//!    and a short `user_code` such as `WDJB-MJHT` ([`DeviceAuthorization`]).
//! 2. It shows the user code and the verification URI. The end user opens the URI elsewhere,
//!    signs in with the application's own login and approves or denies ([`Verification`]).
//! 3. Meanwhile the device polls the **token endpoint** with its device code, hearing
//!    `authorization_pending` (or `slow_down` if too eager) until it receives tokens
//!    ([`Token`]); later it refreshes them (single-use refresh tokens).
//! 4. The application's routes accept the access token through [`RequireOAuthLayer`], which
//!    checks scopes and hands the inner service the [`TokenInfo`].
//!
//! Everything runs on one pluggable [`Store`]: [`MemoryStore`] is the embedded default, and
//! Redis, PostgreSQL and SQLite stores ship with the crate; a database backend implements a
//! handful of atomic primitives. The protocol rules live once, in [`grant`] and [`family`], so
//! no backend can get them wrong.
//!
//! Around the flow: refresh-token families with reuse detection, connected devices per end
//! user, DPoP-bound tokens (RFC 9449), JWT access tokens (RFC 9068) and resource servers in other
//! processes ([`resource_server`]), per-source limits that keep floods from locking users out
//! ([`limits`]), and the RFC 7009, 7662 and 8414 endpoints.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `jwt` | yes | RFC 9068 JWT access tokens, the JWKS endpoint and the resource server's `JwtVerifier` (module `jwt`) |
//! | `dpop` | yes | DPoP (RFC 9449) at the token endpoint and the bearer layer (module `dpop`) |
//! | `ring` | | DPoP proofs signed with ES256 or ES384 checked by ring: about five times less CPU per P-256 proof (needs a C compiler; implies `dpop`) |
//! | `redis` | | `RedisStore`, for many instances |
//! | `postgres` | | `PostgresStore`, for many instances |
//! | `sqlite` | | `SqliteStore`, for one instance that survives a restart |
//! | `metrics` | yes | counters, histograms and a gauge of the flow through the `metrics` facade (module [`observe`]) |
//! | `axum` | | [`TokenInfo`] as an axum extractor (module `axum`) |
//! | `tonic` | | [`RequireOAuth`] as a tonic `NamedService`, for one guard per gRPC service with `Server::add_service` |
//! | `test-kit` | | the store conformance kit (`store::test_kit`) for your own store |
//!
//! The minimum supported Rust version is 1.88 (see the README for each feature's).
//!
//! ## The whole flow in one example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope, Subject, TokenInfo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::builder()
//!     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
//!     .build();
//! let flow = DeviceFlow::builder(store)
//!     .issuer("https://auth.example.com")
//!     // The application's login puts the signed-in user in the request extensions.
//!     .end_user(|req: &http::request::Parts| req.extensions.get::<Subject>().cloned())
//!     .build();
//!
//! // The application: one route guarded by scope, behind the OAuth endpoints.
//! let me = flow.require_oauth("profile").layer(service_fn(|req: Request<Full<Bytes>>| async move {
//!     let who = req.extensions().get::<TokenInfo>().map(|t| t.subject.to_string());
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::from(who.unwrap_or_default())))
//! }));
//! let app = flow.endpoints_layer().layer(me);
//!
//! let form = |uri: &str, body: String| {
//!     Request::post(uri)
//!         .header("content-type", "application/x-www-form-urlencoded")
//!         .body(Full::from(body))
//!         .unwrap()
//! };
//! let json = |body: Bytes| serde_json::from_slice::<serde_json::Value>(&body).unwrap();
//!
//! // 1. The device asks for codes.
//! let res = app.clone().oneshot(form("/oauth/device_authorization", "client_id=tv-app".into())).await.unwrap();
//! let codes = json(res.into_body().collect().await.unwrap().to_bytes());
//! let device_code = codes["device_code"].as_str().unwrap().to_owned();
//! let user_code = codes["user_code"].as_str().unwrap().to_owned();
//!
//! // 2. Polling before approval: authorization_pending.
//! let poll = format!("grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=tv-app&device_code={device_code}");
//! let res = app.clone().oneshot(form("/oauth/token", poll.clone())).await.unwrap();
//! assert_eq!(res.status(), 400);
//! assert_eq!(json(res.into_body().collect().await.unwrap().to_bytes())["error"], "authorization_pending");
//!
//! // 3. Alice approves on the verification page.
//! let mut approve = form("/device", format!("user_code={user_code}&decision=approve"));
//! approve.extensions_mut().insert(Subject::new("alice"));
//! assert_eq!(app.clone().oneshot(approve).await.unwrap().status(), 200);
//!
//! // 4. The next poll gets the tokens (a real device waits `interval` seconds first).
//! let res = app.clone().oneshot(form("/oauth/token", poll)).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let tokens = json(res.into_body().collect().await.unwrap().to_bytes());
//! let access_token = tokens["access_token"].as_str().unwrap();
//!
//! // 5. The token opens the guarded route.
//! let req = Request::get("/me")
//!     .header("authorization", format!("Bearer {access_token}"))
//!     .body(Full::default())
//!     .unwrap();
//! let res = app.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "alice");
//! # }
//! ```
//!
//! [RFC 8628]: https://www.rfc-editor.org/rfc/rfc8628
//! [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
//! [Tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
// docs.rs (and `RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs"`) labels every feature-gated item.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Docs link to feature-gated items; they are checked with every feature on (as docs.rs builds).
#![cfg_attr(
    not(all(
        feature = "jwt",
        feature = "dpop",
        feature = "redis",
        feature = "postgres",
        feature = "sqlite",
        feature = "axum",
        feature = "tonic",
        feature = "test-kit",
        feature = "metrics"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]
#![warn(missing_docs, missing_debug_implementations)]

mod account_status;
mod audience;
#[cfg(feature = "axum")]
pub mod axum;
pub mod bearer;
mod browser;
pub mod client_addr;
mod client_auth;
mod clock;
pub mod codes;
mod config;
pub mod connected_devices;
mod cross_site;
pub mod device_authorization;
#[cfg(feature = "dpop")]
pub mod dpop;
mod end_user;
pub mod endpoints;
mod error;
pub mod family;
mod flow;
pub mod form;
pub mod grant;
mod ids;
pub mod introspection;
#[cfg(feature = "jwt")]
mod jwks;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod limits;
pub mod metadata;
pub mod observe;
mod observer;
pub mod page;
#[cfg(feature = "dpop")]
pub mod replay;
pub mod resource_server;
mod response;
pub mod revocation;
mod scope;
mod sign_in;
pub mod store;
pub mod token;
pub mod verification;

pub use account_status::AccountStatus;
pub use bearer::{RequireOAuth, RequireOAuthLayer, ScopeRequirement};
pub use client_addr::{ClientAddr, ForwardedHeader, TrustedProxies};
pub use client_auth::{ClientAuthMethod, ClientAuthMethods};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use codes::{
    AccessToken, DeviceCode, DeviceCodeGenerator, Digest, FamilyKey, RandomDeviceCode,
    RefreshToken, Thumbprint, UserCode, UserCodeFormat, UserCodeGenerator,
};
pub use connected_devices::{ConnectedDevice, ConnectedDevices};
pub use device_authorization::DeviceAuthorization;
pub use endpoints::{Endpoints, EndpointsLayer};
pub use error::{ErrorCode, OAuthError};
pub use family::Grant;
pub use flow::{
    AttemptLimit, BuildError, CompleteUriFn, DeviceFlow, DeviceFlowBuilder, Paths,
    DEFAULT_PENDING_GRANTS_EVERY, DEV_ISSUER,
};
pub use form::BodyLimits;
pub use grant::{DeviceGrant, GrantStatus, RequestOrigin};
pub use ids::{Audience, GrantId};
pub use introspection::Introspection;
#[cfg(feature = "jwt")]
pub use jwks::Jwks;
pub use limits::{Limits, RateLimit};
pub use metadata::Metadata;
pub use observe::{AuditAction, AuditEvent, AuditSink};
pub use response::{OAuthBody, ResponseBody, ResponseFuture};
pub use revocation::Revocation;
pub use scope::{InvalidScope, Scope};
pub use store::{
    Client, ClientId, ClientRegistry, ClientSource, MemoryStore, Store, StoreError, StoreResult,
    Subject, TokenInfo, Versioned,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, SqliteStoreBuilder};
pub use token::Token;
pub use verification::{BasicLogin, EndUserResolver, Verification, VerificationPage};

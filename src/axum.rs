//! [axum] integration: [`TokenInfo`] as an extractor (feature `axum`), and how the flow's
//! endpoints sit in a `Router`.
//!
//! [`RequireOAuthLayer`](crate::RequireOAuthLayer) puts the verified token's [`TokenInfo`] in
//! the request extensions. With this feature a handler takes it as an argument: guard a group
//! of routes with `route_layer(flow.require_oauth(...))` and write `async fn me(token:
//! TokenInfo)`.
//!
//! If a handler asks for a `TokenInfo` on a route the layer does not guard, the extractor fails
//! with [`MissingBearerLayer`]: a `500 Internal Server Error` whose JSON body says the layer is
//! missing. That is a wiring mistake in the application, never the client's fault, and it fails
//! closed. Take `Option<TokenInfo>` where a token is optional: it is `None` there instead.
//!
//! # Mounting the endpoints: each one a route
//!
//! Every endpoint is a Tower service, mounted with `Router::route_service` at its
//! [`Paths`](crate::Paths) entry. As routes, they get route middleware like any other: below,
//! the application's login (an async session lookup that inserts the end user's
//! [`Subject`](crate::Subject)) wraps only the pages end users sign in to, the verification
//! page and the connected devices, and not the endpoints devices call.
//!
//! ```
//! # use std::collections::HashMap;
//! # use std::sync::Arc;
//! # use axum::http::{header, HeaderMap};
//! # use tokio::sync::RwLock;
//! use axum::extract::{Request, State};
//! use axum::middleware::{self, Next};
//! use axum::response::Response;
//! use axum::routing::get;
//! use axum::{Json, Router};
//! use serde_json::{json, Value};
//! use tower_device_flow::{Subject, TokenInfo};
//! # use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope};
//! # /// Session id (the `sid` cookie) to user, as a session store on Redis would keep it.
//! # #[derive(Clone, Default)]
//! # struct Sessions(Arc<RwLock<HashMap<String, String>>>);
//! # impl Sessions {
//! #     async fn user(&self, headers: &HeaderMap) -> Option<String> {
//! #         let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
//! #         let sid = cookie.split("; ").find_map(|c| c.strip_prefix("sid="))?;
//! #         self.0.read().await.get(sid).cloned()
//! #     }
//! # }
//! # let sessions = Sessions::default();
//! # let store = MemoryStore::builder()
//! #     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
//! #     .build();
//! # let flow = DeviceFlow::builder(store).issuer("https://auth.example.com").build();
//!
//! async fn me(token: TokenInfo) -> Json<Value> {
//!     Json(json!({ "sub": token.subject.as_str(), "scope": token.scope.as_str() }))
//! }
//!
//! // The application's login, awaiting its session store: the signed-in user as a `Subject`.
//! async fn session_user(State(sessions): State<Sessions>, mut req: Request, next: Next) -> Response {
//!     if let Some(user) = sessions.user(req.headers()).await {
//!         req.extensions_mut().insert(Subject::new(user));
//!     }
//!     next.run(req).await
//! }
//!
//! let paths = flow.paths();
//! // The pages end users sign in to, behind the login: routes, so the layer applies to them.
//! let signed_in = Router::new()
//!     .route_service(&paths.verification, flow.verification())
//!     .route_service(&paths.connected_devices, flow.connected_devices())
//!     .route_service(&paths.revoke_device, flow.connected_devices())
//!     .layer(middleware::from_fn_with_state(sessions, session_user));
//! let app: Router = Router::new()
//!     // The guarded group: `route_layer` applies to the routes added before it.
//!     .route("/api/me", get(me))
//!     .route_layer(flow.require_oauth("profile"))
//!     // The endpoints devices and clients call, without sessions.
//!     .route_service(&paths.device_authorization, flow.device_authorization())
//!     .route_service(&paths.token, flow.token())
//!     .route_service(&paths.revocation, flow.revocation())
//!     .route_service(&paths.introspection, flow.introspection())
//!     .route_service(&paths.metadata, flow.metadata())
//!     .merge(signed_in);
//! // (With JWT access tokens, also `flow.jwks()` at `paths.jwks`.)
//! # let _ = app;
//! ```
//!
//! # Or all at once: the endpoints layer, and what must wrap it
//!
//! `Router::layer(flow.endpoints_layer())` serves every endpoint in one line, but as a layer:
//! it answers the flow's paths *before* the router routes. Route middleware, a `route_layer`
//! or the layer of a merged or nested router, never runs for `/device` then, and a login
//! installed that way silently never signs anyone in (every approval is a 401). Middleware
//! the endpoints need goes on the outside, after the endpoints layer: in axum the last
//! `.layer` call is the outermost, the first to see a request.
//!
//! ```
//! # use axum::extract::Request;
//! # use axum::middleware::{self, Next};
//! # use axum::response::Response;
//! # use axum::routing::get;
//! # use axum::Router;
//! # use tower_device_flow::{DeviceFlow, MemoryStore, Subject, TokenInfo};
//! # let flow = DeviceFlow::builder(MemoryStore::default()).build();
//! # async fn me(token: TokenInfo) -> String { token.subject.to_string() }
//! # async fn session_user(req: Request, next: Next) -> Response { next.run(req).await }
//! let app: Router = Router::new()
//!     .route("/api/me", get(me))
//!     .route_layer(flow.require_oauth("profile"))
//!     // Answers the flow's paths itself; other requests go on to the routes above.
//!     .layer(flow.endpoints_layer())
//!     // Outside the endpoints layer, so it runs for `/device` too (and for every request).
//!     .layer(middleware::from_fn(session_user));
//! # let _ = app;
//! ```
//!
//! `tests/axum.rs` runs both, with a session lookup that awaits, and the wrong order too.
//!
//! [axum]: https://docs.rs/axum

use std::convert::Infallible;
use std::fmt;

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::StatusCode;

use crate::store::TokenInfo;

/// The rejection of the [`TokenInfo`] extractor on a route that
/// [`RequireOAuthLayer`](crate::RequireOAuthLayer) does not guard.
///
/// It answers `500 Internal Server Error` with a JSON body:
///
/// ```json
/// {"error": "server_error", "error_description": "..."}
/// ```
///
/// The description names the missing layer; the route must be fixed, not the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissingBearerLayer;

impl MissingBearerLayer {
    const DESCRIPTION: &'static str = "TokenInfo extractor used on a route without \
        RequireOAuthLayer: guard the route with `.route_layer(flow.require_oauth(...))`";
}

impl fmt::Display for MissingBearerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::DESCRIPTION)
    }
}

impl std::error::Error for MissingBearerLayer {}

impl IntoResponse for MissingBearerLayer {
    fn into_response(self) -> Response {
        tracing::error!("{}", Self::DESCRIPTION);
        let body = serde_json::json!({
            "error": "server_error",
            "error_description": Self::DESCRIPTION,
        });
        let mut res = Response::new(Body::from(body.to_string()));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        res
    }
}

/// The verified bearer token of a route guarded by
/// [`RequireOAuthLayer`](crate::RequireOAuthLayer).
impl<S> FromRequestParts<S> for TokenInfo
where
    S: Send + Sync,
{
    type Rejection = MissingBearerLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TokenInfo>()
            .cloned()
            .ok_or(MissingBearerLayer)
    }
}

/// `Option<TokenInfo>`: the token if [`RequireOAuthLayer`](crate::RequireOAuthLayer) verified
/// one, else `None`.
impl<S> OptionalFromRequestParts<S> for TokenInfo
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<TokenInfo>().cloned())
    }
}

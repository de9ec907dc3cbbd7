//! [axum] integration: [`TokenInfo`] as an extractor (feature `axum`).
//!
//! [`RequireOAuthLayer`](crate::RequireOAuthLayer) puts the verified token's [`TokenInfo`] in
//! the request extensions. With this feature a handler takes it as an argument: guard a group
//! of routes with `route_layer(flow.require_oauth(...))` and write `async fn me(token:
//! TokenInfo)`. The OAuth endpoints themselves are Tower services, mounted with
//! `Router::route_service`.
//!
//! If a handler asks for a `TokenInfo` on a route the layer does not guard, the extractor fails
//! with [`MissingBearerLayer`]: a `500 Internal Server Error` whose JSON body says the layer is
//! missing. That is a wiring mistake in the application, never the client's fault, and it fails
//! closed. Take `Option<TokenInfo>` where a token is optional: it is `None` there instead.
//!
//! ```
//! use axum::routing::get;
//! use axum::Router;
//! use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope, TokenInfo};
//!
//! async fn me(token: TokenInfo) -> String {
//!     format!("hello {} ({})", token.subject, token.scope)
//! }
//!
//! let store = MemoryStore::builder()
//!     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
//!     .build();
//! let flow = DeviceFlow::builder(store).issuer("https://auth.example.com").build();
//! let paths = flow.paths().clone();
//!
//! let app: Router = Router::new()
//!     // The guarded group: `route_layer` applies to the routes added before it.
//!     .route("/api/me", get(me))
//!     .route_layer(flow.require_oauth("profile"))
//!     // The OAuth endpoints, each a Tower service.
//!     .route_service(&paths.device_authorization, flow.device_authorization())
//!     .route_service(&paths.token, flow.token())
//!     .route_service(&paths.verification, flow.verification())
//!     .route_service(&paths.revocation, flow.revocation())
//!     .route_service(&paths.introspection, flow.introspection())
//!     .route_service(&paths.metadata, flow.metadata());
//! # let _ = app;
//! ```
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

//! The JWK Set endpoint (RFC 7517 5): the public keys resource servers verify JWT access tokens
//! with, served at `/.well-known/jwks.json` when the flow issues JWTs.
//!
//! ```
//! use std::sync::Arc;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
//! use tower_device_flow::{DeviceFlow, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = Arc::new(JwtKeys::new(SigningKey::generate(JwsAlgorithm::EdDSA).unwrap()));
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .jwt_access_tokens(keys.clone())
//!     .build();
//! let res = flow.jwks().unwrap()
//!     .oneshot(Request::get("/.well-known/jwks.json").body(Full::<bytes::Bytes>::default()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.headers()["content-type"], "application/jwk-set+json");
//! let jwks: serde_json::Value =
//!     serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(jwks["keys"][0]["kid"], keys.current_kid());
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::error::OAuthError;
use crate::jwt::JwtKeys;
use crate::response::{OAuthBody, ResponseFuture};

/// The JWK Set service. Obtain it from [`DeviceFlow::jwks`](crate::DeviceFlow::jwks).
#[derive(Clone)]
pub struct Jwks {
    keys: Arc<JwtKeys>,
}

impl Jwks {
    pub(crate) fn new(keys: Arc<JwtKeys>) -> Self {
        Jwks { keys }
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks").field("keys", &self.keys).finish()
    }
}

impl<B> Service<Request<B>> for Jwks {
    type Response = Response<OAuthBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let res = if req.method() == Method::GET || req.method() == Method::HEAD {
            let mut res = Response::new(OAuthBody::new(self.keys.jwks()));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            // Short: resource servers also refetch on an unknown `kid` after a rotation.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            res
        } else {
            let mut res = OAuthError::invalid_request("only GET is allowed")
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
                .into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            res
        };
        ResponseFuture::new(std::future::ready(res))
    }
}

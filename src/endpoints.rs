//! [`EndpointsLayer`]: every endpoint of the flow at its path, in front of any service.
//!
//! For a plain hyper stack with no router, one layer mounts the whole authorization server:
//! requests to the configured [`Paths`](crate::Paths) are answered by the crate, every other
//! request goes to the inner service untouched.
//!
//! **Order.** The layer answers the flow's paths itself, before anything inside it: the inner
//! service, and so a router's routing and its route middleware, never sees them. Whatever the
//! endpoints need from the application, above all the login that puts the end user's
//! [`Subject`](crate::Subject) in the extensions for the verification page, must wrap the
//! `Endpoints` from outside: `login.layer(flow.endpoints_layer().layer(app))`, or with axum
//! `router.layer(flow.endpoints_layer()).layer(login)` (the last `.layer` is the outermost).
//! A login layered inside never runs for `/device`, and every approval is a 401. To give
//! middleware to some endpoints only, mount each endpoint as its own route instead (with axum,
//! `Router::route_service`; see [`crate::axum`]).
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_device_flow::{DeviceFlow, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .build();
//! let app = service_fn(|_req: Request<Full<bytes::Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::from("hello")))
//! });
//! let server = flow.endpoints_layer().layer(app);
//! let res = server
//!     .oneshot(Request::get("/.well-known/oauth-authorization-server").body(Full::default()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use std::sync::Arc;

use crate::config::Shared;
use crate::connected_devices::ConnectedDevices;
use crate::device_authorization::DeviceAuthorization;
use crate::introspection::Introspection;
use crate::metadata::Metadata;
use crate::response::{ResponseBody, ResponseFuture};
use crate::revocation::Revocation;
use crate::store::Store;
use crate::token::Token;
use crate::verification::Verification;

/// Serves the flow's endpoints in front of an inner service. Obtain it from
/// [`DeviceFlow::endpoints_layer`](crate::DeviceFlow::endpoints_layer).
pub struct EndpointsLayer<S> {
    shared: Arc<Shared<S>>,
    // Its fixed part rendered once.
    metadata: Metadata,
}

impl<S: Store> EndpointsLayer<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        let metadata = Metadata::new(&shared);
        EndpointsLayer { shared, metadata }
    }
}

impl<S> Clone for EndpointsLayer<S> {
    fn clone(&self) -> Self {
        EndpointsLayer {
            shared: self.shared.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

impl<S> fmt::Debug for EndpointsLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointsLayer")
            .field("paths", &self.shared.config.paths)
            .finish_non_exhaustive()
    }
}

impl<S, Svc> Layer<Svc> for EndpointsLayer<S> {
    type Service = Endpoints<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        Endpoints {
            inner,
            shared: self.shared.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// The flow's endpoints in front of `Svc`.
pub struct Endpoints<Svc, S> {
    inner: Svc,
    shared: Arc<Shared<S>>,
    metadata: Metadata,
}

impl<Svc: Clone, S> Clone for Endpoints<Svc, S> {
    fn clone(&self) -> Self {
        Endpoints {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

impl<Svc: fmt::Debug, S> fmt::Debug for Endpoints<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("inner", &self.inner)
            .field("paths", &self.shared.config.paths)
            .finish_non_exhaustive()
    }
}

impl<Svc, S> Endpoints<Svc, S> {
    /// The JWK Set service, if `path` is its path and the flow issues JWTs.
    #[cfg(feature = "jwt")]
    fn jwks(&self, path: &str) -> Option<crate::jwks::Jwks> {
        let config = &self.shared.config;
        (path == config.paths.jwks)
            .then(|| config.jwt.clone().map(crate::jwks::Jwks::new))
            .flatten()
    }

    #[cfg(not(feature = "jwt"))]
    fn jwks(&self, _path: &str) -> Option<Metadata> {
        None
    }
}

fn oneshot<T, B>(mut svc: T, req: Request<B>) -> ResponseFuture
where
    T: Service<Request<B>, Future = ResponseFuture>,
{
    // Every endpoint service is always ready.
    svc.call(req)
}

impl<Svc, S, B, ResBody> Service<Request<B>> for Endpoints<Svc, S>
where
    Svc: Service<Request<B>, Response = Response<ResBody>>,
    S: Store,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Svc::Error;
    type Future = EndpointsFuture<Svc::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let paths = &shared.config.paths;
        let path = req.uri().path();
        let future = if path == paths.token {
            oneshot(Token::new(shared.clone()), req)
        } else if path == paths.device_authorization {
            oneshot(DeviceAuthorization::new(shared.clone()), req)
        } else if path == paths.verification {
            oneshot(Verification::new(shared.clone()), req)
        } else if path == paths.metadata {
            oneshot(self.metadata.clone(), req)
        } else if path == paths.revocation {
            oneshot(Revocation::new(shared.clone()), req)
        } else if path == paths.introspection {
            oneshot(Introspection::new(shared.clone()), req)
        } else if let Some(jwks) = self.jwks(path) {
            oneshot(jwks, req)
        } else if path == paths.connected_devices || path == paths.revoke_device {
            oneshot(ConnectedDevices::new(shared.clone()), req)
        } else {
            return EndpointsFuture::Inner {
                future: self.inner.call(req),
            };
        };
        EndpointsFuture::OAuth { future }
    }
}

pin_project! {
    /// Response future of [`Endpoints`].
    #[project = EndpointsFutureProj]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    pub enum EndpointsFuture<F> {
        /// An endpoint of the crate is answering.
        OAuth {
            #[pin]
            future: ResponseFuture,
        },
        /// The inner service is answering.
        Inner {
            #[pin]
            future: F,
        },
    }
}

impl<F, ResBody, E> Future for EndpointsFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EndpointsFutureProj::OAuth { future } => future.poll(cx).map(|r| {
                let r: Result<_, Infallible> = r;
                match r {
                    Ok(res) => Ok(res.map(ResponseBody::oauth)),
                    Err(never) => match never {},
                }
            }),
            EndpointsFutureProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
        }
    }
}

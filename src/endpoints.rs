//! [`EndpointsLayer`]: every endpoint of the flow at its path, in front of any service.
//!
//! For a plain hyper stack with no router, one layer mounts the whole authorization server:
//! requests to the configured [`Paths`](crate::Paths) are answered by the crate, every other
//! request goes to the inner service untouched.
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_device_flow::{DeviceFlow, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flow = DeviceFlow::builder(MemoryStore::default()).build();
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

use crate::flow::DeviceFlow;
use crate::response::{ResponseBody, ResponseFuture};
use crate::store::Store;

/// Serves the flow's endpoints in front of an inner service. Obtain it from
/// [`DeviceFlow::endpoints_layer`].
pub struct EndpointsLayer<S> {
    flow: DeviceFlow<S>,
}

impl<S> EndpointsLayer<S> {
    pub(crate) fn new(flow: DeviceFlow<S>) -> Self {
        EndpointsLayer { flow }
    }
}

impl<S> Clone for EndpointsLayer<S> {
    fn clone(&self) -> Self {
        EndpointsLayer {
            flow: self.flow.clone(),
        }
    }
}

impl<S> fmt::Debug for EndpointsLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointsLayer")
            .field("flow", &self.flow)
            .finish()
    }
}

impl<S, Svc> Layer<Svc> for EndpointsLayer<S> {
    type Service = Endpoints<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        Endpoints {
            inner,
            flow: self.flow.clone(),
        }
    }
}

/// The flow's endpoints in front of `Svc`.
pub struct Endpoints<Svc, S> {
    inner: Svc,
    flow: DeviceFlow<S>,
}

impl<Svc: Clone, S> Clone for Endpoints<Svc, S> {
    fn clone(&self) -> Self {
        Endpoints {
            inner: self.inner.clone(),
            flow: self.flow.clone(),
        }
    }
}

impl<Svc: fmt::Debug, S> fmt::Debug for Endpoints<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("inner", &self.inner)
            .field("flow", &self.flow)
            .finish()
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
        let paths = self.flow.paths();
        let path = req.uri().path();
        let future = if path == paths.token {
            oneshot(self.flow.token(), req)
        } else if path == paths.device_authorization {
            oneshot(self.flow.device_authorization(), req)
        } else if path == paths.verification {
            oneshot(self.flow.verification(), req)
        } else if path == paths.metadata {
            oneshot(self.flow.metadata(), req)
        } else if path == paths.revocation {
            oneshot(self.flow.revocation(), req)
        } else if path == paths.introspection {
            oneshot(self.flow.introspection(), req)
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

//! Response plumbing shared by every endpoint and layer: the endpoints' response future and the
//! either-body that lets a layer answer with its own JSON without boxing the inner body.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// The body of every response the crate's endpoints produce.
pub type OAuthBody = Full<Bytes>;

type BoxedResponse = Pin<Box<dyn Future<Output = Response<OAuthBody>> + Send>>;

/// The response future of the endpoint services. They never fail: every problem is an HTTP
/// response with an RFC error body.
pub struct ResponseFuture {
    inner: BoxedResponse,
}

impl ResponseFuture {
    pub(crate) fn new(fut: impl Future<Output = Response<OAuthBody>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(fut),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<OAuthBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map(Ok)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// A response body that is either the inner service's body or one the crate wrote (an
    /// OAuth error or endpoint response). Layers use it so the inner body is never boxed.
    #[project = ResponseBodyProj]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    #[derive(Debug)]
    pub enum ResponseBody<B> {
        /// The inner service's body, untouched.
        Inner {
            #[pin]
            body: B,
        },
        /// A body written by the crate.
        OAuth {
            #[pin]
            body: OAuthBody,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody::Inner { body }
    }

    pub(crate) fn oauth(body: OAuthBody) -> Self {
        ResponseBody::OAuth { body }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::OAuth { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never: Infallible| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Inner { body } => body.is_end_stream(),
            ResponseBody::OAuth { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Inner { body } => body.size_hint(),
            ResponseBody::OAuth { body } => body.size_hint(),
        }
    }
}

/// Declares an endpoint service: a cheap-to-clone handle on the flow whose `call` runs
/// `$handle(&shared, req)`, renders an `Err(OAuthError)` as the RFC error response, and
/// records the request's duration under `$endpoint`.
macro_rules! endpoint_service {
    ($(#[$doc:meta])* $name:ident, $handle:path, $endpoint:expr) => {
        $(#[$doc])*
        pub struct $name<S> {
            shared: std::sync::Arc<crate::config::Shared<S>>,
        }

        impl<S> $name<S> {
            pub(crate) fn new(shared: std::sync::Arc<crate::config::Shared<S>>) -> Self {
                $name { shared }
            }
        }

        impl<S> Clone for $name<S> {
            fn clone(&self) -> Self {
                $name {
                    shared: self.shared.clone(),
                }
            }
        }

        impl<S> std::fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl<S, B> tower_service::Service<http::Request<B>> for $name<S>
        where
            S: crate::store::Store,
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        {
            type Response = http::Response<crate::response::OAuthBody>;
            type Error = std::convert::Infallible;
            type Future = crate::response::ResponseFuture;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: http::Request<B>) -> Self::Future {
                use tracing::Instrument as _;
                let shared = self.shared.clone();
                let span = tracing::info_span!("oauth", endpoint = stringify!($name));
                crate::response::ResponseFuture::new(
                    async move {
                        let timer = crate::observe::record::Timer::start();
                        let res = $handle(&shared, req).await.unwrap_or_else(|e| {
                            crate::error::log_rejection(&e);
                            e.into_response()
                        });
                        timer.request($endpoint);
                        res
                    }
                    .instrument(span),
                )
            }
        }
    };
}
pub(crate) use endpoint_service;

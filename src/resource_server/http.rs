//! The HTTP client the remote verifiers send their requests with: any Tower service, so the
//! application picks the client and its TLS stack.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower_service::Service;

/// The errors an HTTP client may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest answer read from an authorization server (introspection, metadata, JWKS).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a request to the authorization server got no usable answer.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// No answer in time, the connection failed, or the body broke off.
    Unreachable(String),
}

pub(crate) type Fetch =
    Pin<Box<dyn Future<Output = Result<(StatusCode, Bytes), HttpError>> + Send>>;

/// An HTTP client as an object: sends one request, reads the whole (bounded) answer.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send(&self, req: Request<Full<Bytes>>, timeout: Duration) -> Fetch;
}

/// Any Tower HTTP service is a transport.
pub(crate) struct TowerTransport<C>(pub(crate) C);

impl<C, B> Transport for TowerTransport<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn send(&self, req: Request<Full<Bytes>>, timeout: Duration) -> Fetch {
        let mut client = self.0.clone();
        Box::pin(async move {
            let exchange = async move {
                std::future::poll_fn(|cx| client.poll_ready(cx))
                    .await
                    .map_err(|e| HttpError::Unreachable(e.into().to_string()))?;
                let res = client
                    .call(req)
                    .await
                    .map_err(|e| HttpError::Unreachable(e.into().to_string()))?;
                let status = res.status();
                let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| HttpError::Unreachable(e.to_string()))?
                    .to_bytes();
                Ok((status, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(HttpError::Unreachable(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

//! The bearer layer's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::response::{OAuthBody, ResponseBody};
use crate::store::TokenInfo;

/// The checks after parsing: the token's lookup, its verdict and, for DPoP, the proof's claim.
/// Either the token to hand on, or the refusal to answer with.
pub(super) type Lookup =
    Pin<Box<dyn Future<Output = Result<TokenInfo, Response<OAuthBody>>> + Send>>;

pin_project! {
    /// Response future of [`RequireOAuth`](super::RequireOAuth): the token's lookup and checks,
    /// then the inner service's future.
    pub struct ResponseFuture<Svc, B>
    where
        Svc: Service<Request<B>>,
    {
        #[pin]
        state: State<Svc, B, Svc::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Svc, B, F> {
        Refuse { response: Option<Response<OAuthBody>> },
        Lookup {
            lookup: Lookup,
            inner: Option<Svc>,
            req: Option<Request<B>>,
        },
        Inner { #[pin] future: F },
    }
}

impl<Svc, B> ResponseFuture<Svc, B>
where
    Svc: Service<Request<B>>,
{
    pub(super) fn refuse(response: Response<OAuthBody>) -> Self {
        ResponseFuture {
            state: State::Refuse {
                response: Some(response),
            },
        }
    }

    pub(super) fn lookup(lookup: Lookup, inner: Svc, req: Request<B>) -> Self {
        ResponseFuture {
            state: State::Lookup {
                lookup,
                inner: Some(inner),
                req: Some(req),
            },
        }
    }
}

impl<Svc, B, ResBody> Future for ResponseFuture<Svc, B>
where
    Svc: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, Svc::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Refuse { response } => {
                    let response = response.take().unwrap_or_default();
                    return Poll::Ready(Ok(response.map(ResponseBody::oauth)));
                }
                StateProj::Lookup { lookup, inner, req } => {
                    let verdict = ready!(lookup.as_mut().poll(cx));
                    let next = match (verdict, req.take(), inner.take()) {
                        (Ok(token), Some(mut req), Some(mut svc)) => {
                            req.extensions_mut().insert(token);
                            State::Inner {
                                future: svc.call(req),
                            }
                        }
                        (Err(response), _, _) => State::Refuse {
                            response: Some(response),
                        },
                        // Polled again after handing the request on: cannot happen while the
                        // state machine is intact; answer rather than panic.
                        (Ok(_), _, _) => State::Refuse { response: None },
                    };
                    state.set(next);
                }
                StateProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|r| r.map(|res| res.map(ResponseBody::inner)));
                }
            }
        }
    }
}

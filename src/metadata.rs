//! RFC 8414 authorization server metadata, served at `/.well-known/oauth-authorization-server`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::config::Config;
use crate::error::OAuthError;
use crate::grant::{DEVICE_CODE_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE};
use crate::response::{OAuthBody, ResponseFuture};

/// The metadata document service. Obtain it from [`DeviceFlow::metadata`](crate::DeviceFlow::metadata).
#[derive(Clone, Debug)]
pub struct Metadata {
    document: Bytes,
}

impl Metadata {
    pub(crate) fn new(config: &Config) -> Self {
        let url = |path: &str| format!("{}{}", config.issuer, path);
        let p = &config.paths;
        let mut grant_types = vec![DEVICE_CODE_GRANT_TYPE];
        if config.refresh_token_lifetime.is_some() {
            grant_types.push(REFRESH_TOKEN_GRANT_TYPE);
        }
        let token_auth = config.token_auth.names();
        let introspection_auth: Vec<_> = token_auth
            .iter()
            .copied()
            .filter(|m| *m != "none")
            .collect();
        let mut doc = serde_json::json!({
            "issuer": config.issuer,
            "device_authorization_endpoint": url(&p.device_authorization),
            "token_endpoint": url(&p.token),
            "revocation_endpoint": url(&p.revocation),
            "introspection_endpoint": url(&p.introspection),
            "grant_types_supported": grant_types,
            // No authorization endpoint: this server issues no codes through redirects.
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": token_auth,
            "device_authorization_endpoint_auth_methods_supported": config.device_authorization_auth.names(),
            "revocation_endpoint_auth_methods_supported": token_auth,
            "introspection_endpoint_auth_methods_supported": introspection_auth,
        });
        if let (Some(scopes), Some(obj)) = (&config.scopes_supported, doc.as_object_mut()) {
            obj.insert(
                "scopes_supported".into(),
                scopes.iter().collect::<Vec<_>>().into(),
            );
        }
        Metadata {
            document: Bytes::from(doc.to_string()),
        }
    }

    /// The JSON document.
    pub fn document(&self) -> &Bytes {
        &self.document
    }
}

impl<B> Service<Request<B>> for Metadata {
    type Response = Response<OAuthBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let res = if req.method() == Method::GET || req.method() == Method::HEAD {
            let mut res = Response::new(OAuthBody::new(self.document.clone()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            res.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
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

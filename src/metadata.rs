//! RFC 8414 authorization server metadata, served at `/.well-known/oauth-authorization-server`.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tower_service::Service;

use crate::config::Shared;
use crate::error::OAuthError;
use crate::grant::{DEVICE_CODE_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE};
use crate::response::{OAuthBody, ResponseFuture};
use crate::scope::Scope;
use crate::store::{DynClientSource, Store};

/// The metadata document service. Obtain it from [`DeviceFlow::metadata`](crate::DeviceFlow::metadata).
///
/// Everything but `scopes_supported` is fixed when the flow is built. `scopes_supported` is
/// the flow's [`scopes_supported`](crate::DeviceFlowBuilder::scopes_supported) when it was
/// given one; otherwise it is asked of the client source
/// ([`ClientSource::known_scopes`](crate::ClientSource::known_scopes)) on every request, so a
/// client registered or changed shows on the next one, and it is left out when the source
/// cannot list its clients or knows no scope.
#[derive(Clone)]
pub struct Metadata {
    /// The whole document, when no part of it is asked at request time.
    fixed: Option<Bytes>,
    /// The document without `scopes_supported`, completed at request time from `scopes`.
    base: Arc<serde_json::Map<String, Value>>,
    scopes: Option<Arc<dyn DynClientSource>>,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("issuer", &self.base.get("issuer"))
            .field("scopes_from_clients", &self.scopes.is_some())
            .finish_non_exhaustive()
    }
}

impl Metadata {
    pub(crate) fn new<S: Store>(shared: &Shared<S>) -> Self {
        let config = &shared.config;
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
        let mut doc = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            doc.insert(key.into(), value);
        };
        put("issuer", config.issuer.clone().into());
        put(
            "device_authorization_endpoint",
            url(&p.device_authorization).into(),
        );
        put("token_endpoint", url(&p.token).into());
        put("revocation_endpoint", url(&p.revocation).into());
        put("introspection_endpoint", url(&p.introspection).into());
        put("grant_types_supported", grant_types.into());
        // No authorization endpoint: this server issues no codes through redirects.
        put("response_types_supported", Value::Array(Vec::new()));
        put(
            "token_endpoint_auth_methods_supported",
            token_auth.clone().into(),
        );
        put(
            "device_authorization_endpoint_auth_methods_supported",
            config.device_authorization_auth.names().into(),
        );
        put(
            "revocation_endpoint_auth_methods_supported",
            token_auth.into(),
        );
        put(
            "introspection_endpoint_auth_methods_supported",
            introspection_auth.into(),
        );
        #[cfg(feature = "jwt")]
        if config.jwt.is_some() {
            put("jwks_uri", url(&p.jwks).into());
        }
        #[cfg(feature = "dpop")]
        if let Some(dpop) = &config.dpop {
            // RFC 9449 5.1.
            let algs: Vec<&str> = dpop
                .algorithms_supported()
                .iter()
                .map(|a| a.as_str())
                .collect();
            put("dpop_signing_alg_values_supported", algs.into());
        }
        let scopes = match &config.scopes_supported {
            Some(scopes) => {
                put("scopes_supported", scope_list(scopes));
                None
            }
            None => Some(match &config.clients {
                Some(source) => source.clone(),
                None => Arc::new(shared.store.clone()) as Arc<dyn DynClientSource>,
            }),
        };
        let fixed = scopes
            .is_none()
            .then(|| Bytes::from(Value::Object(doc.clone()).to_string()));
        Metadata {
            fixed,
            base: Arc::new(doc),
            scopes,
        }
    }

    /// The JSON document as it stands now (with `scopes_supported` as the client source lists
    /// it at this moment, when it comes from there).
    pub async fn document(&self) -> Bytes {
        self.render().await.0
    }

    /// The document, and whether it is complete (false when the client source failed and
    /// `scopes_supported` was left out).
    async fn render(&self) -> (Bytes, bool) {
        if let Some(fixed) = &self.fixed {
            return (fixed.clone(), true);
        }
        let known = match &self.scopes {
            Some(source) => source.known_scopes_dyn().await,
            None => Ok(None),
        };
        let mut doc = (*self.base).clone();
        let complete = match known {
            Ok(Some(scopes)) if !scopes.is_empty() => {
                doc.insert("scopes_supported".into(), scope_list(&scopes));
                true
            }
            Ok(_) => true,
            Err(e) => {
                // The rest of the document is still right, and clients need it to start.
                tracing::warn!(error = %e, "metadata served without scopes_supported");
                false
            }
        };
        (Bytes::from(Value::Object(doc).to_string()), complete)
    }
}

fn scope_list(scopes: &Scope) -> Value {
    scopes.iter().collect::<Vec<_>>().into()
}

impl<B> Service<Request<B>> for Metadata {
    type Response = Response<OAuthBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = OAuthError::invalid_request("only GET is allowed")
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
                .into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return ResponseFuture::new(std::future::ready(res));
        }
        let metadata = self.clone();
        ResponseFuture::new(async move {
            let (document, complete) = metadata.render().await;
            let cache = match (metadata.fixed.is_some(), complete) {
                (true, _) => "public, max-age=3600",
                // Scopes from the clients change with them: caches must ask again.
                (false, true) => "no-cache",
                (false, false) => "no-store",
            };
            let mut res = Response::new(OAuthBody::new(document));
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        })
    }
}

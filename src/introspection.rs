//! RFC 7662 token introspection, for resource servers that do not share the store.
//!
//! Only confidential clients may introspect. A request without client credentials, or with only
//! a public client's `client_id`, is 401 `invalid_client` with a `WWW-Authenticate` challenge
//! (RFC 7662 2.1, RFC 6749 5.2), before the token is even looked up. An unknown, expired or
//! revoked token is `{"active": false}` and nothing more.
//!
//! ```
//! use http::Request;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_device_flow::{DeviceFlow, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .build();
//! let req = Request::post("/oauth/introspect")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(Full::<bytes::Bytes>::from("token=anything"))
//!     .unwrap();
//! let res = flow.introspection().oneshot(req).await.unwrap();
//! // No client credentials: `invalid_client`, with a challenge, and nothing about the token.
//! assert_eq!(res.status(), 401);
//! assert!(res.headers().contains_key("www-authenticate"));
//! # }
//! ```

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;

use crate::client_auth::authenticate;
use crate::config::Shared;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::form::read_form;
use crate::response::{endpoint_service, OAuthBody};
use crate::store::{find_token, FoundToken, Store};

endpoint_service!(
    /// The introspection endpoint service. Obtain it from
    /// [`DeviceFlow::introspection`](crate::DeviceFlow::introspection).
    Introspection,
    handle,
    crate::observe::metric::Endpoint::Introspection
);

/// The RFC 7662 2.2 response.
#[derive(Serialize, Default)]
struct IntrospectionResponse<'a> {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    /// The resources the token is for (RFC 7662 2.2 `aud`), space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    /// The grant the token belongs to (this server's own member).
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_id: Option<&'a str>,
    /// The DPoP key the token is bound to (RFC 9449 6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

/// `cnf` with the `jkt` confirmation method (RFC 9449 6.1).
#[derive(Serialize)]
struct Confirmation {
    jkt: crate::codes::Thumbprint,
}

async fn handle<S, B>(
    shared: &Shared<S>,
    req: Request<B>,
) -> Result<Response<OAuthBody>, OAuthError>
where
    S: Store,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, form) = read_form(req, &shared.config.body).await?;
    // RFC 7662 2.1: the caller must authenticate. Presenting nothing is an authentication
    // failure (401 with a challenge, RFC 6749 5.2), not a malformed request.
    if !parts.headers.contains_key(header::AUTHORIZATION) && form.get("client_secret")?.is_none() {
        return Err(OAuthError::invalid_client(
            "introspection requires client authentication",
        ));
    }
    let client = authenticate(
        &shared.store,
        shared.clients(),
        &parts,
        &form,
        shared.config.token_auth,
        &shared.config.limiter,
    )
    .await?;
    if !client.is_confidential() {
        return Err(OAuthError::invalid_client(
            "introspection requires a confidential client",
        ));
    }
    let token = form.require("token")?;
    let now = shared.clock.now();
    let issuer = shared.config.issuer.as_str();
    let found = find_token(&shared.store, token, form.get("token_type_hint")?, now).await?;
    let grant_id;
    let body = match &found {
        Some(FoundToken::Access(_, t)) if !t.is_expired(now) => {
            grant_id = t.grant_id.map(|g| g.to_string());
            IntrospectionResponse {
                active: true,
                scope: Some(t.scope.as_str()),
                client_id: Some(t.client_id.as_str()),
                username: Some(t.subject.as_str()),
                sub: Some(t.subject.as_str()),
                // RFC 9449 6.2: a bound token's type is DPoP.
                token_type: Some(if t.cnf.is_some() { "DPoP" } else { "Bearer" }),
                exp: Some(t.expires_at.as_unix_secs()),
                iss: Some(issuer),
                aud: t.audience.as_ref().map(|a| a.as_str()),
                grant_id: grant_id.as_deref(),
                cnf: t.cnf.map(|jkt| Confirmation { jkt }),
            }
        }
        Some(FoundToken::Refresh(g)) => {
            grant_id = Some(g.id.to_string());
            IntrospectionResponse {
                active: true,
                scope: Some(g.scope.as_str()),
                client_id: Some(g.client_id.as_str()),
                username: Some(g.subject.as_str()),
                sub: Some(g.subject.as_str()),
                token_type: Some("refresh_token"),
                exp: Some(g.expires_at.as_unix_secs()),
                iss: Some(issuer),
                aud: g.audience.as_ref().map(|a| a.as_str()),
                grant_id: grant_id.as_deref(),
                cnf: g.cnf.map(|jkt| Confirmation { jkt }),
            }
        }
        _ => IntrospectionResponse::default(),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|_| OAuthError::new(ErrorCode::ServerError, "could not encode the response"))?;
    Ok(json_response(StatusCode::OK, Bytes::from(json)))
}

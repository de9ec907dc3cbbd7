//! RFC 7662 token introspection, for resource servers that do not share the store.
//!
//! Only confidential clients may introspect. An unknown, expired or revoked token is
//! `{"active": false}` and nothing more.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;

use crate::client_auth::authenticated_form;
use crate::codes::Digest;
use crate::config::Shared;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::response::{endpoint_service, OAuthBody};
use crate::store::{find_token, FoundToken, Store};

endpoint_service!(
    /// The introspection endpoint service. Obtain it from
    /// [`DeviceFlow::introspection`](crate::DeviceFlow::introspection).
    Introspection,
    handle
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
    let (form, client) = authenticated_form(
        &shared.store,
        &shared.config.body,
        req,
        shared.config.token_auth,
    )
    .await?;
    if !client.is_confidential() {
        return Err(OAuthError::invalid_client(
            "introspection requires a confidential client",
        ));
    }
    let digest = Digest::of(form.require("token")?.as_bytes());
    let now = shared.clock.now();
    let issuer = shared.config.issuer.as_str();
    let found = find_token(&shared.store, &digest, form.get("token_type_hint")?, now).await?;
    let body = match &found {
        Some(FoundToken::Access(t)) if !t.is_expired(now) => IntrospectionResponse {
            active: true,
            scope: Some(t.scope.as_str()),
            client_id: Some(t.client_id.as_str()),
            username: Some(t.subject.as_str()),
            sub: Some(t.subject.as_str()),
            token_type: Some("Bearer"),
            exp: Some(t.expires_at.as_unix_secs()),
            iss: Some(issuer),
        },
        Some(FoundToken::Refresh(r)) if !r.is_expired(now) => IntrospectionResponse {
            active: true,
            scope: Some(r.scope.as_str()),
            client_id: Some(r.client_id.as_str()),
            username: Some(r.subject.as_str()),
            sub: Some(r.subject.as_str()),
            token_type: Some("refresh_token"),
            exp: Some(r.expires_at.as_unix_secs()),
            iss: Some(issuer),
        },
        _ => IntrospectionResponse::default(),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|_| OAuthError::new(ErrorCode::ServerError, "could not encode the response"))?;
    Ok(json_response(StatusCode::OK, Bytes::from(json)))
}

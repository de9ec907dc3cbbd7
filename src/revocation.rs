//! RFC 7009 token revocation.
//!
//! A client revokes one of its own access or refresh tokens. Revoking a refresh token revokes
//! its whole grant: the refresh token and the grant's access token stop working at once, on
//! every instance. Revoking an access token ends that token only (RFC 7009 2.1 leaves both
//! choices to the server; a device that revokes its refresh token is signing out). As RFC 7009 2.2 asks, an unknown or already invalid token is answered 200, so
//! the answer tells a client nothing about tokens it does not hold.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;

use crate::client_auth::authenticated_form;
use crate::config::Shared;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::response::{endpoint_service, OAuthBody};
use crate::store::{find_token, FoundToken, Store};

endpoint_service!(
    /// The revocation endpoint service. Obtain it from
    /// [`DeviceFlow::revocation`](crate::DeviceFlow::revocation).
    Revocation,
    handle
);

async fn handle<S, B>(
    shared: &Shared<S>,
    req: Request<B>,
) -> Result<Response<OAuthBody>, OAuthError>
where
    S: Store,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (_, form, client) = authenticated_form(
        &shared.store,
        shared.clients(),
        &shared.config.body,
        req,
        shared.config.token_auth,
        &shared.config.limiter,
    )
    .await?;
    let token = form.require("token")?;
    let now = shared.clock.now();
    let store = &shared.store;
    let found = find_token(store, token, form.get("token_type_hint")?, now).await?;
    let owner = match &found {
        Some(FoundToken::Access(_, info)) => &info.client_id,
        Some(FoundToken::Refresh(grant)) => &grant.client_id,
        // Unknown or already invalid: nothing to do, and nothing to tell (RFC 7009 2.2).
        None => return Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"))),
    };
    if owner != client.id() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the token was issued to another client",
        ));
    }
    let kind = match &found {
        // A refresh token stands for the whole grant: revoking it ends the grant, and with it
        // the grant's access token (RFC 7009 2.1 allows, and a device signing out means it).
        Some(FoundToken::Refresh(grant)) => {
            store.revoke_grant(&grant.id, now).await?;
            "refresh_token"
        }
        // An access token ends alone; its grant and refresh token live on.
        Some(FoundToken::Access(digest, _)) => {
            store.revoke_access_token(digest, now).await?;
            "access_token"
        }
        None => return Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"))),
    };
    tracing::info!(client_id = client.id().as_str(), kind, "token revoked");
    Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
}

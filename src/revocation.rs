//! RFC 7009 token revocation.
//!
//! A client revokes one of its own access or refresh tokens. Revoking a refresh token also
//! revokes the access token issued with it, and since every refresh rotates both, that ends the
//! whole grant. As RFC 7009 2.2 asks, an unknown or already invalid token is answered 200, so
//! the answer tells a client nothing about tokens it does not hold.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;

use crate::client_auth::authenticate;
use crate::codes::Digest;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::flow::Shared;
use crate::form::read_form;
use crate::response::{endpoint_service, OAuthBody};
use crate::store::Store;

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
    let (parts, form) = read_form(req, &shared.config.body).await?;
    let client = authenticate(
        &shared.store,
        &parts.headers,
        &form,
        shared.config.token_auth,
    )
    .await?;
    let digest = Digest::of(form.require("token")?.as_bytes());
    // The hint only orders the search (RFC 7009 2.1); an unknown hint is ignored.
    let refresh_first = form.get("token_type_hint")? == Some("refresh_token");
    let store = &shared.store;
    let now = shared.clock.now();
    let not_yours = || {
        OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the token was issued to another client",
        )
    };
    for refresh in [refresh_first, !refresh_first] {
        if refresh {
            if let Some(record) = store.refresh_token(&digest, now).await? {
                if &record.client_id != client.id() {
                    return Err(not_yours());
                }
                store.revoke_refresh_token(&digest).await?;
                tracing::info!(
                    client_id = client.id().as_str(),
                    kind = "refresh_token",
                    "token revoked"
                );
                break;
            }
        } else if let Some(info) = store.access_token(&digest, now).await? {
            if &info.client_id != client.id() {
                return Err(not_yours());
            }
            store.revoke_access_token(&digest).await?;
            tracing::info!(
                client_id = client.id().as_str(),
                kind = "access_token",
                "token revoked"
            );
            break;
        }
    }
    Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
}

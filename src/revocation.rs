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
use crate::observe::{record, AuditAction, RevocationReason};
use crate::response::{endpoint_service, OAuthBody};
use crate::store::{find_token, FoundToken, Store};

endpoint_service!(
    /// The revocation endpoint service. Obtain it from
    /// [`DeviceFlow::revocation`](crate::DeviceFlow::revocation).
    Revocation,
    handle,
    crate::observe::metric::Endpoint::Revocation
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
    let (parts, form, client) = authenticated_form(
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
    let (revoked, reason, subject, grant_id) = match found {
        // A refresh token stands for the whole grant: revoking it ends the grant, and with it
        // the grant's access token (RFC 7009 2.1 allows, and a device signing out means it).
        Some(FoundToken::Refresh(grant)) => {
            let revoked = store.revoke_grant(&grant.id, now).await?.is_some();
            let reason = RevocationReason::RefreshToken;
            (revoked, reason, grant.subject, Some(grant.id))
        }
        // An access token ends alone; its grant and refresh token live on.
        Some(FoundToken::Access(digest, info)) => {
            let revoked = store.revoke_access_token(&digest, now).await?;
            (
                revoked,
                RevocationReason::AccessToken,
                info.subject,
                info.grant_id,
            )
        }
        None => return Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"))),
    };
    let kind = reason.as_str();
    tracing::info!(client_id = client.id().as_str(), kind, "token revoked");
    // Only what this request revoked: a racing revocation of the same token reports its own.
    if revoked {
        record::revoked(reason, 1);
        let config = &shared.config;
        let source = config.limiter.resolve(&parts.extensions, &parts.headers).ip;
        config.observer.audit(now, source, || AuditAction::Revoked {
            client_id: client.id().clone(),
            subject,
            grant_id,
            reason,
        });
    }
    Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
}

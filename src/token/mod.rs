//! The token endpoint: the device code grant (RFC 8628 3.4-3.5) and the refresh token grant
//! (RFC 6749 6), with single-use refresh tokens.
//!
//! A device polls with `grant_type=urn:ietf:params:oauth:grant-type:device_code`. Each poll
//! reads the grant, asks the state machine ([`DeviceGrant::poll`](crate::grant::DeviceGrant::poll))
//! what it means, and writes the successor back by compare-and-swap; a poll that loses the swap
//! re-reads and asks again. That is how, of any number of racing polls on an approved code,
//! exactly one receives tokens and the rest `invalid_grant`.
//!
//! ```
//! use http::Request;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::builder()
//!     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
//!     .build();
//! let flow = DeviceFlow::builder(store).build();
//! let req = Request::post("/oauth/token")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(Full::<bytes::Bytes>::from(
//!         "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code=nope&client_id=tv-app",
//!     ))
//!     .unwrap();
//! let res = flow.token().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 400); // {"error":"invalid_grant",...}
//! # }
//! ```

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;

use crate::client_auth::authenticate;
use crate::clock::Timestamp;
use crate::codes::{AccessToken, Digest, RefreshToken};
use crate::config::{Config, Shared};
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::form::{read_form, Form};
use crate::grant::PollOutcome;
use crate::ids::{ClientId, Subject};
use crate::response::{endpoint_service, OAuthBody};
use crate::scope::{parse_requested, Scope};
use crate::store::{Client, IssuedTokens, RefreshTokenRecord, Store, TokenInfo};

pub use crate::grant::{DEVICE_CODE_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE};

/// How often a poll re-reads after losing a compare-and-swap before giving up. Every lost swap
/// means another request made progress, so this bounds a burst of that many racing polls.
const MAX_SWAP_ATTEMPTS: usize = 64;

endpoint_service!(
    /// The token endpoint service. Obtain it from [`DeviceFlow::token`](crate::DeviceFlow::token).
    TokenEndpoint,
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
    let grant_type = form.require("grant_type")?;
    if grant_type != DEVICE_CODE_GRANT_TYPE && grant_type != REFRESH_TOKEN_GRANT_TYPE {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "supported grant types: urn:ietf:params:oauth:grant-type:device_code, refresh_token",
        ));
    }
    let client = authenticate(
        &shared.store,
        &parts.headers,
        &form,
        shared.config.token_auth,
    )
    .await?;
    if grant_type == DEVICE_CODE_GRANT_TYPE {
        device_code_grant(shared, &client, &form).await
    } else {
        refresh_token_grant(shared, &client, &form).await
    }
}

async fn device_code_grant<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    form: &Form,
) -> Result<Response<OAuthBody>, OAuthError> {
    let key = Digest::of(form.require("device_code")?.as_bytes());
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let now = shared.clock.now();
        let Some(current) = shared.store.grant(&key, now).await? else {
            return Err(OAuthError::invalid_grant("unknown device_code"));
        };
        let (next, issue, answer) = match current.record.poll(client.id(), now) {
            PollOutcome::Refuse(code) => {
                if code == ErrorCode::ExpiredToken {
                    tracing::info!(client_id = client.id().as_str(), "device grant expired");
                }
                return Err(refusal(code));
            }
            PollOutcome::Pending { next: None } => return Err(pending()),
            PollOutcome::Pending { next: Some(next) } => (next, None, Err(pending())),
            PollOutcome::SlowDown { next } => (
                next,
                None,
                Err(OAuthError::new(
                    ErrorCode::SlowDown,
                    "polling too often; the interval grew by 5 seconds",
                )),
            ),
            PollOutcome::Issue {
                next,
                subject,
                scope,
            } => {
                let (issued, response) =
                    mint(&shared.config, client.id(), &subject, &scope, &scope, now)?;
                (next, Some(issued), Ok(response))
            }
        };
        let minted = issue.as_ref().map(|i| i.access.0);
        let swapped = shared
            .store
            .replace_grant(&key, current.version, next, issue, now)
            .await;
        let swapped = match (swapped, minted) {
            // The reply was lost, but the swap may have happened: if our token is stored, it
            // did, and the device gets its tokens instead of a spent code.
            (Err(e), Some(digest)) => stored(shared, &digest, now).await.ok_or(e)?,
            (result, _) => result?,
        };
        let issuing = minted.is_some();
        if swapped {
            if issuing {
                tracing::info!(
                    client_id = client.id().as_str(),
                    "device grant redeemed: tokens issued"
                );
            }
            return answer;
        }
        // Another request changed the grant first: decide again on what it left.
    }
    Err(OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "too much contention on this device_code; retry",
    ))
}

/// After a store error: `Some(true)` if the access token `digest` is stored (the write went
/// through), else `None` (report the error).
async fn stored<S: Store>(shared: &Shared<S>, digest: &Digest, now: Timestamp) -> Option<bool> {
    match shared.store.access_token(digest, now).await {
        Ok(Some(_)) => Some(true),
        _ => None,
    }
}

fn pending() -> OAuthError {
    OAuthError::new(
        ErrorCode::AuthorizationPending,
        "the end user has not yet approved the request",
    )
}

fn refusal(code: ErrorCode) -> OAuthError {
    let description = match code {
        ErrorCode::AccessDenied => "the end user denied the request",
        ErrorCode::ExpiredToken => "the device_code has expired; start over",
        _ => "the device_code is invalid, already used, or was issued to another client",
    };
    OAuthError::new(code, description)
}

async fn refresh_token_grant<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    form: &Form,
) -> Result<Response<OAuthBody>, OAuthError> {
    let key = Digest::of(form.require("refresh_token")?.as_bytes());
    let requested = form.get("scope")?.map(parse_requested).transpose()?;
    let now = shared.clock.now();
    let record = shared
        .store
        .refresh_token(&key, now)
        .await?
        .filter(|r| !r.is_expired(now) && &r.client_id == client.id())
        .ok_or_else(|| {
            OAuthError::invalid_grant(
                "the refresh_token is invalid, expired, used, or was issued to another client",
            )
        })?;
    let scope = match requested {
        Some(s) if !s.is_subset_of(&record.scope) => {
            return Err(OAuthError::invalid_scope(
                "a refresh may narrow the scope, never widen it",
            ))
        }
        Some(s) => s,
        None => record.scope.clone(),
    };
    // The access token gets the narrowed scope; the new refresh token keeps the grant's
    // (RFC 6749 6), so a later refresh can ask for the rest again.
    let (issued, response) = mint(
        &shared.config,
        client.id(),
        &record.subject,
        &scope,
        &record.scope,
        now,
    )?;
    // Take-once: of racing refreshes with the same token, exactly one rotates it.
    let minted = issued.access.0;
    let rotated = match shared.store.rotate_refresh_token(&key, issued, now).await {
        Ok(rotated) => rotated,
        // As above: a lost reply after a successful rotation still answers with the tokens.
        Err(e) => stored(shared, &minted, now).await.ok_or(e)?,
    };
    if rotated {
        tracing::info!(client_id = client.id().as_str(), "tokens refreshed");
        Ok(response)
    } else {
        Err(OAuthError::invalid_grant(
            "the refresh_token was already used",
        ))
    }
}

/// The RFC 6749 5.1 response.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

/// Mints a token pair: the records to store and the response to send once they are stored.
/// The access token carries `scope`; the refresh token carries `grant_scope`, the most any
/// later refresh may ask for.
pub(crate) fn mint(
    config: &Config,
    client_id: &ClientId,
    subject: &Subject,
    scope: &Scope,
    grant_scope: &Scope,
    now: Timestamp,
) -> Result<(IssuedTokens, Response<OAuthBody>), OAuthError> {
    let access = AccessToken::generate();
    let access_digest = access.digest();
    let info = TokenInfo {
        subject: subject.clone(),
        client_id: client_id.clone(),
        scope: scope.clone(),
        expires_at: now.saturating_add(config.access_token_lifetime),
    };
    let refresh = config.refresh_token_lifetime.map(|lifetime| {
        let token = RefreshToken::generate();
        let record = RefreshTokenRecord {
            subject: subject.clone(),
            client_id: client_id.clone(),
            scope: grant_scope.clone(),
            expires_at: now.saturating_add(lifetime),
            access_token: access_digest,
        };
        (token, record)
    });
    let body = TokenResponse {
        access_token: access.expose(),
        token_type: "Bearer",
        expires_in: config.access_token_lifetime.as_secs(),
        scope: scope.as_str(),
        refresh_token: refresh.as_ref().map(|(t, _)| t.expose()),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|_| OAuthError::new(ErrorCode::ServerError, "could not encode the response"))?;
    let issued = IssuedTokens {
        access: (access_digest, info),
        refresh: refresh.map(|(t, r)| (t.digest(), r)),
    };
    Ok((issued, json_response(StatusCode::OK, Bytes::from(json))))
}

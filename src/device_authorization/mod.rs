//! The device authorization endpoint (RFC 8628 3.1-3.2).
//!
//! The device POSTs its `client_id` (and secret, if confidential), an optional `scope` and
//! optional RFC 8707 `resource` parameters (see [`DeviceFlowBuilder::default_audience`](crate::DeviceFlowBuilder::default_audience)); the
//! endpoint creates a pending [`DeviceGrant`] and answers with the
//! `device_code` the device polls with and the `user_code` the end user enters.
//!
//! ```
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::builder()
//!     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
//!     .build();
//! let flow = DeviceFlow::builder(store).issuer("https://auth.example.com").build();
//!
//! let req = Request::post("/oauth/device_authorization")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(Full::<bytes::Bytes>::from("client_id=tv-app&scope=profile"))
//!     .unwrap();
//! let res = flow.device_authorization().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let body: serde_json::Value =
//!     serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(body["verification_uri"], "https://auth.example.com/device");
//! assert_eq!(body["interval"], 5);
//! # }
//! ```

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;

use crate::audience;
use crate::client_auth::authenticated_form;
use crate::clock::Timestamp;
use crate::config::Shared;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::grant::{DeviceGrant, RequestOrigin};
use crate::ids::ClientId;
use crate::limits::{retry_after_secs, retry_after_until, too_many, Route};
use crate::observe::{record, AuditAction, Limit};
use crate::response::{endpoint_service, OAuthBody};
use crate::scope::parse_requested;
use crate::store::{Insert, Store};

/// How many user codes to draw before giving up on a (vanishingly unlikely) run of collisions.
const USER_CODE_ATTEMPTS: usize = 8;

endpoint_service!(
    /// The device authorization endpoint service. Obtain it from
    /// [`DeviceFlow::device_authorization`](crate::DeviceFlow::device_authorization).
    DeviceAuthorization,
    handle,
    crate::observe::metric::Endpoint::DeviceAuthorization
);

/// The RFC 8628 3.2 response.
#[derive(Serialize)]
struct DeviceAuthorizationResponse<'a> {
    device_code: &'a str,
    user_code: &'a str,
    verification_uri: &'a str,
    verification_uri_complete: &'a str,
    expires_in: u64,
    interval: u64,
}

/// Counts the new grant against the optional per-client and overall caps, refusing it past
/// either with the truth about when the window ends.
async fn admit<S: Store>(
    shared: &Shared<S>,
    client_id: &ClientId,
    source: Option<IpAddr>,
    now: Timestamp,
) -> Result<(), OAuthError> {
    let config = &shared.config;
    let window = config.expires_in;
    let caps = [
        (
            config.grants_per_client,
            format!("grants:{client_id}"),
            "for this client",
            Limit::GrantsPerClient,
        ),
        (
            config.grants_overall,
            "grants:*".to_owned(),
            "on this server",
            Limit::GrantsOverall,
        ),
    ];
    for (max, key, what, limit) in caps {
        let Some(max) = max else { continue };
        let count = shared.store.try_increment(&key, max, window, now).await?;
        if !count.counted {
            tracing::warn!(
                client_id = client_id.as_str(),
                cap = what,
                "device authorization cap reached"
            );
            config.limiter.refused(limit, source, Some(client_id), None);
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                format!("too many device authorizations {what}; retry later"),
            )
            .with_status(StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(retry_after_until(count.resets_at, now)));
        }
    }
    Ok(())
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
    let config = &shared.config;
    // A flood from one source is refused before its body is read or its client looked up.
    let limiter = &config.limiter;
    let from = limiter.resolve(req.extensions(), req.headers());
    if let Err(wait) = limiter.check_rate(Route::DeviceAuthorization, from.source) {
        return Err(too_many(
            ErrorCode::TemporarilyUnavailable,
            "too many device authorizations from this address; retry later",
            retry_after_secs(wait),
        ));
    }
    let (parts, form, client) = authenticated_form(
        &shared.store,
        shared.clients(),
        &config.body,
        req,
        config.device_authorization_auth,
        limiter,
    )
    .await?;
    // Recorded so the end user can see where the request came from (RFC 8628 5.4).
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let origin = (from.ip.is_some() || user_agent.is_some())
        .then(|| RequestOrigin::new(from.ip, user_agent));

    // The scope is fixed here: later changes to the client never widen this grant.
    let scope = match form.get("scope")? {
        Some(s) => {
            let requested = parse_requested(s)?;
            if !requested.is_subset_of(client.allowed_scope()) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope not allowed for this client; allowed: {}",
                    client.allowed_scope()
                )));
            }
            // Share the client's allocation when the request names exactly one of its scopes.
            if &requested == client.default_scope() {
                client.default_scope().clone()
            } else if &requested == client.allowed_scope() {
                client.allowed_scope().clone()
            } else {
                requested
            }
        }
        None => client.default_scope().clone(),
    };

    // RFC 8707: the resources the tokens will be for, fixed here like the scope.
    let audience = audience::for_device_authorization(
        &client,
        audience::requested(&form)?,
        config.default_audience.as_ref(),
    )?;

    let now = shared.clock.now();
    admit(shared, client.id(), from.ip, now).await?;
    let device_code = config.device_codes.generate();
    let mut user_code = None;
    for _ in 0..USER_CODE_ATTEMPTS {
        let candidate = config.user_codes.generate();
        let grant = DeviceGrant::new(
            client.id().clone(),
            scope.clone(),
            candidate.digest(),
            now,
            config.expires_in,
            config.interval,
        )
        .with_origin(origin.clone())
        .with_audience(audience.clone());
        match shared
            .store
            .insert_device_grant(device_code.digest(), grant, now)
            .await?
        {
            Insert::Inserted => {
                user_code = Some(candidate);
                break;
            }
            Insert::Taken => {}
            Insert::Full { retry_after } => {
                tracing::warn!(
                    client_id = client.id().as_str(),
                    "the store holds as many pending device grants as it may"
                );
                limiter.refused(Limit::PendingGrants, from.ip, Some(client.id()), None);
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "too many pending device authorizations; retry later",
                )
                .with_retry_after(retry_after_secs(retry_after)));
            }
        }
    }
    let user_code = user_code.ok_or_else(|| {
        OAuthError::new(
            ErrorCode::ServerError,
            "could not allocate a unique user code",
        )
    })?;

    tracing::info!(
        client_id = client.id().as_str(),
        scope = scope.as_str(),
        expires_in = config.expires_in.as_secs(),
        "device grant created"
    );
    record::grant_created();
    config
        .observer
        .audit(now, from.ip, || AuditAction::DeviceAuthorized {
            client_id: client.id().clone(),
            scope: scope.clone(),
        });
    shared.refresh_pending_gauge().await;
    let shown = config.user_codes.display(&user_code);
    let complete = match &config.verification_uri_complete {
        Some(f) => f(&config.verification_uri, &shown),
        None => format!("{}?user_code={}", config.verification_uri, shown),
    };
    let body = DeviceAuthorizationResponse {
        device_code: device_code.expose(),
        user_code: &shown,
        verification_uri: &config.verification_uri,
        verification_uri_complete: &complete,
        expires_in: config.expires_in.as_secs(),
        interval: config.interval.as_secs(),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|_| OAuthError::new(ErrorCode::ServerError, "could not encode the response"))?;
    Ok(json_response(StatusCode::OK, Bytes::from(json)))
}

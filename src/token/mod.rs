//! The token endpoint: the device code grant (RFC 8628 3.4-3.5) and the refresh token grant
//! (RFC 6749 6), with single-use refresh tokens.
//!
//! A device polls with `grant_type=urn:ietf:params:oauth:grant-type:device_code`. Each poll
//! reads the grant, asks the state machine ([`DeviceGrant::poll`](crate::grant::DeviceGrant::poll))
//! what it means, and writes the successor back by compare-and-swap; a poll that loses the swap
//! re-reads and asks again. That is how, of any number of racing polls on an approved code,
//! exactly one receives tokens and the rest `invalid_grant`.
//!
//! A refresh follows the rules of [`crate::family`]: the live refresh token rotates; the one a
//! rotation just replaced, presented again within the grace period
//! ([`refresh_token_grace`](crate::DeviceFlowBuilder::refresh_token_grace)), is a retry after a
//! lost reply and gets a fresh pair; any other token of the grant is reuse (RFC 9700 4.14.2),
//! which revokes the whole grant and is logged as a security event. With an
//! [`AccountStatus`](crate::AccountStatus) configured, the end user is checked at redemption
//! and at every refresh; a refused one gets `invalid_grant` and loses every grant.
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
//! let flow = DeviceFlow::builder(store)
//!     .issuer("https://auth.example.com")
//!     .build();
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

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;

use crate::audience;
mod dpop;

use crate::client_auth::authenticate;
use crate::clock::Timestamp;
use crate::codes::{AccessToken, Digest, FamilyKey, RefreshToken, Thumbprint};
use crate::config::{Config, Shared};
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::family::{Grant, NewTokens, Presented};
use crate::form::{read_form, Form};
use crate::grant::PollOutcome;
use crate::ids::{GrantId, Subject};
use crate::limits::{retry_after_secs, too_many, Route};
use crate::observe::record::{self, Answer};
use crate::observe::{AuditAction, RevocationReason};
use crate::response::{endpoint_service, OAuthBody};
use crate::scope::parse_requested;
use crate::store::{Client, IssuedGrant, Store, TokenInfo};

pub use crate::grant::{DEVICE_CODE_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE};

/// How often a poll re-reads after losing a compare-and-swap before giving up. Every lost swap
/// means another request made progress, so this bounds a burst of that many racing polls.
const MAX_SWAP_ATTEMPTS: usize = 64;

endpoint_service!(
    /// The token endpoint service. Obtain it from [`DeviceFlow::token`](crate::DeviceFlow::token).
    Token,
    handle,
    crate::observe::metric::Endpoint::Token
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
    // A flood from one source is refused before its body is read.
    let limiter = &shared.config.limiter;
    let from = limiter.resolve(req.extensions(), req.headers());
    if let Err(wait) = limiter.check_rate(Route::Token, from.source) {
        return Err(too_many(
            ErrorCode::SlowDown,
            "too many token requests from this address; retry later",
            retry_after_secs(wait),
        ));
    }
    let (parts, form) = read_form(req, &shared.config.body).await?;
    let grant_type = form.require("grant_type")?;
    if grant_type != DEVICE_CODE_GRANT_TYPE && grant_type != REFRESH_TOKEN_GRANT_TYPE {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "supported grant types: urn:ietf:params:oauth:grant-type:device_code, refresh_token",
        ));
    }
    let poll = grant_type == DEVICE_CODE_GRANT_TYPE;
    let answer = async {
        let client = authenticate(
            &shared.store,
            shared.clients(),
            &parts,
            &form,
            shared.config.token_auth,
            limiter,
        )
        .await?;
        let pop = dpop::check(shared, &parts.method, &parts.headers, &client).await?;
        let answer = if poll {
            device_code_grant(shared, &client, &form, pop.jkt, from.ip).await
        } else {
            refresh_token_grant(shared, &client, &form, pop.jkt, from.ip).await
        };
        pop.answer(answer)
    }
    .await;
    // Every answer counts, refusals of the client or its proof included; a refresh's
    // success is counted where it is known to be a rotation or a retry.
    if poll {
        record::poll(Answer::of(&answer, OAuthError::code));
        shared.refresh_pending_gauge().await;
    } else if let Err(e) = &answer {
        record::refresh(Answer::Error(e.code()));
    }
    answer
}

async fn device_code_grant<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    form: &Form,
    jkt: Option<Thumbprint>,
    source: Option<IpAddr>,
) -> Result<Response<OAuthBody>, OAuthError> {
    let key = Digest::of(form.require("device_code")?.as_bytes());
    // The application is asked about the end user once per request, however often it loops.
    let mut checked = false;
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let now = shared.clock.now();
        let Some(current) = shared.store.device_grant(&key, now).await? else {
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
                approved_at,
            } => {
                if !checked {
                    checked = true;
                    if !account_active(shared, &subject).await? {
                        // Spend the code too: the approval must not be redeemable later.
                        let store = &shared.store;
                        store
                            .replace_device_grant(&key, current.version, next, None, now)
                            .await?;
                        return Err(refuse_subject(shared, &subject, client, None, source).await);
                    }
                }
                let family = FamilyKey::generate();
                let audience = current.record.audience.clone();
                // The access token's record first; the token string is made from it.
                let access = TokenInfo::new(
                    subject.clone(),
                    client.id().clone(),
                    scope.clone(),
                    now.saturating_add(shared.config.access_token_lifetime),
                )
                .with_grant_id(Some(family.grant_id()))
                .with_audience(audience.clone())
                .with_cnf(jkt);
                let minted = mint(&shared.config, &family, access, now)?;
                let grant = Grant {
                    id: family.grant_id(),
                    client_id: client.id().clone(),
                    subject,
                    scope,
                    audience,
                    approved_at,
                    last_used_at: now,
                    expires_at: minted.tokens.expires_at,
                    access_token: minted.tokens.access_token,
                    refresh_token: minted.tokens.refresh_token,
                    superseded: None,
                    // RFC 9449 5: a public client's refresh token is bound to the proof's key;
                    // a confidential client's is already bound to its credentials.
                    cnf: jkt.filter(|_| !client.is_confidential()),
                };
                (
                    next,
                    Some(IssuedGrant {
                        grant,
                        access: minted.access,
                    }),
                    Ok(minted.response),
                )
            }
        };
        let minted = issue.as_ref().map(|i| i.grant.access_token);
        let issued = issue
            .as_ref()
            .filter(|_| shared.config.account_status.is_some())
            .map(|i| (i.grant.subject.clone(), i.grant.id));
        // For the audit trail, once the swap is won.
        let event = issue.as_ref().map(|i| AuditAction::TokensIssued {
            client_id: i.grant.client_id.clone(),
            subject: i.grant.subject.clone(),
            grant_id: i.grant.id,
            scope: i.grant.scope.clone(),
        });
        let swapped = shared
            .store
            .replace_device_grant(&key, current.version, next, issue, now)
            .await;
        let swapped = match (swapped, minted) {
            // The reply was lost, but the swap may have happened: if our token is stored, it
            // did, and the device gets its tokens instead of a spent code.
            (Err(e), Some(digest)) => stored(shared, &digest, now).await.ok_or(e)?,
            (result, _) => result?,
        };
        if swapped {
            if let Some((subject, id)) = issued {
                // Asked again now that the grant is stored: an account disabled (and its
                // grants revoked) since the first answer must not keep this one.
                if let Ok(false) = account_active(shared, &subject).await {
                    let refused = refuse_subject(shared, &subject, client, Some(&id), source);
                    return Err(refused.await);
                }
            }
            if let Some(event) = event {
                tracing::info!(
                    client_id = client.id().as_str(),
                    "device grant redeemed: tokens issued"
                );
                record::grant_redeemed();
                shared.config.observer.audit(now, source, || event);
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

fn invalid_refresh_token() -> OAuthError {
    OAuthError::invalid_grant(
        "the refresh_token is invalid, expired, used, or was issued to another client",
    )
}

async fn refresh_token_grant<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    form: &Form,
    jkt: Option<Thumbprint>,
    source: Option<IpAddr>,
) -> Result<Response<OAuthBody>, OAuthError> {
    let presented = form.require("refresh_token")?;
    let requested = form.get("scope")?.map(parse_requested).transpose()?;
    let resources = audience::requested(form)?;
    let digest = Digest::of(presented.as_bytes());
    // The token names its grant, even when it was rotated away long ago.
    let family = RefreshToken::family_of(presented).ok_or_else(invalid_refresh_token)?;
    let id = family.grant_id();
    let mut checked = false;
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let now = shared.clock.now();
        let Some(current) = shared.store.grant(&id, now).await? else {
            return Err(invalid_refresh_token());
        };
        let grant = &current.record;
        // Another client's request learns nothing and changes nothing.
        if &grant.client_id != client.id() || grant.is_expired(now) {
            return Err(invalid_refresh_token());
        }
        // A bound refresh token is worth nothing without its key (RFC 9449 5): refused before
        // anything else, so a copy presented without the key revokes nothing either.
        if let Some(bound) = &grant.cnf {
            if !jkt.is_some_and(|k| k.ct_eq(bound)) {
                tracing::info!(
                    client_id = client.id().as_str(),
                    grant_id = %id,
                    "a DPoP-bound refresh token came without a proof of its key"
                );
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the refresh token is bound to a DPoP key: present a proof signed with it",
                ));
            }
        }
        let presentation = grant.presented(&digest, now, shared.config.refresh_grace);
        if presentation == Presented::Reused {
            return Err(reuse_detected(shared, grant, now, source).await);
        }
        if !checked {
            checked = true;
            if !account_active(shared, &grant.subject).await? {
                let refused = refuse_subject(shared, &grant.subject, client, Some(&id), source);
                return Err(refused.await);
            }
        }
        let scope = match &requested {
            Some(s) if !s.is_subset_of(&grant.scope) => {
                return Err(OAuthError::invalid_scope(
                    "a refresh may narrow the scope, never widen it",
                ))
            }
            Some(s) => s.clone(),
            None => grant.scope.clone(),
        };
        // The access token gets the narrowed scope and audience; the grant keeps the approved
        // ones (RFC 6749 6, RFC 8707 2.2), so a later refresh can ask for the rest again.
        let audience = audience::for_refresh(grant.audience.as_ref(), resources.clone())?;
        let access = TokenInfo::new(
            grant.subject.clone(),
            grant.client_id.clone(),
            scope,
            now.saturating_add(shared.config.access_token_lifetime),
        )
        .with_grant_id(Some(grant.id))
        .with_audience(audience)
        .with_cnf(jkt);
        let minted = mint(&shared.config, &family, access, now)?;
        let access = minted.access.clone();
        let Some(mut rotation) = grant.rotate(presentation, minted.tokens, now) else {
            return Err(invalid_refresh_token());
        };
        // A public client refreshing with a proof binds its refresh token from now on (RFC 9449
        // 5); a bound one stays bound to the same key (checked above).
        if !client.is_confidential() && jkt.is_some() {
            rotation.next.cnf = jkt;
        }
        let new_access = minted.tokens.access_token;
        let new_scope = access.scope.clone();
        let rotated = match shared
            .store
            .replace_grant(&id, current.version, rotation, access, now)
            .await
        {
            Ok(rotated) => rotated,
            // As above: a lost reply after a successful rotation still answers with the tokens.
            Err(e) => stored(shared, &new_access, now).await.ok_or(e)?,
        };
        if rotated {
            if presentation == Presented::Retry {
                tracing::info!(
                    client_id = client.id().as_str(),
                    grant_id = %id,
                    "refresh retried within the grace period: the unanswered pair is revoked"
                );
            } else {
                tracing::info!(client_id = client.id().as_str(), grant_id = %id, "tokens refreshed");
            }
            let retry = presentation == Presented::Retry;
            record::refresh(if retry { Answer::Retried } else { Answer::Ok });
            shared
                .config
                .observer
                .audit(now, source, || AuditAction::Refreshed {
                    client_id: grant.client_id.clone(),
                    subject: grant.subject.clone(),
                    grant_id: id,
                    scope: new_scope,
                    retry,
                });
            return Ok(minted.response);
        }
        // A racing refresh or a revocation came first: decide again on what it left.
    }
    Err(OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "too much contention on this refresh_token; retry",
    ))
}

/// A refresh token of `grant` that is no longer its to present came back: someone holds a
/// copy. Revoke the whole grant (RFC 9700 4.14.2) and refuse.
async fn reuse_detected<S: Store>(
    shared: &Shared<S>,
    grant: &Grant,
    now: Timestamp,
    source: Option<IpAddr>,
) -> OAuthError {
    tracing::warn!(
        security_event = "refresh_token_reuse",
        client_id = grant.client_id.as_str(),
        subject = grant.subject.as_str(),
        grant_id = %grant.id,
        "a rotated refresh token was presented again: the grant is revoked"
    );
    record::reuse_detected();
    shared
        .config
        .observer
        .audit(now, source, || AuditAction::RefreshTokenReuse {
            client_id: grant.client_id.clone(),
            subject: grant.subject.clone(),
            grant_id: grant.id,
        });
    match shared.store.revoke_grant(&grant.id, now).await {
        Ok(revoked) => revoked_for(shared, revoked, RevocationReason::Reuse, now, source),
        // The grant must not live on: report the store's failure, not a plain refusal.
        Err(e) => return e.into(),
    }
    invalid_refresh_token()
}

/// What the application's [`AccountStatus`](crate::AccountStatus) says of `subject`: true,
/// without asking, when none is configured. A failure to answer is the store error it is
/// (503 or 500), never a refusal.
async fn account_active<S: Store>(
    shared: &Shared<S>,
    subject: &Subject,
) -> Result<bool, OAuthError> {
    match &shared.config.account_status {
        None => Ok(true),
        Some(check) => Ok(check.is_active(subject).await?),
    }
}

/// The application refused `subject`: revoke every grant of theirs and answer `invalid_grant`.
async fn refuse_subject<S: Store>(
    shared: &Shared<S>,
    subject: &Subject,
    client: &Client,
    grant: Option<&GrantId>,
    source: Option<IpAddr>,
) -> OAuthError {
    tracing::warn!(
        security_event = "subject_refused",
        client_id = client.id().as_str(),
        subject = subject.as_str(),
        grant_id = grant.map(tracing::field::display),
        "the application refused the end user: every grant of theirs is revoked"
    );
    let now = shared.clock.now();
    match shared.store.revoke_grants_of(subject, now).await {
        Ok(revoked) => revoked_for(shared, revoked, RevocationReason::Account, now, source),
        // The grants must not live on: report the store's failure, not a plain refusal.
        Err(e) => return e.into(),
    }
    OAuthError::invalid_grant("the end user's account no longer allows this grant")
}

/// Reports the grants revoked for `reason`.
fn revoked_for<S>(
    shared: &Shared<S>,
    revoked: impl IntoIterator<Item = Grant>,
    reason: RevocationReason,
    now: Timestamp,
    source: Option<IpAddr>,
) {
    for g in revoked {
        record::revoked(reason, 1);
        shared
            .config
            .observer
            .audit(now, source, || AuditAction::Revoked {
                client_id: g.client_id,
                subject: g.subject,
                grant_id: Some(g.id),
                reason,
            });
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

/// Freshly minted tokens: their digests for the store, the access token's record, and the
/// response to send once stored.
struct Minted {
    tokens: NewTokens,
    access: TokenInfo,
    response: Response<OAuthBody>,
}

/// Mints the access token standing for `access` (random, or a JWT signed from it) and, if
/// refresh tokens are on, a refresh token of the grant whose key is `family`.
fn mint(
    config: &Config,
    family: &FamilyKey,
    access: TokenInfo,
    now: Timestamp,
) -> Result<Minted, OAuthError> {
    #[cfg(feature = "jwt")]
    let signed = match &config.jwt {
        Some(keys) => Some(keys.sign(&config.issuer, &access, now).map_err(|e| {
            tracing::error!(error = %e, "could not sign an access token");
            encode_failed()
        })?),
        None => None,
    };
    #[cfg(not(feature = "jwt"))]
    let signed: Option<String> = None;
    let random = signed.is_none().then(AccessToken::generate);
    let token = match (&signed, &random) {
        (Some(jwt), _) => jwt.as_str(),
        (None, Some(random)) => random.expose(),
        (None, None) => return Err(encode_failed()),
    };
    let refresh = config
        .refresh_token_lifetime
        .map(|lifetime| (RefreshToken::generate(family), now.saturating_add(lifetime)));
    let body = TokenResponse {
        access_token: token,
        // RFC 9449 5: `DPoP` tells the client its token is bound and must go with proofs.
        token_type: if access.cnf.is_some() {
            "DPoP"
        } else {
            "Bearer"
        },
        expires_in: config.access_token_lifetime.as_secs(),
        scope: access.scope.as_str(),
        refresh_token: refresh.as_ref().map(|(t, _)| t.expose()),
    };
    let json = serde_json::to_vec(&body).map_err(|_| encode_failed())?;
    Ok(Minted {
        tokens: NewTokens {
            access_token: Digest::of(token.as_bytes()),
            refresh_token: refresh.as_ref().map(|(t, _)| t.digest()),
            // The grant lasts as long as its refresh token, or its access token without one.
            expires_at: refresh.map_or(access.expires_at, |(_, at)| at),
        },
        access,
        response: json_response(StatusCode::OK, Bytes::from(json)),
    })
}

fn encode_failed() -> OAuthError {
    OAuthError::new(ErrorCode::ServerError, "could not encode the response")
}

//! The verification step: the end user enters (or confirms) a user code and approves or denies.
//!
//! `GET` shows a form for the code, pre-filled from `?user_code=` (the target of
//! `verification_uri_complete`); it never looks the code up and changes nothing, so no link or
//! image tag on another site can spend anyone's budget. `POST` with `user_code` shows which
//! client asks for which scopes (RFC 8628 5.4); `POST` with `user_code` and
//! `decision=approve|deny` records the decision in one step. Who the end user is comes from
//! the application's own login, through an [`EndUserResolver`]; without one the answer is 401.
//!
//! Guarding the code space (RFC 8628 5.1): only a POST looks a code up, and each lookup first
//! reserves a place in the budgets of the end user and of the source address, atomically in
//! the store so every instance shares them, and gives it back for a right code
//! ([`GuessingLimits`](crate::limits::GuessingLimits)): an end user with no wrong code is
//! never refused, and past a budget the answer is 429 with `Retry-After`. Failed sign-ins
//! (for a resolver that reports them, as [`BasicLogin`] does) are limited per (account,
//! source) and per source, and POSTs per source. A cross-site POST (`Sec-Fetch-Site` other
//! than `same-origin`/`none`, or an `Origin` other than the verification URI's) is refused, so
//! another site cannot make a signed-in browser approve an attacker's code, and the page may
//! not be framed.
//!
//! A signed-out visitor gets a 401 (with the resolver's challenge, such as HTTP Basic's), or,
//! with [`SignIn::redirect`], a browser is sent to the application's login page with a return
//! address back to the code it was entering: always a same-origin path built from the
//! verification path and the code ([`return_address`]), never a URL from the request.
//!
//! Responses are HTML from a replaceable [`VerificationPage`] (every step has its own
//! [`PageView`]; the page may set its own status, headers and [`ContentSecurityPolicy`],
//! under a fresh nonce per response), or JSON for a client that accepts `application/json`
//! and not `text/html`. Every HTML answer carries `Cache-Control: no-store`,
//! `X-Frame-Options: DENY`, `frame-ancestors 'none'`, `X-Content-Type-Options: nosniff` and a
//! `Referrer-Policy` that keeps the code in the URL from other sites.
//!
//! ```
//! use http::Request;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_device_flow::{DeviceFlow, MemoryStore, Subject};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The application's login decides who the end user is; here, a fixed user.
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .end_user(|_: &http::request::Parts| Some(Subject::new("alice")))
//!     .build();
//! // GET only pre-fills the form...
//! let page = Request::get("/device?user_code=WDJB-MJHT").body(Full::<bytes::Bytes>::default()).unwrap();
//! let res = flow.verification().oneshot(page).await.unwrap();
//! assert_eq!(res.status(), 200);
//! // ...and submitting it looks the code up.
//! let post = Request::post("/device")
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(Full::<bytes::Bytes>::from("user_code=WDJB-MJHT"))
//!     .unwrap();
//! let res = flow.verification().oneshot(post).await.unwrap();
//! assert_eq!(res.status(), 400); // no such code was issued
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

pub use crate::end_user::{BasicLogin, EndUserResolver, FirstOf, FromExtensions};
pub use crate::page::{
    escape_html, layout, ContentSecurityPolicy, DefaultPage, Message, Page, PageError, PageRequest,
    PageView, Texts, VerificationPage, STYLESHEET,
};
pub use crate::sign_in::{local_path, return_address, SignIn, RETURN_TO};

use std::net::IpAddr;

use crate::browser;
use crate::codes::Digest;
use crate::config::Shared;
use crate::cross_site::{self, Origin};
use crate::form::{check_form_post, read_body, Form};
use crate::grant::{DecideError, Decision, DeviceGrant, GrantStatus};
use crate::limits::{
    reserve_attempt, reserve_guess, retry_after_secs, retry_after_until, AuthKind, Route,
};
use crate::observe::metric::Endpoint;
use crate::observe::record::{self, Timer};
use crate::observe::{AuditAction, Limit};
use crate::page::new_nonce;
use crate::response::{OAuthBody, ResponseFuture};
use crate::sign_in::login_location;
use crate::store::{Store, Subject, Versioned};

/// How often a decision re-reads after losing a compare-and-swap to a concurrent poll.
const MAX_SWAP_ATTEMPTS: usize = 16;

/// The verification page service. Obtain it from
/// [`DeviceFlow::verification`](crate::DeviceFlow::verification).
pub struct Verification<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Verification<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Verification { shared }
    }
}

impl<S> Clone for Verification<S> {
    fn clone(&self) -> Self {
        Verification {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Verification<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verification").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Verification<S>
where
    S: Store,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<OAuthBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let shared = self.shared.clone();
        let span = tracing::info_span!("oauth", endpoint = "Verification");
        ResponseFuture::new(
            async move {
                let json = wants_json(req.headers());
                // Kept for the page (locale, the request it answers); the request is consumed.
                let (method, uri, headers) = (
                    req.method().clone(),
                    req.uri().clone(),
                    req.headers().clone(),
                );
                let timer = Timer::start();
                let outcome = handle(&shared, req).await;
                let res = render(&shared, outcome, json, (&method, &uri, &headers));
                timer.request(Endpoint::Verification);
                res
            }
            .instrument(span),
        )
    }
}

/// What the service answers, before rendering as HTML or JSON.
enum Outcome {
    EnterCode {
        prefill: String,
        error: Option<CodeError>,
        end_user: Option<Subject>,
    },
    Confirm {
        user_code: String,
        client_id: String,
        client_name: Option<String>,
        grant: DeviceGrant,
        end_user: Subject,
    },
    Done {
        approved: bool,
    },
    /// A signed-out browser, sent to the login page (303 to `location`).
    SignIn {
        location: HeaderValue,
    },
    Problem(Problem),
}

/// Why a typed code was refused: the form is shown again with the message.
#[derive(Clone, Copy)]
struct CodeError {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    page: PageError,
}

impl From<(StatusCode, &'static str, &'static str)> for CodeError {
    fn from((status, code, message): (StatusCode, &'static str, &'static str)) -> Self {
        CodeError {
            status,
            code,
            message,
            page: PageError::classify(status, code),
        }
    }
}

/// A refusal: status, JSON error code, message for the end user.
struct Problem {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    retry_after: Option<u64>,
    challenge: Option<HeaderValue>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Problem {
            status,
            code,
            message,
            retry_after: None,
            challenge: None,
        }
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        let e = crate::error::OAuthError::from(e);
        let retry_after = (e.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Problem {
            retry_after,
            ..Problem::new(
                e.status(),
                e.code().as_str(),
                "The service is temporarily unavailable. Please try again.",
            )
        }
    }
}

const UNKNOWN_CODE: &str = "That code is not valid. Check the code on your device and try again.";

async fn handle<S, B>(shared: &Shared<S>, req: Request<B>) -> Outcome
where
    S: Store,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match handle_inner(shared, req).await {
        Ok(o) => o,
        Err(p) => Outcome::Problem(p),
    }
}

async fn handle_inner<S, B>(shared: &Shared<S>, req: Request<B>) -> Result<Outcome, Problem>
where
    S: Store,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = &shared.config;
    match *req.method() {
        Method::GET | Method::HEAD => {
            // Only pre-fill: a lookup here could be neither counted (any page can make a
            // signed-in browser GET this) nor left uncounted (a free guessing oracle).
            let (parts, _) = req.into_parts();
            let query = parts.uri.query().unwrap_or("");
            let prefill = Form::parse(query.as_bytes())
                .ok()
                .and_then(|f| f.get("user_code").ok().flatten().map(str::to_owned))
                .unwrap_or_default();
            let end_user = match signed_in_for_page(shared, &parts).await? {
                Some(user) => Some(user),
                None => {
                    if let Some(location) = login_redirect(shared, &parts, Some(&prefill)) {
                        return Ok(Outcome::SignIn { location });
                    }
                    None
                }
            };
            Ok(Outcome::EnterCode {
                prefill,
                error: None,
                end_user,
            })
        }
        Method::POST => {
            if check_form_post(req.method(), req.headers()).is_err() {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_request",
                    "The form must be sent as application/x-www-form-urlencoded.",
                ));
            }
            let (parts, body) = req.into_parts();
            // Before sign-in: a cross-site POST must not even prompt for credentials.
            let own = Origin::of(&config.verification_uri);
            if let Err(why) = cross_site::check(&parts.headers, own.as_ref()) {
                tracing::warn!(?why, "cross-site POST to the verification page refused");
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "This form can only be submitted from this site.",
                ));
            }
            let limiter = &config.limiter;
            let from = limiter.resolve(&parts.extensions, &parts.headers);
            let source = from.source;
            if let Err(wait) = limiter.check_rate(Route::Verification, source) {
                return Err(slow_down(
                    retry_after_secs(wait),
                    "Too many requests from your network. Wait a moment and try again.",
                ));
            }
            let user = match sign_in(shared, &parts, source).await {
                Ok(user) => user,
                Err(p) if p.status == StatusCode::UNAUTHORIZED => {
                    return signed_out_post(shared, &parts, body, p).await
                }
                Err(p) => return Err(p),
            };
            let bytes = read_body(&parts.headers, body, &config.body)
                .await
                .map_err(|e| {
                    Problem::new(e.status(), "invalid_request", "The form could not be read.")
                })?;
            let form = Form::parse(&bytes).map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The form could not be read.",
                )
            })?;
            let field = |name| {
                form.get(name).map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "A form field was repeated.",
                    )
                })
            };
            let Some(typed) = field("user_code")?.map(str::to_owned) else {
                return Ok(Outcome::EnterCode {
                    prefill: String::new(),
                    error: Some(CodeError {
                        status: StatusCode::BAD_REQUEST,
                        code: "invalid_request",
                        message: "Enter the code shown on your device.",
                        page: PageError::MissingCode,
                    }),
                    end_user: Some(user),
                });
            };
            let decision = match field("decision")? {
                None => None,
                Some("approve") => Some(Decision::Approve(user.clone())),
                Some("deny") => Some(Decision::Deny),
                Some(_) => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "The decision must be approve or deny.",
                    ))
                }
            };
            let (key, grant) = match lookup(shared, &user, source, &typed).await {
                Ok(found) => found,
                Err(Refusal::Code(status, code, message)) => {
                    return Ok(Outcome::EnterCode {
                        prefill: typed,
                        error: Some((status, code, message).into()),
                        end_user: Some(user),
                    })
                }
                Err(Refusal::Problem(p)) => return Err(p),
            };
            match decision {
                None => confirm(shared, &typed, grant.record, user).await,
                Some(decision) => decide(shared, key, grant, decision, &user, from.ip).await,
            }
        }
        _ => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Use GET or POST.",
        )),
    }
}

enum Refusal {
    /// A problem with the code itself: show the form again with the message.
    Code(StatusCode, &'static str, &'static str),
    Problem(Problem),
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Problem(e.into())
    }
}

/// A 429 with the truth about when to come back.
fn slow_down(retry_after: u64, message: &'static str) -> Problem {
    Problem {
        retry_after: Some(retry_after),
        ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", message)
    }
}

/// Who the end user is. When the resolver says which account the request tries (a password
/// login), the attempt first reserves a place in the failure budgets of (account, source) and
/// of the source, so a guessed password is refused before it is checked once they are spent.
async fn sign_in<S: Store>(
    shared: &Shared<S>,
    parts: &Parts,
    source: Option<IpAddr>,
) -> Result<Subject, Problem> {
    let resolver = &shared.config.end_user;
    let unauthorized = || Problem {
        challenge: resolver.challenge(),
        ..Problem::new(
            StatusCode::UNAUTHORIZED,
            "login_required",
            "Sign in to connect a device.",
        )
    };
    let Some(account) = resolver.login_attempt(parts) else {
        return resolver.end_user(parts).ok_or_else(unauthorized);
    };
    let store = &shared.store;
    let now = shared.clock.now();
    let limits = &shared.config.limiter.limits.failed_auth;
    let reservation =
        match reserve_attempt(store, limits, AuthKind::EndUser, &account, source, now).await? {
            Ok(r) => r,
            Err(spent) => {
                tracing::warn!("end-user sign-in failure limit reached");
                let limiter = &shared.config.limiter;
                limiter.refused(Limit::EndUserSignIn, source, None, None);
                return Err(slow_down(
                    retry_after_until(spent.until, now),
                    "Too many failed sign-ins. Wait a while before trying again.",
                ));
            }
        };
    match resolver.end_user(parts) {
        Some(user) => {
            reservation.succeeded(store, now).await?;
            Ok(user)
        }
        None => {
            reservation.failed(store, now).await?;
            tracing::info!("end-user sign-in failed");
            Err(unauthorized())
        }
    }
}

/// Finds the pending grant behind a typed user code, counting wrong codes against the limits.
///
/// Each attempt first reserves its place in the budgets, atomically in the store, and a right
/// code gives the places back: so no burst of concurrent attempts gets more lookups than the
/// budgets allow, and a user who has not failed is never refused.
async fn lookup<S: Store>(
    shared: &Shared<S>,
    user: &Subject,
    source: Option<IpAddr>,
    typed: &str,
) -> Result<(Digest, Versioned<DeviceGrant>), Refusal> {
    let config = &shared.config;
    let store = &shared.store;
    let now = shared.clock.now();
    let limits = &config.limiter.limits.guessing;
    let reservation = match reserve_guess(store, limits, user, source, now).await? {
        Ok(r) => r,
        Err(spent) => {
            tracing::warn!(subject = user.as_str(), "user-code guessing limit reached");
            let limiter = &config.limiter;
            limiter.refused(Limit::UserCodeGuessing, source, None, Some(user));
            return Err(Refusal::Problem(slow_down(
                retry_after_until(spent.until, now),
                "Too many wrong codes. Wait a while before trying again.",
            )));
        }
    };
    let found = match config.user_codes.normalize(typed) {
        Some(code) => store.device_grant_by_user_code(&code.digest(), now).await,
        None => Ok(None),
    };
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            // A lookup that failed was no guess: an outage must not lock end users out.
            let mut reservation = reservation;
            reservation.give_back_quietly(store, now).await;
            return Err(e.into());
        }
    };
    let Some((key, grant)) = found else {
        reservation.failed(store, now).await?;
        tracing::warn!(subject = user.as_str(), "wrong user code entered");
        record::wrong_user_code();
        config
            .observer
            .audit(now, source, || AuditAction::WrongUserCode {
                subject: user.clone(),
            });
        return Err(Refusal::Code(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            UNKNOWN_CODE,
        ));
    };
    // A code that exists is no guess: give the places back.
    reservation.succeeded(store, now).await?;
    if grant.record.is_expired(now) {
        return Err(Refusal::Code(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "That code has expired. Start again on your device to get a new one.",
        ));
    }
    if grant.record.status != GrantStatus::Pending {
        return Err(Refusal::Code(
            StatusCode::CONFLICT,
            "invalid_grant",
            "That code has already been used.",
        ));
    }
    Ok((key, grant))
}

async fn confirm<S: Store>(
    shared: &Shared<S>,
    typed: &str,
    grant: DeviceGrant,
    end_user: Subject,
) -> Result<Outcome, Problem> {
    let codes = &shared.config.user_codes;
    let user_code = codes
        .normalize(typed)
        .map(|c| codes.display(&c))
        .unwrap_or_default();
    let client = shared.clients().client(grant.client_id.as_str()).await?;
    Ok(Outcome::Confirm {
        user_code,
        client_id: grant.client_id.as_str().to_owned(),
        client_name: client.and_then(|c| c.name().map(str::to_owned)),
        grant,
        end_user,
    })
}

async fn decide<S: Store>(
    shared: &Shared<S>,
    key: Digest,
    mut current: Versioned<DeviceGrant>,
    decision: Decision,
    subject: &Subject,
    source: Option<IpAddr>,
) -> Result<Outcome, Problem> {
    let approved = matches!(decision, Decision::Approve(_));
    let subject = subject.clone();
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let now = shared.clock.now();
        let next = match current.record.decide(decision.clone(), now) {
            Ok(next) => next,
            Err(DecideError::Expired) => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "expired_token",
                    "That code has expired. Start again on your device to get a new one.",
                ))
            }
            Err(DecideError::AlreadyDecided) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "invalid_grant",
                    "That code has already been used.",
                ))
            }
        };
        if shared
            .store
            .replace_device_grant(&key, current.version, next, None, now)
            .await?
        {
            tracing::info!(
                client_id = current.record.client_id.as_str(),
                subject = subject.as_str(),
                scope = current.record.scope.as_str(),
                "device grant {}",
                if approved { "approved" } else { "denied" }
            );
            let grant = &current.record;
            let client_id = grant.client_id.clone();
            if approved {
                record::grant_approved();
                let scope = grant.scope.clone();
                let action = || AuditAction::Approved {
                    client_id,
                    subject,
                    scope,
                };
                shared.config.observer.audit(now, source, action);
            } else {
                record::grant_denied();
                let action = || AuditAction::Denied { client_id, subject };
                shared.config.observer.audit(now, source, action);
            }
            shared.refresh_pending_gauge().await;
            return Ok(Outcome::Done { approved });
        }
        // A poll recorded its time in between; decide again on the fresh record.
        current = shared
            .store
            .device_grant(&key, now)
            .await?
            .ok_or(Problem::new(
                StatusCode::BAD_REQUEST,
                "expired_token",
                "That code has expired. Start again on your device to get a new one.",
            ))?;
    }
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "The service is busy. Please try again.",
    ))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// True for a request that takes HTML (a browser's navigation or form post).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|a| a.contains("text/html"))
}

/// Who is signed in, for a GET. The resolver is asked directly only when it checks no
/// password (a session); a password login is asked only under [`SignIn::Redirect`], through
/// the budgeted [`sign_in`], so a GET is never a free password oracle.
async fn signed_in_for_page<S: Store>(
    shared: &Shared<S>,
    parts: &Parts,
) -> Result<Option<Subject>, Problem> {
    let config = &shared.config;
    let resolver = &config.end_user;
    if resolver.login_attempt(parts).is_none() {
        return Ok(resolver.end_user(parts));
    }
    if !matches!(config.sign_in, SignIn::Redirect { .. }) {
        return Ok(None);
    }
    let source = config
        .limiter
        .resolve(&parts.extensions, &parts.headers)
        .source;
    match sign_in(shared, parts, source).await {
        Ok(user) => Ok(Some(user)),
        Err(p) if p.status == StatusCode::UNAUTHORIZED => Ok(None),
        Err(p) => Err(p),
    }
}

/// Where to send a signed-out browser under [`SignIn::Redirect`]: the login page, with the
/// return address built from the verification path and `code`. `None` for the 401.
fn login_redirect<S>(shared: &Shared<S>, parts: &Parts, code: Option<&str>) -> Option<HeaderValue> {
    let config = &shared.config;
    let SignIn::Redirect {
        login_url,
        return_param,
    } = &config.sign_in
    else {
        return None;
    };
    if wants_json(&parts.headers) || !accepts_html(&parts.headers) {
        return None;
    }
    let return_to = return_address(&config.paths.verification, code, &*config.user_codes);
    login_location(login_url, return_param, &return_to)
}

/// A POST from a signed-out visitor: the 401, or for a browser under [`SignIn::Redirect`] the
/// login page, keeping the code it typed (read within the body limits).
async fn signed_out_post<S, B>(
    shared: &Shared<S>,
    parts: &Parts,
    body: B,
    unauthorized: Problem,
) -> Result<Outcome, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if login_redirect(shared, parts, None).is_none() {
        return Err(unauthorized);
    }
    let code = match read_body(&parts.headers, body, &shared.config.body).await {
        Ok(bytes) => Form::parse(&bytes)
            .ok()
            .and_then(|f| f.get("user_code").ok().flatten().map(str::to_owned)),
        Err(_) => None,
    };
    match login_redirect(shared, parts, code.as_deref()) {
        Some(location) => Ok(Outcome::SignIn { location }),
        None => Err(unauthorized),
    }
}

/// What the service answers, ready for rendering.
struct Answer<'a> {
    status: StatusCode,
    json: serde_json::Value,
    view: PageView<'a>,
    retry_after: Option<u64>,
    challenge: Option<HeaderValue>,
    location: Option<HeaderValue>,
}

fn render<S>(
    shared: &Shared<S>,
    outcome: Outcome,
    json: bool,
    (method, uri, headers): (&Method, &http::Uri, &HeaderMap),
) -> Response<OAuthBody> {
    let config = &shared.config;
    let action = config.paths.verification.as_str();
    let now = shared.clock.now();
    let location_text;
    let answer = match &outcome {
        Outcome::EnterCode {
            prefill,
            error,
            end_user,
        } => Answer {
            status: error.map_or(StatusCode::OK, |e| e.status),
            json: match error {
                Some(e) => serde_json::json!({"error": e.code, "error_description": e.message}),
                None => serde_json::json!({"status": "enter_code"}),
            },
            view: PageView::EnterCode {
                action,
                prefill,
                error: error.map(|e| e.page),
                end_user: end_user.as_ref().map(Subject::as_str),
            },
            retry_after: None,
            challenge: None,
            location: None,
        },
        Outcome::Confirm {
            user_code,
            client_id,
            client_name,
            grant,
            end_user,
        } => Answer {
            status: StatusCode::OK,
            json: serde_json::json!({
                "status": "pending",
                "user_code": user_code,
                "client_id": client_id,
                "client_name": client_name,
                "scope": grant.scope.as_str(),
            }),
            view: PageView::Confirm {
                action,
                user_code,
                client_id,
                client_name: client_name.as_deref(),
                scope: &grant.scope,
                end_user: end_user.as_str(),
                requested_at: grant.created_at,
                expires_at: grant.expires_at,
                now,
                origin: grant.origin.as_deref(),
            },
            retry_after: None,
            challenge: None,
            location: None,
        },
        Outcome::Done { approved } => Answer {
            status: StatusCode::OK,
            json: serde_json::json!({"status": if *approved { "approved" } else { "denied" }}),
            view: PageView::Done {
                approved: *approved,
                action,
            },
            retry_after: None,
            challenge: None,
            location: None,
        },
        Outcome::SignIn { location } => {
            location_text = location.to_str().unwrap_or(action).to_owned();
            // Only a browser is redirected; were a JSON client here, it gets the 401.
            Answer {
                status: if json {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::SEE_OTHER
                },
                json: serde_json::json!({
                    "error": "login_required",
                    "error_description": "Sign in to connect a device.",
                }),
                view: PageView::SignIn {
                    login_url: &location_text,
                },
                retry_after: None,
                challenge: None,
                location: (!json).then(|| location.clone()),
            }
        }
        Outcome::Problem(p) => Answer {
            status: p.status,
            json: serde_json::json!({"error": p.code, "error_description": p.message}),
            view: PageView::Problem {
                error: PageError::classify(p.status, p.code),
                action,
                retry_after: p.retry_after,
            },
            retry_after: p.retry_after,
            challenge: p.challenge.clone(),
            location: None,
        },
    };
    let nonce = new_nonce();
    let mut res = if json {
        let mut res = Response::new(Full::new(Bytes::from(answer.json.to_string())));
        *res.status_mut() = answer.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            crate::page::ContentSecurityPolicy::strict(&nonce).header_value(),
        );
        res
    } else {
        let request = PageRequest::new(method, uri, headers, answer.status, &nonce);
        let page = config.page.render(&answer.view, &request);
        let mut csp = page.csp;
        if let SignIn::Redirect { login_url, .. } = &config.sign_in {
            // A form posted here may be redirected to the login page: allow its origin.
            if let Some(origin) = absolute_origin(login_url) {
                csp = csp.allow("form-action", &origin);
            }
        }
        let mut res = Response::new(Full::new(Bytes::from(page.body)));
        *res.status_mut() = page.status.unwrap_or(answer.status);
        *res.headers_mut() = page.headers;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_SECURITY_POLICY, csp.header_value());
        res
    };
    let h = res.headers_mut();
    // No caching, no sniffing, and the approve button must not be clickjacked.
    browser::protect(h);
    if let Some(secs) = answer.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = answer.challenge {
        h.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(location) = answer.location {
        h.insert(header::LOCATION, location);
    }
    if answer.status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    }
    res
}

/// `scheme://host[:port]` of an absolute URL, for a CSP source.
fn absolute_origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

//! The verification step: the end user enters (or confirms) a user code and approves or denies.
//!
//! `GET` shows a form for the code, pre-filled from `?user_code=` (the target of
//! `verification_uri_complete`); for a signed-in end user with a valid pre-filled code it goes
//! straight to the confirmation. `POST` with `user_code` shows which client asks for which
//! scopes (RFC 8628 5.4); `POST` with `user_code` and `decision=approve|deny` records the
//! decision in one step. Who the end user is comes from the application's own login, through
//! an [`EndUserResolver`]; without one the answer is 401.
//!
//! Guarding the code space (RFC 8628 5.1): every wrong code counts against the end user and
//! against an overall budget, both kept in the store so every instance shares them; past either
//! limit the answer is 429 with `Retry-After`. A cross-site POST (by `Sec-Fetch-Site` or
//! `Origin`) is refused, so another site cannot make a signed-in browser approve an attacker's
//! code, and the page may not be framed.
//!
//! Responses are HTML from a replaceable [`VerificationPage`], or JSON for a client that
//! accepts `application/json` and not `text/html`.
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
//!     .end_user(|_: &http::request::Parts| Some(Subject::new("alice")))
//!     .build();
//! let page = Request::get("/device?user_code=WDJB-MJHT").body(Full::<bytes::Bytes>::default()).unwrap();
//! let res = flow.verification().oneshot(page).await.unwrap();
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

pub use crate::end_user::{BasicLogin, EndUserResolver, FromExtensions};
pub use crate::page::{escape_html, DefaultPage, PageView, VerificationPage};

use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::config::{AttemptLimit, Shared};
use crate::form::{check_form_post, read_body, Form};
use crate::grant::{DecideError, Decision, DeviceGrant, GrantStatus};
use crate::response::{OAuthBody, ResponseFuture};
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
                let outcome = handle(&shared, req).await;
                render(&shared, outcome, json)
            }
            .instrument(span),
        )
    }
}

/// What the service answers, before rendering as HTML or JSON.
enum Outcome {
    EnterCode {
        prefill: String,
        error: Option<(StatusCode, &'static str, &'static str)>,
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
    Problem(Problem),
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
            let (parts, _) = req.into_parts();
            let query = parts.uri.query().unwrap_or("");
            let prefill = Form::parse(query.as_bytes())
                .ok()
                .and_then(|f| f.get("user_code").ok().flatten().map(str::to_owned))
                .unwrap_or_default();
            // Look the code up only for a signed-in end user: anonymous lookups could not be
            // counted against anyone, and would make the page a guessing oracle.
            match config.end_user.end_user(&parts) {
                Some(user) if !prefill.is_empty() => match lookup(shared, &user, &prefill).await {
                    Ok((_, grant)) => confirm(shared, &prefill, grant.record, user).await,
                    Err(Refusal::Code(status, code, message)) => Ok(Outcome::EnterCode {
                        prefill,
                        error: Some((status, code, message)),
                    }),
                    Err(Refusal::Problem(p)) => Err(p),
                },
                _ => Ok(Outcome::EnterCode {
                    prefill,
                    error: None,
                }),
            }
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
            if is_cross_site(&parts) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "This form can only be submitted from this site.",
                ));
            }
            let user = config.end_user.end_user(&parts).ok_or_else(|| Problem {
                challenge: config.end_user.challenge(),
                ..Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "login_required",
                    "Sign in to connect a device.",
                )
            })?;
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
                    error: Some((
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Enter the code shown on your device.",
                    )),
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
            let (key, grant) = match lookup(shared, &user, &typed).await {
                Ok(found) => found,
                Err(Refusal::Code(status, code, message)) => {
                    return Ok(Outcome::EnterCode {
                        prefill: typed,
                        error: Some((status, code, message)),
                    })
                }
                Err(Refusal::Problem(p)) => return Err(p),
            };
            match decision {
                None => confirm(shared, &typed, grant.record, user).await,
                Some(decision) => decide(shared, key, grant, decision, &user).await,
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

fn failure_keys(user: &Subject) -> (String, &'static str) {
    (
        format!("user-code-failures:{}", user.as_str()),
        "user-code-failures:*",
    )
}

fn too_many(limit: &AttemptLimit, resets_at: Timestamp, now: Timestamp) -> Refusal {
    tracing::warn!(
        max = limit.max,
        window_secs = limit.window.as_secs(),
        "user-code guessing limit reached"
    );
    Refusal::Problem(Problem {
        retry_after: Some(resets_at.saturating_duration_since(now).as_secs().max(1)),
        ..Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "Too many wrong codes. Wait a while before trying again.",
        )
    })
}

/// Gives back the places an attempt reserved, after a store failure. Best effort: the store is
/// failing, and the failure it already reported is the one to answer with.
async fn give_back<S: Store>(store: &S, taken: &[(&str, &AttemptLimit)], now: Timestamp) {
    for (key, _) in taken {
        if let Err(e) = store.decrement(key, now).await {
            tracing::warn!(error = %e, "could not give back a reserved attempt");
        }
    }
}

/// Finds the pending grant behind a typed user code, counting wrong codes against the limits.
///
/// Each attempt first reserves a place in every budget it counts against, atomically in the
/// store, and a right code gives the places back: so no burst of concurrent attempts gets more
/// lookups than the budgets allow.
async fn lookup<S: Store>(
    shared: &Shared<S>,
    user: &Subject,
    typed: &str,
) -> Result<(Digest, Versioned<DeviceGrant>), Refusal> {
    let config = &shared.config;
    let store = &shared.store;
    let now = shared.clock.now();
    let (user_key, overall_key) = failure_keys(user);
    let mut budgets: Vec<(&str, &AttemptLimit)> = vec![(&user_key, &config.per_user_attempts)];
    if let Some(overall) = &config.overall_attempts {
        budgets.push((overall_key, overall));
    }
    for (i, (key, limit)) in budgets.iter().enumerate() {
        let count = match store.try_increment(key, limit.max, limit.window, now).await {
            Ok(count) => count,
            Err(e) => {
                give_back(store, &budgets[..i], now).await;
                return Err(e.into());
            }
        };
        if !count.counted {
            for (taken, _) in &budgets[..i] {
                store.decrement(taken, now).await?;
            }
            return Err(too_many(limit, count.resets_at, now));
        }
    }
    let found = match config.user_codes.normalize(typed) {
        Some(code) => match store.device_grant_by_user_code(&code.digest(), now).await {
            Ok(found) => found,
            Err(e) => {
                // A lookup that failed was no guess: an outage must not lock end users out.
                give_back(store, &budgets, now).await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let Some((key, grant)) = found else {
        tracing::warn!(subject = user.as_str(), "wrong user code entered");
        return Err(Refusal::Code(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            UNKNOWN_CODE,
        ));
    };
    // A code that exists is no guess: give the places back.
    for (key, _) in &budgets {
        store.decrement(key, now).await?;
    }
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
    let client = shared.store.client(grant.client_id.as_str()).await?;
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

/// True for a POST that a browser says came from another site.
fn is_cross_site(parts: &Parts) -> bool {
    let h = &parts.headers;
    if let Some(site) = h.get("sec-fetch-site") {
        return site.as_bytes() == b"cross-site";
    }
    // Older browsers: compare Origin's host with Host. No Origin (curl, devices) is fine.
    let (Some(origin), Some(host)) = (h.get(header::ORIGIN), h.get(header::HOST)) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host.to_str().unwrap_or(""))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

fn render<S>(shared: &Shared<S>, outcome: Outcome, json: bool) -> Response<OAuthBody> {
    let config = &shared.config;
    let action = config.paths.verification.as_str();
    let (status, view_json, html, retry_after, challenge) = match outcome {
        Outcome::EnterCode { prefill, error } => {
            let status = error.map_or(StatusCode::OK, |e| e.0);
            let view = serde_json::json!(match error {
                Some((_, code, message)) =>
                    serde_json::json!({"error": code, "error_description": message}),
                None => serde_json::json!({"status": "enter_code"}),
            });
            let html = config.page.render(&PageView::EnterCode {
                action,
                prefill: &prefill,
                error: error.map(|e| e.2),
            });
            (status, view, html, None, None)
        }
        Outcome::Confirm {
            user_code,
            client_id,
            client_name,
            grant,
            end_user,
        } => {
            let view = serde_json::json!({
                "status": "pending",
                "user_code": user_code,
                "client_id": client_id,
                "client_name": client_name,
                "scope": grant.scope.as_str(),
            });
            let html = config.page.render(&PageView::Confirm {
                action,
                user_code: &user_code,
                client_id: &client_id,
                client_name: client_name.as_deref(),
                scope: &grant.scope,
                end_user: end_user.as_str(),
            });
            (StatusCode::OK, view, html, None, None)
        }
        Outcome::Done { approved } => (
            StatusCode::OK,
            serde_json::json!({"status": if approved { "approved" } else { "denied" }}),
            config.page.render(&PageView::Done { approved }),
            None,
            None,
        ),
        Outcome::Problem(p) => (
            p.status,
            serde_json::json!({"error": p.code, "error_description": p.message}),
            config
                .page
                .render(&PageView::Problem { message: p.message }),
            p.retry_after,
            p.challenge,
        ),
    };
    let (body, content_type) = if json {
        (Bytes::from(view_json.to_string()), "application/json")
    } else {
        (Bytes::from(html), "text/html; charset=utf-8")
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The approve button must not be clickjacked.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = challenge {
        h.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    }
    res
}

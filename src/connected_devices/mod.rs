//! Connected devices: the end user sees every device they approved and signs any of them out.
//!
//! A ready service for the application to mount behind its own login, which it reaches through
//! the same [`EndUserResolver`](crate::EndUserResolver) as the verification page:
//!
//! - `GET` lists the signed-in end user's active grants, one per approved device: as JSON
//!   `{"devices": [{"grant_id", "client_id", "client_name", "scope", "approved_at",
//!   "last_used_at"}, ...]}` (times in integer Unix seconds, most recently used first), or as
//!   an HTML page with a "Sign out" button per device when the request's `Accept` prefers
//!   `text/html`.
//! - `POST` with the form field `grant_id` revokes that grant: its refresh token and its access
//!   token stop working at once, on every instance. `all=true` instead revokes every grant of
//!   the end user. The answer is 200 (JSON `{"revoked": [grant ids]}`, or the page again), 404
//!   for a grant that is not the signed-in end user's (someone else's, already revoked, or
//!   unknown: they are not told apart), 400 for a malformed form.
//!
//! Without a signed-in end user the answer is 401 with the resolver's challenge (or, under
//! [`SignIn::Redirect`], a browser is sent to the login
//! page, which brings it back to the list); failed sign-ins count against the same budgets as
//! on the verification page
//! ([`FailedAuthLimits`](crate::limits::FailedAuthLimits)). A cross-site POST is refused
//! (403), by the verification page's check; and the page carries its headers and its look
//! ([`layout`](crate::verification::layout)): not cached, not framed, not sniffed, a strict
//! CSP under a fresh nonce.
//!
//! "Last used" is when tokens were last issued from the grant: its redemption or its latest
//! refresh. Requests the device makes with its access token do not count (that would cost a
//! store write per API call), so a device that is online but has not refreshed yet shows the
//! time of its latest refresh, at most one access-token lifetime ago.
//!
//! [`EndpointsLayer`](crate::EndpointsLayer) serves it at [`Paths::connected_devices`]
//! (`GET`) and [`Paths::revoke_device`] (`POST`); the page's buttons post to the latter, so set
//! the [`Paths`] to wherever the service is mounted. From code, the same is
//! [`DeviceFlow::connected_devices_of`](crate::DeviceFlow::connected_devices_of),
//! [`revoke_device`](crate::DeviceFlow::revoke_device) and
//! [`revoke_all_devices`](crate::DeviceFlow::revoke_all_devices).
//!
//! [`Paths`]: crate::Paths
//! [`Paths::connected_devices`]: crate::Paths::connected_devices
//! [`Paths::revoke_device`]: crate::Paths::revoke_device
//!
//! ```
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
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
//! let req = Request::get("/account/devices").body(Full::<bytes::Bytes>::default()).unwrap();
//! let res = flow.connected_devices().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], br#"{"devices":[]}"#); // alice has approved no device yet
//! # }
//! ```

mod html;

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use serde::Serialize;

use crate::browser;
use crate::clock::Timestamp;
use crate::config::Shared;
use crate::cross_site::{self, Origin};
use crate::error::OAuthError;
use crate::family::Grant;
use crate::form::{check_form_post, read_body, Form};
use crate::ids::{ClientId, GrantId, Subject};
use crate::limits::{reserve_attempt, retry_after_until, AuthKind};
use crate::observe::{record, AuditAction, Limit, RevocationReason};
use crate::page::{new_nonce, ContentSecurityPolicy};
use crate::response::{endpoint_service, OAuthBody};
use crate::scope::Scope;
use crate::sign_in::{login_location, return_address, SignIn};
use crate::store::{ClientSource, Clients, Store, StoreError, StoreResult};

/// One device the end user approved: an active grant, as the end user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectedDevice {
    /// The grant's id: what [`revoke_device`](crate::DeviceFlow::revoke_device) takes.
    pub grant_id: GrantId,
    /// The client the device runs.
    pub client_id: ClientId,
    /// The client's display name, from the client source, if it has one.
    pub client_name: Option<String>,
    /// The scope the end user approved.
    pub scope: Scope,
    /// When the end user approved.
    pub approved_at: Timestamp,
    /// When tokens were last issued from the grant (its redemption or its latest refresh).
    pub last_used_at: Timestamp,
}

/// The active grants of `subject`, most recently used first, with their clients' names.
pub(crate) async fn connected_devices<S: Store, C: ClientSource>(
    store: &S,
    clients: Clients<'_, C>,
    subject: &Subject,
    now: Timestamp,
) -> StoreResult<Vec<ConnectedDevice>> {
    let mut grants = store.grants_of(subject, now).await?;
    // The store promised exactly these; a listing must never show another's grant regardless.
    grants.retain(|g| &g.subject == subject && !g.is_expired(now));
    grants.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then(a.id.cmp(&b.id)));
    let mut names: HashMap<ClientId, Option<String>> = HashMap::new();
    let mut devices = Vec::with_capacity(grants.len());
    for g in grants {
        let client_name = match names.get(&g.client_id) {
            Some(name) => name.clone(),
            None => {
                let client = clients.client(g.client_id.as_str()).await?;
                let name = client.and_then(|c| c.name().map(str::to_owned));
                names.insert(g.client_id.clone(), name.clone());
                name
            }
        };
        devices.push(ConnectedDevice {
            grant_id: g.id,
            client_id: g.client_id,
            client_name,
            scope: g.scope,
            approved_at: g.approved_at,
            last_used_at: g.last_used_at,
        });
    }
    Ok(devices)
}

/// Revokes grant `id` if it is one of `subject`'s; false (and nothing revoked) otherwise.
///
/// Ownership is read first and the grant revoked after: safe, because a grant's subject is
/// fixed when it is created and a grant id is never given to another grant (it is derived
/// from 128 fresh random bits), so what was read still holds when the revocation lands. A
/// grant revoked by someone else in between is answered false, as an unknown one.
pub(crate) async fn revoke_device<S: Store>(
    shared: &Shared<S>,
    subject: &Subject,
    id: &GrantId,
    source: Option<IpAddr>,
) -> StoreResult<bool> {
    let (store, now) = (&shared.store, shared.clock.now());
    match store.grant(id, now).await? {
        Some(g) if &g.record.subject == subject => {
            let revoked = store.revoke_grant(id, now).await?;
            if let Some(g) = &revoked {
                tracing::info!(
                    subject = subject.as_str(),
                    client_id = g.client_id.as_str(),
                    grant_id = %id,
                    "device signed out by its end user: the grant is revoked"
                );
            }
            let found = revoked.is_some();
            signed_out(shared, revoked, now, source);
            Ok(found)
        }
        _ => Ok(false),
    }
}

/// Revokes every grant of `subject`; the ids of those it revoked.
pub(crate) async fn revoke_all_devices<S: Store>(
    shared: &Shared<S>,
    subject: &Subject,
    source: Option<IpAddr>,
) -> StoreResult<Vec<GrantId>> {
    let now = shared.clock.now();
    let revoked = shared.store.revoke_grants_of(subject, now).await?;
    tracing::info!(
        subject = subject.as_str(),
        grants = revoked.len(),
        "every device of the end user signed out"
    );
    let ids = revoked.iter().map(|g| g.id).collect();
    signed_out(shared, revoked, now, source);
    Ok(ids)
}

/// Reports grants the end user signed out.
fn signed_out<S>(
    shared: &Shared<S>,
    revoked: impl IntoIterator<Item = Grant>,
    now: Timestamp,
    source: Option<IpAddr>,
) {
    let reason = RevocationReason::EndUser;
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

endpoint_service!(
    /// The connected-devices service. Obtain it from
    /// [`DeviceFlow::connected_devices`](crate::DeviceFlow::connected_devices).
    ConnectedDevices,
    handle,
    crate::observe::metric::Endpoint::ConnectedDevices
);

/// What a request asked for.
enum Action {
    List,
    Revoke,
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
    let html = prefers_html(req.headers());
    let outcome = match action(shared, req.method(), req.uri().path()) {
        Ok(Action::List) => list(shared, req).await,
        Ok(Action::Revoke) => revoke(shared, req).await,
        Err(p) => Err(p),
    };
    let outcome = match outcome {
        // A signed-out browser goes to the application's login page, if it has one, and
        // comes back to the list.
        Err(p) if p.status == StatusCode::UNAUTHORIZED && html => match login_redirect(shared) {
            Some(location) => Err(Problem {
                status: StatusCode::SEE_OTHER,
                ..p
            }
            .with_header(header::LOCATION, Some(location))),
            None => Err(p),
        },
        outcome => outcome,
    };
    Ok(render(shared, outcome, html))
}

/// Where [`SignIn::Redirect`] sends a signed-out browser: the login page, returning to the
/// list. `None` for the 401 challenge.
fn login_redirect<S>(shared: &Shared<S>) -> Option<HeaderValue> {
    let config = &shared.config;
    let SignIn::Redirect {
        login_url,
        return_param,
    } = &config.sign_in
    else {
        return None;
    };
    let return_to = return_address(&config.paths.connected_devices, None, &*config.user_codes);
    login_location(login_url, return_param, &return_to)
}

/// At the configured paths, each method at its own; mounted elsewhere, by method alone.
fn action<S>(shared: &Shared<S>, method: &Method, path: &str) -> Result<Action, Problem> {
    let paths = &shared.config.paths;
    let list = matches!(*method, Method::GET | Method::HEAD);
    let revoke = *method == Method::POST;
    let (allowed, allow) = if path == paths.revoke_device {
        (revoke, "POST")
    } else if path == paths.connected_devices {
        (list, "GET, HEAD")
    } else {
        (list || revoke, "GET, HEAD, POST")
    };
    match (allowed, revoke) {
        (true, false) => Ok(Action::List),
        (true, true) => Ok(Action::Revoke),
        (false, _) => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "This method is not allowed here.",
        )
        .with_header(header::ALLOW, Some(HeaderValue::from_static(allow)))),
    }
}

/// What the service answers, before rendering as HTML or JSON.
enum Outcome {
    Devices {
        end_user: Subject,
        devices: Vec<ConnectedDevice>,
    },
    Revoked {
        end_user: Subject,
        revoked: Vec<GrantId>,
        /// The devices left, for the page; not read for JSON.
        devices: Vec<ConnectedDevice>,
    },
}

/// A refusal: status, JSON error code, message for the end user.
struct Problem {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    retry_after: Option<u64>,
    /// A header the refusal needs: the resolver's `WWW-Authenticate` challenge with a 401,
    /// `Allow` with a 405, or for a signed-out browser under [`SignIn::Redirect`] the login
    /// page's `Location` with a 303. Boxed: rare, and it keeps every `Result` small.
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Problem {
            status,
            code,
            message,
            retry_after: None,
            header: None,
        }
    }

    fn with_header(mut self, name: HeaderName, value: Option<HeaderValue>) -> Self {
        self.header = value.map(|v| Box::new((name, v)));
        self
    }

    /// The login page a signed-out browser is sent to, if this is that 303.
    fn location(&self) -> Option<&str> {
        match self.header.as_deref() {
            Some((name, value)) if name == header::LOCATION => value.to_str().ok(),
            _ => None,
        }
    }

    fn bad_form(message: &'static str) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        let e = OAuthError::from(e);
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

async fn list<S: Store, B>(shared: &Shared<S>, req: Request<B>) -> Result<Outcome, Problem> {
    let (parts, _) = req.into_parts();
    let end_user = sign_in(shared, &parts).await?;
    let devices = connected_devices(
        &shared.store,
        shared.clients(),
        &end_user,
        shared.clock.now(),
    )
    .await?;
    Ok(Outcome::Devices { end_user, devices })
}

async fn revoke<S, B>(shared: &Shared<S>, req: Request<B>) -> Result<Outcome, Problem>
where
    S: Store,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = &shared.config;
    if check_form_post(req.method(), req.headers()).is_err() {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "The form must be sent as application/x-www-form-urlencoded.",
        ));
    }
    let (parts, body) = req.into_parts();
    // Before sign-in, as on the verification page: a cross-site POST must not even prompt
    // for credentials. End-user pages are served from the verification URI's origin.
    let own = Origin::of(&config.verification_uri);
    if let Err(why) = cross_site::check(&parts.headers, own.as_ref()) {
        tracing::warn!(
            ?why,
            "cross-site POST to the connected-devices page refused"
        );
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "This form can only be submitted from this site.",
        ));
    }
    let end_user = sign_in(shared, &parts).await?;
    let bytes = read_body(&parts.headers, body, &config.body)
        .await
        .map_err(|e| Problem::new(e.status(), "invalid_request", "The form could not be read."))?;
    let form = Form::parse(&bytes).map_err(|_| Problem::bad_form("The form could not be read."))?;
    let field = |name| {
        form.get(name)
            .map_err(|_| Problem::bad_form("A form field was repeated."))
    };
    let store = &shared.store;
    let source = config.limiter.resolve(&parts.extensions, &parts.headers).ip;
    let revoked = match (field("grant_id")?, field("all")?) {
        (Some(id), None) => {
            let id = GrantId::parse(id)
                .ok_or_else(|| Problem::bad_form("The grant_id is not a grant id."))?;
            if !revoke_device(shared, &end_user, &id, source).await? {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "invalid_grant",
                    "No such device is signed in to your account.",
                ));
            }
            vec![id]
        }
        (None, Some("true")) => revoke_all_devices(shared, &end_user, source).await?,
        (None, Some(_)) => return Err(Problem::bad_form("The field all must be true.")),
        (None, None) => return Err(Problem::bad_form("Name the device to sign out (grant_id).")),
        (Some(_), Some(_)) => {
            return Err(Problem::bad_form("Send either grant_id or all, not both."))
        }
    };
    let devices = connected_devices(store, shared.clients(), &end_user, shared.clock.now()).await?;
    Ok(Outcome::Revoked {
        end_user,
        revoked,
        devices,
    })
}

/// Who the end user is, through the flow's resolver. When the resolver says which account the
/// request tries (a password login), the attempt first reserves a place in the same failure
/// budgets as a sign-in on the verification page, so this page is no second door for guessing
/// passwords.
async fn sign_in<S: Store>(shared: &Shared<S>, parts: &Parts) -> Result<Subject, Problem> {
    let resolver = &shared.config.end_user;
    let unauthorized = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "login_required",
            "Sign in to see your devices.",
        )
        .with_header(header::WWW_AUTHENTICATE, resolver.challenge())
    };
    let Some(account) = resolver.login_attempt(parts) else {
        return resolver.end_user(parts).ok_or_else(unauthorized);
    };
    let limiter = &shared.config.limiter;
    let source: Option<IpAddr> = limiter.resolve(&parts.extensions, &parts.headers).source;
    let store = &shared.store;
    let now = shared.clock.now();
    let limits = &limiter.limits.failed_auth;
    let reservation =
        match reserve_attempt(store, limits, AuthKind::EndUser, &account, source, now).await? {
            Ok(r) => r,
            Err(spent) => {
                tracing::warn!("end-user sign-in failure limit reached");
                limiter.refused(Limit::EndUserSignIn, source, None, None);
                return Err(Problem {
                    retry_after: Some(retry_after_until(spent.until, now)),
                    ..Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "slow_down",
                        "Too many failed sign-ins. Wait a while before trying again.",
                    )
                });
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

/// True when `Accept` prefers `text/html` to `application/json` (RFC 9110 12.5.1: the most
/// specific matching range gives each its quality). No `Accept`, or a tie, is JSON.
fn prefers_html(headers: &HeaderMap) -> bool {
    // (quality, specificity) of the most specific range matching each type so far.
    let mut best = [(0.0f32, 0u8); 2];
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .map(|p| p.trim().to_ascii_lowercase())
                .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            let types = [("text", "html"), ("application", "json")];
            for (best, (kind, sub)) in best.iter_mut().zip(types) {
                let specificity = match media.split_once('/') {
                    Some((t, s)) if t == kind && s == sub => 3,
                    Some((t, "*")) if t == kind => 2,
                    Some(("*", "*")) => 1,
                    _ => 0,
                };
                if specificity > best.1 {
                    *best = (q, specificity);
                }
            }
        }
    }
    best[0].0 > best[1].0
}

#[derive(Serialize)]
struct DeviceJson<'a> {
    grant_id: String,
    client_id: &'a str,
    client_name: Option<&'a str>,
    scope: &'a str,
    approved_at: u64,
    last_used_at: u64,
}

impl<'a> From<&'a ConnectedDevice> for DeviceJson<'a> {
    fn from(d: &'a ConnectedDevice) -> Self {
        DeviceJson {
            grant_id: d.grant_id.to_string(),
            client_id: d.client_id.as_str(),
            client_name: d.client_name.as_deref(),
            scope: d.scope.as_str(),
            approved_at: d.approved_at.as_unix_secs(),
            last_used_at: d.last_used_at.as_unix_secs(),
        }
    }
}

fn render<S>(
    shared: &Shared<S>,
    outcome: Result<Outcome, Problem>,
    html: bool,
) -> Response<OAuthBody> {
    let status = outcome
        .as_ref()
        .map_or_else(|p| p.status, |_| StatusCode::OK);
    let nonce = new_nonce();
    let body = if html {
        let login_url = match &outcome {
            Err(p) => p.location(),
            Ok(_) => None,
        };
        let page = page(&shared.config.paths.revoke_device, &outcome, login_url);
        Bytes::from(page.render(&nonce))
    } else {
        Bytes::from(json(&outcome))
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    let content_type = if html {
        "text/html; charset=utf-8"
    } else {
        "application/json"
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        ContentSecurityPolicy::strict(&nonce).header_value(),
    );
    browser::protect(h);
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Err(p) = outcome {
        if let Some(secs) = p.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(extra) = p.header {
            let (name, value) = *extra;
            h.insert(name, value);
        }
    }
    res
}

/// The JSON answer, its members in the order the documentation gives them.
fn json(outcome: &Result<Outcome, Problem>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Answer<'a> {
        Devices {
            devices: Vec<DeviceJson<'a>>,
        },
        Revoked {
            revoked: Vec<String>,
        },
        Problem {
            error: &'static str,
            error_description: &'static str,
        },
    }
    let answer = match outcome {
        Ok(Outcome::Devices { devices, .. }) => Answer::Devices {
            devices: devices.iter().map(DeviceJson::from).collect(),
        },
        Ok(Outcome::Revoked { revoked, .. }) => Answer::Revoked {
            revoked: revoked.iter().map(GrantId::to_string).collect(),
        },
        Err(p) => Answer::Problem {
            error: p.code,
            error_description: p.message,
        },
    };
    // Plain strings and numbers: serializing cannot fail; an empty body would be the answer
    // if it did, never a panic.
    serde_json::to_vec(&answer).unwrap_or_default()
}

fn page<'a>(
    action: &'a str,
    outcome: &'a Result<Outcome, Problem>,
    login_url: Option<&'a str>,
) -> html::Page<'a> {
    if let Some(login_url) = login_url {
        return html::Page::SignIn { login_url };
    }
    match outcome {
        Ok(Outcome::Devices { end_user, devices }) => html::Page::Devices {
            action,
            end_user: end_user.as_str(),
            devices,
            notice: None,
        },
        Ok(Outcome::Revoked {
            end_user,
            revoked,
            devices,
        }) => html::Page::Devices {
            action,
            end_user: end_user.as_str(),
            devices,
            notice: Some(html::Notice::SignedOut(revoked.len())),
        },
        Err(p) => html::Page::Problem { message: p.message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn html_only_when_accept_prefers_it() {
        let html = [
            // What browsers send for a page.
            &["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"][..],
            &["text/html"],
            &["text/*"],
            &["application/json;q=0.5, text/html"],
            &["application/json;q=0.5", "text/html;q=0.6"],
            &["TEXT/HTML"],
        ];
        for h in html {
            assert!(prefers_html(&accept(h)), "{h:?}");
        }
        let json = [
            &[][..],
            &["*/*"],
            &["application/json"],
            &["text/html, application/json"],
            &["text/html;q=0.4, application/json;q=0.5"],
            &["text/html;q=0"],
            &["text/plain"],
            &["application/*, text/html;q=0.9"],
            &["garbage;;;q=x"],
        ];
        for h in json {
            assert!(!prefers_html(&accept(h)), "{h:?}");
        }
    }
}

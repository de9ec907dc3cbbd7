//! Who the end user is: the application's own login, as the verification page (and any other
//! page an end user signs in to) sees it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::request::Parts;

use crate::codes::Digest;
use crate::ids::Subject;

/// Tells the verification service who the end user is, from the application's own login.
///
/// The default, [`FromExtensions`], reads a [`Subject`] that the application's login layer put
/// in the request extensions. A closure `Fn(&Parts) -> Option<Subject>` works too.
///
/// The resolver is synchronous on purpose: a login that must await something (a session
/// store on Redis or a database) does so in a middleware in front of the verification
/// service, which inserts the `Subject`; `FromExtensions` then reads it. Here with axum's
/// `middleware::from_fn` (any framework's middleware, or a `tower::Service` wrapping the
/// endpoint, does the same):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
///
/// use axum::extract::{Request, State};
/// use axum::middleware::{self, Next};
/// use axum::response::Response;
/// use axum::Router;
/// use tokio::sync::RwLock;
/// use tower_device_flow::{DeviceFlow, MemoryStore, Subject};
///
/// /// Session id (the `sid` cookie) to user: the application's session store.
/// type Sessions = Arc<RwLock<HashMap<String, String>>>;
///
/// async fn session_user(State(sessions): State<Sessions>, mut req: Request, next: Next) -> Response {
///     let sid = req
///         .headers()
///         .get("cookie")
///         .and_then(|c| c.to_str().ok())
///         .and_then(|c| c.split("; ").find_map(|c| c.strip_prefix("sid=")))
///         .map(str::to_owned);
///     if let Some(sid) = sid {
///         // The await the resolver cannot do.
///         if let Some(user) = sessions.read().await.get(&sid).cloned() {
///             req.extensions_mut().insert(Subject::new(user));
///         }
///     }
///     next.run(req).await
/// }
///
/// // `FromExtensions` is the default resolver.
/// let flow = DeviceFlow::builder(MemoryStore::default()).build();
/// let sessions = Sessions::default();
/// let app: Router = Router::new()
///     .route_service(&flow.paths().verification, flow.verification())
///     .layer(middleware::from_fn_with_state(sessions, session_user));
/// # let _ = app;
/// ```
///
/// `tests/axum.rs` (`an_async_session_lookup_in_front_of_the_route_services`) runs that
/// pattern over a socket, with a lookup that waits for a busy store; `examples/axum.rs`
/// (`session_user`, with `tower-sessions`) and `tests/page.rs` use it too. With
/// [`EndpointsLayer`](crate::EndpointsLayer) the middleware must wrap the layer from outside:
/// see [`endpoints`](crate::endpoints).
pub trait EndUserResolver: Send + Sync + 'static {
    /// The signed-in end user, or `None` (answered 401).
    fn end_user(&self, request: &Parts) -> Option<Subject>;

    /// The `WWW-Authenticate` challenge sent with that 401, if the login is HTTP authentication
    /// (for example `Basic realm="device"`, so a browser prompts for credentials).
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// The account the request presents credentials for, right or wrong (the user name of a
    /// password login), if this resolver checks credentials itself. Then the verification
    /// service limits failed sign-ins per (account, source) and per source
    /// ([`FailedAuthLimits`](crate::limits::FailedAuthLimits)), and refuses with 429 before
    /// [`end_user`](Self::end_user) is asked once a budget is spent. Default: `None`, for a
    /// login that happens (and is limited) elsewhere, such as a session cookie.
    fn login_attempt(&self, request: &Parts) -> Option<String> {
        let _ = request;
        None
    }
}

impl<F> EndUserResolver for F
where
    F: Fn(&Parts) -> Option<Subject> + Send + Sync + 'static,
{
    fn end_user(&self, request: &Parts) -> Option<Subject> {
        self(request)
    }
}

/// Reads the end user from a [`Subject`] in the request extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct FromExtensions;

impl EndUserResolver for FromExtensions {
    fn end_user(&self, request: &Parts) -> Option<Subject> {
        request.extensions.get::<Subject>().cloned()
    }
}

/// End users who sign in with HTTP Basic (RFC 7617), checked by `verify(user, password)`.
///
/// Handy for internal tools, demos and tests; most applications instead resolve the user from
/// their own session. The 401 carries a `Basic` challenge, so a browser asks for credentials.
///
/// ```
/// use tower_device_flow::verification::BasicLogin;
///
/// // Fixed users, passwords compared in constant time:
/// let login = BasicLogin::users("device", [("alice", "alice-password"), ("bob", "bob-password")]);
/// // Or any check, for example against the application's user database:
/// let login = BasicLogin::new("device", |user: &str, password: &str| user == "admin" && password == "hunter2");
/// ```
pub struct BasicLogin<F> {
    verify: F,
    challenge: HeaderValue,
}

impl<F> std::fmt::Debug for BasicLogin<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicLogin")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl<F> BasicLogin<F>
where
    F: Fn(&str, &str) -> bool + Send + Sync + 'static,
{
    /// Users checked by `verify`, challenged with `Basic realm="{realm}"`.
    pub fn new(realm: &str, verify: F) -> Self {
        let realm: String = realm.chars().filter(|c| *c != '"' && *c != '\\').collect();
        let challenge =
            HeaderValue::try_from(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .unwrap_or(HeaderValue::from_static("Basic charset=\"UTF-8\""));
        BasicLogin { verify, challenge }
    }
}

impl BasicLogin<Box<dyn Fn(&str, &str) -> bool + Send + Sync>> {
    /// A fixed list of users and passwords, compared in constant time.
    pub fn users<I, U, P>(realm: &str, users: I) -> Self
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: AsRef<str>,
    {
        let users: Vec<(String, Digest)> = users
            .into_iter()
            .map(|(u, p)| (u.into(), Digest::of(p.as_ref().as_bytes())))
            .collect();
        BasicLogin::new(
            realm,
            Box::new(move |user: &str, password: &str| {
                let presented = Digest::of(password.as_bytes());
                users.iter().any(|(u, p)| u == user && p.ct_eq(&presented))
            }),
        )
    }
}

impl<F> EndUserResolver for BasicLogin<F>
where
    F: Fn(&str, &str) -> bool + Send + Sync + 'static,
{
    fn end_user(&self, request: &Parts) -> Option<Subject> {
        let (user, password) = basic_credentials(request)?;
        (self.verify)(&user, &password).then(|| Subject::new(user))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn login_attempt(&self, request: &Parts) -> Option<String> {
        basic_credentials(request).map(|(user, _)| user)
    }
}

/// The user name and password of `Authorization: Basic` (RFC 7617).
fn basic_credentials(request: &Parts) -> Option<(String, String)> {
    let value = request.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The first of two resolvers that knows the end user: for example a session login (a
/// [`Subject`] a middleware put in the extensions) with HTTP Basic for command-line tools.
///
/// The challenge and the password-login attempt are the second's, asked only when the first
/// knows nobody; so a signed-in session never spends a failed-password budget.
///
/// ```
/// use tower_device_flow::verification::{BasicLogin, FirstOf, FromExtensions};
///
/// let login = FirstOf(FromExtensions, BasicLogin::users("device", [("alice", "alice-password")]));
/// # let _ = login;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstOf<A, B>(pub A, pub B);

impl<A: EndUserResolver, B: EndUserResolver> EndUserResolver for FirstOf<A, B> {
    fn end_user(&self, request: &Parts) -> Option<Subject> {
        self.0
            .end_user(request)
            .or_else(|| self.1.end_user(request))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        self.1.challenge().or_else(|| self.0.challenge())
    }

    fn login_attempt(&self, request: &Parts) -> Option<String> {
        if self.0.end_user(request).is_some() {
            return None;
        }
        self.0
            .login_attempt(request)
            .or_else(|| self.1.login_attempt(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = http::Request::builder();
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn basic_login_checks_users() {
        let login = BasicLogin::users("device", [("alice", "pw")]);
        let ok = format!("Basic {}", STANDARD.encode("alice:pw"));
        let bad = format!("Basic {}", STANDARD.encode("alice:nope"));
        let other = format!("Basic {}", STANDARD.encode("bob:pw"));
        assert_eq!(
            login.end_user(&parts(Some(&ok))),
            Some(Subject::new("alice"))
        );
        assert_eq!(login.end_user(&parts(Some(&bad))), None);
        assert_eq!(login.end_user(&parts(Some(&other))), None);
        assert_eq!(login.end_user(&parts(Some("Bearer x"))), None);
        // The account tried is known whether or not the password is right.
        assert_eq!(
            login.login_attempt(&parts(Some(&bad))).as_deref(),
            Some("alice")
        );
        assert_eq!(login.login_attempt(&parts(Some("Bearer x"))), None);
        assert_eq!(login.end_user(&parts(None)), None);
        assert_eq!(
            login.challenge().unwrap(),
            "Basic realm=\"device\", charset=\"UTF-8\""
        );
    }

    #[test]
    fn first_of_prefers_the_session_and_falls_back_to_basic() {
        let login = FirstOf(
            FromExtensions,
            BasicLogin::users("device", [("alice", "pw")]),
        );
        let ok = format!("Basic {}", STANDARD.encode("alice:pw"));
        let bad = format!("Basic {}", STANDARD.encode("alice:nope"));
        // A session user wins, and spends no password budget even with a wrong password.
        let mut with_session = parts(Some(&bad));
        with_session.extensions.insert(Subject::new("bob"));
        assert_eq!(login.end_user(&with_session), Some(Subject::new("bob")));
        assert_eq!(login.login_attempt(&with_session), None);
        // Without one, Basic decides, and its attempts are reported.
        assert_eq!(
            login.end_user(&parts(Some(&ok))),
            Some(Subject::new("alice"))
        );
        assert_eq!(login.end_user(&parts(Some(&bad))), None);
        assert_eq!(
            login.login_attempt(&parts(Some(&bad))).as_deref(),
            Some("alice")
        );
        assert_eq!(login.end_user(&parts(None)), None);
        assert!(login.challenge().is_some());
    }
}

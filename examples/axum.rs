//! The device flow in an axum 0.8 application with a cookie-session login: the OAuth
//! endpoints mounted as Tower services, two route groups guarded by scope with `route_layer`,
//! handlers taking the verified [`TokenInfo`] as an extractor (crate feature `axum`), and the
//! verification page behind the application's own login page.
//!
//! ```text
//! cargo run --example axum --features axum -- [--addr 127.0.0.1:8090] [--expires-in 1800] [--interval 5]
//! ```
//!
//! It listens on port 8090 by default, beside the demo server's 8080. Clients `demo-device`
//! (public) and `demo-confidential` (secret `demo-secret`); end users `alice` /
//! `alice-password` and `bob` / `bob-password`. A browser that opens the verification page
//! signed out is sent to `/login?return_to=/device?user_code=...`; after signing in (a
//! `tower-sessions` cookie session) it is back on the page with the code filled in. Command-line
//! tools may still sign in to the page with HTTP Basic, as on the demo server:
//!
//! ```text
//! cargo run --example device_client -- --base http://127.0.0.1:8090 --scope profile
//! # open the printed URL in a browser, sign in as alice / alice-password, continue, allow; then:
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:8090/api/me
//! ```
//!
//! Logs (the crate's `tracing` events) go to stderr, filtered by `RUST_LOG` (default
//! `warn,tower_device_flow=info`); stdout keeps only the line saying where it listens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/logging.rs"]
mod logging;
#[path = "common/server_loop.rs"]
mod server_loop;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower_device_flow::verification::{
    escape_html, layout, local_path, ContentSecurityPolicy, DefaultPage, FirstOf, FromExtensions,
    SignIn, Texts,
};
use tower_device_flow::{
    BasicLogin, Client, DeviceFlow, DeviceFlowBuilder, Digest, MemoryStore, Scope, Subject,
    TokenInfo,
};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// The demo's users. A real application checks its own user database.
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

/// Where the session keeps the signed-in user.
const USER_KEY: &str = "user";

/// The demo flow's builder: two clients allowed `profile email` on the in-memory store; the
/// end user from the session (or HTTP Basic, for tools); signed-out browsers sent to `/login`.
pub fn demo_flow_builder(
    issuer: &str,
    expires_in: Duration,
    interval: Duration,
) -> DeviceFlowBuilder<MemoryStore> {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()).with_name("Demo device"))
        .client(
            Client::confidential("demo-confidential", "demo-secret", scopes.clone())
                .with_name("Demo confidential client"),
        )
        .build();
    // The confirmation describes each scope in words.
    let mut texts = Texts::default();
    texts
        .scopes
        .insert("profile".into(), "See your name and user id".into());
    texts
        .scopes
        .insert("email".into(), "See your email address".into());
    DeviceFlow::builder(store)
        .issuer(issuer)
        .expires_in(expires_in)
        .interval(interval)
        // The session middleware below puts a `Subject` in the extensions; without one,
        // HTTP Basic (whose failed passwords the flow limits).
        .end_user(FirstOf(FromExtensions, BasicLogin::users("device", USERS)))
        .sign_in(SignIn::redirect("/login"))
        .page(DefaultPage::with_texts(texts))
        .scopes_supported(scopes)
}

/// The demo flow.
pub fn demo_flow(
    issuer: &str,
    expires_in: Duration,
    interval: Duration,
) -> DeviceFlow<MemoryStore> {
    demo_flow_builder(issuer, expires_in, interval).build()
}

/// The application: OAuth endpoints, the pages end users sign in to (verification, connected
/// devices, login) behind the session layer, two guarded route groups and a public route.
///
/// Every endpoint is a route (`route_service`), so the session layer wraps the pages it
/// should. `.layer(flow.endpoints_layer())` would answer the flow's paths before routing, and
/// a session layer added inside it would never run for `/device`.
pub fn app(flow: &DeviceFlow<MemoryStore>) -> Router {
    let paths = flow.paths();

    // `route_layer` guards the routes added before it, and only when one of them matches:
    // unknown paths still answer 404 rather than 401.
    let profile = Router::new()
        .route("/api/me", get(me))
        .route_layer(flow.require_oauth("profile"));
    let email = Router::new()
        .route("/api/email", get(email))
        .route_layer(flow.require_oauth("email"));

    // The pages people use: sessions only here, not on the machine-facing endpoints.
    let sessions = SessionManagerLayer::new(tower_sessions::MemoryStore::default())
        .with_name("sid")
        .with_http_only(true)
        // Lax: the session cookie never rides on another site's POST.
        .with_same_site(SameSite::Lax)
        // The example serves plain HTTP on loopback; behind HTTPS, `with_secure(true)`.
        .with_secure(flow.issuer().starts_with("https://"))
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::hours(1),
        ));
    let browser = Router::new()
        .route_service(&paths.verification, flow.verification())
        .route_service(&paths.connected_devices, flow.connected_devices())
        .route_service(&paths.revoke_device, flow.connected_devices())
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .with_state(Arc::<str>::from(paths.verification.as_str()))
        .layer(middleware::from_fn(session_user))
        .layer(sessions);

    Router::new()
        // Each OAuth endpoint is a Tower service answering every method itself (405 where due).
        .route_service(&paths.device_authorization, flow.device_authorization())
        .route_service(&paths.token, flow.token())
        .route_service(&paths.revocation, flow.revocation())
        .route_service(&paths.introspection, flow.introspection())
        .route_service(&paths.metadata, flow.metadata())
        .merge(browser)
        .merge(profile)
        .merge(email)
        .route("/api/public", get(public))
}

/// The async login lookup as a middleware: the session's user, if any, as a `Subject` in the
/// request extensions, where the flow's `FromExtensions` finds it.
async fn session_user(session: Session, mut req: Request, next: Next) -> Response {
    match session.get::<String>(USER_KEY).await {
        Ok(Some(user)) => {
            req.extensions_mut().insert(Subject::new(user));
        }
        Ok(None) => {}
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct ReturnTo {
    return_to: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    return_to: String,
}

/// Where to go after signing in: `return_to` only if it is a path on this site under the
/// verification page (never another site: no open redirect), else the verification page.
fn back_to<'a>(return_to: &'a str, verification: &'a str) -> &'a str {
    local_path(return_to)
        .filter(|p| {
            p.strip_prefix(verification)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
        })
        .unwrap_or(verification)
}

/// The user, if `password` is theirs (compared in constant time).
fn check_password(user: &str, password: &str) -> Option<&'static str> {
    let presented = Digest::of(password.as_bytes());
    let mut found = None;
    for (u, p) in USERS {
        if Digest::of(p.as_bytes()).ct_eq(&presented) && u == user {
            found = Some(u);
        }
    }
    found
}

async fn login_page(
    session: Session,
    State(verification): State<Arc<str>>,
    Query(q): Query<ReturnTo>,
) -> Response {
    let back = back_to(q.return_to.as_deref().unwrap_or(""), &verification).to_owned();
    if matches!(session.get::<String>(USER_KEY).await, Ok(Some(_))) {
        return Redirect::to(&back).into_response();
    }
    login_form(StatusCode::OK, "", &back, false)
}

async fn login(
    session: Session,
    State(verification): State<Arc<str>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let back = back_to(&form.return_to, &verification).to_owned();
    // A real application limits failed sign-ins here too.
    let Some(user) = check_password(&form.username, &form.password) else {
        return login_form(StatusCode::UNAUTHORIZED, &form.username, &back, true);
    };
    // A new session id at sign-in, so an id planted before it is worth nothing.
    if session.cycle_id().await.is_err() || session.insert(USER_KEY, user).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Redirect::to(&back).into_response()
}

async fn logout(session: Session, State(verification): State<Arc<str>>) -> Response {
    if session.flush().await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Redirect::to(&verification).into_response()
}

/// The login form, in the crate's look (`layout`), under its own CSP nonce.
fn login_form(status: StatusCode, username: &str, back: &str, failed: bool) -> Response {
    let nonce = tower_device_flow::page::new_nonce();
    let alert = if failed {
        "<div class=\"alert\" role=\"alert\" id=\"login-error\"><strong>Wrong user name or \
         password</strong><p>Check them and try again.</p></div>"
    } else {
        ""
    };
    let main = format!(
        "<p class=\"eyebrow\">Example app</p><h1>Sign in</h1>\
         <p class=\"lead\">Sign in to connect your device.</p>{alert}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"return_to\" value=\"{back}\">\
         <div class=\"field\"><label for=\"username\">User name</label>\
         <input class=\"text-input\" id=\"username\" name=\"username\" value=\"{username}\" \
         autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required{focus}></div>\
         <div class=\"field\"><label for=\"password\">Password</label>\
         <input class=\"text-input\" id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></div>\
         <button class=\"button primary\" type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">Demo users: alice / alice-password, bob / bob-password.</p>",
        back = escape_html(back),
        username = escape_html(username),
        focus = if failed { "" } else { " autofocus" },
    );
    let html = layout("en", "Sign in", &nonce, &main);
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        ContentSecurityPolicy::strict(&nonce).header_value(),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Scope `profile`: who the token speaks for.
async fn me(token: TokenInfo) -> Json<Value> {
    Json(json!({
        "sub": token.subject.as_str(),
        "scope": token.scope.as_str(),
        "client_id": token.client_id.as_str(),
    }))
}

/// Scope `email`.
async fn email(token: TokenInfo) -> Json<Value> {
    Json(json!({
        "sub": token.subject.as_str(),
        "email": format!("{}@example.com", token.subject),
    }))
}

async fn public() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// Serves `app` on `listener`. Not `axum::serve`: it has no header-read timeout or connection
/// cap. The shared loop also puts the peer address in each request as a `ClientAddr`, for
/// the per-source limits and the request origin shown on the confirmation. (With
/// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`, copy
/// `ConnectInfo<SocketAddr>` into a `ClientAddr` with a `map_request` middleware.)
pub async fn serve(listener: TcpListener, app: Router) {
    server_loop::serve(listener, app, server_loop::ServerLimits::default()).await;
}

const USAGE: &str = "usage: axum [--addr HOST:PORT] [--expires-in SECS] [--interval SECS]";

#[tokio::main]
async fn main() {
    logging::init();
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 8090));
    let (mut expires_in, mut interval) = (1800u64, 5u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            std::process::exit(2);
        };
        let ok = match flag.as_str() {
            "--addr" => value.parse().map(|v| addr = v).is_ok(),
            "--expires-in" => value.parse().map(|v| expires_in = v).is_ok(),
            "--interval" => value.parse().map(|v| interval = v).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("bad flag or value: {flag} {value}\n{USAGE}");
            std::process::exit(2);
        }
    }

    let flow = demo_flow(
        &format!("http://{addr}"),
        Duration::from_secs(expires_in),
        Duration::from_secs(interval),
    );
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("axum example listening on http://{addr}");
    serve(listener, app(&flow)).await;
}

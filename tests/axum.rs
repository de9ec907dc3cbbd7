//! The axum example app over a real socket: the whole device flow, the guarded routes and the
//! `TokenInfo` extractor, the extractor's rejection on a route without the bearer layer, and
//! the cookie-session login in front of the verification page; an async session lookup in
//! front of the endpoints, mounted as routes or by the endpoints layer (and in the wrong
//! order); the README's snippet kept equal to the compiled doc example. Needs the `axum`
//! feature (`required-features` in Cargo.toml).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request};
use http_body_util::Full;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope, Subject, TokenInfo};

#[allow(dead_code)] // its `main` is not used here
#[path = "../examples/axum.rs"]
mod example;

mod http_support;
use http_support::{Http, ALICE, BOB};

/// Serves `app` on an ephemeral loopback port; its base URL.
async fn serve(listener: TcpListener, app: Router) -> String {
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The example app with its demo flow, issuer matching the bound address, served by the
/// example's own server loop.
async fn start_example() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
    let flow = example::demo_flow(&issuer, Duration::from_secs(600), Duration::from_secs(5));
    tokio::spawn(example::serve(listener, example::app(&flow)));
    issuer
}

#[tokio::test]
async fn whole_flow_through_the_axum_app() {
    let base = start_example().await;
    let http = Http::default();

    // Metadata, mounted with route_service.
    let res = http
        .get(
            &format!("{base}/.well-known/oauth-authorization-server"),
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let meta = res.json();
    assert_eq!(meta["issuer"], base.as_str());
    assert_eq!(
        meta["device_authorization_endpoint"],
        format!("{base}/oauth/device_authorization")
    );
    assert_eq!(meta["token_endpoint"], format!("{base}/oauth/token"));

    // 1. Device authorization.
    let res = http
        .post_form(
            &format!("{base}/oauth/device_authorization"),
            &[("client_id", "demo-device"), ("scope", "profile")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let codes = res.json();
    let device_code = codes["device_code"].as_str().expect("device_code");
    let user_code = codes["user_code"].as_str().expect("user_code");
    assert_eq!(codes["verification_uri"], format!("{base}/device"));
    assert!(codes["verification_uri_complete"]
        .as_str()
        .expect("verification_uri_complete")
        .starts_with(&format!("{base}/device?")));
    assert_eq!(codes["interval"], 5);

    // 2. Polling before approval.
    let res = http.poll(&base, "demo-device", device_code).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "authorization_pending");

    // 3. The verification page: anonymous visitors get the code form only (a tool, not a
    // browser, so no redirect to the login page); a signed-in end user (HTTP Basic, for tools)
    // sees which client asks once the code is posted, then approves.
    let page = format!("{base}/device?user_code={user_code}");
    let res = http.get(&page, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!res.text().contains("Demo device"));
    // GET only pre-fills the form, even for a signed-in user (a GET must not look codes up:
    // it could not be counted against a guessing budget); POSTing the code shows who asks.
    let res = http.get_basic(&page, ALICE).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.header("content-type").starts_with("text/html"));
    assert!(res.text().contains(user_code), "{}", res.text());
    assert!(!res.text().contains("Demo device"));
    assert!(res.text().contains("Signed in as <strong>alice</strong>"));
    let res = http
        .post_form(
            &format!("{base}/device"),
            &[("user_code", user_code)],
            Some(ALICE),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("Demo device"), "{}", res.text());
    assert!(res.text().contains("See your name and user id"));
    let res = http
        .post_form(
            &format!("{base}/device"),
            &[("user_code", user_code), ("decision", "approve")],
            Some(("alice", "wrong-password")),
        )
        .await;
    assert_eq!(res.status, 401);
    assert!(res.header("www-authenticate").starts_with("Basic "));
    let res = http
        .post_form(
            &format!("{base}/device"),
            &[("user_code", user_code), ("decision", "approve")],
            Some(ALICE),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    // 4. The next poll gets the tokens.
    let res = http.poll(&base, "demo-device", device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("cache-control"), "no-store");
    let tokens = res.json();
    assert_eq!(
        tokens["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert_eq!(tokens["scope"], "profile");
    assert!(tokens["refresh_token"].is_string());
    let access_token = tokens["access_token"].as_str().expect("access_token");

    // 5. The guarded route: the extractor hands the handler the token's TokenInfo.
    let res = http
        .get(&format!("{base}/api/me"), Some(access_token))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({"sub": "alice", "scope": "profile", "client_id": "demo-device"})
    );

    // Without a token, with a wrong one, with too little scope.
    let res = http.get(&format!("{base}/api/me"), None).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), "Bearer realm=\"api\"");
    let res = http
        .get(&format!("{base}/api/me"), Some("not-a-token"))
        .await;
    assert_eq!(res.status, 401);
    assert!(res
        .header("www-authenticate")
        .contains("error=\"invalid_token\""));
    assert_eq!(res.json()["error"], "invalid_token");
    let res = http
        .get(&format!("{base}/api/email"), Some(access_token))
        .await;
    assert_eq!(res.status, 403);
    assert!(res
        .header("www-authenticate")
        .contains("error=\"insufficient_scope\", scope=\"email\""));
    assert_eq!(res.json()["error"], "insufficient_scope");

    // Unguarded and unknown routes are untouched by route_layer.
    let res = http.get(&format!("{base}/api/public"), None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"ok": true}));
    assert_eq!(
        http.get(&format!("{base}/api/nope"), None).await.status,
        404
    );

    // 6. Revocation closes the route again.
    let res = http
        .post_form(
            &format!("{base}/oauth/revoke"),
            &[("token", access_token), ("client_id", "demo-device")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = http
        .get(&format!("{base}/api/me"), Some(access_token))
        .await;
    assert_eq!(res.status, 401);
}

#[tokio::test]
async fn denial_and_the_email_scope() {
    let base = start_example().await;
    let http = Http::default();

    // Bob approves both scopes: both groups open.
    let tokens = http
        .device_flow_tokens(&base, "demo-device", "profile email", BOB)
        .await;
    let token = tokens["access_token"].as_str().expect("access_token");
    let res = http.get(&format!("{base}/api/email"), Some(token)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({"sub": "bob", "email": "bob@example.com"})
    );
    assert_eq!(
        http.get(&format!("{base}/api/me"), Some(token))
            .await
            .status,
        200
    );

    // Alice denies: the device hears access_denied.
    let res = http
        .post_form(
            &format!("{base}/oauth/device_authorization"),
            &[("client_id", "demo-device")],
            None,
        )
        .await;
    let codes = res.json();
    let device_code = codes["device_code"].as_str().expect("device_code");
    let res = http
        .post_form(
            &format!("{base}/device"),
            &[
                ("user_code", codes["user_code"].as_str().expect("user_code")),
                ("decision", "deny"),
            ],
            Some(ALICE),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = http.poll(&base, "demo-device", device_code).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "access_denied");
}

#[tokio::test]
async fn extractor_without_the_layer_is_a_clear_500() {
    let app = Router::new()
        .route(
            "/forgot-the-layer",
            get(|token: TokenInfo| async move { token.subject.to_string() }),
        )
        .route(
            "/optional",
            get(|token: Option<TokenInfo>| async move { format!("{}", token.is_some()) }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = serve(listener, app).await;
    let http = Http::default();

    let res = http
        .get(&format!("{base}/forgot-the-layer"), Some("any-token"))
        .await;
    assert_eq!(res.status, 500);
    assert_eq!(res.header("content-type"), "application/json");
    let body = res.json();
    assert_eq!(body["error"], "server_error");
    let description = body["error_description"].as_str().expect("description");
    assert!(description.contains("RequireOAuthLayer"), "{description}");
    assert!(description.contains("route_layer"), "{description}");

    let res = http.get(&format!("{base}/optional"), None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "false");
}

/// A browser-like request: takes HTML, carries `cookie`.
fn browser(
    method: http::Method,
    url: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let body = match form {
        Some(f) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            serde_urlencoded::to_string(f).expect("form")
        }
        None => String::new(),
    };
    req.body(Full::from(body)).expect("request")
}

#[tokio::test]
async fn a_cookie_session_login_in_front_of_the_verification_page() {
    let base = start_example().await;
    let http = Http::default();
    let res = http
        .post_form(
            &format!("{base}/oauth/device_authorization"),
            &[("client_id", "demo-device"), ("scope", "profile email")],
            None,
        )
        .await;
    let codes = res.json();
    let device_code = codes["device_code"].as_str().expect("device_code");
    let user_code = codes["user_code"].as_str().expect("user_code");
    let complete = codes["verification_uri_complete"]
        .as_str()
        .expect("complete");

    // Signed out: to the login page, with the way back.
    let res = http.send(browser(Method::GET, complete, None, None)).await;
    assert_eq!(res.status, 303, "{}", res.text());
    let login = res.header("location").to_owned();
    let want = format!("/device?user_code={user_code}");
    assert_eq!(
        login,
        format!(
            "/login?return_to={}",
            want.replace('/', "%2F")
                .replace('?', "%3F")
                .replace('=', "%3D")
        )
    );
    let res = http
        .send(browser(Method::GET, &format!("{base}{login}"), None, None))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-frame-options"), "DENY");
    assert!(res
        .text()
        .contains(&format!("name=\"return_to\" value=\"{want}\"")));

    // A wrong password: the form again, 401, no session.
    let wrong = [
        ("username", "alice"),
        ("password", "nope"),
        ("return_to", want.as_str()),
    ];
    let res = http
        .send(browser(
            Method::POST,
            &format!("{base}/login"),
            None,
            Some(&wrong),
        ))
        .await;
    assert_eq!(res.status, 401);
    assert!(res.text().contains("Wrong user name or password"));
    assert_eq!(res.header("set-cookie"), "");

    // Signed in: back to the code, in a session cookie.
    let right = [
        ("username", "alice"),
        ("password", "alice-password"),
        ("return_to", want.as_str()),
    ];
    let res = http
        .send(browser(
            Method::POST,
            &format!("{base}/login"),
            None,
            Some(&right),
        ))
        .await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), want);
    let set_cookie = res.header("set-cookie");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("cookie").to_owned();
    let res = http
        .send(browser(
            Method::GET,
            &format!("{base}{want}"),
            Some(&cookie),
            None,
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains(&format!("value=\"{user_code}\"")));
    assert!(res.text().contains("Signed in as <strong>alice</strong>"));

    // Continue, allow: the device's next poll gets the token, for alice.
    let url = format!("{base}/device");
    let res = http
        .send(browser(
            Method::POST,
            &url,
            Some(&cookie),
            Some(&[("user_code", user_code)]),
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("Allow Demo device?"), "{}", res.text());
    assert!(res.text().contains("See your email address"));
    let decision = [("user_code", user_code), ("decision", "approve")];
    let res = http
        .send(browser(Method::POST, &url, Some(&cookie), Some(&decision)))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = http.poll(&base, "demo-device", device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let res = http.get(&format!("{base}/api/me"), Some(&token)).await;
    assert_eq!(res.json()["sub"], "alice");

    // Signed out again, the page sends the browser to the login page once more.
    let res = http
        .send(browser(
            Method::POST,
            &format!("{base}/logout"),
            Some(&cookie),
            Some(&[]),
        ))
        .await;
    assert_eq!(res.status, 303);
    let res = http
        .send(browser(
            Method::GET,
            &format!("{base}/device"),
            Some(&cookie),
            None,
        ))
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(res.header("location"), "/login?return_to=%2Fdevice");
}

#[tokio::test]
async fn the_login_never_sends_anyone_off_site() {
    let base = start_example().await;
    let http = Http::default();
    for evil in [
        "https://evil.example/device",
        "//evil.example/device",
        "/\\evil.example",
        "/api/me",
        "/devices-elsewhere",
        "",
    ] {
        let form = [
            ("username", "bob"),
            ("password", "bob-password"),
            ("return_to", evil),
        ];
        let res = http
            .send(browser(
                Method::POST,
                &format!("{base}/login"),
                None,
                Some(&form),
            ))
            .await;
        assert_eq!(res.status, 303, "{evil}: {}", res.text());
        assert_eq!(res.header("location"), "/device", "{evil}");
        let res = http
            .send(browser(
                Method::GET,
                &format!("{base}/login?return_to={}", evil.replace('/', "%2F")),
                None,
                None,
            ))
            .await;
        assert!(
            res.text().contains("name=\"return_to\" value=\"/device\""),
            "{evil}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// An async login in front of the verification page, in the two orders the module docs of
// `tower_device_flow::axum` show (and the wrong one).

/// The application's session store: session id (cookie `sid`) to user, behind a `tokio` lock,
/// as a store on Redis or a database is awaited. Counts its lookups, to see where the login
/// middleware runs.
#[derive(Clone, Default)]
struct Sessions {
    users: Arc<RwLock<HashMap<String, String>>>,
    lookups: Arc<AtomicUsize>,
}

impl Sessions {
    async fn user(&self, headers: &HeaderMap) -> Option<String> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
        let sid = cookie.split("; ").find_map(|c| c.strip_prefix("sid="))?;
        // Waits for whoever holds the store, as a network round trip would.
        self.users.read().await.get(sid).cloned()
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

/// The login middleware: the session's user as a `Subject` in the request extensions, where
/// the flow's default resolver (`FromExtensions`) finds it.
async fn session_user(
    State(sessions): State<Sessions>,
    mut req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    if let Some(user) = sessions.user(req.headers()).await {
        req.extensions_mut().insert(Subject::new(user));
    }
    next.run(req).await
}

/// A flow whose end user comes only from the extensions (the default), for `demo-device`.
fn session_flow(issuer: &str) -> DeviceFlow<MemoryStore> {
    let store = MemoryStore::builder()
        .client(Client::public(
            "demo-device",
            Scope::parse("profile").expect("scope"),
        ))
        .build();
    DeviceFlow::builder(store).issuer(issuer).build()
}

async fn me(token: TokenInfo) -> String {
    token.subject.to_string()
}

/// `POST /device` with session cookie `sid`, if any.
async fn decide(
    http: &Http,
    base: &str,
    sid: Option<&str>,
    user_code: &str,
) -> http_support::Reply {
    let mut req = Request::post(format!("{base}/device"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(sid) = sid {
        req = req.header(header::COOKIE, format!("theme=dark; sid={sid}"));
    }
    let body = format!("user_code={user_code}&decision=approve");
    http.send(req.body(Full::from(body)).expect("request"))
        .await
}

/// A device authorization for `demo-device`: (device_code, user_code).
async fn ask(http: &Http, base: &str) -> (String, String) {
    let res = http
        .post_form(
            &format!("{base}/oauth/device_authorization"),
            &[("client_id", "demo-device"), ("scope", "profile")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let codes = res.json();
    let code = |k: &str| codes[k].as_str().expect(k).to_owned();
    (code("device_code"), code("user_code"))
}

#[tokio::test]
async fn an_async_session_lookup_in_front_of_the_route_services() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
    let flow = session_flow(&issuer);
    let sessions = Sessions::default();

    // The module docs' first pattern: every endpoint a route; the login wraps only the pages
    // end users sign in to.
    let paths = flow.paths();
    let signed_in = Router::new()
        .route_service(&paths.verification, flow.verification())
        .route_service(&paths.connected_devices, flow.connected_devices())
        .route_service(&paths.revoke_device, flow.connected_devices())
        .layer(middleware::from_fn_with_state(
            sessions.clone(),
            session_user,
        ));
    let app = Router::new()
        .route("/api/me", get(me))
        .route_layer(flow.require_oauth("profile"))
        .route_service(&paths.device_authorization, flow.device_authorization())
        .route_service(&paths.token, flow.token())
        .route_service(&paths.revocation, flow.revocation())
        .route_service(&paths.introspection, flow.introspection())
        .route_service(&paths.metadata, flow.metadata())
        .merge(signed_in);
    let base = serve(listener, app).await;
    let http = Http::default();

    let (device_code, user_code) = ask(&http, &base).await;
    // Signed out: the page asks for a login.
    let res = decide(&http, &base, None, &user_code).await;
    assert_eq!(res.status, 401, "{}", res.text());

    // The session store is busy when the approval arrives: the middleware awaits it, and the
    // approval goes through once the session is there.
    let mut store = sessions.users.write().await;
    let approval = tokio::spawn({
        let (http, base, user_code) = (Http::default(), base.clone(), user_code.clone());
        async move { decide(&http, &base, Some("s-alice"), &user_code).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !approval.is_finished(),
        "the lookup did not wait for the store"
    );
    store.insert("s-alice".into(), "alice".into());
    drop(store);
    let res = approval.await.expect("approval task");
    assert_eq!(res.status, 200, "{}", res.text());

    // The device gets its token, for alice.
    let res = http.poll(&base, "demo-device", &device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let res = http.get(&format!("{base}/api/me"), Some(&token)).await;
    assert_eq!((res.status.as_u16(), res.text()), (200, "alice".into()));

    // The connected devices sit behind the same login.
    let req = Request::get(format!("{base}/account/devices"))
        .header(header::COOKIE, "sid=s-alice")
        .body(Full::default())
        .expect("request");
    let res = http.send(req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["devices"][0]["client_id"], "demo-device");

    // Three requests to signed-in pages, three lookups: the device's and the API's requests
    // never went through the login.
    assert_eq!(sessions.lookups(), 3);
}

#[tokio::test]
async fn the_endpoints_layer_answers_before_routing() {
    let http = Http::default();

    // The module docs' second pattern: the login outside (after) the endpoints layer.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
    let flow = session_flow(&issuer);
    let sessions = Sessions::default();
    sessions
        .users
        .write()
        .await
        .insert("s-alice".into(), "alice".into());
    let app = Router::new()
        .route("/api/me", get(me))
        .route_layer(flow.require_oauth("profile"))
        .layer(flow.endpoints_layer())
        .layer(middleware::from_fn_with_state(
            sessions.clone(),
            session_user,
        ));
    let base = serve(listener, app).await;
    let (device_code, user_code) = ask(&http, &base).await;
    let res = decide(&http, &base, Some("s-alice"), &user_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = http.poll(&base, "demo-device", &device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let res = http.get(&format!("{base}/api/me"), Some(&token)).await;
    assert_eq!((res.status.as_u16(), res.text()), (200, "alice".into()));

    // The wrong order: the login inside the endpoints layer is never reached for `/device`,
    // so nobody is ever signed in there.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
    let flow = session_flow(&issuer);
    let sessions = Sessions::default();
    sessions
        .users
        .write()
        .await
        .insert("s-alice".into(), "alice".into());
    let app = Router::new()
        .route("/api/me", get(me))
        .layer(middleware::from_fn_with_state(
            sessions.clone(),
            session_user,
        ))
        .layer(flow.endpoints_layer());
    let base = serve(listener, app).await;
    let (_, user_code) = ask(&http, &base).await;
    let res = decide(&http, &base, Some("s-alice"), &user_code).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(sessions.lookups(), 0, "the login ran for /device");
}

/// The README's axum snippet is the module docs' first example (which rustdoc compiles),
/// less its hidden lines.
#[test]
fn the_readme_axum_snippet_is_the_compiled_doc_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split_once("\n### axum 0.8\n")
        .expect("README: section ### axum 0.8")
        .1;
    let block = section
        .split_once("```rust")
        .expect("README: a rust block in the axum section")
        .1;
    let block = block.split_once('\n').expect("block").1;
    let readme_lines: Vec<&str> = block
        .split_once("\n```")
        .expect("README: the block's end")
        .0
        .lines()
        .collect();

    let src = std::fs::read_to_string(root.join("src/axum.rs")).expect("src/axum.rs");
    let docs: Vec<&str> = src
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let open = docs
        .iter()
        .position(|l| l.starts_with("```"))
        .expect("a doc example");
    let close = open
        + 1
        + docs[open + 1..]
            .iter()
            .position(|l| l.starts_with("```"))
            .expect("its end");
    let visible: Vec<&str> = docs[open + 1..close]
        .iter()
        .copied()
        .filter(|l| *l != "#" && !l.starts_with("# "))
        .collect();
    assert_eq!(
        readme_lines, visible,
        "README's axum snippet differs from src/axum.rs"
    );
}

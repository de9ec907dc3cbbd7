//! The verification page as a web application sees it, over real HTTP: a cookie-session login
//! looked up asynchronously by a middleware that puts the `Subject` in the extensions, the
//! redirect of signed-out browsers to the login page and back to the code, what each page
//! shows, and pages that set their own status, headers and CSP.

mod http_support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::sync::RwLock;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::client_addr::ClientAddr;
use tower_device_flow::verification::{
    ContentSecurityPolicy, FromExtensions, Page, PageRequest, PageView, SignIn, Texts,
    VerificationPage,
};
use tower_device_flow::{
    Client, DeviceFlow, DeviceFlowBuilder, ManualClock, MemoryStore, Scope, Subject, Timestamp,
};

use http_support::{bind, Http, Reply};

/// 2023-11-14T22:13:20Z.
const START_MILLIS: u64 = 1_700_000_000_000;
const HTML: (&str, &str) = (
    "accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);
const JSON: (&str, &str) = ("accept", "application/json");

/// The application's sessions: cookie value -> user, behind an async lock (as a session
/// store on a database or Redis would be).
#[derive(Clone, Default)]
struct Sessions(Arc<RwLock<HashMap<String, Subject>>>);

impl Sessions {
    /// The login page's work: a new session for `user`; its cookie.
    async fn sign_in(&self, id: &str, user: &str) -> String {
        self.0
            .write()
            .await
            .insert(id.to_owned(), Subject::new(user));
        format!("sid={id}")
    }

    /// The middleware's work: the session's user, looked up asynchronously.
    async fn user(&self, headers: &http::HeaderMap) -> Option<Subject> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let id = cookies
            .split(';')
            .find_map(|c| c.trim().strip_prefix("sid="))?;
        // A real store awaits I/O here; yield so the lookup really is asynchronous.
        tokio::task::yield_now().await;
        self.0.read().await.get(id).cloned()
    }
}

struct Server {
    base: String,
    clock: ManualClock,
    sessions: Sessions,
    http: Http,
}

/// Serves the flow behind the session middleware; each request also gets its TCP peer as a
/// `ClientAddr` (as the server loop of the examples does).
async fn start(
    configure: impl FnOnce(DeviceFlowBuilder<MemoryStore>) -> DeviceFlowBuilder<MemoryStore>,
) -> Server {
    let (listener, base) = bind().await;
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
    let scope = Scope::parse("profile email").expect("scope");
    let store = MemoryStore::builder()
        .client(Client::public("tv", scope.clone()).with_name("Living room TV"))
        .client(Client::confidential("rs", "rs-secret", scope.clone()))
        .build();
    let builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clock(clock.clone())
        .end_user(FromExtensions)
        .sign_in(SignIn::redirect("/login"));
    let flow = configure(builder).build();
    let sessions = Sessions::default();

    let fallback = service_fn(|_req: Request<Incoming>| async {
        let mut res = http::Response::new(Full::new(Bytes::from_static(b"not found")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        Ok::<_, Infallible>(res)
    });
    let app = flow.endpoints_layer().layer(fallback);
    let mw_sessions = sessions.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (app, sessions) = (app.clone(), mw_sessions.clone());
            // The async login pattern: a middleware awaits the session lookup and inserts the
            // `Subject`; the flow's `FromExtensions` resolver reads it.
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let (app, sessions) = (app.clone(), sessions.clone());
                async move {
                    req.extensions_mut().insert(ClientAddr(peer));
                    if let Some(user) = sessions.user(req.headers()).await {
                        req.extensions_mut().insert(user);
                    }
                    app.oneshot(req).await
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    Server {
        base,
        clock,
        sessions,
        http: Http::default(),
    }
}

impl Server {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, String::new()).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        let body = serde_urlencoded::to_string(form).expect("form");
        self.send(Method::POST, path, &all, body).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::from(body))
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let res = self.http.send(req).await;
        assert!(!res.status.is_server_error(), "{}", res.text());
        res
    }

    /// A device authorization for client `tv`, sent with `user_agent`: (device_code,
    /// user_code, verification_uri_complete).
    async fn authorize(&self, user_agent: &str) -> (String, String, String) {
        let res = self
            .post(
                "/oauth/device_authorization",
                &[("client_id", "tv"), ("scope", "profile email")],
                &[("user-agent", user_agent)],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let j = res.json();
        let s = |k: &str| j[k].as_str().expect(k).to_owned();
        (
            s("device_code"),
            s("user_code"),
            s("verification_uri_complete"),
        )
    }

    async fn poll(&self, device_code: &str) -> Reply {
        self.post(
            "/oauth/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", "tv"),
            ],
            &[],
        )
        .await
    }
}

#[track_caller]
fn assert_page_headers(res: &Reply) {
    assert_eq!(res.header("cache-control"), "no-store");
    assert_eq!(res.header("x-frame-options"), "DENY");
    assert_eq!(res.header("x-content-type-options"), "nosniff");
    assert_eq!(res.header("referrer-policy"), "same-origin");
    let csp = res.header("content-security-policy");
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(csp.matches("frame-ancestors").count(), 1, "{csp}");
}

/// The path and query of a `Location`, which must stay on this origin.
#[track_caller]
fn return_to(location: &str) -> String {
    let query = location
        .strip_prefix("/login?return_to=")
        .unwrap_or_else(|| panic!("not the login page: {location}"));
    let decoded: Vec<(String, String)> =
        serde_urlencoded::from_str(&format!("return_to={query}")).expect("query");
    decoded[0].1.clone()
}

#[tokio::test]
async fn a_signed_out_browser_is_sent_to_the_login_page_and_keeps_its_code() {
    let srv = start(|b| b).await;

    // GET (verification_uri_complete, typed in lower case with a space): 303 to the login
    // page, the code normalized in the return address.
    let res = srv.get("/device?user_code=wdjb%20mjht", &[HTML]).await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_page_headers(&res);
    let location = res.header("location");
    assert_eq!(
        location,
        "/login?return_to=%2Fdevice%3Fuser_code%3DWDJB-MJHT"
    );
    assert_eq!(return_to(location), "/device?user_code=WDJB-MJHT");
    assert!(res.text().contains(&format!("href=\"{location}\"")));

    // A return address in the request is never used.
    let res = srv
        .get(
            "/device?user_code=WDJB-MJHT&return_to=https%3A%2F%2Fevil.example",
            &[HTML],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        return_to(res.header("location")),
        "/device?user_code=WDJB-MJHT"
    );

    // POST (the session ran out between the form and the submit): the typed code survives.
    let res = srv
        .post(
            "/device",
            &[("user_code", "wdjbmjht"), ("decision", "approve")],
            &[HTML],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(
        return_to(res.header("location")),
        "/device?user_code=WDJB-MJHT"
    );

    // Something that cannot be a code: kept as typed, bounded, encoded, still a local path.
    let hostile = format!("//evil.example/\"><script>{}", "x".repeat(200));
    let res = srv
        .post("/device", &[("user_code", &hostile)], &[HTML])
        .await;
    assert_eq!(res.status, 303);
    let back = return_to(res.header("location"));
    assert!(back.starts_with("/device?user_code="), "{back}");
    let code: Vec<(String, String)> =
        serde_urlencoded::from_str(back.trim_start_matches("/device?")).expect("query");
    assert_eq!(code[0].1, hostile[..64]);
    assert!(!res.text().contains("<script>"));

    // Programs are not redirected: JSON answers exactly as before, and a client that does
    // not take HTML gets the 401.
    let res = srv.get("/device?user_code=WDJB-MJHT", &[JSON]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"status": "enter_code"}));
    let res = srv
        .post("/device", &[("user_code", "WDJB-MJHT")], &[JSON])
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.json(),
        json!({"error": "login_required", "error_description": "Sign in to connect a device."})
    );
    assert_eq!(res.header("location"), "");
    let res = srv
        .post(
            "/device",
            &[("user_code", "WDJB-MJHT")],
            &[("accept", "*/*")],
        )
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("location"), "");
}

#[tokio::test]
async fn the_round_trip_through_an_async_session_login_ends_in_a_token() {
    let srv = start(|b| b).await;
    let (device_code, user_code, complete) = srv.authorize("DemoTV/2.0 (Living room)").await;
    let path = complete.strip_prefix(&srv.base).expect("same base");

    // Signed out: to the login page.
    let res = srv.get(path, &[HTML]).await;
    assert_eq!(res.status, 303);
    let back = return_to(res.header("location"));
    assert_eq!(back, format!("/device?user_code={user_code}"));

    // The login page signs alice in (a session cookie) and sends her back.
    let cookie = srv.sessions.sign_in("s-alice", "alice").await;
    let cookie = ("cookie", cookie.as_str());
    let res = srv.get(&back, &[HTML, cookie]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_page_headers(&res);
    let html = res.text();
    assert!(html.contains(&format!("value=\"{user_code}\"")), "{html}");
    assert!(
        html.contains("Signed in as <strong>alice</strong>"),
        "{html}"
    );

    // Continue: the confirmation shows who asks, for what, when and from where.
    srv.clock.advance(Duration::from_secs(125));
    let res = srv
        .post("/device", &[("user_code", &user_code)], &[HTML, cookie])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let html = res.text();
    for needle in [
        "Allow Living room TV?",
        "<code>email</code>",
        "<code>profile</code>",
        &format!("<span class=\"code\">{user_code}</span>"),
        "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time>",
        "2 min ago",
        "<dd>127.0.0.1</dd>",
        "<dd>DemoTV/2.0 (Living room)</dd>",
        "value=\"approve\"",
    ] {
        assert!(html.contains(needle), "{needle} in {html}");
    }

    // Approve; the device's next poll gets the token, for alice.
    let res = srv
        .post(
            "/device",
            &[("user_code", &user_code), ("decision", "approve")],
            &[HTML, cookie],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("Device connected"));
    let res = srv.poll(&device_code).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["scope"], "email profile");
    let token = res.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let basic = http_support::basic_auth(("rs", "rs-secret"));
    let res = srv
        .post(
            "/oauth/introspect",
            &[("token", &token)],
            &[("authorization", basic.to_str().expect("ascii"))],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["active"], true);
    assert_eq!(res.json()["sub"], "alice");
}

#[tokio::test]
async fn every_error_page_says_what_happened_and_what_to_do() {
    let srv = start(|b| b).await;
    let cookie = srv.sessions.sign_in("s-bob", "bob").await;
    let cookie = ("cookie", cookie.as_str());
    let page = |res: &Reply, status: u16, needle: &str| {
        assert_eq!(res.status, status, "{}", res.text());
        assert_page_headers(res);
        let html = res.text();
        assert!(html.contains(needle), "{needle} in {html}");
        assert!(html.contains("role=\"alert\""), "{html}");
    };

    // Unknown: the form again, with the typed code and what to check.
    let res = srv
        .post("/device", &[("user_code", "bcdf-ghjk")], &[HTML, cookie])
        .await;
    page(&res, 400, "That code didn&#39;t work");
    assert!(res.text().contains("value=\"bcdf-ghjk\""));
    assert!(res.text().contains("aria-invalid=\"true\""));

    // No code at all.
    let res = srv.post("/device", &[], &[HTML, cookie]).await;
    page(&res, 400, "Enter the code");

    // Expired.
    let (_, expired, _) = srv.authorize("tv").await;
    srv.clock.advance(Duration::from_secs(1801));
    let res = srv
        .post("/device", &[("user_code", &expired)], &[HTML, cookie])
        .await;
    page(&res, 400, "That code has expired");
    assert!(res.text().contains("Start again on your device"));

    // Already used.
    let (_, used, _) = srv.authorize("tv").await;
    let form = [("user_code", used.as_str()), ("decision", "deny")];
    let res = srv.post("/device", &form, &[HTML, cookie]).await;
    assert_eq!(res.status, 200);
    assert!(res.text().contains("Request denied"));
    let res = srv.post("/device", &form, &[HTML, cookie]).await;
    page(&res, 409, "That code was already used");

    // Too many wrong codes (the default budget is 5 per user): wait, with Retry-After.
    for _ in 0..5 {
        srv.post("/device", &[("user_code", "BCDF-GHJK")], &[HTML, cookie])
            .await;
    }
    let res = srv
        .post("/device", &[("user_code", "BCDF-GHJK")], &[HTML, cookie])
        .await;
    page(&res, 429, "Too many attempts");
    let wait: u64 = res.header("retry-after").parse().expect("retry-after");
    assert!(
        res.text()
            .contains(&format!("<strong>{}</strong> min", wait.div_ceil(60))),
        "{}",
        res.text()
    );
    assert!(res.text().contains("href=\"/device\""));

    // From another site.
    let res = srv
        .post(
            "/device",
            &[("user_code", "BCDF-GHJK")],
            &[HTML, cookie, ("sec-fetch-site", "cross-site")],
        )
        .await;
    page(&res, 403, "Open this page directly");
}

#[tokio::test]
async fn the_challenge_mode_still_answers_401_to_browsers() {
    let srv = start(|b| {
        b.sign_in(SignIn::Challenge)
            .end_user(tower_device_flow::BasicLogin::users(
                "device",
                [("alice", "alice-password")],
            ))
    })
    .await;
    let res = srv.get("/device?user_code=WDJB-MJHT", &[HTML]).await;
    assert_eq!(res.status, 200);
    let res = srv
        .post("/device", &[("user_code", "WDJB-MJHT")], &[HTML])
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.header("www-authenticate"),
        "Basic realm=\"device\", charset=\"UTF-8\""
    );
    assert_eq!(res.header("location"), "");
    assert!(res.text().contains("Sign in to continue"));
}

#[tokio::test]
async fn the_default_page_styles_under_a_fresh_nonce_and_runs_no_script() {
    let srv = start(|b| b).await;
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let res = srv.get("/device", &[]).await;
        assert_eq!(res.status, 200);
        assert_page_headers(&res);
        let csp = res.header("content-security-policy").to_owned();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let nonce = csp
            .split("style-src 'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("style nonce")
            .to_owned();
        let html = res.text();
        assert!(
            html.contains(&format!("<style nonce=\"{nonce}\">")),
            "{html}"
        );
        assert!(!html.contains("<script"));
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1]);
}

#[tokio::test]
async fn an_absolute_login_url_is_allowed_as_a_form_target() {
    let srv = start(|b| b.sign_in(SignIn::redirect("https://id.example.com/login?app=tv"))).await;
    let res = srv
        .post("/device", &[("user_code", "WDJB-MJHT")], &[HTML])
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        res.header("location"),
        "https://id.example.com/login?app=tv&return_to=%2Fdevice%3Fuser_code%3DWDJB-MJHT"
    );
    let csp = res.header("content-security-policy");
    assert!(
        csp.contains("form-action 'self' https://id.example.com;"),
        "{csp}"
    );
}

/// A page in the visitor's language, with its own stylesheet host, a header and, for the
/// done step, its own status; it also tries to loosen what it may not.
struct CustomPage;

impl VerificationPage for CustomPage {
    fn render(&self, view: &PageView<'_>, request: &PageRequest<'_>) -> Page {
        let lang = request.preferred_language(&["en", "fr"]).unwrap_or("en");
        let step = match view {
            PageView::EnterCode { .. } => "enter",
            PageView::Done { .. } => "done",
            _ => "other",
        };
        let body = format!(
            "<!doctype html><p lang=\"{lang}\">{step} {status}</p>\
             <script nonce=\"{nonce}\">/* formatting */</script>",
            status = request.status().as_u16(),
            nonce = request.nonce(),
        );
        let mut page = Page::html(body, request)
            .with_csp(
                ContentSecurityPolicy::strict(request.nonce())
                    .allow("style-src", "https://cdn.example.com")
                    .directive("frame-ancestors", "*"),
            )
            .with_header(
                header::CONTENT_LANGUAGE,
                HeaderValue::from_str(lang).expect("lang"),
            )
            .with_header(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("ALLOWALL"),
            )
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        if step == "done" {
            page = page.with_status(StatusCode::ACCEPTED);
        }
        page
    }
}

#[tokio::test]
async fn a_custom_page_sets_its_status_headers_and_csp_and_sees_the_locale() {
    let srv = start(|b| b.page(CustomPage)).await;
    let res = srv
        .get(
            "/device",
            &[("accept-language", "de;q=0.9, fr-CA, en;q=0.5")],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-language"), "fr");
    // What it may not loosen stays.
    assert_page_headers(&res);
    let csp = res.header("content-security-policy");
    assert!(
        csp.contains("style-src 'nonce-") && csp.contains(" https://cdn.example.com;"),
        "{csp}"
    );
    let nonce = csp
        .split("script-src 'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("nonce");
    assert!(res.text().contains(&format!(
        "<p lang=\"fr\">enter 200</p><script nonce=\"{nonce}\">"
    )));

    // Its own status for the done step; the service's for the others.
    let cookie = srv.sessions.sign_in("s1", "alice").await;
    let (_, user_code, _) = srv.authorize("tv").await;
    let res = srv
        .post(
            "/device",
            &[("user_code", &user_code), ("decision", "approve")],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
    assert!(res.text().contains("done 200"));
    let res = srv
        .post(
            "/device",
            &[("user_code", "BCDF-GHJK")],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("enter 400"));
}

#[tokio::test]
async fn texts_and_scope_words_replace_the_defaults() {
    let mut texts = Texts::default();
    texts.lang = "fr".into();
    texts.approve = "Autoriser".into();
    texts
        .scopes
        .insert("profile".into(), "Voir votre nom".into());
    let srv = start(move |b| {
        b.page(tower_device_flow::verification::DefaultPage::with_texts(
            texts,
        ))
    })
    .await;
    let cookie = srv.sessions.sign_in("s1", "alice").await;
    let (_, user_code, _) = srv.authorize("tv").await;
    let res = srv
        .post(
            "/device",
            &[("user_code", &user_code)],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(res.status, 200);
    let html = res.text();
    assert!(
        html.starts_with("<!doctype html><html lang=\"fr\">"),
        "{html}"
    );
    assert!(html.contains(">Autoriser</button>"));
    assert!(html.contains("Voir votre nom <span class=\"muted\">(<code>profile</code>)"));
    assert!(html.contains("<li><code>email</code></li>"));
}

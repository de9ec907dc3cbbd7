//! The axum example app over a real socket: the whole device flow, the guarded routes and the
//! `TokenInfo` extractor, the extractor's rejection on a route without the bearer layer, and
//! the cookie-session login in front of the verification page. Needs the `axum` feature
//! (`required-features` in Cargo.toml).

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use serde_json::json;
use tokio::net::TcpListener;
use tower_device_flow::TokenInfo;

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
    let res = http.get_basic(&page, ALICE).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.header("content-type").starts_with("text/html"));
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

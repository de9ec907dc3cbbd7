//! A whole flow at TRACE level, captured: no secret, code or token may appear in the logs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope, Subject};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn form(uri: &str, body: String, basic: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    if let Some(creds) = basic {
        use base64::Engine as _;
        let v = base64::engine::general_purpose::STANDARD.encode(creds);
        b = b.header("authorization", format!("Basic {v}"));
    }
    b.body(Full::from(body)).unwrap()
}

async fn json(
    res: Response<impl http_body::Body<Data = Bytes, Error = impl std::fmt::Debug>>,
) -> serde_json::Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn a_full_flow_logs_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "conf-secret-Xy9";
    let store = MemoryStore::builder()
        .client(Client::confidential(
            "conf",
            secret,
            Scope::parse("profile").unwrap(),
        ))
        .build();
    let flow = DeviceFlow::builder(store)
        .issuer("https://auth.example.com")
        .interval(std::time::Duration::ZERO)
        .end_user(|p: &http::request::Parts| p.extensions.get::<Subject>().cloned())
        .build();
    let api = flow
        .require_oauth("profile")
        .layer(service_fn(|_r: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::from("ok")))
        }));
    let app = flow.endpoints_layer().layer(api);
    let creds = format!("conf:{secret}");

    let codes = json(
        app.clone()
            .oneshot(form(
                "/oauth/device_authorization",
                String::new(),
                Some(&creds),
            ))
            .await
            .unwrap(),
    )
    .await;
    let device_code = codes["device_code"].as_str().unwrap().to_owned();
    let user_code = codes["user_code"].as_str().unwrap().to_owned();
    let poll = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={device_code}"
    );
    let pending = json(
        app.clone()
            .oneshot(form("/oauth/token", poll.clone(), Some(&creds)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pending["error"], "authorization_pending");

    // A wrong guess, then the approval.
    let mut wrong = form(
        "/device",
        "user_code=BBBB-BBBB&decision=approve".into(),
        None,
    );
    wrong.extensions_mut().insert(Subject::new("alice"));
    assert_eq!(app.clone().oneshot(wrong).await.unwrap().status(), 400);
    let mut approve = form(
        "/device",
        format!("user_code={user_code}&decision=approve"),
        None,
    );
    approve.extensions_mut().insert(Subject::new("alice"));
    assert_eq!(app.clone().oneshot(approve).await.unwrap().status(), 200);

    let tokens = json(
        app.clone()
            .oneshot(form("/oauth/token", poll.clone(), Some(&creds)))
            .await
            .unwrap(),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let replay = json(
        app.clone()
            .oneshot(form("/oauth/token", poll, Some(&creds)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(replay["error"], "invalid_grant");

    let bearer = |t: &str| {
        Request::get("/api")
            .header("authorization", format!("Bearer {t}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(
        app.clone().oneshot(bearer(&access)).await.unwrap().status(),
        200
    );
    assert_eq!(
        app.clone()
            .oneshot(bearer("not-a-real-token"))
            .await
            .unwrap()
            .status(),
        401
    );

    let refreshed = json(
        app.clone()
            .oneshot(form(
                "/oauth/token",
                format!("grant_type=refresh_token&refresh_token={refresh}"),
                Some(&creds),
            ))
            .await
            .unwrap(),
    )
    .await;
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let revoke = app
        .clone()
        .oneshot(form(
            "/oauth/revoke",
            format!("token={access2}"),
            Some(&creds),
        ))
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The flow was logged...
    for event in [
        "device grant created",
        "device grant approved",
        "tokens issued",
        "tokens refreshed",
        "token revoked",
        "wrong user code",
        "invalid_grant",
    ] {
        assert!(
            logs.contains(event),
            "missing log event {event:?} in:\n{logs}"
        );
    }
    // ...and no secret with it.
    let normalized_user_code = user_code.replace('-', "");
    for secret in [
        device_code.as_str(),
        &user_code,
        &normalized_user_code,
        &access,
        &refresh,
        &access2,
        secret,
        "BBBBBBBB",
        "BBBB-BBBB",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

/// The security events (a reused refresh token, a subject the application refused) and the
/// end user's sign-outs are logged as warnings with ids, never with a token.
#[tokio::test]
async fn security_events_log_ids_not_tokens() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = MemoryStore::builder()
        .client(Client::public("tv", Scope::parse("profile").unwrap()))
        .build();
    let disabled = Arc::new(Mutex::new(false));
    let check = disabled.clone();
    let flow = DeviceFlow::builder(store)
        .issuer("https://auth.example.com")
        .interval(std::time::Duration::ZERO)
        .end_user(|p: &http::request::Parts| p.extensions.get::<Subject>().cloned())
        .account_status(move |_: Subject| {
            let disabled = *check.lock().unwrap();
            async move { Ok(!disabled) }
        })
        .build();
    let app = flow
        .endpoints_layer()
        .layer(service_fn(|_r: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::from("app")))
        }));
    // Signs a device in for alice: its first token pair.
    let sign_in = || async {
        let codes = json(
            app.clone()
                .oneshot(form(
                    "/oauth/device_authorization",
                    "client_id=tv".into(),
                    None,
                ))
                .await
                .unwrap(),
        )
        .await;
        let mut approve = form(
            "/device",
            format!(
                "user_code={}&decision=approve",
                codes["user_code"].as_str().unwrap()
            ),
            None,
        );
        approve.extensions_mut().insert(Subject::new("alice"));
        assert_eq!(app.clone().oneshot(approve).await.unwrap().status(), 200);
        let poll = format!(
            "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=tv&device_code={}",
            codes["device_code"].as_str().unwrap()
        );
        json(
            app.clone()
                .oneshot(form("/oauth/token", poll, None))
                .await
                .unwrap(),
        )
        .await
    };
    let refresh = |token: String| {
        let app = app.clone();
        async move {
            let body = format!("grant_type=refresh_token&client_id=tv&refresh_token={token}");
            json(app.oneshot(form("/oauth/token", body, None)).await.unwrap()).await
        }
    };
    let token = |v: &serde_json::Value, name: &str| v[name].as_str().unwrap().to_owned();

    // Reuse: the first refresh token, two rotations later.
    let first = sign_in().await;
    let second = refresh(token(&first, "refresh_token")).await;
    let third = refresh(token(&second, "refresh_token")).await;
    let reused = refresh(token(&first, "refresh_token")).await;
    assert_eq!(reused["error"], "invalid_grant");
    // A refused subject.
    let other = sign_in().await;
    *disabled.lock().unwrap() = true;
    let refused = refresh(token(&other, "refresh_token")).await;
    assert_eq!(refused["error"], "invalid_grant");
    // A sign-out from the connected-devices page.
    *disabled.lock().unwrap() = false;
    let last = sign_in().await;
    let id = tower_device_flow::RefreshToken::new(token(&last, "refresh_token").as_str())
        .family()
        .unwrap()
        .grant_id();
    let mut revoke = form("/account/devices/revoke", format!("grant_id={id}"), None);
    revoke.extensions_mut().insert(Subject::new("alice"));
    assert_eq!(app.clone().oneshot(revoke).await.unwrap().status(), 200);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        logs.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{logs}"))
            .to_owned()
    };
    let reuse = line("security_event=\"refresh_token_reuse\"");
    assert!(reuse.contains("WARN"), "{reuse}");
    let family = tower_device_flow::RefreshToken::new(token(&first, "refresh_token").as_str())
        .family()
        .unwrap()
        .grant_id()
        .to_string();
    assert!(reuse.contains(&family), "{reuse}");
    let refusal = line("security_event=\"subject_refused\"");
    assert!(
        refusal.contains("WARN") && refusal.contains("alice"),
        "{refusal}"
    );
    assert!(line("device signed out by its end user").contains(&id.to_string()));
    for pair in [&first, &second, &third, &other, &last] {
        for name in ["access_token", "refresh_token"] {
            assert!(
                !logs.contains(&token(pair, name)),
                "a token leaked into the logs"
            );
        }
    }
}

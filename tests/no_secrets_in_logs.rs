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

//! Shared harness for the HTTP integration tests.
//!
//! Every test starts its own server: a [`DeviceFlow`] on a fresh [`MemoryStore`] with the demo's
//! clients and end users, a [`ManualClock`] the test moves by hand (no test sleeps), two
//! bearer-guarded routes and the crate's endpoints in front of them, served by hyper on an
//! ephemeral `127.0.0.1` port. Requests go over real TCP, through a minimal hyper client (one
//! connection per request) or raw bytes for what a well-behaved client cannot send.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::{
    BasicLogin, Client, DeviceFlow, DeviceFlowBuilder, ManualClock, MemoryStore, Scope, Timestamp,
    TokenInfo,
};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const PUBLIC_CLIENT: &str = "demo-device";
pub const CONFIDENTIAL_CLIENT: &str = "demo-confidential";
pub const CONFIDENTIAL_SECRET: &str = "demo-secret";
pub const USER_CODE_ALPHABET: &str = "BCDFGHJKLMNPQRSTVWXZ";
/// Where every test's clock starts (2023-11-14T22:13:20Z).
pub const START_MILLIS: u64 = 1_700_000_000_000;
/// The end-user challenge the harness resolver sends with its 401.
pub const END_USER_CHALLENGE: &str = "Basic realm=\"device\", charset=\"UTF-8\"";

/// The demo's stand-in for an application's login: HTTP Basic against two fixed users.
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

/// `Authorization: Basic` value for `user:password` (no form-encoding; test ids are plain).
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Basic credentials of the demo end users.
pub fn alice() -> String {
    basic("alice", "alice-password")
}

pub fn bob() -> String {
    basic("bob", "bob-password")
}

/// Basic credentials of the confidential client.
pub fn confidential_basic() -> String {
    basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)
}

/// Percent-encodes a form value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a form body from name/value pairs, encoding the values.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn json_response(status: StatusCode, value: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, also the issuer.
    pub base: String,
    pub clock: ManualClock,
    pub flow: DeviceFlow<MemoryStore>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as a string, or `None` if absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// A header that must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("missing header {name}: {self:?}"))
    }

    /// The JSON `error` code.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_owned()
    }

    /// Asserts an RFC 6749 5.2 error response: status, code, JSON and no-store headers.
    #[track_caller]
    pub fn assert_oauth_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.text());
        assert_eq!(self.error(), code, "error code of {}", self.text());
        assert!(
            self.json()["error_description"].is_string(),
            "error_description in {}",
            self.text()
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_no_store(self);
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
    }
}

/// Asserts `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 5.1).
#[track_caller]
pub fn assert_no_store(res: &Resp) {
    assert_eq!(res.header("cache-control"), Some("no-store"), "{res:?}");
    assert_eq!(res.header("pragma"), Some("no-cache"), "{res:?}");
}

/// The device authorization response.
#[derive(Debug, Clone)]
pub struct Codes {
    pub device_code: String,
    pub user_code: String,
    pub json: Value,
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub json: Value,
}

/// Starts a server with the default test configuration.
pub async fn start() -> TestServer {
    start_with(|b| b).await
}

/// Starts a server, letting the test adjust the flow builder (issuer and clock already set).
pub async fn start_with(
    configure: impl FnOnce(DeviceFlowBuilder<MemoryStore>) -> DeviceFlowBuilder<MemoryStore>,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let base = format!("http://{addr}");
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));

    let scopes = Scope::parse("profile email").expect("scope");
    let store = MemoryStore::builder()
        .client(Client::public(PUBLIC_CLIENT, scopes.clone()).with_name("Demo device"))
        .client(
            Client::confidential(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, scopes.clone())
                .with_name("Demo confidential client"),
        )
        .build();
    let builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clock(clock.clone())
        .end_user(BasicLogin::users("device", USERS))
        .scopes_supported(scopes);
    let flow = configure(builder).build();

    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let body = match req.extensions().get::<TokenInfo>() {
                Some(t) => serde_json::json!({
                    "sub": t.subject.as_str(),
                    "scope": t.scope.as_str(),
                    "client_id": t.client_id.as_str(),
                }),
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json_response(StatusCode::OK, body))
        }));
    let email =
        flow.require_oauth("email")
            .layer(service_fn(|req: Request<Incoming>| async move {
                let body = match req.extensions().get::<TokenInfo>() {
                    Some(t) => serde_json::json!({
                        "sub": t.subject.as_str(),
                        "email": format!("{}@example.com", t.subject),
                        "scope": t.scope.as_str(),
                    }),
                    None => serde_json::json!({}),
                };
                Ok::<_, Infallible>(json_response(StatusCode::OK, body))
            }));
    let api = service_fn(move |req: Request<Incoming>| {
        let (me, email) = (me.clone(), email.clone());
        async move {
            let res = match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/email" => email.oneshot(req).await?.map(Either::Left),
                "/api/public" => json_response(StatusCode::OK, serde_json::json!({"ok": true}))
                    .map(Either::Right),
                _ => json_response(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "not_found"}),
                )
                .map(Either::Right),
            };
            Ok::<_, Infallible>(res)
        }
    });
    let app = flow.endpoints_layer().layer(api);

    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    TestServer {
        addr,
        base,
        clock,
        flow,
        task,
    }
}

impl TestServer {
    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn advance_secs(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The server clock, in whole seconds since the epoch.
    pub fn now_secs(&self) -> u64 {
        use tower_device_flow::Clock as _;
        self.clock.now().as_unix_secs()
    }

    /// Sends `req` (its URI a path) on a fresh connection and reads the whole response.
    /// A `Host` header is added unless present.
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Resp {
        if !req.headers().contains_key(header::HOST) {
            let host = HeaderValue::from_str(&self.addr.to_string()).expect("host");
            req.headers_mut().insert(header::HOST, host);
        }
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let res = sender.send_request(req).await.expect("send request");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        let res = Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        assert!(
            !res.status.is_server_error(),
            "server error {}: {}",
            res.status,
            res.text()
        );
        res
    }

    /// A request with extra headers (appended, so a name may repeat).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body.into()))
            .expect("request");
        for (name, value) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    /// A form POST (`application/x-www-form-urlencoded`) with extra headers.
    pub async fn post_form(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.request(Method::POST, path, &all, body.to_owned())
            .await
    }

    /// A form POST, optionally with an `Authorization` header.
    pub async fn post(&self, path: &str, body: &str, authorization: Option<&str>) -> Resp {
        match authorization {
            Some(a) => self.post_form(path, body, &[("authorization", a)]).await,
            None => self.post_form(path, body, &[]).await,
        }
    }

    /// Writes raw bytes on a fresh connection and reads until the server closes it
    /// (send `Connection: close`). Returns the status and the whole response text.
    pub async fn raw(&self, bytes: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut buf = Vec::new();
        // A server that answers before reading everything may reset the connection once the
        // answer is out: keep what arrived.
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        assert!(status < 500, "server error: {text}");
        (status, text)
    }

    // ---- the device flow, step by step -------------------------------------------------

    /// Device authorization for the public client with an optional scope; must succeed.
    pub async fn authorize(&self, scope: Option<&str>) -> Codes {
        let mut pairs = vec![("client_id", PUBLIC_CLIENT)];
        if let Some(s) = scope {
            pairs.push(("scope", s));
        }
        let res = self
            .post("/oauth/device_authorization", &form(&pairs), None)
            .await;
        codes_of(&res)
    }

    /// Device authorization for the confidential client (Basic); must succeed.
    pub async fn authorize_confidential(&self, scope: Option<&str>) -> Codes {
        let mut pairs = vec![];
        if let Some(s) = scope {
            pairs.push(("scope", s));
        }
        let res = self
            .post(
                "/oauth/device_authorization",
                &form(&pairs),
                Some(&confidential_basic()),
            )
            .await;
        codes_of(&res)
    }

    /// One poll of the token endpoint by the public client.
    pub async fn poll(&self, device_code: &str) -> Resp {
        let body = form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
            ("client_id", PUBLIC_CLIENT),
        ]);
        self.post("/oauth/token", &body, None).await
    }

    /// One poll of the token endpoint by the confidential client (Basic).
    pub async fn poll_confidential(&self, device_code: &str) -> Resp {
        let body = form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
        ]);
        self.post("/oauth/token", &body, Some(&confidential_basic()))
            .await
    }

    /// The end user's decision on the verification page (`approve` or `deny`).
    pub async fn decide(&self, credentials: &str, user_code: &str, decision: &str) -> Resp {
        let body = form(&[("user_code", user_code), ("decision", decision)]);
        self.post("/device", &body, Some(credentials)).await
    }

    /// Approves as `credentials`, asserting the decision was recorded.
    pub async fn approve(&self, credentials: &str, user_code: &str) {
        let res = self.decide(credentials, user_code, "approve").await;
        res.assert_status(200);
    }

    /// The whole flow for the public client: authorize, alice approves, poll. Returns tokens.
    pub async fn tokens(&self, scope: Option<&str>) -> Tokens {
        self.tokens_for(&alice(), scope).await
    }

    /// The whole flow for the public client, approved by `credentials`.
    pub async fn tokens_for(&self, credentials: &str, scope: Option<&str>) -> Tokens {
        let codes = self.authorize(scope).await;
        self.approve(credentials, &codes.user_code).await;
        let res = self.poll(&codes.device_code).await;
        tokens_of(&res)
    }

    /// A refresh by the public client, optionally narrowing the scope.
    pub async fn refresh(&self, refresh_token: &str, scope: Option<&str>) -> Resp {
        let mut pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", PUBLIC_CLIENT),
        ];
        if let Some(s) = scope {
            pairs.push(("scope", s));
        }
        self.post("/oauth/token", &form(&pairs), None).await
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn bearer_get(&self, path: &str, token: &str) -> Resp {
        self.get_with(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }

    /// Revocation by the public client.
    pub async fn revoke(&self, token: &str, hint: Option<&str>) -> Resp {
        let mut pairs = vec![("token", token), ("client_id", PUBLIC_CLIENT)];
        if let Some(h) = hint {
            pairs.push(("token_type_hint", h));
        }
        self.post("/oauth/revoke", &form(&pairs), None).await
    }

    /// Introspection by the confidential client.
    pub async fn introspect(&self, token: &str) -> Resp {
        self.post(
            "/oauth/introspect",
            &form(&[("token", token)]),
            Some(&confidential_basic()),
        )
        .await
    }
}

/// The codes of a successful device authorization response.
#[track_caller]
pub fn codes_of(res: &Resp) -> Codes {
    res.assert_status(200);
    let json = res.json();
    Codes {
        device_code: json["device_code"]
            .as_str()
            .expect("device_code")
            .to_owned(),
        user_code: json["user_code"].as_str().expect("user_code").to_owned(),
        json,
    }
}

/// The tokens of a successful token response (asserting the RFC 6749 5.1 shape and headers).
#[track_caller]
pub fn tokens_of(res: &Resp) -> Tokens {
    res.assert_status(200);
    assert_no_store(res);
    let json = res.json();
    assert_eq!(json["token_type"], "Bearer", "{json}");
    Tokens {
        access: json["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: json["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        json,
    }
}

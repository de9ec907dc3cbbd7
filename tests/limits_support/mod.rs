//! Shared by the limits tests: the flow served by the examples' server loop on an ephemeral
//! 127.0.0.1 port, and a client that sends each request from a chosen loopback address
//! (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to the loopback interface), so the
//! server sees distinct TCP peers.
#![allow(dead_code)] // each test file uses part of it

#[path = "../../examples/common/server_loop.rs"]
pub mod server_loop;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::{
    Client, DeviceFlow, DeviceFlowBuilder, ManualClock, MemoryStore, Scope, Store, Timestamp,
};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const PUBLIC_CLIENT: &str = "demo-device";
pub const CONFIDENTIAL_CLIENT: &str = "demo-confidential";
pub const CONFIDENTIAL_SECRET: &str = "demo-secret";
pub const START_MILLIS: u64 = 1_700_000_000_000;

/// `127.0.0.n`.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The demo clients on a memory store (`max_pending` grants at most).
pub fn memory_store(max_pending: Option<usize>) -> MemoryStore {
    let scopes = Scope::parse("profile email").unwrap();
    MemoryStore::builder()
        .client(Client::public(PUBLIC_CLIENT, scopes.clone()).with_name("Demo device"))
        .client(Client::confidential(
            CONFIDENTIAL_CLIENT,
            CONFIDENTIAL_SECRET,
            scopes,
        ))
        .max_pending_grants(max_pending)
        .build()
}

/// An answer, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// The `Retry-After` of a refusal, which must be there.
    #[track_caller]
    pub fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After: {self:?}"))
            .parse()
            .expect("Retry-After in seconds")
    }

    /// Asserts a refusal: `status`, an RFC JSON error `code`, `Retry-After`, `nosniff`.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, code: &str) -> u64 {
        assert_eq!(self.status.as_u16(), status, "{self:?} {}", self.text());
        assert_eq!(self.error(), code, "{}", self.text());
        assert!(self.json()["error_description"].is_string());
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        let secs = self.retry_after();
        assert!(secs >= 1);
        secs
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
    }
}

/// A running server.
pub struct Server<S> {
    pub addr: SocketAddr,
    pub base: String,
    pub clock: ManualClock,
    pub flow: DeviceFlow<S>,
    task: JoinHandle<()>,
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(value: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Serves a flow on `store`, configured by `configure` (issuer and a manual clock already set).
pub async fn start<S: Store + Clone + Send + Sync + 'static>(
    store: S,
    configure: impl FnOnce(DeviceFlowBuilder<S>) -> DeviceFlowBuilder<S>,
) -> Server<S> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}");
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
    let builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clock(clock.clone())
        .interval(Duration::from_secs(5));
    let flow = configure(builder).build();
    let me =
        flow.require_oauth("profile")
            .layer(service_fn(|_req: Request<Incoming>| async move {
                Ok::<_, Infallible>(json_response(serde_json::json!({"ok": true})))
            }));
    let api = service_fn(move |req: Request<Incoming>| {
        let me = me.clone();
        async move {
            Ok::<_, Infallible>(match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                _ => json_response(serde_json::json!({"error": "not_found"})).map(Either::Right),
            })
        }
    });
    let app = flow.endpoints_layer().layer(api);
    let limits = server_loop::ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        ..server_loop::ServerLimits::default()
    };
    let task = tokio::spawn(server_loop::serve(listener, app, limits));
    Server {
        addr,
        base,
        clock,
        flow,
        task,
    }
}

impl<S> Server<S> {
    pub fn advance_secs(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Sends `method path` from `from` with `headers` and `body` on a fresh connection.
    pub async fn send(
        &self,
        from: IpAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind source");
        let stream = socket.connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let res = sender.send_request(req).await.expect("send");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A form POST from `from`.
    pub async fn post(
        &self,
        from: IpAddr,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(from, Method::POST, path, &all, body).await
    }

    /// A device authorization of the public client from `from`.
    pub async fn authorize(&self, from: IpAddr) -> Resp {
        self.post(
            from,
            "/oauth/device_authorization",
            &form(&[("client_id", PUBLIC_CLIENT)]),
            &[],
        )
        .await
    }

    /// A successful device authorization from `from`: (device_code, user_code).
    pub async fn codes(&self, from: IpAddr) -> (String, String) {
        let res = self.authorize(from).await;
        res.assert_status(200);
        let j = res.json();
        (
            j["device_code"].as_str().unwrap().to_owned(),
            j["user_code"].as_str().unwrap().to_owned(),
        )
    }

    /// A poll of the public client from `from`.
    pub async fn poll(&self, from: IpAddr, device_code: &str) -> Resp {
        let body = form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
            ("client_id", PUBLIC_CLIENT),
        ]);
        self.post(from, "/oauth/token", &body, &[]).await
    }

    /// A verification POST from `from` signed in with `authorization`.
    pub async fn verify(
        &self,
        from: IpAddr,
        authorization: &str,
        user_code: &str,
        decision: Option<&str>,
    ) -> Resp {
        let mut pairs = vec![("user_code", user_code)];
        if let Some(d) = decision {
            pairs.push(("decision", d));
        }
        self.post(
            from,
            "/device",
            &form(&pairs),
            &[
                ("authorization", authorization),
                ("accept", "application/json"),
            ],
        )
        .await
    }
}

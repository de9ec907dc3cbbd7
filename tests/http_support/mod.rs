//! Shared by the integration tests that run servers on real sockets (ephemeral loopback ports):
//! a small HTTP/1.1 client, the demo end-user login, and the device flow driven over HTTP.

#![allow(dead_code)] // each test file uses part of it

use std::convert::Infallible;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::Service;
use tower_device_flow::Subject;

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The demo end users of `DEMO_CONTRACT.md`.
pub const ALICE: (&str, &str) = ("alice", "alice-password");
pub const BOB: (&str, &str) = ("bob", "bob-password");

/// The demo login as an end-user resolver: HTTP Basic against [`ALICE`] and [`BOB`].
pub fn demo_login(parts: &Parts) -> Option<Subject> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    [ALICE, BOB]
        .iter()
        .find(|(u, p)| *u == user && *p == password)
        .map(|(u, _)| Subject::new(u))
}

/// An answer, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, `""` if absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// An HTTP/1.1 client for `http://` URLs.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let res = self
            .client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POSTs a form, with HTTP Basic credentials if given.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Reply {
        let body = serde_urlencoded::to_string(form).expect("form");
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(creds) = basic {
            req = req.header(header::AUTHORIZATION, basic_auth(creds));
        }
        self.send(req.body(Full::from(body)).expect("request"))
            .await
    }

    /// GETs `url`, with a bearer token if given.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Reply {
        let mut req = Request::get(url);
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(req.body(Full::default()).expect("request")).await
    }

    /// GETs `url` with HTTP Basic credentials.
    pub async fn get_basic(&self, url: &str, creds: (&str, &str)) -> Reply {
        let req = Request::get(url)
            .header(header::AUTHORIZATION, basic_auth(creds))
            .body(Full::default())
            .expect("request");
        self.send(req).await
    }

    /// The whole device flow for `client_id` and `scope`, approved by `user`: the token
    /// response. Uses the default paths under `base`.
    pub async fn device_flow_tokens(
        &self,
        base: &str,
        client_id: &str,
        scope: &str,
        user: (&str, &str),
    ) -> Value {
        let res = self
            .post_form(
                &format!("{base}/oauth/device_authorization"),
                &[("client_id", client_id), ("scope", scope)],
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let codes = res.json();
        let device_code = codes["device_code"].as_str().expect("device_code");
        let user_code = codes["user_code"].as_str().expect("user_code");
        let res = self
            .post_form(
                &format!("{base}/device"),
                &[("user_code", user_code), ("decision", "approve")],
                Some(user),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let res = self.poll(base, client_id, device_code).await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }

    /// One device-code poll of the token endpoint.
    pub async fn poll(&self, base: &str, client_id: &str, device_code: &str) -> Reply {
        self.post_form(
            &format!("{base}/oauth/token"),
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
            None,
        )
        .await
    }
}

pub fn basic_auth((user, password): (&str, &str)) -> HeaderValue {
    let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
    HeaderValue::try_from(value).expect("header value")
}

/// An ephemeral loopback port and its base URL.
pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    (listener, base)
}

/// Serves `svc` over HTTP/1.1 on `listener` until the test's runtime ends.
pub fn serve_hyper<S, B>(listener: TcpListener, svc: S)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

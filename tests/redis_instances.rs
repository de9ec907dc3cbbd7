//! Many instances, one truth: two servers on one Redis serve one device flow.
//!
//! The device authorizes on A, the end user approves on B, the device polls A and B with 32
//! polls in flight at once, exactly one token is issued, and both instances accept it. An
//! instance restarted mid-flow loses nothing.
//!
//! Needs `REDIS_URL` (and `--features redis`). Without it the tests say loudly that they did
//! not run, and fail when `CI` is set.
#![cfg(feature = "redis")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_device_flow::{Client, DeviceFlow, RedisStore, Scope, Subject, TokenInfo};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let msg = format!("REDIS_URL not set: Redis multi-instance test `{test}` did NOT run");
            eprintln!("\n!!! {msg} !!!\n");
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
            assert!(
                !ci,
                "{msg}; CI is set, so a skipped Redis test is a failure"
            );
            None
        }
    }
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("tdf-it-{test}-{}-{nanos}", std::process::id())
}

async fn delete_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// One server instance: its own Redis connection, its own port.
struct Instance {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Instance {
    async fn start(url: &str, prefix: &str) -> Instance {
        let store = RedisStore::builder()
            .prefix(prefix)
            .client(Client::public(
                "demo-device",
                Scope::parse("profile email").unwrap(),
            ))
            .connect(url)
            .await
            .unwrap();
        let flow = DeviceFlow::builder(store)
            .interval(Duration::from_secs(5))
            // The application's login, reduced to a header for the test.
            .end_user(|p: &http::request::Parts| {
                p.headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(Subject::new)
            })
            .build();
        let api =
            flow.require_oauth("profile")
                .layer(service_fn(|req: Request<Incoming>| async move {
                    let sub = req
                        .extensions()
                        .get::<TokenInfo>()
                        .map(|t| t.subject.to_string())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(sub)))
                }));
        let app = flow.endpoints_layer().layer(api);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Instance { addr, task }
    }

    /// Stops the instance: its listener, connections and Redis connection go away.
    fn stop(self) {
        self.task.abort();
    }
}

async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (StatusCode, serde_json::Value, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

fn form(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(body))
        .unwrap()
}

async fn authorize(addr: SocketAddr) -> (String, String) {
    let (status, json, _) = send(
        addr,
        form(
            "/oauth/device_authorization",
            "client_id=demo-device&scope=profile".into(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    (
        json["device_code"].as_str().unwrap().to_owned(),
        json["user_code"].as_str().unwrap().to_owned(),
    )
}

async fn poll(addr: SocketAddr, device_code: &str) -> (StatusCode, serde_json::Value) {
    let (status, json, _) = send(
        addr,
        form(
            "/oauth/token",
            format!("grant_type={GRANT}&client_id=demo-device&device_code={device_code}"),
        ),
    )
    .await;
    (status, json)
}

async fn approve(addr: SocketAddr, user_code: &str, user: &str) -> StatusCode {
    let mut req = form("/device", format!("user_code={user_code}&decision=approve"));
    req.headers_mut().insert("x-user", user.parse().unwrap());
    send(addr, req).await.0
}

async fn me(addr: SocketAddr, token: &str) -> (StatusCode, String) {
    let req = Request::get("/api/me")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let (status, _, text) = send(addr, req).await;
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_issue_exactly_one_token() {
    let Some(url) = redis_url("two_instances_issue_exactly_one_token") else {
        return;
    };
    let prefix = unique_prefix("two");
    let a = Instance::start(&url, &prefix).await;
    let b = Instance::start(&url, &prefix).await;

    let (device_code, user_code) = authorize(a.addr).await;
    let (status, json) = poll(b.addr, &device_code).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    assert_eq!(approve(b.addr, &user_code, "alice").await, 200);

    // 32 polls in flight at once, half on each instance.
    let polls: Vec<_> = (0..32)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let code = device_code.clone();
            tokio::spawn(async move { poll(addr, &code).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for p in polls {
        let (status, json) = p.await.unwrap();
        match status.as_u16() {
            200 => tokens.push(json["access_token"].as_str().unwrap().to_owned()),
            400 => assert_eq!(json["error"], "invalid_grant", "{json}"),
            other => panic!("unexpected status {other}: {json}"),
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one poll must receive tokens");

    // Both instances accept the token at the bearer layer.
    for addr in [a.addr, b.addr] {
        assert_eq!(
            me(addr, &tokens[0]).await,
            (StatusCode::OK, "alice".to_owned())
        );
    }
    a.stop();
    b.stop();
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_an_instance_mid_flow_loses_nothing() {
    let Some(url) = redis_url("restarting_an_instance_mid_flow_loses_nothing") else {
        return;
    };
    let prefix = unique_prefix("restart");
    let a = Instance::start(&url, &prefix).await;
    let (device_code, user_code) = authorize(a.addr).await;
    let (status, json) = poll(a.addr, &device_code).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    a.stop();

    // A new process in its place: the grant, its poll time and its interval are all still there.
    let a2 = Instance::start(&url, &prefix).await;
    let (status, json) = poll(a2.addr, &device_code).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (400, Some("slow_down")),
        "the last poll survived the restart"
    );
    assert_eq!(approve(a2.addr, &user_code, "bob").await, 200);
    let (status, json) = poll(a2.addr, &device_code).await;
    assert_eq!(status, 200, "{json}");
    let token = json["access_token"].as_str().unwrap().to_owned();
    a2.stop();

    let a3 = Instance::start(&url, &prefix).await;
    assert_eq!(
        me(a3.addr, &token).await,
        (StatusCode::OK, "bob".to_owned())
    );
    let (status, json) = poll(a3.addr, &device_code).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    a3.stop();
    delete_prefix(&url, &prefix).await;
}

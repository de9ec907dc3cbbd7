//! Many processes, one truth: the demo server (`examples/device_server.rs`) run as separate OS
//! processes over one PostgreSQL database, and restarted over one SQLite file.
//!
//! PostgreSQL: two processes start together on one schema (both migrate it at once); a device
//! authorizes on one, the end user approves on the other, 32 polls in flight split over both
//! get exactly one token, and the token works on both. Then one process is killed (SIGKILL,
//! no shutdown) and started again mid-flow, twice, and loses nothing. SQLite: the same restart
//! test for one process on one file.
//!
//! The test builds the example with `cargo build --example device_server` and the very
//! features this test binary was built with, into the same target directory and profile, so
//! after `cargo test` (which builds the examples anyway) it is a no-op, and run alone it
//! compiles only the example. `POSTGRES_URL` must point at the server (it fails loudly under
//! `CI` without); each test uses a schema, or a file, of its own.
#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod examples_support;
mod sql_support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener as StdListener};

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The list above names every feature of Cargo.toml: else the example would be built with
/// another feature set, and the library rebuilt for it (slowly, but correctly).
#[test]
fn the_feature_list_is_complete() {
    examples_support::check_feature_list();
}

/// A demo server process, killed when dropped.
struct Demo {
    addr: SocketAddr,
    child: Child,
}

impl Demo {
    /// Starts the demo with `store_args` on a free port and waits (bounded) until it listens.
    fn start(store_args: &[&str]) -> Demo {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(examples_support::example_binary("device_server"))
            .args(["--addr", &addr.to_string(), "--interval", "5"])
            .args(store_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo server");
        // It prints its address once it listens (after migrating): wait for that line.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        // Its log goes to stderr: drain it all along, so a full pipe never stops the server.
        let stderr = child.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut log);
            log
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let log = log.join().unwrap_or_default();
            panic!("the demo server did not start: {log}");
        }
        Demo { addr, child }
    }

    /// Kills the process at once (no graceful shutdown), as a crash would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, serde_json::Value) {
    let stream = TcpStream::connect(addr).await.expect("connect to the demo");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let res = sender.send_request(req).await.expect("request");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn form(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(body))
        .expect("request")
}

async fn authorize(addr: SocketAddr) -> (String, String) {
    let (status, json) = send(
        addr,
        form(
            "/oauth/device_authorization",
            "client_id=demo-device&scope=profile".into(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    (
        json["device_code"]
            .as_str()
            .expect("device_code")
            .to_owned(),
        json["user_code"].as_str().expect("user_code").to_owned(),
    )
}

async fn poll(addr: SocketAddr, device_code: &str) -> (StatusCode, serde_json::Value) {
    send(
        addr,
        form(
            "/oauth/token",
            format!("grant_type={GRANT}&client_id=demo-device&device_code={device_code}"),
        ),
    )
    .await
}

async fn refresh(addr: SocketAddr, refresh_token: &str) -> (StatusCode, serde_json::Value) {
    send(
        addr,
        form(
            "/oauth/token",
            format!("grant_type=refresh_token&client_id=demo-device&refresh_token={refresh_token}"),
        ),
    )
    .await
}

async fn approve(addr: SocketAddr, user_code: &str, user: &str) -> StatusCode {
    let mut req = form("/device", format!("user_code={user_code}&decision=approve"));
    let basic = STANDARD.encode(format!("{user}:{user}-password"));
    req.headers_mut().insert(
        "authorization",
        format!("Basic {basic}").parse().expect("header"),
    );
    send(addr, req).await.0
}

async fn me(addr: SocketAddr, token: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::get("/api/me")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .expect("request");
    send(addr, req).await
}

fn error_of(reply: &(StatusCode, serde_json::Value)) -> (u16, Option<&str>) {
    (reply.0.as_u16(), reply.1["error"].as_str())
}

/// A flow that crosses restarts of the process(es) `start` makes: after each step the running
/// process is killed and a new one takes its place.
async fn restart_mid_flow(start: impl Fn() -> Demo, user: &str) {
    let a = start();
    let (device_code, user_code) = authorize(a.addr).await;
    assert_eq!(
        error_of(&poll(a.addr, &device_code).await),
        (400, Some("authorization_pending"))
    );
    a.kill();

    // A new process: the grant, its last poll and its interval are still there.
    let b = start();
    assert_eq!(
        error_of(&poll(b.addr, &device_code).await),
        (400, Some("slow_down")),
        "the last poll survived the restart"
    );
    assert_eq!(approve(b.addr, &user_code, user).await, 200);
    b.kill();

    let c = start();
    let (status, tokens) = poll(c.addr, &device_code).await;
    assert_eq!(status, 200, "the approval survived the restart: {tokens}");
    let access = tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    c.kill();

    let d = start();
    let (status, body) = me(d.addr, &access).await;
    assert_eq!((status, body["sub"].as_str()), (StatusCode::OK, Some(user)));
    assert_eq!(
        error_of(&poll(d.addr, &device_code).await),
        (400, Some("invalid_grant")),
        "the redemption survived the restart"
    );
    let (status, rotated) = refresh(d.addr, &refresh_token).await;
    assert_eq!(
        status, 200,
        "the refresh token survived the restart: {rotated}"
    );
    let new_access = rotated["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    d.kill();

    let e = start();
    assert_eq!(me(e.addr, &new_access).await.0, StatusCode::OK);
    assert_eq!(
        me(e.addr, &access).await.0,
        StatusCode::UNAUTHORIZED,
        "the rotation's revocation survived the restart"
    );
    e.kill();
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sql_support::pg::drop_schema;
    use sql_support::{guarded, postgres_url, unique_name};

    fn url_with_schema(url: &str, schema: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options[search_path]={schema}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_issue_exactly_one_token() {
        let Some(url) = postgres_url("two_processes_issue_exactly_one_token") else {
            return;
        };
        let schema = unique_name("two_processes");
        let db = url_with_schema(&url, &schema);
        let body = async move {
            // Started together: both migrate the same new schema at once.
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| Demo::start(&["--postgres", &db]));
                let b = s.spawn(|| Demo::start(&["--postgres", &db]));
                (a.join().expect("start a"), b.join().expect("start b"))
            });
            let (device_code, user_code) = authorize(a.addr).await;
            assert_eq!(
                error_of(&poll(b.addr, &device_code).await),
                (400, Some("authorization_pending"))
            );
            assert_eq!(approve(b.addr, &user_code, "alice").await, 200);

            // 32 polls in flight at once, half on each process.
            let polls: Vec<_> = (0..32)
                .map(|i| {
                    let addr = if i % 2 == 0 { a.addr } else { b.addr };
                    let code = device_code.clone();
                    tokio::spawn(async move { poll(addr, &code).await })
                })
                .collect();
            let mut tokens = Vec::new();
            for p in polls {
                let (status, json) = p.await.expect("poll task");
                match status.as_u16() {
                    200 => tokens.push(json["access_token"].as_str().expect("token").to_owned()),
                    400 => assert_eq!(json["error"], "invalid_grant", "{json}"),
                    other => panic!("unexpected status {other}: {json}"),
                }
            }
            assert_eq!(tokens.len(), 1, "exactly one poll must receive tokens");
            for addr in [a.addr, b.addr] {
                let (status, body) = me(addr, &tokens[0]).await;
                assert_eq!(
                    (status, body["sub"].as_str()),
                    (StatusCode::OK, Some("alice"))
                );
            }
            a.kill();
            b.kill();
        };
        guarded(body, drop_schema(&url, &schema)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_restarted_mid_flow_loses_nothing() {
        let Some(url) = postgres_url("a_process_restarted_mid_flow_loses_nothing") else {
            return;
        };
        let schema = unique_name("pg_restart");
        let db = url_with_schema(&url, &schema);
        let body = async move {
            restart_mid_flow(|| Demo::start(&["--postgres", &db]), "bob").await;
        };
        guarded(body, drop_schema(&url, &schema)).await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use sql_support::TempDir;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_restarted_mid_flow_loses_nothing() {
        let dir = TempDir::new("sqlite_restart");
        let file = dir.file("demo.sqlite3");
        let path = file.to_str().expect("a UTF-8 temporary path").to_owned();
        restart_mid_flow(|| Demo::start(&["--sqlite", &path]), "alice").await;
        assert!(file.exists());
    }
}

//! Many instances, one truth: two servers on one Redis serve one device flow.
//!
//! The device authorizes on A, the end user approves on B, the device polls A and B with 32
//! polls in flight at once, exactly one token is issued, and both instances accept it. An
//! instance restarted mid-flow loses nothing. A refresh token reused on B revokes a grant whose
//! tokens A issued, on both; a rotation on A racing a revocation on B never leaves a live token;
//! and a rotation whose reply Redis never delivered (the connection cut right after Redis ran
//! it) costs the device nothing: its retry with the old refresh token keeps its grant.
//!
//! Needs `REDIS_URL` (and `--features redis`). Without it the tests say loudly that they did
//! not run, and fail when `CI` is set.
#![cfg(feature = "redis")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use redis::aio::ConnectionManagerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_device_flow::{
    AccessToken, Client, Clock, DeviceFlow, ManualClock, RedisStore, RefreshToken, Scope, Subject,
    SystemClock, TokenInfo,
};

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
        Self::start_with(url, prefix, None, ConnectionManagerConfig::new()).await
    }

    /// An instance on `clock` (the system clock if `None`) whose Redis connection has `config`.
    async fn start_with(
        url: &str,
        prefix: &str,
        clock: Option<ManualClock>,
        config: ConnectionManagerConfig,
    ) -> Instance {
        let store = RedisStore::builder()
            .prefix(prefix)
            .client(Client::public(
                "demo-device",
                Scope::parse("profile email").unwrap(),
            ))
            .connection_config(config)
            .connect(url)
            .await
            .unwrap();
        let mut builder = DeviceFlow::builder(store).issuer("https://auth.example.com");
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        let flow = builder
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

async fn refresh(addr: SocketAddr, refresh_token: &str) -> (StatusCode, serde_json::Value) {
    let (status, json, _) = send(
        addr,
        form(
            "/oauth/token",
            format!("grant_type=refresh_token&client_id=demo-device&refresh_token={refresh_token}"),
        ),
    )
    .await;
    (status, json)
}

/// The access and refresh token of a 200 token response.
fn pair(json: &serde_json::Value) -> (String, String) {
    (
        json["access_token"].as_str().unwrap().to_owned(),
        json["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Authorizes on `a`, approves on `b` as `user`, redeems on `a`: the first pair.
async fn sign_in(a: SocketAddr, b: SocketAddr, user: &str) -> (String, String) {
    let (device_code, user_code) = authorize(a).await;
    assert_eq!(approve(b, &user_code, user).await, 200);
    let (status, json) = poll(a, &device_code).await;
    assert_eq!(status, 200, "{json}");
    pair(&json)
}

/// A raw connection for looking at what the instances left in Redis.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The access-token keys under `prefix` (see the key layout on `RedisStore`).
async fn access_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}:a:*"))
        .query_async(conn)
        .await
        .unwrap()
}

/// A field of the grant that `refresh_token` belongs to, as stored.
async fn grant_field(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    refresh_token: &str,
    field: &str,
) -> Option<String> {
    let id = RefreshToken::new(refresh_token)
        .family()
        .unwrap()
        .grant_id();
    redis::cmd("HGET")
        .arg(format!("{{{prefix}}}:g:{id}"))
        .arg(field)
        .query_async(conn)
        .await
        .unwrap()
}

fn digest_hex(token: &str) -> String {
    AccessToken::new(token).digest().to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuse_on_one_instance_revokes_a_grant_issued_on_another() {
    let Some(url) = redis_url("reuse_on_one_instance_revokes_a_grant_issued_on_another") else {
        return;
    };
    let prefix = unique_prefix("reuse");
    let clock = ManualClock::new(SystemClock.now());
    let config = ConnectionManagerConfig::new;
    let a = Instance::start_with(&url, &prefix, Some(clock.clone()), config()).await;
    let b = Instance::start_with(&url, &prefix, Some(clock.clone()), config()).await;

    // Everything the device holds comes from A.
    let (_, r1) = sign_in(a.addr, a.addr, "alice").await;
    let (status, json) = refresh(a.addr, &r1).await;
    assert_eq!(status, 200, "{json}");
    let (a2, r2) = pair(&json);
    assert_eq!(me(b.addr, &a2).await, (StatusCode::OK, "alice".to_owned()));

    // Past the grace period, the replaced token comes back, on B: reuse.
    clock.advance(Duration::from_secs(31));
    let (status, json) = refresh(b.addr, &r1).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The whole grant is gone, on both instances.
    for addr in [a.addr, b.addr] {
        assert_eq!(me(addr, &a2).await.0, StatusCode::UNAUTHORIZED);
        let (status, json) = refresh(addr, &r2).await;
        assert_eq!(
            (status.as_u16(), json["error"].as_str()),
            (400, Some("invalid_grant")),
            "the live refresh token died with its grant"
        );
    }
    let mut conn = raw(&url).await;
    assert_eq!(grant_field(&mut conn, &prefix, &r2, "v").await, None);
    assert_eq!(access_keys(&mut conn, &prefix).await, Vec::<String>::new());
    a.stop();
    b.stop();
    delete_prefix(&url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_racing_revocation_never_leaves_a_live_token() {
    let Some(url) = redis_url("rotation_racing_revocation_never_leaves_a_live_token") else {
        return;
    };
    let prefix = unique_prefix("race");
    let clock = ManualClock::new(SystemClock.now());
    let config = ConnectionManagerConfig::new;
    let a = Instance::start_with(&url, &prefix, Some(clock.clone()), config()).await;
    let b = Instance::start_with(&url, &prefix, Some(clock.clone()), config()).await;
    let mut conn = raw(&url).await;
    let (mut rotation_first, mut revocation_first) = (0, 0);

    for round in 0..40 {
        let (_, r1) = sign_in(a.addr, b.addr, "bob").await;
        let (status, json) = refresh(a.addr, &r1).await;
        assert_eq!(status, 200, "{json}");
        let (a2, r2) = pair(&json);
        clock.advance(Duration::from_secs(31));
        // A rotates with the live token while B sees the replaced one come back and revokes.
        let (addr_a, addr_b) = (a.addr, b.addr);
        let rotating = tokio::spawn(async move { refresh(addr_a, &r2).await });
        let revoking = tokio::spawn(async move { refresh(addr_b, &r1).await });
        let (rotated, revoked) = (rotating.await.unwrap(), revoking.await.unwrap());
        assert_eq!(
            (revoked.0.as_u16(), revoked.1["error"].as_str()),
            (400, Some("invalid_grant")),
            "round {round}"
        );
        let mut tokens = vec![a2];
        match rotated.0.as_u16() {
            200 => {
                rotation_first += 1;
                let (a3, r3) = pair(&rotated.1);
                tokens.push(a3);
                let (status, json) = refresh(a.addr, &r3).await;
                assert_eq!(
                    (status.as_u16(), json["error"].as_str()),
                    (400, Some("invalid_grant")),
                    "round {round}: the rotated refresh token outlived the revocation"
                );
            }
            400 => {
                revocation_first += 1;
                assert_eq!(rotated.1["error"], "invalid_grant", "round {round}");
            }
            other => panic!("round {round}: unexpected {other}: {}", rotated.1),
        }
        for token in &tokens {
            for addr in [a.addr, b.addr] {
                assert_eq!(
                    me(addr, token).await.0,
                    StatusCode::UNAUTHORIZED,
                    "round {round}: a token outlived its revoked grant"
                );
            }
        }
        // Not only refused: gone. No access token record survives a revoked grant.
        assert_eq!(
            access_keys(&mut conn, &prefix).await,
            Vec::<String>::new(),
            "round {round}"
        );
    }
    eprintln!("rotation won {rotation_first} races, revocation {revocation_first}");
    a.stop();
    b.stop();
    delete_prefix(&url, &prefix).await;
}

/// What [`CutProxy`] does with the next connection or bytes.
enum Mode {
    /// Forward everything.
    Pass,
    /// Forward; but once a client sends bytes containing the pattern, forward them, swallow
    /// Redis's reply, and cut the connection.
    CutAfter(Vec<u8>),
    /// Cut every connection at once (as an unreachable Redis would).
    Down,
}

/// A TCP proxy in front of Redis that can lose one reply deterministically: the command that
/// triggers it runs on the server, and its reply never reaches the client.
struct CutProxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    async fn start(redis: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let shared = Arc::clone(&mode);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if matches!(*shared.lock().unwrap(), Mode::Down) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(redis).await else {
                    continue;
                };
                tokio::spawn(Self::relay(client, server, Arc::clone(&shared)));
            }
        });
        CutProxy { addr, mode, task }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Relays one connection until either side closes, or until the cut.
    async fn relay(mut client: TcpStream, mut server: TcpStream, mode: Arc<Mutex<Mode>>) {
        let (mut to_client, mut from_server) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
        // The tail of what the client sent since the proxy was armed, so that a pattern split
        // across reads is still seen.
        let mut sent: Vec<u8> = Vec::new();
        loop {
            tokio::select! {
                n = client.read(&mut to_client) => {
                    let Ok(n @ 1..) = n else { return };
                    let cut = match &*mode.lock().unwrap() {
                        Mode::CutAfter(pattern) => {
                            sent.extend_from_slice(&to_client[..n]);
                            let cut = sent.windows(pattern.len()).any(|w| w == pattern);
                            let keep = sent.len().saturating_sub(pattern.len());
                            sent.drain(..keep);
                            cut
                        }
                        Mode::Down => return,
                        // Only what is sent once armed counts.
                        Mode::Pass => {
                            sent.clear();
                            false
                        }
                    };
                    if server.write_all(&to_client[..n]).await.is_err() {
                        return;
                    }
                    if cut {
                        // Redis runs the command; its reply is read and dropped. From now on
                        // Redis is unreachable, so that the client cannot learn the outcome.
                        let _ = server.read(&mut from_server).await;
                        *mode.lock().unwrap() = Mode::Down;
                        return;
                    }
                }
                n = server.read(&mut from_server) => {
                    let Ok(n @ 1..) = n else { return };
                    if client.write_all(&from_server[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The issue this answers: "when the store applies a rotation but the reply is lost, the device
/// gets 503, retries with its old refresh token ... and has lost its grant". Here Redis runs the
/// rotation, the reply is cut off and Redis stays unreachable for the endpoint's look for its
/// new token, so the device gets 503; Redis comes back; the device retries with its old refresh
/// token within the grace period and keeps its grant. No sleeping: the proxy cuts the
/// connection right after Redis answers the rotation, and the clock is a `ManualClock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_reply_is_lost_keeps_the_grant() {
    let Some(url) = redis_url("a_rotation_whose_reply_is_lost_keeps_the_grant") else {
        return;
    };
    let info = redis::Client::open(url.as_str()).unwrap();
    let redis::ConnectionAddr::Tcp(host, port) = info.get_connection_info().addr().clone() else {
        panic!("this test needs REDIS_URL to be a plain TCP redis:// address");
    };
    let redis_addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = CutProxy::start(redis_addr).await;
    let prefix = unique_prefix("lost");
    let clock = ManualClock::new(SystemClock.now());
    // One connection attempt per reconnection, so a Redis that is down fails fast.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(Duration::from_secs(1)));
    let a = Instance::start_with(
        &format!("redis://{}", proxy.addr),
        &prefix,
        Some(clock.clone()),
        config,
    )
    .await;
    let mut conn = raw(&url).await;

    let (a1, r1) = sign_in(a.addr, a.addr, "dana").await;
    assert_eq!(
        grant_field(&mut conn, &prefix, &r1, "v").await.as_deref(),
        Some("0")
    );

    // The rotation is the only command of this refresh that names the access token it
    // replaces: cut the connection right after Redis has run it.
    proxy.set(Mode::CutAfter(
        format!("{{{prefix}}}:a:{}", digest_hex(&a1)).into_bytes(),
    ));
    let (status, json) = refresh(a.addr, &r1).await;
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{json}"
    );
    // Redis did rotate: the pair the device never received is the grant's now.
    assert_eq!(
        grant_field(&mut conn, &prefix, &r1, "v").await.as_deref(),
        Some("1")
    );
    let lost_access = grant_field(&mut conn, &prefix, &r1, "a").await.unwrap();
    assert_ne!(lost_access, digest_hex(&a1));

    // Redis is back; the instance reconnects on its next request (a first request may still
    // meet the failed reconnection and answer 503; a bearer check costs nothing).
    proxy.set(Mode::Pass);
    let (mut reachable, unknown) = (false, AccessToken::generate());
    for _ in 0..5 {
        // An unknown token is looked up in Redis: 401 once it answers, 503 while it does not.
        if me(a.addr, unknown.expose()).await.0 == StatusCode::UNAUTHORIZED {
            reachable = true;
            break;
        }
    }
    assert!(reachable, "the instance did not reconnect to Redis");

    // The device retries after its Retry-After, within the grace period, with the token it has.
    clock.advance(Duration::from_secs(2));
    let (status, json) = refresh(a.addr, &r1).await;
    assert_eq!(status, 200, "the retry lost the grant: {json}");
    let (a3, r3) = pair(&json);
    assert_eq!(me(a.addr, &a3).await, (StatusCode::OK, "dana".to_owned()));
    assert_eq!(me(a.addr, &a1).await.0, StatusCode::UNAUTHORIZED);
    // The unreceived pair is revoked: the only access token left is the retry's.
    assert_eq!(
        grant_field(&mut conn, &prefix, &r1, "v").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        access_keys(&mut conn, &prefix).await,
        vec![format!("{{{prefix}}}:a:{}", digest_hex(&a3))]
    );
    // And the grant lives on: its new refresh token rotates as usual.
    let (status, json) = refresh(a.addr, &r3).await;
    assert_eq!(status, 200, "{json}");
    a.stop();
    delete_prefix(&url, &prefix).await;
}

//! Resource-server benchmark: the bearer layer over the remote verifiers, against the same
//! route without the layer, over real loopback connections.
//!
//! ```text
//! cargo bench --bench resource_server
//! BENCH_CONNS=32 BENCH_SECS=3 BENCH_ROUNDS=3 cargo bench --bench resource_server
//! ```
//!
//! An authorization server issuing JWT access tokens runs in this process (its tokens are also
//! introspectable). One token is obtained through the device flow; then a resource server on
//! another port serves, each under the same handler:
//!
//! - `/api/public`: no layer (the denominator), sent the very same request as each guarded
//!   route (an opaque token's or the JWT's `Authorization` header);
//! - `/api/introspect`: [`IntrospectionVerifier`], cache warm (one introspection, then hits);
//! - `/api/jwt`: [`JwtVerifier`], the token verified once, then remembered;
//! - `/api/jwt-cold` (diagnostic): [`JwtVerifier`] with no cache: a signature check per request.
//!
//! `BENCH_CONNS` keep-alive connections (default 32) each send one request at a time for
//! `BENCH_SECS` (default 3, after 0.5 s of warm-up); each scenario runs `BENCH_ROUNDS` times
//! (default 3), interleaved, and the median round's requests/s is reported with its ratio to
//! the unprotected route. Only 127.0.0.1 is contacted; every loop ends by its deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::bearer::TokenVerifier;
use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
use tower_device_flow::resource_server::{IntrospectionVerifier, JwtVerifier};
use tower_device_flow::{
    Audience, Client, DeviceFlow, MemoryStore, RequireOAuthLayer, Scope, ScopeRequirement, Subject,
    TokenInfo,
};

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn json_ok(body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    res
}

async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The authorization server; returns its base URL and one JWT access token for alice.
async fn authorization_server(jwt: bool) -> (String, String, DeviceFlow<MemoryStore>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let api = Audience::from_resources([format!("{base}/api")]).expect("resource");
    let scopes = Scope::parse("profile email").expect("scope");
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()).with_resources(api.clone()))
        .client(Client::confidential(
            "demo-confidential",
            "demo-secret",
            scopes,
        ))
        .build();
    let mut builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .interval(Duration::ZERO)
        .default_audience(Some(api))
        .end_user(|_: &http::request::Parts| Some(Subject::new("alice")))
        .failed_attempts_overall(None);
    if jwt {
        let key = SigningKey::generate(JwsAlgorithm::EdDSA).expect("key");
        builder = builder.jwt_access_tokens(Arc::new(JwtKeys::new(key)));
    }
    let flow = builder.build();
    let kept = flow.clone();
    let app = flow
        .endpoints_layer()
        .layer(service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let listener = TcpListener::bind(base.trim_start_matches("http://"))
        .await
        .expect("rebind");
    let svc = TowerToHyperService::new(app);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let http = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |path: &str, body: String| {
        Request::post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from(body))
            .expect("request")
    };
    let read = |res: Response<Incoming>| async move {
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")
    };
    let codes = read(
        http.request(post(
            "/oauth/device_authorization",
            "client_id=demo-device".into(),
        ))
        .await
        .expect("device authorization"),
    )
    .await;
    let user_code = codes["user_code"].as_str().expect("user_code");
    let res = http
        .request(post(
            "/device",
            format!("user_code={user_code}&decision=approve"),
        ))
        .await
        .expect("approve");
    assert_eq!(res.status(), StatusCode::OK);
    let tokens = read(
        http.request(post(
            "/oauth/token",
            format!(
                "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=demo-device&device_code={}",
                codes["device_code"].as_str().expect("device_code")
            ),
        ))
        .await
        .expect("token"),
    )
    .await;
    let token = tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    (base, token, kept)
}

fn guarded<V: TokenVerifier>(
    verifier: V,
    audience: &str,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<tower_device_flow::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send {
    RequireOAuthLayer::new(
        verifier,
        ScopeRequirement::AllOf(Scope::parse("profile").expect("scope")),
    )
    .with_audience(audience)
    .layer(service_fn(handler))
}

async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.extensions().get::<TokenInfo>() {
        Some(t) => serde_json::json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()}),
        None => serde_json::json!({"sub": "alice", "scope": "email profile"}),
    };
    Ok(json_ok(body.to_string()))
}

/// The resource server, all four routes on one port.
async fn resource_server(opaque_issuer: &str, issuer: &str) -> SocketAddr {
    let audience = format!("{issuer}/api");
    let http = HyperClient::builder(TokioExecutor::new()).build_http();
    let introspect = guarded(
        IntrospectionVerifier::builder(http.clone(), &format!("{opaque_issuer}/oauth/introspect"))
            .expect("url")
            .client_credentials("demo-confidential", "demo-secret")
            .build(),
        &format!("{opaque_issuer}/api"),
    );
    let jwt = guarded(
        JwtVerifier::builder(http.clone(), issuer)
            .expect("url")
            .build(),
        &audience,
    );
    let cold = guarded(
        JwtVerifier::builder(http, issuer)
            .expect("url")
            .cache_capacity(0)
            .build(),
        &audience,
    );
    let app = service_fn(move |req: Request<Incoming>| {
        let (introspect, jwt, cold) = (introspect.clone(), jwt.clone(), cold.clone());
        async move {
            let res = match req.uri().path() {
                "/api/introspect" => introspect
                    .oneshot(req)
                    .await?
                    .map(http_body_util::Either::Left),
                "/api/jwt" => jwt.oneshot(req).await?.map(http_body_util::Either::Left),
                "/api/jwt-cold" => cold.oneshot(req).await?.map(http_body_util::Either::Left),
                _ => handler(req).await?.map(http_body_util::Either::Right),
            };
            Ok::<_, Infallible>(res)
        }
    });
    serve(TowerToHyperService::new(app)).await
}

/// Requests/s of `conns` connections sending `GET path` for `secs` seconds.
/// The process's CPU time (user + system) so far, from `/proc/self/stat`, if readable.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// Requests/s and process CPU µs per request of `conns` connections sending `GET path`.
async fn load(addr: SocketAddr, path: &str, token: &str, conns: usize, secs: f64) -> (f64, f64) {
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs_f64(secs);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (path, auth) = (path.to_owned(), format!("Bearer {token}"));
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut counted = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let req = Request::get(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("authorization", auth.as_str())
                    .body(Full::<Bytes>::default())
                    .expect("request");
                if send.ready().await.is_err() {
                    break;
                }
                let res = send.send_request(req).await.expect("response");
                assert_eq!(res.status(), StatusCode::OK, "{path}");
                let _ = res.into_body().collect().await;
                if now >= start {
                    counted += 1;
                }
            }
            counted
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = process_cpu();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("load task");
    }
    let cpu = match (cpu_start, process_cpu()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() * 1e6 / total.max(1) as f64,
        _ => f64::NAN,
    };
    (total as f64 / measure.as_secs_f64(), cpu)
}

fn main() {
    let conns = env_or("BENCH_CONNS", 32usize);
    let secs = env_or("BENCH_SECS", 3.0f64);
    let rounds = env_or("BENCH_ROUNDS", 3usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (opaque_issuer, opaque, flow) = authorization_server(false).await;
        let (issuer, jwt, _) = authorization_server(true).await;
        let rs = resource_server(&opaque_issuer, &issuer).await;
        // Each guarded route is compared with the unprotected one receiving the very same
        // request (the same `Authorization` header), so the difference is the layer's.
        let scenarios = [
            (
                "unprotected `/api/public`, opaque token header",
                "/api/public",
                &opaque,
                0,
            ),
            (
                "introspection, warm cache (opaque token)",
                "/api/introspect",
                &opaque,
                0,
            ),
            (
                "unprotected `/api/public`, JWT header",
                "/api/public",
                &jwt,
                2,
            ),
            ("JWT, verified token remembered", "/api/jwt", &jwt, 2),
            (
                "JWT, signature checked every request (diagnostic)",
                "/api/jwt-cold",
                &jwt,
                2,
            ),
        ];
        let mut results = vec![Vec::new(); scenarios.len()];
        for _ in 0..if env_or("BENCH_HTTP", 1u8) == 0 {
            0
        } else {
            rounds
        } {
            for (i, (_, path, token, _)) in scenarios.iter().enumerate() {
                results[i].push(load(rs, path, token, conns, secs).await);
            }
        }
        let median = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = v.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        if results[0].is_empty() {
            layer_cost(&flow, &opaque_issuer, &opaque, &issuer, &jwt).await;
            return;
        }
        println!("\nresource server, {conns} connections, {secs} s x {rounds} rounds (medians)\n");
        println!("| scenario | requests/s | ÷ unprotected | CPU µs/request | unprotected ÷ this |");
        println!("|---|---:|---:|---:|---:|");
        for (i, (name, _, _, base)) in scenarios.iter().enumerate() {
            let rps = median(&results[i], |r| r.0);
            let cpu = median(&results[i], |r| r.1);
            let base_rps = median(&results[*base], |r| r.0);
            let base_cpu = median(&results[*base], |r| r.1);
            println!(
                "| {name} | {rps:.0} | {:.2} | {cpu:.1} | {:.2} |",
                rps / base_rps,
                base_cpu / cpu
            );
        }
        layer_cost(&flow, &opaque_issuer, &opaque, &issuer, &jwt).await;
    });
}

/// The layer's own CPU cost, without sockets: the same handler called directly and through
/// each layer, one request at a time on this thread.
async fn layer_cost(
    flow: &DeviceFlow<MemoryStore>,
    opaque_issuer: &str,
    opaque: &str,
    issuer: &str,
    jwt: &str,
) {
    let n = env_or("BENCH_CALLS", 200_000u32);
    let http = HyperClient::builder(TokioExecutor::new()).build_http();
    let requirement = || ScopeRequirement::AllOf(Scope::parse("profile").expect("scope"));
    let bare = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(json_ok(String::from("{}")))
    });
    let introspect = RequireOAuthLayer::new(
        IntrospectionVerifier::builder(http.clone(), &format!("{opaque_issuer}/oauth/introspect"))
            .expect("url")
            .client_credentials("demo-confidential", "demo-secret")
            .build(),
        requirement(),
    )
    .with_audience(&format!("{opaque_issuer}/api"))
    .layer(bare);
    let jwt_layer = RequireOAuthLayer::new(
        JwtVerifier::builder(http, issuer).expect("url").build(),
        requirement(),
    )
    .with_audience(&format!("{issuer}/api"))
    .layer(bare);
    let local = flow.require_oauth("profile").layer(bare);
    let request = |token: &str| {
        Request::get("/api/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .expect("request")
    };
    // Warm: the first call of each fetches (introspection answer, JWKS).
    assert_eq!(
        introspect
            .clone()
            .oneshot(request(opaque))
            .await
            .expect("call")
            .status(),
        200
    );
    assert_eq!(
        jwt_layer
            .clone()
            .oneshot(request(jwt))
            .await
            .expect("call")
            .status(),
        200
    );
    let time = |label: &'static str, token: &str| {
        let token = token.to_owned();
        let (introspect, jwt_layer, local) = (introspect.clone(), jwt_layer.clone(), local.clone());
        async move {
            let started = Instant::now();
            for _ in 0..n {
                let req = request(&token);
                let status = match label {
                    "introspection" => introspect
                        .clone()
                        .oneshot(req)
                        .await
                        .expect("call")
                        .status(),
                    "JWT" => jwt_layer.clone().oneshot(req).await.expect("call").status(),
                    "store" => local.clone().oneshot(req).await.expect("call").status(),
                    _ => bare.oneshot(req).await.expect("call").status(),
                };
                assert_eq!(status, 200);
            }
            started.elapsed().as_nanos() as f64 / f64::from(n)
        }
    };
    let base = time("bare", opaque).await;
    let store = time("store", opaque).await;
    let intro = time("introspection", opaque).await;
    let base_jwt = time("bare", jwt).await;
    let jwt_ns = time("JWT", jwt).await;
    println!(
        "\nin process, {n} calls each (request building included): bare handler {base:.0} ns, \
         through the store-backed layer of the same process {store:.0} ns (+{:.0} ns), \
         through the introspecting layer (warm) {intro:.0} ns (+{:.0} ns); bare handler with \
         the JWT header {base_jwt:.0} ns, through the JWT layer (warm) {jwt_ns:.0} ns (+{:.0} ns)",
        store - base,
        intro - base,
        jwt_ns - base_jwt
    );
}

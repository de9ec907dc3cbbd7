//! HTTP load benchmark: the device flow's endpoints and bearer layer over real loopback
//! connections, against a bare hyper handler, in one run.
//!
//! ```text
//! cargo bench --bench http_load
//! BENCH_CONNS=32 BENCH_SECS=5 BENCH_WARMUP_SECS=1 BENCH_ROUNDS=3 cargo bench --bench http_load
//! REDIS_URL=redis://127.0.0.1:6379/ cargo bench --features redis --bench http_load
//! POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features postgres,sqlite --bench http_load
//! ```
//!
//! Scenarios, each on hyper http1 with keep-alive, served on 127.0.0.1 ephemeral ports:
//!
//! 1. a bare hyper handler returning a small JSON body (the denominator);
//! 2. `POST /oauth/device_authorization`, a new grant per request;
//! 3. `POST /oauth/token` polling a pending device code with interval 0 (`authorization_pending`);
//! 4. `GET /api/me` with a valid bearer token;
//! 5. the same with an unknown token (401).
//!
//! With the per-source limits on (the demo's defaults, `Limits::default()`), and requests
//! spread over many sources, as production traffic is:
//!
//! - 2L. scenario 2; 3L. scenario 3; 4L. scenario 4.
//!
//! Each connection binds its own 127.0.x.y source address (the server sees distinct TCP
//! peers), and each request names its client in `X-Forwarded-For` from a pool of 65 536
//! addresses, the peers being trusted proxies: every request passes the per-source rate limit
//! with its address's table entry, as production traffic does. The unlimited scenarios run
//! with `Limits::without_per_source()`, the "unprotected route".
//!
//! With a metrics recorder installed (the `metrics` feature, on by default: a Prometheus
//! recorder from `metrics-exporter-prometheus`, as the demo's `GET /metrics` uses): 1bP, 1cP,
//! 2P, 3P, 4P and 5P are scenarios 1b, 1c, 2, 3, 4 and 5 with every metric of the flow recorded. The
//! recorder is installed once for the process behind a switch, on for those rounds only (off,
//! it hands out the facade's no-op handles, as when no recorder is installed), so the rounds
//! with and without metrics interleave on the same servers.
//!
//! Also, as diagnostics: the bare handler receiving the very request of scenario 4, bearer
//! header included (1a); `GET /api/public` through the endpoints layer without the bearer layer
//! (1b); the same app's unguarded `GET /api/open`, sent the very request of scenario 4 (token
//! included, ignored) and answering the same body through the same kind of handler (1c, and
//! 1cP with metrics): (4) ÷ (1c) is the bearer layer's own cost; scenario 4 against a store
//! holding 1e6 tokens instead of 1e3 (4M); and, when built with
//! `--features redis` and `REDIS_URL` is set, scenarios 3 and 4 on `RedisStore` (3r, 4r);
//! with `--features postgres` and `POSTGRES_URL`, on `PostgresStore` in a schema of its own,
//! dropped at the end (p3, p4); with `--features sqlite`, on `SqliteStore` in a temporary file
//! (s3, s4; `BENCH_SQLITE_SYNC=0` for `synchronous = NORMAL`).
//! Scenario 4 presents many distinct valid tokens in turn (all 1e3, or `BENCH_REAL_TOKENS`,
//! default 262 144, of the 1e6), so lookups are spread over the table as in production.
//!
//! The load generator runs in the same process: `BENCH_CONNS` keep-alive connections (default
//! 32), each sending one request at a time for `BENCH_WARMUP_SECS` (default 1, not recorded)
//! then `BENCH_SECS` (default 5). Every scenario runs `BENCH_ROUNDS` times (default 3),
//! interleaved, and the median round's requests/s is reported with latency percentiles over
//! all rounds, and the process's CPU time per request (server and load generator together),
//! which other load on the machine disturbs far less than requests/s. Each target is also
//! given as the median of its per-round ratios (round i of one scenario over round i of the
//! other, run seconds apart), which a slow drift of the machine's speed does not move. Other
//! knobs: `BENCH_PROM_HISTOGRAMS` (1; 0 lets the recorder take counters and gauges only, a
//! diagnostic), `BENCH_PROM_BUCKETS` (0; 1 for bucketed histograms instead of summaries),
//! `BENCH_SMALL_TOKENS` (1000), `BENCH_BIG_TOKENS` (1 000 000), `BENCH_THREADS` (runtime
//! workers, default: the core count), `BENCH_NODELAY` (1), `BENCH_ONLY` (scenario keys, e.g.
//! `1,4`). Only 127.0.0.1 is contacted, and every loop ends by its deadline.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::family::Grant;
use tower_device_flow::store::{Insert, IssuedGrant};
use tower_device_flow::{
    AccessToken, Client, ClientAddr, Clock, DeviceFlow, DeviceGrant, Digest, ForwardedHeader,
    GrantId, Limits, MemoryStore, Scope, Store, Subject, SystemClock, TokenInfo, TrustedProxies,
};

const CLIENT_ID: &str = "demo-device";
const POLL_BODY_PREFIX: &str =
    "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=demo-device&device_code=";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

#[derive(Clone, Debug)]
struct Config {
    conns: usize,
    secs: f64,
    warmup_secs: f64,
    rounds: usize,
    small_tokens: usize,
    big_tokens: usize,
    /// Distinct valid tokens scenario 4 presents (at most the number stored).
    real_tokens: usize,
    threads: usize,
    nodelay: bool,
    redis_url: Option<String>,
    /// Scenario keys to run (comma-separated `BENCH_ONLY`, e.g. `1,4`); all when empty.
    only: Vec<String>,
}

impl Config {
    fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            conns: env_or("BENCH_CONNS", 32),
            secs: env_or("BENCH_SECS", 5.0),
            warmup_secs: env_or("BENCH_WARMUP_SECS", 1.0),
            rounds: env_or::<usize>("BENCH_ROUNDS", 3).max(1),
            small_tokens: env_or("BENCH_SMALL_TOKENS", 1_000),
            big_tokens: env_or("BENCH_BIG_TOKENS", 1_000_000),
            real_tokens: env_or("BENCH_REAL_TOKENS", 262_144),
            threads: env_or("BENCH_THREADS", cores),
            nodelay: env_or::<u8>("BENCH_NODELAY", 1) != 0,
            redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Serves `svc` on a fresh 127.0.0.1 port, one task per keep-alive connection.
async fn serve<S, B>(svc: S, nodelay: bool) -> SocketAddr
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        // Ends with the runtime when the benchmark returns.
        while let Ok((stream, peer)) = listener.accept().await {
            if nodelay {
                let _ = stream.set_nodelay(true);
            }
            let svc = svc.clone();
            // As a server loop does: the peer address for the per-source limits.
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                svc.call(req)
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Scenario 1: a bare hyper handler with the same JSON body shape as `/api/me`.
async fn serve_bare(nodelay: bool) -> SocketAddr {
    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(json(
            StatusCode::OK,
            serde_json::json!({"sub": "alice", "scope": "email profile"}),
        ))
    });
    serve(svc, nodelay).await
}

/// The demo server's construction (examples/device_server.rs): the endpoints layer in front of
/// an API whose `/api/me` is guarded by `require_oauth("profile")`.
async fn serve_app<S: Store>(flow: &DeviceFlow<S>, nodelay: bool) -> SocketAddr {
    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let body = match req.extensions().get::<TokenInfo>() {
                Some(t) => {
                    serde_json::json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()})
                }
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json(StatusCode::OK, body))
        }));
    // `/api/open`: the same handler shape as `/api/me`, unguarded, so that scenario (1c) sends
    // the same request (token included, ignored) and gets the same body: (4) ÷ (1c) is the
    // bearer layer's cost and nothing else.
    let open = service_fn(|_req: Request<Incoming>| async move {
        let body = serde_json::json!({"sub": "alice", "scope": "email profile"});
        Ok::<_, Infallible>(json(StatusCode::OK, body))
    });
    let api = service_fn(move |req: Request<Incoming>| {
        let me = me.clone();
        async move {
            let res = match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/open" => open.oneshot(req).await?.map(Either::Right),
                "/api/public" => {
                    json(StatusCode::OK, serde_json::json!({"ok": true})).map(Either::Right)
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "not_found"}),
                )
                .map(Either::Right),
            };
            Ok::<_, Infallible>(res)
        }
    });
    let app = flow.endpoints_layer().layer(api);
    serve(TowerToHyperService::new(app), nodelay).await
}

fn demo_scopes() -> Scope {
    Scope::parse("profile email").expect("valid scope")
}

fn demo_flow<S: Store>(store: S) -> DeviceFlow<S> {
    demo_builder(store)
        // The unprotected route: everything comes from 127.0.0.1.
        .limits(Limits::default().without_per_source())
        .build()
}

/// The flow with the per-source limits on, behind trusted proxies (127/8) that name each
/// request's client in `X-Forwarded-For`.
fn limited_flow<S: Store>(store: S) -> DeviceFlow<S> {
    let proxies = TrustedProxies::new(
        ForwardedHeader::XForwardedFor,
        ["127.0.0.0/8".parse().expect("network")],
    );
    demo_builder(store)
        .limits(Limits::default())
        .trusted_proxies(proxies)
        .build()
}

fn demo_builder<S: Store>(store: S) -> tower_device_flow::DeviceFlowBuilder<S> {
    DeviceFlow::builder(store)
        .issuer("http://127.0.0.1:8080")
        .interval(Duration::ZERO)
        .scopes_supported(demo_scopes())
        // Scenario 2 creates far more grants than the default cap of 10 000 per client and
        // window; keep the cap's counter on the path, but out of the way.
        .max_grants_per_client(Some(u64::MAX))
}

/// Connection `c`'s source address: 127.0.x.y, never 127.0.0.1.
fn source_of_conn(c: usize) -> IpAddr {
    let n = c + 2;
    IpAddr::V4(Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250 + 1) as u8))
}

/// `X-Forwarded-For` values for 65 536 client addresses (198.18.0.0/15, the benchmarking
/// range of RFC 2544).
fn forwarded_pool() -> Arc<[HeaderValue]> {
    (0..65_536u32)
        .map(|i| {
            let ip = Ipv4Addr::from(0xc612_0000 + i);
            HeaderValue::from_str(&ip.to_string()).expect("address header")
        })
        .collect()
}

/// `templates` spread over sources: connection `c` binds its own loopback address and
/// starts at its own place in the forwarded pool.
fn spread(templates: Vec<Template>, conns: usize, pool: &Arc<[HeaderValue]>) -> Vec<Template> {
    (0..conns)
        .map(|c| {
            let mut t = templates[c % templates.len()].clone();
            t.source = Some(source_of_conn(c));
            t.forwarded = pool.clone();
            t.forwarded_offset = c * (pool.len() / conns.max(1)).max(1);
            t
        })
        .collect()
}

/// Puts `total` access tokens into `store` through the [`Store`] trait, each with a grant of
/// its own issued by `replace_device_grant` on one carrier device grant: `real` of them (at least one) generated as the
/// token endpoint does, whose secrets are returned for the load generator to present, the rest
/// random digests that only fill the table. Real and filler tokens are interleaved.
async fn populate_tokens<S: Store>(
    store: &S,
    total: usize,
    real: usize,
    lifetime: Duration,
) -> Vec<AccessToken> {
    let real = real.clamp(1, total.max(1));
    let filler = total.max(real) - real;
    let now = SystemClock.now();
    let carrier = Digest::of(AccessToken::generate().expose().as_bytes());
    let grant = DeviceGrant::new(
        tower_device_flow::ClientId::new(CLIENT_ID),
        demo_scopes(),
        Digest::of(AccessToken::generate().expose().as_bytes()),
        now,
        lifetime,
        Duration::ZERO,
    );
    assert_eq!(
        store
            .insert_device_grant(carrier, grant.clone(), now)
            .await
            .expect("insert carrier grant"),
        Insert::Inserted
    );
    let info = TokenInfo::new(
        Subject::new("alice"),
        tower_device_flow::ClientId::new(CLIENT_ID),
        demo_scopes(),
        now.saturating_add(lifetime),
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut random_digest = move || {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_exact_mut(8) {
            // splitmix64: uniformly spread digests without the cost of SHA-256.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Digest::from_bytes(bytes)
    };
    let tokens: Vec<AccessToken> = (0..real).map(|_| AccessToken::generate()).collect();
    let mut real_digests = tokens.iter().map(AccessToken::digest);
    let digests = (0..filler + real).map(|i| {
        // Spread the real tokens evenly among the filler.
        if (i + 1) * real / (filler + real) > i * real / (filler + real) {
            real_digests.next().unwrap_or_else(&mut random_digest)
        } else {
            random_digest()
        }
    });
    for (version, digest) in digests.enumerate() {
        // A grant without a refresh token, its id taken from the token's digest.
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_bytes()[16..]);
        let id = GrantId::from_bytes(id);
        let issue = IssuedGrant {
            grant: Grant {
                id,
                client_id: info.client_id.clone(),
                subject: info.subject.clone(),
                scope: info.scope.clone(),
                audience: None,
                approved_at: now,
                last_used_at: now,
                expires_at: info.expires_at,
                access_token: digest,
                refresh_token: None,
                superseded: None,
                cnf: None,
            },
            access: info.clone().with_grant_id(Some(id)),
        };
        let swapped = store
            .replace_device_grant(&carrier, version as u64, grant.clone(), Some(issue), now)
            .await
            .expect("replace_device_grant");
        assert!(swapped, "carrier grant swap failed");
    }
    tokens
}

// ---------------------------------------------------------------------------------------------
// Load generator

/// One request shape; cloned for every request sent.
#[derive(Clone)]
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// `Authorization` values sent in turn, one per request (none when empty).
    bearer: Arc<[HeaderValue]>,
    /// The connection's source address (default: the kernel's choice, 127.0.0.1).
    source: Option<IpAddr>,
    /// `X-Forwarded-For` values sent in turn from `forwarded_offset` (none when empty).
    forwarded: Arc<[HeaderValue]>,
    forwarded_offset: usize,
}

impl Template {
    fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&addr.to_string()).expect("host header"),
        );
        Template {
            method,
            uri: Uri::from_str(path).expect("path"),
            headers,
            body: Bytes::new(),
            bearer: Arc::from(Vec::new()),
            source: None,
            forwarded: Arc::from(Vec::new()),
            forwarded_offset: 0,
        }
    }

    fn path(mut self, path: &str) -> Self {
        self.uri = Uri::from_str(path).expect("path");
        self
    }

    fn form(mut self, body: String) -> Self {
        self.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.body = Bytes::from(body);
        self
    }

    fn bearer<'a>(mut self, tokens: impl IntoIterator<Item = &'a AccessToken>) -> Self {
        let values: Vec<HeaderValue> = tokens
            .into_iter()
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {}", t.expose())).expect("token header")
            })
            .collect();
        self.bearer = Arc::from(values);
        self
    }

    /// The `i`-th request of a connection.
    fn request(&self, i: usize) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if !self.bearer.is_empty() {
            let value = self.bearer[i % self.bearer.len()].clone();
            req.headers_mut().insert(header::AUTHORIZATION, value);
        }
        if !self.forwarded.is_empty() {
            let value = self.forwarded[(self.forwarded_offset + i) % self.forwarded.len()].clone();
            req.headers_mut().insert("x-forwarded-for", value);
        }
        req
    }
}

struct Scenario {
    key: &'static str,
    /// Whether the Prometheus recorder records during this scenario's rounds.
    metrics: bool,
    label: String,
    addr: SocketAddr,
    /// One template per connection (connection `i` uses `templates[i % len]`).
    templates: Vec<Template>,
    expect: StatusCode,
}

#[derive(Default)]
struct Outcome {
    /// Requests/s of each round.
    rps: Vec<f64>,
    /// Latencies in nanoseconds over all rounds.
    latencies: Vec<u64>,
    unexpected: u64,
    failures: u64,
    /// Process CPU time per request (server + load generator), microseconds, per round.
    cpu_us: Vec<f64>,
}

struct ConnStats {
    latencies: Vec<u64>,
    unexpected: u64,
    failed: bool,
}

async fn send_one(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    template: &Template,
    i: usize,
) -> Result<StatusCode, BoxError> {
    sender.ready().await?;
    let res = sender.send_request(template.request(i)).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

async fn connect(
    addr: SocketAddr,
    nodelay: bool,
    source: Option<IpAddr>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, BoxError> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    if nodelay {
        stream.set_nodelay(true)?;
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn drive(
    addr: SocketAddr,
    template: Template,
    expect: StatusCode,
    nodelay: bool,
    record_from: Instant,
    until: Instant,
) -> ConnStats {
    let mut stats = ConnStats {
        latencies: Vec::with_capacity(1 << 16),
        unexpected: 0,
        failed: false,
    };
    let Ok(mut sender) = connect(addr, nodelay, template.source).await else {
        stats.failed = true;
        return stats;
    };
    for i in 0.. {
        let start = Instant::now();
        if start >= until {
            break;
        }
        match send_one(&mut sender, &template, i).await {
            Ok(status) => {
                if start >= record_from {
                    stats.latencies.push(start.elapsed().as_nanos() as u64);
                    if status != expect {
                        stats.unexpected += 1;
                    }
                }
            }
            Err(_) => {
                stats.failed = true;
                break;
            }
        }
    }
    stats
}

/// CPU time consumed by every thread of this process so far (nanosecond resolution, from
/// `/proc/self/task/*/schedstat`; falls back to the 10 ms ticks of `/proc/self/stat`).
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    let mut found = false;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat.split(' ').next().and_then(|f| f.parse::<u64>().ok()) {
            total += ns;
            found = true;
        }
    }
    if found {
        return Some(Duration::from_nanos(total));
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

async fn run_round(cfg: &Config, s: &Scenario, out: &mut Outcome) {
    recorder::switch(s.metrics);
    let record_from = Instant::now() + Duration::from_secs_f64(cfg.warmup_secs);
    let until = record_from + Duration::from_secs_f64(cfg.secs);
    let mut tasks = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let template = s.templates[i % s.templates.len()].clone();
        tasks.push(tokio::spawn(drive(
            s.addr,
            template,
            s.expect,
            cfg.nodelay,
            record_from,
            until,
        )));
    }
    // CPU time is sampled across the recorded window only.
    tokio::time::sleep_until(record_from.into()).await;
    let cpu_start = process_cpu();
    tokio::time::sleep_until(until.into()).await;
    let cpu_end = process_cpu();
    let mut recorded = 0u64;
    for task in tasks {
        let stats = task.await.expect("load task panicked");
        recorded += stats.latencies.len() as u64;
        out.unexpected += stats.unexpected;
        out.failures += u64::from(stats.failed);
        out.latencies.extend(stats.latencies);
    }
    out.rps.push(recorded as f64 / cfg.secs);
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        if recorded > 0 {
            out.cpu_us
                .push((b - a).as_secs_f64() * 1e6 / recorded as f64);
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

struct Row {
    key: &'static str,
    label: String,
    rps: f64,
    rps_min: f64,
    rps_max: f64,
    p50: Duration,
    p99: Duration,
    cpu_us: f64,
    /// Requests/s and CPU µs/request of each round, in order, for the paired ratios.
    round_rps: Vec<f64>,
    round_cpu: Vec<f64>,
    unexpected: u64,
    failures: u64,
}

/// The smallest and the largest of `v`.
fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    (min, v.iter().copied().fold(0.0, f64::max))
}

fn summarize(s: &Scenario, mut o: Outcome) -> Row {
    o.latencies.sort_unstable();
    let (rps_min, rps_max) = min_max(&o.rps);
    Row {
        key: s.key,
        label: s.label.clone(),
        rps: median(&o.rps),
        rps_min,
        rps_max,
        p50: percentile(&o.latencies, 50.0),
        p99: percentile(&o.latencies, 99.0),
        cpu_us: median(&o.cpu_us),
        round_rps: o.rps,
        round_cpu: o.cpu_us,
        unexpected: o.unexpected,
        failures: o.failures,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// Setup

/// Asks the device authorization endpoint at `addr` for `n` pending device codes.
async fn pending_device_codes(addr: SocketAddr, n: usize, nodelay: bool) -> Vec<String> {
    let mut sender = connect(addr, nodelay, None)
        .await
        .expect("connect for setup");
    let template = Template::new(addr, Method::POST, "/oauth/device_authorization")
        .form(format!("client_id={CLIENT_ID}"));
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        sender.ready().await.expect("ready");
        let res = sender
            .send_request(template.request(0))
            .await
            .expect("device authorization");
        assert_eq!(res.status(), StatusCode::OK, "device authorization failed");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        codes.push(v["device_code"].as_str().expect("device_code").to_owned());
    }
    codes
}

fn poll_templates(addr: SocketAddr, codes: &[String]) -> Vec<Template> {
    codes
        .iter()
        .map(|code| {
            Template::new(addr, Method::POST, "/oauth/token")
                .form(format!("{POLL_BODY_PREFIX}{code}"))
        })
        .collect()
}

/// One template per connection; connection `i` sends tokens `i`, `i + conns`, `i + 2 conns`, …
/// in turn, so the whole set of valid tokens is looked up, spread over the store's table.
fn me_templates(addr: SocketAddr, tokens: &[AccessToken], conns: usize) -> Vec<Template> {
    (0..conns.min(tokens.len()))
        .map(|i| {
            Template::new(addr, Method::GET, "/api/me").bearer(tokens.iter().skip(i).step_by(conns))
        })
        .collect()
}

fn memory_store() -> MemoryStore {
    // Scenario 2 leaves far more pending grants than the default ceiling allows: measure the
    // endpoint, not the ceiling's 503.
    MemoryStore::builder()
        .client(Client::public(CLIENT_ID, demo_scopes()).with_name("Demo device"))
        .max_pending_grants(None)
        .build()
}

#[cfg(feature = "redis")]
async fn redis_scenarios(cfg: &Config, url: &str) -> Result<Vec<Scenario>, String> {
    use tower_device_flow::RedisStore;
    let store = RedisStore::builder()
        .prefix(format!("tdf-bench-{}", std::process::id()))
        .client(Client::public(CLIENT_ID, demo_scopes()).with_name("Demo device"))
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    // Keys expire on their own: grants after 5 + 10 minutes, tokens after 10 minutes.
    let flow = DeviceFlow::builder(store)
        .issuer("http://127.0.0.1:8080")
        .interval(Duration::ZERO)
        .expires_in(Duration::from_secs(300))
        .max_grants_per_client(Some(u64::MAX))
        .build();
    let tokens = populate_tokens(
        flow.store(),
        cfg.small_tokens,
        cfg.small_tokens.min(cfg.real_tokens),
        Duration::from_secs(600),
    )
    .await;
    let addr = serve_app(&flow, cfg.nodelay).await;
    let codes = pending_device_codes(addr, cfg.conns, cfg.nodelay).await;
    Ok(vec![
        Scenario {
            metrics: false,
            key: "r3",
            label: "(3r) `POST /oauth/token` pending, RedisStore".into(),
            addr,
            templates: poll_templates(addr, &codes),
            expect: StatusCode::BAD_REQUEST,
        },
        Scenario {
            metrics: false,
            key: "r4",
            label: format!(
                "(4r) `GET /api/me` valid token, RedisStore, {} tokens",
                cfg.small_tokens
            ),
            addr,
            templates: me_templates(addr, &tokens, cfg.conns),
            expect: StatusCode::OK,
        },
    ])
}

#[cfg(not(feature = "redis"))]
async fn redis_scenarios(_cfg: &Config, _url: &str) -> Result<Vec<Scenario>, String> {
    Err("REDIS_URL is set but this bench was built without `--features redis`".into())
}

/// Scenarios (3) and (4) on a store of the SQL kind `kind` (keys `{prefix}3`, `{prefix}4`).
async fn store_scenarios<S: Store>(
    cfg: &Config,
    store: S,
    kind: &str,
    prefix: &str,
) -> Vec<Scenario> {
    let flow = DeviceFlow::builder(store)
        .issuer("http://127.0.0.1:8080")
        .interval(Duration::ZERO)
        .expires_in(Duration::from_secs(300))
        .max_grants_per_client(Some(u64::MAX))
        .build();
    let tokens = populate_tokens(
        flow.store(),
        cfg.small_tokens,
        cfg.small_tokens.min(cfg.real_tokens),
        Duration::from_secs(600),
    )
    .await;
    let addr = serve_app(&flow, cfg.nodelay).await;
    let codes = pending_device_codes(addr, cfg.conns, cfg.nodelay).await;
    let (k3, k4) = match prefix {
        "p" => ("p3", "p4"),
        _ => ("s3", "s4"),
    };
    vec![
        Scenario {
            metrics: false,
            key: k3,
            label: format!("({k3}) `POST /oauth/token` pending, {kind}"),
            addr,
            templates: poll_templates(addr, &codes),
            expect: StatusCode::BAD_REQUEST,
        },
        Scenario {
            metrics: false,
            key: k4,
            label: format!(
                "({k4}) `GET /api/me` valid token, {kind}, {} tokens",
                cfg.small_tokens
            ),
            addr,
            templates: me_templates(addr, &tokens, cfg.conns),
            expect: StatusCode::OK,
        },
    ]
}

/// PostgreSQL in a schema of its own (dropped at the end by `drop_postgres_schema`).
#[cfg(feature = "postgres")]
async fn postgres_scenarios(cfg: &Config, url: &str) -> Result<Vec<Scenario>, String> {
    use tower_device_flow::PostgresStore;
    let store = PostgresStore::builder()
        .schema(postgres_schema())
        .max_connections(u32::try_from(cfg.conns).unwrap_or(32))
        .client(Client::public(CLIENT_ID, demo_scopes()).with_name("Demo device"))
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    Ok(store_scenarios(cfg, store, "PostgresStore", "p").await)
}

#[cfg(feature = "postgres")]
fn postgres_schema() -> String {
    format!("tdf_bench_{}", std::process::id())
}

#[cfg(feature = "postgres")]
async fn drop_postgres_schema(url: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", postgres_schema());
        let _ = sqlx::query(&drop).execute(&mut conn).await;
    }
}

#[cfg(not(feature = "postgres"))]
async fn postgres_scenarios(_cfg: &Config, _url: &str) -> Result<Vec<Scenario>, String> {
    Err("POSTGRES_URL is set but this bench was built without `--features postgres`".into())
}

#[cfg(not(feature = "postgres"))]
async fn drop_postgres_schema(_url: &str) {}

/// SQLite in a temporary file (`BENCH_SQLITE_SYNC=0` for `synchronous = NORMAL`).
#[cfg(feature = "sqlite")]
async fn sqlite_scenarios(cfg: &Config, path: &std::path::Path) -> Result<Vec<Scenario>, String> {
    use tower_device_flow::SqliteStore;
    let store = SqliteStore::builder()
        .sync_every_commit(env_or::<u8>("BENCH_SQLITE_SYNC", 1) != 0)
        .client(Client::public(CLIENT_ID, demo_scopes()).with_name("Demo device"))
        .connect(path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    Ok(store_scenarios(cfg, store, "SqliteStore", "s").await)
}

async fn run(cfg: Config) {
    println!("# http_load");
    println!();
    println!(
        "config: {} connections, {} s measured after {} s warm-up, {} rounds (interleaved), \
         {} runtime worker threads, TCP_NODELAY {}, {} available cores",
        cfg.conns,
        cfg.secs,
        cfg.warmup_secs,
        cfg.rounds,
        cfg.threads,
        if cfg.nodelay { "on" } else { "off" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let bare = serve_bare(cfg.nodelay).await;

    let small = demo_flow(memory_store());
    let small_tokens = populate_tokens(
        small.store(),
        cfg.small_tokens,
        cfg.small_tokens.min(cfg.real_tokens),
        Duration::from_secs(7200),
    )
    .await;
    let app = serve_app(&small, cfg.nodelay).await;

    let started = Instant::now();
    let big = demo_flow(memory_store());
    let big_tokens = populate_tokens(
        big.store(),
        cfg.big_tokens,
        cfg.big_tokens.min(cfg.real_tokens),
        Duration::from_secs(7200),
    )
    .await;
    let big_app = serve_app(&big, cfg.nodelay).await;
    println!(
        "setup: {} tokens stored in {:.1} s; scenario 4 presents {} distinct valid tokens \
         with {} stored and {} with {} stored, in turn on each connection",
        big.store().access_token_count(),
        started.elapsed().as_secs_f64(),
        small_tokens.len(),
        small.store().access_token_count(),
        big_tokens.len(),
        big.store().access_token_count(),
    );

    let codes = pending_device_codes(app, cfg.conns, cfg.nodelay).await;

    let limited = limited_flow(memory_store());
    let limited_tokens = populate_tokens(
        limited.store(),
        cfg.small_tokens,
        cfg.small_tokens.min(cfg.real_tokens),
        Duration::from_secs(7200),
    )
    .await;
    let limited_app = serve_app(&limited, cfg.nodelay).await;
    let limited_codes = pending_device_codes(limited_app, cfg.conns, cfg.nodelay).await;
    let pool = forwarded_pool();
    let invalid: Vec<AccessToken> = (0..cfg.conns).map(|_| AccessToken::generate()).collect();

    let mut scenarios = vec![
        Scenario {
            metrics: false,
            key: "1",
            label: "(1) bare hyper handler, small JSON".into(),
            addr: bare,
            templates: vec![Template::new(bare, Method::GET, "/api/me")],
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "1a",
            label: "(1a) bare hyper handler, same request as (4)".into(),
            addr: bare,
            templates: me_templates(bare, &small_tokens, cfg.conns),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "1b",
            label: "(1b) `GET /api/public` through the endpoints layer".into(),
            addr: app,
            templates: vec![Template::new(app, Method::GET, "/api/public")],
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "1c",
            label: "(1c) `GET /api/open`, same request and body as (4), unguarded".into(),
            addr: app,
            templates: me_templates(app, &small_tokens, cfg.conns)
                .into_iter()
                .map(|t| t.path("/api/open"))
                .collect(),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "2",
            label: "(2) `POST /oauth/device_authorization` (new grant)".into(),
            addr: app,
            templates: vec![
                Template::new(app, Method::POST, "/oauth/device_authorization")
                    .form(format!("client_id={CLIENT_ID}")),
            ],
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "3",
            label: "(3) `POST /oauth/token` pending, interval 0".into(),
            addr: app,
            templates: poll_templates(app, &codes),
            expect: StatusCode::BAD_REQUEST,
        },
        Scenario {
            metrics: false,
            key: "4",
            label: format!("(4) `GET /api/me` valid token, {} tokens", cfg.small_tokens),
            addr: app,
            templates: me_templates(app, &small_tokens, cfg.conns),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "4big",
            label: format!("(4M) `GET /api/me` valid token, {} tokens", cfg.big_tokens),
            addr: big_app,
            templates: me_templates(big_app, &big_tokens, cfg.conns),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "2L",
            label: "(2L) as (2), limits on, spread over sources".into(),
            addr: limited_app,
            templates: spread(
                vec![
                    Template::new(limited_app, Method::POST, "/oauth/device_authorization")
                        .form(format!("client_id={CLIENT_ID}")),
                ],
                cfg.conns,
                &pool,
            ),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "3L",
            label: "(3L) as (3), limits on, spread over sources".into(),
            addr: limited_app,
            templates: spread(
                poll_templates(limited_app, &limited_codes),
                cfg.conns,
                &pool,
            ),
            expect: StatusCode::BAD_REQUEST,
        },
        Scenario {
            metrics: false,
            key: "4L",
            label: "(4L) as (4), limits on, spread over sources".into(),
            addr: limited_app,
            // The bearer layer reads no address: sources spread by connection only.
            templates: spread(
                me_templates(limited_app, &limited_tokens, cfg.conns),
                cfg.conns,
                &Arc::from(Vec::new()),
            ),
            expect: StatusCode::OK,
        },
        Scenario {
            metrics: false,
            key: "5",
            label: "(5) `GET /api/me` invalid token".into(),
            addr: app,
            templates: me_templates(app, &invalid, cfg.conns),
            expect: StatusCode::UNAUTHORIZED,
        },
    ];
    let mut notes = Vec::new();
    match &cfg.redis_url {
        Some(url) => match redis_scenarios(&cfg, url).await {
            Ok(r) => scenarios.extend(r),
            Err(e) => notes.push(format!("Redis scenarios skipped: {e}.")),
        },
        None => notes.push("Redis scenarios skipped: REDIS_URL is not set.".to_owned()),
    }

    let postgres_url = std::env::var("POSTGRES_URL").ok().filter(|u| !u.is_empty());
    match &postgres_url {
        Some(url) => match postgres_scenarios(&cfg, url).await {
            Ok(r) => scenarios.extend(r),
            Err(e) => notes.push(format!("PostgreSQL scenarios skipped: {e}.")),
        },
        None => notes.push("PostgreSQL scenarios skipped: POSTGRES_URL is not set.".to_owned()),
    }
    let sqlite_dir = std::env::temp_dir().join(format!("tdf-bench-{}", std::process::id()));
    #[cfg(feature = "sqlite")]
    {
        let _ = std::fs::create_dir_all(&sqlite_dir);
        match sqlite_scenarios(&cfg, &sqlite_dir.join("bench.sqlite3")).await {
            Ok(r) => scenarios.extend(r),
            Err(e) => notes.push(format!("SQLite scenarios skipped: {e}.")),
        }
    }
    #[cfg(not(feature = "sqlite"))]
    notes.push("SQLite scenarios skipped: built without `--features sqlite`.".to_owned());

    // The same routes with every metric recorded (see the module docs).
    let with_metrics: Vec<Scenario> = scenarios
        .iter()
        .filter(|s| ["1b", "1c", "2", "3", "4", "5"].contains(&s.key))
        .map(|s| Scenario {
            key: match s.key {
                "1b" => "1bP",
                "1c" => "1cP",
                "2" => "2P",
                "3" => "3P",
                "4" => "4P",
                _ => "5P",
            },
            metrics: true,
            label: format!(
                "{}, Prometheus recorder on",
                s.label.replacen(") ", "P) ", 1)
            ),
            addr: s.addr,
            templates: s.templates.clone(),
            expect: s.expect,
        })
        .collect();
    scenarios.extend(with_metrics);
    if !cfg.only.is_empty() {
        scenarios.retain(|s| cfg.only.iter().any(|k| k == s.key));
    }
    let mut outcomes: Vec<Outcome> = scenarios.iter().map(|_| Outcome::default()).collect();
    for round in 0..cfg.rounds {
        for (s, out) in scenarios.iter().zip(&mut outcomes) {
            run_round(&cfg, s, out).await;
            eprintln!(
                "round {}/{}: {:<60} {:>10.0} req/s",
                round + 1,
                cfg.rounds,
                s.label,
                out.rps.last().copied().unwrap_or(0.0)
            );
        }
    }
    let rows: Vec<Row> = scenarios
        .iter()
        .zip(outcomes)
        .map(|(s, o)| summarize(s, o))
        .collect();
    report(&rows, &notes);
    if let Some(url) = &postgres_url {
        drop_postgres_schema(url).await;
    }
    let _ = std::fs::remove_dir_all(&sqlite_dir);
}

fn report(rows: &[Row], notes: &[String]) {
    let find = |key: &str| rows.iter().find(|r| r.key == key);
    let Some(base) = find("1") else { return };
    println!();
    println!(
        "| scenario | req/s (median) | req/s min–max | p50 ms | p99 ms | CPU µs/req | \
         req/s ÷ (1) | p50 ÷ (1) | p99 ÷ (1) | CPU/req (1) ÷ this | unexpected status | \
         failed conns |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {} | {} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} | {} | {} |",
            r.label,
            r.rps,
            r.rps_min,
            r.rps_max,
            ms(r.p50),
            ms(r.p99),
            r.cpu_us,
            r.rps / base.rps,
            r.p50.as_secs_f64() / base.p50.as_secs_f64(),
            r.p99.as_secs_f64() / base.p99.as_secs_f64(),
            base.cpu_us / r.cpu_us,
            r.unexpected,
            r.failures,
        );
    }
    println!();
    // Besides the ratio of the medians, the median of the per-round ratios: rounds are
    // interleaved, so round i of two scenarios ran seconds apart, and a slow drift of the
    // machine's speed (other tenants of the host) cancels out of each pair.
    println!(
        "| target | req/s ratio | met | CPU/req ratio | met | paired req/s ratio, median \
         (min–max) | met | paired CPU/req ratio, median | met |"
    );
    println!("|---|---:|:---:|---:|:---:|---:|:---:|---:|:---:|");
    let verdict = |v: f64, min: f64| if v >= min { "yes" } else { "**no**" };
    let paired = |a: &[f64], b: &[f64], f: fn(f64, f64) -> f64| {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(&a, &b)| f(a, b)).collect();
        let (min, max) = min_max(&ratios);
        (median(&ratios), min, max)
    };
    let target = |label: &str, a: &str, b: &str, min: f64| {
        if let (Some(a), Some(b)) = (find(a), find(b)) {
            let (rps, cpu) = (a.rps / b.rps, b.cpu_us / a.cpu_us);
            let (p_rps, p_min, p_max) = paired(&a.round_rps, &b.round_rps, |a, b| a / b);
            let (p_cpu, _, _) = paired(&a.round_cpu, &b.round_cpu, |a, b| b / a);
            println!(
                "| {label} ≥ {min:.2} | {rps:.3} | {} | {cpu:.3} | {} | {p_rps:.3} \
                 ({p_min:.3}–{p_max:.3}) | {} | {p_cpu:.3} | {} |",
                verdict(rps, min),
                verdict(cpu, min),
                verdict(p_rps, min),
                verdict(p_cpu, min)
            );
        }
    };
    target("(4) ÷ (1)", "4", "1", 0.90);
    target("(5) ÷ (1)", "5", "1", 0.90);
    target("(3) ÷ (1)", "3", "1", 0.75);
    target("(2) ÷ (1)", "2", "1", 0.70);
    target("(4) at 1e6 tokens ÷ (4) at 1e3 tokens", "4big", "4", 0.90);
    target("(2L) limits on ÷ (1)", "2L", "1", 0.70);
    target("(2L) limits on ÷ (2) unprotected", "2L", "2", 0.70);
    target("(3L) limits on ÷ (1)", "3L", "1", 0.75);
    target("(4L) limits on ÷ (1)", "4L", "1", 0.90);
    target("(4L) limits on ÷ (4) unprotected", "4L", "4", 0.90);
    target(
        "(4P) metrics on ÷ (1b) unprotected route, metrics on",
        "4P",
        "1bP",
        0.90,
    );
    target(
        "(4P) metrics on ÷ (1c) same request unguarded, metrics on",
        "4P",
        "1cP",
        0.90,
    );
    target(
        "(4) ÷ (1c) same request unguarded, metrics off",
        "4",
        "1c",
        0.90,
    );
    target("(4P) metrics on ÷ (1)", "4P", "1", 0.90);
    target("(4P) metrics on ÷ (4) metrics off", "4P", "4", 0.90);
    target("(5P) metrics on ÷ (5) metrics off", "5P", "5", 0.90);
    target("(3P) metrics on ÷ (3) metrics off", "3P", "3", 0.90);
    target("(2P) metrics on ÷ (2) metrics off", "2P", "2", 0.90);
    target("(1bP) metrics on ÷ (1b) metrics off", "1bP", "1b", 0.90);
    target("Redis (3) ÷ in-memory (3)", "r3", "3", 0.40);
    target(
        "Redis (4) ÷ in-memory (4) (no target; shown at 0.40)",
        "r4",
        "4",
        0.40,
    );
    target("PostgreSQL (3) ÷ in-memory (3) (no target)", "p3", "3", 0.0);
    target("PostgreSQL (4) ÷ in-memory (4) (no target)", "p4", "4", 0.0);
    target("SQLite (3) ÷ in-memory (3) (no target)", "s3", "3", 0.0);
    target("SQLite (4) ÷ in-memory (4) (no target)", "s4", "4", 0.0);
    for n in notes {
        println!();
        println!("{n}");
    }
}

/// A process-wide metrics recorder that can be switched on and off between rounds.
mod recorder {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

    static ON: AtomicBool = AtomicBool::new(false);
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    /// `BENCH_PROM_HISTOGRAMS=0`: the exporter takes counters and gauges only, to tell its
    /// per-sample histogram storage apart from the crate's own recording.
    static HISTOGRAMS: AtomicBool = AtomicBool::new(true);

    /// Prometheus while on; the facade's no-op handles while off.
    struct Switch(PrometheusRecorder);

    impl Recorder for Switch {
        fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.0.describe_counter(key, unit, help)
        }
        fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.0.describe_gauge(key, unit, help)
        }
        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.0.describe_histogram(key, unit, help)
        }
        fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
            if ON.load(Ordering::Relaxed) {
                self.0.register_counter(key, metadata)
            } else {
                Counter::noop()
            }
        }
        fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
            if ON.load(Ordering::Relaxed) {
                self.0.register_gauge(key, metadata)
            } else {
                Gauge::noop()
            }
        }
        fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
            if ON.load(Ordering::Relaxed) && HISTOGRAMS.load(Ordering::Relaxed) {
                self.0.register_histogram(key, metadata)
            } else {
                Histogram::noop()
            }
        }
    }

    /// Installs the switch (off) and the exporter's upkeep; call inside the runtime.
    pub fn install() {
        HISTOGRAMS.store(
            std::env::var("BENCH_PROM_HISTOGRAMS").map_or(true, |v| v != "0"),
            Ordering::Relaxed,
        );
        // `BENCH_PROM_BUCKETS=1`: histograms as Prometheus histograms (fixed buckets) instead
        // of the exporter's default summaries (quantiles).
        let mut builder = PrometheusBuilder::new();
        if std::env::var("BENCH_PROM_BUCKETS").is_ok_and(|v| v == "1") {
            builder = builder
                .set_buckets(&[
                    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ])
                .expect("non-empty buckets");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(Switch(recorder)).is_err() {
            return;
        }
        #[cfg(feature = "metrics")]
        tower_device_flow::observe::describe();
        let upkeep = handle.clone();
        let _ = HANDLE.set(handle);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
    }

    pub fn switch(on: bool) {
        ON.store(on, Ordering::Relaxed);
    }

    /// How many lines the exporter renders now (a check that the rounds with metrics on
    /// recorded something).
    pub fn rendered_lines() -> usize {
        HANDLE.get().map_or(0, |h| h.render().lines().count())
    }
}

fn main() {
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        recorder::install();
        run(cfg).await;
        eprintln!(
            "the Prometheus exposition holds {} lines after the run",
            recorder::rendered_lines()
        );
    });
}

//! The demo authorization server: the whole device flow on plain hyper and the in-memory store.
//!
//! ```text
//! cargo run --release --example device_server -- --addr 127.0.0.1:8080 [--expires-in 1800] [--interval 5]
//! ```
//!
//! The issuer is `http://ADDR` unless `--issuer URL` names the URL clients reach it at. RFC 8414
//! wants `https`; the demo contract serves plain HTTP on any `--addr`, so on an address other
//! than loopback the demo allows it (`allow_plain_http`) and says so on stderr. In production,
//! give the `https` URL of the proxy in front as `--issuer`.
//!
//! With `--jwt` access tokens are RFC 9068 JWTs, verifiable by `examples/resource_server.rs`
//! against `GET /.well-known/jwks.json`. Every token's audience is `http://ADDR/api`.
//!
//! With `--redis URL` (build with `--features redis`) the flow lives in Redis instead of memory,
//! so several instances on one Redis serve one flow: authorize on one, approve on another, poll
//! any of them. `--redis-prefix` (default `tdf`) separates deployments sharing a Redis.
//!
//! With `--postgres URL` (build with `--features postgres`) the flow lives in PostgreSQL, in
//! the schema `device_flow` unless the URL names another (`?options[search_path]=NAME`), for
//! many instances on one database; with `--sqlite PATH` (`--features sqlite`) in an SQLite
//! file, for one instance that survives a restart. Either creates its tables at start.
//!
//! Its HTTP surface is fixed by `DEMO_CONTRACT.md`: clients `demo-device` (public) and
//! `demo-confidential` (secret `demo-secret`), end users `alice` and `bob` signing in to the
//! verification page with HTTP Basic, and three API routes, two of them guarded by scope. The
//! same end users list and sign out their devices at `/account/devices` (JSON, or HTML for a
//! browser) and `/account/devices/revoke`, served by the endpoints layer.
//!
//! It is served by the loop of `examples/common/server_loop.rs`: request heads (and idle
//! keep-alive connections) time out after `--header-timeout` seconds (default 10), at most
//! `--max-connections` (default 4096) are open, accept errors back off. Flood and guessing
//! limits count per TCP peer address (no proxy header is trusted), so 127.0.0.2 and 127.0.0.3
//! are counted apart; `--no-limits` turns the per-source ones off for load tests.
//! DPoP (RFC 9449, the default `dpop` feature) is on for every client: a token request with a
//! valid `DPoP` proof gets DPoP-bound tokens, which the guarded routes accept only as
//! `Authorization: DPoP <token>` with a proof for that request; requests without DPoP work as
//! before. The `device_client` example uses it by default.
//!
//! Logs (the crate's `tracing` events) go to stderr, filtered by `RUST_LOG` (default
//! `warn,tower_device_flow=info`); stdout keeps only the line saying where it listens.
//!
//! `GET /metrics` is the Prometheus text exposition of the flow's counters, latencies and
//! pending-grants gauge (the default `metrics` feature, through `metrics-exporter-prometheus`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::form::RECOMMENDED_BODY_TIMEOUT;
use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
use tower_device_flow::{
    Audience, BasicLogin, Client, DeviceFlow, Limits, MemoryStore, Scope, Store, TokenInfo,
};

#[path = "common/logging.rs"]
mod logging;
#[path = "common/server_loop.rs"]
mod server_loop;

const USAGE: &str =
    "usage: device_server [--addr HOST:PORT] [--issuer URL] [--expires-in SECS] [--interval SECS] \
[--redis URL [--redis-prefix PREFIX]] [--postgres URL] [--sqlite PATH] [--jwt] [--no-limits] \
[--header-timeout SECS] [--max-connections N]";

struct Args {
    addr: SocketAddr,
    issuer: Option<String>,
    expires_in: u64,
    interval: u64,
    redis: Option<String>,
    redis_prefix: String,
    no_limits: bool,
    server: server_loop::ServerLimits,
    postgres: Option<String>,
    sqlite: Option<String>,
    jwt: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        issuer: None,
        expires_in: 1800,
        interval: 5,
        redis: None,
        redis_prefix: "tdf".into(),
        no_limits: false,
        server: server_loop::ServerLimits::default(),
        postgres: None,
        sqlite: None,
        jwt: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        if flag == "--no-limits" {
            args.no_limits = true;
            continue;
        }
        if flag == "--jwt" {
            args.jwt = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--issuer" => args.issuer = Some(value),
            "--expires-in" => args.expires_in = value.parse().map_err(|e| bad(&e))?,
            "--interval" => args.interval = value.parse().map_err(|e| bad(&e))?,
            "--redis" => args.redis = Some(value),
            "--redis-prefix" => args.redis_prefix = value,
            "--header-timeout" => {
                let secs: u64 = value.parse().map_err(|e| bad(&e))?;
                args.server.header_read_timeout = Duration::from_secs(secs.max(1));
            }
            "--max-connections" => {
                args.server.max_connections = value.parse().map_err(|e| bad(&e))?
            }
            "--postgres" => args.postgres = Some(value),
            "--sqlite" => args.sqlite = Some(value),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The demo's stand-in for an application's login: HTTP Basic against two fixed users.
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn token_of<B>(req: &Request<B>) -> Option<&TokenInfo> {
    req.extensions().get::<TokenInfo>()
}

/// The resource indicator (RFC 8707) of the demo's API, `/api` under the issuer: the audience
/// of every token, and the one resource the clients may name.
fn demo_api(addr: SocketAddr) -> Option<Audience> {
    Audience::from_resources([format!("http://{addr}/api")]).ok()
}

fn demo_clients(api: Option<Audience>) -> [Client; 2] {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let resources = |c: Client| match &api {
        Some(api) => c.with_resources(api.clone()),
        None => c,
    };
    [
        resources(Client::public("demo-device", scopes.clone()).with_name("Demo device")),
        resources(
            Client::confidential("demo-confidential", "demo-secret", scopes)
                .with_name("Demo confidential client"),
        ),
    ]
}

#[tokio::main]
async fn main() {
    logging::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if let Some(url) = args.postgres.clone() {
        return serve_postgres(url, args).await;
    }
    if let Some(path) = args.sqlite.clone() {
        return serve_sqlite(path, args).await;
    }
    match args.redis.clone() {
        None => {
            let store = demo_clients(demo_api(args.addr))
                .into_iter()
                .fold(MemoryStore::builder(), |b, c| b.client(c))
                .build();
            serve(store, args).await
        }
        Some(url) => serve_redis(url, args).await,
    }
}

#[cfg(feature = "redis")]
async fn serve_redis(url: String, args: Args) {
    let builder = demo_clients(demo_api(args.addr)).into_iter().fold(
        tower_device_flow::RedisStore::builder().prefix(args.redis_prefix.clone()),
        |b, c| b.client(c),
    );
    match builder.connect(url.as_str()).await {
        Ok(store) => serve(store, args).await,
        Err(e) => {
            eprintln!("cannot use Redis at {url}: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(not(feature = "redis"))]
async fn serve_redis(_url: String, _args: Args) {
    eprintln!("--redis needs the redis feature: cargo run --example device_server --features redis -- ...");
    std::process::exit(2);
}

#[cfg(feature = "postgres")]
async fn serve_postgres(url: String, args: Args) {
    let builder = demo_clients(demo_api(args.addr))
        .into_iter()
        .fold(tower_device_flow::PostgresStore::builder(), |b, c| {
            b.client(c)
        });
    let store = match builder.connect(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot use PostgreSQL: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = store.migrate().await {
        eprintln!("cannot create the tables in PostgreSQL: {e}");
        std::process::exit(1);
    }
    serve(store, args).await
}

#[cfg(not(feature = "postgres"))]
async fn serve_postgres(_url: String, _args: Args) {
    eprintln!("--postgres needs the postgres feature: cargo run --example device_server --features postgres -- ...");
    std::process::exit(2);
}

#[cfg(feature = "sqlite")]
async fn serve_sqlite(path: String, args: Args) {
    let builder = demo_clients(demo_api(args.addr))
        .into_iter()
        .fold(tower_device_flow::SqliteStore::builder(), |b, c| {
            b.client(c)
        });
    let store = match builder.connect(&path).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the SQLite file {path}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = store.migrate().await {
        eprintln!("cannot create the tables in {path}: {e}");
        std::process::exit(1);
    }
    serve(store, args).await
}

#[cfg(not(feature = "sqlite"))]
async fn serve_sqlite(_path: String, _args: Args) {
    eprintln!("--sqlite needs the sqlite feature: cargo run --example device_server --features sqlite -- ...");
    std::process::exit(2);
}

/// Installs the Prometheus recorder for the whole process: every metric the flow records is
/// rendered on `GET /metrics`.
fn prometheus() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            #[cfg(feature = "metrics")]
            tower_device_flow::observe::describe();
            // Histograms are kept in buckets that upkeep drains; run it in the background.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        }
        Err(e) => {
            eprintln!("metrics are off: {e}");
            None
        }
    }
}

async fn serve<S: Store>(store: S, args: Args) {
    let prometheus = prometheus();
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let plain_http = args.issuer.is_none() && !args.addr.ip().is_loopback();
    if plain_http {
        eprintln!(
            "warning: serving plain HTTP on {}: codes and tokens cross the network unencrypted \
             (give --issuer https://... behind a TLS proxy)",
            args.addr
        );
    }
    let flow = DeviceFlow::builder(store)
        .issuer(
            args.issuer
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.addr)),
        )
        .allow_plain_http(plain_http)
        .expires_in(Duration::from_secs(args.expires_in))
        .interval(Duration::from_secs(args.interval))
        // Slow request bodies are cut off (this runtime has the Tokio timer).
        .body_read_timeout(Some(RECOMMENDED_BODY_TIMEOUT))
        .end_user(BasicLogin::users("device", USERS))
        .scopes_supported(scopes)
        // Per TCP peer: the demo trusts no proxy header.
        .limits(if args.no_limits {
            Limits::default().without_per_source()
        } else {
            Limits::default()
        })
        .default_audience(demo_api(args.addr));
    // With --jwt, access tokens are RFC 9068 JWTs signed by a key generated at start (its
    // public half at /.well-known/jwks.json); otherwise random strings.
    let flow = if args.jwt {
        match SigningKey::generate(JwsAlgorithm::EdDSA) {
            Ok(key) => flow.jwt_access_tokens(Arc::new(JwtKeys::new(key))),
            Err(e) => {
                eprintln!("cannot generate a signing key: {e}");
                std::process::exit(1);
            }
        }
    } else {
        flow
    };
    let flow = match flow.try_build() {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };

    // The two guarded routes and the same handler shape without the layer.
    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let body = match token_of(&req) {
                Some(t) => {
                    serde_json::json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()})
                }
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json(StatusCode::OK, body))
        }));
    let email =
        flow.require_oauth("email")
            .layer(service_fn(|req: Request<Incoming>| async move {
                let body = match token_of(&req) {
                    Some(t) => serde_json::json!({
                        "sub": t.subject.as_str(),
                        "email": format!("{}@example.com", t.subject),
                    }),
                    None => serde_json::json!({}),
                };
                Ok::<_, Infallible>(json(StatusCode::OK, body))
            }));
    let scrape = flow.clone();
    let api = service_fn(move |req: Request<Incoming>| {
        let (me, email) = (me.clone(), email.clone());
        let (scrape, prometheus) = (scrape.clone(), prometheus.clone());
        async move {
            let res = match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/email" => email.oneshot(req).await?.map(Either::Left),
                "/api/public" => {
                    json(StatusCode::OK, serde_json::json!({"ok": true})).map(Either::Right)
                }
                "/metrics" => metrics(&scrape, prometheus.as_ref())
                    .await
                    .map(Either::Right),
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "not_found"}),
                )
                .map(Either::Right),
            };
            Ok::<_, Infallible>(res)
        }
    });
    // Every OAuth endpoint in front of the application, in one line.
    let app = flow.endpoints_layer().layer(api);

    let listener = match TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    println!("device_server listening on http://{}", args.addr);
    server_loop::serve(listener, app, args.server).await;
}

/// `GET /metrics`: the Prometheus text exposition, with the pending-grants gauge read now.
async fn metrics<S: Store>(
    flow: &DeviceFlow<S>,
    prometheus: Option<&PrometheusHandle>,
) -> Response<Full<Bytes>> {
    let Some(prometheus) = prometheus else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    };
    flow.record_pending_grants().await;
    let mut res = Response::new(Full::new(Bytes::from(prometheus.render())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

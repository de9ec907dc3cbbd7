//! The demo authorization server: the whole device flow on plain hyper and the in-memory store.
//!
//! ```text
//! cargo run --release --example device_server -- --addr 127.0.0.1:8080 [--expires-in 1800] [--interval 5]
//! ```
//!
//! With `--redis URL` (build with `--features redis`) the flow lives in Redis instead of memory,
//! so several instances on one Redis serve one flow: authorize on one, approve on another, poll
//! any of them. `--redis-prefix` (default `tdf`) separates deployments sharing a Redis.
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::form::RECOMMENDED_BODY_TIMEOUT;
use tower_device_flow::{
    BasicLogin, Client, DeviceFlow, Limits, MemoryStore, Scope, Store, TokenInfo,
};

#[path = "common/server_loop.rs"]
mod server_loop;

const USAGE: &str =
    "usage: device_server [--addr HOST:PORT] [--expires-in SECS] [--interval SECS] \
[--redis URL [--redis-prefix PREFIX]] [--no-limits] [--header-timeout SECS] [--max-connections N]";

struct Args {
    addr: SocketAddr,
    expires_in: u64,
    interval: u64,
    redis: Option<String>,
    redis_prefix: String,
    no_limits: bool,
    server: server_loop::ServerLimits,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        expires_in: 1800,
        interval: 5,
        redis: None,
        redis_prefix: "tdf".into(),
        no_limits: false,
        server: server_loop::ServerLimits::default(),
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
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
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

fn demo_clients() -> [Client; 2] {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    [
        Client::public("demo-device", scopes.clone()).with_name("Demo device"),
        Client::confidential("demo-confidential", "demo-secret", scopes)
            .with_name("Demo confidential client"),
    ]
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    match args.redis.clone() {
        None => {
            let store = demo_clients()
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
    let builder = demo_clients().into_iter().fold(
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

async fn serve<S: Store>(store: S, args: Args) {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let flow = DeviceFlow::builder(store)
        .issuer(format!("http://{}", args.addr))
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
        .build();

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
    let api = service_fn(move |req: Request<Incoming>| {
        let (me, email) = (me.clone(), email.clone());
        async move {
            let res = match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/email" => email.oneshot(req).await?.map(Either::Left),
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

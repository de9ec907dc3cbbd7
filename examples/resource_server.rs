//! The demo resource server: the demo's API on its own, in another process than the
//! authorization server, accepting the tokens it issues.
//!
//! ```text
//! cargo run --release --example device_server -- --addr 127.0.0.1:8080 [--jwt]
//! cargo run --release --example resource_server -- --addr 127.0.0.1:8081 --issuer http://127.0.0.1:8080 [--cache-ttl 30] [--jwt]
//! ```
//!
//! It serves `GET /api/me` (scope `profile`), `/api/email` (scope `email`) and `/api/public`
//! exactly as the demo does (`DEMO_CONTRACT.md`). Tokens are checked by RFC 7662 introspection
//! at `{issuer}/oauth/introspect` as `demo-confidential`/`demo-secret`, answers cached at most
//! `--cache-ttl` seconds (never past the token's expiry); or, with `--jwt`, verified as RFC 9068
//! JWT access tokens against the issuer's JWKS. Either way the token must be meant for this
//! API: its audience must include `{issuer}/api`, the resource indicator the demo
//! authorization server gives its tokens by default. When the authorization server cannot be
//! reached, guarded routes answer 503 until it is back.
//!
//! Logs (the crate's `tracing` events) go to stderr, filtered by `RUST_LOG` (default
//! `warn,tower_device_flow=info`); stdout keeps only the line saying where it listens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::bearer::TokenVerifier;
use tower_device_flow::resource_server::{IntrospectionVerifier, JwtVerifier};
use tower_device_flow::{RequireOAuthLayer, Scope, ScopeRequirement, TokenInfo};

#[path = "common/logging.rs"]
mod logging;

const USAGE: &str =
    "usage: resource_server [--addr HOST:PORT] [--issuer URL] [--cache-ttl SECS] [--jwt]";

struct Args {
    addr: SocketAddr,
    issuer: String,
    cache_ttl: u64,
    jwt: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
        issuer: "http://127.0.0.1:8080".into(),
        cache_ttl: 30,
        jwt: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.into()),
            "--jwt" => {
                args.jwt = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--issuer" => args.issuer = value.trim_end_matches('/').to_owned(),
            "--cache-ttl" => args.cache_ttl = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
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
    let http = Client::builder(TokioExecutor::new()).build_http();
    if args.jwt {
        match JwtVerifier::builder(http, &args.issuer) {
            Ok(b) => serve(b.build(), args).await,
            Err(e) => fail(e),
        }
    } else {
        let endpoint = format!("{}/oauth/introspect", args.issuer);
        match IntrospectionVerifier::builder(http, &endpoint) {
            Ok(b) => {
                let verifier = b
                    .client_credentials("demo-confidential", "demo-secret")
                    .expected_issuer(args.issuer.clone())
                    .cache_ttl(Duration::from_secs(args.cache_ttl))
                    .build();
                serve(verifier, args).await
            }
            Err(e) => fail(e),
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("--issuer: {e}\n{USAGE}");
    std::process::exit(2);
}

fn guard<V: TokenVerifier>(verifier: V, scope: &str, audience: &str) -> RequireOAuthLayer<V> {
    let scope = Scope::parse(scope).unwrap_or_default();
    RequireOAuthLayer::new(verifier, ScopeRequirement::AllOf(scope)).with_audience(audience)
}

async fn serve<V: TokenVerifier + Clone>(verifier: V, args: Args) {
    // The resource indicator of the demo's API (the demo authorization server's default).
    let audience = format!("{}/api", args.issuer);
    let me = guard(verifier.clone(), "profile", &audience).layer(service_fn(
        |req: Request<Incoming>| async move {
            let body = match req.extensions().get::<TokenInfo>() {
                Some(t) => {
                    serde_json::json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()})
                }
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json(StatusCode::OK, body))
        },
    ));
    let email = guard(verifier, "email", &audience).layer(service_fn(
        |req: Request<Incoming>| async move {
            let body = match req.extensions().get::<TokenInfo>() {
                Some(t) => serde_json::json!({
                    "sub": t.subject.as_str(),
                    "email": format!("{}@example.com", t.subject),
                }),
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json(StatusCode::OK, body))
        },
    ));
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

    let listener = match TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let mode = if args.jwt { "JWT" } else { "introspection" };
    println!(
        "resource_server listening on http://{} (issuer {}, {mode})",
        args.addr, args.issuer
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let service = TowerToHyperService::new(api.clone());
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! The device flow in an axum 0.8 application: the OAuth endpoints mounted as Tower services,
//! two route groups guarded by scope with `route_layer`, and handlers taking the verified
//! [`TokenInfo`] as an extractor (crate feature `axum`).
//!
//! ```text
//! cargo run --example axum --features axum -- [--addr 127.0.0.1:8080] [--expires-in 1800] [--interval 5]
//! ```
//!
//! It serves the same HTTP surface as `device_server` (`DEMO_CONTRACT.md`): clients
//! `demo-device` (public) and `demo-confidential` (secret `demo-secret`), end users `alice` and
//! `bob` signing in to the verification page with HTTP Basic. Try it with the device client:
//!
//! ```text
//! cargo run --example device_client -- --base http://127.0.0.1:8080 --scope profile
//! # open the printed URL, sign in as alice / alice-password, approve; then:
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:8080/api/me
//! ```

use std::net::SocketAddr;
use std::time::Duration;

#[path = "common/server_loop.rs"]
mod server_loop;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_device_flow::{BasicLogin, Client, DeviceFlow, MemoryStore, Scope, TokenInfo};

/// The demo's stand-in for an application's login: HTTP Basic against two fixed users.
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

/// The demo flow: two clients allowed `profile email`, on the in-memory store.
pub fn demo_flow(
    issuer: &str,
    expires_in: Duration,
    interval: Duration,
) -> DeviceFlow<MemoryStore> {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()).with_name("Demo device"))
        .client(
            Client::confidential("demo-confidential", "demo-secret", scopes.clone())
                .with_name("Demo confidential client"),
        )
        .build();
    DeviceFlow::builder(store)
        .issuer(issuer)
        .expires_in(expires_in)
        .interval(interval)
        .end_user(BasicLogin::users("device", USERS))
        .scopes_supported(scopes)
        .build()
}

/// The application: OAuth endpoints, two guarded route groups and a public route.
pub fn app(flow: &DeviceFlow<MemoryStore>) -> Router {
    let paths = flow.paths();

    // `route_layer` guards the routes added before it, and only when one of them matches:
    // unknown paths still answer 404 rather than 401.
    let profile = Router::new()
        .route("/api/me", get(me))
        .route_layer(flow.require_oauth("profile"));
    let email = Router::new()
        .route("/api/email", get(email))
        .route_layer(flow.require_oauth("email"));

    Router::new()
        // Each OAuth endpoint is a Tower service answering every method itself (405 where due).
        .route_service(&paths.device_authorization, flow.device_authorization())
        .route_service(&paths.token, flow.token())
        .route_service(&paths.verification, flow.verification())
        .route_service(&paths.revocation, flow.revocation())
        .route_service(&paths.introspection, flow.introspection())
        .route_service(&paths.metadata, flow.metadata())
        .merge(profile)
        .merge(email)
        .route("/api/public", get(public))
}

/// Scope `profile`: who the token speaks for.
async fn me(token: TokenInfo) -> Json<Value> {
    Json(json!({
        "sub": token.subject.as_str(),
        "scope": token.scope.as_str(),
        "client_id": token.client_id.as_str(),
    }))
}

/// Scope `email`.
async fn email(token: TokenInfo) -> Json<Value> {
    Json(json!({
        "sub": token.subject.as_str(),
        "email": format!("{}@example.com", token.subject),
    }))
}

async fn public() -> Json<Value> {
    Json(json!({"ok": true}))
}

const USAGE: &str = "usage: axum [--addr HOST:PORT] [--expires-in SECS] [--interval SECS]";

#[tokio::main]
async fn main() {
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 8080));
    let (mut expires_in, mut interval) = (1800u64, 5u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            std::process::exit(2);
        };
        let ok = match flag.as_str() {
            "--addr" => value.parse().map(|v| addr = v).is_ok(),
            "--expires-in" => value.parse().map(|v| expires_in = v).is_ok(),
            "--interval" => value.parse().map(|v| interval = v).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("bad flag or value: {flag} {value}\n{USAGE}");
            std::process::exit(2);
        }
    }

    let flow = demo_flow(
        &format!("http://{addr}"),
        Duration::from_secs(expires_in),
        Duration::from_secs(interval),
    );
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("axum example listening on http://{addr}");
    // Not `axum::serve`: it has no header-read timeout or connection cap. The shared loop
    // also puts the peer address in each request as a `ClientAddr`, for the per-source limits.
    // (With `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`,
    // copy `ConnectInfo<SocketAddr>` into a `ClientAddr` with a `map_request` middleware.)
    server_loop::serve(listener, app(&flow), server_loop::ServerLimits::default()).await;
}

//! Two gRPC services on tonic 0.14, each guarded by its own scope, with the OAuth endpoints on
//! the same port (crate feature `tonic`).
//!
//! ```text
//! cargo run --example tonic --features tonic -- [--addr 127.0.0.1:50051] [--interval 5]   # serve
//! cargo run --example device_client -- --base http://127.0.0.1:50051 --scope profile     # get a token
//! cargo run --example tonic --features tonic -- call --token ACCESS_TOKEN [--rpc email] [--addr 127.0.0.1:50051]
//! ```
//!
//! Each service gets its own guard: `Server::builder().add_service(flow.require_oauth("profile")
//! .layer(ProfileServer))`, which needs the guarded service to be a `NamedService` (it is, with
//! feature `tonic`, when the service inside is). `demo.Profile/WhoAmI` takes scope `profile`,
//! `demo.Email/GetEmail` scope `email`. Without a token a client sees `Code::Unauthenticated`,
//! with a token lacking the scope `Code::PermissionDenied` (the layer answers gRPC requests with
//! HTTP 200 and `grpc-status`, keeping `WWW-Authenticate` in the metadata). A handler reads the
//! verified [`TokenInfo`] from `request.extensions()`. (To guard every service with one scope,
//! `Server::builder().layer(flow.require_oauth(...))` works without the feature.)
//!
//! The server accepts HTTP/1.1 too, so the device client and the end user's browser reach the
//! OAuth endpoints (served by `flow.endpoints_layer()` in front of the services) on the same
//! port. Clients and users are those of `DEMO_CONTRACT.md`: `demo-device`, `alice` /
//! `alice-password`. Logs go to stderr, filtered by `RUST_LOG` (default: the crate's `info`).
//!
//! The services are written by hand the way `tonic-prost-build` would generate them, so the
//! example needs no `protoc`.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

#[path = "common/logging.rs"]
mod logging;

use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{Layer, Service};
use tower_device_flow::{BasicLogin, Client, DeviceFlow, MemoryStore, Scope, TokenInfo};

/// The messages of
///
/// ```proto
/// syntax = "proto3";
/// package demo;
///
/// service Profile {
///   rpc WhoAmI (WhoAmIRequest) returns (WhoAmIReply);
/// }
/// message WhoAmIRequest {}
/// message WhoAmIReply {
///   string subject = 1;
///   string scope = 2;
///   string client_id = 3;
/// }
///
/// service Email {
///   rpc GetEmail (GetEmailRequest) returns (GetEmailReply);
/// }
/// message GetEmailRequest {}
/// message GetEmailReply {
///   string subject = 1;
///   string email = 2;
/// }
/// ```
pub mod pb {
    /// `demo.WhoAmIRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WhoAmIRequest {}

    /// `demo.WhoAmIReply`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WhoAmIReply {
        /// The end user the token speaks for.
        #[prost(string, tag = "1")]
        pub subject: String,
        /// The token's scope.
        #[prost(string, tag = "2")]
        pub scope: String,
        /// The client the token was issued to.
        #[prost(string, tag = "3")]
        pub client_id: String,
    }

    /// `demo.GetEmailRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetEmailRequest {}

    /// `demo.GetEmailReply`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetEmailReply {
        /// The end user the token speaks for.
        #[prost(string, tag = "1")]
        pub subject: String,
        /// Their (made-up) address.
        #[prost(string, tag = "2")]
        pub email: String,
    }
}

/// The gRPC path of `demo.Profile/WhoAmI`.
pub const WHO_AM_I: &str = "/demo.Profile/WhoAmI";

/// The gRPC path of `demo.Email/GetEmail`.
pub const GET_EMAIL: &str = "/demo.Email/GetEmail";

/// The `demo.Profile` service, routed by method path as generated code does.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProfileServer;

impl NamedService for ProfileServer {
    const NAME: &'static str = "demo.Profile";
}

/// The `demo.Email` service.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmailServer;

impl NamedService for EmailServer {
    const NAME: &'static str = "demo.Email";
}

type GrpcFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

/// Answers `req` with `handler` if it asks for `path`, else `UNIMPLEMENTED`.
fn unary<B, H, Req, Res>(req: http::Request<B>, path: &str, handler: H) -> GrpcFuture
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    H: UnaryService<Req, Response = Res> + Send + 'static,
    H::Future: Send,
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Send + 'static,
{
    if req.uri().path() == path {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Res, Req>::default());
            Ok(grpc.unary(handler, req).await)
        })
    } else {
        Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
    }
}

impl<B> Service<http::Request<B>> for ProfileServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = GrpcFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        unary(req, WHO_AM_I, WhoAmI)
    }
}

impl<B> Service<http::Request<B>> for EmailServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = GrpcFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        unary(req, GET_EMAIL, GetEmail)
    }
}

/// The token the bearer layer verified and left in the extensions, which tonic carries over
/// from the HTTP request.
fn token_of<T>(request: &Request<T>) -> Result<&TokenInfo, Status> {
    request
        .extensions()
        .get::<TokenInfo>()
        .ok_or_else(|| Status::internal("no TokenInfo: the bearer layer is missing"))
}

/// The `WhoAmI` handler.
struct WhoAmI;

impl UnaryService<pb::WhoAmIRequest> for WhoAmI {
    type Response = pb::WhoAmIReply;
    type Future = Ready<Result<Response<pb::WhoAmIReply>, Status>>;

    fn call(&mut self, request: Request<pb::WhoAmIRequest>) -> Self::Future {
        ready(token_of(&request).map(|token| {
            Response::new(pb::WhoAmIReply {
                subject: token.subject.to_string(),
                scope: token.scope.to_string(),
                client_id: token.client_id.to_string(),
            })
        }))
    }
}

/// The `GetEmail` handler.
struct GetEmail;

impl UnaryService<pb::GetEmailRequest> for GetEmail {
    type Response = pb::GetEmailReply;
    type Future = Ready<Result<Response<pb::GetEmailReply>, Status>>;

    fn call(&mut self, request: Request<pb::GetEmailRequest>) -> Self::Future {
        ready(token_of(&request).map(|token| {
            Response::new(pb::GetEmailReply {
                subject: token.subject.to_string(),
                email: format!("{}@example.com", token.subject),
            })
        }))
    }
}

/// Calls the unary method at `path` over `channel`, with `Authorization: Bearer <token>` when
/// a token is given.
async fn call<Req, Res>(
    channel: Channel,
    path: &'static str,
    token: Option<&str>,
    message: Req,
) -> Result<Res, Status>
where
    Req: prost::Message + Send + 'static,
    Res: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let path = PathAndQuery::from_static(path);
    let codec = ProstCodec::<Req, Res>::default();
    let reply = grpc.unary(request, path, codec).await?;
    Ok(reply.into_inner())
}

/// Calls `demo.Profile/WhoAmI`.
pub async fn who_am_i(channel: Channel, token: Option<&str>) -> Result<pb::WhoAmIReply, Status> {
    call(channel, WHO_AM_I, token, pb::WhoAmIRequest {}).await
}

/// Calls `demo.Email/GetEmail`.
pub async fn get_email(channel: Channel, token: Option<&str>) -> Result<pb::GetEmailReply, Status> {
    call(channel, GET_EMAIL, token, pb::GetEmailRequest {}).await
}

/// The demo's stand-in for an application's login: HTTP Basic against two fixed users.
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

/// The demo flow: clients `demo-device` and `demo-confidential`, scopes `profile email`.
pub fn demo_flow(issuer: &str, interval: Duration) -> DeviceFlow<MemoryStore> {
    let scopes = Scope::parse("profile email").unwrap_or_default();
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()))
        .client(Client::confidential(
            "demo-confidential",
            "demo-secret",
            scopes.clone(),
        ))
        .build();
    DeviceFlow::builder(store)
        .issuer(issuer)
        .interval(interval)
        .end_user(BasicLogin::users("device", USERS))
        .scopes_supported(scopes)
        .build()
}

/// Serves `demo.Profile` (scope `profile`), `demo.Email` (scope `email`) and the OAuth
/// endpoints on `listener`.
pub async fn serve(
    flow: DeviceFlow<MemoryStore>,
    listener: TcpListener,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        // HTTP/1.1 for the OAuth endpoints (device client, browser); gRPC stays on HTTP/2.
        .accept_http1(true)
        // Server layers wrap every service, the first outermost: the peer address for the
        // per-source limits, then the OAuth endpoint paths, answered before any routing.
        .layer(tower::layer::layer_fn(|inner| PeerAddr { inner }))
        .layer(flow.endpoints_layer())
        // One guard per service, each with its scope (a guarded service keeps its name).
        .add_service(flow.require_oauth("profile").layer(ProfileServer))
        .add_service(flow.require_oauth("email").layer(EmailServer))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// Copies tonic's `TcpConnectInfo` into the `ClientAddr` the flow's per-source limits read.
#[derive(Clone)]
struct PeerAddr<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for PeerAddr<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr());
        if let Some(peer) = peer {
            req.extensions_mut()
                .insert(tower_device_flow::ClientAddr(peer));
        }
        self.inner.call(req)
    }
}

const USAGE: &str = "usage: tonic [--addr HOST:PORT] [--interval SECS]\n       \
                     tonic call [--token ACCESS_TOKEN] [--rpc whoami|email] [--addr HOST:PORT]";

fn fail(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    logging::init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let call = args.first().is_some_and(|a| a == "call");
    if call {
        args.remove(0);
    }
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 50051));
    let mut interval = 5;
    let mut token = None;
    let mut rpc = String::from("whoami");
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => {
                addr = value
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--addr: {e}")))
            }
            "--interval" => {
                interval = value
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--interval: {e}")))
            }
            "--token" => token = Some(value),
            "--rpc" => {
                if !matches!(value.as_str(), "whoami" | "email") {
                    fail("--rpc: whoami or email");
                }
                rpc = value
            }
            _ => fail(&format!("unknown flag {flag}")),
        }
    }

    if call {
        let channel = match Channel::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => endpoint.connect().await,
            Err(e) => fail(&format!("--addr: {e}")),
        };
        let channel = channel.unwrap_or_else(|e| {
            eprintln!("cannot connect to {addr}: {e}");
            std::process::exit(1)
        });
        let answer = if rpc == "email" {
            get_email(channel, token.as_deref())
                .await
                .map(|r| format!("subject={} email={}", r.subject, r.email))
        } else {
            who_am_i(channel, token.as_deref()).await.map(|r| {
                format!(
                    "subject={} scope={:?} client_id={}",
                    r.subject, r.scope, r.client_id
                )
            })
        };
        match answer {
            Ok(line) => println!("{line}"),
            Err(status) => {
                eprintln!("{:?}: {}", status.code(), status.message());
                if let Some(challenge) = status.metadata().get("www-authenticate") {
                    eprintln!("www-authenticate: {challenge:?}");
                }
                std::process::exit(1);
            }
        }
        return;
    }

    let flow = demo_flow(&format!("http://{addr}"), Duration::from_secs(interval));
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    println!("tonic example: gRPC demo.Profile, demo.Email and OAuth endpoints on http://{addr}");
    if let Err(e) = serve(flow, listener).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}

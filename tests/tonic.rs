//! The tonic example over a real socket: a tonic client sees `Unauthenticated` without a
//! valid token, `PermissionDenied` with too little scope, and the reply with a valid one. The
//! tokens come from the device flow over HTTP/1.1 on the same port. The example gives each of
//! its two services its own guard with `Server::add_service` (feature `tonic`:
//! `required-features` in Cargo.toml).

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::Code;

#[allow(dead_code)] // its `main` is not used here
#[path = "../examples/tonic.rs"]
mod example;

mod http_support;
use http_support::{Http, ALICE};

/// Starts the example server; its base URL and a connected channel.
async fn start() -> (String, Channel) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let flow = example::demo_flow(&base, Duration::from_secs(5));
    tokio::spawn(example::serve(flow, listener));
    let channel = Channel::from_shared(base.clone())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    (base, channel)
}

fn challenge(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn grpc_codes_for_each_verdict() {
    let (base, channel) = start().await;
    let http = Http::default();

    // No token.
    let status = example::who_am_i(channel.clone(), None)
        .await
        .expect_err("no token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "a bearer token is required");
    assert_eq!(challenge(&status), "Bearer realm=\"api\"");

    // A token the store never issued.
    let status = example::who_am_i(channel.clone(), Some("never-issued"))
        .await
        .expect_err("an unknown token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(challenge(&status).contains("error=\"invalid_token\""));

    // A malformed Authorization header is refused as unauthenticated too.
    let status = example::who_am_i(channel.clone(), Some("a b"))
        .await
        .expect_err("a malformed token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A valid token without scope `profile`: the device flow over HTTP/1.1, same port.
    let tokens = http
        .device_flow_tokens(&base, "demo-device", "email", ALICE)
        .await;
    let email_only = tokens["access_token"].as_str().expect("access_token");
    let status = example::who_am_i(channel.clone(), Some(email_only))
        .await
        .expect_err("insufficient scope must be refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(challenge(&status).contains("error=\"insufficient_scope\", scope=\"profile\""));

    // A valid token with scope `profile`: the handler reads its TokenInfo.
    let tokens = http
        .device_flow_tokens(&base, "demo-device", "profile email", ALICE)
        .await;
    let token = tokens["access_token"].as_str().expect("access_token");
    let reply = example::who_am_i(channel.clone(), Some(token))
        .await
        .expect("a valid token must pass");
    assert_eq!(reply.subject, "alice");
    assert_eq!(reply.client_id, "demo-device");
    let mut scope: Vec<&str> = reply.scope.split(' ').collect();
    scope.sort_unstable();
    assert_eq!(scope, ["email", "profile"]);

    // Unknown methods still reach the service behind the guard, and only with a token.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(example::pb::WhoAmIRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let status = grpc
        .unary::<_, example::pb::WhoAmIReply, _>(
            request,
            http::uri::PathAndQuery::from_static("/demo.Profile/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Revoked: unauthenticated again.
    let res = http
        .post_form(
            &format!("{base}/oauth/revoke"),
            &[("token", token), ("client_id", "demo-device")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let status = example::who_am_i(channel, Some(token))
        .await
        .expect_err("a revoked token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn one_guard_per_service_with_add_service() {
    let (base, channel) = start().await;
    let http = Http::default();

    // No token: each service's guard refuses, as unauthenticated.
    let status = example::who_am_i(channel.clone(), None)
        .await
        .expect_err("no token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = example::get_email(channel.clone(), None)
        .await
        .expect_err("no token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(challenge(&status), "Bearer realm=\"api\"");

    // Scope `profile` only: demo.Profile answers, demo.Email refuses for scope `email`.
    let tokens = http
        .device_flow_tokens(&base, "demo-device", "profile", ALICE)
        .await;
    let profile = tokens["access_token"].as_str().expect("access_token");
    let reply = example::who_am_i(channel.clone(), Some(profile))
        .await
        .expect("scope profile reaches demo.Profile");
    assert_eq!(
        (reply.subject.as_str(), reply.scope.as_str()),
        ("alice", "profile")
    );
    let status = example::get_email(channel.clone(), Some(profile))
        .await
        .expect_err("scope profile must not reach demo.Email");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        challenge(&status),
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"email\""
    );

    // Scope `email` only: the other way round.
    let tokens = http
        .device_flow_tokens(&base, "demo-device", "email", ALICE)
        .await;
    let email = tokens["access_token"].as_str().expect("access_token");
    let reply = example::get_email(channel.clone(), Some(email))
        .await
        .expect("scope email reaches demo.Email");
    assert_eq!(reply.subject, "alice");
    assert_eq!(reply.email, "alice@example.com");
    let status = example::who_am_i(channel.clone(), Some(email))
        .await
        .expect_err("scope email must not reach demo.Profile");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(challenge(&status).contains("scope=\"profile\""));

    // A service nobody registered is tonic's own UNIMPLEMENTED: no guard stands in front of
    // the router, only in front of each service.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary::<_, example::pb::WhoAmIReply, _>(
            tonic::Request::new(example::pb::WhoAmIRequest {}),
            http::uri::PathAndQuery::from_static("/demo.Nobody/WhoAmI"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

/// The guard is a `NamedService` under its inner service's name, whatever the verifier.
#[test]
fn a_guarded_service_keeps_its_name() {
    use tonic::server::NamedService;
    use tower::Layer;
    fn name_of<T: NamedService>(_: &T) -> &'static str {
        T::NAME
    }
    let flow = example::demo_flow("http://127.0.0.1:1", Duration::from_secs(5));
    let guarded = flow.require_oauth("email").layer(example::EmailServer);
    assert_eq!(name_of(&guarded), "demo.Email");
}

//! Interoperability with a third-party client, the `oauth2` crate (5.x, reqwest), over a real
//! socket: device authorization, polling through `authorization_pending` and a `slow_down` it
//! must honour, refresh-token rotation, denial, confidential clients and introspection.
//!
//! `oauth2` sleeps for real between polls, so the slow-down test takes about six seconds (an
//! interval of 1 s, plus 5 s after the `slow_down`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    ClientId, ClientSecret, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, IntrospectionUrl,
    RequestTokenError, Scope, StandardDeviceAuthorizationResponse, TokenIntrospectionResponse,
    TokenResponse, TokenUrl,
};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::{Client, DeviceFlow, MemoryStore, TokenInfo};

mod http_support;
use http_support::{bind, demo_login, serve_hyper, Http, ALICE, BOB};

/// One request to the token endpoint, as the server saw it.
#[derive(Clone, Debug)]
struct TokenCall {
    at: Instant,
    status: StatusCode,
    error: Option<String>,
}

type Log = Arc<Mutex<Vec<TokenCall>>>;

fn calls(log: &Log) -> Vec<TokenCall> {
    log.lock().expect("log").clone()
}

/// The server: every endpoint in front of a route guarded by `profile` that answers with the
/// token's subject, with the token endpoint's calls logged. Its base URL and the log.
async fn start(interval: Duration) -> (String, Log) {
    let (listener, base) = bind().await;
    let scopes = tower_device_flow::Scope::parse("profile email").expect("scope");
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()))
        .client(Client::confidential(
            "demo-confidential",
            "demo-secret",
            scopes,
        ))
        .build();
    let flow = DeviceFlow::builder(store)
        .issuer(&base)
        .interval(interval)
        .end_user(demo_login)
        .build();
    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let who = req
                .extensions()
                .get::<TokenInfo>()
                .map(|t| t.subject.to_string());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                who.unwrap_or_default(),
            ))))
        }));
    let app = flow.endpoints_layer().layer(me);

    let log = Log::default();
    let logged = log.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (app, log) = (app.clone(), logged.clone());
        async move {
            let at = Instant::now();
            let token_call = req.uri().path() == "/oauth/token";
            let (parts, body) = app.oneshot(req).await?.into_parts();
            let bytes = body.collect().await?.to_bytes();
            if token_call {
                let error = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned));
                log.lock().expect("log").push(TokenCall {
                    at,
                    status: parts.status,
                    error,
                });
            }
            Ok::<_, Infallible>(Response::from_parts(parts, Full::new(bytes)))
        }
    });
    serve_hyper(listener, svc);
    (base, log)
}

fn reqwest_client() -> oauth2::reqwest::Client {
    // No redirects, as oauth2 recommends (SSRF).
    oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

/// Waits, bounded, until the server has seen `n` token endpoint calls.
async fn wait_for_calls(log: &Log, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls(log).len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} token calls"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The end user's decision on the verification page.
async fn decide(base: &str, user_code: &str, decision: &str, user: (&str, &str)) {
    let res = Http::default()
        .post_form(
            &format!("{base}/device"),
            &[("user_code", user_code), ("decision", decision)],
            Some(user),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn device_flow_with_slow_down_and_refresh() {
    let started = Instant::now();
    let (base, log) = start(Duration::from_secs(1)).await;
    let http = reqwest_client();
    let client = BasicClient::new(ClientId::new("demo-device".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{base}/oauth/device_authorization")).expect("url"),
        )
        .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).expect("url"));

    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("profile".into()))
        .request_async(&http)
        .await
        .expect("device authorization");
    assert_eq!(details.interval(), Duration::from_secs(1));
    assert_eq!(
        details.verification_uri().as_str(),
        format!("{base}/device")
    );
    assert!(details.verification_uri_complete().is_some());

    // Poll once ourselves, so that oauth2's first poll (sent at once) comes too soon: the
    // server answers slow_down and raises this grant's interval to 6 s.
    let res = Http::default()
        .poll(&base, "demo-device", details.device_code().secret())
        .await;
    assert_eq!(res.json()["error"], "authorization_pending");

    // Alice approves once the slow_down has been given.
    let user_code = details.user_code().secret().clone();
    let approver = {
        let (base, log) = (base.clone(), log.clone());
        tokio::spawn(async move {
            wait_for_calls(&log, 2).await;
            decide(&base, &user_code, "approve", ALICE).await;
        })
    };

    let token = tokio::time::timeout(
        Duration::from_secs(12),
        client.exchange_device_access_token(&details).request_async(
            &http,
            tokio::time::sleep,
            None,
        ),
    )
    .await
    .expect("oauth2 kept polling")
    .expect("device access token");
    approver.await.expect("approver");

    // Ours (pending), oauth2's first (slow_down), oauth2's second after 1 + 5 s (tokens).
    let seen = calls(&log);
    let outcomes: Vec<_> = seen
        .iter()
        .map(|c| (c.status.as_u16(), c.error.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (400, Some("authorization_pending".to_owned())),
            (400, Some("slow_down".to_owned())),
            (200, None),
        ]
    );
    let waited = seen[2].at - seen[1].at;
    assert!(
        waited >= Duration::from_secs(6),
        "oauth2 polled again after {waited:?}, before the slowed-down interval of 6 s"
    );

    assert_eq!(*token.token_type(), BasicTokenType::Bearer);
    assert_eq!(token.scopes(), Some(&vec![Scope::new("profile".into())]));
    assert!(token.expires_in().is_some());
    let refresh = token.refresh_token().expect("a refresh token").clone();

    let me = |token: String| {
        let base = base.clone();
        async move {
            Http::default()
                .get(&format!("{base}/api/me"), Some(&token))
                .await
        }
    };
    let res = me(token.access_token().secret().clone()).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "alice"));

    // Refresh: new tokens that work.
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.access_token().secret(),
        token.access_token().secret()
    );
    let rotated = refreshed.refresh_token().expect("a rotated refresh token");
    assert_ne!(rotated.secret(), refresh.secret());
    assert_eq!(
        refreshed.scopes(),
        Some(&vec![Scope::new("profile".into())])
    );
    let res = me(refreshed.access_token().secret().clone()).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "alice"));

    // Store v2: the just-rotated token presented again within the grace period (30 s) is the
    // retry of a device that lost the reply: a fresh pair, which revokes the pair it replaces.
    let retried = client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
        .expect("a retry within the grace period");
    let again = retried.refresh_token().expect("a refresh token");
    assert_ne!(again.secret(), rotated.secret());
    let res = me(refreshed.access_token().secret().clone()).await;
    assert_eq!(res.status.as_u16(), 401, "the replaced pair is revoked");
    let res = me(retried.access_token().secret().clone()).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "alice"));

    // The pair the retry replaced is spent: presenting it is reuse, which ends the grant.
    match client
        .exchange_refresh_token(rotated)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("a spent refresh token must be invalid_grant, got {other:?}"),
    }
    let res = me(retried.access_token().secret().clone()).await;
    assert_eq!(res.status.as_u16(), 401, "reuse revokes the whole grant");
    match client
        .exchange_refresh_token(again)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("the revoked grant's refresh token worked: {other:?}"),
    }

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn denial_ends_polling_with_access_denied() {
    let (base, log) = start(Duration::from_secs(1)).await;
    let http = reqwest_client();
    let client = BasicClient::new(ClientId::new("demo-device".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{base}/oauth/device_authorization")).expect("url"),
        )
        .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).expect("url"));
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .request_async(&http)
        .await
        .expect("device authorization");

    // Alice denies after oauth2's first poll.
    let user_code = details.user_code().secret().clone();
    let denier = {
        let (base, log) = (base.clone(), log.clone());
        tokio::spawn(async move {
            wait_for_calls(&log, 1).await;
            decide(&base, &user_code, "deny", ALICE).await;
        })
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.exchange_device_access_token(&details).request_async(
            &http,
            tokio::time::sleep,
            None,
        ),
    )
    .await
    .expect("oauth2 kept polling");
    denier.await.expect("denier");
    match result {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), DeviceCodeErrorResponseType::AccessDenied)
        }
        other => panic!("expected access_denied, got {other:?}"),
    }
}

#[tokio::test]
async fn confidential_client_and_introspection() {
    let (base, _log) = start(Duration::from_secs(1)).await;
    let http = reqwest_client();
    // client_secret_basic, oauth2's default for a client with a secret.
    let client = BasicClient::new(ClientId::new("demo-confidential".into()))
        .set_client_secret(ClientSecret::new("demo-secret".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{base}/oauth/device_authorization")).expect("url"),
        )
        .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).expect("url"))
        .set_introspection_url(
            IntrospectionUrl::new(format!("{base}/oauth/introspect")).expect("url"),
        );
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes([Scope::new("profile".into()), Scope::new("email".into())])
        .request_async(&http)
        .await
        .expect("device authorization");
    // Approved before the first poll: oauth2 gets the tokens at once.
    decide(&base, details.user_code().secret(), "approve", BOB).await;
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .expect("device access token");

    let info = client
        .introspect(token.access_token())
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(info.active());
    assert_eq!(info.sub(), Some("bob"));
    assert_eq!(
        info.client_id().map(|c| c.as_str()),
        Some("demo-confidential")
    );
    let mut scopes: Vec<String> = info
        .scopes()
        .expect("scope")
        .iter()
        .map(|s| s.to_string())
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["email", "profile"]);

    // A wrong secret is refused as invalid_client.
    let wrong = BasicClient::new(ClientId::new("demo-confidential".into()))
        .set_client_secret(ClientSecret::new("not-the-secret".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{base}/oauth/device_authorization")).expect("url"),
        );
    match wrong
        .exchange_device_code()
        .request_async::<_, oauth2::EmptyExtraDeviceAuthorizationFields>(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient)
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
}

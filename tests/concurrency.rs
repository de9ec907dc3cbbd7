//! Exactly-once guarantees under concurrent requests over real HTTP connections.
//!
//! Every racer opens its own connection first, then all wait on a barrier and send at once.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const RACERS: usize = 48;

/// Sends the requests `make(i)` for `i in 0..n` at the same moment, each on its own
/// connection, and returns the responses in order.
async fn race(
    srv: &TestServer,
    n: usize,
    make: impl Fn(usize) -> Request<Full<Bytes>>,
) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = make(i);
        req.headers_mut().insert(
            header::HOST,
            HeaderValue::from_str(&srv.addr.to_string()).expect("host"),
        );
        let stream = TcpStream::connect(srv.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = sender.send_request(req).await.expect("send");
            let (parts, body) = res.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("racer"));
    }
    for res in &out {
        assert!(
            !res.status.is_server_error(),
            "server error under concurrency: {} {}",
            res.status,
            res.text()
        );
    }
    out
}

fn form_post(path: &str, body: String, authorization: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}

fn poll_request(device_code: &str) -> Request<Full<Bytes>> {
    form_post(
        "/oauth/token",
        form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
            ("client_id", PUBLIC_CLIENT),
        ]),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn approved_code_is_redeemed_exactly_once() {
    let srv = start().await;
    for round in 0..3 {
        let codes = srv.authorize(None).await;
        srv.approve(&alice(), &codes.user_code).await;
        let results = race(&srv, RACERS, |_| poll_request(&codes.device_code)).await;
        let winners: Vec<&Resp> = results
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        for loser in results.iter().filter(|r| r.status != StatusCode::OK) {
            loser.assert_oauth_error(400, "invalid_grant");
        }
        let tokens = tokens_of(winners[0]);
        let me = srv.bearer_get("/api/me", &tokens.access).await;
        me.assert_status(200);
        assert_eq!(me.json()["sub"], "alice");
        // Exactly one token pair exists for the grant.
        srv.poll(&codes.device_code)
            .await
            .assert_oauth_error(400, "invalid_grant");
    }
    assert_eq!(srv.flow.store().access_token_count(), 3);
    assert_eq!(srv.flow.store().grant_count(), 3);
}

fn refresh_request(refresh_token: &str) -> Request<Full<Bytes>> {
    form_post(
        "/oauth/token",
        form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", PUBLIC_CLIENT),
        ]),
        None,
    )
}

/// Store v2 semantics: of racing refreshes of one token, one rotates; the others, re-reading
/// after losing the compare-and-swap, find the token superseded within the grace period and
/// are answered with fresh pairs, each revoking the pair it replaces. So every racer gets a
/// pair, and at the end exactly one access token and one refresh token are live, a pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_refreshes_leave_exactly_one_live_pair() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let results = race(&srv, RACERS, |_| refresh_request(&tokens.refresh)).await;
    let pairs: Vec<Tokens> = results.iter().map(tokens_of).collect();
    assert_eq!(pairs.len(), RACERS);
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(401);
    let mut live_access = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let res = srv.bearer_get("/api/me", &p.access).await;
        match res.status.as_u16() {
            200 => live_access.push(i),
            401 => {}
            other => panic!("bearer route answered {other}: {}", res.text()),
        }
    }
    assert_eq!(live_access.len(), 1, "live access tokens: {live_access:?}");
    // Introspection, not a refresh: presenting a spent refresh token would be reuse.
    let mut live_refresh = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let json = srv.introspect(&p.refresh).await.json();
        if json["active"] == true {
            assert_eq!(json["token_type"], "refresh_token");
            live_refresh.push(i);
        }
    }
    assert_eq!(
        live_refresh, live_access,
        "the live tokens are not one pair"
    );
    assert_eq!(srv.flow.store().access_token_count(), 1);
    assert_eq!(srv.flow.store().grant_count(), 1);
    // The live pair goes on working.
    let next = tokens_of(&srv.refresh(&pairs[live_refresh[0]].refresh, None).await);
    srv.bearer_get("/api/me", &next.access)
        .await
        .assert_status(200);
}

/// Racing refreshes plus a replay of an older refresh token (already rotated away before the
/// race): the replay is reuse, which revokes the grant, so whatever the interleaving, no token
/// of the grant is left live.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_refreshes_with_a_replay_leave_no_live_token() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    // Past the grace period: `first.refresh` is now plain reuse.
    srv.advance_secs(60);
    let results = race(&srv, RACERS + 1, |i| {
        if i == RACERS {
            refresh_request(&first.refresh)
        } else {
            refresh_request(&second.refresh)
        }
    })
    .await;
    results[RACERS].assert_oauth_error(400, "invalid_grant");
    let mut issued = vec![first, second];
    for r in &results[..RACERS] {
        if r.status == StatusCode::OK {
            issued.push(tokens_of(r));
        } else {
            r.assert_oauth_error(400, "invalid_grant");
        }
    }
    for t in &issued {
        srv.bearer_get("/api/me", &t.access)
            .await
            .assert_status(401);
        assert_eq!(srv.introspect(&t.access).await.json()["active"], false);
        assert_eq!(srv.introspect(&t.refresh).await.json()["active"], false);
    }
    assert_eq!(srv.flow.store().access_token_count(), 0);
    assert_eq!(srv.flow.store().grant_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_pending_polls_record_every_poll() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let results = race(&srv, RACERS, |_| poll_request(&codes.device_code)).await;
    let mut pending = 0;
    for r in &results {
        r.assert_status(400);
        match r.error().as_str() {
            "authorization_pending" => pending += 1,
            "slow_down" => {}
            other => panic!("unexpected {other}"),
        }
    }
    // The clock stands still: the first poll to land is on time, every other one too soon.
    assert_eq!(pending, 1);
    srv.approve(&alice(), &codes.user_code).await;
    tokens_of(&srv.poll(&codes.device_code).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_decisions_record_exactly_one() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let (a, b) = (alice(), bob());
    let results = race(&srv, RACERS, |i| {
        let (who, decision) = if i % 2 == 0 {
            (&a, "approve")
        } else {
            (&b, "deny")
        };
        let body = form(&[("user_code", &codes.user_code), ("decision", decision)]);
        let mut req = form_post("/device", body, Some(who));
        req.headers_mut()
            .insert("accept", HeaderValue::from_static("application/json"));
        req
    })
    .await;
    let winners: Vec<(usize, &Resp)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "{} decisions recorded", winners.len());
    for r in results.iter().filter(|r| r.status != StatusCode::OK) {
        r.assert_status(409);
    }
    let (i, winner) = winners[0];
    let poll = srv.poll(&codes.device_code).await;
    if i % 2 == 0 {
        assert_eq!(winner.json()["status"], "approved");
        let tokens = tokens_of(&poll);
        let me = srv.bearer_get("/api/me", &tokens.access).await;
        assert_eq!(me.json()["sub"], "alice");
    } else {
        assert_eq!(winner.json()["status"], "denied");
        poll.assert_oauth_error(400, "access_denied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn approval_while_the_device_polls_hard() {
    let srv = start().await;
    for _ in 0..3 {
        let codes = srv.authorize(None).await;
        let approve = form(&[("user_code", &codes.user_code), ("decision", "approve")]);
        let credentials = alice();
        let results = race(&srv, 33, |i| {
            if i == 0 {
                form_post("/device", approve.clone(), Some(&credentials))
            } else {
                poll_request(&codes.device_code)
            }
        })
        .await;
        results[0].assert_status(200);
        let issued = results[1..]
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        for r in results[1..].iter().filter(|r| r.status != StatusCode::OK) {
            let e = r.error();
            assert!(
                ["authorization_pending", "slow_down", "invalid_grant"].contains(&e.as_str()),
                "{e}"
            );
        }
        assert!(issued <= 1, "{issued} token responses");
        if issued == 0 {
            tokens_of(&srv.poll(&codes.device_code).await);
        } else {
            srv.poll(&codes.device_code)
                .await
                .assert_oauth_error(400, "invalid_grant");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_device_authorizations_get_distinct_codes() {
    let srv = start().await;
    let results = race(&srv, 64, |_| {
        form_post(
            "/oauth/device_authorization",
            form(&[("client_id", PUBLIC_CLIENT)]),
            None,
        )
    })
    .await;
    let mut device_codes = std::collections::HashSet::new();
    let mut user_codes = std::collections::HashSet::new();
    for r in &results {
        let codes = codes_of(r);
        assert!(device_codes.insert(codes.device_code));
        assert!(user_codes.insert(codes.user_code));
    }
    assert_eq!(srv.flow.store().device_grant_count(), 64);
    assert_eq!(srv.flow.store().pending_grant_count(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_bearer_requests_and_revocation() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let auth = format!("Bearer {}", tokens.access);
    let results = race(&srv, 64, |_| {
        Request::get("/api/me")
            .header("authorization", auth.as_str())
            .body(Full::default())
            .expect("request")
    })
    .await;
    for r in &results {
        r.assert_status(200);
        assert_eq!(r.json()["sub"], "alice");
    }
    // Revocations racing with use: every use is either allowed or invalid_token, and afterwards
    // the token is dead.
    let revoke = form(&[("token", &tokens.refresh), ("client_id", PUBLIC_CLIENT)]);
    let results = race(&srv, 32, |i| {
        if i % 4 == 0 {
            form_post("/oauth/revoke", revoke.clone(), None)
        } else {
            Request::get("/api/me")
                .header("authorization", auth.as_str())
                .body(Full::default())
                .expect("request")
        }
    })
    .await;
    for (i, r) in results.iter().enumerate() {
        if i % 4 == 0 {
            r.assert_status(200);
        } else if r.status != StatusCode::OK {
            r.assert_status(401);
        }
    }
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(401);
    srv.refresh(&tokens.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

//! Floods, guessing and hostile requests over real sockets, sent from distinct loopback
//! addresses: one source's flood is refused while every other source is served; refusals are
//! RFC JSON errors with a truthful `Retry-After`; proxy headers count only from trusted peers.

mod limits_support;

use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use limits_support::*;
use tower_device_flow::client_addr::{ForwardedHeader, TrustedProxies};
use tower_device_flow::limits::{FailedAuthLimits, Limits, RateLimit};
use tower_device_flow::{BasicLogin, Digest, MemoryStore, Store, Timestamp};

const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

fn alice() -> String {
    basic("alice", "alice-password")
}

async fn demo() -> Server<MemoryStore> {
    start(memory_store(None), |b| {
        b.end_user(BasicLogin::users("device", USERS))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_authorization_flood_from_one_address_spares_every_other() {
    // An explicit limit (the default's shape, slower numbers), so the waits below are exact.
    let limit = RateLimit {
        burst: 50,
        per: Duration::from_secs(2),
    };
    let srv = start(memory_store(None), |b| {
        b.end_user(BasicLogin::users("device", USERS))
            .limits(Limits {
                device_authorization: Some(limit),
                ..Limits::default()
            })
    })
    .await;
    let burst = limit.burst;
    let (attacker, honest) = (lo(2), lo(3));
    for _ in 0..burst {
        srv.authorize(attacker).await.assert_status(200);
    }
    let refused = srv.authorize(attacker).await;
    let wait = refused.assert_refused(429, "temporarily_unavailable");
    // One grant every 2 s after the burst: the truth, not a guess.
    assert_eq!(wait, 2);
    // Another address gets codes, polls and an approval all the same.
    let (device_code, user_code) = srv.codes(honest).await;
    let res = srv.poll(honest, &device_code).await;
    assert_eq!(res.error(), "authorization_pending");
    srv.verify(honest, &alice(), &user_code, Some("approve"))
        .await
        .assert_status(200);
    srv.advance_secs(5);
    let res = srv.poll(honest, &device_code).await;
    res.assert_status(200);
    assert!(res.json()["access_token"].is_string());
    // The 5 s the honest flow took earned the attacker two grants, no more; and Retry-After
    // says exactly when the next one comes.
    for _ in 0..2 {
        srv.authorize(attacker).await.assert_status(200);
    }
    let wait = srv
        .authorize(attacker)
        .await
        .assert_refused(429, "temporarily_unavailable");
    assert_eq!(wait, 1);
    srv.advance_secs(wait);
    srv.authorize(attacker).await.assert_status(200);
    srv.authorize(attacker)
        .await
        .assert_refused(429, "temporarily_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_flood_is_refused_per_address() {
    let limits = Limits {
        token: Some(RateLimit::per_second(20, 5)),
        ..Limits::default()
    };
    let srv = start(memory_store(None), |b| {
        b.end_user(BasicLogin::users("device", USERS))
            .limits(limits)
    })
    .await;
    let (device_code, _) = srv.codes(lo(3)).await;
    for _ in 0..20 {
        assert_eq!(
            srv.poll(lo(2), "guessed-device-code").await.error(),
            "invalid_grant"
        );
    }
    let wait = srv
        .poll(lo(2), "guessed-device-code")
        .await
        .assert_refused(429, "slow_down");
    assert_eq!(wait, 1);
    // The honest device, polling at its interval from elsewhere, is not affected.
    for _ in 0..3 {
        assert_eq!(
            srv.poll(lo(3), &device_code).await.error(),
            "authorization_pending"
        );
        srv.advance_secs(5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_post_flood_is_refused_per_address() {
    let limits = Limits {
        verification: Some(RateLimit::per_second(10, 1)),
        ..Limits::default()
    };
    let srv = start(memory_store(None), |b| {
        b.end_user(BasicLogin::users("device", USERS))
            .limits(limits)
    })
    .await;
    // Unauthenticated POSTs still count against the source's rate.
    for _ in 0..10 {
        srv.post(
            lo(2),
            "/device",
            "user_code=X",
            &[("accept", "application/json")],
        )
        .await
        .assert_status(401);
    }
    srv.post(
        lo(2),
        "/device",
        "user_code=X",
        &[("accept", "application/json")],
    )
    .await
    .assert_refused(429, "slow_down");
    let (_, user_code) = srv.codes(lo(4)).await;
    srv.verify(lo(3), &alice(), &user_code, Some("approve"))
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_ceiling_answers_503_with_retry_after_and_frees_room() {
    let srv = start(memory_store(Some(40)), |b| {
        b.expires_in(Duration::from_secs(600))
    })
    .await;
    // A flood of abandoned grants spread over many addresses (no per-source limit is hit).
    for i in 0..40u8 {
        srv.authorize(lo(10 + i)).await.assert_status(200);
    }
    let res = srv.authorize(lo(100)).await;
    let wait = res.assert_refused(503, "temporarily_unavailable");
    assert!((590..=600).contains(&wait), "{wait}");
    assert_eq!(srv.flow.store().pending_grant_count(), 40);
    // Polls and approvals of live grants go on.
    let srv_store = srv.flow.store();
    assert!(srv_store.device_grant_count() <= 40);
    // Once they expire, room frees and the honest device is served again.
    srv.advance_secs(wait);
    srv.authorize(lo(101)).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_count_only_from_trusted_peers_and_only_the_right_hop() {
    let proxies = TrustedProxies::new(
        ForwardedHeader::XForwardedFor,
        ["127.0.0.2/32".parse().unwrap()],
    );
    let limits = Limits {
        device_authorization: Some(RateLimit::per_second(3, 1)),
        ..Limits::default()
    };
    let srv = start(memory_store(None), |b| {
        b.trusted_proxies(proxies).limits(limits)
    })
    .await;
    let origin_of = |res: &Resp| {
        let code = res.json()["device_code"].as_str().unwrap().to_owned();
        let now = Timestamp::from_unix_millis(START_MILLIS);
        let store = srv.flow.store().clone();
        async move {
            let grant = store
                .device_grant(&Digest::of(code.as_bytes()), now)
                .await
                .unwrap()
                .unwrap();
            grant.record.origin.and_then(|o| o.address)
        }
    };
    let xff = |v: &'static str| [("x-forwarded-for", v), ("user-agent", "tv/1.0")];
    let body = form(&[("client_id", PUBLIC_CLIENT)]);
    // From an untrusted peer the header is ignored: the peer is the client.
    let res = srv
        .post(
            lo(3),
            "/oauth/device_authorization",
            &body,
            &xff("198.51.100.7"),
        )
        .await;
    res.assert_status(200);
    assert_eq!(origin_of(&res).await, Some(lo(3)));
    // From the trusted proxy, the hop it appended; a forged first hop is never read.
    let res = srv
        .post(
            lo(2),
            "/oauth/device_authorization",
            &body,
            &xff("6.6.6.6, 198.51.100.7"),
        )
        .await;
    res.assert_status(200);
    assert_eq!(origin_of(&res).await, "198.51.100.7".parse::<IpAddr>().ok());
    // The limits count the resolved client: 198.51.100.7 is spent after its burst of 3...
    for _ in 0..2 {
        srv.post(
            lo(2),
            "/oauth/device_authorization",
            &body,
            &xff("198.51.100.7"),
        )
        .await
        .assert_status(200);
    }
    srv.post(
        lo(2),
        "/oauth/device_authorization",
        &body,
        &xff("1.1.1.1, 198.51.100.7"),
    )
    .await
    .assert_refused(429, "temporarily_unavailable");
    // ...while another client behind the same proxy is not, nor the untrusted peer that
    // named 198.51.100.7.
    srv.post(
        lo(2),
        "/oauth/device_authorization",
        &body,
        &xff("198.51.100.8"),
    )
    .await
    .assert_status(200);
    srv.post(
        lo(3),
        "/oauth/device_authorization",
        &body,
        &xff("198.51.100.7"),
    )
    .await
    .assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_passwords_are_slowed_per_account_and_source_without_lockout() {
    let srv = demo().await;
    let limits = FailedAuthLimits::default();
    let per_source = limits.per_source.map_or(0, |l| l.max);
    let wrong = basic("alice", "guess");
    let (_, user_code) = srv.codes(lo(5)).await;
    for _ in 0..limits.per_account_and_source.max {
        let res = srv.verify(lo(2), &wrong, &user_code, None).await;
        res.assert_status(401);
    }
    // Spent: refused before the password is checked, even the right one, from there.
    let wait = srv
        .verify(lo(2), &wrong, &user_code, None)
        .await
        .assert_refused(429, "slow_down");
    assert_eq!(wait, 15 * 60);
    srv.verify(lo(2), &alice(), &user_code, None)
        .await
        .assert_refused(429, "slow_down");
    // Alice from her own address, and bob from the attacker's, are not locked out.
    srv.verify(lo(3), &alice(), &user_code, None)
        .await
        .assert_status(200);
    srv.verify(lo(2), &basic("bob", "bob-password"), &user_code, None)
        .await
        .assert_status(200);
    // Spraying many accounts from one address stops at the source's budget.
    for i in 0..per_source {
        let res = srv
            .verify(lo(6), &basic(&format!("user{i}"), "x"), &user_code, None)
            .await;
        res.assert_status(401);
    }
    srv.verify(lo(6), &basic("user99", "x"), &user_code, None)
        .await
        .assert_refused(429, "slow_down");
    // After the window, the attacker's address may try again.
    srv.advance_secs(wait);
    srv.verify(lo(2), &alice(), &user_code, None)
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_client_secrets_are_slowed_at_every_endpoint() {
    let srv = demo().await;
    let wrong = basic(CONFIDENTIAL_CLIENT, "guess");
    let right = basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET);
    let token_body = form(&[("grant_type", DEVICE_CODE_GRANT), ("device_code", "x")]);
    // Failures at different endpoints spend one budget.
    let attempts = [
        ("/oauth/token", token_body.as_str()),
        ("/oauth/device_authorization", ""),
        ("/oauth/revoke", "token=x"),
        ("/oauth/introspect", "token=x"),
        ("/oauth/token", token_body.as_str()),
    ];
    let max = FailedAuthLimits::default().per_account_and_source.max as usize;
    for (path, body) in attempts.into_iter().cycle().take(max) {
        let res = srv
            .post(lo(2), path, body, &[("authorization", &wrong)])
            .await;
        assert_eq!(res.error(), "invalid_client", "{path}");
        res.assert_status(401);
    }
    for path in ["/oauth/introspect", "/oauth/device_authorization"] {
        srv.post(lo(2), path, "token=x", &[("authorization", &right)])
            .await
            .assert_refused(429, "temporarily_unavailable");
    }
    // The client itself, elsewhere, is served.
    srv.post(
        lo(3),
        "/oauth/device_authorization",
        "",
        &[("authorization", &right)],
    )
    .await
    .assert_status(200);
    let res = srv
        .post(
            lo(3),
            "/oauth/introspect",
            "token=x",
            &[("authorization", &right)],
        )
        .await;
    res.assert_status(200);
    assert_eq!(res.json()["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_by_fetch_metadata_and_origin() {
    let srv = demo().await;
    let (device_code, user_code) = srv.codes(lo(3)).await;
    let body = form(&[("user_code", &user_code), ("decision", "approve")]);
    let own = srv.base.clone();
    let refused: &[&[(&str, &str)]] = &[
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.localhost"),
        ],
        &[("sec-fetch-site", "same-site")],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "http://evil.localhost")],
        &[("origin", "https://127.0.0.1")],
        &[("origin", "null")],
    ];
    for headers in refused {
        let mut h = headers.to_vec();
        let auth = alice();
        h.push(("authorization", &auth));
        h.push(("accept", "application/json"));
        let res = srv.post(lo(3), "/device", &body, &h).await;
        assert_eq!(res.status.as_u16(), 403, "{headers:?}");
        assert_eq!(res.error(), "access_denied");
    }
    // A forged Host does not make a foreign Origin "own".
    let auth = alice();
    let res = srv
        .post(
            lo(3),
            "/device",
            &body,
            &[
                ("origin", "http://evil.localhost"),
                ("authorization", &auth),
                ("x-forwarded-host", "evil.localhost"),
            ],
        )
        .await;
    res.assert_status(403);
    // Nothing was decided by those.
    assert_eq!(
        srv.poll(lo(3), &device_code).await.error(),
        "authorization_pending"
    );
    // The page's own form: same-origin with its own Origin, or no browser at all.
    let res = srv
        .post(
            lo(3),
            "/device",
            &body,
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", &own),
                ("authorization", &auth),
            ],
        )
        .await;
    res.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_never_looks_up_or_counts() {
    let srv = demo().await;
    let (_, user_code) = srv.codes(lo(3)).await;
    // Image tags on any page: GETs with wrong codes, by the signed-in victim's browser.
    for _ in 0..20 {
        let res = srv
            .send(
                lo(2),
                Method::GET,
                "/device?user_code=WRONG-CODE",
                &[("authorization", &alice())],
                "",
            )
            .await;
        res.assert_status(200);
        assert!(
            res.text().contains("value=\"WRONG-CODE\""),
            "{}",
            res.text()
        );
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    }
    // The right code pre-filled is not confirmed by GET either: only the form is shown.
    let res = srv
        .send(
            lo(2),
            Method::GET,
            &format!("/device?user_code={user_code}"),
            &[("authorization", &alice())],
            "",
        )
        .await;
    assert!(!res.text().contains("decision"), "{}", res.text());
    // Alice's budget is whole: five wrong codes are looked up, the sixth is refused.
    for _ in 0..5 {
        let res = srv.verify(lo(2), &alice(), "BBBB-BBBB", None).await;
        res.assert_status(400);
        assert_eq!(res.error(), "invalid_grant");
    }
    srv.verify(lo(2), &alice(), "BBBB-BBBB", None)
        .await
        .assert_refused(429, "slow_down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_nosniff() {
    let srv = demo().await;
    let (device_code, _) = srv.codes(lo(2)).await;
    let responses = [
        srv.authorize(lo(2)).await,
        srv.poll(lo(2), &device_code).await,
        srv.send(lo(2), Method::GET, "/device", &[], "").await,
        srv.send(
            lo(2),
            Method::GET,
            "/.well-known/oauth-authorization-server",
            &[],
            "",
        )
        .await,
        srv.send(lo(2), Method::GET, "/api/me", &[], "").await,
        srv.send(
            lo(2),
            Method::GET,
            "/api/me",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await,
        srv.post(lo(2), "/oauth/revoke", "token=x&client_id=demo-device", &[])
            .await,
        srv.send(lo(2), Method::PUT, "/oauth/token", &[], "").await,
    ];
    for res in &responses {
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{res:?}"
        );
        assert!(!res.status.is_server_error(), "{res:?}");
    }
}

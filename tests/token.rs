//! The token endpoint: device code grant (RFC 8628 3.4-3.5) and refresh token grant
//! (RFC 6749 6), over real HTTP with a manual clock.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "/oauth/token";

#[tokio::test]
async fn missing_grant_type_is_invalid_request() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("device_code", &codes.device_code),
                ("client_id", PUBLIC_CLIENT),
            ]),
            None,
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn unknown_grant_type_is_unsupported_grant_type() {
    let srv = start().await;
    for grant_type in [
        "password",
        "authorization_code",
        "client_credentials",
        "urn:x",
    ] {
        let res = srv
            .post(
                TOKEN,
                &form(&[("grant_type", grant_type), ("client_id", PUBLIC_CLIENT)]),
                None,
            )
            .await;
        res.assert_oauth_error(400, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn missing_device_code_is_invalid_request() {
    let srv = start().await;
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("client_id", PUBLIC_CLIENT),
            ]),
            None,
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn token_endpoint_requires_form_post() {
    let srv = start().await;
    let res = srv.get(TOKEN).await;
    res.assert_oauth_error(405, "invalid_request");
    let res = srv
        .request(
            http::Method::POST,
            TOKEN,
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn unauthenticated_polls_are_invalid_client() {
    let srv = start().await;
    let codes = srv.authorize_confidential(None).await;
    // Confidential client without its secret, and with a wrong one.
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &codes.device_code),
                ("client_id", CONFIDENTIAL_CLIENT),
            ]),
            None,
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &codes.device_code),
            ]),
            Some(&basic(CONFIDENTIAL_CLIENT, "nope")),
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
    // Unknown client.
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &codes.device_code),
                ("client_id", "nobody"),
            ]),
            None,
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
}

#[tokio::test]
async fn authorization_pending_until_approved() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    for _ in 0..3 {
        let res = srv.poll(&codes.device_code).await;
        res.assert_oauth_error(400, "authorization_pending");
        srv.advance_secs(5);
    }
    srv.approve(&alice(), &codes.user_code).await;
    let res = srv.poll(&codes.device_code).await;
    tokens_of(&res);
}

#[tokio::test]
async fn slow_down_then_the_interval_grows_by_five_seconds() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    assert_eq!(codes.json["interval"], 5);

    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    // One second later: too soon.
    srv.advance_secs(1);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    // The interval is now 10 s: 9.999 s later is still too soon...
    srv.advance(Duration::from_millis(9_999));
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    // ...and that slow_down grew it again, to 15 s: 10 s later is too soon (now 20 s).
    srv.advance_secs(10);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    // 20 s (the grown interval) after that last poll: pending again.
    srv.advance_secs(20);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn slow_down_interval_is_old_plus_five() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.advance_secs(2);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    // After the old interval (5 s): still slow_down, the grant now wants 10 s.
    srv.advance_secs(5);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "slow_down");

    // A second grant: after the slow_down, exactly the new interval (10 s) is fine.
    let other = srv.authorize(None).await;
    srv.poll(&other.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.advance_secs(1);
    srv.poll(&other.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    srv.advance_secs(10);
    srv.poll(&other.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    // Polling at the grown interval keeps it pending.
    srv.advance_secs(10);
    srv.poll(&other.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn slow_down_is_per_grant() {
    let srv = start().await;
    let a = srv.authorize(None).await;
    let b = srv.authorize(None).await;
    srv.poll(&a.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.poll(&a.device_code)
        .await
        .assert_oauth_error(400, "slow_down");
    // The other grant never polled: pending, and then at its own 5 s interval still pending.
    srv.poll(&b.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.advance_secs(5);
    srv.poll(&b.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn approved_grant_is_issued_even_when_polled_early() {
    // Tokens are not held back by the interval once the user approved.
    let srv = start().await;
    let codes = srv.authorize(None).await;
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.approve(&alice(), &codes.user_code).await;
    tokens_of(&srv.poll(&codes.device_code).await);
}

#[tokio::test]
async fn access_denied_after_deny() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    srv.decide(&alice(), &codes.user_code, "deny")
        .await
        .assert_status(200);
    let res = srv.poll(&codes.device_code).await;
    res.assert_oauth_error(400, "access_denied");
    // And it stays denied.
    srv.advance_secs(5);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "access_denied");
}

#[tokio::test]
async fn expired_token_after_expires_in() {
    let srv = start_with(|b| b.expires_in(Duration::from_secs(300))).await;
    let pending = srv.authorize(None).await;
    let approved = srv.authorize(None).await;
    srv.approve(&alice(), &approved.user_code).await;

    // Just before expiry it is still pending.
    srv.advance(Duration::from_millis(299_999));
    srv.poll(&pending.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");

    srv.advance_secs(5);
    srv.poll(&pending.device_code)
        .await
        .assert_oauth_error(400, "expired_token");
    // Approved but never redeemed before expiry: expired too, no tokens.
    srv.poll(&approved.device_code)
        .await
        .assert_oauth_error(400, "expired_token");
}

#[tokio::test]
async fn unknown_device_code_is_invalid_grant() {
    let srv = start().await;
    for code in ["nope", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        srv.poll(code)
            .await
            .assert_oauth_error(400, "invalid_grant");
    }
    // A user code is not a device code.
    let codes = srv.authorize(None).await;
    srv.poll(&codes.user_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn redeemed_device_code_is_invalid_grant() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    let first = tokens_of(&srv.poll(&codes.device_code).await);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.advance_secs(60);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // The tokens from the first redemption still work.
    srv.bearer_get("/api/me", &first.access)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn device_code_of_another_client_is_invalid_grant() {
    let srv = start().await;
    // Issued to the public client, polled by the confidential one.
    let codes = srv.authorize(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    srv.poll_confidential(&codes.device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // The other client's attempt did not spend it.
    tokens_of(&srv.poll(&codes.device_code).await);

    // And the other way round.
    let codes = srv.authorize_confidential(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    tokens_of(&srv.poll_confidential(&codes.device_code).await);
}

#[tokio::test]
async fn success_response_shape_and_headers() {
    let srv = start().await;
    let codes = srv.authorize(Some("profile email")).await;
    srv.approve(&alice(), &codes.user_code).await;
    let res = srv.poll(&codes.device_code).await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.header("pragma"), Some("no-cache"));
    let json = res.json();
    let access = json["access_token"].as_str().expect("access_token");
    let refresh = json["refresh_token"].as_str().expect("refresh_token");
    assert!(access.len() >= 43);
    // A v2 refresh token: 48 bytes of base64url, its grant's family key first.
    assert_eq!(refresh.len(), 64);
    assert_ne!(access, refresh);
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 3600);
    assert_eq!(json["scope"], "email profile");
    assert!(json.get("error").is_none());
}

#[tokio::test]
async fn access_token_lifetime_is_configurable() {
    let srv = start_with(|b| b.access_token_lifetime(Duration::from_secs(120))).await;
    let tokens = srv.tokens(None).await;
    assert_eq!(tokens.json["expires_in"], 120);
}

// ---- refresh token grant ------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_both_tokens() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let res = srv.refresh(&first.refresh, None).await;
    let second = tokens_of(&res);
    assert_eq!(second.json["scope"], "email profile");
    assert_eq!(second.json["expires_in"], 3600);
    assert_ne!(second.access, first.access);
    assert_ne!(second.refresh, first.refresh);

    // The old access token died with the rotation; the new one works and acts for the same
    // user.
    srv.bearer_get("/api/me", &first.access)
        .await
        .assert_status(401);
    let me = srv.bearer_get("/api/me", &second.access).await;
    me.assert_status(200);
    assert_eq!(me.json()["sub"], "alice");
    // The new refresh token works once more.
    let third = tokens_of(&srv.refresh(&second.refresh, None).await);
    // Store v2: the first refresh token is now two rotations old, so it is no retry but
    // reuse: refused, and the whole grant is revoked with it.
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.bearer_get("/api/me", &third.access)
        .await
        .assert_status(401);
    srv.refresh(&third.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn refresh_works_after_the_access_token_expired() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    srv.advance_secs(3600);
    srv.bearer_get("/api/me", &first.access)
        .await
        .assert_status(401);
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.bearer_get("/api/me", &second.access)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn refresh_may_narrow_the_scope() {
    let srv = start().await;
    let first = srv.tokens(Some("profile email")).await;
    let res = srv.refresh(&first.refresh, Some("profile")).await;
    let narrowed = tokens_of(&res);
    assert_eq!(narrowed.json["scope"], "profile");
    srv.bearer_get("/api/me", &narrowed.access)
        .await
        .assert_status(200);
    let res = srv.bearer_get("/api/email", &narrowed.access).await;
    res.assert_status(403);
}

#[tokio::test]
async fn narrowing_does_not_shrink_the_refresh_token() {
    // RFC 6749 6: "If a new refresh token is issued, the refresh token scope MUST be identical
    // to that of the refresh token included by the client in the request." Omitting `scope`
    // means the scope originally granted; asking for it again is not a widening.
    let srv = start().await;
    let first = srv.tokens(Some("profile email")).await;
    let narrowed = tokens_of(&srv.refresh(&first.refresh, Some("profile")).await);
    assert_eq!(narrowed.json["scope"], "profile");

    let res = srv.refresh(&narrowed.refresh, None).await;
    let full = tokens_of(&res);
    assert_eq!(full.json["scope"], "email profile");

    let res = srv.refresh(&full.refresh, Some("email")).await;
    tokens_of(&res);
    let res = srv
        .refresh(&tokens_of(&res).refresh, Some("email profile"))
        .await;
    assert_eq!(tokens_of(&res).json["scope"], "email profile");
}

#[tokio::test]
async fn refresh_may_not_widen_the_scope() {
    let srv = start().await;
    let first = srv.tokens(Some("profile")).await;
    for scope in ["profile email", "email", "admin"] {
        srv.refresh(&first.refresh, Some(scope))
            .await
            .assert_oauth_error(400, "invalid_scope");
    }
    srv.refresh(&first.refresh, Some("pro\"file"))
        .await
        .assert_oauth_error(400, "invalid_scope");
    // Refused requests do not spend the refresh token.
    let next = tokens_of(&srv.refresh(&first.refresh, Some("profile")).await);
    assert_eq!(next.json["scope"], "profile");
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &tokens.refresh),
            ]),
            Some(&confidential_basic()),
        )
        .await;
    res.assert_oauth_error(400, "invalid_grant");
    // Not spent by the other client's attempt.
    tokens_of(&srv.refresh(&tokens.refresh, None).await);
}

#[tokio::test]
async fn refresh_token_errors() {
    let srv = start().await;
    // Unknown refresh token.
    srv.refresh("nope", None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // Missing refresh token.
    srv.post(
        TOKEN,
        &form(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
        ]),
        None,
    )
    .await
    .assert_oauth_error(400, "invalid_request");
    // An access token is not a refresh token.
    let tokens = srv.tokens(None).await;
    srv.refresh(&tokens.access, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // A device code is not a refresh token.
    let codes = srv.authorize(None).await;
    srv.refresh(&codes.device_code, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn expired_refresh_token_is_invalid_grant() {
    let srv = start_with(|b| b.refresh_token_lifetime(Some(Duration::from_secs(7200)))).await;
    let tokens = srv.tokens(None).await;
    srv.advance_secs(7200);
    srv.refresh(&tokens.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn confidential_client_full_flow_with_refresh() {
    let srv = start().await;
    let codes = srv.authorize_confidential(Some("email")).await;
    srv.poll_confidential(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
    srv.approve(&bob(), &codes.user_code).await;
    let tokens = tokens_of(&srv.poll_confidential(&codes.device_code).await);
    assert_eq!(tokens.json["scope"], "email");
    let res = srv.bearer_get("/api/email", &tokens.access).await;
    res.assert_status(200);
    assert_eq!(res.json()["sub"], "bob");
    let res = srv
        .post(
            TOKEN,
            &form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &tokens.refresh),
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            None,
        )
        .await;
    tokens_of(&res);
}

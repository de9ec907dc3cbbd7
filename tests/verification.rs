//! The end user's verification page (RFC 8628 3.3, 5.1, 5.4), over real HTTP.
//!
//! The harness signs end users in with HTTP Basic (alice / bob), as the demo server does.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use tower_device_flow::AttemptLimit;

const PAGE: &str = "/device";
const JSON: (&str, &str) = ("accept", "application/json");

fn assert_page_headers(res: &Resp) {
    assert_eq!(res.header("cache-control"), Some("no-store"), "{res:?}");
    assert_eq!(res.header("x-frame-options"), Some("DENY"), "{res:?}");
    let csp = res.must_header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

fn assert_html(res: &Resp) {
    let ct = res.must_header("content-type");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(res.text().starts_with("<!doctype html>"), "{}", res.text());
    assert_page_headers(res);
}

/// A form POST to the verification page with the given headers.
async fn post_page(srv: &TestServer, body: &str, headers: &[(&str, &str)]) -> Resp {
    srv.post_form(PAGE, body, headers).await
}

#[tokio::test]
async fn get_shows_a_form() {
    let srv = start().await;
    let res = srv.get(PAGE).await;
    res.assert_status(200);
    assert_html(&res);
    let html = res.text();
    assert!(
        html.contains("<form method=\"post\" action=\"/device\""),
        "{html}"
    );
    assert!(html.contains("name=\"user_code\""), "{html}");
    assert!(html.contains("value=\"\""), "{html}");
}

#[tokio::test]
async fn get_prefills_the_user_code() {
    let srv = start().await;
    let res = srv.get("/device?user_code=WDJB-MJHT").await;
    res.assert_status(200);
    assert_html(&res);
    assert!(res.text().contains("value=\"WDJB-MJHT\""), "{}", res.text());
}

#[tokio::test]
async fn prefill_is_html_escaped() {
    let srv = start().await;
    let hostile = "\"><script>alert(1)</script>";
    let res = srv
        .get(&format!("/device?user_code={}", enc(hostile)))
        .await;
    res.assert_status(200);
    let html = res.text();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );

    // The same for a signed-in user (GET never looks a code up: the form, pre-filled).
    let res = srv
        .get_with(
            &format!("/device?user_code={}", enc("<img src=x onerror=alert(1)>")),
            &[("authorization", &alice())],
        )
        .await;
    res.assert_status(200);
    let html = res.text();
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );

    // And for a POSTed code.
    let res = post_page(
        &srv,
        &form(&[("user_code", "'><svg onload=x>")]),
        &[("authorization", &alice())],
    )
    .await;
    res.assert_status(400);
    let html = res.text();
    assert!(!html.contains("<svg"), "{html}");
    assert!(html.contains("&#39;&gt;&lt;svg onload=x&gt;"), "{html}");
}

#[tokio::test]
async fn verification_uri_complete_prefills_and_one_post_confirms() {
    let srv = start().await;
    let codes = srv.authorize(Some("profile")).await;
    let complete = codes.json["verification_uri_complete"].as_str().unwrap();
    let path = complete.strip_prefix(srv.base.as_str()).unwrap();
    // Anonymous or signed in: the pre-filled form, never a lookup (a GET can be made by any
    // page, so it may neither count as a guess nor be a free one).
    for headers in [vec![], vec![("authorization", alice())]] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = srv.get_with(path, &headers).await;
        res.assert_status(200);
        let html = res.text();
        assert!(!html.contains("value=\"approve\""), "{html}");
        assert!(html.contains(&codes.user_code), "{html}");
    }
    // Submitting the pre-filled form shows the confirmation.
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &alice())],
    )
    .await;
    res.assert_status(200);
    assert_html(&res);
    let html = res.text();
    assert!(html.contains("value=\"approve\""), "{html}");
    assert!(html.contains("Demo device"), "{html}");
    assert!(html.contains(&codes.user_code), "{html}");
}

#[tokio::test]
async fn post_without_credentials_is_401_with_challenge() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let body = form(&[("user_code", &codes.user_code), ("decision", "approve")]);
    for headers in [
        vec![],
        vec![("authorization", basic("alice", "wrong"))],
        vec![("authorization", basic("mallory", "x"))],
        vec![("authorization", "Bearer abc".to_owned())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post_page(&srv, &body, &headers).await;
        res.assert_status(401);
        assert_eq!(res.header("www-authenticate"), Some(END_USER_CHALLENGE));
        assert_page_headers(&res);
    }
    // JSON flavour.
    let res = post_page(&srv, &body, &[JSON]).await;
    res.assert_status(401);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.error(), "login_required");
    // Nothing was decided.
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn user_code_alone_shows_client_and_scopes() {
    let srv = start().await;
    let codes = srv.authorize(Some("profile email")).await;
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &alice())],
    )
    .await;
    res.assert_status(200);
    assert_html(&res);
    let html = res.text();
    for needle in [
        "Demo device",
        "<code>demo-device</code>",
        "<code>email</code>",
        "<code>profile</code>",
        "alice",
        codes.user_code.as_str(),
        "name=\"decision\" value=\"approve\"",
        "name=\"decision\" value=\"deny\"",
    ] {
        assert!(html.contains(needle), "missing {needle:?} in {html}");
    }
    // Showing the confirmation decides nothing.
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn confirmation_as_json() {
    let srv = start().await;
    let codes = srv.authorize_confidential(Some("email")).await;
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &bob()), JSON],
    )
    .await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json = res.json();
    assert_eq!(json["status"], "pending");
    assert_eq!(json["user_code"], codes.user_code.as_str());
    assert_eq!(json["client_id"], CONFIDENTIAL_CLIENT);
    assert_eq!(json["client_name"], "Demo confidential client");
    assert_eq!(json["scope"], "email");
}

#[tokio::test]
async fn approve_and_deny_are_200() {
    let srv = start().await;
    let a = srv.authorize(None).await;
    let res = srv.decide(&alice(), &a.user_code, "approve").await;
    res.assert_status(200);
    assert_html(&res);
    assert!(res.text().contains("Device connected"), "{}", res.text());

    let d = srv.authorize(None).await;
    let res = srv.decide(&alice(), &d.user_code, "deny").await;
    res.assert_status(200);
    assert!(res.text().contains("denied"), "{}", res.text());

    // JSON flavour.
    let a2 = srv.authorize(None).await;
    let res = post_page(
        &srv,
        &form(&[("user_code", &a2.user_code), ("decision", "approve")]),
        &[("authorization", &bob()), JSON],
    )
    .await;
    res.assert_status(200);
    assert_eq!(res.json()["status"], "approved");
    let d2 = srv.authorize(None).await;
    let res = post_page(
        &srv,
        &form(&[("user_code", &d2.user_code), ("decision", "deny")]),
        &[("authorization", &bob()), JSON],
    )
    .await;
    res.assert_status(200);
    assert_eq!(res.json()["status"], "denied");

    tokens_of(&srv.poll(&a.device_code).await);
    tokens_of(&srv.poll(&a2.device_code).await);
    srv.poll(&d.device_code)
        .await
        .assert_oauth_error(400, "access_denied");
    srv.poll(&d2.device_code)
        .await
        .assert_oauth_error(400, "access_denied");
}

#[tokio::test]
async fn invalid_decision_is_400_and_changes_nothing() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    for decision in ["yes", "APPROVE", "approve "] {
        let res = post_page(
            &srv,
            &form(&[("user_code", &codes.user_code), ("decision", decision)]),
            &[("authorization", &alice()), JSON],
        )
        .await;
        res.assert_status(400);
        assert_eq!(res.error(), "invalid_request");
    }
    // Repeated fields.
    let body = format!(
        "user_code={0}&user_code={0}&decision=approve",
        codes.user_code
    );
    let res = post_page(&srv, &body, &[("authorization", &alice())]).await;
    res.assert_status(400);
    let body = format!(
        "user_code={}&decision=approve&decision=deny",
        codes.user_code
    );
    let res = post_page(&srv, &body, &[("authorization", &alice())]).await;
    res.assert_status(400);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn missing_user_code_is_400() {
    let srv = start().await;
    let res = post_page(&srv, "decision=approve", &[("authorization", &alice())]).await;
    res.assert_status(400);
    assert!(res.text().contains("name=\"user_code\""), "{}", res.text());
}

#[tokio::test]
async fn form_encoding_and_methods() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let res = srv
        .request(
            Method::POST,
            PAGE,
            &[
                ("content-type", "application/json"),
                ("authorization", &alice()),
            ],
            format!(
                "{{\"user_code\":\"{}\",\"decision\":\"approve\"}}",
                codes.user_code
            ),
        )
        .await;
    assert!(res.status == 415 || res.status == 400, "{res:?}");
    let res = srv
        .request(Method::PUT, PAGE, &[("authorization", &alice())], "")
        .await;
    res.assert_status(405);
    assert!(res.must_header("allow").contains("POST"));
    // Malformed percent-encoding in the form.
    let res = post_page(
        &srv,
        "user_code=%zz&decision=approve",
        &[("authorization", &alice())],
    )
    .await;
    res.assert_status(400);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");
}

#[tokio::test]
async fn oversized_form_is_413() {
    let srv = start().await;
    let body = format!("user_code=BCDF-GHJK&pad={}", "a".repeat(17 * 1024));
    let res = post_page(&srv, &body, &[("authorization", &alice())]).await;
    res.assert_status(413);
}

#[tokio::test]
async fn unknown_code_is_4xx() {
    let srv = start().await;
    // Well-formed but never issued, and not a code at all.
    for code in ["BCDF-GHJK", "AAAA-AAAA", "1234", ""] {
        let res = post_page(
            &srv,
            &format!("user_code={}&decision=approve", enc(code)),
            &[("authorization", &alice()), JSON],
        )
        .await;
        res.assert_status(400);
        let expected = if code.is_empty() {
            "invalid_request"
        } else {
            "invalid_grant"
        };
        assert_eq!(res.error(), expected, "{code}");
    }
}

#[tokio::test]
async fn expired_code_is_4xx() {
    let srv = start_with(|b| b.expires_in(Duration::from_secs(300))).await;
    let codes = srv.authorize(None).await;
    srv.advance_secs(300);
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code), ("decision", "approve")]),
        &[("authorization", &alice()), JSON],
    )
    .await;
    res.assert_status(400);
    assert_eq!(res.error(), "expired_token");
    // HTML flavour says so too.
    let res = srv.decide(&alice(), &codes.user_code, "approve").await;
    res.assert_status(400);
    assert!(res.text().contains("expired"), "{}", res.text());
    // Long after expiry the code is simply unknown.
    srv.advance_secs(3600);
    let res = srv.decide(&alice(), &codes.user_code, "approve").await;
    assert!(res.status.is_client_error(), "{res:?}");
    // Nothing was approved.
    srv.poll(&codes.device_code).await.assert_status(400);
}

#[tokio::test]
async fn already_decided_is_4xx_and_changes_nothing() {
    let srv = start().await;
    // Approved by alice; bob's deny and a second approve are refused.
    let codes = srv.authorize(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    for (who, decision) in [(bob(), "deny"), (bob(), "approve"), (alice(), "deny")] {
        let res = post_page(
            &srv,
            &form(&[("user_code", &codes.user_code), ("decision", decision)]),
            &[("authorization", &who), JSON],
        )
        .await;
        res.assert_status(409);
        assert_eq!(res.error(), "invalid_grant");
    }
    // The confirmation page is refused too.
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &bob())],
    )
    .await;
    res.assert_status(409);
    let tokens = tokens_of(&srv.poll(&codes.device_code).await);
    let me = srv.bearer_get("/api/me", &tokens.access).await;
    assert_eq!(me.json()["sub"], "alice");
    // After redemption: still refused.
    let res = srv.decide(&bob(), &codes.user_code, "approve").await;
    res.assert_status(409);

    // Denied; a later approve is refused and the device still hears access_denied.
    let codes = srv.authorize(None).await;
    srv.decide(&alice(), &codes.user_code, "deny")
        .await
        .assert_status(200);
    srv.decide(&alice(), &codes.user_code, "approve")
        .await
        .assert_status(409);
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "access_denied");
}

#[tokio::test]
async fn user_code_is_normalized() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let code = codes.user_code.clone();
    let plain = code.replace('-', "");
    let variants = [
        code.to_lowercase(),
        plain.clone(),
        plain.to_lowercase(),
        format!("  {} {}  ", &plain[..4], &plain[4..]),
        format!("{}-{}", plain[..4].to_lowercase(), &plain[4..]),
        format!("{} - {}", &plain[..2], &plain[2..]),
    ];
    for variant in &variants {
        let res = post_page(
            &srv,
            &form(&[("user_code", variant)]),
            &[("authorization", &alice()), JSON],
        )
        .await;
        res.assert_status(200);
        assert_eq!(res.json()["user_code"], code.as_str(), "{variant:?}");
    }
    // Deciding through a normalized form works.
    srv.approve(&alice(), &code.to_lowercase().replace('-', " "))
        .await;
    tokens_of(&srv.poll(&codes.device_code).await);
}

#[tokio::test]
async fn punctuation_outside_the_charset_is_stripped() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let plain = codes.user_code.replace('-', "");
    for variant in [
        format!("{}.{}", &plain[..4], &plain[4..]),
        format!("{}_{}", &plain[..4], &plain[4..]),
        format!("{}/{}", &plain[..4], &plain[4..]),
    ] {
        let res = post_page(
            &srv,
            &form(&[("user_code", &variant)]),
            &[("authorization", &bob()), JSON],
        )
        .await;
        res.assert_status(200);
        assert_eq!(
            res.json()["user_code"],
            codes.user_code.as_str(),
            "{variant}"
        );
    }
}

#[tokio::test]
async fn guessing_is_limited_per_user() {
    let window = Duration::from_secs(60);
    let srv = start_with(|b| b.failed_attempts_per_user(AttemptLimit { max: 3, window })).await;
    let codes = srv.authorize(None).await;
    for wrong in ["BCDF-GHJK", "ZZZZ-ZZZZ", "nonsense"] {
        let res = post_page(
            &srv,
            &form(&[("user_code", wrong), ("decision", "approve")]),
            &[("authorization", &alice())],
        )
        .await;
        res.assert_status(400);
    }
    // Alice is locked out, even with the right code.
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code), ("decision", "approve")]),
        &[("authorization", &alice()), JSON],
    )
    .await;
    res.assert_status(429);
    assert_eq!(res.error(), "slow_down");
    let retry: u64 = res.must_header("retry-after").parse().expect("seconds");
    assert!(retry > 0 && retry <= 60, "Retry-After {retry}");
    // HTML flavour and the confirmation page: 429 as well.
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &alice())],
    )
    .await;
    res.assert_status(429);
    assert!(res.header("retry-after").is_some());
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");

    // Bob is unaffected.
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code)]),
        &[("authorization", &bob()), JSON],
    )
    .await;
    res.assert_status(200);
    assert_eq!(res.json()["status"], "pending");

    // Just before the window ends alice is still locked out; after it she may try again.
    srv.advance(window - Duration::from_millis(1));
    srv.decide(&alice(), &codes.user_code, "approve")
        .await
        .assert_status(429);
    srv.advance(Duration::from_millis(1));
    srv.approve(&alice(), &codes.user_code).await;
    let tokens = tokens_of(&srv.poll(&codes.device_code).await);
    let me = srv.bearer_get("/api/me", &tokens.access).await;
    assert_eq!(me.json()["sub"], "alice");
}

#[tokio::test]
async fn signed_in_prefills_never_count() {
    // Was: pre-filled GETs were looked up and counted, so image tags on any page could lock a
    // signed-in user out. Now a GET changes nothing.
    let window = Duration::from_secs(60);
    let srv = start_with(|b| b.failed_attempts_per_user(AttemptLimit { max: 2, window })).await;
    let codes = srv.authorize(None).await;
    for wrong in ["BCDF-GHJK", "CDFG-HJKL", "DFGH-JKLM"] {
        let res = srv
            .get_with(
                &format!("/device?user_code={wrong}"),
                &[("authorization", &bob())],
            )
            .await;
        res.assert_status(200);
    }
    srv.approve(&bob(), &codes.user_code).await;
}

#[tokio::test]
async fn the_overall_limit_tightens_only_those_who_failed() {
    // Was: past the overall limit every user was refused, even one typing the right code.
    // Now it shrinks the budgets of those who already failed (to 2 by default).
    let window = Duration::from_secs(60);
    let srv = start_with(|b| {
        b.failed_attempts_per_user(AttemptLimit { max: 100, window })
            .failed_attempts_overall(Some(AttemptLimit { max: 2, window }))
    })
    .await;
    let codes = srv.authorize(None).await;
    for _ in 0..2 {
        srv.decide(&alice(), "BCDF-GHJK", "approve")
            .await
            .assert_status(400);
    }
    // Under attack: alice, who failed twice, is out of tightened budget...
    let res = srv.decide(&alice(), "BCDF-GHJK", "approve").await;
    res.assert_status(429);
    assert_eq!(res.header("retry-after"), Some("60"));
    // ...bob, untouched, gets the right code through.
    srv.approve(&bob(), &codes.user_code).await;
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let body = form(&[("user_code", &codes.user_code), ("decision", "approve")]);
    let evil_origin = "http://evil.example";
    let cases: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", evil_origin)],
        &[("origin", "null")],
        // Same host name, another port: another origin.
        &[("origin", "http://127.0.0.1:1")],
    ];
    for extra in cases {
        let mut headers = vec![("authorization", alice())];
        headers.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post_page(&srv, &body, &headers).await;
        res.assert_status(403);
        assert_page_headers(&res);
    }
    // JSON flavour.
    let res = post_page(
        &srv,
        &body,
        &[
            ("authorization", &alice()),
            ("sec-fetch-site", "cross-site"),
            JSON,
        ],
    )
    .await;
    res.assert_status(403);
    assert_eq!(res.error(), "access_denied");
    // Nothing was approved.
    srv.poll(&codes.device_code)
        .await
        .assert_oauth_error(400, "authorization_pending");

    // Same-origin submissions are fine.
    let origin = srv.base.clone();
    let res = post_page(
        &srv,
        &body,
        &[
            ("authorization", &alice()),
            ("sec-fetch-site", "same-origin"),
            ("origin", &origin),
        ],
    )
    .await;
    res.assert_status(200);
    srv.advance_secs(5);
    tokens_of(&srv.poll(&codes.device_code).await);
}

#[tokio::test]
async fn same_origin_by_origin_header_is_accepted() {
    let srv = start().await;
    let codes = srv.authorize(None).await;
    let origin = srv.base.clone();
    let res = post_page(
        &srv,
        &form(&[("user_code", &codes.user_code), ("decision", "approve")]),
        &[("authorization", &alice()), ("origin", &origin)],
    )
    .await;
    res.assert_status(200);
}

#[tokio::test]
async fn json_when_accepting_json_only() {
    let srv = start().await;
    let res = srv.get_with(PAGE, &[JSON]).await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json()["status"], "enter_code");
    // A browser accepting both gets HTML.
    let res = srv
        .get_with(PAGE, &[("accept", "text/html,application/json;q=0.9")])
        .await;
    assert!(res.must_header("content-type").starts_with("text/html"));
    // Unknown code, JSON.
    let res = post_page(
        &srv,
        "user_code=BCDF-GHJK",
        &[("authorization", &alice()), JSON],
    )
    .await;
    res.assert_status(400);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.error(), "invalid_grant");
    assert!(res.json()["error_description"].is_string());
}

#[tokio::test]
async fn tokens_carry_the_approving_user_and_granted_scope() {
    let srv = start().await;
    let codes = srv.authorize(Some("profile")).await;
    srv.approve(&bob(), &codes.user_code).await;
    let tokens = tokens_of(&srv.poll(&codes.device_code).await);
    assert_eq!(tokens.json["scope"], "profile");
    let me = srv.bearer_get("/api/me", &tokens.access).await;
    me.assert_status(200);
    let json = me.json();
    assert_eq!(json["sub"], "bob");
    assert_eq!(json["scope"], "profile");
    assert_eq!(json["client_id"], PUBLIC_CLIENT);

    let tokens = srv.tokens_for(&alice(), Some("email profile")).await;
    let me = srv.bearer_get("/api/email", &tokens.access).await;
    me.assert_status(200);
    assert_eq!(me.json()["sub"], "alice");
    assert_eq!(me.json()["email"], "alice@example.com");
}

//! The bearer-token layer (RFC 6750) guarding `/api/me` (scope `profile`) and `/api/email`
//! (scope `email`), over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use http::Method;

const REALM: &str = "Bearer realm=\"api\"";

#[tokio::test]
async fn missing_token_is_401_with_bare_challenge() {
    let srv = start().await;
    for path in ["/api/me", "/api/email"] {
        let res = srv.get(path).await;
        res.assert_status(401);
        // RFC 6750 3.1: no error attributes when no credentials were sent.
        assert_eq!(res.header("www-authenticate"), Some(REALM));
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert!(res.json()["error"].is_string());
    }
    // Another scheme carries no bearer token: the same answer.
    let res = srv
        .get_with("/api/me", &[("authorization", &alice())])
        .await;
    res.assert_status(401);
    assert_eq!(res.header("www-authenticate"), Some(REALM));
    // The unguarded route needs nothing.
    srv.get("/api/public").await.assert_status(200);
}

#[tokio::test]
async fn unknown_token_is_invalid_token() {
    let srv = start().await;
    for token in [
        "nope",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "abc-._~+/==",
    ] {
        let res = srv.bearer_get("/api/me", token).await;
        res.assert_status(401);
        assert_eq!(
            res.header("www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\"")
        );
        assert_eq!(res.error(), "invalid_token");
    }
}

#[tokio::test]
async fn other_credentials_are_not_access_tokens() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let codes = srv.authorize(None).await;
    for not_access in [&tokens.refresh, &codes.device_code] {
        let res = srv.bearer_get("/api/me", not_access).await;
        res.assert_status(401);
        assert_eq!(res.error(), "invalid_token");
    }
}

#[tokio::test]
async fn expired_token_is_invalid_token() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    srv.advance(Duration::from_millis(3_599_999));
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(200);
    srv.advance(Duration::from_millis(1));
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    res.assert_status(401);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"api\", error=\"invalid_token\"")
    );
    assert_eq!(res.error(), "invalid_token");
}

#[tokio::test]
async fn malformed_header_is_invalid_request() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let challenge = "Bearer realm=\"api\", error=\"invalid_request\"";
    let bad = [
        "Bearer a b".to_owned(),
        format!("Bearer {} x", tokens.access),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer ===".to_owned(),
        "Bearer a=b".to_owned(),
        "Bearer a,b".to_owned(),
        format!("Bearer {}", "a".repeat(5000)),
    ];
    for value in &bad {
        let res = srv.get_with("/api/me", &[("authorization", value)]).await;
        res.assert_status(400);
        assert_eq!(res.header("www-authenticate"), Some(challenge), "{value}");
        assert_eq!(res.error(), "invalid_request", "{value}");
    }
    // Two Authorization headers, even both valid.
    let value = format!("Bearer {}", tokens.access);
    let res = srv
        .get_with(
            "/api/me",
            &[("authorization", &value), ("authorization", &value)],
        )
        .await;
    res.assert_status(400);
    assert_eq!(res.header("www-authenticate"), Some(challenge));
}

#[tokio::test]
async fn two_authorization_headers_over_raw_tcp() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let req = format!(
        "GET /api/me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {t}\r\n\
         Authorization: Bearer {t}\r\nConnection: close\r\n\r\n",
        srv.addr,
        t = tokens.access
    );
    let (status, text) = srv.raw(req.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request"), "{text}");

    // A header value that is not ASCII (obs-text) is malformed, not a crash.
    let mut req = format!(
        "GET /api/me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer ",
        srv.addr
    )
    .into_bytes();
    req.extend_from_slice(b"\xe4\xf6\r\nConnection: close\r\n\r\n");
    let (status, text) = srv.raw(&req).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request"), "{text}");
}

#[tokio::test]
async fn insufficient_scope_is_403() {
    let srv = start().await;
    let tokens = srv.tokens(Some("profile")).await;
    let res = srv.bearer_get("/api/email", &tokens.access).await;
    res.assert_status(403);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"email\"")
    );
    assert_eq!(res.error(), "insufficient_scope");
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(200);

    let tokens = srv.tokens(Some("email")).await;
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    res.assert_status(403);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"profile\"")
    );
    srv.bearer_get("/api/email", &tokens.access)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn valid_token_reaches_the_inner_service() {
    let srv = start().await;
    let tokens = srv.tokens_for(&bob(), None).await;
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    res.assert_status(200);
    assert!(res.header("www-authenticate").is_none());
    let json = res.json();
    assert_eq!(json["sub"], "bob");
    assert_eq!(json["scope"], "email profile");
    assert_eq!(json["client_id"], PUBLIC_CLIENT);
    let res = srv.bearer_get("/api/email", &tokens.access).await;
    res.assert_status(200);
    assert_eq!(res.json()["email"], "bob@example.com");
    // The scheme is case-insensitive, and the token may be used many times.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let value = format!("{scheme} {}", tokens.access);
        srv.get_with("/api/me", &[("authorization", &value)])
            .await
            .assert_status(200);
    }
    // Other methods pass through the guard too.
    let res = srv
        .request(
            Method::POST,
            "/api/me",
            &[("authorization", &format!("Bearer {}", tokens.access))],
            "{}",
        )
        .await;
    res.assert_status(200);
}

#[tokio::test]
async fn grpc_requests_get_grpc_status() {
    let srv = start().await;
    let grpc = ("content-type", "application/grpc+proto");
    // Missing token: UNAUTHENTICATED.
    let res = srv
        .request(Method::POST, "/api/me", &[grpc, ("te", "trailers")], "")
        .await;
    res.assert_status(200);
    assert_eq!(res.header("grpc-status"), Some("16"));
    assert!(res.header("grpc-message").is_some());
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("application/grpc"));
    assert_eq!(res.header("www-authenticate"), Some(REALM));

    // Unknown token: UNAUTHENTICATED.
    let res = srv
        .request(
            Method::POST,
            "/api/me",
            &[
                ("content-type", "application/grpc"),
                ("authorization", "Bearer nope"),
            ],
            "",
        )
        .await;
    res.assert_status(200);
    assert_eq!(res.header("grpc-status"), Some("16"));

    // Insufficient scope: PERMISSION_DENIED.
    let tokens = srv.tokens(Some("profile")).await;
    let auth = format!("Bearer {}", tokens.access);
    let res = srv
        .request(
            Method::POST,
            "/api/email",
            &[
                ("content-type", "application/grpc"),
                ("authorization", &auth),
            ],
            "",
        )
        .await;
    res.assert_status(200);
    assert_eq!(res.header("grpc-status"), Some("7"));
    assert!(res.header("grpc-message").is_some());

    // A valid token passes through to the service.
    let res = srv
        .request(
            Method::POST,
            "/api/me",
            &[
                ("content-type", "application/grpc"),
                ("authorization", &auth),
            ],
            "",
        )
        .await;
    res.assert_status(200);
    assert!(res.header("grpc-status").is_none());
    assert_eq!(res.json()["sub"], "alice");
}

#[tokio::test]
async fn custom_realm_is_used_in_challenges() {
    let srv = start_with(|b| b.realm("photos")).await;
    let res = srv.get("/api/me").await;
    res.assert_status(401);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"photos\"")
    );
}

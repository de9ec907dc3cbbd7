//! Token revocation (RFC 7009) and introspection (RFC 7662), over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const REVOKE: &str = "/oauth/revoke";
const INTROSPECT: &str = "/oauth/introspect";

#[track_caller]
fn assert_revoked_ok(res: &Resp) {
    res.assert_status(200);
    assert_eq!(res.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn revoking_an_access_token_kills_it() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(200);
    assert_revoked_ok(&srv.revoke(&tokens.access, None).await);
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    res.assert_status(401);
    assert_eq!(res.error(), "invalid_token");
    // Revoking again is still 200.
    assert_revoked_ok(&srv.revoke(&tokens.access, Some("access_token")).await);
    // It ended alone (RFC 7009 2.1 leaves that choice to the server): the grant and its
    // refresh token live on, and the device gets a new access token.
    assert_eq!(srv.introspect(&tokens.refresh).await.json()["active"], true);
    let next = tokens_of(&srv.refresh(&tokens.refresh, None).await);
    srv.bearer_get("/api/me", &next.access)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn revoking_an_access_token_with_the_wrong_hint() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    assert_revoked_ok(&srv.revoke(&tokens.access, Some("refresh_token")).await);
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(401);
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_grant() {
    let srv = start().await;
    for hint in [
        None,
        Some("refresh_token"),
        Some("access_token"),
        Some("bogus"),
    ] {
        let tokens = srv.tokens(None).await;
        assert_revoked_ok(&srv.revoke(&tokens.refresh, hint).await);
        // The access token issued with it is dead too...
        let res = srv.bearer_get("/api/me", &tokens.access).await;
        res.assert_status(401);
        assert_eq!(res.error(), "invalid_token", "hint {hint:?}");
        // ...and the refresh token cannot be used.
        srv.refresh(&tokens.refresh, None)
            .await
            .assert_oauth_error(400, "invalid_grant");
    }
}

#[tokio::test]
async fn revoking_a_rotated_refresh_token_kills_the_current_access_token() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_revoked_ok(&srv.revoke(&second.refresh, None).await);
    srv.bearer_get("/api/me", &second.access)
        .await
        .assert_status(401);
    srv.refresh(&second.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn unknown_token_is_200() {
    let srv = start().await;
    for hint in [None, Some("access_token"), Some("refresh_token")] {
        let res = srv.revoke("never-issued", hint).await;
        assert_revoked_ok(&res);
        assert_eq!(res.json(), json!({}));
    }
}

#[tokio::test]
async fn revocation_requires_client_authentication() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let res = srv
        .post(REVOKE, &form(&[("token", &tokens.access)]), None)
        .await;
    res.assert_oauth_error(400, "invalid_request");
    let res = srv
        .post(
            REVOKE,
            &form(&[("token", &tokens.access), ("client_id", "nobody")]),
            None,
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
    let res = srv
        .post(
            REVOKE,
            &form(&[("token", &tokens.access)]),
            Some(&basic(CONFIDENTIAL_CLIENT, "wrong")),
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    // None of that revoked anything.
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn revocation_request_errors() {
    let srv = start().await;
    let res = srv
        .post(REVOKE, &form(&[("client_id", PUBLIC_CLIENT)]), None)
        .await;
    res.assert_oauth_error(400, "invalid_request");
    let res = srv.get(REVOKE).await;
    res.assert_oauth_error(405, "invalid_request");
    let res = srv
        .post(
            REVOKE,
            &format!("token=a&token=b&client_id={PUBLIC_CLIENT}"),
            None,
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_token() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    for token in [&tokens.access, &tokens.refresh] {
        let res = srv
            .post(
                REVOKE,
                &form(&[("token", token)]),
                Some(&confidential_basic()),
            )
            .await;
        assert!(res.status.is_client_error(), "{res:?}");
        assert!(res.json()["error"].is_string());
    }
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(200);
    tokens_of(&srv.refresh(&tokens.refresh, None).await);
}

#[tokio::test]
async fn confidential_client_revokes_its_own_tokens() {
    let srv = start().await;
    let codes = srv.authorize_confidential(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    let tokens = tokens_of(&srv.poll_confidential(&codes.device_code).await);
    let res = srv
        .post(
            REVOKE,
            &form(&[
                ("token", &tokens.refresh),
                ("token_type_hint", "refresh_token"),
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            None,
        )
        .await;
    assert_revoked_ok(&res);
    srv.bearer_get("/api/me", &tokens.access)
        .await
        .assert_status(401);
}

// ---- introspection ------------------------------------------------------------------------

#[tokio::test]
async fn introspection_of_an_active_access_token() {
    let srv = start().await;
    let issued_at = srv.now_secs();
    let tokens = srv.tokens_for(&bob(), Some("profile")).await;
    let res = srv.introspect(&tokens.access).await;
    res.assert_status(200);
    assert_no_store(&res);
    let json = res.json();
    assert_eq!(json["active"], true, "{json}");
    assert_eq!(json["sub"], "bob");
    assert_eq!(json["scope"], "profile");
    assert_eq!(json["client_id"], PUBLIC_CLIENT);
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["exp"], issued_at + 3600);
    assert_eq!(json["iss"], srv.base.as_str());

    // client_secret_post works too.
    let res = srv
        .post(
            INTROSPECT,
            &form(&[
                ("token", &tokens.access),
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            None,
        )
        .await;
    res.assert_status(200);
    assert_eq!(res.json()["active"], true);

    // A wrong hint only changes the search order.
    let res = srv
        .post(
            INTROSPECT,
            &form(&[
                ("token", &tokens.access),
                ("token_type_hint", "refresh_token"),
            ]),
            Some(&confidential_basic()),
        )
        .await;
    assert_eq!(res.json()["active"], true);
    assert_eq!(res.json()["token_type"], "Bearer");
}

#[tokio::test]
async fn introspection_of_a_refresh_token() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let res = srv
        .post(
            INTROSPECT,
            &form(&[
                ("token", &tokens.refresh),
                ("token_type_hint", "refresh_token"),
            ]),
            Some(&confidential_basic()),
        )
        .await;
    res.assert_status(200);
    let json = res.json();
    assert_eq!(json["active"], true);
    assert_eq!(json["sub"], "alice");
    assert_eq!(json["client_id"], PUBLIC_CLIENT);
    // Used up by a refresh: inactive.
    tokens_of(&srv.refresh(&tokens.refresh, None).await);
    let res = srv.introspect(&tokens.refresh).await;
    assert_eq!(res.json(), json!({"active": false}));
}

#[tokio::test]
async fn introspection_after_revocation_is_inactive() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    assert_eq!(srv.introspect(&tokens.access).await.json()["active"], true);
    assert_revoked_ok(&srv.revoke(&tokens.access, None).await);
    let res = srv.introspect(&tokens.access).await;
    res.assert_status(200);
    assert_eq!(res.json(), json!({"active": false}));
}

#[tokio::test]
async fn introspection_after_rotation_is_inactive() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_eq!(
        srv.introspect(&first.access).await.json(),
        json!({"active": false})
    );
    assert_eq!(srv.introspect(&second.access).await.json()["active"], true);
}

#[tokio::test]
async fn introspection_after_expiry_is_inactive() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    srv.advance(Duration::from_millis(3_599_999));
    assert_eq!(srv.introspect(&tokens.access).await.json()["active"], true);
    srv.advance(Duration::from_millis(1));
    let res = srv.introspect(&tokens.access).await;
    res.assert_status(200);
    assert_eq!(res.json(), json!({"active": false}));
}

#[tokio::test]
async fn introspection_of_unknown_token_is_inactive() {
    let srv = start().await;
    for token in ["nope", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let res = srv.introspect(token).await;
        res.assert_status(200);
        assert_eq!(res.json(), json!({"active": false}));
    }
}

#[tokio::test]
async fn public_client_may_not_introspect() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let res = srv
        .post(
            INTROSPECT,
            &form(&[("token", &tokens.access), ("client_id", PUBLIC_CLIENT)]),
            None,
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    // No authentication at all: 401 with a challenge too (RFC 7662 2.1, RFC 6749 5.2).
    let res = srv
        .post(INTROSPECT, &form(&[("token", &tokens.access)]), None)
        .await;
    res.assert_oauth_error(401, "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    // Wrong secret.
    let res = srv
        .post(
            INTROSPECT,
            &form(&[("token", &tokens.access)]),
            Some(&basic(CONFIDENTIAL_CLIENT, "wrong")),
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
}

/// Whatever the request lacks, an unauthenticated caller learns nothing about the token: every
/// variant is 401 `invalid_client` with a `WWW-Authenticate` challenge, never a 400, never a
/// body with `active` in it.
#[tokio::test]
async fn introspection_without_client_authentication_is_401() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let public_basic = basic(PUBLIC_CLIENT, "");
    let cases: [(String, Option<&str>); 6] = [
        (form(&[("token", &tokens.access)]), None),
        (String::new(), None),
        (form(&[("token", &tokens.refresh)]), None),
        // A confidential client naming itself without its secret.
        (
            form(&[
                ("token", &tokens.access),
                ("client_id", CONFIDENTIAL_CLIENT),
            ]),
            None,
        ),
        // A public client in Basic, with the empty password some libraries send.
        (form(&[("token", &tokens.access)]), Some(&public_basic)),
        (
            form(&[
                ("token", &tokens.access),
                ("token_type_hint", "access_token"),
            ]),
            None,
        ),
    ];
    for (body, authorization) in &cases {
        let res = srv.post(INTROSPECT, body, *authorization).await;
        res.assert_oauth_error(401, "invalid_client");
        assert!(
            res.must_header("www-authenticate").starts_with("Basic"),
            "{res:?}"
        );
        assert!(res.json().get("active").is_none(), "{}", res.text());
        assert!(!res.text().contains("alice"), "{}", res.text());
    }
    // The same token, properly authenticated, is active: the refusals were about the caller.
    assert_eq!(srv.introspect(&tokens.access).await.json()["active"], true);
}

#[tokio::test]
async fn introspection_request_errors() {
    let srv = start().await;
    let res = srv.post(INTROSPECT, "", Some(&confidential_basic())).await;
    res.assert_oauth_error(400, "invalid_request");
    let res = srv.get(INTROSPECT).await;
    res.assert_oauth_error(405, "invalid_request");
}

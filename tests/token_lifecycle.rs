//! The life of a grant's tokens over HTTP (real sockets, `MemoryStore`, a hand-moved clock):
//! rotation, the grace period for a retry after a lost reply, reuse detection revoking the
//! whole family, revocation (RFC 7009) and introspection (RFC 7662) of both kinds of token.
//!
//! Racing refreshes (one live pair at the end; a replay among them leaves none) are in
//! `tests/concurrency.rs`; a rotation applied behind a lost reply is in `tests/faults.rs`.

mod common;

use std::time::Duration;

use common::*;

/// Asserts that none of `tokens` works any more: the bearer route refuses the access token,
/// introspection says both are inactive.
async fn assert_dead(srv: &TestServer, tokens: &Tokens, what: &str) {
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    assert_eq!(res.status.as_u16(), 401, "{what}: access token still works");
    for (kind, token) in [("access", &tokens.access), ("refresh", &tokens.refresh)] {
        let json = srv.introspect(token).await.json();
        assert_eq!(json["active"], false, "{what}: {kind} token still active");
        assert!(json.get("grant_id").is_none(), "{what}: {json}");
    }
}

/// Asserts that `tokens` work: the bearer route lets the access token through, introspection
/// says both are active and belong to one grant; returns that grant's id.
async fn assert_live(srv: &TestServer, tokens: &Tokens, what: &str) -> String {
    let res = srv.bearer_get("/api/me", &tokens.access).await;
    assert_eq!(res.status.as_u16(), 200, "{what}: {}", res.text());
    let access = srv.introspect(&tokens.access).await.json();
    let refresh = srv.introspect(&tokens.refresh).await.json();
    assert_eq!(access["active"], true, "{what}: {access}");
    assert_eq!(refresh["active"], true, "{what}: {refresh}");
    assert_eq!(refresh["token_type"], "refresh_token");
    let id = access["grant_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no grant_id in {access}"))
        .to_owned();
    assert_eq!(refresh["grant_id"], id.as_str(), "{what}: two grants");
    id
}

#[tokio::test]
async fn introspection_answers_carry_the_grant_id() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let id = assert_live(&srv, &first, "issued").await;
    assert_eq!(id.len(), 32);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // A rotation stays in the grant; another approval is another grant.
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_eq!(assert_live(&srv, &second, "rotated").await, id);
    let other = srv.tokens(None).await;
    assert_ne!(assert_live(&srv, &other, "another device").await, id);
}

#[tokio::test]
async fn replay_of_a_rotated_refresh_token_revokes_the_family() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_live(&srv, &second, "after the rotation").await;
    // Past the grace period the rotated token is no retry: someone holds a copy.
    srv.advance_secs(31);
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_dead(&srv, &second, "the family after the replay").await;
    srv.refresh(&second.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_eq!(srv.flow.store().grant_count(), 0);
    assert_eq!(srv.flow.store().access_token_count(), 0);
}

#[tokio::test]
async fn a_retry_within_the_grace_period_gets_a_fresh_pair() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    let id = assert_live(&srv, &second, "rotated").await;
    // The device never saw `second` (a lost reply) and tries again with what it holds.
    srv.advance_secs(29);
    let third = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_ne!(third.access, second.access);
    assert_ne!(third.refresh, second.refresh);
    assert_eq!(third.refresh.len(), 64);
    // The pair the retry replaced stops working; the new one works, in the same grant.
    assert_dead(&srv, &second, "the pair the retry replaced").await;
    assert_eq!(assert_live(&srv, &third, "the retry's pair").await, id);
    assert_eq!(srv.flow.store().access_token_count(), 1);
    // And the device goes on refreshing.
    let fourth = tokens_of(&srv.refresh(&third.refresh, None).await);
    assert_live(&srv, &fourth, "refreshed after the retry").await;
}

#[tokio::test]
async fn the_grace_period_ends_after_thirty_seconds() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.advance_secs(30);
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_dead(&srv, &second, "the family after a late retry").await;
}

#[tokio::test]
async fn retries_keep_the_window_where_the_rotation_put_it() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.advance_secs(20);
    let retried = tokens_of(&srv.refresh(&first.refresh, None).await);
    // 20 + 15 s after the rotation: a retry does not renew the window.
    srv.advance_secs(15);
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_dead(&srv, &retried, "the family after a retry past the window").await;
}

#[tokio::test]
async fn presenting_the_token_a_retry_replaced_is_reuse() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.advance_secs(5);
    let third = tokens_of(&srv.refresh(&first.refresh, None).await);
    // `second` was replaced by the retry: whoever presents it holds a token that was never
    // the device's to keep.
    srv.advance_secs(1);
    srv.refresh(&second.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_dead(&srv, &third, "the family after reuse").await;
    srv.refresh(&third.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // The original token too: the grant is gone.
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn without_a_grace_period_a_second_use_is_reuse() {
    let srv = start_with(|b| b.refresh_token_grace(Duration::ZERO)).await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_dead(&srv, &second, "the family after reuse").await;
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_grant() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    let res = srv.revoke(&second.refresh, Some("refresh_token")).await;
    res.assert_status(200);
    assert_dead(&srv, &second, "the revoked grant").await;
    srv.refresh(&second.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // Revoking again, or revoking a token of the ended grant, is a quiet 200.
    srv.revoke(&second.refresh, None).await.assert_status(200);
    srv.revoke(&first.refresh, None).await.assert_status(200);
    assert_eq!(srv.flow.store().grant_count(), 0);
}

#[tokio::test]
async fn revoking_an_access_token_ends_only_it() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let id = assert_live(&srv, &first, "issued").await;
    srv.revoke(&first.access, Some("access_token"))
        .await
        .assert_status(200);
    srv.bearer_get("/api/me", &first.access)
        .await
        .assert_status(401);
    assert_eq!(srv.introspect(&first.access).await.json()["active"], false);
    // The grant and its refresh token live on.
    let refresh = srv.introspect(&first.refresh).await.json();
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["grant_id"], id.as_str());
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    assert_eq!(assert_live(&srv, &second, "refreshed").await, id);
}

#[tokio::test]
async fn a_revoked_grant_does_not_come_back_through_a_retry() {
    let srv = start().await;
    let first = srv.tokens(None).await;
    let second = tokens_of(&srv.refresh(&first.refresh, None).await);
    srv.revoke(&second.refresh, None).await.assert_status(200);
    // Within the grace period the old token would have been a retry; the grant is gone.
    srv.advance_secs(1);
    srv.refresh(&first.refresh, None)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_eq!(srv.flow.store().access_token_count(), 0);
}

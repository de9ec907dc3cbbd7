//! The device authorization endpoint (RFC 8628 3.1-3.2) and the metadata document (RFC 8414),
//! over real HTTP.

mod common;

use common::*;
use http::Method;

const PATH: &str = "/oauth/device_authorization";

#[tokio::test]
async fn success_response_has_every_field() {
    let srv = start().await;
    let res = srv
        .post(
            PATH,
            &form(&[("client_id", PUBLIC_CLIENT), ("scope", "profile")]),
            None,
        )
        .await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_no_store(&res);
    let json = res.json();

    let device_code = json["device_code"].as_str().expect("device_code");
    assert!(
        device_code.len() >= 43,
        "device_code too short: {device_code}"
    );
    assert!(
        device_code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "device_code not URL-safe: {device_code}"
    );

    let user_code = json["user_code"].as_str().expect("user_code");
    assert_user_code_format(user_code);

    let verification_uri = format!("{}/device", srv.base);
    assert_eq!(json["verification_uri"], verification_uri.as_str());
    let complete = json["verification_uri_complete"]
        .as_str()
        .expect("verification_uri_complete");
    assert!(complete.starts_with(&verification_uri), "{complete}");
    assert!(complete.contains(user_code), "{complete}");
    assert_eq!(
        complete,
        format!("{verification_uri}?user_code={user_code}")
    );
    assert_eq!(json["expires_in"], 1800);
    assert_eq!(json["interval"], 5);

    // Every call gets fresh codes.
    let again = srv.authorize(Some("profile")).await;
    assert_ne!(again.device_code, device_code);
    assert_ne!(again.user_code, user_code);
}

#[track_caller]
fn assert_user_code_format(code: &str) {
    let bytes = code.as_bytes();
    assert_eq!(bytes.len(), 9, "user_code {code}");
    assert_eq!(bytes[4], b'-', "user_code {code}");
    for (i, b) in bytes.iter().enumerate() {
        if i != 4 {
            assert!(
                USER_CODE_ALPHABET.as_bytes().contains(b),
                "user_code {code} has {:?}",
                *b as char
            );
        }
    }
}

#[tokio::test]
async fn user_codes_use_the_base20_alphabet() {
    let srv = start().await;
    for _ in 0..20 {
        let codes = srv.authorize(None).await;
        assert_user_code_format(&codes.user_code);
    }
}

#[tokio::test]
async fn configured_lifetimes_are_reported() {
    let srv = start_with(|b| {
        b.expires_in(std::time::Duration::from_secs(600))
            .interval(std::time::Duration::from_secs(7))
    })
    .await;
    let codes = srv.authorize(None).await;
    assert_eq!(codes.json["expires_in"], 600);
    assert_eq!(codes.json["interval"], 7);
}

#[tokio::test]
async fn default_scope_when_absent() {
    let srv = start().await;
    // No scope parameter, and an empty one (which counts as absent).
    for body in [
        form(&[("client_id", PUBLIC_CLIENT)]),
        format!("client_id={PUBLIC_CLIENT}&scope="),
    ] {
        let codes = codes_of(&srv.post(PATH, &body, None).await);
        srv.approve(&alice(), &codes.user_code).await;
        let tokens = tokens_of(&srv.poll(&codes.device_code).await);
        assert_eq!(tokens.json["scope"], "email profile");
    }
}

#[tokio::test]
async fn requested_scope_is_granted() {
    let srv = start().await;
    let tokens = srv.tokens(Some("email")).await;
    assert_eq!(tokens.json["scope"], "email");
    // Duplicates and extra spaces are tolerated and normalized.
    let tokens = srv.tokens(Some("profile  email profile")).await;
    assert_eq!(tokens.json["scope"], "email profile");
}

#[tokio::test]
async fn unknown_scope_is_invalid_scope() {
    let srv = start().await;
    for scope in ["admin", "profile admin"] {
        let res = srv
            .post(
                PATH,
                &form(&[("client_id", PUBLIC_CLIENT), ("scope", scope)]),
                None,
            )
            .await;
        res.assert_oauth_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn malformed_scope_is_invalid_scope() {
    let srv = start().await;
    for scope in ["pro\"file", "back\\slash", "caf\u{e9}"] {
        let res = srv
            .post(
                PATH,
                &form(&[("client_id", PUBLIC_CLIENT), ("scope", scope)]),
                None,
            )
            .await;
        res.assert_oauth_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn whitespace_only_scope_is_not_an_empty_grant() {
    let srv = start().await;
    let res = srv
        .post(PATH, &format!("client_id={PUBLIC_CLIENT}&scope=+++"), None)
        .await;
    if res.status == 200 {
        // Treated as omitted: the client's default scope, never an empty one.
        let codes = codes_of(&res);
        srv.approve(&alice(), &codes.user_code).await;
        let tokens = tokens_of(&srv.poll(&codes.device_code).await);
        assert_eq!(tokens.json["scope"], "email profile");
    } else {
        res.assert_oauth_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn unknown_client_is_invalid_client_with_challenge() {
    let srv = start().await;
    let res = srv
        .post(PATH, &form(&[("client_id", "nobody")]), None)
        .await;
    res.assert_oauth_error(401, "invalid_client");
    let challenge = res.must_header("www-authenticate");
    assert!(challenge.starts_with("Basic"), "{challenge}");

    // Through Basic too.
    let res = srv.post(PATH, "", Some(&basic("nobody", "x"))).await;
    res.assert_oauth_error(401, "invalid_client");
    assert!(res.header("www-authenticate").is_some());
}

#[tokio::test]
async fn missing_client_id_is_invalid_request() {
    let srv = start().await;
    let res = srv.post(PATH, "scope=profile", None).await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn confidential_client_via_basic() {
    let srv = start().await;
    let res = srv
        .post(PATH, "scope=profile", Some(&confidential_basic()))
        .await;
    let codes = codes_of(&res);
    assert_user_code_format(&codes.user_code);
    // client_id in the body as well, matching the Basic credentials, is fine.
    let res = srv
        .post(
            PATH,
            &form(&[("client_id", CONFIDENTIAL_CLIENT)]),
            Some(&confidential_basic()),
        )
        .await;
    res.assert_status(200);
    // The grant belongs to the confidential client: it can redeem it.
    srv.approve(&alice(), &codes.user_code).await;
    let tokens = tokens_of(&srv.poll_confidential(&codes.device_code).await);
    assert_eq!(tokens.json["scope"], "profile");
}

#[tokio::test]
async fn confidential_client_via_post() {
    let srv = start().await;
    let res = srv
        .post(
            PATH,
            &form(&[
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            None,
        )
        .await;
    let codes = codes_of(&res);
    srv.approve(&bob(), &codes.user_code).await;
    let res = srv
        .post(
            "/oauth/token",
            &form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &codes.device_code),
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            None,
        )
        .await;
    tokens_of(&res);
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401() {
    let srv = start().await;
    let wrong_basic = srv
        .post(PATH, "", Some(&basic(CONFIDENTIAL_CLIENT, "wrong")))
        .await;
    wrong_basic.assert_oauth_error(401, "invalid_client");
    assert!(wrong_basic.header("www-authenticate").is_some());

    let wrong_post = srv
        .post(
            PATH,
            &form(&[
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", "wrong"),
            ]),
            None,
        )
        .await;
    wrong_post.assert_oauth_error(401, "invalid_client");

    // A confidential client may not pose as public.
    let missing = srv
        .post(PATH, &form(&[("client_id", CONFIDENTIAL_CLIENT)]), None)
        .await;
    missing.assert_oauth_error(401, "invalid_client");

    // A public client has no secret to present.
    let public_with_secret = srv
        .post(
            PATH,
            &form(&[("client_id", PUBLIC_CLIENT), ("client_secret", "x")]),
            None,
        )
        .await;
    public_with_secret.assert_oauth_error(401, "invalid_client");
}

#[tokio::test]
async fn basic_and_post_at_once_is_invalid_request() {
    let srv = start().await;
    let res = srv
        .post(
            PATH,
            &form(&[
                ("client_id", CONFIDENTIAL_CLIENT),
                ("client_secret", CONFIDENTIAL_SECRET),
            ]),
            Some(&confidential_basic()),
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn basic_and_different_client_id_is_refused() {
    let srv = start().await;
    let res = srv
        .post(
            PATH,
            &form(&[("client_id", PUBLIC_CLIENT)]),
            Some(&confidential_basic()),
        )
        .await;
    res.assert_oauth_error(401, "invalid_client");
}

#[tokio::test]
async fn repeated_parameter_is_invalid_request() {
    let srv = start().await;
    for body in [
        format!("client_id={PUBLIC_CLIENT}&client_id={PUBLIC_CLIENT}"),
        format!("client_id={PUBLIC_CLIENT}&scope=profile&scope=email"),
    ] {
        let res = srv.post(PATH, &body, None).await;
        res.assert_oauth_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn get_is_405() {
    let srv = start().await;
    let res = srv.get(PATH).await;
    res.assert_oauth_error(405, "invalid_request");
    assert_eq!(res.header("allow"), Some("POST"));
}

#[tokio::test]
async fn wrong_content_type_is_400() {
    let srv = start().await;
    for ct in [
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let res = srv
            .request(
                Method::POST,
                PATH,
                &[("content-type", ct)],
                format!("client_id={PUBLIC_CLIENT}"),
            )
            .await;
        res.assert_oauth_error(400, "invalid_request");
    }
    // No content type at all.
    let res = srv
        .request(
            Method::POST,
            PATH,
            &[],
            format!("client_id={PUBLIC_CLIENT}"),
        )
        .await;
    res.assert_oauth_error(400, "invalid_request");
    // Parameters and case in the media type are fine.
    let res = srv
        .request(
            Method::POST,
            PATH,
            &[(
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )],
            format!("client_id={PUBLIC_CLIENT}"),
        )
        .await;
    res.assert_status(200);
}

#[tokio::test]
async fn malformed_percent_encoding_is_400() {
    let srv = start().await;
    for body in [
        format!("client_id={PUBLIC_CLIENT}&scope=%"),
        format!("client_id={PUBLIC_CLIENT}&scope=%zz"),
        format!("client_id={PUBLIC_CLIENT}&scope=%4"),
        // Valid escapes but not UTF-8.
        format!("client_id={PUBLIC_CLIENT}&scope=%FF%FE"),
        "client_id=demo%2-device".to_owned(),
    ] {
        let res = srv.post(PATH, &body, None).await;
        res.assert_oauth_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn body_over_16_kib_is_413_with_json() {
    let srv = start().await;
    // Declared by Content-Length.
    let body = format!("client_id={PUBLIC_CLIENT}&pad={}", "a".repeat(17 * 1024));
    let res = srv.post(PATH, &body, None).await;
    res.assert_oauth_error(413, "invalid_request");

    // Exactly at the limit is still read (and then parsed normally).
    let prefix = format!("client_id={PUBLIC_CLIENT}&pad=");
    let body = format!("{prefix}{}", "a".repeat(16 * 1024 - prefix.len()));
    assert_eq!(body.len(), 16 * 1024);
    let res = srv.post(PATH, &body, None).await;
    res.assert_status(200);
}

#[tokio::test]
async fn chunked_body_over_limit_is_413() {
    let srv = start().await;
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr
    );
    let first = format!("client_id={PUBLIC_CLIENT}&pad=");
    req.push_str(&format!("{:x}\r\n{first}\r\n", first.len()));
    let chunk = "a".repeat(1024);
    for _ in 0..20 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let (status, text) = srv.raw(req.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
}

#[tokio::test]
async fn huge_declared_length_is_refused_without_reading_the_body() {
    let srv = start().await;
    let req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 99999999999\r\nConnection: close\r\n\r\nclient_id={PUBLIC_CLIENT}",
        srv.addr
    );
    let (status, text) = srv.raw(req.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
}

#[tokio::test]
async fn hostile_requests_never_500() {
    let srv = start().await;
    let long = "x".repeat(10_000);
    let bodies = [
        String::new(),
        "&&&&".to_owned(),
        "=".to_owned(),
        "client_id=".to_owned(),
        format!("client_id={long}"),
        format!("client_id={PUBLIC_CLIENT}&scope={long}"),
        "client_id=%00".to_owned(),
        format!("client_id={PUBLIC_CLIENT}&scope=+++"),
    ];
    for body in &bodies {
        let res = srv.post(PATH, body, None).await;
        assert!(res.status.is_client_error() || res.status == 200, "{res:?}");
    }
    for auth in [
        "Basic",
        "Basic !!!",
        "Bearer abc",
        "Basic Og==",
        "Basic OnNlY3JldA==",
    ] {
        let res = srv
            .post(PATH, &form(&[("client_id", PUBLIC_CLIENT)]), Some(auth))
            .await;
        assert!(res.status.is_client_error(), "{auth}: {res:?}");
        assert!(res.json()["error"].is_string());
    }
}

#[tokio::test]
async fn metadata_document() {
    let srv = start().await;
    let res = srv.get("/.well-known/oauth-authorization-server").await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json = res.json();
    let base = &srv.base;
    assert_eq!(json["issuer"], base.as_str());
    assert_eq!(
        json["device_authorization_endpoint"],
        format!("{base}/oauth/device_authorization")
    );
    assert_eq!(json["token_endpoint"], format!("{base}/oauth/token"));
    assert_eq!(json["revocation_endpoint"], format!("{base}/oauth/revoke"));
    assert_eq!(
        json["introspection_endpoint"],
        format!("{base}/oauth/introspect")
    );
    let grants: Vec<&str> = json["grant_types_supported"]
        .as_array()
        .expect("grant_types_supported")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(grants.contains(&DEVICE_CODE_GRANT), "{grants:?}");
    assert!(grants.contains(&"refresh_token"), "{grants:?}");
    let scopes: Vec<&str> = json["scopes_supported"]
        .as_array()
        .expect("scopes_supported")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(scopes.contains(&"profile") && scopes.contains(&"email"));
    let auth: Vec<&str> = json["token_endpoint_auth_methods_supported"]
        .as_array()
        .expect("token_endpoint_auth_methods_supported")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(auth.contains(&"client_secret_basic") && auth.contains(&"client_secret_post"));

    // The endpoints the document names are the ones served.
    let da = json["device_authorization_endpoint"].as_str().unwrap();
    let path = da.strip_prefix(base.as_str()).unwrap();
    srv.post(path, &form(&[("client_id", PUBLIC_CLIENT)]), None)
        .await
        .assert_status(200);

    let post = srv
        .post("/.well-known/oauth-authorization-server", "", None)
        .await;
    post.assert_status(405);
}

#[tokio::test]
async fn metadata_without_refresh_tokens_omits_the_grant() {
    let srv = start_with(|b| b.refresh_token_lifetime(None)).await;
    let json = srv
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    let grants = json["grant_types_supported"].as_array().unwrap();
    assert!(grants.iter().any(|g| g == DEVICE_CODE_GRANT));
    assert!(!grants.iter().any(|g| g == "refresh_token"), "{grants:?}");
    // And the token response carries no refresh token.
    let codes = srv.authorize(None).await;
    srv.approve(&alice(), &codes.user_code).await;
    let res = srv.poll(&codes.device_code).await;
    res.assert_status(200);
    assert!(res.json().get("refresh_token").is_none(), "{}", res.text());
}

#[tokio::test]
async fn other_paths_reach_the_application() {
    let srv = start().await;
    let res = srv.get("/api/public").await;
    res.assert_status(200);
    assert_eq!(res.json()["ok"], true);
    let res = srv.get("/nope").await;
    res.assert_status(404);
    // Near misses of endpoint paths are not endpoints.
    let res = srv.post("/oauth/device_authorization/", "", None).await;
    res.assert_status(404);
}

//! The authorization server and the resource server as two real processes on loopback: the
//! `device_server` and `resource_server` example binaries (or, to sign arbitrary JWTs, an
//! authorization server in this test process and the `resource_server` binary).
//!
//! The binaries are built by `cargo build --examples` from the test (a no-op when fresh), in
//! the test's own profile and target directory. Each child is killed when its test ends.
//! Separate processes cannot share a manual clock, so the one real-time wait here is the cache
//! TTL of one second in `a_revoked_token_is_refused_within_the_cache_ttl`, bounded by a
//! deadline; the TTL logic itself is tested on a manual clock in `tests/resource_server.rs`.

mod examples_support;
mod http_support;

use std::io::{BufRead, BufReader};

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::Layer;
use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
use tower_device_flow::{Audience, BasicLogin, Client, DeviceFlow, MemoryStore, Scope};

use http_support::{bind, serve_hyper, Http, ALICE};

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A child server, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts example `name` listening on `port` with `args`, and waits for its banner.
    fn start(name: &str, port: u16, args: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(examples_support::example_binary(name))
            .args(["--addr", &addr])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not start"));
        assert!(banner.contains("listening on"), "{name}: {banner:?}");
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("access_token")
}

async fn tokens(http: &Http, issuer: &str) -> Value {
    http.device_flow_tokens(issuer, "demo-device", "profile email", ALICE)
        .await
}

fn assert_invalid_token(res: &http_support::Reply, why: &str) {
    assert_eq!(res.status, 401, "{why}: {}", res.text());
    assert_eq!(res.json()["error"], "invalid_token", "{why}");
    assert_eq!(
        res.header("www-authenticate"),
        "Bearer realm=\"api\", error=\"invalid_token\"",
        "{why}"
    );
}

#[tokio::test]
async fn device_flow_tokens_open_the_introspecting_resource_server() {
    let auth = Server::start("device_server", free_port(), &["--interval", "0"]);
    let api = Server::start(
        "resource_server",
        free_port(),
        &["--issuer", &auth.base, "--cache-ttl", "30"],
    );
    let http = Http::default();
    let tokens = tokens(&http, &auth.base).await;
    let res = http
        .get(&format!("{}/api/me", api.base), Some(access(&tokens)))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({"sub": "alice", "scope": "email profile"})
    );
    let res = http
        .get(&format!("{}/api/email", api.base), Some(access(&tokens)))
        .await;
    assert_eq!(
        res.json(),
        json!({"sub": "alice", "email": "alice@example.com"})
    );
    let res = http.get(&format!("{}/api/public", api.base), None).await;
    assert_eq!(res.json(), json!({"ok": true}));
    let res = http.get(&format!("{}/api/me", api.base), None).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), "Bearer realm=\"api\"");
    assert_invalid_token(
        &http
            .get(&format!("{}/api/me", api.base), Some("made-up"))
            .await,
        "unknown token",
    );
    // Without --jwt the demo publishes no keys.
    let meta = http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", auth.base),
            None,
        )
        .await;
    assert!(meta.json().get("jwks_uri").is_none());
    let jwks = http
        .get(&format!("{}/.well-known/jwks.json", auth.base), None)
        .await;
    assert_eq!(jwks.status, 404);
    // A refresh token is not an access token, there either.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_invalid_token(
        &http
            .get(&format!("{}/api/me", api.base), Some(refresh))
            .await,
        "refresh token",
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_the_cache_ttl() {
    let auth = Server::start("device_server", free_port(), &["--interval", "0"]);
    let api = Server::start(
        "resource_server",
        free_port(),
        &["--issuer", &auth.base, "--cache-ttl", "1"],
    );
    let http = Http::default();
    let tokens = tokens(&http, &auth.base).await;
    let me = format!("{}/api/me", api.base);
    assert_eq!(http.get(&me, Some(access(&tokens))).await.status, 200);
    let res = http
        .post_form(
            &format!("{}/oauth/revoke", auth.base),
            &[("token", access(&tokens)), ("client_id", "demo-device")],
            None,
        )
        .await;
    assert_eq!(res.status, 200);
    let revoked_at = Instant::now();
    // The resource server may answer from its cache for at most 1 s; give it 5 s of slack
    // on a loaded machine, but require the refusal.
    let refused = loop {
        let res = http.get(&me, Some(access(&tokens))).await;
        if res.status == 401 {
            break res;
        }
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(
            revoked_at.elapsed() < Duration::from_secs(6),
            "a revoked token was still accepted 6 s after revocation, with a 1 s cache TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_invalid_token(&refused, "revoked token");
}

#[tokio::test]
async fn a_stopped_authorization_server_is_503_and_recovery_follows_its_return() {
    let auth_port = free_port();
    let auth = Server::start("device_server", auth_port, &["--interval", "0"]);
    let api = Server::start(
        "resource_server",
        free_port(),
        &["--issuer", &auth.base, "--cache-ttl", "30"],
    );
    let http = Http::default();
    let me = format!("{}/api/me", api.base);
    let cached = tokens(&http, &auth.base).await;
    let uncached = tokens(&http, &auth.base).await;
    assert_eq!(http.get(&me, Some(access(&cached))).await.status, 200);

    auth.stop();
    // A cached answer still serves; a token the resource server cannot verify is 503.
    assert_eq!(http.get(&me, Some(access(&cached))).await.status, 200);
    let res = http.get(&me, Some(access(&uncached))).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["error"], "temporarily_unavailable");
    assert_eq!(res.header("retry-after"), "1");
    assert_eq!(res.header("www-authenticate"), "");

    // Back on the same address (a fresh memory store): its new tokens work at once, as
    // failures were not cached, and the old one is now unknown.
    let auth = Server::start("device_server", auth_port, &["--interval", "0"]);
    let fresh = tokens(&http, &auth.base).await;
    assert_eq!(http.get(&me, Some(access(&fresh))).await.status, 200);
    assert_invalid_token(&http.get(&me, Some(access(&uncached))).await, "lost token");
}

#[tokio::test]
async fn jwt_tokens_of_the_demo_open_the_jwt_resource_server() {
    let auth = Server::start("device_server", free_port(), &["--interval", "0", "--jwt"]);
    let api = Server::start(
        "resource_server",
        free_port(),
        &["--issuer", &auth.base, "--jwt"],
    );
    let http = Http::default();
    let tokens = tokens(&http, &auth.base).await;
    assert_eq!(access(&tokens).split('.').count(), 3);
    let res = http
        .get(&format!("{}/api/me", api.base), Some(access(&tokens)))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({"sub": "alice", "scope": "email profile"})
    );
    let jwks = http
        .get(&format!("{}/.well-known/jwks.json", auth.base), None)
        .await;
    assert_eq!(jwks.header("content-type"), "application/jwk-set+json");
    let meta = http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", auth.base),
            None,
        )
        .await;
    assert_eq!(
        meta.json()["jwks_uri"],
        format!("{}/.well-known/jwks.json", auth.base)
    );
    // A token signed by a key the issuer never published, and one with `alg: none`.
    let (_, stranger, stranger_kid) = ed25519(42);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": auth.base, "sub": "alice", "aud": format!("{}/api", auth.base),
        "client_id": "demo-device", "scope": "profile", "iat": now, "exp": now + 600, "jti": "x",
    });
    let forged = sign(&claims, &stranger, &stranger_kid);
    assert_invalid_token(
        &http
            .get(&format!("{}/api/me", api.base), Some(&forged))
            .await,
        "unknown key",
    );
    let kid = jwks.json()["keys"][0]["kid"].as_str().unwrap().to_owned();
    let none = alg_none(&claims, &kid);
    assert_invalid_token(
        &http.get(&format!("{}/api/me", api.base), Some(&none)).await,
        "alg none",
    );
    // JWTs need no authorization server to verify: with it stopped, the token still works.
    auth.stop();
    let res = http
        .get(&format!("{}/api/me", api.base), Some(access(&tokens)))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

/// An authorization server in this process, whose signing key the test holds, and the
/// `resource_server --jwt` binary checking its tokens: wrong audience, expired, unknown key,
/// `alg: none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwts_are_refused_by_the_resource_server_process() {
    let (listener, base) = bind().await;
    let (key, forger, kid) = ed25519(7);
    let api_resource = format!("{base}/api");
    let scopes = Scope::parse("profile email").unwrap();
    let store = MemoryStore::builder()
        .client(
            Client::public("demo-device", scopes)
                .with_resources(Audience::from_resources([api_resource.clone()]).unwrap()),
        )
        .build();
    let flow = DeviceFlow::builder(store)
        .issuer(base.clone())
        .interval(Duration::ZERO)
        .end_user(BasicLogin::users("device", [ALICE]))
        .default_audience(Audience::from_resources([api_resource.clone()]).ok())
        .jwt_access_tokens(Arc::new(JwtKeys::new(key)))
        .build();
    let app = flow
        .endpoints_layer()
        .layer(tower::service_fn(|_req: http::Request<_>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<bytes::Bytes>::default()))
        }));
    serve_hyper(listener, app);
    let api = Server::start(
        "resource_server",
        free_port(),
        &["--issuer", &base, "--jwt"],
    );
    let http = Http::default();
    let me = format!("{}/api/me", api.base);

    let issued = tokens(&http, &base).await;
    assert_eq!(http.get(&me, Some(access(&issued))).await.status, 200);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({
        "iss": base, "sub": "alice", "aud": api_resource, "client_id": "demo-device",
        "scope": "profile", "iat": now, "exp": now + 600, "jti": "j",
    });
    // Signed with the issuer's own key: accepted, so each refusal below has its one reason.
    assert_eq!(
        http.get(&me, Some(&sign(&good, &forger, &kid)))
            .await
            .status,
        200
    );
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let (_, stranger, _) = ed25519(8);
    let cases = [
        (
            "wrong aud",
            sign(&with("aud", json!("https://other.example/")), &forger, &kid),
        ),
        (
            "expired",
            sign(&with("exp", json!(now - 3600)), &forger, &kid),
        ),
        ("unknown key", sign(&good, &stranger, &kid)),
        ("unknown kid", sign(&good, &stranger, "no-such-kid")),
        ("alg none", alg_none(&good, &kid)),
    ];
    for (why, token) in cases {
        assert_invalid_token(&http.get(&me, Some(&token)).await, why);
    }
}

/// An Ed25519 key: the server's [`SigningKey`], a `jsonwebtoken` key to sign with, its kid.
fn ed25519(seed: u8) -> (SigningKey, EncodingKey, String) {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: [seed; 32],
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    let key = SigningKey::from_pkcs8_der(JwsAlgorithm::EdDSA, der.as_bytes()).unwrap();
    let kid = key.kid().to_owned();
    (key, EncodingKey::from_ed_der(der.as_bytes()), kid)
}

fn sign(claims: &Value, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn alg_none(claims: &Value, kid: &str) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
        b64(claims)
    )
}

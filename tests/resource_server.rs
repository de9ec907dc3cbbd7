//! Resource servers that do not hold the store: the introspecting and JWT verifiers against a
//! real authorization server on a loopback port, and RFC 8707 audiences end to end. Time is a
//! [`ManualClock`] shared by the authorization server and the bearer layer: no test sleeps.

mod http_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::bearer::TokenVerifier;
use tower_device_flow::jwt::{JwsAlgorithm, JwtKeys, SigningKey};
use tower_device_flow::resource_server::{IntrospectionVerifier, JwtVerifier};
use tower_device_flow::{
    Audience, BasicLogin, Client, DeviceFlow, ManualClock, MemoryStore, RequireOAuthLayer, Scope,
    ScopeRequirement, Timestamp, TokenInfo,
};

use http_support::{bind, serve_hyper, Http, ALICE};

const START_MILLIS: u64 = 1_700_000_000_000;

fn api_of(base: &str) -> String {
    format!("{base}/api")
}

/// An authorization server on a loopback port, on the shared clock, with the demo's clients
/// (both may name the resources `{base}/api` and `https://other.example/`).
struct AuthServer {
    base: String,
    clock: ManualClock,
    http: Http,
    keys: Option<Arc<JwtKeys>>,
    /// Requests the server received, by path.
    hits: Arc<Hits>,
}

#[derive(Default)]
struct Hits {
    introspect: AtomicUsize,
    jwks: AtomicUsize,
}

async fn auth_server(jwt: Option<SigningKey>, lifetime: Duration) -> AuthServer {
    let (listener, base) = bind().await;
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
    let resources =
        Audience::from_resources([api_of(&base), "https://other.example/".into()]).unwrap();
    let scopes = Scope::parse("profile email").unwrap();
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()).with_resources(resources.clone()))
        .client(
            Client::confidential("demo-confidential", "demo-secret", scopes)
                .with_resources(resources),
        )
        .build();
    let keys = jwt.map(|k| Arc::new(JwtKeys::new(k)));
    let mut builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clock(clock.clone())
        .access_token_lifetime(lifetime)
        .end_user(BasicLogin::users("device", [ALICE]))
        .default_audience(Audience::from_resources([api_of(&base)]).ok());
    if let Some(keys) = &keys {
        builder = builder.jwt_access_tokens(keys.clone());
    }
    let flow = builder.build();
    let hits = Arc::new(Hits::default());
    let counted = hits.clone();
    let app = flow
        .endpoints_layer()
        .layer(service_fn(|_req: Request<_>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let app = service_fn(move |req: Request<hyper::body::Incoming>| {
        match req.uri().path() {
            "/oauth/introspect" => counted.introspect.fetch_add(1, Ordering::SeqCst),
            "/.well-known/jwks.json" => counted.jwks.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        app.clone().oneshot(req)
    });
    serve_hyper(listener, app);
    AuthServer {
        base,
        clock,
        http: Http::default(),
        keys,
        hits,
    }
}

impl AuthServer {
    /// The device flow for `demo-device`, naming `resources`: the token response.
    async fn tokens(&self, scope: &str, resources: &[&str]) -> Value {
        let mut form = vec![("client_id", "demo-device"), ("scope", scope)];
        form.extend(resources.iter().map(|r| ("resource", *r)));
        let res = self
            .http
            .post_form(
                &format!("{}/oauth/device_authorization", self.base),
                &form,
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let codes = res.json();
        let res = self
            .http
            .post_form(
                &format!("{}/device", self.base),
                &[
                    ("user_code", codes["user_code"].as_str().unwrap()),
                    ("decision", "approve"),
                ],
                Some(ALICE),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let res = self
            .http
            .poll(
                &self.base,
                "demo-device",
                codes["device_code"].as_str().unwrap(),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }

    async fn access_token(&self) -> String {
        self.tokens("profile email", &[]).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn revoke(&self, token: &str) {
        let res = self
            .http
            .post_form(
                &format!("{}/oauth/revoke", self.base),
                // RFC 7009: the client the token was issued to revokes it.
                &[("token", token), ("client_id", "demo-device")],
                None,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }

    fn introspections(&self) -> usize {
        self.hits.introspect.load(Ordering::SeqCst)
    }

    fn jwks_fetches(&self) -> usize {
        self.hits.jwks.load(Ordering::SeqCst)
    }

    fn introspector(&self, ttl: Duration) -> IntrospectionVerifier {
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        IntrospectionVerifier::builder(http, &format!("{}/oauth/introspect", self.base))
            .unwrap()
            .client_credentials("demo-confidential", "demo-secret")
            .expected_issuer(self.base.clone())
            .cache_ttl(ttl)
            .build()
    }

    fn jwt_verifier(&self) -> JwtVerifier {
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        JwtVerifier::builder(http, &self.base).unwrap().build()
    }

    /// A guarded `/api/me` on the shared clock, for the API `{base}/api`, over `verifier`.
    fn guard<V: TokenVerifier>(&self, verifier: V) -> Api<V> {
        let layer = RequireOAuthLayer::new(
            verifier,
            ScopeRequirement::AllOf(Scope::parse("profile").unwrap()),
        )
        .with_audience(&api_of(&self.base))
        .with_clock(self.clock.clone());
        Api { layer }
    }
}

struct Api<V> {
    layer: RequireOAuthLayer<V>,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl<V: TokenVerifier> Api<V> {
    async fn get(&self, token: &str) -> Answer {
        self.get_with(token, &[]).await
    }

    async fn get_with(&self, token: &str, headers: &[(&str, &str)]) -> Answer {
        let svc = self
            .layer
            .layer(service_fn(|req: Request<Full<Bytes>>| async move {
                let t = req.extensions().get::<TokenInfo>().cloned().unwrap();
                let body =
                    json!({"sub": t.subject.as_str(), "aud": t.audience.map(|a| a.to_string())});
                Ok::<_, std::convert::Infallible>(Response::new(Full::from(body.to_string())))
            }));
        let mut req = Request::get("/api/me").header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = svc
            .oneshot(req.body(Full::default()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    }
}

impl Answer {
    fn assert_invalid_token(&self) {
        assert_eq!(self.status, 401, "{}", self.body);
        assert_eq!(self.body["error"], "invalid_token");
        assert_eq!(
            self.headers["www-authenticate"],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Introspection

#[tokio::test]
async fn introspected_tokens_open_the_route_and_answers_are_cached() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let token = asrv.access_token().await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(30)));
    for _ in 0..5 {
        let res = api.get(&token).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.body["sub"], "alice");
        assert_eq!(res.body["aud"], api_of(&asrv.base));
    }
    assert_eq!(asrv.introspections(), 1, "answers come from the cache");
    // Past the TTL the server is asked again.
    asrv.clock.advance(Duration::from_secs(30));
    assert_eq!(api.get(&token).await.status, 200);
    assert_eq!(asrv.introspections(), 2);
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_the_cache_ttl_has_passed() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let token = asrv.access_token().await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(10)));
    assert_eq!(api.get(&token).await.status, 200);
    asrv.revoke(&token).await;
    // Within the TTL the cached answer stands (the documented staleness)...
    asrv.clock.advance(Duration::from_millis(9_999));
    assert_eq!(api.get(&token).await.status, 200);
    // ...and not a moment longer.
    asrv.clock.advance(Duration::from_millis(1));
    api.get(&token).await.assert_invalid_token();
    // With no cache, at once.
    let token = asrv.access_token().await;
    let fresh = asrv.guard(asrv.introspector(Duration::ZERO));
    assert_eq!(fresh.get(&token).await.status, 200);
    asrv.revoke(&token).await;
    fresh.get(&token).await.assert_invalid_token();
}

#[tokio::test]
async fn answers_are_never_cached_past_the_tokens_expiry() {
    let asrv = auth_server(None, Duration::from_secs(20)).await;
    let token = asrv.access_token().await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(3600)));
    assert_eq!(api.get(&token).await.status, 200);
    asrv.clock.advance(Duration::from_secs(20));
    let res = api.get(&token).await;
    res.assert_invalid_token();
    assert_eq!(
        asrv.introspections(),
        2,
        "the expired answer was not served from the cache"
    );
}

#[tokio::test]
async fn unknown_tokens_are_cached_briefly() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(30)));
    for _ in 0..3 {
        api.get("not-a-token").await.assert_invalid_token();
    }
    assert_eq!(asrv.introspections(), 1);
    asrv.clock.advance(Duration::from_secs(2));
    api.get("not-a-token").await.assert_invalid_token();
    assert_eq!(asrv.introspections(), 2);
}

#[tokio::test]
async fn refresh_tokens_are_not_access_tokens() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let tokens = asrv.tokens("profile", &[]).await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(30)));
    api.get(tokens["refresh_token"].as_str().unwrap())
        .await
        .assert_invalid_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_introspection_in_flight_per_token() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let token = asrv.access_token().await;
    // An HTTP client that holds every request until the gate opens.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (g, s) = (gate.clone(), sent.clone());
    let slow = service_fn(move |req: Request<Full<Bytes>>| {
        let (g, s, hyper) = (g.clone(), s.clone(), hyper.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            let _permit = g.acquire().await;
            hyper.request(req).await
        }
    });
    let verifier = IntrospectionVerifier::builder(slow, &format!("{}/oauth/introspect", asrv.base))
        .unwrap()
        .client_credentials("demo-confidential", "demo-secret")
        .build();
    let api = Arc::new(asrv.guard(verifier));
    let waiting: Vec<_> = (0..32)
        .map(|_| {
            let (api, token) = (api.clone(), token.clone());
            tokio::spawn(async move { api.get(&token).await.status })
        })
        .collect();
    // Wait until the one request is at the gate, then give the others every chance to start
    // their own (they must not).
    while sent.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(100);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(asrv.introspections(), 1);
}

#[tokio::test]
async fn an_unreachable_authorization_server_is_503_never_200() {
    // A port nobody listens on: bind, learn the port, close.
    let (listener, base) = bind().await;
    drop(listener);
    let http = HyperClient::builder(TokioExecutor::new()).build_http();
    let verifier = IntrospectionVerifier::builder(http, &format!("{base}/oauth/introspect"))
        .unwrap()
        .build();
    let api = Api {
        layer: RequireOAuthLayer::new(
            verifier,
            ScopeRequirement::AllOf(Scope::parse("profile").unwrap()),
        ),
    };
    let res = api.get("some-token").await;
    assert_eq!(res.status, 503);
    assert_eq!(res.body["error"], "temporarily_unavailable");
    assert_eq!(res.headers["retry-after"], "1");
    // gRPC callers get UNAVAILABLE.
    let res = api
        .get_with("some-token", &[("content-type", "application/grpc")])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["grpc-status"], "14");
}

#[tokio::test(start_paused = true)]
async fn a_silent_authorization_server_times_out_as_503() {
    let never = service_fn(|_req: Request<Full<Bytes>>| async {
        std::future::pending::<Result<Response<Full<Bytes>>, std::convert::Infallible>>().await
    });
    let verifier = IntrospectionVerifier::builder(never, "http://127.0.0.1:9/oauth/introspect")
        .unwrap()
        .timeout(Duration::from_millis(200))
        .build();
    let started = tokio::time::Instant::now();
    let answer = verifier
        .verify("t", Timestamp::from_unix_millis(START_MILLIS))
        .await;
    assert!(
        matches!(
            answer,
            Err(tower_device_flow::bearer::VerifyError::Unavailable(_))
        ),
        "{answer:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test]
async fn wrong_credentials_are_a_server_error_not_a_pass() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let token = asrv.access_token().await;
    let http = HyperClient::builder(TokioExecutor::new()).build_http();
    let verifier = IntrospectionVerifier::builder(http, &format!("{}/oauth/introspect", asrv.base))
        .unwrap()
        .client_credentials("demo-confidential", "wrong")
        .build();
    let res = asrv.guard(verifier).get(&token).await;
    assert_eq!(res.status, 500);
    assert_eq!(res.body["error"], "server_error");
}

// ---------------------------------------------------------------------------------------------
// Audience (RFC 8707)

#[tokio::test]
async fn the_audience_is_the_named_resource_and_each_api_checks_its_own() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let other = asrv.tokens("profile", &["https://other.example/"]).await;
    let ours = asrv.tokens("profile", &[&api_of(&asrv.base)]).await;
    let api = asrv.guard(asrv.introspector(Duration::from_secs(30)));
    let res = api.get(other["access_token"].as_str().unwrap()).await;
    res.assert_invalid_token();
    assert_eq!(
        res.body["error_description"],
        "the access token is not meant for this resource"
    );
    assert_eq!(
        api.get(ours["access_token"].as_str().unwrap()).await.status,
        200
    );
    // Introspection reports the audience.
    let res = asrv
        .http
        .post_form(
            &format!("{}/oauth/introspect", asrv.base),
            &[("token", other["access_token"].as_str().unwrap())],
            Some(("demo-confidential", "demo-secret")),
        )
        .await;
    assert_eq!(res.json()["aud"], "https://other.example/");
}

#[tokio::test]
async fn resources_a_client_may_not_name_are_invalid_target() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    for bad in [
        "https://evil.example/",
        "not-a-uri",
        "https://x.example/#frag",
    ] {
        let res = asrv
            .http
            .post_form(
                &format!("{}/oauth/device_authorization", asrv.base),
                &[("client_id", "demo-device"), ("resource", bad)],
                None,
            )
            .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert_eq!(res.json()["error"], "invalid_target", "{bad}");
    }
}

#[tokio::test]
async fn a_refresh_may_narrow_the_audience_never_widen_it() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let ours = api_of(&asrv.base);
    let tokens = asrv
        .tokens("profile", &[&ours, "https://other.example/"])
        .await;
    let refresh = |token: String, resource: &'static str| {
        let (http, base) = (asrv.http.clone(), asrv.base.clone());
        async move {
            http.post_form(
                &format!("{base}/oauth/token"),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", "demo-device"),
                    ("resource", resource),
                ],
                None,
            )
            .await
        }
    };
    let narrowed = refresh(
        tokens["refresh_token"].as_str().unwrap().into(),
        "https://other.example/",
    )
    .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    let narrowed = narrowed.json();
    let api = asrv.guard(asrv.introspector(Duration::from_secs(30)));
    // Narrowed to the other API: no longer ours.
    api.get(narrowed["access_token"].as_str().unwrap())
        .await
        .assert_invalid_token();
    let widened = refresh(
        narrowed["refresh_token"].as_str().unwrap().into(),
        "https://evil.example/",
    )
    .await;
    assert_eq!(widened.status, 400);
    assert_eq!(widened.json()["error"], "invalid_target");
}

#[tokio::test]
async fn a_layer_with_an_audience_refuses_tokens_without_one() {
    let asrv = auth_server(None, Duration::from_secs(3600)).await;
    let token = asrv.access_token().await;
    // A verifier that drops the audience: the layer alone decides.
    struct NoAud(IntrospectionVerifier);
    impl TokenVerifier for NoAud {
        async fn verify(
            &self,
            token: &str,
            now: Timestamp,
        ) -> Result<Option<TokenInfo>, tower_device_flow::bearer::VerifyError> {
            Ok(self
                .0
                .verify(token, now)
                .await?
                .map(|t| t.with_audience(None)))
        }
    }
    asrv.guard(NoAud(asrv.introspector(Duration::ZERO)))
        .get(&token)
        .await
        .assert_invalid_token();
}

// ---------------------------------------------------------------------------------------------
// JWT access tokens (RFC 9068)

/// An Ed25519 key both as the server's [`SigningKey`] and as a `jsonwebtoken` key to forge with.
fn ed25519(seed: u8) -> (SigningKey, EncodingKey) {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .to_pkcs8_pem(Default::default())
        .unwrap();
    let key = SigningKey::from_pem(JwsAlgorithm::EdDSA, &pem).unwrap();
    let der = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: [seed; 32],
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    (key, EncodingKey::from_ed_der(der.as_bytes()))
}

fn claims(asrv: &AuthServer) -> Value {
    let now = START_MILLIS / 1000;
    json!({
        "iss": asrv.base, "sub": "alice", "aud": api_of(&asrv.base), "client_id": "demo-device",
        "scope": "profile", "iat": now, "exp": now + 600, "jti": "j1",
    })
}

fn forge(claims: &Value, key: &EncodingKey, kid: &str, typ: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn jwt_access_tokens_verify_without_asking_and_introspection_still_answers() {
    let (key, _) = ed25519(1);
    let kid = key.kid().to_owned();
    let asrv = auth_server(Some(key), Duration::from_secs(600)).await;
    let tokens = asrv.tokens("profile email", &[]).await;
    let token = tokens["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWS compact serialization");
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let api = asrv.guard(asrv.jwt_verifier());
    for _ in 0..3 {
        let res = api.get(token).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.body["aud"], api_of(&asrv.base));
    }
    assert_eq!(asrv.jwks_fetches(), 1);
    assert_eq!(asrv.introspections(), 0);
    // The server still knows the token: introspection answers, and after revocation says so.
    let introspect = || async {
        asrv.http
            .post_form(
                &format!("{}/oauth/introspect", asrv.base),
                &[("token", token)],
                Some(("demo-confidential", "demo-secret")),
            )
            .await
            .json()
    };
    let answer = introspect().await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["aud"], api_of(&asrv.base));
    asrv.revoke(token).await;
    assert_eq!(introspect().await["active"], false);
    // ...but a JWT verifier does not ask: the token lives until its exp (documented).
    assert_eq!(api.get(token).await.status, 200);
    asrv.clock.advance(Duration::from_secs(600 + 5));
    api.get(token).await.assert_invalid_token();
}

#[tokio::test]
async fn bad_jwts_are_invalid_token() {
    let (key, forger) = ed25519(2);
    let kid = key.kid().to_owned();
    let asrv = auth_server(Some(key), Duration::from_secs(600)).await;
    let api = asrv.guard(asrv.jwt_verifier());
    let good = claims(&asrv);
    // The forger holds the real key: this one is fine, so the refusals below are for the
    // reason each names.
    let ok = forge(&good, &forger, &kid, Some("at+jwt"));
    assert_eq!(api.get(&ok).await.status, 200);

    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let now = START_MILLIS / 1000;
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            forge(
                &with("aud", json!("https://other.example/")),
                &forger,
                &kid,
                Some("at+jwt"),
            ),
        ),
        (
            "expired",
            forge(&with("exp", json!(now - 6)), &forger, &kid, Some("at+jwt")),
        ),
        (
            "not yet valid",
            forge(&with("nbf", json!(now + 60)), &forger, &kid, Some("at+jwt")),
        ),
        (
            "wrong iss",
            forge(
                &with("iss", json!("https://evil.example")),
                &forger,
                &kid,
                Some("at+jwt"),
            ),
        ),
        ("no typ", forge(&good, &forger, &kid, None)),
        ("typ JWT", forge(&good, &forger, &kid, Some("JWT"))),
        (
            "unknown key",
            forge(&good, &ed25519(3).1, &kid, Some("at+jwt")),
        ),
        (
            "unknown kid",
            forge(&good, &ed25519(3).1, "nope", Some("at+jwt")),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                b64(&good)
            ),
        ),
        ("HS256 with the public key as secret", {
            let jwks: Value = serde_json::from_slice(&asrv.keys.as_ref().unwrap().jwks()).unwrap();
            let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.clone());
            h.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(x.as_bytes()).unwrap())
                .unwrap()
        }),
        ("garbage", "a.b.c".into()),
    ];
    for (why, token) in cases {
        let res = api.get(&token).await;
        assert_eq!(res.status, 401, "{why}: {}", res.body);
        assert_eq!(res.body["error"], "invalid_token", "{why}");
    }
    // Within the leeway an expired token still passes.
    let lenient = forge(&with("exp", json!(now - 4)), &forger, &kid, Some("at+jwt"));
    assert_eq!(api.get(&lenient).await.status, 200);
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval_and_rotation_works() {
    let (a, _) = ed25519(4);
    let asrv = auth_server(Some(a), Duration::from_secs(600)).await;
    let api = asrv.guard(asrv.jwt_verifier());
    let first = asrv.access_token().await;
    assert_eq!(api.get(&first).await.status, 200);
    assert_eq!(asrv.jwks_fetches(), 1);
    // A flood of made-up kids costs at most one fetch per interval (10 s): none yet, as the
    // keys were fetched just now, then one.
    let (_, stranger) = ed25519(5);
    let t = forge(&claims(&asrv), &stranger, "kid-early", Some("at+jwt"));
    api.get(&t).await.assert_invalid_token();
    assert_eq!(asrv.jwks_fetches(), 1);
    asrv.clock.advance(Duration::from_secs(10));
    for i in 0..20 {
        let t = forge(
            &claims(&asrv),
            &stranger,
            &format!("kid-{i}"),
            Some("at+jwt"),
        );
        api.get(&t).await.assert_invalid_token();
    }
    assert_eq!(asrv.jwks_fetches(), 2);
    // The server rotates; the new kid is fetched once the interval has passed.
    asrv.clock.advance(Duration::from_secs(10));
    let (b, _) = ed25519(6);
    asrv.keys.as_ref().unwrap().rotate(b);
    let second = asrv.access_token().await;
    assert_eq!(api.get(&second).await.status, 200);
    assert_eq!(asrv.jwks_fetches(), 3);
    // Tokens of the old key still verify, with a fresh verifier too (the JWKS keeps it).
    let fresh = asrv.guard(asrv.jwt_verifier());
    assert_eq!(fresh.get(&first).await.status, 200);
    assert_eq!(fresh.get(&second).await.status, 200);
}

#[tokio::test]
async fn es256_tokens_verify_too() {
    let asrv = auth_server(
        Some(SigningKey::generate(JwsAlgorithm::ES256).unwrap()),
        Duration::from_secs(600),
    )
    .await;
    let token = asrv.access_token().await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::ES256
    );
    assert_eq!(
        asrv.guard(asrv.jwt_verifier()).get(&token).await.status,
        200
    );
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_verifying_once_the_keys_are_old() {
    let (a, forger) = ed25519(9);
    let kid = a.kid().to_owned();
    let asrv = auth_server(Some(a), Duration::from_secs(600)).await;
    let api = asrv.guard(asrv.jwt_verifier());
    let signed = |jti: &str| {
        let mut c = claims(&asrv);
        c["jti"] = json!(jti);
        c["exp"] = json!(START_MILLIS / 1000 + 7200);
        forge(&c, &forger, &kid, Some("at+jwt"))
    };
    assert_eq!(api.get(&signed("1")).await.status, 200);
    // The server withdraws the key (say, after a compromise).
    let keys = asrv.keys.as_ref().unwrap();
    keys.rotate(ed25519(10).0);
    keys.retire(&kid);
    // The verifier trusts the keys it holds for a while...
    asrv.clock.advance(Duration::from_secs(15 * 60 - 1));
    assert_eq!(api.get(&signed("2")).await.status, 200);
    assert_eq!(asrv.jwks_fetches(), 1);
    // ...then refetches, and the withdrawn key verifies nothing new.
    asrv.clock.advance(Duration::from_secs(1));
    api.get(&signed("3")).await.assert_invalid_token();
    assert_eq!(asrv.jwks_fetches(), 2);
}

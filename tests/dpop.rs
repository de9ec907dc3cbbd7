//! DPoP (RFC 9449) over real sockets, against the demo's routes, with an independent client.
//!
//! The client here shares no JOSE code with the server. The server parses proofs itself and
//! verifies signatures with jsonwebtoken 12 (p256 0.14, ed25519-dalek 3). The test assembles
//! each compact JWS by hand (serde_json and base64), signs it with older, separate RustCrypto
//! lines (p256 0.13 / ecdsa 0.16 for ES256, ed25519-dalek 2 for EdDSA), and computes RFC 7638
//! thumbprints and `ath` with its own code. The RFC's own example proofs are checked by the
//! unit tests of `src/dpop/proof.rs`.
//!
//! Time is a `ManualClock` moved by hand: no test sleeps.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::dpop::{DpopConfig, DpopNonces, DpopPolicy};
use tower_device_flow::{
    BasicLogin, Client, DeviceFlow, DeviceFlowBuilder, ManualClock, MemoryStore, Scope, Store,
    Timestamp, TokenInfo,
};

mod http_support;
use http_support::{basic_auth, bind, serve_hyper, Http, Reply, ALICE, DEVICE_CODE_GRANT};

const START_MILLIS: u64 = 1_700_000_000_000;
const USERS: [(&str, &str); 2] = [("alice", "alice-password"), ("bob", "bob-password")];

// ---------------------------------------------------------------------------------------------
// The independent DPoP client.

/// A client key: ES256 (P-256) or EdDSA (Ed25519).
enum Key {
    Es256(p256_client::ecdsa::SigningKey),
    Ed25519(ed25519_client::SigningKey),
}

impl Key {
    fn es256() -> Self {
        Key::Es256(p256_client::ecdsa::SigningKey::random(
            &mut rand_core::OsRng,
        ))
    }

    fn ed25519() -> Self {
        Key::Ed25519(ed25519_client::SigningKey::generate(&mut rand_core::OsRng))
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    /// The public JWK, and the RFC 7638 members in lexicographic order.
    fn jwk(&self) -> Value {
        match self {
            Key::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(p.x().expect("x")),
                    "y": URL_SAFE_NO_PAD.encode(p.y().expect("y")),
                })
            }
            Key::Ed25519(k) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes()),
            }),
        }
    }

    /// RFC 7638: SHA-256 over the required members, sorted, without whitespace.
    fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = match self {
            Key::Es256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                jwk["x"].as_str().unwrap(),
                jwk["y"].as_str().unwrap()
            ),
            Key::Ed25519(_) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                jwk["x"].as_str().unwrap()
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Es256(k) => {
                use p256_client::ecdsa::signature::Signer;
                let sig: p256_client::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec() // r || s, as JWS wants (not DER)
            }
            Key::Ed25519(k) => {
                use ed25519_client::Signer;
                k.sign(input).to_bytes().to_vec()
            }
        }
    }

    /// A compact JWS of `header` and `claims`, signed with this key.
    fn jws(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()));
        format!("{input}.{sig}")
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
    }
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn random_jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// The claims of a fresh proof for `htm` `htu` at `iat` (seconds).
fn claims(htm: &str, htu: &str, iat: u64) -> Value {
    json!({"jti": random_jti(), "htm": htm, "htu": htu, "iat": iat})
}

// ---------------------------------------------------------------------------------------------
// The server: the demo's clients, users and routes on a ManualClock.

struct Server {
    base: String,
    clock: ManualClock,
    http: Http,
}

fn demo_store() -> MemoryStore {
    let scopes = Scope::parse("profile email").unwrap();
    MemoryStore::builder()
        .client(Client::public("demo-device", scopes.clone()).with_name("Demo device"))
        .client(Client::confidential(
            "demo-confidential",
            "demo-secret",
            scopes.clone(),
        ))
        .client(Client::public("dpop-only", scopes).with_dpop(DpopPolicy::Required))
        .build()
}

fn json_response(status: StatusCode, value: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res
}

async fn start_with<S: Store>(
    store: S,
    configure: impl FnOnce(DeviceFlowBuilder<S>) -> DeviceFlowBuilder<S>,
) -> Server {
    let (listener, base) = bind().await;
    let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
    let builder = DeviceFlow::builder(store)
        .issuer(base.clone())
        .clock(clock.clone())
        .end_user(BasicLogin::users("device", USERS))
        .interval(Duration::ZERO);
    serve_flow(configure(builder).build(), listener);
    Server {
        base,
        clock,
        http: Http::default(),
    }
}

/// The demo's routes in front of `flow`'s endpoints.
fn serve_flow<S: Store>(flow: DeviceFlow<S>, listener: tokio::net::TcpListener) {
    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let t = req.extensions().get::<TokenInfo>().cloned();
            let body = t.map_or(
                json!({}),
                |t| json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()}),
            );
            Ok::<_, Infallible>(json_response(StatusCode::OK, body))
        }));
    let email =
        flow.require_oauth("email")
            .layer(service_fn(|req: Request<Incoming>| async move {
                let t = req.extensions().get::<TokenInfo>().cloned();
                let body = t.map_or(json!({}), |t| json!({"sub": t.subject.as_str()}));
                Ok::<_, Infallible>(json_response(StatusCode::OK, body))
            }));
    let api = service_fn(move |req: Request<Incoming>| {
        let (me, email) = (me.clone(), email.clone());
        async move {
            Ok::<_, Infallible>(match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/email" => email.oneshot(req).await?.map(Either::Left),
                "/api/public" => {
                    json_response(StatusCode::OK, json!({"ok": true})).map(Either::Right)
                }
                _ => json_response(StatusCode::NOT_FOUND, json!({})).map(Either::Right),
            })
        }
    });
    serve_hyper(listener, flow.endpoints_layer().layer(api));
}

async fn start() -> Server {
    start_with(demo_store(), |b| b).await
}

impl Server {
    fn now_secs(&self) -> u64 {
        START_MILLIS / 1000 + self.clock_offset_secs()
    }

    fn clock_offset_secs(&self) -> u64 {
        use tower_device_flow::Clock;
        self.clock.now().as_unix_millis() / 1000 - START_MILLIS / 1000
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A fresh, valid proof for `htm` `path` (with `ath` of `token`, if any).
    fn proof(&self, key: &Key, htm: &str, path: &str, token: Option<&str>) -> String {
        let mut c = claims(htm, &self.url(path), self.now_secs());
        if let Some(t) = token {
            c["ath"] = ath(t).into();
        }
        key.jws(&key.header(), &c)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = serde_urlencoded::to_string(form).unwrap();
        self.http.send(req.body(Full::from(body)).unwrap()).await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.http.send(req.body(Full::default()).unwrap()).await
    }

    /// A device code for `client_id`, approved by alice.
    async fn approved_code(&self, client_id: &str, basic: Option<(&str, &str)>) -> String {
        let res = self
            .http
            .post_form(
                &self.url("/oauth/device_authorization"),
                &[("client_id", client_id), ("scope", "profile email")],
                basic,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let codes = res.json();
        let res = self
            .http
            .post_form(
                &self.url("/device"),
                &[
                    ("user_code", codes["user_code"].as_str().unwrap()),
                    ("decision", "approve"),
                ],
                Some(ALICE),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        codes["device_code"].as_str().unwrap().to_owned()
    }

    /// A device-code poll of the public client with the given `DPoP` headers.
    async fn poll(&self, device_code: &str, client_id: &str, dpop: &[&str]) -> Reply {
        let headers: Vec<(&str, &str)> = dpop.iter().map(|p| ("dpop", *p)).collect();
        self.post(
            "/oauth/token",
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
            &headers,
        )
        .await
    }

    /// Tokens of the public client, bound to `key` (or bearer tokens without one).
    async fn tokens(&self, key: Option<&Key>) -> Value {
        let code = self.approved_code("demo-device", None).await;
        let proof = key.map(|k| self.proof(k, "POST", "/oauth/token", None));
        let proofs: Vec<&str> = proof.iter().map(String::as_str).collect();
        let res = self.poll(&code, "demo-device", &proofs).await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }

    async fn refresh(&self, refresh_token: &str, proof: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = proof.iter().map(|p| ("dpop", *p)).collect();
        self.post(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", "demo-device"),
            ],
            &headers,
        )
        .await
    }

    /// `GET path` with `Authorization: DPoP token` and `proof`.
    async fn dpop_get(&self, path: &str, token: &str, proof: &str) -> Reply {
        let auth = format!("DPoP {token}");
        self.get(path, &[("authorization", &auth), ("dpop", proof)])
            .await
    }

    async fn introspect(&self, token: &str) -> Value {
        let res = self
            .http
            .post_form(
                &self.url("/oauth/introspect"),
                &[("token", token)],
                Some(("demo-confidential", "demo-secret")),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }
}

fn error_of(res: &Reply) -> String {
    res.json()["error"].as_str().unwrap_or("").to_owned()
}

fn challenges(res: &Reply) -> Vec<String> {
    res.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const ALGS: &str = "algs=\"ES256 EdDSA ES384 PS256 PS384 PS512 RS256 RS384 RS512\"";

/// A 401 from the resource with the DPoP challenge carrying `error`.
fn assert_dpop_refusal(res: &Reply, error: &str, what: &str) {
    assert_eq!(res.status, 401, "{what}: {}", res.text());
    assert_eq!(error_of(res), error, "{what}: {}", res.text());
    let c = challenges(res);
    assert_eq!(
        c,
        [format!("DPoP realm=\"api\", error=\"{error}\", {ALGS}")],
        "{what}"
    );
}

// ---------------------------------------------------------------------------------------------
// Happy paths.

async fn bound_tokens_end_to_end(key: Key) {
    let srv = start().await;
    let tokens = srv.tokens(Some(&key)).await;
    assert_eq!(tokens["token_type"], "DPoP");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // RFC 9449 6.2: introspection shows the binding.
    let info = srv.introspect(access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "DPoP");
    assert_eq!(info["cnf"]["jkt"], key.thumbprint());
    let info = srv.introspect(refresh).await;
    assert_eq!(
        info["cnf"]["jkt"],
        key.thumbprint(),
        "a public client's refresh token is bound"
    );

    // The resource, with the DPoP scheme and a proof for this very request.
    let proof = srv.proof(&key, "GET", "/api/me", Some(access));
    let res = srv.dpop_get("/api/me", access, &proof).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["sub"], "alice");

    // The same token as a bearer token is refused (RFC 9449 7.2), with both challenges.
    let res = srv.http.get(&srv.url("/api/me"), Some(access)).await;
    assert_eq!(res.status, 401);
    assert_eq!(error_of(&res), "invalid_token");
    assert_eq!(
        challenges(&res),
        [
            "Bearer realm=\"api\", error=\"invalid_token\"".to_owned(),
            format!("DPoP realm=\"api\", {ALGS}")
        ]
    );

    // Refreshing needs a proof of the same key (RFC 9449 5).
    let res = srv.refresh(refresh, None).await;
    assert_eq!(
        (res.status.as_u16(), error_of(&res).as_str()),
        (400, "invalid_dpop_proof")
    );
    let other = Key::es256();
    let res = srv
        .refresh(
            refresh,
            Some(&srv.proof(&other, "POST", "/oauth/token", None)),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), error_of(&res).as_str()),
        (400, "invalid_dpop_proof")
    );
    let res = srv
        .refresh(
            refresh,
            Some(&srv.proof(&key, "POST", "/oauth/token", None)),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let next = res.json();
    assert_eq!(next["token_type"], "DPoP");
    let access = next["access_token"].as_str().unwrap();
    let proof = srv.proof(&key, "GET", "/api/me", Some(access));
    assert_eq!(srv.dpop_get("/api/me", access, &proof).await.status, 200);
}

#[tokio::test]
async fn es256_bound_tokens_end_to_end() {
    bound_tokens_end_to_end(Key::es256()).await;
}

#[tokio::test]
async fn eddsa_bound_tokens_end_to_end() {
    bound_tokens_end_to_end(Key::ed25519()).await;
}

#[tokio::test]
async fn requests_without_dpop_work_as_before() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let info = srv.introspect(access).await;
    assert_eq!(info["token_type"], "Bearer");
    assert!(info.get("cnf").is_none());
    let res = srv.http.get(&srv.url("/api/me"), Some(access)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // A bearer token sent with the DPoP scheme has no key to confirm.
    let key = Key::es256();
    let proof = srv.proof(&key, "GET", "/api/me", Some(access));
    let res = srv.dpop_get("/api/me", access, &proof).await;
    assert_dpop_refusal(&res, "invalid_token", "unbound token as DPoP");
    // No credentials: both challenges, without error (RFC 9449 figure 17).
    let res = srv.get("/api/me", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        challenges(&res),
        [
            "Bearer realm=\"api\"".to_owned(),
            format!("DPoP realm=\"api\", {ALGS}")
        ]
    );
    assert_eq!(srv.get("/api/public", &[]).await.status, 200);
}

#[tokio::test]
async fn metadata_lists_the_proof_algorithms() {
    let srv = start().await;
    let res = srv
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(
        res.json()["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "ES384", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"])
    );
    let srv = start_with(demo_store(), |b| b.dpop(None)).await;
    let res = srv
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert!(res
        .json()
        .get("dpop_signing_alg_values_supported")
        .is_none());
}

#[tokio::test]
async fn a_public_client_refreshing_with_a_proof_binds_its_refresh_token() {
    let srv = start().await;
    let tokens = srv.tokens(None).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let key = Key::ed25519();
    let res = srv
        .refresh(
            refresh,
            Some(&srv.proof(&key, "POST", "/oauth/token", None)),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["token_type"], "DPoP");
    let rotated = res.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        srv.introspect(&rotated).await["cnf"]["jkt"],
        key.thumbprint()
    );
    let res = srv.refresh(&rotated, None).await;
    assert_eq!(error_of(&res), "invalid_dpop_proof");
}

#[tokio::test]
async fn a_confidential_clients_refresh_token_is_not_bound() {
    let srv = start().await;
    let creds = ("demo-confidential", "demo-secret");
    let code = srv.approved_code("demo-confidential", Some(creds)).await;
    let key = Key::es256();
    let proof = srv.proof(&key, "POST", "/oauth/token", None);
    let auth = basic_auth(creds);
    let res = srv
        .post(
            "/oauth/token",
            &[("grant_type", DEVICE_CODE_GRANT), ("device_code", &code)],
            &[("authorization", auth.to_str().unwrap()), ("dpop", &proof)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let tokens = res.json();
    assert_eq!(tokens["token_type"], "DPoP");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(srv.introspect(access).await["cnf"]["jkt"], key.thumbprint());
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(srv.introspect(refresh).await.get("cnf").is_none());
    // RFC 9449 5: bound to the client's credentials, not a key; without a proof, bearer tokens.
    let res = srv
        .post(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            &[("authorization", auth.to_str().unwrap())],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["token_type"], "Bearer");
}

#[tokio::test]
async fn a_client_that_requires_dpop_gets_nothing_without_a_proof() {
    let srv = start().await;
    let code = srv.approved_code("dpop-only", None).await;
    let res = srv.poll(&code, "dpop-only", &[]).await;
    assert_eq!(
        (res.status.as_u16(), error_of(&res).as_str()),
        (400, "invalid_dpop_proof")
    );
    let key = Key::es256();
    let proof = srv.proof(&key, "POST", "/oauth/token", None);
    let res = srv.poll(&code, "dpop-only", &[&proof]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["token_type"], "DPoP");
}

// ---------------------------------------------------------------------------------------------
// Every refusal.

/// Proofs for `GET /api/me` with `token` that are wrong in one way each, and the error the
/// resource answers. The token endpoint refuses the same defects (`token_endpoint_refusals`).
fn bad_resource_proofs(
    srv: &Server,
    key: &Key,
    token: &str,
) -> Vec<(&'static str, String, &'static str)> {
    let now = srv.now_secs();
    let url = srv.url("/api/me");
    let good = || {
        let mut c = claims("GET", &url, now);
        c["ath"] = ath(token).into();
        c
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good();
        f(&mut c);
        key.jws(&key.header(), &c)
    };
    let header_with = |f: &dyn Fn(&mut Value)| {
        let mut h = key.header();
        f(&mut h);
        key.jws(&h, &good())
    };
    let other = Key::es256();
    let mut private_jwk = key.jwk();
    private_jwk["d"] = URL_SAFE_NO_PAD.encode([1u8; 32]).into();
    let unsigned = {
        let h = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(good().to_string())
        )
    };
    let hs256 = {
        use hmac::{Hmac, Mac};
        let h = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    vec![
        (
            "wrong htm",
            with(&|c| c["htm"] = "POST".into()),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu path",
            with(&|c| c["htu"] = srv.url("/api/email").into()),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu host",
            with(&|c| c["htu"] = "http://evil.example/api/me".into()),
            "invalid_dpop_proof",
        ),
        (
            "stale iat",
            with(&|c| c["iat"] = (now - 61).into()),
            "invalid_dpop_proof",
        ),
        (
            "future iat",
            with(&|c| c["iat"] = (now + 61).into()),
            "invalid_dpop_proof",
        ),
        (
            "wrong ath",
            with(&|c| c["ath"] = ath("another token").into()),
            "invalid_dpop_proof",
        ),
        (
            "no ath",
            with(&|c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
            "invalid_dpop_proof",
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            "invalid_dpop_proof",
        ),
        (
            "typ JWT",
            header_with(&|h| h["typ"] = "JWT".into()),
            "invalid_dpop_proof",
        ),
        (
            "jwk with private key",
            header_with(&|h| h["jwk"] = private_jwk.clone()),
            "invalid_dpop_proof",
        ),
        (
            "jwk of another key",
            header_with(&|h| h["jwk"] = other.jwk()),
            "invalid_dpop_proof",
        ),
        ("alg none", unsigned, "invalid_dpop_proof"),
        ("alg HS256", hs256, "invalid_dpop_proof"),
        ("not a JWT", "garbage".to_owned(), "invalid_dpop_proof"),
        // A valid proof of another key: the token's binding fails (RFC 9449 figure 16).
        (
            "signed by another key",
            {
                let mut c = good();
                c["jti"] = random_jti().into();
                other.jws(&other.header(), &c)
            },
            "invalid_token",
        ),
    ]
}

#[tokio::test]
async fn the_resource_refuses_every_bad_proof() {
    for key in [Key::es256(), Key::ed25519()] {
        let srv = start().await;
        let tokens = srv.tokens(Some(&key)).await;
        let access = tokens["access_token"].as_str().unwrap();
        for (what, proof, error) in bad_resource_proofs(&srv, &key, access) {
            let res = srv.dpop_get("/api/me", access, &proof).await;
            assert_dpop_refusal(&res, error, what);
        }
        // A DPoP request without a proof, and with two.
        let auth = format!("DPoP {access}");
        let res = srv.get("/api/me", &[("authorization", &auth)]).await;
        assert_dpop_refusal(&res, "invalid_dpop_proof", "no proof");
        let p1 = srv.proof(&key, "GET", "/api/me", Some(access));
        let p2 = srv.proof(&key, "GET", "/api/me", Some(access));
        let res = srv
            .get(
                "/api/me",
                &[("authorization", &auth), ("dpop", &p1), ("dpop", &p2)],
            )
            .await;
        assert_dpop_refusal(&res, "invalid_dpop_proof", "two proofs");
        // After all that, a good proof still works: no refusal spent the token.
        let proof = srv.proof(&key, "GET", "/api/me", Some(access));
        assert_eq!(srv.dpop_get("/api/me", access, &proof).await.status, 200);
    }
}

#[tokio::test]
async fn a_proof_is_accepted_once() {
    let srv = start().await;
    let key = Key::es256();
    let tokens = srv.tokens(Some(&key)).await;
    let access = tokens["access_token"].as_str().unwrap();
    let proof = srv.proof(&key, "GET", "/api/me", Some(access));
    assert_eq!(srv.dpop_get("/api/me", access, &proof).await.status, 200);
    let res = srv.dpop_get("/api/me", access, &proof).await;
    assert_dpop_refusal(&res, "invalid_dpop_proof", "replayed jti");
    // Still refused near the end of its window, and stale after it.
    srv.clock.advance(Duration::from_secs(59));
    assert_dpop_refusal(
        &srv.dpop_get("/api/me", access, &proof).await,
        "invalid_dpop_proof",
        "replay at 59 s",
    );
    srv.clock.advance(Duration::from_secs(2));
    assert_dpop_refusal(
        &srv.dpop_get("/api/me", access, &proof).await,
        "invalid_dpop_proof",
        "stale",
    );
}

#[tokio::test]
async fn instances_sharing_a_store_refuse_each_others_proofs() {
    // Two servers on one store: a proof accepted by one is a replay at the other.
    let store = Arc::new(demo_store());
    let a = start_with(store.clone(), |b| b).await;
    let (listener, _) = bind().await;
    // The second instance serves under the first one's issuer (as behind one load balancer).
    let b_base = format!("http://{}", listener.local_addr().unwrap());
    let flow = DeviceFlow::builder(store)
        .issuer(a.base.clone())
        .clock(a.clock.clone())
        .end_user(BasicLogin::users("device", USERS))
        .build();
    serve_flow(flow, listener);
    let key = Key::ed25519();
    let tokens = a.tokens(Some(&key)).await;
    let access = tokens["access_token"].as_str().unwrap();
    let proof = a.proof(&key, "GET", "/api/me", Some(access));
    assert_eq!(a.dpop_get("/api/me", access, &proof).await.status, 200);
    let auth = format!("DPoP {access}");
    let res = a
        .http
        .send(
            Request::get(format!("{b_base}/api/me"))
                .header("authorization", &auth)
                .header("dpop", &proof)
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_dpop_refusal(&res, "invalid_dpop_proof", "replayed at another instance");
    // A fresh proof is fine there.
    let fresh = a.proof(&key, "GET", "/api/me", Some(access));
    let res = a
        .http
        .send(
            Request::get(format!("{b_base}/api/me"))
                .header("authorization", &auth)
                .header("dpop", &fresh)
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn the_token_endpoint_refuses_every_bad_proof() {
    let srv = start().await;
    let key = Key::es256();
    let code = srv.approved_code("demo-device", None).await;
    let now = srv.now_secs();
    let url = srv.url("/oauth/token");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("POST", &url, now);
        f(&mut c);
        key.jws(&key.header(), &c)
    };
    let other = Key::ed25519();
    let cases = [
        ("wrong htm", with(&|c| c["htm"] = "GET".into())),
        (
            "wrong htu",
            with(&|c| c["htu"] = srv.url("/oauth/revoke").into()),
        ),
        ("stale iat", with(&|c| c["iat"] = (now - 120).into())),
        ("jwk of another key", {
            let mut h = key.header();
            h["jwk"] = other.jwk();
            key.jws(&h, &claims("POST", &url, now))
        }),
        ("alg none", {
            let h = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()});
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(h.to_string()),
                URL_SAFE_NO_PAD.encode(claims("POST", &url, now).to_string())
            )
        }),
    ];
    for (what, proof) in &cases {
        let res = srv.poll(&code, "demo-device", &[proof]).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text());
        assert_eq!(error_of(&res), "invalid_dpop_proof", "{what}");
    }
    let p = srv.proof(&key, "POST", "/oauth/token", None);
    let res = srv.poll(&code, "demo-device", &[&p, &p]).await;
    assert_eq!(error_of(&res), "invalid_dpop_proof", "two DPoP headers");
    // None of that spent the device code; a good proof redeems it, once.
    let proof = srv.proof(&key, "POST", "/oauth/token", None);
    let res = srv.poll(&code, "demo-device", &[&proof]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let refresh = res.json()["refresh_token"].as_str().unwrap().to_owned();
    // The same proof again: a replay, refused before the grant is looked at.
    let res = srv.refresh(&refresh, Some(&proof)).await;
    assert_eq!(
        (res.status.as_u16(), error_of(&res).as_str()),
        (400, "invalid_dpop_proof")
    );
    let res = srv
        .refresh(
            &refresh,
            Some(&srv.proof(&key, "POST", "/oauth/token", None)),
        )
        .await;
    assert_eq!(
        res.status,
        200,
        "the replay revoked nothing: {}",
        res.text()
    );
}

#[tokio::test]
async fn grpc_requests_get_grpc_statuses() {
    let srv = start().await;
    let key = Key::es256();
    let tokens = srv.tokens(Some(&key)).await;
    let access = tokens["access_token"].as_str().unwrap();
    let auth = format!("DPoP {access}");
    let stale = {
        let mut c = claims("GET", &srv.url("/api/me"), srv.now_secs() - 3600);
        c["ath"] = ath(access).into();
        key.jws(&key.header(), &c)
    };
    let res = srv
        .get(
            "/api/me",
            &[
                ("authorization", &auth),
                ("dpop", &stale),
                ("content-type", "application/grpc"),
            ],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("grpc-status"), "16");
    assert!(res.header("www-authenticate").starts_with("DPoP "));
    assert!(res.header("grpc-message").contains("iat"));
}

// ---------------------------------------------------------------------------------------------
// Nonces (RFC 9449 8, 9).

#[tokio::test]
async fn nonces_when_configured() {
    let nonces = DpopNonces::new(b"deployment secret", Duration::from_secs(300));
    let srv = start_with(demo_store(), |b| {
        b.dpop(Some(DpopConfig::default().nonces(Some(nonces))))
    })
    .await;
    let key = Key::ed25519();
    let code = srv.approved_code("demo-device", None).await;
    let url = srv.url("/oauth/token");

    // Without a nonce: 400 use_dpop_nonce with one to use.
    let proof = srv.proof(&key, "POST", "/oauth/token", None);
    let res = srv.poll(&code, "demo-device", &[&proof]).await;
    assert_eq!(
        (res.status.as_u16(), error_of(&res).as_str()),
        (400, "use_dpop_nonce")
    );
    let nonce = res.header("dpop-nonce").to_owned();
    assert!(!nonce.is_empty());
    // A made-up nonce: the same.
    let mut c = claims("POST", &url, srv.now_secs());
    c["nonce"] = "made-up".into();
    let res = srv
        .poll(&code, "demo-device", &[&key.jws(&key.header(), &c)])
        .await;
    assert_eq!(error_of(&res), "use_dpop_nonce");
    // With it: tokens, and the nonce to use next.
    let mut c = claims("POST", &url, srv.now_secs());
    c["nonce"] = nonce.clone().into();
    let res = srv
        .poll(&code, "demo-device", &[&key.jws(&key.header(), &c)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!res.header("dpop-nonce").is_empty());
    let access = res.json()["access_token"].as_str().unwrap().to_owned();

    // The resource: 401 use_dpop_nonce with a DPoP-Nonce, then accepted with it.
    let proof = srv.proof(&key, "GET", "/api/me", Some(&access));
    let res = srv.dpop_get("/api/me", &access, &proof).await;
    assert_dpop_refusal(&res, "use_dpop_nonce", "no nonce at the resource");
    let nonce = res.header("dpop-nonce").to_owned();
    let mut c = claims("GET", &srv.url("/api/me"), srv.now_secs());
    c["ath"] = ath(&access).into();
    c["nonce"] = nonce.into();
    let res = srv
        .dpop_get("/api/me", &access, &key.jws(&key.header(), &c))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    // Ten minutes on, that nonce has expired.
    srv.clock.advance(Duration::from_secs(600));
    c["iat"] = srv.now_secs().into();
    c["jti"] = random_jti().into();
    let res = srv
        .dpop_get("/api/me", &access, &key.jws(&key.header(), &c))
        .await;
    assert_dpop_refusal(&res, "use_dpop_nonce", "expired nonce");
}

// ---------------------------------------------------------------------------------------------
// gRPC over tonic (the tonic example's server): the same verdicts as gRPC statuses.

// The example needs feature `tonic` (one guard per gRPC service).
#[cfg(feature = "tonic")]
#[allow(dead_code)] // its `main` is not used here
#[path = "../examples/tonic.rs"]
mod tonic_example;

/// `WhoAmI` with the given `authorization` and `dpop` metadata.
#[cfg(feature = "tonic")]
async fn who_am_i(
    channel: tonic::transport::Channel,
    metadata: &[(&'static str, String)],
) -> Result<tonic_example::pb::WhoAmIReply, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(tonic_example::pb::WhoAmIRequest {});
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("metadata value"));
    }
    let path = http::uri::PathAndQuery::from_static(tonic_example::WHO_AM_I);
    grpc.unary(request, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn tonic_clients_use_dpop_bound_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let flow = tonic_example::demo_flow(&base, Duration::ZERO);
    tokio::spawn(tonic_example::serve(flow, listener));
    let channel = tonic::transport::Channel::from_shared(base.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let srv = Server {
        base: base.clone(),
        clock: ManualClock::new(Timestamp::from_unix_millis(0)),
        http: Http::default(),
    };
    let key = Key::ed25519();
    let code = srv.approved_code("demo-device", None).await;
    // The example runs on the system clock: proofs made now.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let proof = key.jws(
        &key.header(),
        &claims("POST", &srv.url("/oauth/token"), now()),
    );
    let res = srv.poll(&code, "demo-device", &[&proof]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let access = res.json()["access_token"].as_str().unwrap().to_owned();
    let grpc_proof = |iat: u64| {
        // gRPC calls are POSTs to the method's path.
        let mut c = claims("POST", &srv.url(tonic_example::WHO_AM_I), iat);
        c["ath"] = ath(&access).into();
        key.jws(&key.header(), &c)
    };
    let reply = who_am_i(
        channel.clone(),
        &[
            ("authorization", format!("DPoP {access}")),
            ("dpop", grpc_proof(now())),
        ],
    )
    .await
    .expect("a DPoP-bound token with its proof");
    assert_eq!(reply.subject, "alice");
    // As a bearer token: refused.
    let status = who_am_i(
        channel.clone(),
        &[("authorization", format!("Bearer {access}"))],
    )
    .await
    .expect_err("a bound token as Bearer");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // A stale proof: refused, with the DPoP challenge in the metadata.
    let status = who_am_i(
        channel,
        &[
            ("authorization", format!("DPoP {access}")),
            ("dpop", grpc_proof(now() - 3600)),
        ],
    )
    .await
    .expect_err("a stale proof");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let challenge = status
        .metadata()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("invalid_dpop_proof"),
        "{challenge}"
    );
}

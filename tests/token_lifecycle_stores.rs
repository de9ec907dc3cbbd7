//! The token lifecycle over real sockets, on every store: theft detection, connected devices,
//! revocation that reaches every token, and the account check.
//!
//! Each scenario is written once, generically over the store, and runs on `MemoryStore`
//! always and on `RedisStore` when `REDIS_URL` is set (built with `--features redis`):
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo test --features redis --test token_lifecycle_stores
//! ```
//!
//! Without `REDIS_URL` each Redis scenario says loudly that it did not run, and fails when `CI`
//! is set. Every server runs on a `ManualClock` (started at the real time, since Redis expires
//! keys by its own clock); no test sleeps.
//!
//! - a replayed refresh token (rotated away, past the grace period, or replaced by a retry)
//!   revokes the whole family: the live refresh token and the access token stop working;
//! - 48 racing refreshes of one token plus a replay leave no live token behind the revoked
//!   grant;
//! - an end user lists their devices and signs one, or all, out; another user's grant is 404
//!   and untouched; without credentials 401, cross-site 403;
//! - the connected-devices page escapes every field, and carries the verification page's
//!   protective headers;
//! - a subject the application refuses gets `invalid_grant` at redemption and at refresh, and
//!   loses every grant; a failing check is 503 and revokes nothing.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{basic, form, Resp};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_device_flow::verification::SignIn;
use tower_device_flow::{
    AccessToken, BasicLogin, Client, Clock, DeviceFlow, DeviceFlowBuilder, GrantId, ManualClock,
    RefreshToken, Scope, Store, StoreError, Subject, SystemClock, TokenInfo,
};

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const DEVICE: &str = "demo-device";
const CONFIDENTIAL: &str = "demo-confidential";
const SECRET: &str = "demo-secret";
const DEVICES: &str = "/account/devices";
const REVOKE: &str = "/account/devices/revoke";
const RACERS: usize = 48;
/// A client whose every field is markup, and its scope.
const HOSTILE: &str = "<script>alert(\"id\")</script>'&";
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)> & \"TV\"";
const HOSTILE_SCOPE: &str = "<b>&'x";
/// An end user whose name is markup (the login accepts any user with password `{user}-pw`).
const HOSTILE_USER: &str = "<svg onload=alert('u')>";

/// The clients every store under test registers.
fn clients() -> Vec<Client> {
    let scopes = Scope::parse("profile email").unwrap();
    vec![
        Client::public(DEVICE, scopes.clone()).with_name("Demo device"),
        Client::confidential(CONFIDENTIAL, SECRET, scopes).with_name("Demo confidential client"),
        Client::public(HOSTILE, Scope::parse(HOSTILE_SCOPE).unwrap()).with_name(HOSTILE_NAME),
    ]
}

fn credentials(user: &str) -> String {
    basic(user, &format!("{user}-pw"))
}

/// The application's record of disabled accounts, and whether its database answers at all.
#[derive(Clone, Default)]
struct Accounts {
    disabled: Arc<Mutex<HashSet<String>>>,
    down: Arc<Mutex<bool>>,
    asked: Arc<AtomicUsize>,
    /// `Some(n)`: answer "active" n more times, then "disabled" (an account disabled at a
    /// precise moment).
    active_for: Arc<Mutex<Option<usize>>>,
}

impl Accounts {
    fn disable(&self, user: &str) {
        self.disabled.lock().unwrap().insert(user.to_owned());
    }
    fn enable(&self, user: &str) {
        self.disabled.lock().unwrap().remove(user);
    }
    fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }
    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// A running server on some store.
struct Server<S> {
    addr: SocketAddr,
    clock: ManualClock,
    flow: DeviceFlow<S>,
    accounts: Accounts,
    task: JoinHandle<()>,
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn json_ok(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let sub = req
        .extensions()
        .get::<TokenInfo>()
        .map(|t| t.subject.to_string())
        .unwrap_or_default();
    Ok(Response::new(Full::from(
        serde_json::json!({ "sub": sub }).to_string(),
    )))
}

/// Serves the whole flow on `store`; `configure` adjusts the builder.
async fn serve<S: Store + Clone>(
    store: S,
    configure: impl FnOnce(DeviceFlowBuilder<S>, &Accounts) -> DeviceFlowBuilder<S>,
) -> Server<S> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let accounts = Accounts::default();
    let builder = DeviceFlow::builder(store)
        .issuer(format!("http://{addr}"))
        .clock(clock.clone())
        .end_user(BasicLogin::new("device", |user: &str, password: &str| {
            password == format!("{user}-pw")
        }));
    let flow = configure(builder, &accounts).build();
    let app = flow
        .endpoints_layer()
        .layer(flow.require_oauth("profile").layer(service_fn(json_ok)));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server {
        addr,
        clock,
        flow,
        accounts,
        task,
    }
}

/// The account check of [`Accounts`], as the application would configure it.
fn with_account_status<S: Store>(
    b: DeviceFlowBuilder<S>,
    accounts: &Accounts,
) -> DeviceFlowBuilder<S> {
    let accounts = accounts.clone();
    b.account_status(move |subject: Subject| {
        let accounts = accounts.clone();
        async move {
            accounts.asked.fetch_add(1, Ordering::SeqCst);
            if *accounts.down.lock().unwrap() {
                return Err(StoreError::Unavailable("user database down".into()));
            }
            if let Some(left) = accounts.active_for.lock().unwrap().as_mut() {
                if *left == 0 {
                    return Ok(false);
                }
                *left -= 1;
            }
            Ok(!accounts.disabled.lock().unwrap().contains(subject.as_str()))
        }
    })
}

/// A token pair.
#[derive(Clone, Debug)]
struct Pair {
    access: String,
    refresh: String,
}

fn pair_of(res: &Resp) -> Pair {
    res.assert_status(200);
    let json = res.json();
    Pair {
        access: json["access_token"].as_str().unwrap().to_owned(),
        refresh: json["refresh_token"].as_str().unwrap().to_owned(),
    }
}

fn grant_id_of(pair: &Pair) -> GrantId {
    RefreshToken::new(pair.refresh.as_str())
        .family()
        .expect("a refresh token names its grant")
        .grant_id()
}

fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body.into()))
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    req
}

impl<S: Store> Server<S> {
    fn advance_secs(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn now_secs(&self) -> u64 {
        self.clock.now().as_unix_secs()
    }

    async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn send(&self, mut req: Request<Full<Bytes>>) -> Resp {
        let host = HeaderValue::from_str(&self.addr.to_string()).unwrap();
        req.headers_mut().entry(header::HOST).or_insert(host);
        let res = self.connect().await.send_request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn post(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Resp {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(request(Method::POST, path, &all, body)).await
    }

    /// Authorizes `client`, has `user` approve, redeems: the first pair.
    async fn sign_in_device(&self, client: &str, scope: &str, user: &str) -> Pair {
        let res = self
            .post(
                "/oauth/device_authorization",
                form(&[("client_id", client), ("scope", scope)]),
                &[],
            )
            .await;
        res.assert_status(200);
        let json = res.json();
        let device_code = json["device_code"].as_str().unwrap().to_owned();
        let user_code = json["user_code"].as_str().unwrap().to_owned();
        self.approve(user, &user_code).await;
        pair_of(&self.poll(client, &device_code).await)
    }

    async fn approve(&self, user: &str, user_code: &str) {
        let res = self
            .post(
                "/device",
                form(&[("user_code", user_code), ("decision", "approve")]),
                &[("authorization", &credentials(user))],
            )
            .await;
        res.assert_status(200);
    }

    async fn poll(&self, client: &str, device_code: &str) -> Resp {
        let body = form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
            ("client_id", client),
        ]);
        self.post("/oauth/token", body, &[]).await
    }

    /// A device of `user` on the demo's public client.
    async fn device_of(&self, user: &str) -> Pair {
        self.sign_in_device(DEVICE, "profile email", user).await
    }

    fn refresh_request(&self, refresh_token: &str) -> Request<Full<Bytes>> {
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", DEVICE),
        ]);
        request(
            Method::POST,
            "/oauth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
    }

    async fn refresh(&self, refresh_token: &str) -> Resp {
        self.send(self.refresh_request(refresh_token)).await
    }

    async fn me(&self, access_token: &str) -> StatusCode {
        let bearer = format!("Bearer {access_token}");
        self.send(request(
            Method::GET,
            "/api/me",
            &[("authorization", &bearer)],
            Bytes::new(),
        ))
        .await
        .status
    }

    async fn introspect(&self, token: &str) -> bool {
        let res = self
            .post(
                "/oauth/introspect",
                form(&[("token", token)]),
                &[("authorization", &basic(CONFIDENTIAL, SECRET))],
            )
            .await;
        res.assert_status(200);
        res.json()["active"].as_bool().unwrap()
    }

    /// Asserts that nothing of `pair` works any more: not at the API, not at the token
    /// endpoint, not in introspection, not in the store.
    async fn assert_dead(&self, pair: &Pair, what: &str) {
        assert_eq!(self.me(&pair.access).await, 401, "{what}: access token");
        self.refresh(&pair.refresh)
            .await
            .assert_oauth_error(400, "invalid_grant");
        assert!(
            !self.introspect(&pair.access).await,
            "{what}: access active"
        );
        assert!(
            !self.introspect(&pair.refresh).await,
            "{what}: refresh active"
        );
        let digest = AccessToken::new(pair.access.as_str()).digest();
        let stored = self
            .flow
            .store()
            .access_token(&digest, self.clock.now())
            .await;
        assert!(stored.unwrap().is_none(), "{what}: access token stored");
    }

    async fn assert_alive(&self, pair: &Pair, what: &str) {
        assert_eq!(self.me(&pair.access).await, 200, "{what}: access token");
        assert!(
            self.introspect(&pair.refresh).await,
            "{what}: refresh token"
        );
    }

    /// `GET /account/devices` as `user`, with extra headers.
    async fn devices_as(&self, user: &str, headers: &[(&str, &str)]) -> Resp {
        let auth = credentials(user);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.send(request(Method::GET, DEVICES, &all, Bytes::new()))
            .await
    }

    /// The devices `user` sees, as JSON.
    async fn devices(&self, user: &str) -> Vec<Value> {
        let res = self.devices_as(user, &[]).await;
        res.assert_status(200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        res.json()["devices"].as_array().unwrap().clone()
    }

    async fn revoke_as(&self, user: &str, body: String, headers: &[(&str, &str)]) -> Resp {
        let auth = credentials(user);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.post(REVOKE, body, &all).await
    }

    async fn grants_of(&self, user: &str) -> usize {
        let now = self.clock.now();
        self.flow
            .store()
            .grants_of(&Subject::new(user), now)
            .await
            .unwrap()
            .len()
    }
}

// ---- the scenarios, once, for any store -------------------------------------------------

/// RFC 9700 4.14.2: a refresh token presented after its rotation, past the grace period, is
/// reuse: the whole family goes, the live refresh token and the access token with it.
async fn replay_past_grace_kills_the_family<S: Store>(srv: &Server<S>) {
    let first = srv.device_of("alice").await;
    let second = pair_of(&srv.refresh(&first.refresh).await);
    srv.assert_alive(&second, "after the rotation").await;
    srv.advance_secs(31);
    srv.refresh(&first.refresh)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.assert_dead(&second, "the family after a replay").await;
    srv.assert_dead(&first, "the replayed pair").await;
    assert_eq!(srv.grants_of("alice").await, 0);
}

/// Within the grace period the replaced token is a retry: a fresh pair, and the pair it
/// replaces is spent. That spent pair, or any older token, presented later is reuse.
async fn a_token_a_retry_replaced_is_reuse<S: Store>(srv: &Server<S>) {
    let first = srv.device_of("alice").await;
    let second = pair_of(&srv.refresh(&first.refresh).await);
    srv.advance_secs(5);
    // The device never saw `second`: it retries with `first`.
    let third = pair_of(&srv.refresh(&first.refresh).await);
    srv.assert_alive(&third, "the retry's pair").await;
    assert_eq!(
        srv.me(&second.access).await,
        401,
        "the replaced access token"
    );
    // Whoever holds `second` (it was sent somewhere) is now a thief.
    srv.refresh(&second.refresh)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.assert_dead(&third, "the family after reuse of a retried-away token")
        .await;

    // An older token than the superseded one is reuse even inside the grace period.
    let a = srv.device_of("bob").await;
    let b = pair_of(&srv.refresh(&a.refresh).await);
    let c = pair_of(&srv.refresh(&b.refresh).await);
    srv.refresh(&a.refresh)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.assert_dead(&c, "the family after reuse of a token rotated twice")
        .await;
    assert_eq!(srv.grants_of("bob").await, 0);
}

/// 48 refreshes of one token racing a replay of the token before it: whichever order they
/// land in, no token is live behind the revoked grant afterwards.
async fn racing_refreshes_and_a_replay_leave_no_live_token<S: Store>(srv: &Server<S>) {
    let first = srv.device_of("alice").await;
    let second = pair_of(&srv.refresh(&first.refresh).await);
    srv.advance_secs(31);
    let barrier = Arc::new(Barrier::new(RACERS + 1));
    let mut racers = Vec::new();
    for i in 0..=RACERS {
        let token = if i == RACERS {
            &first.refresh
        } else {
            &second.refresh
        };
        let mut req = srv.refresh_request(token);
        let host = HeaderValue::from_str(&srv.addr.to_string()).unwrap();
        req.headers_mut().insert(header::HOST, host);
        let mut sender = srv.connect().await;
        let barrier = barrier.clone();
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = sender.send_request(req).await.unwrap();
            let (parts, body) = res.into_parts();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes(),
            }
        }));
    }
    let mut issued = vec![first, second];
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.unwrap());
    }
    results[RACERS].assert_oauth_error(400, "invalid_grant");
    for res in &results[..RACERS] {
        match res.status.as_u16() {
            200 => issued.push(pair_of(res)),
            _ => res.assert_oauth_error(400, "invalid_grant"),
        }
    }
    for (i, pair) in issued.iter().enumerate() {
        srv.assert_dead(pair, &format!("pair {i} of {}", issued.len()))
            .await;
    }
    assert_eq!(srv.grants_of("alice").await, 0);
    assert!(srv.devices("alice").await.is_empty());
}

/// An end user lists exactly their own devices, with what the contract names, and signs one
/// out: every token of it stops working at once, and nothing else does. Another user's grant
/// is 404 and stays untouched.
async fn listing_and_revoking_per_subject<S: Store>(srv: &Server<S>) {
    let approved_at = srv.now_secs();
    let tv = srv.device_of("alice").await;
    let cli = srv.sign_in_device(CLI, "profile", "alice").await;
    let bobs = srv.device_of("bob").await;
    srv.advance_secs(100);
    let tv = pair_of(&srv.refresh(&tv.refresh).await);

    let listed = srv.devices("alice").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Most recently used first: the TV just refreshed.
    let (first, second) = (&listed[0], &listed[1]);
    let keys: HashSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "grant_id",
            "client_id",
            "client_name",
            "scope",
            "approved_at",
            "last_used_at"
        ])
    );
    assert_eq!(first["grant_id"], grant_id_of(&tv).to_string());
    assert_eq!(first["client_id"], DEVICE);
    assert_eq!(first["client_name"], "Demo device");
    assert_eq!(first["scope"], "email profile");
    assert_eq!(first["approved_at"], approved_at);
    assert_eq!(first["last_used_at"], approved_at + 100);
    assert_eq!(second["grant_id"], grant_id_of(&cli).to_string());
    assert_eq!(second["client_name"], "Example CLI");
    assert_eq!(second["scope"], "profile");
    assert_eq!(second["last_used_at"], approved_at);
    // The same, from code.
    let from_code = srv
        .flow
        .connected_devices_of(&Subject::new("alice"))
        .await
        .unwrap();
    assert_eq!(from_code.len(), 2);
    assert_eq!(from_code[0].grant_id, grant_id_of(&tv));
    assert_eq!(from_code[0].client_name.as_deref(), Some("Demo device"));

    let bobs_list = srv.devices("bob").await;
    assert_eq!(bobs_list.len(), 1);
    assert_eq!(bobs_list[0]["grant_id"], grant_id_of(&bobs).to_string());

    // Bob's grant, named by Alice: 404, and it lives on.
    let bobs_id = grant_id_of(&bobs).to_string();
    let res = srv
        .revoke_as("alice", form(&[("grant_id", &bobs_id)]), &[])
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert_eq!(res.error(), "invalid_grant");
    srv.assert_alive(&bobs, "bob's device after alice named it")
        .await;
    assert!(!srv
        .flow
        .revoke_device(&Subject::new("alice"), &grant_id_of(&bobs))
        .await
        .unwrap());
    srv.assert_alive(&bobs, "bob's device after alice named it in code")
        .await;
    // Unknown and malformed ids.
    let unknown = GrantId::from_bytes([7; 16]).to_string();
    let res = srv
        .revoke_as("alice", form(&[("grant_id", &unknown)]), &[])
        .await;
    assert_eq!(res.status, 404);
    for bad in ["", "xyz", &bobs_id[..31]] {
        let res = srv
            .revoke_as("alice", form(&[("grant_id", bad)]), &[])
            .await;
        assert_eq!(res.status, 400, "{bad:?}: {}", res.text());
        assert_eq!(res.error(), "invalid_request");
    }
    let res = srv.revoke_as("alice", String::new(), &[]).await;
    assert_eq!(res.status, 400);

    // Alice signs the TV out: its refresh and access tokens die at once; the CLI lives.
    let tv_id = grant_id_of(&tv).to_string();
    let res = srv
        .revoke_as("alice", form(&[("grant_id", &tv_id)]), &[])
        .await;
    res.assert_status(200);
    assert_eq!(res.json(), serde_json::json!({ "revoked": [tv_id] }));
    srv.assert_dead(&tv, "the signed-out TV").await;
    srv.assert_alive(&cli, "alice's other device").await;
    let listed = srv.devices("alice").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["grant_id"], grant_id_of(&cli).to_string());
    // Signed out twice: gone is gone.
    let res = srv
        .revoke_as("alice", form(&[("grant_id", &tv_id)]), &[])
        .await;
    assert_eq!(res.status, 404);

    // Everything else of Alice's, in one go; Bob keeps his.
    let another = srv.device_of("alice").await;
    let res = srv.revoke_as("alice", form(&[("all", "true")]), &[]).await;
    res.assert_status(200);
    let revoked: HashSet<String> = res.json()["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        revoked,
        HashSet::from([
            grant_id_of(&cli).to_string(),
            grant_id_of(&another).to_string()
        ])
    );
    srv.assert_dead(&cli, "alice's CLI after sign-out everywhere")
        .await;
    srv.assert_dead(&another, "alice's last device").await;
    assert!(srv.devices("alice").await.is_empty());
    srv.assert_alive(&bobs, "bob's device after alice signed out everywhere")
        .await;
    assert_eq!(
        srv.flow
            .revoke_all_devices(&Subject::new("bob"))
            .await
            .unwrap(),
        vec![grant_id_of(&bobs)]
    );
    srv.assert_dead(&bobs, "bob's device, signed out from code")
        .await;
}

/// A second public client, for an end user with two kinds of device.
const CLI: &str = "example-cli";

/// Who may use the service: a signed-in end user, from this site.
async fn only_the_signed_in_user_from_this_site<S: Store>(srv: &Server<S>) {
    let tv = srv.device_of("alice").await;
    let id = grant_id_of(&tv).to_string();
    // No credentials, or wrong ones: 401 with the resolver's challenge, nothing listed.
    for auth in [
        None,
        Some(basic("alice", "wrong")),
        Some("Bearer x".to_owned()),
    ] {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let res = srv
            .send(request(Method::GET, DEVICES, &headers, Bytes::new()))
            .await;
        assert_eq!(res.status, 401, "{auth:?}");
        assert_eq!(res.error(), "login_required");
        assert!(res.must_header("www-authenticate").starts_with("Basic"));
        assert!(!res.text().contains(&id));
        let mut post = headers.clone();
        post.push(("content-type", "application/x-www-form-urlencoded"));
        let res = srv
            .send(request(
                Method::POST,
                REVOKE,
                &post,
                form(&[("grant_id", &id)]),
            ))
            .await;
        assert_eq!(res.status, 401, "{auth:?}");
    }
    srv.assert_alive(&tv, "after unauthenticated attempts")
        .await;

    // Cross-site POSTs are refused before anything is read, however well signed in.
    let origin = format!("http://{}", srv.addr);
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://evil.example"),
        ],
    ] {
        let res = srv
            .revoke_as("alice", form(&[("grant_id", &id)]), &headers)
            .await;
        assert_eq!(res.status, 403, "{headers:?}");
        assert_eq!(res.error(), "access_denied");
    }
    srv.assert_alive(&tv, "after cross-site attempts").await;
    // Methods: each path its own.
    let res = srv
        .send(request(
            Method::GET,
            REVOKE,
            &[("authorization", &credentials("alice"))],
            Bytes::new(),
        ))
        .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("POST"));
    let res = srv.post(DEVICES, form(&[("grant_id", &id)]), &[]).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    srv.assert_alive(&tv, "after wrong methods").await;
    // A form that is not a form.
    let res = srv
        .send(request(
            Method::POST,
            REVOKE,
            &[
                ("authorization", &credentials("alice")),
                ("content-type", "application/json"),
            ],
            format!("{{\"grant_id\":\"{id}\"}}"),
        ))
        .await;
    assert_eq!(res.status, 415);
    // The browser's own same-origin POST goes through.
    let res = srv
        .revoke_as(
            "alice",
            form(&[("grant_id", &id)]),
            &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        )
        .await;
    res.assert_status(200);
    srv.assert_dead(&tv, "after the same-origin sign-out").await;
}

/// The page for people: HTML when `Accept` prefers it, every field escaped, the verification
/// page's protective headers; and the sign-out button posts back to the revoke path.
async fn the_page_escapes_every_field<S: Store>(srv: &Server<S>) {
    let pair = srv
        .sign_in_device(HOSTILE, HOSTILE_SCOPE, HOSTILE_USER)
        .await;
    let id = grant_id_of(&pair).to_string();
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let res = srv.devices_as(HOSTILE_USER, &[("accept", browser)]).await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("same-origin"));
    assert!(res
        .must_header("content-security-policy")
        .contains("frame-ancestors 'none'"));
    assert_eq!(res.header("vary"), Some("Accept"));
    let html = res.text();
    for raw in ["<script", "<img", "<svg", "<b>", "'&", "\"TV\""] {
        assert!(!html.contains(raw), "unescaped {raw:?} in {html}");
    }
    for escaped in [
        "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;&#39;&amp;",
        "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;TV&quot;",
        "&lt;b&gt;&amp;&#39;x",
        "&lt;svg onload=alert(&#39;u&#39;)&gt;",
    ] {
        assert!(html.contains(escaped), "missing {escaped:?} in {html}");
    }
    assert!(html.contains(&format!("action=\"{REVOKE}\"")), "{html}");
    assert!(
        html.contains(&format!("name=\"grant_id\" value=\"{id}\"")),
        "{html}"
    );

    // The JSON view carries the same values, as data.
    let listed = srv.devices(HOSTILE_USER).await;
    assert_eq!(listed[0]["client_id"], HOSTILE);
    assert_eq!(listed[0]["client_name"], HOSTILE_NAME);
    assert_eq!(listed[0]["scope"], HOSTILE_SCOPE);

    // The button's POST, as a browser sends it, answers with the page again.
    let origin = format!("http://{}", srv.addr);
    let res = srv
        .revoke_as(
            HOSTILE_USER,
            form(&[("grant_id", &id)]),
            &[("accept", browser), ("origin", &origin)],
        )
        .await;
    res.assert_status(200);
    let html = res.text();
    assert!(html.contains("signed out"), "{html}");
    assert!(!html.contains("<svg"), "{html}");
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert_eq!(srv.me(&pair.access).await, 401);
    // Problems are pages too, escaped, with the headers.
    let res = srv
        .send(request(
            Method::GET,
            DEVICES,
            &[("accept", "text/html")],
            Bytes::new(),
        ))
        .await;
    assert_eq!(res.status, 401);
    assert!(res.text().starts_with("<!doctype html>"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
}

/// The application refuses a subject: at refresh, `invalid_grant` and every grant of theirs
/// revoked; at redemption, `invalid_grant`, the code spent, no grant stored. A check that
/// cannot answer is 503 and revokes nothing. Other users are untouched.
async fn a_refused_subject_loses_every_grant<S: Store>(srv: &Server<S>) {
    let accounts = srv.accounts.clone();
    let tv = srv.device_of("alice").await;
    let cli = srv.device_of("alice").await;
    let bobs = srv.device_of("bob").await;
    assert_eq!(
        accounts.asked(),
        6,
        "asked before and after each redemption"
    );

    // The user database is down: 503 with Retry-After, nothing revoked, the token unspent.
    accounts.set_down(true);
    let res = srv.refresh(&tv.refresh).await;
    res.assert_oauth_error(503, "temporarily_unavailable");
    assert!(res.header("retry-after").is_some());
    accounts.set_down(false);
    srv.assert_alive(&cli, "after the outage").await;
    let tv = pair_of(&srv.refresh(&tv.refresh).await);

    // Alice's account is disabled: her next refresh ends every device of hers.
    accounts.disable("alice");
    srv.refresh(&tv.refresh)
        .await
        .assert_oauth_error(400, "invalid_grant");
    srv.assert_dead(&tv, "the refreshing device").await;
    srv.assert_dead(&cli, "alice's other device").await;
    assert_eq!(srv.grants_of("alice").await, 0);
    srv.assert_alive(&bobs, "bob's device").await;

    // An approval from a disabled account is never redeemed, not even once re-enabled.
    let res = srv
        .post(
            "/oauth/device_authorization",
            form(&[("client_id", DEVICE)]),
            &[],
        )
        .await;
    let json = res.json();
    let device_code = json["device_code"].as_str().unwrap().to_owned();
    srv.approve("alice", json["user_code"].as_str().unwrap())
        .await;
    srv.poll(DEVICE, &device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    accounts.enable("alice");
    srv.poll(DEVICE, &device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_eq!(srv.grants_of("alice").await, 0);
    // Re-enabled, she signs a new device in as usual.
    let fresh = srv.device_of("alice").await;
    srv.assert_alive(&fresh, "a device after re-enabling").await;
}

/// Disabled between the check before storing a new grant and the store itself: the check
/// after the store catches it, and the new grant does not survive.
async fn an_account_disabled_during_redemption_keeps_nothing<S: Store>(srv: &Server<S>) {
    let res = srv
        .post(
            "/oauth/device_authorization",
            form(&[("client_id", DEVICE)]),
            &[],
        )
        .await;
    let json = res.json();
    let device_code = json["device_code"].as_str().unwrap().to_owned();
    srv.approve("carol", json["user_code"].as_str().unwrap())
        .await;
    // Active for the check before the grant is stored, disabled by the check after.
    *srv.accounts.active_for.lock().unwrap() = Some(1);
    srv.poll(DEVICE, &device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_eq!(srv.accounts.asked(), 2);
    assert_eq!(srv.grants_of("carol").await, 0);
    assert!(srv.devices("carol").await.is_empty());
    // The code is spent with it.
    *srv.accounts.active_for.lock().unwrap() = None;
    srv.poll(DEVICE, &device_code)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

/// With the application's login page configured, a signed-out browser is sent there (303),
/// to come back to the list; a script still gets the 401.
async fn a_signed_out_browser_goes_to_the_login_page<S: Store>(srv: &Server<S>) {
    let browser = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let res = srv
        .send(request(Method::GET, DEVICES, &browser, Bytes::new()))
        .await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(
        res.header("location"),
        Some("/login?return_to=%2Faccount%2Fdevices")
    );
    assert!(res
        .text()
        .contains("href=\"/login?return_to=%2Faccount%2Fdevices\""));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    let res = srv
        .send(request(Method::GET, DEVICES, &[], Bytes::new()))
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "login_required");
    // Signed in, the browser gets the page.
    let res = srv.devices_as("alice", &browser).await;
    res.assert_status(200);
    assert!(res.text().contains("Signed in as <strong>alice</strong>"));
}

fn with_login_page<S: Store>(b: DeviceFlowBuilder<S>, _: &Accounts) -> DeviceFlowBuilder<S> {
    b.sign_in(SignIn::redirect("/login"))
}

// ---- the stores ---------------------------------------------------------------------------

fn memory_store() -> tower_device_flow::MemoryStore {
    let mut b = tower_device_flow::MemoryStore::builder();
    for c in clients() {
        b = b.client(c);
    }
    b.client(cli_client()).build()
}

/// The second public client of the listing test.
fn cli_client() -> Client {
    Client::public(CLI, Scope::parse("profile").unwrap()).with_name("Example CLI")
}

macro_rules! on_memory {
    ($($name:ident $(with $configure:path)?;)*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let srv = serve(memory_store(), |b, _a| {
                        $(let b = $configure(b, _a);)?
                        b
                    })
                    .await;
                    super::$name(&srv).await;
                }
            )*
        }
    };
}

on_memory! {
    replay_past_grace_kills_the_family;
    a_token_a_retry_replaced_is_reuse;
    racing_refreshes_and_a_replay_leave_no_live_token;
    listing_and_revoking_per_subject;
    only_the_signed_in_user_from_this_site;
    the_page_escapes_every_field;
    a_refused_subject_loses_every_grant with with_account_status;
    an_account_disabled_during_redemption_keeps_nothing with with_account_status;
    a_signed_out_browser_goes_to_the_login_page with with_login_page;
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use tower_device_flow::RedisStore;

    /// The Redis URL, or `None` after saying loudly that `test` did not run. Under CI a
    /// missing URL is a failure.
    pub fn redis_url(test: &str) -> Option<String> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                let msg = format!("REDIS_URL not set: Redis lifecycle test `{test}` did NOT run");
                eprintln!("\n!!! {msg} !!!\n");
                let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
                assert!(
                    !ci,
                    "{msg}; CI is set, so a skipped Redis test is a failure"
                );
                None
            }
        }
    }

    pub fn unique_prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("tdf-life-{test}-{}-{nanos}", std::process::id())
    }

    pub async fn store(url: &str, prefix: &str) -> RedisStore {
        let mut b = RedisStore::builder().prefix(prefix);
        for c in clients() {
            b = b.client(c);
        }
        b.client(cli_client()).connect(url).await.unwrap()
    }

    pub async fn delete_prefix(url: &str, prefix: &str) {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}}}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    macro_rules! on_redis {
        ($($name:ident $(with $configure:path)?;)*) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(url) = redis_url(stringify!($name)) else {
                        return;
                    };
                    let prefix = unique_prefix(stringify!($name));
                    let srv = serve(store(&url, &prefix).await, |b, _a| {
                        $(let b = $configure(b, _a);)?
                        b
                    })
                    .await;
                    super::$name(&srv).await;
                    drop(srv);
                    delete_prefix(&url, &prefix).await;
                }
            )*
        };
    }

    on_redis! {
        replay_past_grace_kills_the_family;
        a_token_a_retry_replaced_is_reuse;
        racing_refreshes_and_a_replay_leave_no_live_token;
        listing_and_revoking_per_subject;
        only_the_signed_in_user_from_this_site;
        the_page_escapes_every_field;
        a_refused_subject_loses_every_grant with with_account_status;
        an_account_disabled_during_redemption_keeps_nothing with with_account_status;
    }
}

/// Says loudly when this build leaves the Redis scenarios out.
#[test]
fn redis_scenarios_are_built() {
    if cfg!(not(feature = "redis")) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** built without `--features redis`: Redis lifecycle tests did NOT run ***"
        );
    }
}

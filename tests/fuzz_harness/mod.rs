//! The fuzz harness, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs` include this
//! file with `#[path]`) and by `tests/fuzz_regressions.rs`, which replays the corpus and every
//! minimized crash through the very same code without cargo-fuzz.
//!
//! Each target takes raw bytes, drives one public API of the crate with them and panics on any
//! answer that is not a proper RFC response (which the fuzzer reports as a crash):
//!
//! - `form`: `Form::parse` and `Form::get`, against a reference decoder;
//! - `user_code`: `UserCodeFormat::normalize` (default and digit formats) and `display`;
//! - `basic_auth`: arbitrary `Authorization` bytes at the token endpoint;
//! - `bearer`: arbitrary `Authorization` bytes at a `require_oauth` layer;
//! - `services`: short request sequences (method, path, headers, body) against
//!   `endpoints_layer()` in front of a guarded stub.
//!
//! Services run on a current-thread Tokio runtime (with its timer: the body read timeout needs
//! it), one fresh [`Fixture`] per input so inputs never depend on one another.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::codes::{
    DeviceCode, DeviceCodeGenerator, FamilyKey, RefreshToken, UserCode, UserCodeGenerator,
};
use tower_device_flow::family::Grant;
use tower_device_flow::form::Form;
use tower_device_flow::grant::{Decision, DeviceGrant, GrantStatus};
use tower_device_flow::store::{Insert, IssuedGrant};
use tower_device_flow::{
    Client, ClientId, Clock, DeviceFlow, Digest, ManualClock, MemoryStore, Scope, Store, Subject,
    Timestamp, TokenInfo, UserCodeFormat,
};

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: &[&str] = &["form", "user_code", "basic_auth", "bearer", "services"];

/// Runs the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "form" => form(data),
        "user_code" => user_code(data),
        "basic_auth" => basic_auth(data),
        "bearer" => bearer(data),
        "services" => services(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime and fixture
// ---------------------------------------------------------------------------------------------

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Runs a future to completion on this thread's current-thread runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// Where the fixture's clock stands.
pub const START_MILLIS: u64 = 1_700_000_000_000;
/// The public client, allowed `email profile`.
pub const PUBLIC: &str = "tv";
/// The confidential client, allowed `profile`.
pub const CONFIDENTIAL: &str = "cli";
pub const SECRET: &str = "s3cret";
/// Device codes of the seeded grants (all issued to [`PUBLIC`]).
pub const DC_PENDING: &str = "dc-pending";
pub const DC_APPROVED: &str = "dc-approved";
pub const DC_DENIED: &str = "dc-denied";
pub const DC_EXPIRED: &str = "dc-expired";
/// The user codes of the pending and approved grants, as displayed.
pub const UC_PENDING: &str = "WDJB-MJHT";
pub const UC_APPROVED: &str = "MJHT-WDJB";
/// Seeded access tokens: valid (`email profile`), expired, and valid with `email` only.
pub const AT_VALID: &str = "at-valid";
pub const AT_EXPIRED: &str = "at-expired";
pub const AT_NARROW: &str = "at-narrow";
/// The refresh token issued with [`AT_VALID`]: like every refresh token, 48 bytes in
/// base64url whose first 16 are its grant's family key (here `fuzz-family-key!`, then
/// `fuzz-refresh-token-of-at-valid!!`), so that it names its grant.
pub const RT_VALID: &str = "ZnV6ei1mYW1pbHkta2V5IWZ1enotcmVmcmVzaC10b2tlbi1vZi1hdC12YWxpZCEh";
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Deterministic device codes `dc-new-0`, `dc-new-1`... so an input can poll a code it created.
struct SeqDeviceCodes(AtomicU64);

impl DeviceCodeGenerator for SeqDeviceCodes {
    fn generate(&self) -> DeviceCode {
        DeviceCode::new(format!("dc-new-{}", self.0.fetch_add(1, Ordering::Relaxed)))
    }
}

/// Deterministic user codes `BBBB-BBBB`, `BBBB-BBBC`... in the default format.
struct SeqUserCodes {
    format: UserCodeFormat,
    next: AtomicU64,
}

impl UserCodeGenerator for SeqUserCodes {
    fn generate(&self) -> UserCode {
        let alphabet = UserCodeFormat::BASE20.as_bytes();
        let mut n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut code = [b'B'; 8];
        for c in code.iter_mut().rev() {
            *c = alphabet[(n % 20) as usize];
            n /= 20;
        }
        UserCode::from_normalized(String::from_utf8_lossy(&code).into_owned())
    }
    fn normalize(&self, input: &str) -> Option<UserCode> {
        self.format.normalize(input)
    }
    fn display(&self, code: &UserCode) -> String {
        self.format.display(code)
    }
}

/// A flow on a fresh [`MemoryStore`] with two clients, four grants and three access tokens.
pub struct Fixture {
    pub flow: DeviceFlow<MemoryStore>,
    pub clock: ManualClock,
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).expect("a valid scope")
}

fn user_digest(displayed: &str) -> Digest {
    UserCodeFormat::default()
        .normalize(displayed)
        .expect("a valid user code")
        .digest()
}

impl Fixture {
    pub async fn new() -> Fixture {
        let store = MemoryStore::builder()
            .shards(1)
            .client(Client::public(PUBLIC, scope("email profile")))
            .client(Client::confidential(CONFIDENTIAL, SECRET, scope("profile")))
            .build();
        let clock = ManualClock::new(Timestamp::from_unix_millis(START_MILLIS));
        let flow = DeviceFlow::builder(store.clone())
            .issuer("https://auth.example.com")
            .clock(clock.clone())
            .expires_in(Duration::from_secs(600))
            .interval(Duration::from_secs(5))
            .device_codes(SeqDeviceCodes(AtomicU64::new(0)))
            .user_codes(SeqUserCodes {
                format: UserCodeFormat::default(),
                next: AtomicU64::new(0),
            })
            .build();
        let now = clock.now();
        let tv = ClientId::new(PUBLIC);
        let grant = |user_code: Digest, start: Timestamp| {
            DeviceGrant::new(
                tv.clone(),
                scope("email profile"),
                user_code,
                start,
                Duration::from_secs(600),
                Duration::from_secs(5),
            )
        };
        let insert = |code: &str, g: DeviceGrant| {
            let store = store.clone();
            let key = DeviceCode::new(code).digest();
            async move {
                assert_eq!(
                    store
                        .insert_device_grant(key, g.clone(), now)
                        .await
                        .unwrap(),
                    Insert::Inserted
                );
                key
            }
        };
        insert(DC_PENDING, grant(user_digest(UC_PENDING), now)).await;
        let approved = grant(user_digest(UC_APPROVED), now);
        let key = insert(DC_APPROVED, approved.clone()).await;
        let next = approved
            .decide(Decision::Approve(Subject::new("alice")), now)
            .unwrap();
        assert!(store
            .replace_device_grant(&key, 0, next, None, now)
            .await
            .unwrap());
        let denied = grant(user_digest("BCDF-GHJK"), now);
        let key = insert(DC_DENIED, denied.clone()).await;
        let next = denied.decide(Decision::Deny, now).unwrap();
        assert!(store
            .replace_device_grant(&key, 0, next, None, now)
            .await
            .unwrap());
        let long_ago = Timestamp::from_unix_millis(START_MILLIS - 700_000);
        insert(DC_EXPIRED, grant(user_digest("LMNP-QRST"), long_ago)).await;

        // Each token belongs to a grant, created by a redemption (a compare-and-swap) of one
        // more device grant: AT_VALID with RT_VALID, AT_EXPIRED (its grant lives on with a
        // refresh token nobody has), AT_NARROW (an access token narrowed to `email`).
        let carrier = grant(user_digest("VWXZ-VWXZ"), now);
        let key = insert("dc-carrier", carrier.clone()).await;
        let at =
            |secs: i64| Timestamp::from_unix_millis((START_MILLIS as i64 + secs * 1000) as u64);
        let day = at(86_400);
        let tokens = [
            (
                AT_VALID,
                "email profile",
                at(3600),
                Some(RefreshToken::new(RT_VALID)),
            ),
            (AT_EXPIRED, "email profile", at(-1), None),
            (AT_NARROW, "email", at(3600), None),
        ];
        for (version, (access, access_scope, expires_at, refresh)) in tokens.into_iter().enumerate()
        {
            let family = match &refresh {
                Some(r) => r.family().expect("RT_VALID names a family"),
                None => FamilyKey::generate(),
            };
            // A refresh token for every grant, so that each lives a day whatever its access
            // token's lifetime.
            let refresh = refresh.unwrap_or_else(|| RefreshToken::generate(&family));
            let access_digest = Digest::of(access.as_bytes());
            let g = Grant {
                id: family.grant_id(),
                client_id: tv.clone(),
                subject: Subject::new("alice"),
                scope: scope("email profile"),
                audience: None,
                approved_at: now,
                last_used_at: now,
                expires_at: day,
                access_token: access_digest,
                refresh_token: Some(refresh.digest()),
                superseded: None,
                cnf: None,
            };
            let info = TokenInfo::new(
                g.subject.clone(),
                tv.clone(),
                scope(access_scope),
                expires_at,
            )
            .with_grant_id(Some(g.id));
            let redeemed = DeviceGrant {
                status: GrantStatus::Redeemed,
                ..carrier.clone()
            };
            let swapped = store
                .replace_device_grant(
                    &key,
                    version as u64,
                    redeemed,
                    Some(IssuedGrant {
                        grant: g,
                        access: info,
                    }),
                    now,
                )
                .await
                .unwrap();
            assert!(swapped);
        }
        Fixture { flow, clock }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading inputs
// ---------------------------------------------------------------------------------------------

/// Reads structure out of fuzz bytes; past the end every read is zero or empty.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A length byte, then that many bytes (fewer at the end of the input).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.data.len());
        let (chunk, rest) = self.data.split_at(len);
        self.data = rest;
        chunk
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Checking answers
// ---------------------------------------------------------------------------------------------

/// A fully read response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read<B>(res: Response<B>) -> Reply
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("bodies never fail").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` member of a JSON body, if any.
    pub fn error(&self) -> Option<String> {
        self.json()
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_owned)
    }
}

/// Which service answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    DeviceAuthorization,
    Token,
    Verification,
    Revocation,
    Introspection,
    Metadata,
    /// The `require_oauth` layer (or the stub behind it).
    Guarded,
}

/// The `error` codes each endpoint may answer with (RFC 6749 5.2, RFC 8628 3.5, RFC 7009 2.2.1,
/// RFC 7662 2.3, RFC 6750 3.1, and the verification page's JSON view).
pub fn allowed_errors(endpoint: Endpoint) -> &'static [&'static str] {
    const STORE: [&str; 2] = ["server_error", "temporarily_unavailable"];
    match endpoint {
        Endpoint::DeviceAuthorization => &[
            "invalid_request",
            "invalid_client",
            "invalid_scope",
            "unauthorized_client",
            STORE[0],
            STORE[1],
        ],
        Endpoint::Token => &[
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "authorization_pending",
            "slow_down",
            "access_denied",
            "expired_token",
            STORE[0],
            STORE[1],
        ],
        Endpoint::Verification => &[
            "invalid_request",
            "login_required",
            "access_denied",
            "invalid_grant",
            "expired_token",
            "slow_down",
            STORE[0],
            STORE[1],
        ],
        Endpoint::Revocation => &[
            "invalid_request",
            "invalid_client",
            "unauthorized_client",
            "unsupported_token_type",
            STORE[0],
            STORE[1],
        ],
        Endpoint::Introspection => &["invalid_request", "invalid_client", STORE[0], STORE[1]],
        Endpoint::Metadata => &["invalid_request"],
        Endpoint::Guarded => &[
            "invalid_request",
            "invalid_token",
            "insufficient_scope",
            STORE[0],
            STORE[1],
        ],
    }
}

/// The statuses an `error` code may come with.
pub fn status_fits(endpoint: Endpoint, code: &str, status: u16) -> bool {
    match (endpoint, code) {
        (_, "server_error") => status == 500,
        // 503 for a store outage; 429 for the device authorization caps; the verification
        // page's 503 when a decision keeps losing its swap.
        (_, "temporarily_unavailable") => status == 503 || status == 429,
        (_, "invalid_request") => matches!(status, 400 | 405 | 408 | 413 | 415),
        (_, "invalid_client") => status == 401,
        (Endpoint::Guarded, "invalid_token") => status == 401,
        (Endpoint::Guarded, "insufficient_scope") => status == 403,
        (Endpoint::Verification, "login_required") => status == 401,
        (Endpoint::Verification, "access_denied") => status == 403,
        (Endpoint::Verification, "invalid_grant") => status == 400 || status == 409,
        (Endpoint::Verification, "slow_down") => status == 429,
        _ => status == 400,
    }
}

/// Asserts that `reply` is a well-formed answer of `endpoint` (for a non-gRPC request whose
/// verification response was asked for as JSON when `json` is true). Returns the error code.
pub fn check_reply(endpoint: Endpoint, reply: &Reply, json: bool) -> Option<String> {
    let status = reply.status.as_u16();
    let ctx = || {
        format!(
            "{endpoint:?} {status} {:?} {:?}",
            reply.headers,
            String::from_utf8_lossy(&reply.body)
        )
    };
    if endpoint == Endpoint::Guarded && status == 200 {
        // The stub answered, or the layer refused a gRPC request the gRPC way.
        if let Some(grpc_status) = reply.header("grpc-status") {
            assert!(matches!(grpc_status, "16" | "7" | "14" | "13"), "{}", ctx());
            assert_eq!(reply.header(header::CONTENT_TYPE), Some("application/grpc"));
            assert!(reply.headers.contains_key("grpc-message"), "{}", ctx());
        }
        return None;
    }
    if endpoint == Endpoint::Verification && !json {
        assert!(
            reply
                .header(header::CONTENT_TYPE)
                .is_some_and(|c| c.starts_with("text/html")),
            "{}",
            ctx()
        );
        assert!(
            matches!(
                status,
                200 | 400 | 401 | 403 | 405 | 408 | 409 | 413 | 415 | 429 | 500 | 503
            ),
            "{}",
            ctx()
        );
        assert_eq!(
            reply.header(header::X_FRAME_OPTIONS),
            Some("DENY"),
            "{}",
            ctx()
        );
        return None;
    }
    assert!(
        reply
            .header(header::CONTENT_TYPE)
            .is_some_and(|c| c.starts_with("application/json")),
        "{}",
        ctx()
    );
    if !(endpoint == Endpoint::Metadata && status == 200) {
        assert_eq!(
            reply.header(header::CACHE_CONTROL),
            Some("no-store"),
            "{}",
            ctx()
        );
    }
    let body = reply.json();
    if status == 200 {
        assert!(body.get("error").is_none(), "{}", ctx());
        return None;
    }
    let code = body
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or_else(|| panic!("no `error` in a refusal: {}", ctx()));
    assert!(
        allowed_errors(endpoint).contains(&code),
        "`{code}` is not an error of this endpoint: {}",
        ctx()
    );
    assert!(status_fits(endpoint, code, status), "{}", ctx());
    if endpoint != Endpoint::Verification {
        assert!(body.get("error_description").is_some(), "{}", ctx());
    }
    if status == 401 && endpoint != Endpoint::Verification {
        assert!(
            reply.headers.contains_key(header::WWW_AUTHENTICATE),
            "a 401 needs a challenge: {}",
            ctx()
        );
    }
    if status == 503 && endpoint != Endpoint::Verification {
        assert!(reply.headers.contains_key(header::RETRY_AFTER), "{}", ctx());
    }
    Some(code.to_owned())
}

// ---------------------------------------------------------------------------------------------
// form
// ---------------------------------------------------------------------------------------------

/// A reference decoder for one form component: `None` where the strict parser must refuse.
fn reference_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `Form::parse` and `Form::get` agree with a reference decoder.
pub fn form(data: &[u8]) {
    let mut pairs = Vec::new();
    let mut valid = true;
    for part in data.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        match (reference_decode(name), reference_decode(value)) {
            (Some(n), Some(v)) => pairs.push((n, v)),
            _ => valid = false,
        }
    }
    let parsed = Form::parse(data);
    assert_eq!(parsed.is_ok(), valid, "{:?}", String::from_utf8_lossy(data));
    let Ok(form) = parsed else {
        let e = parsed.unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_request");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        return;
    };
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for (n, v) in &pairs {
        by_name.entry(n.as_str()).or_default().push(v.as_str());
    }
    // A bounded sample of names keeps an input with thousands of pairs linear.
    let mut names: Vec<&str> = by_name.keys().copied().take(16).collect();
    names.extend(["grant_type", "client_id", "device_code", ""]);
    for name in names {
        let values = by_name.get(name).map_or(&[][..], Vec::as_slice);
        match (form.get(name), values) {
            (Err(e), [_, _, ..]) => assert_eq!(e.code().as_str(), "invalid_request"),
            (Ok(None), []) => {}
            (Ok(None), [v]) => assert!(v.is_empty()),
            (Ok(Some(got)), [v]) => assert_eq!(got, *v),
            (got, want) => panic!("get({name:?}) = {got:?}, expected {want:?}"),
        }
        let required = form.require(name);
        assert_eq!(
            required.ok(),
            match values {
                [v] if !v.is_empty() => Some(*v),
                _ => None,
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// user_code
// ---------------------------------------------------------------------------------------------

fn check_user_code(format: &UserCodeFormat, input: &str) {
    let Some(code) = format.normalize(input) else {
        return;
    };
    assert!(
        input.len() <= format.length() * 4 + 16,
        "long input accepted"
    );
    let normalized = code.expose();
    assert_eq!(normalized.len(), format.length(), "{input:?}");
    assert!(
        normalized
            .bytes()
            .all(|b| format.alphabet().as_bytes().contains(&b)),
        "{input:?} -> {normalized:?}"
    );
    // What is displayed normalizes back to the same code, whatever the case of the input.
    let shown = format.display(&code);
    assert_eq!(format.normalize(&shown).as_ref(), Some(&code), "{shown:?}");
    assert_eq!(
        format.normalize(&shown.to_ascii_lowercase()).as_ref(),
        Some(&code)
    );
    assert_eq!(
        format.normalize(&input.to_ascii_lowercase()).as_ref(),
        Some(&code)
    );
    assert_eq!(code.digest(), Digest::of(normalized.as_bytes()));
}

/// `UserCodeFormat::normalize` accepts exactly codes of the format, in any case and spacing.
pub fn user_code(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    check_user_code(&UserCodeFormat::default(), &input);
    check_user_code(
        &UserCodeFormat::digits(9, 3).expect("a digit format"),
        &input,
    );
    check_user_code(
        &UserCodeFormat::digits(6, 0).expect("a digit format"),
        &input,
    );
}

// ---------------------------------------------------------------------------------------------
// basic_auth
// ---------------------------------------------------------------------------------------------

/// Independently decodes `Basic` credentials (RFC 7617 + RFC 6749 2.3.1).
fn reference_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    Some((
        reference_decode(&raw[..colon])?,
        reference_decode(&raw[colon + 1..])?,
    ))
}

/// Arbitrary `Authorization` bytes at the token endpoint, for a device code and a refresh token
/// of the public client: tokens only for `tv` with no secret, once. The second try comes after
/// the refresh grace period, so a second use of the refresh token is reuse, not a retry.
pub fn basic_auth(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let header = input.rest();
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let body = match flags % 4 {
        0 => format!("grant_type={DEVICE_CODE_GRANT}&device_code={DC_APPROVED}"),
        1 => format!("grant_type={DEVICE_CODE_GRANT}&device_code={DC_APPROVED}&client_id={PUBLIC}"),
        2 => format!("grant_type=refresh_token&refresh_token={RT_VALID}"),
        _ => format!("grant_type=refresh_token&refresh_token={RT_VALID}&client_secret={SECRET}"),
    };
    block_on(async {
        let fx = Fixture::new().await;
        let mut successes = 0;
        for _ in 0..2 {
            fx.clock.advance(Duration::from_secs(31));
            let req = Request::post("/oauth/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, value.clone())
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a request");
            let reply = Reply::read(fx.flow.token().oneshot(req).await.unwrap()).await;
            check_reply(Endpoint::Token, &reply, true);
            if reply.status == StatusCode::OK {
                successes += 1;
                let creds = reference_basic(header);
                assert_eq!(
                    creds,
                    Some((PUBLIC.to_owned(), String::new())),
                    "tokens for {:?}",
                    String::from_utf8_lossy(header)
                );
            }
        }
        assert!(successes <= 1, "a grant redeemed twice");
    });
}

// ---------------------------------------------------------------------------------------------
// bearer
// ---------------------------------------------------------------------------------------------

async fn stub(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let info = req.extensions().get::<TokenInfo>().cloned();
    let body = serde_json::json!({
        "subject": info.as_ref().map(|t| t.subject.as_str().to_owned()),
        "scope": info.as_ref().map(|t| t.scope.as_str().to_owned()),
    });
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

/// The token a `Bearer` header carries, parsed independently of the crate.
fn reference_bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Arbitrary `Authorization` bytes (one or two headers, gRPC or not) at a `require_oauth`
/// layer: the inner service runs only for a valid, unexpired token with the scope.
pub fn bearer(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let first = input.chunk();
    let second = input.rest();
    let grpc = flags & 1 != 0;
    let two = flags & 2 != 0;
    let Ok(v1) = HeaderValue::from_bytes(first) else {
        return;
    };
    let v2 = HeaderValue::from_bytes(second).ok();
    block_on(async {
        let fx = Fixture::new().await;
        let guarded = fx.flow.require_oauth("profile").layer(service_fn(stub));
        let mut req = Request::get("/me")
            .body(Full::default())
            .expect("a request");
        req.headers_mut().append(header::AUTHORIZATION, v1);
        if two {
            if let Some(v2) = v2 {
                req.headers_mut().append(header::AUTHORIZATION, v2);
            }
        }
        if grpc {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
        }
        let n_headers = req.headers().get_all(header::AUTHORIZATION).iter().count();
        let reply = Reply::read(guarded.oneshot(req).await.unwrap()).await;
        let passed = if grpc {
            assert_eq!(reply.status, StatusCode::OK);
            match reply.header("grpc-status") {
                None => true,
                Some(s) => {
                    assert!(matches!(s, "16" | "7" | "14" | "13"), "{reply:?}");
                    false
                }
            }
        } else {
            check_reply(Endpoint::Guarded, &reply, true);
            reply.status == StatusCode::OK
        };
        if passed {
            assert_eq!(n_headers, 1, "two Authorization headers let through");
            assert_eq!(
                reference_bearer(first),
                Some(AT_VALID),
                "let through: {:?}",
                String::from_utf8_lossy(first)
            );
            assert_eq!(reply.json()["subject"], "alice");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// services
// ---------------------------------------------------------------------------------------------

/// The paths a request may go to (the flow's endpoints and a few others).
pub const PATHS: &[&str] = &[
    "/oauth/token",
    "/oauth/device_authorization",
    "/device",
    "/oauth/revoke",
    "/oauth/introspect",
    "/.well-known/oauth-authorization-server",
    "/me",
    "/oauth/token/",
    "//oauth/token",
];

/// Header names a request may carry.
pub const HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "accept",
    "origin",
    "host",
    "sec-fetch-site",
    "content-length",
    "x-other",
];

const METHODS: &[&str] = &["POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// A decoded request of the `services` target.
#[derive(Debug)]
pub struct FuzzRequest {
    pub method: Method,
    pub path: &'static str,
    pub query: Vec<u8>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub subject: bool,
    pub form: bool,
    pub json: bool,
    pub body: Vec<u8>,
}

/// Decodes `1 + n % 4` requests: flags, method, path, query, headers, body.
pub fn decode_requests(data: &[u8]) -> Vec<FuzzRequest> {
    let mut input = Input::new(data);
    let count = 1 + input.byte() % 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let flags = input.byte();
        let m = input.byte();
        let method = match METHODS.get(usize::from(m % 8)) {
            Some(m) => Method::from_bytes(m.as_bytes()).expect("a method"),
            None => Method::from_bytes(input.chunk()).unwrap_or(Method::POST),
        };
        let path = PATHS[usize::from(input.byte()) % PATHS.len()];
        let query = input.chunk().to_vec();
        let n = input.byte() % 5;
        let headers = (0..n)
            .map(|_| {
                let name = HEADERS[usize::from(input.byte()) % HEADERS.len()];
                (name, input.chunk().to_vec())
            })
            .collect();
        let body = input.chunk().to_vec();
        out.push(FuzzRequest {
            method,
            path,
            query,
            headers,
            subject: flags & 1 != 0,
            form: flags & 2 != 0,
            json: flags & 4 != 0,
            body,
        });
        if input.is_empty() {
            break;
        }
    }
    out
}

/// Encodes requests in the format [`decode_requests`] reads (for seeds and tests). Values
/// longer than 255 bytes are cut.
pub fn encode_requests(reqs: &[FuzzRequest]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, b: &[u8]) {
        let b = &b[..b.len().min(255)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    let mut out = vec![(reqs.len().clamp(1, 4) - 1) as u8];
    for r in reqs.iter().take(4) {
        out.push(u8::from(r.subject) | u8::from(r.form) << 1 | u8::from(r.json) << 2);
        match METHODS.iter().position(|m| *m == r.method.as_str()) {
            Some(i) => out.push(i as u8),
            None => {
                out.push(7);
                chunk(&mut out, r.method.as_str().as_bytes());
            }
        }
        out.push(PATHS.iter().position(|p| *p == r.path).unwrap_or(0) as u8);
        chunk(&mut out, &r.query);
        out.push(r.headers.len().min(4) as u8);
        for (name, value) in r.headers.iter().take(4) {
            out.push(HEADERS.iter().position(|h| h == name).unwrap_or(0) as u8);
            chunk(&mut out, value);
        }
        chunk(&mut out, &r.body);
    }
    out
}

fn endpoint_of(path: &str) -> Endpoint {
    match path {
        "/oauth/token" => Endpoint::Token,
        "/oauth/device_authorization" => Endpoint::DeviceAuthorization,
        "/device" => Endpoint::Verification,
        "/oauth/revoke" => Endpoint::Revocation,
        "/oauth/introspect" => Endpoint::Introspection,
        "/.well-known/oauth-authorization-server" => Endpoint::Metadata,
        _ => Endpoint::Guarded,
    }
}

/// Short request sequences against `endpoints_layer()` in front of a guarded stub. Every
/// answer is a proper RFC answer of its endpoint; a device code yields tokens at most once;
/// the stub runs only for a token that was valid; the verification page escapes what it echoes.
pub fn services(data: &[u8]) {
    services_statuses(data);
}

/// [`services`], returning the status of each request sent (requests whose URI does not
/// parse are skipped).
pub fn services_statuses(data: &[u8]) -> Vec<u16> {
    let reqs = decode_requests(data);
    let mut statuses = Vec::new();
    block_on(async {
        let fx = Fixture::new().await;
        let app = fx
            .flow
            .endpoints_layer()
            .layer(fx.flow.require_oauth("profile").layer(service_fn(stub)));
        let mut valid_tokens: HashSet<String> = [AT_VALID.to_owned()].into();
        let mut issued: HashMap<String, usize> = HashMap::new();
        for r in reqs {
            let endpoint = endpoint_of(r.path);
            let uri = if r.query.is_empty() {
                r.path.to_owned()
            } else {
                format!("{}?{}", r.path, String::from_utf8_lossy(&r.query))
            };
            let Ok(uri) = http::Uri::try_from(uri) else {
                continue;
            };
            let mut req = Request::builder()
                .method(r.method.clone())
                .uri(uri.clone())
                .body(Full::new(Bytes::from(r.body.clone())))
                .expect("a request");
            let h = req.headers_mut();
            if r.form {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
            }
            if r.json {
                h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            }
            for (name, value) in &r.headers {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    h.append(HeaderName::from_static(name), v);
                }
            }
            let auth: Vec<Vec<u8>> = h
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            let wants_json = h
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
            if r.subject {
                req.extensions_mut().insert(Subject::new("alice"));
            }
            let is_head = r.method == Method::HEAD;
            let reply = Reply::read(app.clone().oneshot(req).await.unwrap()).await;
            statuses.push(reply.status.as_u16());
            let json = endpoint != Endpoint::Verification || wants_json;
            if endpoint == Endpoint::Metadata && reply.status == StatusCode::OK && is_head {
                continue;
            }
            check_reply(endpoint, &reply, json);
            match endpoint {
                Endpoint::Token if reply.status == StatusCode::OK => {
                    let body = reply.json();
                    let access = body["access_token"].as_str().expect("an access token");
                    valid_tokens.insert(access.to_owned());
                    let form = Form::parse(&r.body).expect("a form that was accepted");
                    if form.get("grant_type").ok().flatten() == Some(DEVICE_CODE_GRANT) {
                        let code = form.get("device_code").unwrap().unwrap().to_owned();
                        let n = issued.entry(code).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "a device code redeemed twice");
                    }
                }
                Endpoint::Guarded
                    if reply.status == StatusCode::OK
                        && !reply.headers.contains_key("grpc-status") =>
                {
                    assert_eq!(auth.len(), 1, "two Authorization headers let through");
                    let token = reference_bearer(&auth[0]).expect("a bearer token");
                    assert!(valid_tokens.contains(token), "let through with {token:?}");
                }
                Endpoint::Verification if !json => {
                    // Whatever the page echoes back is escaped.
                    let html = String::from_utf8_lossy(&reply.body);
                    let echoed = [uri.query().unwrap_or(""), &String::from_utf8_lossy(&r.body)]
                        .into_iter()
                        .filter_map(|q| Form::parse(q.as_bytes()).ok())
                        .filter_map(|f| f.get("user_code").ok().flatten().map(str::to_owned))
                        .collect::<Vec<_>>();
                    // A marker the page's own markup never holds, so finding it means an
                    // unescaped echo (`<fuzz` opens a tag, `"fuzz` leaves an attribute).
                    for typed in echoed {
                        for marker in ["<fuzz", "\"fuzz", "'fuzz"] {
                            if typed.contains(marker) {
                                assert!(!html.contains(marker), "unescaped echo of {typed:?}");
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
    statuses
}

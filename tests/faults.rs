//! Fault injection: hundreds of concurrent device flows against the real services on a store
//! that fails, stalls and loses replies.
//!
//! [`FaultyStore`] wraps any [`Store`] and, drawing from a seeded RNG, makes each call fail
//! (`StoreError::Unavailable` or `StoreError::Backend`), wait first (on Tokio's clock, paused
//! in these tests, or by yielding), or "drop the reply": perform the operation, then report an
//! error, as a Redis reply lost on the wire would. Flows run device authorization, approval on
//! the verification page, many concurrent polls, racing refreshes and a guarded request, all
//! through `endpoints_layer()`.
//!
//! Checked: every response is an RFC response of its endpoint, with store failures answered
//! `server_error` (500) or `temporarily_unavailable` (503) and nothing else; no device code
//! ever yields two token responses; every 5xx is accounted for by an injected fault; every
//! grant ends with exactly one live access token; and once the faults stop, every flow
//! finishes: its tokens arrive, unless they were issued into a dropped reply, in which case the
//! store shows the grant redeemed exactly once and the device is told `invalid_grant`. A
//! refresh whose rotation was applied behind a lost reply never signs the device out: the
//! device retries with the refresh token it still holds, within the grace period, and gets a
//! fresh pair.

mod fuzz_harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::codes::{DeviceCode, RefreshToken};
use tower_device_flow::family::{Grant, Rotation};
use tower_device_flow::grant::{DeviceGrant, GrantStatus};
use tower_device_flow::store::{ClientSource, Count, Insert, IssuedGrant};
use tower_device_flow::{
    AttemptLimit, Client, Clock, DeviceFlow, Digest, GrantId, ManualClock, MemoryStore, Scope,
    Store, StoreError, StoreResult, Subject, Timestamp, TokenInfo, Versioned,
};

use fuzz_harness::{check_reply, Endpoint, Reply};

// ---------------------------------------------------------------------------------------------
// The faulty store
// ---------------------------------------------------------------------------------------------

/// How an injected delay waits.
#[derive(Clone, Copy, Debug)]
enum DelayMode {
    /// `tokio::time::sleep` of 1-20 ms (instant on a paused clock).
    Timer,
    /// 1-20 `yield_now`s (real interleaving on a multi-threaded runtime, no wall time).
    Yield,
}

/// Fault probabilities, per store call.
#[derive(Clone, Copy, Debug)]
struct FaultRates {
    fail: f64,
    drop_reply: f64,
    delay: f64,
}

#[derive(Debug, Default)]
struct FaultStats {
    calls: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
}

/// A fault a test asks for on the next call of one operation, whatever the rates.
#[derive(Clone, Copy, Debug)]
enum Scripted {
    /// Fail the call (nothing happens).
    Fail,
    /// Perform the call, then answer with an error.
    DropReply,
}

/// What a call that is not failed outright is in for.
enum Fault {
    None,
    /// Perform the call, then answer with this error.
    DropReply(StoreError),
}

/// The shared fault switchboard: the RNG, the rates, what was injected.
struct Faults {
    enabled: AtomicBool,
    rng: Mutex<StdRng>,
    rates: FaultRates,
    delay: DelayMode,
    stats: FaultStats,
    /// Device codes whose issuing swap succeeded behind a dropped reply.
    lost_issues: Mutex<HashSet<Digest>>,
    /// Refresh tokens whose rotation succeeded behind a dropped reply.
    lost_rotations: Mutex<HashSet<Digest>>,
    /// Faults asked for by name, consumed in order by the next call of that operation.
    script: Mutex<Vec<(&'static str, Scripted)>>,
}

impl Faults {
    fn new(seed: u64, rates: FaultRates, delay: DelayMode) -> Arc<Self> {
        Arc::new(Faults {
            enabled: AtomicBool::new(true),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            rates,
            delay,
            stats: FaultStats::default(),
            lost_issues: Mutex::default(),
            lost_rotations: Mutex::default(),
            script: Mutex::default(),
        })
    }

    /// Makes the next call of `op` fail or lose its reply.
    fn then(&self, op: &'static str, fault: Scripted) {
        self.script.lock().unwrap().push((op, fault));
    }

    fn scripted(&self, op: &'static str) -> Option<Scripted> {
        let mut script = self.script.lock().unwrap();
        let i = script.iter().position(|(o, _)| *o == op)?;
        Some(script.remove(i).1)
    }

    fn stop(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    fn injected(&self) -> u64 {
        self.stats.failed.load(Ordering::SeqCst) + self.stats.dropped.load(Ordering::SeqCst)
    }

    /// Draws this call's fault, and waits first if it is to be delayed.
    async fn before(&self, op: &'static str) -> Result<Fault, StoreError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(fault) = self.scripted(op) {
            let error = StoreError::Unavailable(format!("scripted: {op}"));
            return match fault {
                Scripted::Fail => {
                    self.stats.failed.fetch_add(1, Ordering::SeqCst);
                    Err(error)
                }
                Scripted::DropReply => {
                    self.stats.dropped.fetch_add(1, Ordering::SeqCst);
                    Ok(Fault::DropReply(error))
                }
            };
        }
        if !self.enabled.load(Ordering::SeqCst) {
            return Ok(Fault::None);
        }
        let (roll, delay, error_kind) = {
            let mut rng = self.rng.lock().unwrap();
            let roll: f64 = rng.random();
            let delay = (rng.random::<f64>() < self.rates.delay).then(|| rng.random_range(1..=20));
            (roll, delay, rng.random::<bool>())
        };
        if let Some(n) = delay {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            match self.delay {
                DelayMode::Timer => tokio::time::sleep(Duration::from_millis(n)).await,
                DelayMode::Yield => {
                    for _ in 0..n {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        let error = if error_kind {
            StoreError::Unavailable(format!("injected: {op}"))
        } else {
            StoreError::Backend(format!("injected: {op}"))
        };
        if roll < self.rates.fail {
            self.stats.failed.fetch_add(1, Ordering::SeqCst);
            Err(error)
        } else if roll < self.rates.fail + self.rates.drop_reply {
            self.stats.dropped.fetch_add(1, Ordering::SeqCst);
            Ok(Fault::DropReply(error))
        } else {
            Ok(Fault::None)
        }
    }
}

/// A [`Store`] that fails, stalls and loses replies as [`Faults`] decides.
#[derive(Clone)]
struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S> FaultyStore<S> {
    /// Applies `fault` to the inner call's result.
    fn after<T>(fault: Fault, result: StoreResult<T>) -> StoreResult<T> {
        match fault {
            Fault::DropReply(e) => Err(e),
            _ => result,
        }
    }
}

impl<S: Store> ClientSource for FaultyStore<S> {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let f = self.faults.before("client").await?;
        Self::after(f, self.inner.client(client_id).await)
    }
}

impl<S: Store> Store for FaultyStore<S> {
    async fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<Insert> {
        let f = self.faults.before("insert_device_grant").await?;
        Self::after(
            f,
            self.inner
                .insert_device_grant(device_code, grant, now)
                .await,
        )
    }

    async fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        let f = self.faults.before("device_grant").await?;
        Self::after(f, self.inner.device_grant(device_code, now).await)
    }

    async fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<(Digest, Versioned<DeviceGrant>)>> {
        let f = self.faults.before("device_grant_by_user_code").await?;
        Self::after(
            f,
            self.inner.device_grant_by_user_code(user_code, now).await,
        )
    }

    async fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let f = self.faults.before("replace_device_grant").await?;
        let issuing = issue.is_some();
        let result = self
            .inner
            .replace_device_grant(device_code, expected_version, grant, issue, now)
            .await;
        if issuing && matches!(f, Fault::DropReply(_)) && result == Ok(true) {
            self.faults.lost_issues.lock().unwrap().insert(*device_code);
        }
        Self::after(f, result)
    }

    async fn grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Versioned<Grant>>> {
        let f = self.faults.before("grant").await?;
        Self::after(f, self.inner.grant(id, now).await)
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let f = self.faults.before("replace_grant").await?;
        // The refresh token being replaced, for the record (an unfaulted read).
        let replaced = self
            .inner
            .grant(id, now)
            .await
            .ok()
            .flatten()
            .and_then(|g| g.record.refresh_token);
        let result = self
            .inner
            .replace_grant(id, expected_version, rotation, access, now)
            .await;
        if let (Fault::DropReply(_), Ok(true), Some(old)) = (&f, &result, replaced) {
            self.faults.lost_rotations.lock().unwrap().insert(old);
        }
        Self::after(f, result)
    }

    async fn revoke_grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Grant>> {
        let f = self.faults.before("revoke_grant").await?;
        Self::after(f, self.inner.revoke_grant(id, now).await)
    }

    async fn grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        let f = self.faults.before("grants_of").await?;
        Self::after(f, self.inner.grants_of(subject, now).await)
    }

    async fn revoke_grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        let f = self.faults.before("revoke_grants_of").await?;
        Self::after(f, self.inner.revoke_grants_of(subject, now).await)
    }

    async fn access_token(&self, token: &Digest, now: Timestamp) -> StoreResult<Option<TokenInfo>> {
        let f = self.faults.before("access_token").await?;
        Self::after(f, self.inner.access_token(token, now).await)
    }

    async fn revoke_access_token(&self, token: &Digest, now: Timestamp) -> StoreResult<bool> {
        let f = self.faults.before("revoke_access_token").await?;
        Self::after(f, self.inner.revoke_access_token(token, now).await)
    }

    async fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<Count> {
        let f = self.faults.before("try_increment").await?;
        Self::after(f, self.inner.try_increment(key, max, window, now).await)
    }

    async fn decrement(&self, key: &str, now: Timestamp) -> StoreResult<()> {
        let f = self.faults.before("decrement").await?;
        Self::after(f, self.inner.decrement(key, now).await)
    }

    async fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let f = self.faults.before("claim_once").await?;
        Self::after(f, self.inner.claim_once(key, until, now).await)
    }

    async fn pending_device_grants(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        let f = self.faults.before("pending_device_grants").await?;
        Self::after(f, self.inner.pending_device_grants(now).await)
    }
}

// ---------------------------------------------------------------------------------------------
// The flows
// ---------------------------------------------------------------------------------------------

const START: u64 = 1_700_000_000_000;
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const POLLERS: usize = 3;
const POLLS_EACH: usize = 8;

type Want = (u16, Option<&'static str>);
const OK: Want = (200, None);
const SERVER_ERROR: Want = (500, Some("server_error"));
const UNAVAILABLE: Want = (503, Some("temporarily_unavailable"));
const INVALID_GRANT: Want = (400, Some("invalid_grant"));

/// Everything answered, tallied by endpoint, status and error.
#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<(String, u16, String), u64>,
    server_errors: u64,
}

struct App {
    flow: DeviceFlow<FaultyStore<MemoryStore>>,
    store: MemoryStore,
    clock: ManualClock,
    tally: Mutex<Tally>,
    /// Token responses per device code.
    token_responses: Mutex<HashMap<String, u32>>,
}

async fn me(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = req
        .extensions()
        .get::<TokenInfo>()
        .map(|t| t.subject.to_string());
    Ok(Response::new(Full::from(who.unwrap_or_default())))
}

fn form_post(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// How a flow's client authenticates: the public `tv` by `client_id`, or the confidential
/// `cli` with HTTP Basic.
#[derive(Clone, Copy)]
enum Who {
    Public,
    Confidential,
}

impl Who {
    fn request(self, path: &str, body: &str) -> Request<Full<Bytes>> {
        match self {
            Who::Public => form_post(path, format!("client_id=tv&{body}")),
            Who::Confidential => {
                let mut req = form_post(path, body.to_owned());
                let basic = format!("Basic {}", STANDARD.encode("cli:s3cret"));
                req.headers_mut()
                    .insert(header::AUTHORIZATION, HeaderValue::try_from(basic).unwrap());
                req
            }
        }
    }
}

impl App {
    /// An app whose end users may mistype codes without limit: every flow is approved by
    /// alice, and a reserved attempt whose reply or give-back is lost stays counted, so the
    /// default budget of five would run out under these fault rates (see
    /// `a_failed_lookup_does_not_count_as_a_wrong_code` for the budget under faults).
    fn new(faults: Arc<Faults>) -> Arc<App> {
        Self::build(faults, true)
    }

    fn build(faults: Arc<Faults>, unlimited_attempts: bool) -> Arc<App> {
        let store = MemoryStore::builder()
            .shards(8)
            .client(Client::public("tv", Scope::parse("profile").unwrap()))
            .client(Client::confidential(
                "cli",
                "s3cret",
                Scope::parse("profile").unwrap(),
            ))
            .build();
        let clock = ManualClock::new(Timestamp::from_unix_millis(START));
        let flow = DeviceFlow::builder(FaultyStore {
            inner: store.clone(),
            faults,
        })
        .issuer("https://auth.example.com")
        .clock(clock.clone())
        .expires_in(Duration::from_secs(3600))
        .interval(Duration::from_secs(1))
        // Every poll of every flow moves the shared clock 100 ms, so a device's retry can come
        // minutes of test time after its lost rotation: a grace period that covers the whole
        // run keeps these tests about faults, not about the grace period (tested below).
        .refresh_token_grace(Duration::from_secs(3600));
        let flow = if unlimited_attempts {
            flow.failed_attempts_per_user(AttemptLimit {
                max: u64::MAX,
                window: Duration::from_secs(900),
            })
            .failed_attempts_overall(None)
        } else {
            flow
        }
        .build();
        Arc::new(App {
            flow,
            store,
            clock,
            tally: Mutex::default(),
            token_responses: Mutex::default(),
        })
    }

    /// Sends `req` through `endpoints_layer()` in front of a guarded route, checks the answer is
    /// an RFC answer of `endpoint` and one of `allowed`, and tallies it.
    async fn send(&self, endpoint: Endpoint, req: Request<Full<Bytes>>, allowed: &[Want]) -> Reply {
        let app = self
            .flow
            .endpoints_layer()
            .layer(self.flow.require_oauth("profile").layer(service_fn(me)));
        let reply = Reply::read(app.oneshot(req).await.unwrap()).await;
        check_reply(endpoint, &reply, true);
        let error = if reply.status == StatusCode::OK {
            None
        } else {
            reply.error()
        };
        let got = (reply.status.as_u16(), error.as_deref());
        assert!(
            allowed.contains(&got),
            "{endpoint:?} answered {got:?}, allowed {allowed:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let mut tally = self.tally.lock().unwrap();
        if reply.status.is_server_error() {
            tally.server_errors += 1;
        }
        *tally
            .by_kind
            .entry((format!("{endpoint:?}"), got.0, error.unwrap_or_default()))
            .or_default() += 1;
        reply
    }

    /// Device authorization, retried through faults. Returns (device code, user code).
    async fn authorize(&self, who: Who, attempts: usize) -> Option<(String, String)> {
        for _ in 0..attempts {
            let req = who.request("/oauth/device_authorization", "scope=profile");
            let reply = self
                .send(
                    Endpoint::DeviceAuthorization,
                    req,
                    &[OK, SERVER_ERROR, UNAVAILABLE],
                )
                .await;
            if reply.status == StatusCode::OK {
                let body = reply.json();
                return Some((
                    body["device_code"].as_str().unwrap().to_owned(),
                    body["user_code"].as_str().unwrap().to_owned(),
                ));
            }
            tokio::task::yield_now().await;
        }
        None
    }

    /// Alice approves, retried through faults; 409 means an earlier attempt went through
    /// behind a lost reply. Returns whether the approval is known to be recorded.
    async fn approve(&self, user_code: &str, attempts: usize) -> bool {
        for _ in 0..attempts {
            let mut req = form_post("/device", format!("user_code={user_code}&decision=approve"));
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            req.extensions_mut().insert(Subject::new("alice"));
            let conflict = (409, Some("invalid_grant"));
            let reply = self
                .send(
                    Endpoint::Verification,
                    req,
                    &[OK, conflict, SERVER_ERROR, UNAVAILABLE],
                )
                .await;
            if reply.status == StatusCode::OK {
                assert_eq!(reply.json()["status"], "approved");
                return true;
            }
            if reply.status == StatusCode::CONFLICT {
                return true;
            }
        }
        false
    }

    /// One poll. Returns the tokens on a 200, and whether to stop polling.
    async fn poll(&self, who: Who, device_code: &str) -> (Option<(String, String)>, bool) {
        let body = format!("grant_type={DEVICE_CODE_GRANT}&device_code={device_code}");
        let pending = (400, Some("authorization_pending"));
        let slow_down = (400, Some("slow_down"));
        let reply = self
            .send(
                Endpoint::Token,
                who.request("/oauth/token", &body),
                &[
                    OK,
                    pending,
                    slow_down,
                    INVALID_GRANT,
                    SERVER_ERROR,
                    UNAVAILABLE,
                ],
            )
            .await;
        self.clock.advance(Duration::from_millis(100));
        match reply.status {
            StatusCode::OK => {
                let n = {
                    let mut counts = self.token_responses.lock().unwrap();
                    let n = counts.entry(device_code.to_owned()).or_default();
                    *n += 1;
                    *n
                };
                assert_eq!(n, 1, "two token responses for one device code");
                let body = reply.json();
                let tokens = (
                    body["access_token"].as_str().unwrap().to_owned(),
                    body["refresh_token"].as_str().unwrap().to_owned(),
                );
                (Some(tokens), true)
            }
            _ => (None, reply.error().as_deref() == Some("invalid_grant")),
        }
    }

    /// One refresh. Returns the new tokens on a 200, `None` on a store failure (5xx); a
    /// refusal is not allowed: nothing these devices present is ever reused.
    async fn refresh(&self, who: Who, refresh_token: &str) -> Option<(String, String)> {
        let body = format!("grant_type=refresh_token&refresh_token={refresh_token}");
        let reply = self
            .send(
                Endpoint::Token,
                who.request("/oauth/token", &body),
                &[OK, SERVER_ERROR, UNAVAILABLE],
            )
            .await;
        if reply.status != StatusCode::OK {
            return None;
        }
        let body = reply.json();
        Some((
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        ))
    }

    /// A request to the guarded route.
    async fn access(&self, access_token: &str, allowed: &[Want]) -> StatusCode {
        let req = Request::get("/me")
            .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
            .body(Full::default())
            .unwrap();
        let reply = self.send(Endpoint::Guarded, req, allowed).await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "alice");
        }
        reply.status
    }

    async fn grant_status(&self, device_code: &str) -> GrantStatus {
        let key = DeviceCode::new(device_code).digest();
        self.store
            .device_grant(&key, self.clock.now())
            .await
            .unwrap()
            .expect("the grant is kept")
            .record
            .status
    }
}

/// What one flow achieved while the faults were on.
#[derive(Debug, Default)]
struct FlowState {
    codes: Option<(String, String)>,
    /// The latest tokens the device holds, if any.
    tokens: Option<(String, String)>,
}

/// A flow under faults: authorize, then approve while three pollers poll, then a refresh
/// (retried with the same token after a failure, as a device that got no answer does), then
/// the guarded route.
async fn flow_under_faults(app: Arc<App>, who: Who) -> FlowState {
    let mut state = FlowState {
        codes: app.authorize(who, 20).await,
        tokens: None,
    };
    let Some((device_code, user_code)) = state.codes.clone() else {
        return state;
    };
    let approver = {
        let app = app.clone();
        tokio::spawn(async move { app.approve(&user_code, 10).await })
    };
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            let app = app.clone();
            let device_code = device_code.clone();
            tokio::spawn(async move {
                for _ in 0..POLLS_EACH {
                    let (tokens, stop) = app.poll(who, &device_code).await;
                    if tokens.is_some() || stop {
                        return tokens;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None
            })
        })
        .collect();
    approver.await.expect("no panic");
    for poller in pollers {
        if let Some(tokens) = poller.await.expect("no panic") {
            state.tokens = Some(tokens);
        }
    }
    let Some((_, refresh_token)) = state.tokens.clone() else {
        return state;
    };
    // A device that got no answer retries with the token it holds: within the grace period
    // that is a retry even if the rotation went through behind a lost reply.
    let mut failed = false;
    for _ in 0..5 {
        match app.refresh(who, &refresh_token).await {
            Some(tokens) => {
                state.tokens = Some(tokens);
                failed = false;
                break;
            }
            None => failed = true,
        }
    }
    let (access_token, _) = state.tokens.clone().unwrap();
    // 401 only if every refresh failed and one of them rotated the token away behind a lost
    // reply.
    let invalid = (401, Some("invalid_token"));
    let allowed: &[Want] = if failed {
        &[OK, invalid, SERVER_ERROR, UNAVAILABLE]
    } else {
        &[OK, SERVER_ERROR, UNAVAILABLE]
    };
    app.access(&access_token, allowed).await;
    state
}

/// With the faults off, the flow finishes.
async fn finish_flow(app: &App, who: Who, mut state: FlowState) {
    if state.codes.is_none() {
        state.codes = app.authorize(who, 1).await;
    }
    let (device_code, user_code) = state.codes.clone().expect("authorizes without faults");
    if state.tokens.is_none() {
        assert!(app.approve(&user_code, 1).await, "approves without faults");
        let key = DeviceCode::new(device_code.as_str()).digest();
        let lost = app
            .flow
            .store()
            .faults
            .lost_issues
            .lock()
            .unwrap()
            .contains(&key);
        let (tokens, _) = app.poll(who, &device_code).await;
        match tokens {
            Some(tokens) => {
                assert!(!lost, "tokens issued twice");
                state.tokens = Some(tokens);
            }
            None => {
                // The only way to have no tokens: they were issued behind a dropped reply.
                assert!(lost, "flow {device_code} cannot finish");
                assert_eq!(app.grant_status(&device_code).await, GrantStatus::Redeemed);
                return;
            }
        }
    }
    // Whatever was lost on the way, the device's latest refresh token still works.
    let (_, refresh_token) = state.tokens.clone().unwrap();
    let (access_token, _) = app
        .refresh(who, &refresh_token)
        .await
        .expect("a lost reply signed the device out");
    assert_eq!(app.access(&access_token, &[OK]).await, StatusCode::OK);
}

async fn run(seed: u64, flows: usize, rates: FaultRates, delay: DelayMode) {
    let faults = Faults::new(seed, rates, delay);
    let app = App::new(faults.clone());
    let who = |i: usize| {
        if i.is_multiple_of(3) {
            Who::Confidential
        } else {
            Who::Public
        }
    };
    let tasks: Vec<_> = (0..flows)
        .map(|i| tokio::spawn(flow_under_faults(app.clone(), who(i))))
        .collect();
    let mut states = Vec::new();
    for task in tasks {
        states.push(task.await.expect("no panic"));
    }
    faults.stop();
    let injected = faults.injected();
    let server_errors_under_faults = app.tally.lock().unwrap().server_errors;
    for (i, state) in states.into_iter().enumerate() {
        finish_flow(&app, who(i), state).await;
    }

    let tally = app.tally.lock().unwrap();
    // Every 5xx was caused by an injected fault, and none came after the faults stopped.
    assert!(
        tally.server_errors <= injected,
        "{} server errors for {injected} faults",
        tally.server_errors
    );
    assert_eq!(tally.server_errors, server_errors_under_faults);
    // Every grant yielded tokens exactly once: delivered, or lost in a dropped reply. A dropped
    // reply is recovered (delivered after all) when the endpoint finds its token stored.
    // Every grant holds exactly one live access token: no lost or losing rotation left one
    // behind, and none is missing.
    assert_eq!(
        app.store.access_token_count(),
        app.store.grant_count(),
        "seed {seed}: access tokens and grants"
    );
    let delivered = app.token_responses.lock().unwrap();
    let lost = faults.lost_issues.lock().unwrap();
    assert!(delivered.values().all(|&n| n == 1));
    let recovered = delivered
        .keys()
        .filter(|code| lost.contains(&DeviceCode::new(code.as_str()).digest()))
        .count();
    assert_eq!(
        delivered.len() + lost.len() - recovered,
        flows,
        "seed {seed}"
    );
    let stats = &faults.stats;
    eprintln!(
        "seed {seed}: {flows} flows, {} store calls, {} failed, {} replies dropped, {} delayed; \
         {} token responses, {} behind dropped replies ({recovered} of them recovered), \
         {} rotations behind dropped replies",
        stats.calls.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.delayed.load(Ordering::Relaxed),
        delivered.len(),
        lost.len(),
        faults.lost_rotations.lock().unwrap().len(),
    );
    for ((endpoint, status, error), n) in &tally.by_kind {
        eprintln!("  {endpoint:>20} {status} {error:<24} {n}");
    }
    // The faults really were injected.
    assert!(stats.failed.load(Ordering::Relaxed) > 0);
    assert!(stats.dropped.load(Ordering::Relaxed) > 0);
    assert!(stats.delayed.load(Ordering::Relaxed) > 0);
}

const RATES: FaultRates = FaultRates {
    fail: 0.08,
    drop_reply: 0.04,
    delay: 0.3,
};

/// 300 concurrent flows per seed on one thread, Tokio's clock paused: injected delays reorder
/// the flows' store calls without costing wall time, and a seed replays the same run.
#[tokio::test(start_paused = true)]
async fn hundreds_of_flows_survive_a_faulty_store() {
    for seed in [1, 2, 3] {
        run(seed, 300, RATES, DelayMode::Timer).await;
    }
}

/// The same on two worker threads, so store calls really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_survive_a_faulty_store_in_parallel() {
    run(7, 150, RATES, DelayMode::Yield).await;
}

/// Heavy faults: a third of all calls fail or lose their reply.
#[tokio::test(start_paused = true)]
async fn flows_survive_heavy_faults() {
    let rates = FaultRates {
        fail: 0.2,
        drop_reply: 0.13,
        delay: 0.5,
    };
    run(11, 120, rates, DelayMode::Timer).await;
}

// ---------------------------------------------------------------------------------------------
// A lost reply must not sign a device out
// ---------------------------------------------------------------------------------------------

const NO_FAULTS: FaultRates = FaultRates {
    fail: 0.0,
    drop_reply: 0.0,
    delay: 0.0,
};

/// A device that holds fresh tokens, on an app with no random faults.
async fn device_with_tokens(app: &App) -> (String, String) {
    let (device_code, user_code) = app.authorize(Who::Public, 1).await.expect("authorizes");
    assert!(app.approve(&user_code, 1).await);
    app.poll(Who::Public, &device_code).await.0.expect("tokens")
}

/// The store applies a rotation but the reply is lost, and so is the endpoint's lookup of the
/// token it minted: the device is told 503. Its retry with the refresh token it still holds,
/// within the grace period, is answered with a fresh pair that revokes the pair it never
/// received, and the device keeps its grant.
#[tokio::test]
async fn a_lost_rotation_reply_does_not_sign_the_device_out() {
    let faults = Faults::new(0, NO_FAULTS, DelayMode::Yield);
    let app = App::new(faults.clone());
    let (first_access, first_refresh) = device_with_tokens(&app).await;
    let id = RefreshToken::new(first_refresh.as_str())
        .family()
        .expect("a v2 refresh token")
        .grant_id();

    faults.then("replace_grant", Scripted::DropReply);
    faults.then("access_token", Scripted::Fail);
    app.clock.advance(Duration::from_secs(10));
    assert_eq!(app.refresh(Who::Public, &first_refresh).await, None);
    // The rotation went through: the grant moved on, the old access token is gone.
    let now = app.clock.now();
    let grant = app
        .store
        .grant(&id, now)
        .await
        .unwrap()
        .expect("the grant lives");
    assert_eq!(
        grant.version, 1,
        "the rotation was applied behind the lost reply"
    );
    assert_eq!(faults.lost_rotations.lock().unwrap().len(), 1);
    let lost_access = grant.record.access_token;

    // The device retries with what it holds, 20 s later: within the 30 s grace period.
    app.clock.advance(Duration::from_secs(20));
    let (access, refresh) = app
        .refresh(Who::Public, &first_refresh)
        .await
        .expect("the retry is answered");
    assert_eq!(app.access(&access, &[OK]).await, StatusCode::OK);
    let invalid = (401, Some("invalid_token"));
    assert_eq!(
        app.access(&first_access, &[invalid]).await,
        StatusCode::UNAUTHORIZED
    );
    let now = app.clock.now();
    assert!(
        app.store
            .access_token(&lost_access, now)
            .await
            .unwrap()
            .is_none(),
        "the pair behind the lost reply must be revoked by the retry"
    );
    // Still one grant, with exactly one live access token, and it refreshes on.
    assert_eq!(app.store.grant_count(), 1);
    assert_eq!(app.store.access_token_count(), 1);
    let (next, _) = app
        .refresh(Who::Public, &refresh)
        .await
        .expect("the device keeps its grant");
    assert_eq!(app.access(&next, &[OK]).await, StatusCode::OK);
}

/// The same lost reply, but the endpoint's lookup of its minted token succeeds: the device is
/// answered at once with the pair that was stored.
#[tokio::test]
async fn a_lost_rotation_reply_is_recovered_when_the_token_is_found() {
    let faults = Faults::new(0, NO_FAULTS, DelayMode::Yield);
    let app = App::new(faults.clone());
    let (_, first_refresh) = device_with_tokens(&app).await;
    faults.then("replace_grant", Scripted::DropReply);
    let (access, refresh) = app
        .refresh(Who::Public, &first_refresh)
        .await
        .expect("recovered from the stored token");
    assert_eq!(faults.lost_rotations.lock().unwrap().len(), 1);
    assert_eq!(app.access(&access, &[OK]).await, StatusCode::OK);
    assert!(app.refresh(Who::Public, &refresh).await.is_some());
}

/// A store failure while the verification page looks a typed code up is no wrong code: the
/// attempt reserved in the end user's budget is given back, so an outage does not lock the
/// end user out (the default budget is five wrong codes per 15 minutes).
#[tokio::test]
async fn a_failed_lookup_does_not_count_as_a_wrong_code() {
    let faults = Faults::new(0, NO_FAULTS, DelayMode::Yield);
    let app = App::build(faults.clone(), false);
    let (_, user_code) = app.authorize(Who::Public, 1).await.expect("authorizes");
    for _ in 0..8 {
        faults.then("device_grant_by_user_code", Scripted::Fail);
        assert!(!app.approve(&user_code, 1).await, "the lookup failed");
    }
    assert!(
        app.approve(&user_code, 1).await,
        "store failures were counted as wrong codes"
    );
}

/// A failed store call is counted under its operation (and timed), and the failed lookup is
/// no wrong code in the metrics either.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread")]
async fn store_failures_are_counted_by_operation() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_device_flow::observe::metric;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let faults = Faults::new(0, NO_FAULTS, DelayMode::Yield);
    let app = App::build(faults.clone(), false);
    let (_, user_code) = app.authorize(Who::Public, 1).await.expect("authorizes");
    faults.then("device_grant_by_user_code", Scripted::Fail);
    assert!(!app.approve(&user_code, 1).await, "the lookup failed");
    let mut errors = BTreeMap::new();
    let mut timed = 0;
    let mut wrong_codes = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let operation = key
            .labels()
            .find(|l| l.key() == "operation")
            .map(|l| l.value().to_owned());
        match (key.name(), value) {
            (metric::STORE_ERRORS, DebugValue::Counter(n)) => {
                errors.insert(operation.unwrap_or_default(), n);
            }
            (metric::STORE_CALL_DURATION, DebugValue::Histogram(v))
                if operation.as_deref() == Some("device_grant_by_user_code") =>
            {
                timed += v.len();
            }
            (metric::WRONG_USER_CODES, DebugValue::Counter(n)) => wrong_codes += n,
            _ => {}
        }
    }
    assert_eq!(
        errors,
        BTreeMap::from([("device_grant_by_user_code".to_owned(), 1)])
    );
    assert_eq!(timed, 1);
    assert_eq!(wrong_codes, 0);
}

//! Property tests of the device grant's rules, at three levels:
//!
//! 1. the state machine alone ([`DeviceGrant::poll`] and [`DeviceGrant::decide`]) against a
//!    reference model, over random sequences of polls (by the right and a wrong client),
//!    decisions and clock moves;
//! 2. a [`MemoryStore`] driven exactly as the token endpoint and the verification page drive it
//!    (read the grant, ask the state machine, compare-and-swap the successor), with several
//!    pollers and a decider whose reads and swaps interleave at random, so stale reads race;
//! 3. the real services (`device_authorization()`, `token()`, `verification()` and a
//!    `require_oauth` layer) through `tower::ServiceExt::oneshot`, on a [`ManualClock`], with an
//!    end-user resolver reading the [`Subject`] from the request extensions, against a model of
//!    RFC 8628 and RFC 6749 6 that predicts every status and `error`.
//!
//! Properties: a grant yields at most one token response; no way out of a final state (denied
//! stays `access_denied` until expiry, redeemed stays `invalid_grant`); the polling interval
//! only grows; every response is an RFC response of its endpoint; a refresh token rotates once,
//! may be retried within the grace period (each retry replacing the pair before), and any
//! other use of a grant's old refresh token revokes the whole grant, access token included.

mod fuzz_harness;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::codes::{AccessToken, DeviceCode, FamilyKey, RefreshToken};
use tower_device_flow::family::{Grant, DEFAULT_REFRESH_GRACE};
use tower_device_flow::grant::{DecideError, Decision, DeviceGrant, GrantStatus, PollOutcome};
use tower_device_flow::store::{Insert, IssuedGrant};
use tower_device_flow::ErrorCode;
use tower_device_flow::{
    Client, ClientId, Clock, DeviceFlow, Digest, ManualClock, MemoryStore, Scope, Store, Subject,
    Timestamp, TokenInfo, Versioned,
};

use fuzz_harness::{block_on, check_reply, Endpoint, Reply};

const START: u64 = 1_700_000_000_000;
/// Device and user codes live 60 s; the store keeps them 600 s longer.
const EXPIRES_MS: u64 = 60_000;
const RETAIN_MS: u64 = 600_000;
const INTERVAL_S: u32 = 5;
const ACCESS_MS: u64 = 3_600_000;
const REFRESH_MS: u64 = 300_000;
/// How long a just-rotated refresh token may be retried (the default).
const GRACE_MS: u64 = DEFAULT_REFRESH_GRACE.as_millis() as u64;
/// The verification page's default limit on wrong codes per end user.
const FAILURES_MAX: u64 = 5;
const FAILURE_WINDOW_MS: u64 = 900_000;
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures print their minimal case; nothing is written to the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

/// A clock move: mostly a few seconds (polling rhythm), sometimes past expiry or past the
/// store's retention or a refresh token's life.
fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..=7_000,
        1 => Just(EXPIRES_MS + 1_000),
        1 => Just(REFRESH_MS + 1_000),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. The state machine alone
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum MachineOp {
    Poll { wrong_client: bool },
    Decide { approve: bool },
    Advance(u64),
}

fn machine_op() -> impl Strategy<Value = MachineOp> {
    prop_oneof![
        5 => prop::bool::weighted(0.2).prop_map(|wrong_client| MachineOp::Poll { wrong_client }),
        2 => any::<bool>().prop_map(|approve| MachineOp::Decide { approve }),
        3 => advance().prop_map(MachineOp::Advance),
    ]
}

/// What RFC 8628 3.5 says a poll by the right client means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pending,
    SlowDown,
    Issue,
    Refuse(ErrorCode),
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn state_machine_follows_rfc_8628(
        interval in 0u32..=10,
        ops in prop::collection::vec(machine_op(), 1..80),
    ) {
        let tv = ClientId::new("tv");
        let mut now = START;
        let mut grant = DeviceGrant::new(
            tv.clone(),
            scope("profile"),
            Digest::of(b"user code"),
            t(now),
            Duration::from_millis(EXPIRES_MS),
            Duration::from_secs(u64::from(interval)),
        );
        let mut issued = 0;
        for op in ops {
            let before = grant.clone();
            match op {
                MachineOp::Advance(ms) => now += ms,
                MachineOp::Poll { wrong_client: true } => {
                    // Another client learns nothing and changes nothing.
                    let outcome = grant.poll(&ClientId::new("evil"), t(now));
                    prop_assert_eq!(outcome, PollOutcome::Refuse(ErrorCode::InvalidGrant));
                }
                MachineOp::Poll { wrong_client: false } => {
                    let expired = now >= START + EXPIRES_MS;
                    let too_soon = grant
                        .last_poll
                        .is_some_and(|l| now < l.as_unix_millis() + u64::from(grant.interval) * 1000);
                    let expect = match &grant.status {
                        GrantStatus::Redeemed => Expect::Refuse(ErrorCode::InvalidGrant),
                        _ if expired => Expect::Refuse(ErrorCode::ExpiredToken),
                        GrantStatus::Denied => Expect::Refuse(ErrorCode::AccessDenied),
                        GrantStatus::Approved { .. } => Expect::Issue,
                        GrantStatus::Pending if too_soon => Expect::SlowDown,
                        GrantStatus::Pending => Expect::Pending,
                    };
                    match (grant.poll(&tv, t(now)), expect) {
                        (PollOutcome::Refuse(code), Expect::Refuse(want)) => {
                            prop_assert_eq!(code, want)
                        }
                        (PollOutcome::Pending { next }, Expect::Pending) => {
                            if let Some(next) = next {
                                prop_assert_eq!(next.last_poll, Some(t(now)));
                                prop_assert_eq!(next.interval, grant.interval);
                                grant = next;
                            } else {
                                prop_assert_eq!(grant.interval, 0);
                            }
                        }
                        (PollOutcome::SlowDown { next }, Expect::SlowDown) => {
                            prop_assert_eq!(next.interval, grant.interval + 5);
                            prop_assert_eq!(next.last_poll, Some(t(now)));
                            grant = next;
                        }
                        (PollOutcome::Issue { next, subject, scope: s, approved_at }, Expect::Issue) => {
                            prop_assert_eq!(subject.as_str(), "alice");
                            prop_assert!(approved_at.as_unix_millis() <= now);
                            prop_assert_eq!(s.as_str(), "profile");
                            prop_assert_eq!(&next.status, &GrantStatus::Redeemed);
                            issued += 1;
                            grant = next;
                        }
                        (got, want) => prop_assert!(false, "poll gave {:?}, expected {:?}", got, want),
                    }
                }
                MachineOp::Decide { approve } => {
                    let decision = if approve {
                        Decision::Approve(Subject::new("alice"))
                    } else {
                        Decision::Deny
                    };
                    let result = grant.decide(decision, t(now));
                    if grant.status != GrantStatus::Pending {
                        prop_assert_eq!(result, Err(DecideError::AlreadyDecided));
                    } else if now >= START + EXPIRES_MS {
                        prop_assert_eq!(result, Err(DecideError::Expired));
                    } else {
                        let next = result.unwrap();
                        prop_assert_eq!(next.interval, grant.interval);
                        prop_assert_eq!(next.last_poll, grant.last_poll);
                        grant = next;
                    }
                }
            }
            // Invariants of every step.
            prop_assert!(issued <= 1, "issued twice");
            prop_assert!(grant.interval >= before.interval, "the interval shrank");
            prop_assert_eq!(&grant.client_id, &before.client_id);
            prop_assert_eq!(&grant.scope, &before.scope);
            prop_assert_eq!(grant.expires_at, before.expires_at);
            match &before.status {
                GrantStatus::Pending => {}
                GrantStatus::Approved { .. } => {
                    let forward =
                        matches!(grant.status, GrantStatus::Approved { .. } | GrantStatus::Redeemed);
                    prop_assert!(forward, "left approved for {:?}", grant.status);
                }
                final_status => prop_assert_eq!(&grant.status, final_status),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A MemoryStore driven as the services drive it, with racing stale reads
// ---------------------------------------------------------------------------------------------

const POLLERS: usize = 3;

#[derive(Clone, Debug)]
enum StoreOp {
    /// Poller `i` reads the grant (as a poll does before deciding).
    Read(usize),
    /// Poller `i` decides on what it read at the current time and swaps.
    Swap {
        poller: usize,
        wrong_client: bool,
    },
    /// The verification page reads the grant by its user code.
    DecideRead,
    /// ... and swaps its decision.
    DecideSwap {
        approve: bool,
    },
    Advance(u64),
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        4 => (0..POLLERS).prop_map(StoreOp::Read),
        4 => (0..POLLERS, prop::bool::weighted(0.15))
            .prop_map(|(poller, wrong_client)| StoreOp::Swap { poller, wrong_client }),
        1 => Just(StoreOp::DecideRead),
        1 => prop::bool::weighted(0.7).prop_map(|approve| StoreOp::DecideSwap { approve }),
        2 => advance().prop_map(StoreOp::Advance),
    ]
}

/// The grant a redemption stores, as the token endpoint builds it.
fn dummy_grant(now: Timestamp) -> IssuedGrant {
    let family = FamilyKey::generate();
    let access = AccessToken::generate();
    let refresh = RefreshToken::generate(&family);
    let expires_at = now.saturating_add(Duration::from_secs(3600));
    let grant = Grant {
        id: family.grant_id(),
        client_id: ClientId::new("tv"),
        subject: Subject::new("alice"),
        scope: scope("profile"),
        audience: None,
        approved_at: now,
        last_used_at: now,
        expires_at,
        access_token: access.digest(),
        refresh_token: Some(refresh.digest()),
        superseded: None,
        cnf: None,
    };
    let access = TokenInfo::new(
        grant.subject.clone(),
        grant.client_id.clone(),
        grant.scope.clone(),
        expires_at,
    )
    .with_grant_id(Some(grant.id));
    IssuedGrant { grant, access }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn store_compare_and_swap_issues_once(ops in prop::collection::vec(store_op(), 1..80)) {
        block_on(async {
            let store = MemoryStore::builder().shards(2).build();
            let tv = ClientId::new("tv");
            let key = Digest::of(b"device code");
            let user_code = Digest::of(b"user code");
            let mut now = START;
            let grant = DeviceGrant::new(
                tv.clone(),
                scope("profile"),
                user_code,
                t(now),
                Duration::from_millis(EXPIRES_MS),
                Duration::from_secs(u64::from(INTERVAL_S)),
            );
            prop_assert_eq!(
                store.insert_device_grant(key, grant, t(now)).await.unwrap(),
                Insert::Inserted
            );
            let mut snapshots: [Option<Versioned<DeviceGrant>>; POLLERS] = Default::default();
            let mut decider: Option<Versioned<DeviceGrant>> = None;
            let mut last: Versioned<DeviceGrant> = store.device_grant(&key, t(now)).await.unwrap().unwrap();
            let mut issued = 0;
            for op in ops {
                match op {
                    StoreOp::Advance(ms) => now += ms,
                    StoreOp::Read(i) => snapshots[i] = store.device_grant(&key, t(now)).await.unwrap(),
                    StoreOp::DecideRead => {
                        decider = store
                            .device_grant_by_user_code(&user_code, t(now))
                            .await
                            .unwrap()
                            .map(|(k, g)| {
                                assert_eq!(k, key);
                                g
                            });
                    }
                    StoreOp::Swap { poller, wrong_client } => {
                        let Some(seen) = snapshots[poller].take() else { continue };
                        let client = if wrong_client { ClientId::new("evil") } else { tv.clone() };
                        let current = store.device_grant(&key, t(now)).await.unwrap();
                        let (next, issue) = match seen.record.poll(&client, t(now)) {
                            PollOutcome::Refuse(_) | PollOutcome::Pending { next: None } => continue,
                            PollOutcome::Pending { next: Some(next) }
                            | PollOutcome::SlowDown { next } => (next, None),
                            PollOutcome::Issue { next, .. } => (next, Some(dummy_grant(t(now)))),
                        };
                        prop_assert!(!wrong_client, "a wrong client's poll wants to write");
                        let issuing = issue.as_ref().map(|i| i.grant.id);
                        let swapped = store
                            .replace_device_grant(&key, seen.version, next, issue, t(now))
                            .await
                            .unwrap();
                        // The swap succeeds exactly when nothing changed since the read.
                        prop_assert_eq!(
                            swapped,
                            current.as_ref().is_some_and(|c| c.version == seen.version)
                        );
                        if let Some(id) = issuing {
                            // The grant is stored exactly when the swap won.
                            let stored = store.grant(&id, t(now)).await.unwrap();
                            prop_assert_eq!(stored.is_some(), swapped);
                            if swapped {
                                issued += 1;
                            }
                        }
                    }
                    StoreOp::DecideSwap { approve } => {
                        let Some(seen) = decider.take() else { continue };
                        let decision = if approve {
                            Decision::Approve(Subject::new("alice"))
                        } else {
                            Decision::Deny
                        };
                        let Ok(next) = seen.record.decide(decision, t(now)) else { continue };
                        let current = store.device_grant(&key, t(now)).await.unwrap();
                        let swapped = store
                            .replace_device_grant(&key, seen.version, next, None, t(now))
                            .await
                            .unwrap();
                        prop_assert_eq!(
                            swapped,
                            current.as_ref().is_some_and(|c| c.version == seen.version)
                        );
                    }
                }
                prop_assert!(issued <= 1, "two polls issued tokens for one grant");
                // Past retention the record is gone; until then check it only moves forward.
                let Some(current) = store.device_grant(&key, t(now)).await.unwrap() else {
                    prop_assert!(now >= START + EXPIRES_MS + RETAIN_MS);
                    continue;
                };
                prop_assert!(current.version >= last.version);
                prop_assert!(current.record.interval >= last.record.interval, "the interval shrank");
                match &last.record.status {
                    GrantStatus::Pending => {}
                    GrantStatus::Approved { .. } => {
                        let forward = matches!(
                            current.record.status,
                            GrantStatus::Approved { .. } | GrantStatus::Redeemed
                        );
                        prop_assert!(forward, "left approved for {:?}", current.record.status);
                    }
                    final_status => prop_assert_eq!(&current.record.status, final_status),
                }
                prop_assert_eq!(issued == 1, current.record.status == GrantStatus::Redeemed);
                last = current;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The real services against a model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Device authorization by `tv` (scope `email profile`) or `other` (scope `profile`).
    Create {
        other: bool,
    },
    /// A poll of flow `flow` (modulo the number of flows) by its client or the other one.
    Poll {
        flow: usize,
        wrong_client: bool,
    },
    /// Alice approves or denies flow `flow` on the verification page.
    Decide {
        flow: usize,
        approve: bool,
    },
    Advance(u64),
    /// A refresh with refresh token `token` (every one ever issued, used or not).
    Refresh {
        token: usize,
        wrong_client: bool,
        scope: Option<&'static str>,
    },
    /// A request to a route guarded by `profile` with access token `token`.
    Access {
        token: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|other| Op::Create { other }),
        6 => (any::<usize>(), prop::bool::weighted(0.15))
            .prop_map(|(flow, wrong_client)| Op::Poll { flow, wrong_client }),
        3 => (any::<usize>(), prop::bool::weighted(0.7))
            .prop_map(|(flow, approve)| Op::Decide { flow, approve }),
        4 => advance().prop_map(Op::Advance),
        3 => (
            any::<usize>(),
            prop::bool::weighted(0.15),
            prop_oneof![Just(None), Just(Some("profile")), Just(Some("email"))],
        )
            .prop_map(|(token, wrong_client, scope)| Op::Refresh { token, wrong_client, scope }),
        2 => any::<usize>().prop_map(|token| Op::Access { token }),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum St {
    Pending,
    Approved,
    Denied,
    Redeemed,
}

#[derive(Debug)]
struct FlowModel {
    device_code: String,
    user_code: String,
    client: &'static str,
    scope: &'static str,
    expires_at: u64,
    interval: u32,
    last_poll: Option<u64>,
    status: St,
    token_responses: u32,
}

/// A refresh token ever issued, and the grant it belongs to.
#[derive(Debug)]
struct RefreshModel {
    token: String,
    grant: usize,
}

/// An approved device's grant: its token family (`crate::family` in the model's words).
#[derive(Debug)]
struct GrantModel {
    client: &'static str,
    /// The scope the end user approved: the most a refresh may ask for.
    scope: String,
    /// The live refresh token.
    live: usize,
    /// The refresh token the latest rotation replaced, and when.
    superseded: Option<(usize, u64)>,
    /// The live access token.
    access: usize,
    expires_at: u64,
    revoked: bool,
}

#[derive(Debug)]
struct AccessModel {
    token: String,
    scope: String,
    expires_at: u64,
    revoked: bool,
}

#[derive(Default, Debug)]
struct Model {
    flows: Vec<FlowModel>,
    grants: Vec<GrantModel>,
    refresh: Vec<RefreshModel>,
    access: Vec<AccessModel>,
    failures: u64,
    failures_expire: u64,
}

fn other_client(c: &str) -> &'static str {
    if c == "tv" {
        "other"
    } else {
        "tv"
    }
}

/// What a request should get: a status and, for refusals, the `error`.
type Want = (u16, Option<&'static str>);

struct Harness {
    flow: DeviceFlow<MemoryStore>,
    clock: ManualClock,
    /// Every kind of answer seen: `"{label} {status} {error}"`.
    seen: Mutex<BTreeSet<String>>,
}

async fn me(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
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

impl Harness {
    fn new() -> Harness {
        let store = MemoryStore::builder()
            .shards(2)
            .client(Client::public("tv", scope("email profile")))
            .client(Client::public("other", scope("profile")))
            .build();
        let clock = ManualClock::new(t(START));
        let flow = DeviceFlow::builder(store)
            .issuer("https://auth.example.com")
            .clock(clock.clone())
            .expires_in(Duration::from_millis(EXPIRES_MS))
            .interval(Duration::from_secs(u64::from(INTERVAL_S)))
            .access_token_lifetime(Duration::from_millis(ACCESS_MS))
            .refresh_token_lifetime(Some(Duration::from_millis(REFRESH_MS)))
            .end_user(|parts: &Parts| parts.extensions.get::<Subject>().cloned())
            .build();
        Harness {
            flow,
            clock,
            seen: Mutex::default(),
        }
    }

    async fn send(&self, label: &str, endpoint: Endpoint, req: Request<Full<Bytes>>) -> Reply {
        let reply = match endpoint {
            Endpoint::DeviceAuthorization => {
                Reply::read(self.flow.device_authorization().oneshot(req).await.unwrap()).await
            }
            Endpoint::Token => Reply::read(self.flow.token().oneshot(req).await.unwrap()).await,
            Endpoint::Verification => {
                Reply::read(self.flow.verification().oneshot(req).await.unwrap()).await
            }
            Endpoint::Guarded => {
                let guarded = self.flow.require_oauth("profile").layer(service_fn(me));
                Reply::read(guarded.oneshot(req).await.unwrap()).await
            }
            other => unreachable!("{other:?}"),
        };
        let error = check_reply(endpoint, &reply, true).unwrap_or_default();
        let status = reply.status.as_u16();
        self.seen
            .lock()
            .unwrap()
            .insert(format!("{label} {status} {error}").trim_end().to_owned());
        reply
    }
}

fn assert_want(reply: &Reply, want: Want, what: &str) {
    let got = (reply.status.as_u16(), reply.error());
    assert_eq!(
        (got.0, got.1.as_deref()),
        want,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

impl Model {
    /// Records the pair of a 200 token response for grant `grant`: the access token carries
    /// `scope` (the grant keeps the whole approved scope, RFC 6749 6: a later refresh may ask
    /// for anything originally granted). Returns the indices of the refresh and access token.
    fn pair(&mut self, reply: &Reply, scope: &str, grant: usize, now: u64) -> (usize, usize) {
        let body = reply.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], scope);
        assert_eq!(body["expires_in"], ACCESS_MS / 1000);
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(refresh.len(), 64, "a v2 refresh token is 64 characters");
        self.access.push(AccessModel {
            token: body["access_token"].as_str().unwrap().to_owned(),
            scope: scope.to_owned(),
            expires_at: now + ACCESS_MS,
            revoked: false,
        });
        self.refresh.push(RefreshModel {
            token: refresh,
            grant,
        });
        (self.refresh.len() - 1, self.access.len() - 1)
    }

    /// A redemption's tokens: a new grant.
    fn redeemed(&mut self, reply: &Reply, client: &'static str, scope: &str, now: u64) {
        let grant = self.grants.len();
        let (live, access) = self.pair(reply, scope, grant, now);
        self.grants.push(GrantModel {
            client,
            scope: scope.to_owned(),
            live,
            superseded: None,
            access,
            expires_at: now + REFRESH_MS,
            revoked: false,
        });
    }
}

/// What a presented refresh token of a live grant is (`family::Presented` in the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presentation {
    Current,
    Retry,
    Reused,
}

/// Runs `ops` against the services and the model; returns the kinds of answers seen.
async fn run_services(ops: Vec<Op>) -> BTreeSet<String> {
    let h = Harness::new();
    let mut m = Model::default();
    let mut last_interval: Vec<u32> = Vec::new();
    for op in ops {
        let now = h.clock.now().as_unix_millis();
        match op {
            Op::Advance(ms) => h.clock.advance(Duration::from_millis(ms)),
            Op::Create { other } => {
                let client = if other { "other" } else { "tv" };
                let req = form_post("/oauth/device_authorization", format!("client_id={client}"));
                let reply = h.send("create", Endpoint::DeviceAuthorization, req).await;
                assert_want(&reply, (200, None), "device authorization");
                let body = reply.json();
                assert_eq!(body["interval"], INTERVAL_S);
                assert_eq!(body["expires_in"], EXPIRES_MS / 1000);
                m.flows.push(FlowModel {
                    device_code: body["device_code"].as_str().unwrap().to_owned(),
                    user_code: body["user_code"].as_str().unwrap().to_owned(),
                    client,
                    scope: if other { "profile" } else { "email profile" },
                    expires_at: now + EXPIRES_MS,
                    interval: INTERVAL_S,
                    last_poll: None,
                    status: St::Pending,
                    token_responses: 0,
                });
                last_interval.push(INTERVAL_S);
            }
            Op::Poll { flow, wrong_client } => {
                let Some(i) = (!m.flows.is_empty()).then(|| flow % m.flows.len()) else {
                    let body =
                        format!("grant_type={DEVICE_CODE_GRANT}&device_code=unknown&client_id=tv");
                    let reply = h
                        .send("poll", Endpoint::Token, form_post("/oauth/token", body))
                        .await;
                    assert_want(&reply, (400, Some("invalid_grant")), "unknown code");
                    continue;
                };
                let f = &mut m.flows[i];
                let client = if wrong_client {
                    other_client(f.client)
                } else {
                    f.client
                };
                let body = format!(
                    "grant_type={DEVICE_CODE_GRANT}&device_code={}&client_id={client}",
                    f.device_code
                );
                let gone = now >= f.expires_at + RETAIN_MS;
                let too_soon = f
                    .last_poll
                    .is_some_and(|l| now < l + u64::from(f.interval) * 1000);
                let want: Want = if gone || wrong_client || f.status == St::Redeemed {
                    (400, Some("invalid_grant"))
                } else if now >= f.expires_at {
                    (400, Some("expired_token"))
                } else if f.status == St::Denied {
                    (400, Some("access_denied"))
                } else if f.status == St::Approved {
                    (200, None)
                } else if too_soon {
                    (400, Some("slow_down"))
                } else {
                    (400, Some("authorization_pending"))
                };
                let reply = h
                    .send("poll", Endpoint::Token, form_post("/oauth/token", body))
                    .await;
                assert_want(&reply, want, &format!("poll of {f:?} at {now}"));
                match want {
                    (200, _) => {
                        f.status = St::Redeemed;
                        f.token_responses += 1;
                        assert_eq!(f.token_responses, 1, "two token responses for one grant");
                        let (client, scope) = (f.client, f.scope);
                        m.redeemed(&reply, client, scope, now);
                    }
                    (_, Some("slow_down")) => {
                        f.interval += 5;
                        f.last_poll = Some(now);
                    }
                    (_, Some("authorization_pending")) => f.last_poll = Some(now),
                    _ => {}
                }
            }
            Op::Decide { flow, approve } => {
                let (user_code, i) = match m.flows.len() {
                    0 => ("ZZZZ-ZZZZ".to_owned(), None),
                    n => (m.flows[flow % n].user_code.clone(), Some(flow % n)),
                };
                let decision = if approve { "approve" } else { "deny" };
                let mut req = form_post(
                    "/device",
                    format!("user_code={user_code}&decision={decision}"),
                );
                req.headers_mut()
                    .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                req.extensions_mut().insert(Subject::new("alice"));
                let found = i.filter(|&i| now < m.flows[i].expires_at + RETAIN_MS);
                // Store v2: every attempt first reserves a place in the budget (a right code
                // gives it back), so the fixed window starts with the first attempt made while
                // none is open, right code or wrong.
                if m.failures_expire <= now {
                    m.failures = 0;
                    m.failures_expire = now + FAILURE_WINDOW_MS;
                }
                let want: Want = if m.failures >= FAILURES_MAX {
                    (429, Some("slow_down"))
                } else {
                    match found.map(|i| &m.flows[i]) {
                        None => (400, Some("invalid_grant")),
                        Some(f) if now >= f.expires_at => (400, Some("expired_token")),
                        Some(f) if f.status != St::Pending => (409, Some("invalid_grant")),
                        Some(_) => (200, None),
                    }
                };
                let reply = h.send("decide", Endpoint::Verification, req).await;
                assert_want(
                    &reply,
                    want,
                    &format!("decision on {:?}", i.map(|i| &m.flows[i])),
                );
                match (want, found) {
                    ((200, _), Some(i)) => {
                        let status = if approve { "approved" } else { "denied" };
                        assert_eq!(reply.json()["status"], status);
                        m.flows[i].status = if approve { St::Approved } else { St::Denied };
                    }
                    // A wrong code counts against the end user.
                    ((400, _), None) => m.failures += 1,
                    _ => {}
                }
            }
            Op::Refresh {
                token,
                wrong_client,
                scope: requested,
            } => {
                let i = (!m.refresh.is_empty()).then(|| token % m.refresh.len());
                let (token, client) = match i.map(|i| &m.refresh[i]) {
                    None => ("unknown".to_owned(), "tv"),
                    Some(r) => {
                        let owner = m.grants[r.grant].client;
                        let client = if wrong_client {
                            other_client(owner)
                        } else {
                            owner
                        };
                        (r.token.clone(), client)
                    }
                };
                let mut body =
                    format!("grant_type=refresh_token&refresh_token={token}&client_id={client}");
                if let Some(s) = requested {
                    body.push_str(&format!("&scope={s}"));
                }
                // A token of a grant that is gone, or another client's request: refused,
                // nothing changes. Otherwise the grant's rules decide (family.rs).
                let presentation = i.and_then(|i| {
                    let g = &m.grants[m.refresh[i].grant];
                    if g.revoked || wrong_client || now >= g.expires_at {
                        None
                    } else if g.live == i {
                        Some(Presentation::Current)
                    } else if g
                        .superseded
                        .is_some_and(|(s, at)| s == i && now < at + GRACE_MS)
                    {
                        Some(Presentation::Retry)
                    } else {
                        Some(Presentation::Reused)
                    }
                });
                let want: Want = match (presentation, i.map(|i| &m.grants[m.refresh[i].grant])) {
                    (None | Some(Presentation::Reused), _) | (_, None) => {
                        (400, Some("invalid_grant"))
                    }
                    (_, Some(g))
                        if requested.is_some_and(|s| !g.scope.split(' ').any(|x| x == s)) =>
                    {
                        (400, Some("invalid_scope"))
                    }
                    _ => (200, None),
                };
                let reply = h
                    .send("refresh", Endpoint::Token, form_post("/oauth/token", body))
                    .await;
                assert_want(
                    &reply,
                    want,
                    &format!(
                        "refresh {:?} ({presentation:?}) of {:?}",
                        i.map(|i| &m.refresh[i]),
                        i.map(|i| &m.grants[m.refresh[i].grant])
                    ),
                );
                let Some(i) = i else { continue };
                let g = m.refresh[i].grant;
                match (presentation, want.0) {
                    (Some(Presentation::Reused), _) => {
                        // Reuse revokes the grant and its live access token.
                        m.grants[g].revoked = true;
                        let a = m.grants[g].access;
                        m.access[a].revoked = true;
                        h.seen.lock().unwrap().insert("refresh reuse".into());
                    }
                    (Some(how), 200) => {
                        let old_access = m.grants[g].access;
                        m.access[old_access].revoked = true;
                        let scope = requested.map_or(m.grants[g].scope.clone(), str::to_owned);
                        let (live, access) = m.pair(&reply, &scope, g, now);
                        let grant = &mut m.grants[g];
                        if how == Presentation::Current {
                            grant.superseded = Some((grant.live, now));
                        } else {
                            h.seen.lock().unwrap().insert("refresh retry".into());
                        }
                        grant.live = live;
                        grant.access = access;
                        grant.expires_at = now + REFRESH_MS;
                    }
                    _ => {}
                }
            }
            Op::Access { token } => {
                if m.access.is_empty() {
                    continue;
                }
                let a = &m.access[token % m.access.len()];
                let req = Request::get("/me")
                    .header(header::AUTHORIZATION, format!("Bearer {}", a.token))
                    .body(Full::default())
                    .unwrap();
                let want: Want = if a.revoked || now >= a.expires_at {
                    (401, Some("invalid_token"))
                } else if !a.scope.split(' ').any(|s| s == "profile") {
                    (403, Some("insufficient_scope"))
                } else {
                    (200, None)
                };
                let reply = h.send("access", Endpoint::Guarded, req).await;
                if want.0 == 200 {
                    assert_eq!(reply.status, StatusCode::OK);
                    assert_eq!(reply.body, "alice");
                } else {
                    assert_want(&reply, want, &format!("access with {a:?}"));
                }
            }
        }
        // The store agrees with the model, and no interval ever shrinks.
        let now = h.clock.now();
        for (i, f) in m.flows.iter().enumerate() {
            let key = DeviceCode::new(f.device_code.as_str()).digest();
            let Some(g) = h.flow.store().device_grant(&key, now).await.unwrap() else {
                assert!(
                    now.as_unix_millis() >= f.expires_at + RETAIN_MS,
                    "{f:?} vanished"
                );
                continue;
            };
            assert_eq!(g.record.interval, f.interval, "{f:?}");
            assert!(g.record.interval >= last_interval[i], "the interval shrank");
            last_interval[i] = g.record.interval;
            let status = match g.record.status {
                GrantStatus::Pending => St::Pending,
                GrantStatus::Approved { subject, .. } => {
                    assert_eq!(subject.as_str(), "alice");
                    St::Approved
                }
                GrantStatus::Denied => St::Denied,
                GrantStatus::Redeemed => St::Redeemed,
            };
            assert_eq!(status, f.status, "{f:?}");
        }
    }
    h.seen.into_inner().unwrap()
}

#[test]
fn services_follow_the_rfcs() {
    let mut runner = TestRunner::new(config(256));
    let seen = Mutex::new(BTreeSet::new());
    let result = runner.run(&prop::collection::vec(op(), 1..70), |ops| {
        let kinds = block_on(run_services(ops));
        seen.lock().unwrap().extend(kinds);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches every answer the model knows (so the properties are not vacuous).
    let seen = seen.into_inner().unwrap();
    let expected = [
        "create 200",
        "poll 200",
        "poll 400 authorization_pending",
        "poll 400 slow_down",
        "poll 400 access_denied",
        "poll 400 expired_token",
        "poll 400 invalid_grant",
        "decide 200",
        "decide 409 invalid_grant",
        "decide 400 expired_token",
        "decide 400 invalid_grant",
        "refresh 200",
        "refresh 400 invalid_grant",
        "refresh 400 invalid_scope",
        "refresh retry",
        "refresh reuse",
        "access 200",
        "access 401 invalid_token",
        "access 403 insufficient_scope",
    ];
    for kind in expected {
        assert!(seen.contains(kind), "never saw `{kind}`; saw {seen:?}");
    }
}

/// A fixed walk through the model, so a change that breaks the model's basic path shows up
/// as a plain failure rather than only as a shrunk proptest case.
#[test]
fn services_model_smoke() {
    let seen = block_on(run_services(vec![
        Op::Create { other: false },
        Op::Poll {
            flow: 0,
            wrong_client: false,
        },
        Op::Poll {
            flow: 0,
            wrong_client: false,
        },
        Op::Advance(10_000),
        Op::Poll {
            flow: 0,
            wrong_client: true,
        },
        Op::Decide {
            flow: 0,
            approve: true,
        },
        Op::Decide {
            flow: 0,
            approve: false,
        },
        Op::Poll {
            flow: 0,
            wrong_client: false,
        },
        Op::Poll {
            flow: 0,
            wrong_client: false,
        },
        Op::Access { token: 0 },
        Op::Refresh {
            token: 0,
            wrong_client: true,
            scope: None,
        },
        Op::Refresh {
            token: 0,
            wrong_client: false,
            scope: Some("profile"),
        },
        Op::Refresh {
            token: 0,
            wrong_client: false,
            scope: None,
        },
        Op::Access { token: 0 },
        Op::Access { token: 1 },
        Op::Refresh {
            token: 1,
            wrong_client: false,
            scope: Some("email"),
        },
        Op::Create { other: true },
        Op::Decide {
            flow: 1,
            approve: false,
        },
        Op::Poll {
            flow: 1,
            wrong_client: false,
        },
        Op::Advance(EXPIRES_MS),
        Op::Poll {
            flow: 1,
            wrong_client: false,
        },
        Op::Advance(RETAIN_MS),
        Op::Poll {
            flow: 1,
            wrong_client: false,
        },
        Op::Decide {
            flow: 1,
            approve: true,
        },
    ]));
    for kind in [
        "poll 200",
        "refresh 200",
        "access 401 invalid_token",
        "poll 400 expired_token",
        "decide 400 invalid_grant",
    ] {
        assert!(seen.contains(kind), "{kind}: {seen:?}");
    }
}

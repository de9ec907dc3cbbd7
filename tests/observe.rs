//! What an operator sees: the metrics a flow records (read back from a per-test recorder,
//! `metrics-util`'s `DebuggingRecorder` installed for this thread only, so tests running in
//! parallel do not see each other's), the audit events it hands its sink, and the README's
//! list of metrics against the names in code.
//!
//! Each test drives the endpoints in process (`oneshot` on the endpoints layer, on the
//! current-thread runtime that the thread-local recorder needs) with a `ManualClock`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::observe::{metric, AuditAction, AuditEvent, Limit, RevocationReason};
use tower_device_flow::{
    BasicLogin, Client, ClientAddr, DeviceFlow, ManualClock, MemoryStore, Scope, Subject, Timestamp,
};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const DEVICE: &str = "203.0.113.7:40000";
const BROWSER: &str = "198.51.100.9:50000";

struct Harness {
    flow: DeviceFlow<MemoryStore>,
    clock: ManualClock,
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

type Body = Full<Bytes>;

fn harness(
    builder: impl FnOnce(
        tower_device_flow::DeviceFlowBuilder<MemoryStore>,
    ) -> tower_device_flow::DeviceFlowBuilder<MemoryStore>,
) -> Harness {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
    let store = MemoryStore::builder()
        .client(Client::public("tv", Scope::parse("profile email").unwrap()))
        .build();
    let events: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
    let sink = events.clone();
    let flow = builder(
        DeviceFlow::builder(store)
            .clock(clock.clone())
            .issuer("https://auth.example.com")
            .end_user(BasicLogin::users("device", [("alice", "pw")]))
            .audit(move |e: &AuditEvent| sink.lock().unwrap().push(e.clone())),
    )
    .build();
    Harness {
        flow,
        clock,
        events,
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let api =
            self.flow
                .require_oauth("profile")
                .layer(service_fn(|_req: Request<Body>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::from("{}")))
                }));
        let res = self
            .flow
            .endpoints_layer()
            .layer(api)
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(
        &self,
        path: &str,
        from: &str,
        body: String,
        auth: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let mut req = req.body(Full::from(body)).unwrap();
        let addr: SocketAddr = from.parse().unwrap();
        req.extensions_mut().insert(ClientAddr(addr));
        self.send(req).await
    }

    async fn authorize(&self) -> (String, String) {
        let (status, body) = self
            .post(
                "/oauth/device_authorization",
                DEVICE,
                "client_id=tv".into(),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["device_code"].as_str().unwrap().to_owned(),
            body["user_code"].as_str().unwrap().to_owned(),
        )
    }

    async fn poll(&self, device_code: &str) -> (StatusCode, Value) {
        let body = format!("grant_type={GRANT}&client_id=tv&device_code={device_code}");
        self.post("/oauth/token", DEVICE, body, None).await
    }

    async fn refresh(&self, token: &str) -> (StatusCode, Value) {
        let body = format!("grant_type=refresh_token&client_id=tv&refresh_token={token}");
        self.post("/oauth/token", DEVICE, body, None).await
    }

    async fn decide(&self, user_code: &str, decision: &str) -> StatusCode {
        let body = format!("user_code={user_code}&decision={decision}");
        self.post("/device", BROWSER, body, Some(&alice())).await.0
    }

    async fn me(&self, token: Option<&str>) -> StatusCode {
        let mut req = Request::get("/api/me");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(Full::default()).unwrap()).await.0
    }

    fn events(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn alice() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    )
}

fn device_ip() -> Option<std::net::IpAddr> {
    Some(DEVICE.parse::<SocketAddr>().unwrap().ip())
}

fn browser_ip() -> Option<std::net::IpAddr> {
    Some(BROWSER.parse::<SocketAddr>().unwrap().ip())
}

/// Runs a whole device flow, with a refresh, a retry, a reuse, a denial, an expiry, a
/// revocation, a wrong code and a cap; returns the tokens it saw.
async fn whole_flow(h: &Harness) -> Vec<String> {
    let mut secrets = Vec::new();
    // 1. Created, pending, too fast, a wrong code, approved, issued, spent.
    let (device_code, user_code) = h.authorize().await;
    secrets.extend([device_code.clone(), user_code.clone()]);
    assert_eq!(
        h.poll(&device_code).await.1["error"],
        "authorization_pending"
    );
    assert_eq!(h.poll(&device_code).await.1["error"], "slow_down");
    assert_eq!(h.decide("BBBB-BBBB", "approve").await, 400);
    assert_eq!(h.decide(&user_code, "approve").await, 200);
    h.clock.advance(Duration::from_secs(11));
    let (status, tokens) = h.poll(&device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(h.poll(&device_code).await.1["error"], "invalid_grant");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), r1.clone()]);

    // 2. The bearer layer: allowed, missing, refused.
    assert_eq!(h.me(Some(&access)).await, 200);
    assert_eq!(h.me(None).await, 401);
    assert_eq!(h.me(Some("not-a-token")).await, 401);

    // 3. Refresh, a retry of the same token within the grace period, then reuse.
    let (status, rotated) = h.refresh(&r1).await;
    assert_eq!(status, 200, "{rotated}");
    let r2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let (status, retried) = h.refresh(&r1).await;
    assert_eq!(status, 200, "{retried}");
    let r3 = retried["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([r2.clone(), r3.clone()]);
    assert_eq!(h.refresh(&r2).await.1["error"], "invalid_grant"); // reuse: the grant is revoked

    // 4. A denied request, and one that expires while its device waits.
    let (denied_code, denied_user) = h.authorize().await;
    assert_eq!(h.decide(&denied_user, "deny").await, 200);
    h.clock.advance(Duration::from_secs(6));
    assert_eq!(h.poll(&denied_code).await.1["error"], "access_denied");
    let (late_code, late_user) = h.authorize().await;
    secrets.extend([denied_code, denied_user, late_code.clone(), late_user]);
    h.clock.advance(Duration::from_secs(1801));
    assert_eq!(h.poll(&late_code).await.1["error"], "expired_token");

    // 5. A second device, signed out through RFC 7009 by its refresh token.
    let (code, user) = h.authorize().await;
    assert_eq!(h.decide(&user, "approve").await, 200);
    let (status, tokens) = h.poll(&code).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let body = format!("client_id=tv&token={refresh}&token_type_hint=refresh_token");
    assert_eq!(h.post("/oauth/revoke", DEVICE, body, None).await.0, 200);
    secrets.extend([
        code,
        user,
        refresh,
        tokens["access_token"].as_str().unwrap().into(),
    ]);
    secrets
}

#[cfg(feature = "metrics")]
mod metrics_recorded {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::MetricKind;
    use std::collections::BTreeMap;
    use tower_device_flow::Limits;

    /// What the recorder holds: each series by name and sorted labels.
    #[derive(Debug, Default)]
    struct Seen {
        counters: BTreeMap<(String, Vec<(String, String)>), u64>,
        gauges: BTreeMap<String, f64>,
        histograms: BTreeMap<(String, Vec<(String, String)>), usize>,
    }

    impl Seen {
        fn of(snapshotter: &Snapshotter) -> Seen {
            let mut seen = Seen::default();
            for (key, _, _, value) in snapshotter.snapshot().into_vec() {
                let (kind, key) = key.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                let name = key.name().to_owned();
                match (kind, value) {
                    (MetricKind::Counter, DebugValue::Counter(n)) => {
                        seen.counters.insert((name, labels), n);
                    }
                    (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                        seen.gauges.insert(name, v.into_inner());
                    }
                    (MetricKind::Histogram, DebugValue::Histogram(v)) => {
                        seen.histograms.insert((name, labels), v.len());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            seen
        }

        fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let mut labels: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            labels.sort();
            self.counters
                .get(&(name.to_owned(), labels))
                .copied()
                .unwrap_or(0)
        }

        fn observations(&self, name: &str, label: (&str, &str)) -> usize {
            let labels = vec![(label.0.to_owned(), label.1.to_owned())];
            self.histograms
                .get(&(name.to_owned(), labels))
                .copied()
                .unwrap_or(0)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_whole_flow_counts_every_step() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let h = harness(|b| b.interval(Duration::from_secs(5)));
        whole_flow(&h).await;
        let seen = Seen::of(&snapshotter);

        assert_eq!(seen.counter(metric::GRANTS_CREATED, &[]), 4);
        assert_eq!(seen.counter(metric::GRANTS_APPROVED, &[]), 2);
        assert_eq!(seen.counter(metric::GRANTS_DENIED, &[]), 1);
        assert_eq!(seen.counter(metric::GRANTS_EXPIRED, &[]), 1);
        assert_eq!(seen.counter(metric::GRANTS_REDEEMED, &[]), 2);
        let polls = |labels: &[(&str, &str)]| seen.counter(metric::POLLS, labels);
        assert_eq!(polls(&[("outcome", "pending")]), 1);
        assert_eq!(polls(&[("outcome", "slow_down")]), 1);
        assert_eq!(polls(&[("outcome", "issued")]), 2);
        let refused = |error| [("outcome", "refused"), ("error", error)];
        assert_eq!(polls(&refused("invalid_grant")), 1);
        assert_eq!(polls(&refused("access_denied")), 1);
        assert_eq!(polls(&refused("expired_token")), 1);
        let refreshes = |labels: &[(&str, &str)]| seen.counter(metric::REFRESHES, labels);
        assert_eq!(refreshes(&[("outcome", "rotated")]), 1);
        assert_eq!(refreshes(&[("outcome", "retried")]), 1);
        assert_eq!(refreshes(&refused("invalid_grant")), 1);
        assert_eq!(seen.counter(metric::REFRESH_TOKEN_REUSE, &[]), 1);
        let revocations = |reason| seen.counter(metric::REVOCATIONS, &[("reason", reason)]);
        assert_eq!(revocations("reuse"), 1);
        assert_eq!(revocations("refresh_token"), 1);
        assert_eq!(revocations("access_token"), 0);
        assert_eq!(seen.counter(metric::WRONG_USER_CODES, &[]), 1);
        let bearer = |labels: &[(&str, &str)]| seen.counter(metric::BEARER_CHECKS, labels);
        assert_eq!(bearer(&[("outcome", "allowed")]), 1);
        assert_eq!(bearer(&[("outcome", "missing")]), 1);
        assert_eq!(bearer(&refused("invalid_token")), 1);

        // Every series is one of the listed metrics, with its listed labels only.
        let listed = |name: &str| metric::ALL.iter().find(|m| m.name == name);
        for (name, labels) in seen.counters.keys().chain(seen.histograms.keys()) {
            let m = listed(name).unwrap_or_else(|| panic!("{name} is not in metric::ALL"));
            for (k, _) in labels {
                assert!(m.labels.contains(&k.as_str()), "{name} has label {k}");
            }
        }

        // Latencies: one observation per request at its endpoint, and per store call.
        let requests = |e| seen.observations(metric::REQUEST_DURATION, ("endpoint", e));
        assert_eq!(requests("device_authorization"), 4);
        assert_eq!(requests("token"), 10);
        assert_eq!(requests("verification"), 4);
        assert_eq!(requests("revocation"), 1);
        let calls = |op| seen.observations(metric::STORE_CALL_DURATION, ("operation", op));
        assert_eq!(calls("insert_device_grant"), 4);
        assert_eq!(calls("replace_grant"), 2);
        assert_eq!(calls("access_token"), 2, "the bearer layer's lookups");
        assert_eq!(calls("device_grant"), 7, "one read per poll");
        assert!(seen.counters.keys().all(|(n, _)| n != metric::STORE_ERRORS));

        // The gauge: read at the first device authorization (interval 15 s), then when due.
        assert!(seen.gauges.contains_key(metric::PENDING_GRANTS), "{seen:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pending_gauge_follows_the_store() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let h = harness(|b| b.pending_grants_gauge(Some(Duration::from_secs(60))));
        h.authorize().await;
        assert_eq!(Seen::of(&snapshotter).gauges[metric::PENDING_GRANTS], 1.0);
        // Within the interval the store is not asked again (a snapshot takes the value, so a
        // gauge not set since reads 0)...
        h.authorize().await;
        assert_eq!(Seen::of(&snapshotter).gauges[metric::PENDING_GRANTS], 0.0);
        // ...but the application may ask at any time (for instance when it renders a scrape).
        h.flow.record_pending_grants().await;
        assert_eq!(Seen::of(&snapshotter).gauges[metric::PENDING_GRANTS], 2.0);
        h.clock.advance(Duration::from_secs(61));
        let (_, user) = h.authorize().await;
        assert_eq!(Seen::of(&snapshotter).gauges[metric::PENDING_GRANTS], 3.0);
        h.clock.advance(Duration::from_secs(61));
        assert_eq!(h.decide(&user, "approve").await, 200);
        assert_eq!(Seen::of(&snapshotter).gauges[metric::PENDING_GRANTS], 2.0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn limit_refusals_are_counted_by_limit() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let h = harness(|b| {
            b.max_grants_per_client(Some(1))
                .limits(Limits::default())
                .failed_attempts_per_user(tower_device_flow::AttemptLimit {
                    max: 1,
                    window: Duration::from_secs(900),
                })
        });
        h.authorize().await;
        let (status, _) = h
            .post(
                "/oauth/device_authorization",
                DEVICE,
                "client_id=tv".into(),
                None,
            )
            .await;
        assert_eq!(status, 429);
        assert_eq!(h.decide("BBBB-BBBB", "approve").await, 400);
        assert_eq!(h.decide("BBBB-BBBC", "approve").await, 429);
        let seen = Seen::of(&snapshotter);
        let limit = |l: Limit| seen.counter(metric::LIMIT_REFUSALS, &[("limit", l.as_str())]);
        assert_eq!(limit(Limit::GrantsPerClient), 1);
        assert_eq!(limit(Limit::UserCodeGuessing), 1);
        assert_eq!(limit(Limit::DeviceAuthorizationRate), 0);
        assert_eq!(seen.counter(metric::GRANTS_CREATED, &[]), 1);
        assert_eq!(seen.counter(metric::WRONG_USER_CODES, &[]), 1);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn audit_events_say_who_did_what_from_where() {
    let h = harness(|b| b.interval(Duration::from_secs(5)));
    whole_flow(&h).await;
    let events = h.events();
    let names: Vec<&str> = events.iter().map(|e| e.action.name()).collect();
    assert_eq!(
        names,
        [
            "device_authorized",
            "wrong_user_code",
            "approved",
            "tokens_issued",
            "refreshed",
            "refreshed",
            "refresh_token_reuse",
            "revoked",
            "device_authorized",
            "denied",
            "device_authorized",
            "device_authorized",
            "approved",
            "tokens_issued",
            "revoked",
        ]
    );
    let tv = tower_device_flow::ClientId::new("tv");
    let alice = Subject::new("alice");
    let profile = Scope::parse("profile email").unwrap();
    assert_eq!(events[0].source, device_ip());
    assert_eq!(
        events[0].action,
        AuditAction::DeviceAuthorized {
            client_id: tv.clone(),
            scope: profile.clone()
        }
    );
    assert_eq!(events[1].source, browser_ip());
    assert_eq!(
        events[1].action,
        AuditAction::WrongUserCode {
            subject: alice.clone()
        }
    );
    assert_eq!(events[2].source, browser_ip());
    assert_eq!(
        events[2].action,
        AuditAction::Approved {
            client_id: tv.clone(),
            subject: alice.clone(),
            scope: profile.clone()
        }
    );
    let AuditAction::TokensIssued {
        client_id,
        subject,
        grant_id,
        scope,
    } = &events[3].action
    else {
        panic!("{:?}", events[3]);
    };
    assert_eq!((client_id, subject, scope), (&tv, &alice, &profile));
    assert_eq!(events[3].source, device_ip());
    assert!(matches!(
        &events[4].action,
        AuditAction::Refreshed { grant_id: g, retry: false, .. } if g == grant_id
    ));
    assert!(matches!(
        &events[5].action,
        AuditAction::Refreshed { grant_id: g, retry: true, .. } if g == grant_id
    ));
    assert!(matches!(
        &events[6].action,
        AuditAction::RefreshTokenReuse { grant_id: g, subject, .. } if g == grant_id && subject == &alice
    ));
    assert_eq!(
        events[7].action,
        AuditAction::Revoked {
            client_id: tv.clone(),
            subject: alice.clone(),
            grant_id: Some(*grant_id),
            reason: RevocationReason::Reuse
        }
    );
    assert_eq!(
        events[9].action,
        AuditAction::Denied {
            client_id: tv.clone(),
            subject: alice.clone()
        }
    );
    let AuditAction::TokensIssued {
        grant_id: second, ..
    } = &events[13].action
    else {
        panic!("{:?}", events[13]);
    };
    assert_eq!(
        events[14].action,
        AuditAction::Revoked {
            client_id: tv.clone(),
            subject: alice.clone(),
            grant_id: Some(*second),
            reason: RevocationReason::RefreshToken
        }
    );
    // Times are the flow's clock.
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(events[0].at, Timestamp::from_unix_millis(1_700_000_000_000));
}

#[tokio::test(flavor = "current_thread")]
async fn end_users_signing_devices_out_and_limits_are_audited() {
    let h = harness(|b| {
        b.max_grants_per_client(Some(2))
            .failed_attempts_per_user(tower_device_flow::AttemptLimit {
                max: 1,
                window: Duration::from_secs(900),
            })
    });
    let (code, user) = h.authorize().await;
    assert_eq!(h.decide(&user, "approve").await, 200);
    let (_, tokens) = h.poll(&code).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    h.authorize().await;
    let (status, _) = h
        .post(
            "/oauth/device_authorization",
            DEVICE,
            "client_id=tv".into(),
            None,
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(h.decide("BBBB-BBBB", "approve").await, 400);
    assert_eq!(h.decide("BBBB-BBBC", "approve").await, 429);
    let alice = Subject::new("alice");
    let revoked = h.flow.revoke_all_devices(&alice).await.unwrap();
    assert_eq!(revoked.len(), 1);
    let events = h.events();
    let tail: Vec<&AuditAction> = events
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|e| &e.action)
        .collect();
    assert_eq!(
        tail,
        [
            &AuditAction::LimitHit {
                limit: Limit::GrantsPerClient,
                client_id: Some(tower_device_flow::ClientId::new("tv")),
                subject: None
            },
            &AuditAction::WrongUserCode {
                subject: alice.clone()
            },
            &AuditAction::LimitHit {
                limit: Limit::UserCodeGuessing,
                client_id: None,
                subject: Some(alice.clone())
            },
            &AuditAction::Revoked {
                client_id: tower_device_flow::ClientId::new("tv"),
                subject: alice.clone(),
                grant_id: Some(revoked[0]),
                reason: RevocationReason::EndUser
            },
        ]
    );
    // An application's own call has no request, so no source.
    assert_eq!(events.last().unwrap().source, None);
    assert_eq!(events[events.len() - 4].source, device_ip());
}

#[tokio::test(flavor = "current_thread")]
async fn audit_events_carry_no_secret() {
    let h = harness(|b| b.interval(Duration::from_secs(5)));
    let secrets = whole_flow(&h).await;
    let events = h.events();
    assert!(events.len() > 10);
    let shown = format!("{events:?}");
    for secret in &secrets {
        assert!(!secret.is_empty());
        let digest = tower_device_flow::Digest::of(secret.as_bytes()).to_hex();
        for needle in [
            secret.as_str(),
            &secret.replace('-', ""),
            &digest,
            &digest[..32],
        ] {
            assert!(!shown.contains(needle), "an event shows {needle}: {shown}");
        }
    }
}

/// The README's table of metrics, between its markers: `| name | type | labels | meaning |`.
fn readme_metrics() -> Vec<(String, String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- metrics table -->")
        .expect("the README's metrics table marker");
    let end = readme[start..]
        .find("<!-- end of metrics table -->")
        .expect("the end marker")
        + start;
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `device_flow_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            let labels = cells[3]
                .split(',')
                .map(|l| unquote(l.trim()))
                .filter(|l| !l.is_empty() && l != "–")
                .collect();
            (unquote(cells[1]), cells[2].to_owned(), labels)
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_metrics_in_code() {
    let readme = readme_metrics();
    let in_code: Vec<(String, String, Vec<String>)> = metric::ALL
        .iter()
        .map(|m| {
            (
                m.name.to_owned(),
                m.kind.as_str().to_owned(),
                m.labels.iter().map(|l| (*l).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(
        readme, in_code,
        "README.md's metrics table and observe::metric::ALL differ"
    );
}

#[test]
fn the_readme_lists_every_audit_event_and_label_value() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in [
        "device_authorized",
        "approved",
        "denied",
        "tokens_issued",
        "refreshed",
        "revoked",
        "refresh_token_reuse",
        "wrong_user_code",
        "limit_hit",
    ] {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README misses the event {name}"
        );
    }
    for limit in Limit::ALL {
        assert!(
            readme.contains(&format!("`{limit}`")),
            "README misses the limit {limit}"
        );
    }
    for reason in RevocationReason::ALL {
        assert!(
            readme.contains(&format!("`{reason}`")),
            "README misses the reason {reason}"
        );
    }
    for e in metric::Endpoint::ALL {
        assert!(
            readme.contains(&format!("`{}`", e.as_str())),
            "README misses {e:?}"
        );
    }
}

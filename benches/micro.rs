//! Micro benchmarks: code generation, user-code normalization, the grant state machine,
//! `MemoryStore` operations at 1e3 and 1e6 stored records, and one call of the bearer layer.
//!
//! ```text
//! cargo bench --bench micro
//! cargo bench --bench micro -- store/1000000     # a subset (criterion filter)
//! ```
//!
//! `MemoryStore` futures complete on their first poll, so they are driven by [`now`], a
//! poll-once executor, rather than by a runtime: what is timed is the store, not a scheduler.
//! Sample sizes and measurement times are kept small so the whole run takes a few minutes.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_device_flow::family::Grant;
use tower_device_flow::grant::Decision;
use tower_device_flow::store::{Insert, IssuedGrant};
use tower_device_flow::{
    AccessToken, Client, ClientId, Clock, DeviceCodeGenerator, DeviceFlow, DeviceGrant, Digest,
    GrantId, MemoryStore, RandomDeviceCode, Scope, Store, Subject, SystemClock, Timestamp,
    TokenInfo, UserCodeFormat, UserCodeGenerator,
};

/// Store sizes the store benchmarks run at.
const SIZES: [usize; 2] = [1_000, 1_000_000];

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

fn noop_waker() -> &'static Waker {
    static WAKER: OnceLock<Waker> = OnceLock::new();
    WAKER.get_or_init(|| Waker::from(Arc::new(NoopWake)))
}

/// Polls `f` once; every future benchmarked here is ready on its first poll.
fn poll_once<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(noop_waker());
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a MemoryStore future was not ready on its first poll"),
    }
}

/// The instant every store operation is handed: the wall clock when the run started, so that
/// tokens are also valid for the flow's system clock. The store itself never reads a clock.
fn t0() -> Timestamp {
    static T0: OnceLock<Timestamp> = OnceLock::new();
    *T0.get_or_init(|| SystemClock.now())
}

fn random_digest(rng: &mut StdRng) -> Digest {
    Digest::from_bytes(rng.random())
}

fn client_id() -> ClientId {
    ClientId::new("demo-device")
}

fn scope() -> Scope {
    Scope::parse("profile email").expect("valid scope")
}

fn pending_grant(user_code: Digest, now: Timestamp, interval: Duration) -> DeviceGrant {
    DeviceGrant::new(
        client_id(),
        scope(),
        user_code,
        now,
        Duration::from_secs(1800),
        interval,
    )
}

fn token_info(subject: &Subject, now: Timestamp) -> TokenInfo {
    TokenInfo::new(
        subject.clone(),
        client_id(),
        scope(),
        now.saturating_add(Duration::from_secs(3600)),
    )
}

/// What a redemption stores for the access token `access`: a grant of its own (id taken from
/// the token's digest, so ids are distinct), without a refresh token.
fn issue(access: Digest, info: TokenInfo) -> IssuedGrant {
    let mut id = [0u8; 16];
    id.copy_from_slice(&access.as_bytes()[16..]);
    let id = GrantId::from_bytes(id);
    let grant = Grant {
        id,
        client_id: info.client_id.clone(),
        subject: info.subject.clone(),
        scope: info.scope.clone(),
        audience: None,
        approved_at: info.expires_at,
        last_used_at: info.expires_at,
        expires_at: info.expires_at,
        access_token: access,
        refresh_token: None,
        superseded: None,
        cnf: None,
    };
    IssuedGrant {
        grant,
        access: info.with_grant_id(Some(id)),
    }
}

/// A store holding `n` pending grants and `n` access tokens, all put there through the
/// [`Store`] trait (each token with a grant of its own, issued by `replace_device_grant` on
/// one carrier device grant, as the token endpoint issues them).
struct Populated {
    store: MemoryStore,
    grants: Vec<Digest>,
    tokens: Vec<Digest>,
    /// Pairs of (device code, user code) whose records are expired at [`t0`]: the insert
    /// benchmark writes over them, so the table neither grows nor shrinks while it runs.
    recyclable: Vec<(Digest, Digest)>,
    /// A random visiting order of `0..n`, so lookups at 1e6 miss the caches as in production.
    order: Vec<usize>,
}

fn populate(n: usize) -> Populated {
    let mut rng = StdRng::seed_from_u64(n as u64);
    // No ceiling on pending grants: the table is filled far past the default one.
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scope()))
        .max_pending_grants(None)
        .build();
    let now = t0();
    let mut grants = Vec::with_capacity(n);
    for _ in 0..n {
        let device = random_digest(&mut rng);
        let grant = pending_grant(random_digest(&mut rng), now, Duration::ZERO);
        assert!(
            (poll_once(store.insert_device_grant(device, grant, now)).expect("insert")
                == Insert::Inserted)
        );
        grants.push(device);
    }
    let carrier = random_digest(&mut rng);
    let grant = pending_grant(random_digest(&mut rng), now, Duration::ZERO);
    assert!(
        (poll_once(store.insert_device_grant(carrier, grant.clone(), now)).expect("insert")
            == Insert::Inserted)
    );
    let subject = Subject::new("alice");
    let mut tokens = Vec::with_capacity(n);
    for version in 0..n as u64 {
        let access = random_digest(&mut rng);
        let issue = issue(access, token_info(&subject, now));
        let swapped = poll_once(store.replace_device_grant(
            &carrier,
            version,
            grant.clone(),
            Some(issue),
            now,
        ));
        assert!(swapped.expect("replace"));
        tokens.push(access);
    }
    // Records already past their retention at `now` (retain_until = expires_at + 600 s).
    let expired_at = Timestamp::from_unix_millis(now.as_unix_millis() - 3_600_000);
    let recyclable_count = (n / 8).clamp(128, 131_072);
    let mut recyclable = Vec::with_capacity(recyclable_count);
    for _ in 0..recyclable_count {
        let (device, user) = (random_digest(&mut rng), random_digest(&mut rng));
        let grant = pending_grant(user, expired_at, Duration::ZERO);
        assert!(
            (poll_once(store.insert_device_grant(device, grant, now)).expect("insert")
                == Insert::Inserted)
        );
        recyclable.push((device, user));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    Populated {
        store,
        grants,
        tokens,
        recyclable,
        order,
    }
}

fn codes(c: &mut Criterion) {
    let mut g = c.benchmark_group("codes");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let format = UserCodeFormat::default();
    g.bench_function("user_code_generate", |b| b.iter(|| format.generate()));
    g.bench_function("user_code_generate_digest", |b| {
        b.iter(|| format.generate().digest())
    });
    g.bench_function("device_code_generate", |b| {
        b.iter(|| RandomDeviceCode.generate())
    });
    g.bench_function("device_code_generate_digest", |b| {
        b.iter(|| RandomDeviceCode.generate().digest())
    });
    let token = AccessToken::generate();
    g.bench_function("access_token_digest", |b| {
        b.iter(|| black_box(&token).digest())
    });
    for input in ["WDJBMJHT", "wdjb-mjht", " WdJb MjHt ", "WDJB-MJHA"] {
        g.bench_with_input(
            BenchmarkId::new("normalize", input.trim()),
            input,
            |b, i| b.iter(|| format.normalize(black_box(i))),
        );
    }
    g.finish();
}

fn grant_state_machine(c: &mut Criterion) {
    let mut g = c.benchmark_group("grant");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let now = t0();
    let later = now.saturating_add(Duration::from_secs(10));
    let tv = client_id();
    let user = Digest::of(b"WDJBMJHT");

    let no_interval = pending_grant(user, now, Duration::ZERO);
    g.bench_function("poll_pending_interval_0", |b| {
        b.iter(|| black_box(&no_interval).poll(&tv, later))
    });
    let mut polled = pending_grant(user, now, Duration::from_secs(5));
    polled.last_poll = Some(now);
    g.bench_function("poll_pending_interval_5", |b| {
        b.iter(|| black_box(&polled).poll(&tv, later))
    });
    let soon = now.saturating_add(Duration::from_secs(1));
    g.bench_function("poll_slow_down", |b| {
        b.iter(|| black_box(&polled).poll(&tv, soon))
    });
    let approved = no_interval
        .decide(Decision::Approve(Subject::new("alice")), now)
        .expect("pending");
    g.bench_function("poll_approved_issue", |b| {
        b.iter(|| black_box(&approved).poll(&tv, later))
    });
    let alice = Subject::new("alice");
    g.bench_function("decide_approve", |b| {
        b.iter(|| black_box(&no_interval).decide(Decision::Approve(alice.clone()), later))
    });
    g.bench_function("decide_deny", |b| {
        b.iter(|| black_box(&no_interval).decide(Decision::Deny, later))
    });
    g.finish();
}

fn store_ops(c: &mut Criterion) {
    for n in SIZES {
        let p = populate(n);
        let now = t0();
        let mut g = c.benchmark_group(format!("store/{n}"));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));

        let mut i = 0usize;
        g.bench_function("grant", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let key = &p.grants[p.order[i]];
                now_poll_grant(&p.store, key, now)
            })
        });
        let mut i = 0usize;
        g.bench_function("grant_miss", |b| {
            let mut rng = StdRng::seed_from_u64(7);
            let misses: Vec<Digest> = (0..4096).map(|_| random_digest(&mut rng)).collect();
            b.iter(|| {
                i = (i + 1) % misses.len();
                now_poll_grant(&p.store, &misses[i], now)
            })
        });
        let mut i = 0usize;
        g.bench_function("access_token", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let key = &p.tokens[p.order[i]];
                poll_once(p.store.access_token(key, now))
                    .expect("lookup")
                    .is_some()
            })
        });

        // Compare-and-swap on a live grant without tokens: the write of a poll with interval.
        let mut versions = vec![0u64; n];
        let mut next = pending_grant(Digest::of(b"x"), now, Duration::from_secs(5));
        next.last_poll = Some(now);
        let mut i = 0usize;
        g.bench_function("replace_device_grant", |b| {
            b.iter_batched(
                || next.clone(),
                |grant| {
                    i = (i + 1) % n;
                    let k = p.order[i];
                    let ok = poll_once(p.store.replace_device_grant(
                        &p.grants[k],
                        versions[k],
                        grant,
                        None,
                        now,
                    ));
                    versions[k] += 1;
                    assert!(ok.expect("replace"));
                },
                BatchSize::SmallInput,
            )
        });

        // Insert over records past retention (the table size stays put; no growth amortized).
        let template = pending_grant(Digest::of(b"x"), now, Duration::ZERO);
        let mut i = 0usize;
        g.bench_function("insert_device_grant", |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % p.recyclable.len();
                    let (device, user) = p.recyclable[i];
                    let mut grant = template.clone();
                    grant.user_code = user;
                    // Expired on insertion too, so the next round can write over it again.
                    grant.expires_at =
                        Timestamp::from_unix_millis(now.as_unix_millis() - 3_600_000);
                    (device, grant)
                },
                |(device, grant)| {
                    assert!(
                        (poll_once(p.store.insert_device_grant(device, grant, now))
                            .expect("insert")
                            == Insert::Inserted)
                    )
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
        bearer(c, &p, n);
    }
}

fn now_poll_grant(store: &MemoryStore, key: &Digest, at: Timestamp) -> bool {
    poll_once(store.device_grant(key, at))
        .expect("lookup")
        .is_some()
}

/// One call of `require_oauth("profile")` around a pass-through service, against the bare
/// pass-through service, over in-memory requests.
fn bearer(c: &mut Criterion, p: &Populated, n: usize) {
    let store = p.store.clone();
    let at = t0();
    let mut rng = StdRng::seed_from_u64(99);
    // Tokens whose secrets we know: one with the required scope, one without.
    let valid = AccessToken::generate();
    let narrow = AccessToken::generate();
    let alice = Subject::new("alice");
    let carrier = random_digest(&mut rng);
    let grant = pending_grant(random_digest(&mut rng), at, Duration::ZERO);
    assert!(
        (poll_once(store.insert_device_grant(carrier, grant.clone(), at)).expect("insert")
            == Insert::Inserted)
    );
    let narrow_info = TokenInfo::new(
        alice.clone(),
        client_id(),
        Scope::parse("email").expect("valid scope"),
        at.saturating_add(Duration::from_secs(3600)),
    );
    for (version, (token, info)) in [(&valid, token_info(&alice, at)), (&narrow, narrow_info)]
        .into_iter()
        .enumerate()
    {
        let issue = issue(token.digest(), info);
        let ok = poll_once(store.replace_device_grant(
            &carrier,
            version as u64,
            grant.clone(),
            Some(issue),
            at,
        ));
        assert!(ok.expect("replace"));
    }
    let flow = DeviceFlow::builder(store)
        .issuer("http://127.0.0.1:8080")
        .interval(Duration::ZERO)
        .build();
    let passthrough = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"{\"ok\":true}",
        ))))
    });
    let guarded = flow.require_oauth("profile").layer(passthrough);

    let request = |token: Option<&str>| {
        let mut req = Request::get("/api/me");
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        req.body(Full::<Bytes>::default()).expect("request")
    };
    let invalid = AccessToken::generate();

    let mut g = c.benchmark_group(format!("bearer/{n}"));
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut bare = passthrough;
    g.bench_function("passthrough", |b| {
        b.iter_batched(
            || request(Some(valid.expose())),
            |req| {
                poll_once(bare.ready()).expect("ready");
                let res = poll_once(bare.call(req)).expect("infallible");
                assert_eq!(res.status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    for (name, token, status) in [
        ("valid", &valid, 200),
        ("invalid", &invalid, 401),
        ("insufficient_scope", &narrow, 403),
    ] {
        let mut svc = guarded.clone();
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(Some(token.expose())),
                |req| {
                    poll_once(svc.ready()).expect("ready");
                    let res = poll_once(svc.call(req)).expect("infallible");
                    assert_eq!(res.status(), status);
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The same with a Prometheus recorder taking every metric (on this thread only).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let recorded = metrics::set_default_local_recorder(&prometheus);
    for (name, token, status) in [
        ("valid, Prometheus recorder", &valid, 200),
        ("invalid, Prometheus recorder", &invalid, 401),
    ] {
        let mut svc = guarded.clone();
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(Some(token.expose())),
                |req| {
                    poll_once(svc.ready()).expect("ready");
                    let res = poll_once(svc.call(req)).expect("infallible");
                    assert_eq!(res.status(), status);
                },
                BatchSize::SmallInput,
            )
        });
    }
    drop(recorded);
    g.finish();
}

/// The two endpoints the HTTP benchmark finds dearest, called in memory (no sockets): a new
/// device authorization, and a poll of a pending device code with interval 0.
fn endpoints(c: &mut Criterion) {
    // No ceiling on pending grants: the table is filled far past the default one.
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scope()))
        .max_pending_grants(None)
        .build();
    let flow = DeviceFlow::builder(store)
        .issuer("http://127.0.0.1:8080")
        .interval(Duration::ZERO)
        .max_grants_per_client(Some(u64::MAX))
        .build();
    let form = |uri: &str, body: String| {
        Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("request")
    };
    let res = poll_once(flow.device_authorization().oneshot(form(
        "/oauth/device_authorization",
        "client_id=demo-device".into(),
    )))
    .expect("infallible");
    assert_eq!(res.status(), 200);
    let body = poll_once(http_body_util::BodyExt::collect(res.into_body()))
        .expect("infallible")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let poll_body = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=demo-device&device_code={}",
        json["device_code"].as_str().expect("device_code")
    );

    let mut g = c.benchmark_group("endpoint");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut device_authorization = flow.device_authorization();
    g.bench_function("device_authorization", |b| {
        b.iter_batched(
            || {
                form(
                    "/oauth/device_authorization",
                    "client_id=demo-device".into(),
                )
            },
            |req| {
                let res = poll_once(device_authorization.call(req)).expect("infallible");
                assert_eq!(res.status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    let mut token = flow.token();
    g.bench_function("token_pending", |b| {
        b.iter_batched(
            || form("/oauth/token", poll_body.clone()),
            |req| {
                let res = poll_once(token.call(req)).expect("infallible");
                assert_eq!(res.status(), 400);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codes, grant_state_machine, store_ops, endpoints);
criterion_main!(benches);

//! The guessing limits on every store: no burst of concurrent wrong codes gets more lookups
//! than the budget; a user whose budget is untouched is never refused the right code; a GET
//! never looks up or counts; a `same-site` POST with a foreign `Origin` is refused.
//!
//! Each check is generic over [`Store`]: it runs on `MemoryStore` here and on `RedisStore`
//! (feature `redis`, `REDIS_URL`; under `CI=true` a missing `REDIS_URL` fails). A new store
//! adds one line. Lookups are counted by a wrapper around the store under test.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_device_flow::family::{Grant, Rotation};
use tower_device_flow::store::{Count, Insert, IssuedGrant};
use tower_device_flow::{
    AttemptLimit, Client, ClientAddr, ClientSource, DeviceFlow, DeviceGrant, Digest, GrantId,
    Limits, ManualClock, MemoryStore, OAuthBody, Scope, Store, StoreResult, Subject, Timestamp,
    TokenInfo, Versioned,
};

/// A store that counts user-code lookups and delegates everything to `inner`.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    lookups: Arc<AtomicU64>,
}

impl<S: Store> ClientSource for Counting<S> {
    fn client(&self, id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send {
        self.inner.client(id)
    }
}

impl<S: Store> Store for Counting<S> {
    fn insert_device_grant(
        &self,
        d: Digest,
        g: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Insert>> + Send {
        self.inner.insert_device_grant(d, g, now)
    }
    fn device_grant(
        &self,
        d: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send {
        self.inner.device_grant(d, now)
    }
    fn device_grant_by_user_code(
        &self,
        u: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.device_grant_by_user_code(u, now)
    }
    fn replace_device_grant(
        &self,
        d: &Digest,
        v: u64,
        g: DeviceGrant,
        i: Option<IssuedGrant>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        self.inner.replace_device_grant(d, v, g, i, now)
    }
    fn grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<Grant>>>> + Send {
        self.inner.grant(id, now)
    }
    fn replace_grant(
        &self,
        id: &GrantId,
        v: u64,
        r: Rotation,
        a: TokenInfo,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        self.inner.replace_grant(id, v, r, a, now)
    }
    fn revoke_grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Grant>>> + Send {
        self.inner.revoke_grant(id, now)
    }
    fn grants_of(
        &self,
        s: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        self.inner.grants_of(s, now)
    }
    fn revoke_grants_of(
        &self,
        s: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        self.inner.revoke_grants_of(s, now)
    }
    fn access_token(
        &self,
        t: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send {
        self.inner.access_token(t, now)
    }
    fn revoke_access_token(
        &self,
        t: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        self.inner.revoke_access_token(t, now)
    }
    fn try_increment(
        &self,
        k: &str,
        max: u64,
        w: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Count>> + Send {
        self.inner.try_increment(k, max, w, now)
    }
    fn decrement(&self, k: &str, now: Timestamp) -> impl Future<Output = StoreResult<()>> + Send {
        self.inner.decrement(k, now)
    }
    fn claim_once(
        &self,
        k: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        self.inner.claim_once(k, until, now)
    }
}

/// The flow under test: users named by an `x-user` header (the application's login), the
/// client address in the extensions as a server loop would put it.
struct Harness<S> {
    flow: DeviceFlow<Counting<S>>,
    lookups: Arc<AtomicU64>,
}

fn harness<S: Store + Clone>(store: S, overall: Option<AttemptLimit>) -> Harness<S> {
    let lookups = Arc::new(AtomicU64::new(0));
    let store = Counting {
        inner: store,
        lookups: lookups.clone(),
    };
    // Each store gets a clock of its own far apart, so runs sharing a Redis never meet.
    let start = 1_700_000_000_000 + (std::process::id() as u64 % 1000) * 86_400_000;
    let flow = DeviceFlow::builder(store)
        .issuer("https://auth.example.com")
        .clock(ManualClock::new(Timestamp::from_unix_millis(start)))
        // The in-process rate limit per source is not what these checks are about: the
        // store's budgets must hold on their own.
        .limits(Limits {
            verification: None,
            ..Limits::default()
        })
        .failed_attempts_overall(overall)
        .end_user(|p: &http::request::Parts| {
            p.headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(Subject::new)
        })
        .build();
    Harness { flow, lookups }
}

fn request(method: &str, uri: &str, user: &str, from: &str, body: String) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header("x-user", user)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let peer: SocketAddr = format!("{from}:40000").parse().unwrap();
    req.extensions_mut().insert(ClientAddr(peer));
    req
}

async fn status_of(res: Response<OAuthBody>) -> (u16, serde_json::Value, Option<String>) {
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), retry)
}

impl<S: Store + Clone> Harness<S> {
    async fn post(
        &self,
        user: &str,
        from: &str,
        body: &str,
    ) -> (u16, serde_json::Value, Option<String>) {
        let req = request("POST", "/device", user, from, body.to_owned());
        status_of(self.flow.verification().oneshot(req).await.unwrap()).await
    }

    async fn user_code(&self) -> String {
        let req = request(
            "POST",
            "/oauth/device_authorization",
            "",
            "192.0.2.200",
            "client_id=tv".into(),
        );
        let res = self.flow.device_authorization().oneshot(req).await.unwrap();
        let (status, body, _) = status_of(res).await;
        assert_eq!(status, 200, "{body}");
        body["user_code"].as_str().unwrap().to_owned()
    }
}

/// A well-formed code (so it is looked up) that was never issued, different for each `i`.
fn wrong_code(i: usize) -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut n = i;
    let tail: String = (0..4)
        .map(|_| {
            let c = ALPHABET[n % 20] as char;
            n /= 20;
            c
        })
        .collect();
    format!("ZZZZ-{tail}")
}

/// A fresh store per check.
async fn check_all<S, F, Fut>(make: F)
where
    S: Store + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    concurrent_wrong_codes_get_at_most_the_budget(make().await).await;
    untouched_users_are_never_refused(make().await).await;
    get_never_looks_up_or_counts(make().await).await;
    same_site_with_a_foreign_origin_is_refused(make().await).await;
}

async fn concurrent_wrong_codes_get_at_most_the_budget<S: Store + Clone>(store: S) {
    let h = harness(store, None);
    let attempts = (0..200).map(|i| {
        let flow = h.flow.clone();
        tokio::spawn(async move {
            let code = wrong_code(i);
            let body = format!("user_code={code}&decision=approve");
            let req = request("POST", "/device", "mallory", "198.51.100.1", body);
            status_of(flow.verification().oneshot(req).await.unwrap()).await
        })
    });
    let mut refused = 0;
    for a in futures_join(attempts).await {
        let (status, body, retry) = a;
        match status {
            400 => assert_eq!(body["error"], "invalid_grant"),
            429 => {
                assert_eq!(body["error"], "slow_down");
                assert!(retry.is_some());
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let lookups = h.lookups.load(Ordering::SeqCst);
    assert!(lookups <= 5, "{lookups} lookups for a budget of 5");
    assert_eq!(
        200 - refused,
        lookups,
        "every attempt not refused was looked up"
    );
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

async fn untouched_users_are_never_refused<S: Store + Clone>(store: S) {
    let window = Duration::from_secs(900);
    let h = harness(store, Some(AttemptLimit { max: 20, window }));
    let code = h.user_code().await;
    // A flood: 200 concurrent wrong codes from 50 accounts on one address, and more.
    let attempts = (0..200).map(|i| {
        let flow = h.flow.clone();
        tokio::spawn(async move {
            let body = format!("user_code={}", wrong_code(i));
            let req = request(
                "POST",
                "/device",
                &format!("m{}", i % 50),
                "198.51.100.1",
                body,
            );
            status_of(flow.verification().oneshot(req).await.unwrap())
                .await
                .0
        })
    });
    let statuses = futures_join(attempts).await;
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "the flood is slowed down");
    // A user who has not failed types the right code, from the attacker's address or their own.
    for from in ["198.51.100.1", "203.0.113.9"] {
        let (status, body, _) = h.post("alice", from, &format!("user_code={code}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "pending");
    }
    let (status, body, _) = h
        .post(
            "alice",
            "203.0.113.9",
            &format!("user_code={code}&decision=approve"),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
}

async fn get_never_looks_up_or_counts<S: Store + Clone>(store: S) {
    let h = harness(store, None);
    for _ in 0..20 {
        let req = request(
            "GET",
            "/device?user_code=BCDF-GHJK",
            "alice",
            "198.51.100.1",
            String::new(),
        );
        let res = h.flow.verification().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(h.lookups.load(Ordering::SeqCst), 0);
    // Alice's budget is whole: five lookups, then 429.
    for _ in 0..5 {
        assert_eq!(
            h.post("alice", "198.51.100.1", "user_code=BCDF-GHJK")
                .await
                .0,
            400
        );
    }
    assert_eq!(
        h.post("alice", "198.51.100.1", "user_code=BCDF-GHJK")
            .await
            .0,
        429
    );
    assert_eq!(h.lookups.load(Ordering::SeqCst), 5);
}

async fn same_site_with_a_foreign_origin_is_refused<S: Store + Clone>(store: S) {
    let h = harness(store, None);
    let code = h.user_code().await;
    let mut req = request(
        "POST",
        "/device",
        "alice",
        "198.51.100.1",
        format!("user_code={code}&decision=approve"),
    );
    req.headers_mut()
        .insert("sec-fetch-site", "same-site".parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://evil.example.com".parse().unwrap());
    let (status, body, _) = status_of(h.flow.verification().oneshot(req).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
    assert_eq!(h.lookups.load(Ordering::SeqCst), 0);
}

fn memory() -> MemoryStore {
    MemoryStore::builder()
        .client(Client::public("tv", Scope::parse("profile").unwrap()))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_limits_hold_on_the_memory_store() {
    check_all(|| async { memory() }).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_limits_hold_on_the_redis_store() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "REDIS_URL must be set in CI for the Redis store's checks"
        );
        eprintln!("REDIS_URL is not set: the Redis store's guessing checks did not run");
        return;
    };
    check_all(|| {
        let url = url.clone();
        async move {
            // A fresh prefix per check: counters of one check never meet another's.
            let prefix = format!(
                "tdf-limits-{}",
                tower_device_flow::DeviceCode::generate().expose()
            );
            tower_device_flow::RedisStore::builder()
                .prefix(prefix)
                .client(Client::public("tv", Scope::parse("profile").unwrap()))
                .connect(url.as_str())
                .await
                .expect("connect to Redis")
        }
    })
    .await;
}

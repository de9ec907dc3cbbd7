//! Runs the store conformance kit against every store in the crate.
//!
//! `MemoryStore` always runs. `RedisStore` runs when `REDIS_URL` is set:
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo test --features redis,test-kit --test store_conformance
//! ```
//!
//! Without `REDIS_URL` every Redis test says loudly on stderr that it did not run, and fails if
//! `CI` is set, so that CI never passes by skipping. Each Redis test works under its own random
//! key prefix and deletes its keys afterwards (everything also expires by TTL). Built without
//! the `redis` feature, the Redis tests do not exist, and `redis_tests_are_built` says so.

#[cfg(feature = "test-kit")]
use tower_device_flow::store::test_kit;
#[cfg(feature = "test-kit")]
use tower_device_flow::{Client, MemoryStore, Scope};

/// Says loudly when this build leaves the Redis tests out.
#[test]
fn redis_tests_are_built() {
    if cfg!(not(all(feature = "redis", feature = "test-kit"))) {
        use std::io::Write as _;
        // Straight to stderr: the harness would swallow `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** built without `--features redis,test-kit`: \
             Redis conformance tests did NOT run ***"
        );
    }
}

/// The client every store under test registers, for `check_client_lookup`.
#[cfg(feature = "test-kit")]
const KIT_CLIENT: &str = "kit-client";

#[cfg(feature = "test-kit")]
fn kit_client() -> Client {
    Client::public(
        KIT_CLIENT,
        Scope::parse("profile email").expect("static scope"),
    )
}

#[cfg(feature = "test-kit")]
fn memory() -> MemoryStore {
    MemoryStore::builder().client(kit_client()).build()
}

/// One test per check and backend, so a failure names both.
#[cfg(feature = "test-kit")]
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    test_kit::$check(memory()).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                let store = memory();
                test_kit::run_all(|| store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                test_kit::check_client_lookup(memory(), KIT_CLIENT).await;
            }
        }

        #[cfg(all(feature = "redis", feature = "test-kit"))]
        mod redis_store {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    redis_support::with_store(stringify!($check), test_kit::$check).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                redis_support::with_store("run_all", |store| async move {
                    test_kit::run_all(|| store.clone()).await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                redis_support::with_store("check_client_lookup", |store| async move {
                    test_kit::check_client_lookup(store, KIT_CLIENT).await;
                })
                .await;
            }
        }
    };
}

#[cfg(feature = "test-kit")]
conformance!(
    // Device grants.
    check_insert_if_absent,
    check_concurrent_inserts_claim_user_code_once,
    check_lookups,
    check_compare_and_swap,
    check_approve_then_poll_issues_once,
    check_concurrent_polls_issue_once,
    check_slow_down,
    check_denied,
    check_expiry,
    check_pending_device_grants,
    // Redemption and grants.
    check_redemption_stores_grant,
    check_redemption_is_atomic,
    check_grant_compare_and_swap,
    check_concurrent_rotations_rotate_once,
    check_rotation_replaces_access_token,
    check_racing_refreshes_leave_one_pair,
    check_revoke_grant,
    check_revoke_racing_rotation,
    check_grants_of,
    check_grant_expiry,
    check_revoke_access_token,
    // Limits and one-time values.
    check_try_increment,
    check_try_increment_under_race,
    check_decrement,
    check_claim_once,
);

#[cfg(all(feature = "redis", feature = "test-kit"))]
mod redis_support {
    use std::future::Future;
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};

    use redis::aio::MultiplexedConnection;
    use tower_device_flow::store::RedisStore;

    /// The Redis URL, or `None` after saying loudly that `test` did not run. Under CI a missing
    /// URL fails the test instead.
    pub fn redis_url(test: &str) -> Option<String> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                let message =
                    format!("REDIS_URL not set: Redis conformance test `{test}` did NOT run");
                // Straight to the process's stderr: the test harness captures `eprintln!`, and
                // a skip must be seen even when the test passes.
                let _ = writeln!(std::io::stderr(), "\n*** {message} ***");
                if in_ci() {
                    panic!("{message}; CI is set, so a skipped Redis test is a failure");
                }
                None
            }
        }
    }

    /// `CI` set to anything but empty, `0` or `false`.
    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
    }

    /// A key prefix no other test or run uses.
    pub fn unique_prefix(test: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let random = tower_device_flow::AccessToken::generate().digest().to_hex();
        format!(
            "tdf-test-{test}-{}-{nanos}-{}",
            std::process::id(),
            &random[..8]
        )
    }

    pub async fn raw_connection(url: &str) -> MultiplexedConnection {
        redis::Client::open(url)
            .expect("REDIS_URL is not a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("cannot connect to REDIS_URL")
    }

    /// Every key under `prefix`.
    pub async fn keys_under(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
        let pattern = format!("{{{prefix}}}:*");
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("SCAN failed");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        keys
    }

    pub async fn delete_prefix(url: &str, prefix: &str) {
        let mut conn = raw_connection(url).await;
        let keys = keys_under(&mut conn, prefix).await;
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("DEL failed");
        }
    }

    /// A store with a fresh prefix and the kit client, connected to `REDIS_URL`.
    pub async fn store(url: &str, prefix: &str) -> RedisStore {
        RedisStore::builder()
            .prefix(prefix)
            .client(super::kit_client())
            .connect(url)
            .await
            .expect("cannot connect a RedisStore to REDIS_URL")
    }

    /// Runs `body` on a store of its own, then deletes the store's keys, pass or fail.
    pub async fn with_store<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(RedisStore) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = redis_url(test) else {
            return;
        };
        let prefix = unique_prefix(test);
        let store = store(&url, &prefix).await;
        // In a task of its own, so a failed assertion still lets the cleanup run.
        let outcome = tokio::spawn(body(store)).await;
        delete_prefix(&url, &prefix).await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("test task failed: {e}"),
            }
        }
    }
}

/// Tests of what only a Redis store has: its keys.
///
/// Written against the v2 `Store` API; the key names the corrupt-record test writes to are the
/// `layout` constants below, to be pinned to the v2 Redis layout by whoever owns it.
#[cfg(all(feature = "redis", feature = "test-kit"))]
mod redis_layout {
    use std::collections::HashMap;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use tower_device_flow::codes::FamilyKey;
    use tower_device_flow::family::{Grant, NewTokens};
    use tower_device_flow::grant::{Decision, DeviceGrant, GrantStatus, PollOutcome};
    use tower_device_flow::store::{Insert, IssuedGrant, RedisStore};
    use tower_device_flow::{
        AccessToken, Clock, DeviceCode, Digest, RefreshToken, Scope, Store, StoreError, Subject,
        SystemClock, Timestamp, TokenInfo, UserCodeFormat, UserCodeGenerator,
    };

    use super::redis_support::{
        delete_prefix, keys_under, raw_connection, redis_url, store, unique_prefix,
    };

    /// Key kinds of the v2 layout (`{prefix}:<kind>:<hex>`).
    mod layout {
        pub const DEVICE_GRANT: &str = "g";
        pub const USER_CODE: &str = "u";
        pub const GRANT: &str = "f";
        pub const ACCESS_TOKEN: &str = "a";
    }

    const ACCESS_TTL: Duration = Duration::from_secs(600);
    const REFRESH_TTL: Duration = Duration::from_secs(1800);

    /// A fresh access token and refresh token of `family`, as the token endpoint mints them.
    fn mint(family: &FamilyKey, now: Timestamp) -> (AccessToken, RefreshToken, NewTokens) {
        let access = AccessToken::generate();
        let refresh = RefreshToken::generate(family);
        let tokens = NewTokens {
            access_token: access.digest(),
            refresh_token: Some(refresh.digest()),
            expires_at: now.saturating_add(REFRESH_TTL),
        };
        (access, refresh, tokens)
    }

    fn info(grant: &Grant, now: Timestamp) -> TokenInfo {
        TokenInfo::new(
            grant.subject.clone(),
            grant.client_id.clone(),
            grant.scope.clone(),
            now.saturating_add(ACCESS_TTL),
        )
        .with_grant_id(Some(grant.id))
    }

    /// The key's hash tag, by Redis Cluster's rule: the text between the first `{` and the
    /// first `}` after it, if non-empty.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = open + 1 + key[open + 1..].find('}')?;
        (close > open + 1).then(|| &key[open + 1..close])
    }

    async fn dump(conn: &mut MultiplexedConnection, key: &str) -> Vec<u8> {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(conn)
            .await
            .expect("TYPE");
        match kind.as_str() {
            "string" => redis::cmd("GET")
                .arg(key)
                .query_async(conn)
                .await
                .expect("GET"),
            "hash" => {
                let fields: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(conn)
                    .await
                    .expect("HGETALL");
                fields
                    .into_iter()
                    .flat_map(|(k, v)| [k, b"=".to_vec(), v, b";".to_vec()].concat())
                    .collect()
            }
            "set" => {
                let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async(conn)
                    .await
                    .expect("SMEMBERS");
                members.concat()
            }
            "zset" => {
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(conn)
                    .await
                    .expect("ZRANGE");
                members.concat()
            }
            other => panic!("unexpected type {other} for {key}"),
        }
    }

    /// Drives a whole flow (device grant, approval, redemption, rotation, a counter, a claim)
    /// and then checks every key under the prefix: no plaintext secret anywhere, a TTL on every
    /// key that ends with one of the records' lifetimes, and a single hash tag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_layout_has_no_plaintext_and_every_key_expires() {
        let Some(url) = redis_url("key_layout_has_no_plaintext_and_every_key_expires") else {
            return;
        };
        let prefix = unique_prefix("layout");
        let store = store(&url, &prefix).await;
        let now = SystemClock.now();

        let device = DeviceCode::generate();
        let user = UserCodeFormat::default().generate();
        let grant = DeviceGrant::new(
            super::KIT_CLIENT.into(),
            Scope::parse("profile").expect("static scope"),
            user.digest(),
            now,
            Duration::from_secs(600),
            Duration::from_secs(5),
        );
        let retain_until = grant.retain_until();
        assert_eq!(
            store
                .insert_device_grant(device.digest(), grant, now)
                .await
                .expect("insert"),
            Insert::Inserted
        );
        let current = store
            .device_grant(&device.digest(), now)
            .await
            .expect("read")
            .expect("grant");
        let approved = current
            .record
            .decide(Decision::Approve(Subject::new("alice")), now)
            .expect("approve");
        assert!(store
            .replace_device_grant(&device.digest(), current.version, approved, None, now)
            .await
            .expect("approve swap"));
        let current = store
            .device_grant(&device.digest(), now)
            .await
            .expect("read")
            .expect("grant");
        let PollOutcome::Issue {
            next,
            subject,
            approved_at,
            scope,
        } = current.record.poll(&super::KIT_CLIENT.into(), now)
        else {
            panic!("approved grant did not issue");
        };
        let family = FamilyKey::generate();
        let (access, refresh, tokens) = mint(&family, now);
        let issued = Grant {
            id: family.grant_id(),
            client_id: super::KIT_CLIENT.into(),
            subject,
            scope,
            audience: None,
            approved_at,
            last_used_at: now,
            expires_at: tokens.expires_at,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            superseded: None,
            cnf: None,
        };
        let first_info = info(&issued, now);
        assert!(store
            .replace_device_grant(
                &device.digest(),
                current.version,
                next,
                Some(IssuedGrant {
                    grant: issued.clone(),
                    access: first_info,
                }),
                now
            )
            .await
            .expect("issue swap"));
        let (access2, refresh2, tokens2) = mint(&family, now);
        let presented = issued.presented(&refresh.digest(), now, Duration::from_secs(30));
        let rotation = issued
            .rotate(presented, tokens2, now)
            .expect("the live token rotates");
        let second_info = info(&rotation.next, now);
        let access_expiry = second_info.expires_at;
        assert!(store
            .replace_grant(&issued.id, 0, rotation, second_info, now)
            .await
            .expect("rotate"));
        assert_eq!(
            store
                .device_grant(&device.digest(), now)
                .await
                .expect("read")
                .expect("grant")
                .record
                .status,
            GrantStatus::Redeemed
        );
        let window = Duration::from_secs(60);
        assert!(
            store
                .try_increment("verify:198.51.100.7", 10, window, now)
                .await
                .expect("counter")
                .counted
        );
        let claim_until = now.saturating_add(Duration::from_secs(120));
        assert!(store
            .claim_once(&Digest::of(b"a dpop jti"), claim_until, now)
            .await
            .expect("claim"));

        let secrets = [
            device.expose(),
            user.expose(),
            access.expose(),
            refresh.expose(),
            access2.expose(),
            refresh2.expose(),
        ];
        // Every key ends with one of the records it holds.
        let lifetimes = [
            retain_until,
            tokens2.expires_at,
            access_expiry,
            now.saturating_add(window),
            claim_until,
        ];

        let mut conn = raw_connection(&url).await;
        let keys = keys_under(&mut conn, &prefix).await;
        assert!(
            keys.len() >= 5,
            "a device grant, a user code, a grant, an access token, a counter and a claim \
             cannot fit in {} keys: {keys:?}",
            keys.len()
        );
        let real_now = SystemClock.now();
        for key in &keys {
            assert_eq!(
                hash_tag(key),
                Some(prefix.as_str()),
                "{key} is not in the prefix's slot"
            );
            let value = dump(&mut conn, key).await;
            for secret in secrets {
                assert!(!key.contains(secret), "plaintext secret in key {key}");
                assert!(
                    !value.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "plaintext secret in the value of {key}"
                );
            }
            let pttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("PTTL");
            assert!(pttl > 0, "{key} has no TTL (PTTL {pttl})");
            // The TTL ends when a record does (to within the time this test has taken).
            let ends = lifetimes
                .iter()
                .map(|t| t.as_unix_millis() as i64 - real_now.as_unix_millis() as i64);
            assert!(
                ends.clone().any(|want| (pttl - want).abs() < 5_000),
                "{key}: PTTL {pttl} ms, expected one of {:?} ms",
                ends.collect::<Vec<_>>()
            );
        }
        delete_prefix(&url, &prefix).await;
    }

    /// Undecodable data is a backend failure (500), not an absent record or a panic.
    #[tokio::test]
    async fn corrupt_records_are_backend_errors() {
        let Some(url) = redis_url("corrupt_records_are_backend_errors") else {
            return;
        };
        let prefix = unique_prefix("corrupt");
        let store: RedisStore = store(&url, &prefix).await;
        let mut conn = raw_connection(&url).await;
        let now = SystemClock.now();
        let digest = AccessToken::generate().digest();
        let hex = digest.to_hex();
        let family = FamilyKey::generate();
        let id = family.grant_id();

        let set = |key: String, value: &'static str| {
            let mut conn = conn.clone();
            async move {
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .expect("SET");
            }
        };
        set(
            format!("{{{prefix}}}:{}:{hex}", layout::ACCESS_TOKEN),
            "not json",
        )
        .await;
        set(
            format!("{{{prefix}}}:{}:{id}", layout::GRANT),
            "{\"subject\":1}",
        )
        .await;
        set(
            format!("{{{prefix}}}:{}:{hex}", layout::DEVICE_GRANT),
            "a string, not a hash",
        )
        .await;
        let _: () = redis::cmd("HSET")
            .arg(format!("{{{prefix}}}:{}:{hex}", layout::USER_CODE))
            .arg("d")
            .arg("zz")
            .arg("x")
            .arg(u64::MAX / 2)
            .query_async(&mut conn)
            .await
            .expect("HSET");

        assert!(matches!(
            store.access_token(&digest, now).await,
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            store.grant(&id, now).await,
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            store.revoke_grant(&id, now).await,
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            store.device_grant(&digest, now).await,
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            store.device_grant_by_user_code(&digest, now).await,
            Err(StoreError::Backend(_))
        ));
        delete_prefix(&url, &prefix).await;
    }

    /// Stores with different prefixes share nothing.
    #[tokio::test]
    async fn prefixes_are_isolated() {
        let Some(url) = redis_url("prefixes_are_isolated") else {
            return;
        };
        let (p1, p2) = (unique_prefix("iso-a"), unique_prefix("iso-b"));
        let (a, b) = (store(&url, &p1).await, store(&url, &p2).await);
        let now = SystemClock.now();
        let user = UserCodeFormat::default().generate();
        let grant = DeviceGrant::new(
            super::KIT_CLIENT.into(),
            Scope::empty(),
            user.digest(),
            now,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let device = DeviceCode::generate().digest();
        assert_eq!(
            a.insert_device_grant(device, grant.clone(), now)
                .await
                .expect("insert"),
            Insert::Inserted
        );
        assert!(b.device_grant(&device, now).await.expect("read").is_none());
        // The same codes are free under the other prefix.
        assert_eq!(
            b.insert_device_grant(device, grant, now)
                .await
                .expect("insert"),
            Insert::Inserted
        );
        let window = Duration::from_secs(60);
        assert_eq!(
            a.try_increment("k", 1, window, now).await.map(|c| c.value),
            Ok(1)
        );
        // Had the counter been shared, the budget of one would be spent.
        assert!(
            b.try_increment("k", 1, window, now)
                .await
                .expect("counter")
                .counted
        );
        let jti = Digest::of(b"jti");
        let until = now.saturating_add(window);
        assert_eq!(a.claim_once(&jti, until, now).await, Ok(true));
        assert_eq!(b.claim_once(&jti, until, now).await, Ok(true));
        delete_prefix(&url, &p1).await;
        delete_prefix(&url, &p2).await;
    }
}

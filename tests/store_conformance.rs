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
use tower_device_flow::MemoryStore;
#[cfg(any(feature = "test-kit", feature = "redis"))]
use tower_device_flow::{Client, Scope};

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
#[cfg(any(feature = "test-kit", feature = "redis"))]
const KIT_CLIENT: &str = "kit-client";

#[cfg(any(feature = "test-kit", feature = "redis"))]
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_known_scopes() {
                let store = memory();
                test_kit::check_known_scopes(store.clone(), KIT_CLIENT, |client| {
                    store.add_client(client);
                    std::future::ready(())
                })
                .await;
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_known_scopes() {
                redis_support::with_store("check_known_scopes", |store| async move {
                    test_kit::check_known_scopes(store.clone(), KIT_CLIENT, |client| {
                        store.add_client(client);
                        std::future::ready(())
                    })
                    .await;
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
    check_revoke_grants_of_racing_rotations,
    check_grant_expiry,
    check_revoke_access_token,
    // Limits and one-time values.
    check_try_increment,
    check_try_increment_under_race,
    check_decrement,
    check_claim_once,
);

#[cfg(feature = "redis")]
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

/// Tests of what only a Redis store has: its keys, its scripts' edge cases, its prefixes.
#[cfg(feature = "redis")]
mod redis_layout {
    use std::collections::HashMap;
    use std::time::Duration;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use redis::aio::MultiplexedConnection;
    use tower_device_flow::family::{NewTokens, Presented};
    use tower_device_flow::grant::{Decision, DeviceGrant, GrantStatus, PollOutcome};
    use tower_device_flow::store::{Insert, IssuedGrant, RedisStore};
    use tower_device_flow::{
        AccessToken, Clock, DeviceCode, Digest, FamilyKey, Grant, GrantId, RefreshToken, Scope,
        Store, StoreError, Subject, SystemClock, Timestamp, TokenInfo, UserCode, UserCodeFormat,
        UserCodeGenerator,
    };

    use super::redis_support::{
        delete_prefix, keys_under, raw_connection, redis_url, store, unique_prefix, with_store,
    };

    const GRACE: Duration = Duration::from_secs(30);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn scope() -> Scope {
        Scope::parse("profile").expect("static scope")
    }

    /// A pending device grant, stored.
    struct Pending {
        device: DeviceCode,
        user: UserCode,
        grant: DeviceGrant,
    }

    async fn insert_pending(store: &RedisStore, now: Timestamp, expires_in: Duration) -> Pending {
        let device = DeviceCode::generate();
        let user = UserCodeFormat::default().generate();
        let grant = DeviceGrant::new(
            super::KIT_CLIENT.into(),
            scope(),
            user.digest(),
            now,
            expires_in,
            secs(5),
        );
        assert_eq!(
            store
                .insert_device_grant(device.digest(), grant.clone(), now)
                .await
                .expect("insert"),
            Insert::Inserted
        );
        Pending {
            device,
            user,
            grant,
        }
    }

    /// What a redemption hands the device, and the grant it stored.
    struct Issued {
        pending: Pending,
        refresh: RefreshToken,
        access: AccessToken,
        access_info: TokenInfo,
        grant: Grant,
    }

    /// Drives a device flow the way the services do: insert, approve by `subject`, redeem.
    async fn issue(store: &RedisStore, subject: &str, now: Timestamp) -> Issued {
        issue_for(store, subject, now, secs(1800)).await
    }

    /// [`issue`], for a grant (its refresh token) that lasts `lifetime`; the access token lasts
    /// ten minutes.
    async fn issue_for(
        store: &RedisStore,
        subject: &str,
        now: Timestamp,
        lifetime: Duration,
    ) -> Issued {
        let pending = insert_pending(store, now, secs(600)).await;
        let device = pending.device.digest();
        let current = store
            .device_grant(&device, now)
            .await
            .expect("read")
            .expect("device grant");
        let approved = current
            .record
            .decide(Decision::Approve(Subject::new(subject)), now)
            .expect("approve");
        assert!(store
            .replace_device_grant(&device, current.version, approved, None, now)
            .await
            .expect("approve swap"));
        let current = store
            .device_grant(&device, now)
            .await
            .expect("read")
            .expect("device grant");
        let PollOutcome::Issue {
            next,
            subject,
            approved_at,
            scope,
        } = current.record.poll(&super::KIT_CLIENT.into(), now)
        else {
            panic!("an approved grant did not issue");
        };
        let family = FamilyKey::generate();
        let (access, refresh) = (AccessToken::generate(), RefreshToken::generate(&family));
        let grant = Grant {
            id: family.grant_id(),
            client_id: super::KIT_CLIENT.into(),
            subject: subject.clone(),
            scope: scope.clone(),
            audience: None,
            approved_at,
            last_used_at: now,
            expires_at: now.saturating_add(lifetime),
            access_token: access.digest(),
            refresh_token: Some(refresh.digest()),
            superseded: None,
            cnf: None,
        };
        let access_info = TokenInfo::new(
            subject,
            super::KIT_CLIENT.into(),
            scope,
            now.saturating_add(secs(600)),
        )
        .with_grant_id(Some(grant.id));
        let issue = IssuedGrant {
            grant: grant.clone(),
            access: access_info.clone(),
        };
        assert!(store
            .replace_device_grant(&device, current.version, next, Some(issue), now)
            .await
            .expect("issue swap"));
        Issued {
            pending,
            refresh,
            access,
            access_info,
            grant,
        }
    }

    /// A rotation of `grant` (at `version`) presenting `presented`, as the token endpoint does.
    struct Rotated {
        refresh: RefreshToken,
        access: AccessToken,
        access_info: TokenInfo,
        grant: Grant,
    }

    async fn rotate(
        store: &RedisStore,
        grant: &Grant,
        version: u64,
        presented: &RefreshToken,
        now: Timestamp,
        lifetime: Duration,
    ) -> Option<Rotated> {
        let family = presented.family().expect("a refresh token of this crate");
        let (access, refresh) = (AccessToken::generate(), RefreshToken::generate(&family));
        let presentation = grant.presented(&presented.digest(), now, GRACE);
        let tokens = NewTokens {
            access_token: access.digest(),
            refresh_token: Some(refresh.digest()),
            expires_at: now.saturating_add(lifetime),
        };
        let rotation = grant.rotate(presentation, tokens, now)?;
        let access_info = TokenInfo::new(
            grant.subject.clone(),
            grant.client_id.clone(),
            grant.scope.clone(),
            now.saturating_add(secs(600)),
        )
        .with_grant_id(Some(grant.id));
        let next = rotation.next.clone();
        store
            .replace_grant(&grant.id, version, rotation, access_info.clone(), now)
            .await
            .expect("rotation")
            .then_some(Rotated {
                refresh,
                access,
                access_info,
                grant: next,
            })
    }

    /// The key's hash tag, by Redis Cluster's rule: the text between the first `{` and the
    /// first `}` after it, if non-empty.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = open + 1 + key[open + 1..].find('}')?;
        (close > open + 1).then(|| &key[open + 1..close])
    }

    /// A key's whole content, as bytes to search.
    async fn dump(conn: &mut MultiplexedConnection, key: &str) -> Vec<u8> {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(conn)
            .await
            .expect("TYPE");
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(key)
                .query_async(conn)
                .await
                .expect("GET")],
            "hash" => redis::cmd("HGETALL")
                .arg(key)
                .query_async(conn)
                .await
                .expect("HGETALL"),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await
                .expect("ZRANGE"),
            other => panic!("unexpected type {other} for {key}"),
        };
        parts.join(&b";"[..])
    }

    async fn kind_of(conn: &mut MultiplexedConnection, key: &str) -> String {
        redis::cmd("TYPE")
            .arg(key)
            .query_async(conn)
            .await
            .expect("TYPE")
    }

    /// Drives every kind of record into Redis (two device grants, one still pending; a grant
    /// redeemed and rotated; a counter; a one-time claim), then checks every key under the
    /// prefix: the layout, the type, no plaintext code, token or family key anywhere and no
    /// subject in a key name, a TTL on every key matching the record's lifetime, one hash tag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_layout_has_no_plaintext_and_every_key_expires() {
        let Some(url) = redis_url("key_layout_has_no_plaintext_and_every_key_expires") else {
            return;
        };
        let prefix = unique_prefix("layout");
        let store = store(&url, &prefix).await;
        let now = SystemClock.now();
        let subject = "alice@example.com";

        let issued = issue(&store, subject, now).await;
        let waiting = insert_pending(&store, now, secs(900)).await;
        let first = store
            .grant(&issued.grant.id, now)
            .await
            .expect("read")
            .expect("grant");
        let rotated = rotate(
            &store,
            &first.record,
            first.version,
            &issued.refresh,
            now,
            secs(3600),
        )
        .await
        .expect("the live refresh token rotates");
        let window = secs(60);
        let count = store
            .try_increment("verify:198.51.100.7", 5, window, now)
            .await
            .expect("counter");
        assert!(count.counted);
        let jti = Digest::of(b"a DPoP proof's jti");
        let until = now.saturating_add(secs(300));
        assert!(store.claim_once(&jti, until, now).await.expect("claim"));

        // The family key: the first 16 bytes of every refresh token of the grant.
        let family = URL_SAFE_NO_PAD
            .decode(issued.refresh.expose())
            .expect("base64url")[..16]
            .to_vec();
        let family_b64 = URL_SAFE_NO_PAD.encode(&family);
        let family_hex: String = family.iter().map(|b| format!("{b:02x}")).collect();
        let secrets = [
            issued.pending.device.expose(),
            issued.pending.user.expose(),
            waiting.device.expose(),
            waiting.user.expose(),
            issued.access.expose(),
            issued.refresh.expose(),
            rotated.access.expose(),
            rotated.refresh.expose(),
            &family_b64,
            &family_hex,
        ];
        let p = &prefix;
        let grant_key = format!("{{{p}}}:g:{}", issued.grant.id);
        let expected: HashMap<String, (&str, Timestamp)> = [
            (
                format!("{{{p}}}:d:{}", issued.pending.device.digest().to_hex()),
                ("hash", issued.pending.grant.retain_until()),
            ),
            (
                format!("{{{p}}}:u:{}", issued.pending.user.digest().to_hex()),
                ("hash", issued.pending.grant.retain_until()),
            ),
            (
                format!("{{{p}}}:d:{}", waiting.device.digest().to_hex()),
                ("hash", waiting.grant.retain_until()),
            ),
            (
                format!("{{{p}}}:u:{}", waiting.user.digest().to_hex()),
                ("hash", waiting.grant.retain_until()),
            ),
            // Only the waiting grant is still pending: the set lives as long as it does.
            (format!("{{{p}}}:p"), ("zset", waiting.grant.expires_at)),
            (grant_key.clone(), ("hash", rotated.grant.expires_at)),
            (
                format!("{{{p}}}:s:{}", Digest::of(subject.as_bytes()).to_hex()),
                ("zset", rotated.grant.expires_at),
            ),
            // The first access token went with the rotation.
            (
                format!("{{{p}}}:a:{}", rotated.access.digest().to_hex()),
                ("string", rotated.access_info.expires_at),
            ),
            (
                format!("{{{p}}}:c:verify:198.51.100.7"),
                ("hash", now.saturating_add(window)),
            ),
            // A claim's key is kept a minute past its `until`.
            (
                format!("{{{p}}}:o:{}", jti.to_hex()),
                ("string", until.saturating_add(secs(60))),
            ),
        ]
        .into_iter()
        .collect();

        let mut conn = raw_connection(&url).await;
        let keys = keys_under(&mut conn, &prefix).await;
        let mut want: Vec<&String> = expected.keys().collect();
        want.sort();
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            want,
            "unexpected key layout"
        );

        let real_now = SystemClock.now();
        for key in &keys {
            let (kind, expires) = expected[key];
            assert_eq!(kind_of(&mut conn, key).await, kind, "type of {key}");
            assert_eq!(
                hash_tag(key),
                Some(prefix.as_str()),
                "{key} is not in the prefix's slot"
            );
            assert!(
                !key.contains(subject),
                "the subject is spelled out in {key}"
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
            // The TTL ends when the record does (to within the time this test has taken).
            let want = expires.as_unix_millis() as i64 - real_now.as_unix_millis() as i64;
            assert!(
                (pttl - want).abs() < 5_000,
                "{key}: PTTL {pttl} ms, expected about {want} ms"
            );
        }
        // The grant hash names its access token and subject by digest, for the scripts that
        // revoke it.
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&grant_key)
            .query_async(&mut conn)
            .await
            .expect("HGETALL");
        assert_eq!(fields["v"], "1");
        assert_eq!(fields["a"], rotated.access.digest().to_hex());
        assert_eq!(fields["s"], Digest::of(subject.as_bytes()).to_hex());
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
        let far = now.saturating_add(secs(3600)).as_unix_millis();
        let digest = AccessToken::generate().digest();
        let hex = digest.to_hex();
        let [string_grant, bad_json, incomplete] =
            [[1u8; 16], [2; 16], [3; 16]].map(GrantId::from_bytes);
        let p = &prefix;

        async fn run(conn: &mut MultiplexedConnection, args: &[String]) {
            let _: () = redis::cmd(&args[0])
                .arg(&args[1..])
                .query_async(conn)
                .await
                .expect("writing a corrupt record");
        }
        let far_s = far.to_string();
        for cmd in [
            vec!["SET".into(), format!("{{{p}}}:a:{hex}"), "not json".into()],
            vec!["SET".into(), format!("{{{p}}}:d:{hex}"), "a string".into()],
            vec![
                "SET".into(),
                format!("{{{p}}}:g:{string_grant}"),
                "x".into(),
            ],
            vec![
                "SET".into(),
                format!("{{{p}}}:o:{hex}"),
                "not a time".into(),
            ],
            vec![
                "HSET".into(),
                format!("{{{p}}}:u:{hex}"),
                "d".into(),
                "zz".into(),
                "x".into(),
                far_s.clone(),
            ],
            vec![
                "HSET".into(),
                format!("{{{p}}}:g:{bad_json}"),
                "v".into(),
                "0".into(),
                "x".into(),
                far_s.clone(),
                "g".into(),
                "{\"id\":1}".into(),
            ],
            vec![
                "HSET".into(),
                format!("{{{p}}}:g:{incomplete}"),
                "v".into(),
                "0".into(),
            ],
            vec![
                "ZADD".into(),
                format!("{{{p}}}:s:{}", Digest::of(b"mallory").to_hex()),
                far_s.clone(),
                bad_json.to_string(),
            ],
            vec![
                "HSET".into(),
                format!("{{{p}}}:c:k"),
                "n".into(),
                "many".into(),
                "x".into(),
                far_s.clone(),
            ],
        ] {
            run(&mut conn, &cmd).await;
        }

        let backend = |r: &StoreError| matches!(r, StoreError::Backend(_));
        assert!(backend(
            &store.access_token(&digest, now).await.unwrap_err()
        ));
        assert!(backend(
            &store.device_grant(&digest, now).await.unwrap_err()
        ));
        assert!(backend(
            &store
                .device_grant_by_user_code(&digest, now)
                .await
                .unwrap_err()
        ));
        assert!(backend(
            &store
                .grants_of(&Subject::new("mallory"), now)
                .await
                .unwrap_err()
        ));
        for id in [string_grant, bad_json, incomplete] {
            assert!(backend(&store.grant(&id, now).await.unwrap_err()), "{id}");
            // (Revoking the undecodable grant does delete it: it fails closed.)
            assert!(
                backend(&store.revoke_grant(&id, now).await.unwrap_err()),
                "{id}"
            );
        }
        assert!(backend(
            &store
                .try_increment("k", 5, secs(60), now)
                .await
                .unwrap_err()
        ));
        assert!(backend(
            &store
                .claim_once(&digest, now.saturating_add(secs(60)), now)
                .await
                .unwrap_err()
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
        let pending = insert_pending(&a, now, secs(60)).await;
        let device = pending.device.digest();
        assert!(b.device_grant(&device, now).await.expect("read").is_none());
        // The same codes are free under the other prefix.
        assert_eq!(
            b.insert_device_grant(device, pending.grant, now)
                .await
                .expect("insert"),
            Insert::Inserted
        );
        let issued = issue(&a, "alice", now).await;
        assert!(b
            .grant(&issued.grant.id, now)
            .await
            .expect("read")
            .is_none());
        assert!(b
            .access_token(&issued.access.digest(), now)
            .await
            .expect("read")
            .is_none());
        assert!(b
            .grants_of(&Subject::new("alice"), now)
            .await
            .expect("read")
            .is_empty());
        assert!(b
            .revoke_grant(&issued.grant.id, now)
            .await
            .expect("revoke")
            .is_none());
        assert!(a
            .access_token(&issued.access.digest(), now)
            .await
            .expect("read")
            .is_some());
        for _ in 0..2 {
            assert!(
                a.try_increment("k", 2, secs(60), now)
                    .await
                    .expect("count")
                    .counted
            );
        }
        assert!(
            !a.try_increment("k", 2, secs(60), now)
                .await
                .expect("count")
                .counted
        );
        let fresh = b.try_increment("k", 2, secs(60), now).await.expect("count");
        assert_eq!((fresh.counted, fresh.value), (true, 1));
        let jti = Digest::of(b"jti");
        let until = now.saturating_add(secs(60));
        assert!(a.claim_once(&jti, until, now).await.expect("claim"));
        assert!(b.claim_once(&jti, until, now).await.expect("claim"));
        // `a` holds one pending grant (the other was redeemed), `b` its copy.
        assert_eq!(a.pending_device_grants(now).await, Ok(Some(1)));
        assert_eq!(b.pending_device_grants(now).await, Ok(Some(1)));
        delete_prefix(&url, &p1).await;
        delete_prefix(&url, &p2).await;
    }

    /// The pending gauge counts exactly the device grants neither decided nor expired by the
    /// caller's `now`.
    #[tokio::test]
    async fn pending_gauge_is_exact() {
        with_store("pending_gauge_is_exact", |store| async move {
            let now = SystemClock.now();
            assert_eq!(store.pending_device_grants(now).await, Ok(Some(0)));
            let short = insert_pending(&store, now, secs(60)).await;
            let long = insert_pending(&store, now, secs(600)).await;
            let denied = insert_pending(&store, now, secs(600)).await;
            // A refused insert (the user code is taken) counts nothing.
            let clash = DeviceGrant::new(
                super::KIT_CLIENT.into(),
                scope(),
                long.user.digest(),
                now,
                secs(600),
                secs(5),
            );
            assert_eq!(
                store
                    .insert_device_grant(DeviceCode::generate().digest(), clash, now)
                    .await,
                Ok(Insert::Taken)
            );
            assert_eq!(store.pending_device_grants(now).await, Ok(Some(3)));
            // A poll that keeps the grant pending keeps it counted; a decision uncounts it.
            let polled = match short.grant.poll(&super::KIT_CLIENT.into(), now) {
                PollOutcome::Pending { next: Some(next) } => next,
                other => panic!("unexpected {other:?}"),
            };
            assert!(store
                .replace_device_grant(&short.device.digest(), 0, polled, None, now)
                .await
                .expect("poll swap"));
            let no = denied.grant.decide(Decision::Deny, now).expect("deny");
            assert_eq!(no.status, GrantStatus::Denied);
            assert!(store
                .replace_device_grant(&denied.device.digest(), 0, no, None, now)
                .await
                .expect("deny swap"));
            assert_eq!(store.pending_device_grants(now).await, Ok(Some(2)));
            // Expiry by the caller's clock, not Redis's.
            let later = now.saturating_add(secs(60));
            assert_eq!(store.pending_device_grants(later).await, Ok(Some(1)));
            let much_later = now.saturating_add(secs(600));
            assert_eq!(store.pending_device_grants(much_later).await, Ok(Some(0)));
        })
        .await;
    }

    /// A subject with more grants than one revocation script takes loses all of them, each
    /// with its access token, and nothing of another subject.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoke_grants_of_takes_every_batch() {
        with_store("revoke_grants_of_takes_every_batch", |store| async move {
            let now = SystemClock.now();
            let mut issued = Vec::new();
            for _ in 0..130 {
                issued.push(issue(&store, "bulk", now).await);
            }
            let other = issue(&store, "other", now).await;
            assert_eq!(
                store
                    .grants_of(&Subject::new("bulk"), now)
                    .await
                    .expect("grants_of")
                    .len(),
                130
            );
            let mut revoked = store
                .revoke_grants_of(&Subject::new("bulk"), now)
                .await
                .expect("revoke_grants_of");
            let mut want: Vec<Grant> = issued.iter().map(|i| i.grant.clone()).collect();
            revoked.sort_by_key(|g| g.id);
            want.sort_by_key(|g| g.id);
            assert_eq!(revoked, want);
            for i in &issued {
                assert!(store.grant(&i.grant.id, now).await.expect("read").is_none());
                assert!(store
                    .access_token(&i.access.digest(), now)
                    .await
                    .expect("read")
                    .is_none());
            }
            assert!(store
                .grants_of(&Subject::new("bulk"), now)
                .await
                .expect("grants_of")
                .is_empty());
            assert_eq!(
                store
                    .access_token(&other.access.digest(), now)
                    .await
                    .expect("read"),
                Some(other.access_info.clone())
            );
            assert_eq!(
                store.grants_of(&Subject::new("other"), now).await,
                Ok(vec![other.grant.clone()])
            );
        })
        .await;
    }

    /// The scripts hand times back to Redis without Lua's lossy number formatting: a record
    /// that never expires (a saturated timestamp, capped at year 9999) still gets its TTL, and
    /// its subject index the same one.
    #[tokio::test]
    async fn far_future_expiries_survive_the_scripts() {
        with_store(
            "far_future_expiries_survive_the_scripts",
            |store| async move {
                let now = SystemClock.now();
                let issued = issue(&store, "forever", now).await;
                let current = store
                    .grant(&issued.grant.id, now)
                    .await
                    .expect("read")
                    .expect("grant");
                let rotated = rotate(
                    &store,
                    &current.record,
                    current.version,
                    &issued.refresh,
                    now,
                    Duration::from_millis(u64::MAX),
                )
                .await
                .expect("rotation");
                assert_eq!(
                    rotated.grant.expires_at,
                    Timestamp::from_unix_millis(u64::MAX)
                );
                // Year 9999, as `PEXPIREAT` takes it.
                let cap = 253_402_300_799_999_i64;
                let url = std::env::var("REDIS_URL").expect("with_store ran, so REDIS_URL is set");
                let mut conn = raw_connection(&url).await;
                let p = store.prefix();
                for key in [
                    format!("{{{p}}}:g:{}", rotated.grant.id),
                    format!("{{{p}}}:s:{}", Digest::of(b"forever").to_hex()),
                ] {
                    let at: i64 = redis::cmd("PEXPIRETIME")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("PEXPIRETIME");
                    assert_eq!(at, cap, "{key}");
                }
                assert_eq!(
                    store.grants_of(&Subject::new("forever"), now).await,
                    Ok(vec![rotated.grant.clone()])
                );
            },
        )
        .await;
    }

    /// An access token lives until it is revoked or expires, and revoking a grant deletes the
    /// access token it names at that moment, not the one it was issued with. A grant whose
    /// refresh token ends before its access token keeps its key until the access token ends,
    /// so that revoking the grant (alone or with its subject's) still deletes the token.
    #[tokio::test]
    async fn access_tokens_live_until_revoked() {
        with_store("access_tokens_live_until_revoked", |store| async move {
            let now = SystemClock.now();
            let url = std::env::var("REDIS_URL").expect("with_store ran, so REDIS_URL is set");
            let mut conn = raw_connection(&url).await;
            let p = store.prefix().to_owned();

            // Over after a minute; its access token lasts ten.
            let short = issue_for(&store, "erin", now, secs(60)).await;
            let after = now.saturating_add(secs(120));
            assert!(store
                .grant(&short.grant.id, after)
                .await
                .expect("read")
                .is_none());
            assert!(store
                .grants_of(&Subject::new("erin"), after)
                .await
                .expect("grants_of")
                .is_empty());
            assert_eq!(
                store.access_token(&short.access.digest(), after).await,
                Ok(Some(short.access_info.clone()))
            );
            let pttl: i64 = redis::cmd("PTTL")
                .arg(format!("{{{p}}}:g:{}", short.grant.id))
                .query_async(&mut conn)
                .await
                .expect("PTTL");
            assert!(
                pttl > 500_000,
                "the grant key went before its token: {pttl}"
            );
            let revoked = store
                .revoke_grants_of(&Subject::new("erin"), after)
                .await
                .expect("revoke_grants_of");
            assert_eq!(revoked, vec![short.grant.clone()]);
            assert_eq!(
                store.access_token(&short.access.digest(), after).await,
                Ok(None)
            );

            let issued = issue(&store, "carol", now).await;
            let a1 = issued.access.digest();
            assert_eq!(
                store.access_token(&a1, now).await,
                Ok(Some(issued.access_info.clone()))
            );
            let rotated = rotate(&store, &issued.grant, 0, &issued.refresh, now, secs(1800))
                .await
                .expect("rotation");
            assert_eq!(store.access_token(&a1, now).await, Ok(None));
            // A stale rotation (version 0 again) writes nothing.
            assert!(
                rotate(&store, &issued.grant, 0, &issued.refresh, now, secs(1800))
                    .await
                    .is_none()
            );
            let a2 = rotated.access.digest();
            assert_eq!(
                store.access_token(&a2, now).await,
                Ok(Some(rotated.access_info.clone()))
            );
            let revoked = store
                .revoke_grant(&issued.grant.id, now)
                .await
                .expect("revoke")
                .expect("the grant was there");
            assert_eq!(revoked, rotated.grant);
            assert_eq!(store.access_token(&a2, now).await, Ok(None));
            assert_eq!(store.revoke_access_token(&a2, now).await, Ok(false));
            assert_eq!(
                store.grants_of(&Subject::new("carol"), now).await,
                Ok(vec![])
            );
            // A rotation after the revocation finds no grant.
            let current = rotated.grant.clone();
            assert_eq!(
                current.presented(&rotated.refresh.digest(), now, GRACE),
                Presented::Current
            );
            assert!(
                rotate(&store, &current, 1, &rotated.refresh, now, secs(1800))
                    .await
                    .is_none()
            );
            assert!(store.grant(&current.id, now).await.expect("read").is_none());
        })
        .await;
    }
}

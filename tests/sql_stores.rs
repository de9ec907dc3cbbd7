//! The SQL stores against real servers: the store conformance kit on `PostgresStore` and
//! `SqliteStore`, then what only SQL stores have (their tables, the purge, clients in the
//! database, corrupt rows, faults).
//!
//! ```text
//! POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --features postgres,sqlite,test-kit --test sql_stores
//! ```
//!
//! Every PostgreSQL test creates a schema of its own and drops it afterwards, every SQLite test
//! a file in a temporary directory of its own, so tests run in parallel. Without
//! `POSTGRES_URL` every PostgreSQL test says loudly on stderr that it did not run, and fails if
//! `CI` is set. Built without the features, the tests do not exist, and `sql_tests_are_built`
//! says so.

mod sql_support;

/// Says loudly when this build leaves the SQL tests out.
#[test]
fn sql_tests_are_built() {
    if cfg!(not(all(
        feature = "postgres",
        feature = "sqlite",
        feature = "test-kit"
    ))) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** built without `--features postgres,sqlite,test-kit`: \
             some SQL store tests did NOT run ***"
        );
    }
}

/// One test per check and backend, so a failure names both.
#[cfg(feature = "test-kit")]
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        #[cfg(feature = "postgres")]
        mod postgres_kit {
            use tower_device_flow::store::test_kit;
            use super::sql_support::{pg, KIT_CLIENT};

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    pg::with_store(stringify!($check), test_kit::$check).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                pg::with_store("run_all", |store| async move {
                    test_kit::run_all(|| store.clone()).await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                pg::with_store("check_client_lookup", |store| async move {
                    test_kit::check_client_lookup(store, KIT_CLIENT).await;
                })
                .await;
            }

            // A client added to the database's `clients` table shows with those of the process.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_known_scopes() {
                pg::with_store("check_known_scopes", |store| async move {
                    let table = store.clone();
                    test_kit::check_known_scopes(store, KIT_CLIENT, |client| async move {
                        table.put_client(&client).await.expect("put_client");
                    })
                    .await;
                })
                .await;
            }
        }

        #[cfg(feature = "sqlite")]
        mod sqlite_kit {
            use tower_device_flow::store::test_kit;
            use super::sql_support::{lite, KIT_CLIENT};

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    lite::with_store(stringify!($check), test_kit::$check).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                lite::with_store("run_all", |store| async move {
                    test_kit::run_all(|| store.clone()).await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                lite::with_store("check_client_lookup", |store| async move {
                    test_kit::check_client_lookup(store, KIT_CLIENT).await;
                })
                .await;
            }

            // A client added to the database's `clients` table shows with those of the process.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_known_scopes() {
                lite::with_store("check_known_scopes", |store| async move {
                    let table = store.clone();
                    test_kit::check_known_scopes(store, KIT_CLIENT, |client| async move {
                        table.put_client(&client).await.expect("put_client");
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
    check_grant_expiry,
    check_revoke_access_token,
    // Limits and one-time values.
    check_try_increment,
    check_try_increment_under_race,
    check_decrement,
    check_claim_once,
);

/// A whole flow through the `Store` trait, as the services drive it, for the tests below: a
/// device grant approved and redeemed, its refresh token rotated, a counter, a claim, and a
/// confidential client in the database. Returns every secret it made.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod flow {
    use std::time::Duration;

    use tower_device_flow::family::{NewTokens, Presented};
    use tower_device_flow::grant::{Decision, PollOutcome};
    use tower_device_flow::store::IssuedGrant;
    use tower_device_flow::{
        AccessToken, ClientId, Clock, DeviceCode, DeviceGrant, Digest, FamilyKey, Grant,
        RefreshToken, Scope, Store, Subject, SystemClock, Timestamp, TokenInfo, UserCodeFormat,
        UserCodeGenerator,
    };

    use super::sql_support::KIT_CLIENT;

    pub struct Flow {
        pub now: Timestamp,
        pub device: Digest,
        pub grant: Grant,
        pub access: Digest,
        /// Every secret, as a client would present it.
        pub secrets: Vec<String>,
    }

    pub fn at(now: Timestamp, secs: u64) -> Timestamp {
        now.saturating_add(Duration::from_secs(secs))
    }

    pub fn pending(now: Timestamp, expires_in: u64) -> (DeviceCode, String, DeviceGrant) {
        let device = DeviceCode::generate();
        let user = UserCodeFormat::default().generate();
        let grant = DeviceGrant::new(
            ClientId::new(KIT_CLIENT),
            Scope::parse("profile").expect("scope"),
            user.digest(),
            now,
            Duration::from_secs(expires_in),
            Duration::from_secs(5),
        );
        (device, user.expose().to_owned(), grant)
    }

    pub async fn run<S: Store>(store: &S) -> Flow {
        let now = SystemClock.now();
        let (device, user, grant) = pending(now, 600);
        store
            .insert_device_grant(device.digest(), grant.clone(), now)
            .await
            .expect("insert");
        let approved = grant
            .decide(Decision::Approve(Subject::new("alice")), now)
            .expect("approve");
        assert!(store
            .replace_device_grant(&device.digest(), 0, approved.clone(), None, now)
            .await
            .expect("approve swap"));
        let PollOutcome::Issue {
            next,
            subject,
            scope,
            approved_at,
        } = approved.poll(&ClientId::new(KIT_CLIENT), now)
        else {
            panic!("an approved grant must issue")
        };
        let family = FamilyKey::generate();
        let (access, refresh) = (AccessToken::generate(), RefreshToken::generate(&family));
        let expires_at = at(now, 1800);
        let g = Grant {
            id: family.grant_id(),
            client_id: ClientId::new(KIT_CLIENT),
            subject: subject.clone(),
            scope: scope.clone(),
            audience: None,
            approved_at,
            last_used_at: now,
            expires_at,
            access_token: access.digest(),
            refresh_token: Some(refresh.digest()),
            superseded: None,
            cnf: None,
        };
        let info = |scope: &Scope| {
            TokenInfo::new(
                subject.clone(),
                ClientId::new(KIT_CLIENT),
                scope.clone(),
                at(now, 600),
            )
            .with_grant_id(Some(g.id))
        };
        let issue = IssuedGrant {
            grant: g.clone(),
            access: info(&scope),
        };
        assert!(store
            .replace_device_grant(&device.digest(), 1, next, Some(issue), now)
            .await
            .expect("redeem"));
        // Rotate once, so a superseded refresh token is stored too.
        let (access2, refresh2) = (AccessToken::generate(), RefreshToken::generate(&family));
        let rotation = g
            .rotate(
                Presented::Current,
                NewTokens {
                    access_token: access2.digest(),
                    refresh_token: Some(refresh2.digest()),
                    expires_at,
                },
                now,
            )
            .expect("rotation");
        let next = rotation.next.clone();
        assert!(store
            .replace_grant(&g.id, 0, rotation, info(&scope), now)
            .await
            .expect("rotate"));
        store
            .try_increment("verify:198.51.100.7", 5, Duration::from_secs(60), now)
            .await
            .expect("counter");
        let jti = AccessToken::generate();
        assert!(store
            .claim_once(&jti.digest(), at(now, 60), now)
            .await
            .expect("claim"));
        Flow {
            now,
            device: device.digest(),
            grant: next,
            access: access2.digest(),
            secrets: [
                device.expose(),
                &user,
                access.expose(),
                refresh.expose(),
                access2.expose(),
                refresh2.expose(),
                jti.expose(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }

    /// An approved device grant, and what its redemption would store: the device code, the
    /// grant marked redeemed (to swap in at version 1) and the issued grant.
    pub async fn approved<S: Store>(
        store: &S,
        now: Timestamp,
    ) -> (Digest, DeviceGrant, IssuedGrant) {
        let (device, _, grant) = pending(now, 600);
        store
            .insert_device_grant(device.digest(), grant.clone(), now)
            .await
            .expect("insert");
        let approved = grant
            .decide(Decision::Approve(Subject::new("alice")), now)
            .expect("approve");
        assert!(store
            .replace_device_grant(&device.digest(), 0, approved.clone(), None, now)
            .await
            .expect("approve swap"));
        let PollOutcome::Issue {
            next,
            subject,
            scope,
            approved_at,
        } = approved.poll(&ClientId::new(KIT_CLIENT), now)
        else {
            panic!("an approved grant must issue")
        };
        let family = FamilyKey::generate();
        let access = AccessToken::generate();
        let grant = Grant {
            id: family.grant_id(),
            client_id: ClientId::new(KIT_CLIENT),
            subject: subject.clone(),
            scope: scope.clone(),
            audience: None,
            approved_at,
            last_used_at: now,
            expires_at: at(now, 1800),
            access_token: access.digest(),
            refresh_token: Some(RefreshToken::generate(&family).digest()),
            superseded: None,
            cnf: None,
        };
        let access = TokenInfo::new(subject, ClientId::new(KIT_CLIENT), scope, at(now, 600))
            .with_grant_id(Some(grant.id));
        (device.digest(), next, IssuedGrant { grant, access })
    }

    /// Lower-case hex of `bytes`, as databases print blobs.
    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The tables the schema documents, and nothing else of the store's.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const TABLES: [&str; 6] = [
    "access_tokens",
    "claims",
    "clients",
    "counters",
    "device_grants",
    "grants",
];

#[cfg(any(feature = "postgres", feature = "sqlite"))]
const CLIENT_SECRET: &str = "db-client-secret-value";

/// No secret appears in `dump` (as text or as the hex of its bytes), and the digests do.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn assert_only_digests(dump: &str, flow: &flow::Flow) {
    let dump = dump.to_ascii_lowercase();
    for secret in flow
        .secrets
        .iter()
        .map(String::as_str)
        .chain([CLIENT_SECRET])
    {
        assert!(
            !dump.contains(&secret.to_ascii_lowercase()),
            "a plaintext secret is stored"
        );
        assert!(
            !dump.contains(&flow::hex(secret.as_bytes())),
            "a secret's bytes are stored"
        );
    }
    for digest in [flow.device, flow.access] {
        assert!(dump.contains(&digest.to_hex()), "a key digest is missing");
    }
    assert!(dump.contains(&flow::hex(flow.grant.id.as_bytes())));
    let secret = tower_device_flow::Digest::of(CLIENT_SECRET.as_bytes());
    assert!(
        dump.contains(&secret.to_hex()),
        "the client secret digest is missing"
    );
}

#[cfg(feature = "postgres")]
mod postgres_tables {
    use std::time::Duration;

    use tower_device_flow::{
        Client, ClientSource, Clock, PostgresStore, Scope, Store, StoreError, SystemClock,
    };

    use super::flow::{self, at};
    use super::sql_support::pg;
    use super::{assert_only_digests, CLIENT_SECRET, TABLES};

    async fn tables(store: &PostgresStore) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name <> '_sqlx_migrations' ORDER BY 1",
        )
        .bind(store.schema())
        .fetch_all(store.pool())
        .await
        .expect("list tables")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_hold_digests_never_a_usable_secret() {
        pg::with_store("pg_digests", |store| async move {
            assert_eq!(tables(&store).await, TABLES);
            let flow = flow::run(&store).await;
            let scope = Scope::parse("profile").expect("scope");
            store
                .put_client(&Client::confidential("db-client", CLIENT_SECRET, scope))
                .await
                .expect("put_client");
            let mut dump = String::new();
            for table in TABLES {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                        .fetch_all(store.pool())
                        .await
                        .expect("dump");
                assert!(!rows.is_empty(), "{table} is empty after a whole flow");
                dump.push_str(&rows.join("\n"));
            }
            assert_only_digests(&dump, &flow);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_is_idempotent() {
        pg::with_store("pg_migrate_twice", |store| async move {
            store.migrate().await.expect("second migrate");
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(store.pool())
                .await
                .expect("count migrations");
            assert_eq!(applied, 1);
        })
        .await;
    }

    /// Expired rows go in batches of the configured size, through the index on their end
    /// column; live rows stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_deletes_ended_rows_in_batches() {
        let Some(url) = super::sql_support::postgres_url("purge_deletes_ended_rows") else {
            return;
        };
        let schema = super::sql_support::unique_name("pg_purge");
        let store = PostgresStore::builder()
            .schema(&schema)
            .purge_every(None)
            .purge_batch(10)
            .connect(&url)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let body = {
            let store = store.clone();
            async move {
                let now = SystemClock.now();
                for _ in 0..25 {
                    let (device, _, grant) = flow::pending(now, 1);
                    store
                        .insert_device_grant(device.digest(), grant, now)
                        .await
                        .expect("insert");
                }
                let (live, _, grant) = flow::pending(now, 3600);
                store
                    .insert_device_grant(live.digest(), grant, now)
                    .await
                    .expect("insert");
                for i in 0..5 {
                    store
                        .try_increment(&format!("k{i}"), 9, Duration::from_secs(1), now)
                        .await
                        .expect("counter");
                }
                // 25 grants and 5 counters ended by then; the purge takes 10 rows a statement.
                let later = at(now, 700);
                assert_eq!(store.purge_expired(later).await, Ok(30));
                assert_eq!(store.purge_expired(later).await, Ok(0));
                let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_grants")
                    .fetch_one(store.pool())
                    .await
                    .expect("count");
                assert_eq!(left, 1);
                assert!(store
                    .device_grant(&live.digest(), later)
                    .await
                    .expect("read")
                    .is_some());

                // With enough rows for the planner to care, the batch is an index range scan.
                sqlx::query(
                    "INSERT INTO claims (digest, until) SELECT sha256(i::text::bytea), i \
                     FROM generate_series(1, 20000) AS i",
                )
                .execute(store.pool())
                .await
                .expect("fill claims");
                sqlx::query("ANALYZE claims")
                    .execute(store.pool())
                    .await
                    .expect("analyze");
                let plan: Vec<String> = sqlx::query_scalar(
                    "EXPLAIN DELETE FROM claims WHERE digest IN (SELECT digest FROM claims \
                     WHERE until <= 100 ORDER BY until LIMIT 10 FOR UPDATE SKIP LOCKED)",
                )
                .fetch_all(store.pool())
                .await
                .expect("explain");
                let plan = plan.join("\n");
                assert!(plan.contains("claims_until"), "no index scan:\n{plan}");
                assert!(!plan.contains("Seq Scan"), "a table scan:\n{plan}");
            }
        };
        super::sql_support::guarded(body, async {
            store.close().await;
            pg::drop_schema(&url, &schema).await;
        })
        .await;
    }

    /// A write whose `now` finds a purge due starts one in the background.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_start_the_purge() {
        pg::with_store("pg_purge_auto", |store| async move {
            // Rows that ended long ago, written behind the store's back (no write of the store
            // has run yet, so its first purge is due).
            sqlx::query(
                "INSERT INTO claims (digest, until) SELECT sha256(i::text::bytea), i \
                 FROM generate_series(1, 50) AS i",
            )
            .execute(store.pool())
            .await
            .expect("fill claims");
            let now = SystemClock.now();
            store
                .try_increment("k", 5, Duration::from_secs(60), now)
                .await
                .expect("a write");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM claims")
                    .fetch_one(store.pool())
                    .await
                    .expect("count");
                if n == 0 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the purge never ran");
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_live_in_the_database() {
        pg::with_store("pg_clients", |store| async move {
            let scope = Scope::parse("profile email").expect("scope");
            assert_eq!(store.client("db-client").await, Ok(None));
            store
                .put_client(
                    &Client::confidential("db-client", CLIENT_SECRET, scope.clone())
                        .with_name("From the database"),
                )
                .await
                .expect("put_client");
            let c = store
                .client("db-client")
                .await
                .expect("lookup")
                .expect("client");
            assert!(c.verify_secret(CLIENT_SECRET) && !c.verify_secret("guess"));
            assert_eq!(c.name(), Some("From the database"));
            // The application's own insert, with PostgreSQL's sha256().
            sqlx::query(
                "INSERT INTO clients (client_id, secret_sha256, allowed_scope) \
                 VALUES ('app-cli', sha256('s3cret'::bytea), 'profile')",
            )
            .execute(store.pool())
            .await
            .expect("insert");
            let c = store
                .client("app-cli")
                .await
                .expect("lookup")
                .expect("client");
            assert!(c.verify_secret("s3cret"));
            assert_eq!(c.default_scope().as_str(), "profile");
            // In-process registration wins over the table.
            store.add_client(Client::public("db-client", scope).with_name("In process"));
            let c = store
                .client("db-client")
                .await
                .expect("lookup")
                .expect("client");
            assert_eq!(c.name(), Some("In process"));
            store.remove_client("db-client");
            assert_eq!(store.delete_client("db-client").await, Ok(true));
            assert_eq!(store.delete_client("db-client").await, Ok(false));
            assert_eq!(store.client("db-client").await, Ok(None));
        })
        .await;
    }

    /// Rows the store did not write as it does are a backend failure (500), not a panic and
    /// not an absent record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_rows_are_backend_errors() {
        pg::with_store("pg_corrupt", |store| async move {
            let flow = flow::run(&store).await;
            sqlx::query("UPDATE device_grants SET user_code = '\\x0102'::bytea")
                .execute(store.pool())
                .await
                .expect("corrupt");
            sqlx::query("UPDATE grants SET scope = 'a\"b'")
                .execute(store.pool())
                .await
                .expect("corrupt");
            sqlx::query("INSERT INTO clients (client_id, allowed_scope) VALUES ('bad', '\\\\')")
                .execute(store.pool())
                .await
                .expect("corrupt");
            assert!(matches!(
                store.device_grant(&flow.device, flow.now).await,
                Err(StoreError::Backend(_))
            ));
            assert!(matches!(
                store.grant(&flow.grant.id, flow.now).await,
                Err(StoreError::Backend(_))
            ));
            assert!(matches!(
                store.client("bad").await,
                Err(StoreError::Backend(_))
            ));
        })
        .await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_tables {
    use std::time::Duration;

    use tower_device_flow::{Client, ClientSource, Scope, SqliteStore, Store, StoreError};

    use super::flow::{self, at};
    use super::sql_support::{lite, TempDir};
    use super::{assert_only_digests, CLIENT_SECRET, TABLES};

    async fn tables(store: &SqliteStore) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' ORDER BY 1",
        )
        .fetch_all(store.pool())
        .await
        .expect("list tables")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_hold_digests_never_a_usable_secret() {
        lite::with_store("lite_digests", |store| async move {
            assert_eq!(tables(&store).await, TABLES);
            let flow = flow::run(&store).await;
            let scope = Scope::parse("profile").expect("scope");
            store
                .put_client(&Client::confidential("db-client", CLIENT_SECRET, scope))
                .await
                .expect("put_client");
            let mut dump = String::new();
            for table in TABLES {
                let columns: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(store.pool())
                        .await
                        .expect("columns");
                let row = columns
                    .iter()
                    .map(|c| format!("quote({c})"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {row} FROM {table}"))
                    .fetch_all(store.pool())
                    .await
                    .expect("dump");
                assert!(!rows.is_empty(), "{table} is empty after a whole flow");
                dump.push_str(&rows.join("\n"));
            }
            assert_only_digests(&dump, &flow);
            // Digests are stored as blobs, not as text or numbers.
            let kind: String = sqlx::query_scalar("SELECT typeof(device_code) FROM device_grants")
                .fetch_one(store.pool())
                .await
                .expect("typeof");
            assert_eq!(kind, "blob");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_deletes_ended_rows_in_batches() {
        let dir = TempDir::new("lite_purge");
        let store = SqliteStore::builder()
            .purge_every(None)
            .purge_batch(10)
            .connect(dir.file("purge.sqlite3"))
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let now = tower_device_flow::Clock::now(&tower_device_flow::SystemClock);
        for _ in 0..25 {
            let (device, _, grant) = flow::pending(now, 1);
            store
                .insert_device_grant(device.digest(), grant, now)
                .await
                .expect("insert");
        }
        let (live, _, grant) = flow::pending(now, 3600);
        store
            .insert_device_grant(live.digest(), grant, now)
            .await
            .expect("insert");
        let later = at(now, 700);
        assert_eq!(store.purge_expired(later).await, Ok(25));
        assert!(store
            .device_grant(&live.digest(), later)
            .await
            .expect("read")
            .is_some());
        // Each batch is a search of the index on the end column, never a scan.
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN DELETE FROM device_grants WHERE device_code IN \
             (SELECT device_code FROM device_grants WHERE retain_until <= 1 \
             ORDER BY retain_until LIMIT 10)",
        )
        .fetch_all(store.pool())
        .await
        .expect("explain");
        let plan: Vec<String> = plan.into_iter().map(|r| r.3).collect();
        let plan = plan.join("\n");
        assert!(plan.contains("INDEX device_grants_retain_until"), "{plan}");
        assert!(
            !plan.contains("SCAN device_grants\n") && !plan.ends_with("SCAN device_grants"),
            "{plan}"
        );
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_live_in_the_file() {
        lite::with_store("lite_clients", |store| async move {
            let scope = Scope::parse("profile").expect("scope");
            store
                .put_client(&Client::confidential("db-client", CLIENT_SECRET, scope))
                .await
                .expect("put_client");
            let c = store
                .client("db-client")
                .await
                .expect("lookup")
                .expect("client");
            assert!(c.verify_secret(CLIENT_SECRET) && !c.verify_secret("guess"));
            assert_eq!(store.delete_client("db-client").await, Ok(true));
            assert_eq!(store.client("db-client").await, Ok(None));
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_rows_are_backend_errors() {
        lite::with_store("lite_corrupt", |store| async move {
            let flow = flow::run(&store).await;
            sqlx::query("UPDATE device_grants SET user_code = X'0102'")
                .execute(store.pool())
                .await
                .expect("corrupt");
            sqlx::query("UPDATE grants SET approved_at = -5")
                .execute(store.pool())
                .await
                .expect("corrupt");
            assert!(matches!(
                store.device_grant(&flow.device, flow.now).await,
                Err(StoreError::Backend(_))
            ));
            assert!(matches!(
                store.grant(&flow.grant.id, flow.now).await,
                Err(StoreError::Backend(_))
            ));
        })
        .await;
    }

    /// A file another process holds locked: writes are 503 within the bound, reads go on (WAL),
    /// and once the lock is gone the store works again by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_file_is_unavailable_then_recovers() {
        use sqlx::Connection as _;
        let dir = TempDir::new("lite_locked");
        let path = dir.file("locked.sqlite3");
        let store = SqliteStore::builder()
            .acquire_timeout(Duration::from_millis(200))
            .operation_timeout(Duration::from_millis(500))
            .connect(&path)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let now = tower_device_flow::Clock::now(&tower_device_flow::SystemClock);
        let (device, _, grant) = flow::pending(now, 600);
        store
            .insert_device_grant(device.digest(), grant, now)
            .await
            .expect("insert");

        let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("another connection");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .expect("lock");
        let started = std::time::Instant::now();
        let (device2, _, grant2) = flow::pending(now, 600);
        let refused = store
            .insert_device_grant(device2.digest(), grant2.clone(), now)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(store
            .device_grant(&device.digest(), now)
            .await
            .expect("read")
            .is_some());
        sqlx::query("ROLLBACK")
            .execute(&mut other)
            .await
            .expect("unlock");
        assert_eq!(
            store
                .insert_device_grant(device2.digest(), grant2, now)
                .await,
            Ok(tower_device_flow::store::Insert::Inserted)
        );
        store.close().await;
    }
}

/// One schema: the same tables with the same columns on both dialects.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_have_one_schema() {
    sql_support::pg::with_store("one_schema", |pg| async move {
        let dir = sql_support::TempDir::new("one_schema");
        let lite = sql_support::lite::store(&dir.file("s.sqlite3")).await;
        let mut pg_columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name <> '_sqlx_migrations'",
        )
        .bind(pg.schema())
        .fetch_all(pg.pool())
        .await
        .expect("columns");
        let mut lite_columns: Vec<(String, String)> = Vec::new();
        for table in TABLES {
            let names: Vec<String> =
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(lite.pool())
                    .await
                    .expect("columns");
            lite_columns.extend(names.into_iter().map(|c| (table.to_owned(), c)));
        }
        pg_columns.sort();
        lite_columns.sort();
        assert!(pg_columns.len() > 40);
        assert_eq!(pg_columns, lite_columns);
        lite.close().await;
    })
    .await;
}

/// A database that is paused, slow or down: every operation is 503 within the bound, no change
/// is half-applied, and the store recovers by itself. A TCP proxy between the store and the
/// server plays the faults (the real server is shared by other tests and stays up).
#[cfg(feature = "postgres")]
mod postgres_faults {
    use std::net::SocketAddr;
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    use sqlx::postgres::PgConnectOptions;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use tower_device_flow::grant::GrantStatus;
    use tower_device_flow::{Clock, PostgresStore, Store, StoreError, StoreResult, SystemClock};

    use super::flow;
    use super::sql_support::{guarded, pg, postgres_url, unique_name};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Mode {
        Forward,
        /// Bytes are held, connections stay open: a paused or hung server.
        Pause,
        /// Every connection is cut and new ones are closed at once: a server that is down.
        Down,
    }

    struct Proxy {
        addr: SocketAddr,
        mode: watch::Sender<Mode>,
    }

    impl Proxy {
        async fn start(upstream: SocketAddr) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (mode, rx) = watch::channel(Mode::Forward);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *rx.borrow() == Mode::Down {
                        continue; // dropped: closed at once
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone()));
                    tokio::spawn(pump(sr, cw, rx.clone()));
                }
            });
            Proxy { addr, mode }
        }

        fn set(&self, mode: Mode) {
            self.mode.send_replace(mode);
        }
    }

    /// Copies `from` to `to` while forwarding, holds bytes while paused, and drops both halves
    /// (closing the connection) once down.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut mode: watch::Receiver<Mode>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = mode.wait_for(|m| *m == Mode::Down) => return,
            };
            match mode.wait_for(|m| *m != Mode::Pause).await.map(|m| *m) {
                Ok(Mode::Forward) => {}
                _ => return,
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// `op` fails with `Unavailable` within two seconds (the operation timeout is 500 ms).
    async fn unavailable_in_time<T: std::fmt::Debug>(
        what: &str,
        op: impl std::future::Future<Output = StoreResult<T>>,
    ) {
        let started = Instant::now();
        let result = op.await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{what}: {result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took {:?}",
            started.elapsed()
        );
    }

    /// The store answers again by itself: each pooled connection that the fault cut fails at
    /// most one request (it is then replaced), so of 30 requests at most `POOL` fail, and the
    /// last 10 all succeed.
    async fn recovers(store: &PostgresStore) {
        let now = SystemClock.now();
        let probe = tower_device_flow::Digest::of(b"probe");
        let mut results = Vec::new();
        for _ in 0..30 {
            results.push(store.device_grant(&probe, now).await);
        }
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert!(
            failed <= POOL as usize,
            "{failed} failures after recovery: {results:?}"
        );
        assert!(
            results[20..].iter().all(|r| r == &Ok(None)),
            "not recovered: {results:?}"
        );
    }

    const POOL: u32 = 4;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn faults_are_unavailable_in_time_and_the_store_recovers() {
        let Some(url) = postgres_url("faults_are_unavailable_in_time") else {
            return;
        };
        let options = PgConnectOptions::from_str(&url).expect("POSTGRES_URL");
        let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let proxy = Proxy::start(upstream).await;
        let schema = unique_name("pg_faults");
        let store = PostgresStore::builder()
            .schema(&schema)
            .max_connections(POOL)
            .acquire_timeout(Duration::from_millis(300))
            .operation_timeout(Duration::from_millis(500))
            .purge_every(None)
            .connect_with(options.host("127.0.0.1").port(proxy.addr.port()))
            .await
            .expect("connect through the proxy");
        store.migrate().await.expect("migrate");
        let body = {
            let store = store.clone();
            async move {
                let now = SystemClock.now();
                let (device, redeemed, issue) = flow::approved(&store, now).await;
                let (id, access) = (issue.grant.id, issue.grant.access_token);

                // Paused: held bytes, open connections.
                proxy.set(Mode::Pause);
                unavailable_in_time("a read", store.device_grant(&device, now)).await;
                unavailable_in_time(
                    "a redemption",
                    store.replace_device_grant(
                        &device,
                        1,
                        redeemed.clone(),
                        Some(issue.clone()),
                        now,
                    ),
                )
                .await;
                proxy.set(Mode::Forward);
                recovers(&store).await;
                // Whatever reached the server, the redemption is whole or absent.
                let current = store
                    .device_grant(&device, now)
                    .await
                    .expect("read")
                    .expect("grant");
                let grant = store.grant(&id, now).await.expect("read");
                let token = store.access_token(&access, now).await.expect("read");
                if current.record.status == GrantStatus::Redeemed {
                    assert!(grant.is_some() && token.is_some(), "half a redemption");
                } else {
                    assert!(grant.is_none() && token.is_none(), "half a redemption");
                    assert!(store
                        .replace_device_grant(&device, current.version, redeemed, Some(issue), now)
                        .await
                        .expect("redeem after recovery"));
                }

                // Down: connections cut, new ones refused.
                proxy.set(Mode::Down);
                unavailable_in_time("a read", store.grant(&id, now)).await;
                unavailable_in_time("a revocation", store.revoke_grant(&id, now)).await;
                proxy.set(Mode::Forward);
                recovers(&store).await;
                let grant = store.grant(&id, now).await.expect("read");
                let token = store.access_token(&access, now).await.expect("read");
                assert_eq!(grant.is_some(), token.is_some(), "half a revocation");
            }
        };
        guarded(body, async {
            store.close().await;
            pg::drop_schema(&url, &schema).await;
        })
        .await;
    }
}

//! What the SQL store tests share: the PostgreSQL URL (from `POSTGRES_URL`, loud when missing),
//! a schema of its own for each test, dropped afterwards, and a temporary directory for each
//! SQLite file.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The client every store under test registers.
pub const KIT_CLIENT: &str = "kit-client";

pub fn kit_client() -> tower_device_flow::Client {
    tower_device_flow::Client::public(
        KIT_CLIENT,
        tower_device_flow::Scope::parse("profile email").expect("static scope"),
    )
}

/// `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The PostgreSQL URL, or `None` after saying loudly that `test` did not run. Under CI a
/// missing URL fails the test instead.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let message = format!("POSTGRES_URL not set: PostgreSQL test `{test}` did NOT run");
            // Straight to the process's stderr: the harness captures `eprintln!`, and a skip
            // must be seen even when the test passes.
            let _ = writeln!(std::io::stderr(), "\n*** {message} ***");
            if in_ci() {
                panic!("{message}; CI is set, so a skipped PostgreSQL test is a failure");
            }
            None
        }
    }
}

/// A name no other test or run uses: lower case letters, digits and `_`, at most 63 bytes.
pub fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let random = tower_device_flow::AccessToken::generate().digest().to_hex();
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("tdf_{test}_{}_{nanos}_{}", std::process::id(), &random[..6])
}

/// Runs `body` in a task of its own, then `cleanup`, pass or fail, then re-raises a failure.
pub async fn guarded<Fut, C>(body: Fut, cleanup: C)
where
    Fut: Future<Output = ()> + Send + 'static,
    C: Future<Output = ()>,
{
    let outcome = tokio::spawn(body).await;
    cleanup.await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique_name(test));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "postgres")]
pub mod pg {
    use std::future::Future;
    use std::time::Duration;

    use sqlx::Connection as _;
    use tower_device_flow::PostgresStore;

    /// Creates the schema `schema` through a connection of its own.
    pub async fn create_schema(url: &str, schema: &str) {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("cannot connect to POSTGRES_URL");
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .expect("create schema");
    }

    pub async fn drop_schema(url: &str, schema: &str) {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("cannot connect to POSTGRES_URL");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .expect("drop schema");
    }

    /// A migrated store in `schema`, with the kit client.
    pub async fn store(url: &str, schema: &str) -> PostgresStore {
        let store = PostgresStore::builder()
            .schema(schema)
            .client(super::kit_client())
            .max_connections(8)
            .operation_timeout(Duration::from_secs(20))
            .connect(url)
            .await
            .expect("cannot connect a PostgresStore to POSTGRES_URL");
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs `body` on a store in a schema of its own, then drops the schema, pass or fail.
    /// Without `POSTGRES_URL`, says loudly that it did not run (and fails under CI).
    pub async fn with_store<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(PostgresStore) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = super::postgres_url(test) else {
            return;
        };
        let schema = super::unique_name(test);
        let store = store(&url, &schema).await;
        super::guarded(body(store.clone()), async {
            store.close().await;
            drop_schema(&url, &schema).await;
        })
        .await;
    }
}

#[cfg(feature = "sqlite")]
pub mod lite {
    use std::future::Future;
    use std::time::Duration;

    use tower_device_flow::SqliteStore;

    /// A migrated store in `path`, with the kit client.
    pub async fn store(path: &std::path::Path) -> SqliteStore {
        let store = SqliteStore::builder()
            .client(super::kit_client())
            .operation_timeout(Duration::from_secs(20))
            .acquire_timeout(Duration::from_secs(15))
            .connect(path)
            .await
            .expect("cannot open an SqliteStore");
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs `body` on a store in a file of its own, then deletes the file, pass or fail.
    pub async fn with_store<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(SqliteStore) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = super::TempDir::new(test);
        let store = store(&dir.file("store.sqlite3")).await;
        super::guarded(body(store.clone()), async {
            store.close().await;
            drop(dir);
        })
        .await;
    }
}

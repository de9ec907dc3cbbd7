//! [`SqliteStore`]: a [`Store`] in an SQLite file, for one instance that survives a restart.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::schema;
use super::shared::{
    self, bind_access, bind_device_grant, bind_grant, bounded, db_error, db_time, db_u64,
    AccessTokenRow, AccessValues, ClientRow, DeviceGrantRow, DeviceGrantValues, GrantRow,
    GrantValues, PurgeSchedule, PURGED,
};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::family::{Grant, Rotation};
use crate::grant::DeviceGrant;
use crate::ids::{GrantId, Subject};
use crate::scope::Scope;
use crate::store::clients::{ClientRegistry, ClientSource};
use crate::store::records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
use crate::store::traits::{Store, StoreResult};

/// How a multi-statement change starts: with the write lock, so that it never has to upgrade
/// a read lock halfway (which SQLite refuses, rather than waits for, when another writer
/// committed in between).
const BEGIN: &str = "BEGIN IMMEDIATE";

/// A [`Store`] in an SQLite file (feature `sqlite`): everything a device flow needs survives a
/// restart of the process, with no server to run.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_device_flow::StoreError> {
/// use tower_device_flow::{Client, DeviceFlow, Scope, SqliteStore};
///
/// let store = SqliteStore::builder()
///     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
///     .connect("/var/lib/myapp/device-flow.sqlite3")
///     .await?;
/// store.migrate().await?; // creates the tables, once
/// let flow = DeviceFlow::builder(store)
///     .issuer("https://auth.example.com")
///     .build();
/// # Ok(()) }
/// ```
///
/// # Guarantees
///
/// SQLite runs one writer at a time. The store holds one connection for writes and a few for
/// reads (WAL mode: reads never wait for the writer, and see every committed write); writes
/// queue for the writer in the pool (in order, without SQLite's sleeping busy handler), so
/// every write is serialized, which is the strongest isolation there is:
///
/// | primitive | statements | why it is atomic |
/// |---|---|---|
/// | `insert_device_grant` | `INSERT ... ON CONFLICT DO NOTHING` (then, only if a code is held by a dead row, `BEGIN IMMEDIATE`, delete it, insert again) | one statement, or one write transaction |
/// | `replace_device_grant` | `UPDATE ... WHERE version = $n`; with tokens to issue, in `BEGIN IMMEDIATE` with the inserts of the grant and its access token | the swap and the inserts commit together or not at all; writes are serialized, so of racing swaps one matches the version |
/// | `replace_grant` | `BEGIN IMMEDIATE`; `UPDATE grants ... WHERE version = $n`; delete the replaced access token; insert the new one | as above |
/// | `revoke_grant`, `revoke_grants_of` | `DELETE FROM grants ... RETURNING`; `ON DELETE CASCADE` deletes the access tokens | one statement |
/// | `try_increment`, `claim_once` | one upsert with `RETURNING` | one statement |
/// | reads | one `SELECT` | one snapshot |
///
/// Every commit waits for the WAL to reach the disk (`synchronous = FULL`) unless
/// [`sync_every_commit(false)`](SqliteStoreBuilder::sync_every_commit) trades the last commits
/// before a power loss for speed. Every operation is bounded by
/// [`operation_timeout`](SqliteStoreBuilder::operation_timeout) (default 5 s): a file locked by
/// another process, or a disk that does not answer, is `temporarily_unavailable` (503), and a
/// change is committed whole or rolled back.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    clients: ClientRegistry,
    operation_timeout: Duration,
    purge: PurgeSchedule,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.inner.reader.size())
            .field("operation_timeout", &self.inner.operation_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SqliteStore`].
#[derive(Debug)]
pub struct SqliteStoreBuilder {
    clients: Vec<Client>,
    readers: u32,
    sync_every_commit: bool,
    acquire_timeout: Duration,
    operation_timeout: Duration,
    purge_every: Option<Duration>,
    purge_batch: u32,
}

impl SqliteStoreBuilder {
    /// Registers a client in this process. Clients can also be kept in the file: see
    /// [`SqliteStore::put_client`].
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// Connections for reads (default 4); writes have one of their own.
    pub fn readers(mut self, n: u32) -> Self {
        self.readers = n.max(1);
        self
    }

    /// Whether every commit waits for the disk (default true: `synchronous = FULL`). With
    /// false (`synchronous = NORMAL`) commits survive the process crashing but the last ones
    /// may be lost if the machine loses power, and writes no longer wait for an fsync.
    pub fn sync_every_commit(mut self, sync: bool) -> Self {
        self.sync_every_commit = sync;
        self
    }

    /// How long a request waits for a connection, and for the file's lock when another
    /// process holds it (default 3 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The bound on one store operation, waits included (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How often expired rows are purged (default every 10 s; `None` never, for an
    /// application that calls [`SqliteStore::purge_expired`] itself).
    pub fn purge_every(mut self, every: Option<Duration>) -> Self {
        self.purge_every = every;
        self
    }

    /// Rows one purge statement deletes from one table (default 1000).
    pub fn purge_batch(mut self, rows: u32) -> Self {
        self.purge_batch = rows;
        self
    }

    /// Opens (creating it if missing) the database file at `path`.
    pub async fn connect(self, path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        self.connect_with(options).await
    }

    /// Opens the database with explicit connection options; the store sets WAL mode, foreign
    /// keys, the busy timeout and `synchronous` on top of them.
    pub async fn connect_with(self, options: SqliteConnectOptions) -> StoreResult<SqliteStore> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(self.acquire_timeout)
            .synchronous(if self.sync_every_commit {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            });
        // The writer first: it creates the file and switches it to WAL. It stays open for the
        // store's life, which keeps the WAL and its index in place for the readers.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(db_error)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                reader,
                clients: ClientRegistry::new(self.clients),
                operation_timeout: self.operation_timeout,
                purge: PurgeSchedule::new(self.purge_every, self.purge_batch),
            }),
        })
    }
}

impl SqliteStore {
    /// A builder: 4 readers, `synchronous = FULL`, 3 s acquire timeout, 5 s operation timeout,
    /// a purge every 10 s in batches of 1000.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            clients: Vec::new(),
            readers: 4,
            sync_every_commit: true,
            acquire_timeout: shared::DEFAULT_ACQUIRE_TIMEOUT,
            operation_timeout: shared::DEFAULT_OPERATION_TIMEOUT,
            purge_every: Some(shared::DEFAULT_PURGE_EVERY),
            purge_batch: shared::DEFAULT_PURGE_BATCH,
        }
    }

    /// Applies the crate's migrations that are not applied yet (sqlx's migrator). Call it at
    /// start, before serving.
    pub async fn migrate(&self) -> StoreResult<()> {
        schema::migrator()
            .await?
            .run(&self.inner.writer)
            .await
            .map_err(schema::migrate_error)
    }

    /// The pool of the write connection, for the application's own changes to the store's
    /// tables (it queues with the store's writes).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// Closes the connections (the last one to close checkpoints the WAL into the file).
    pub async fn close(&self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }

    /// Registers a client in this process, or replaces the one with its id.
    pub fn add_client(&self, client: Client) {
        self.inner.clients.add(client);
    }

    /// Removes a client registered in this process.
    pub fn remove_client(&self, client_id: &str) -> Option<Client> {
        self.inner.clients.remove(client_id)
    }

    /// Stores a client in the `clients` table (its secret as a SHA-256 digest), or replaces
    /// the one with its id. A client registered in the process under the same id takes
    /// precedence.
    pub async fn put_client(&self, client: &Client) -> StoreResult<()> {
        self.op(async {
            sqlx::query(shared::UPSERT_CLIENT)
                .bind(client.id().as_str())
                .bind(client.secret_digest().map(|d| &d.as_bytes()[..]))
                .bind(client.allowed_scope().as_str())
                .bind(client.default_scope().as_str())
                .bind(client.name())
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    /// Deletes a client from the `clients` table; true if it was there.
    pub async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        self.op(async {
            let done = sqlx::query(shared::DELETE_CLIENT)
                .bind(client_id)
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Deletes rows that ended at or before `now`: per table, batches of
    /// [`purge_batch`](SqliteStoreBuilder::purge_batch) rows, at most 20 batches, each one
    /// `DELETE` through the index on the table's end column (O(batch x log rows), never a
    /// scan; each batch holds the write lock for its own duration only). Returns the rows
    /// deleted. The store runs it by itself every
    /// [`purge_every`](SqliteStoreBuilder::purge_every), in the background of a write.
    pub async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let batch = self.inner.purge.batch;
        let mut total = 0;
        for table in PURGED {
            let sql = table.statement("");
            for _ in 0..shared::PURGE_MAX_BATCHES {
                let deleted = self
                    .op(async {
                        sqlx::query(&sql)
                            .bind(db_time(now))
                            .bind(i64::from(batch))
                            .execute(&self.inner.writer)
                            .await
                            .map_err(db_error)
                    })
                    .await?
                    .rows_affected();
                total += deleted;
                if deleted < u64::from(batch) {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Starts a purge in the background if one is due at `now`.
    fn tick(&self, now: Timestamp) {
        if self.inner.purge.claim(now) {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.purge_expired(now).await {
                    tracing::warn!(error = %e, "purge of expired rows failed; retried later");
                }
                store.inner.purge.done();
            });
        }
    }

    async fn op<T>(&self, op: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
        bounded(self.inner.operation_timeout, op).await
    }

    async fn insert_slow(
        &self,
        device_code: &Digest,
        values: DeviceGrantValues<'_>,
        now: Timestamp,
    ) -> StoreResult<Insert> {
        // A code is held: by a live row (taken) or by a dead one not purged yet (free it).
        let mut tx = self
            .inner
            .writer
            .begin_with(BEGIN)
            .await
            .map_err(db_error)?;
        sqlx::query(shared::DELETE_DEAD_DEVICE_GRANTS)
            .bind(&device_code.as_bytes()[..])
            .bind(values.user_code)
            .bind(db_time(now))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let q = sqlx::query(shared::INSERT_DEVICE_GRANT).bind(&device_code.as_bytes()[..]);
        let inserted = bind_device_grant!(q, values)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(if inserted == 1 {
            Insert::Inserted
        } else {
            Insert::Taken
        })
    }
}

impl ClientSource for SqliteStore {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        if let Some(c) = self.inner.clients.get(client_id) {
            return Ok(Some(c));
        }
        self.op(async {
            let row: Option<ClientRow> = sqlx::query_as(shared::SELECT_CLIENT)
                .bind(client_id)
                .fetch_optional(&self.inner.reader)
                .await
                .map_err(db_error)?;
            row.map(shared::client_from).transpose()
        })
        .await
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        // The clients of the process and those of the `clients` table together.
        let registered = self.inner.clients.known_scopes();
        self.op(async {
            let rows: Vec<(String,)> = sqlx::query_as(shared::SELECT_CLIENT_SCOPES)
                .fetch_all(&self.inner.reader)
                .await
                .map_err(db_error)?;
            shared::union_with_rows(registered, &rows)
        })
        .await
        .map(Some)
    }
}

impl Store for SqliteStore {
    async fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<Insert> {
        self.tick(now);
        self.op(async {
            let q = sqlx::query(shared::INSERT_DEVICE_GRANT).bind(&device_code.as_bytes()[..]);
            let inserted = bind_device_grant!(q, DeviceGrantValues::of(&grant))
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?
                .rows_affected();
            if inserted == 1 {
                return Ok(Insert::Inserted);
            }
            self.insert_slow(&device_code, DeviceGrantValues::of(&grant), now)
                .await
        })
        .await
    }

    async fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        self.op(async {
            let row: Option<DeviceGrantRow> = sqlx::query_as(shared::SELECT_DEVICE_GRANT)
                .bind(&device_code.as_bytes()[..])
                .bind(db_time(now))
                .fetch_optional(&self.inner.reader)
                .await
                .map_err(db_error)?;
            Ok(row
                .map(shared::device_grant_from)
                .transpose()?
                .map(|(_, g)| g))
        })
        .await
    }

    async fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<(Digest, Versioned<DeviceGrant>)>> {
        self.op(async {
            let row: Option<DeviceGrantRow> =
                sqlx::query_as(shared::SELECT_DEVICE_GRANT_BY_USER_CODE)
                    .bind(&user_code.as_bytes()[..])
                    .bind(db_time(now))
                    .fetch_optional(&self.inner.reader)
                    .await
                    .map_err(db_error)?;
            row.map(shared::device_grant_from).transpose()
        })
        .await
    }

    async fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.tick(now);
        self.op(async {
            let swap = sqlx::query(shared::UPDATE_DEVICE_GRANT).bind(&device_code.as_bytes()[..]);
            let swap = bind_device_grant!(swap, DeviceGrantValues::of(&grant))
                .bind(db_u64(expected_version))
                .bind(db_time(now));
            let Some(issue) = &issue else {
                let changed = swap
                    .execute(&self.inner.writer)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                return Ok(changed == 1);
            };
            let mut tx = self
                .inner
                .writer
                .begin_with(BEGIN)
                .await
                .map_err(db_error)?;
            if swap
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected()
                != 1
            {
                // Dropping the transaction rolls it back; nothing was written anyway.
                return Ok(false);
            }
            let g = &issue.grant;
            let q = sqlx::query(shared::INSERT_GRANT).bind(&g.id.as_bytes()[..]);
            bind_grant!(q, GrantValues::of(g, issue.access.expires_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let q = sqlx::query(shared::INSERT_ACCESS_TOKEN)
                .bind(&g.access_token.as_bytes()[..])
                .bind(&g.id.as_bytes()[..]);
            bind_access!(q, AccessValues::of(&issue.access))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Versioned<Grant>>> {
        self.op(async {
            let row: Option<GrantRow> = sqlx::query_as(shared::SELECT_GRANT)
                .bind(&id.as_bytes()[..])
                .bind(db_time(now))
                .fetch_optional(&self.inner.reader)
                .await
                .map_err(db_error)?;
            row.map(shared::grant_from).transpose()
        })
        .await
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.tick(now);
        self.op(async {
            let mut tx = self
                .inner
                .writer
                .begin_with(BEGIN)
                .await
                .map_err(db_error)?;
            let q = sqlx::query(shared::UPDATE_GRANT)
                .bind(&id.as_bytes()[..])
                .bind(db_u64(expected_version));
            let changed = bind_grant!(q, GrantValues::of(&rotation.next, access.expires_at))
                .bind(db_time(now))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if changed != 1 {
                return Ok(false);
            }
            sqlx::query(shared::DELETE_GRANT_ACCESS_TOKEN)
                .bind(&rotation.revoke.as_bytes()[..])
                .bind(&id.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let q = sqlx::query(shared::INSERT_ACCESS_TOKEN)
                .bind(&rotation.next.access_token.as_bytes()[..])
                .bind(&id.as_bytes()[..]);
            bind_access!(q, AccessValues::of(&access))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn revoke_grant(&self, id: &GrantId, _now: Timestamp) -> StoreResult<Option<Grant>> {
        self.op(async {
            let row: Option<GrantRow> = sqlx::query_as(shared::DELETE_GRANT)
                .bind(&id.as_bytes()[..])
                .fetch_optional(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(row.map(shared::grant_from).transpose()?.map(|g| g.record))
        })
        .await
    }

    async fn grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        self.op(async {
            let rows: Vec<GrantRow> = sqlx::query_as(shared::SELECT_GRANTS_OF)
                .bind(subject.as_str())
                .bind(db_time(now))
                .fetch_all(&self.inner.reader)
                .await
                .map_err(db_error)?;
            rows.into_iter()
                .map(|r| shared::grant_from(r).map(|g| g.record))
                .collect()
        })
        .await
    }

    async fn revoke_grants_of(
        &self,
        subject: &Subject,
        _now: Timestamp,
    ) -> StoreResult<Vec<Grant>> {
        self.op(async {
            let rows: Vec<GrantRow> = sqlx::query_as(shared::DELETE_GRANTS_OF)
                .bind(subject.as_str())
                .fetch_all(&self.inner.writer)
                .await
                .map_err(db_error)?;
            rows.into_iter()
                .map(|r| shared::grant_from(r).map(|g| g.record))
                .collect()
        })
        .await
    }

    async fn access_token(&self, token: &Digest, now: Timestamp) -> StoreResult<Option<TokenInfo>> {
        self.op(async {
            let row: Option<AccessTokenRow> = sqlx::query_as(shared::SELECT_ACCESS_TOKEN)
                .bind(&token.as_bytes()[..])
                .bind(db_time(now))
                .fetch_optional(&self.inner.reader)
                .await
                .map_err(db_error)?;
            row.map(shared::access_token_from).transpose()
        })
        .await
    }

    async fn revoke_access_token(&self, token: &Digest, _now: Timestamp) -> StoreResult<bool> {
        self.op(async {
            let done = sqlx::query(shared::DELETE_ACCESS_TOKEN)
                .bind(&token.as_bytes()[..])
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<Count> {
        self.tick(now);
        self.op(async {
            let (value, resets_at, counted): (i64, i64, i64) =
                sqlx::query_as(shared::TRY_INCREMENT)
                    .bind(key)
                    .bind(i64::from(max > 0))
                    .bind(db_time(now.saturating_add(window)))
                    .bind(db_time(now))
                    .bind(db_u64(max))
                    .fetch_one(&self.inner.writer)
                    .await
                    .map_err(db_error)?;
            shared::count_from(value, resets_at, counted)
        })
        .await
    }

    async fn decrement(&self, key: &str, now: Timestamp) -> StoreResult<()> {
        self.op(async {
            sqlx::query(shared::DECREMENT)
                .bind(key)
                .bind(db_time(now))
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.tick(now);
        self.op(async {
            let done = sqlx::query(shared::CLAIM_ONCE)
                .bind(&key.as_bytes()[..])
                .bind(db_time(until))
                .bind(db_time(now))
                .execute(&self.inner.writer)
                .await
                .map_err(db_error)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn pending_device_grants(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        self.op(async {
            let (n,): (i64,) = sqlx::query_as(shared::COUNT_PENDING)
                .bind(db_time(now))
                .fetch_one(&self.inner.reader)
                .await
                .map_err(db_error)?;
            Ok(Some(u64::try_from(n).unwrap_or(0)))
        })
        .await
    }
}

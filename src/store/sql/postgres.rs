//! [`PostgresStore`]: a [`Store`] on PostgreSQL, for many instances sharing one database.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::schema;
use super::shared::{
    self, bind_access, bind_device_grant, bind_grant, bounded, db_error, db_time, db_u64,
    update_device_grant, update_grant, AccessTokenRow, AccessValues, ClientRow, DeviceGrantRow,
    DeviceGrantValues, GrantRow, GrantValues, PurgeSchedule, PURGED,
};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::family::{Grant, Rotation};
use crate::grant::DeviceGrant;
use crate::ids::{GrantId, Subject};
use crate::scope::Scope;
use crate::store::clients::{ClientRegistry, ClientSource};
use crate::store::records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
use crate::store::traits::{Store, StoreError, StoreResult};

/// The schema the tables live in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "device_flow";

/// A redemption in one statement: the compare-and-swap of the device grant (`$1..$17`, as
/// [`UPDATE_DEVICE_GRANT`](shared::UPDATE_DEVICE_GRANT)), then, only if it changed a row, the
/// new grant (`$18` id, `$19..$31` [`GrantValues`]) and its access token (`$32` digest,
/// `$33..$36` [`AccessValues`]). One row inserted iff the swap happened; all or nothing.
const REDEEM: &str = concat!(
    "WITH swapped AS (",
    update_device_grant!(),
    " RETURNING 1), granted AS (INSERT INTO grants (",
    shared::grant_write_columns!(),
    ") SELECT $18, 0, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31 \
     FROM swapped RETURNING id) \
     INSERT INTO access_tokens (digest, grant_id, scope, expires_at, audience, cnf) \
     SELECT $32, id, $33, $34, $35, $36 FROM granted"
);

/// A rotation in one statement: the compare-and-swap of the grant (`$1..$16`, as
/// [`update_grant!`]), then, only if it changed a row, the deletion of the replaced access
/// token `$17` and the insertion of the new one (`$18` digest, `$19..$22` [`AccessValues`]).
const ROTATE: &str = concat!(
    "WITH swapped AS (",
    update_grant!(),
    " RETURNING id), revoked AS (DELETE FROM access_tokens WHERE digest = $17 \
     AND grant_id IN (SELECT id FROM swapped)) \
     INSERT INTO access_tokens (digest, grant_id, scope, expires_at, audience, cnf) \
     SELECT $18, id, $19, $20, $21, $22 FROM swapped"
);

/// The purge's row-locking clause: rows that another instance is purging are skipped, not
/// waited for.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

/// A [`Store`] on PostgreSQL (feature `postgres`): several instances on one database serve one
/// device flow, and a restart loses nothing.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_device_flow::StoreError> {
/// use tower_device_flow::{Client, DeviceFlow, PostgresStore, Scope};
///
/// let store = PostgresStore::builder()
///     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
///     .connect("postgres://app@db.internal/app")
///     .await?;
/// store.migrate().await?; // creates the schema `device_flow` and its tables, once
/// let flow = DeviceFlow::builder(store)
///     .issuer("https://auth.example.com")
///     .build();
/// # Ok(()) }
/// ```
///
/// # Guarantees
///
/// Every primitive is one statement, so one implicit transaction, at the server's default
/// isolation, READ COMMITTED; what makes each exactly-once is the row lock its statement takes:
///
/// | primitive | statement | why it is atomic |
/// |---|---|---|
/// | `insert_device_grant` | `INSERT ... ON CONFLICT DO NOTHING` (then, only if a code is held by a dead row, a transaction deleting it and inserting again) | the unique indexes on both codes: of two racing inserts one waits for the other and finds the code taken |
/// | `replace_device_grant` | `UPDATE ... WHERE version = $n`, with the issued grant and access token inserted by the same statement (data-modifying `WITH`) | a second updater waits on the row lock, then re-reads the row and no longer matches the version |
/// | `replace_grant` | `UPDATE grants ... WHERE version = $n`, deleting the replaced access token and inserting the new one in the same statement | as above; a revocation that runs first leaves no row to update |
/// | `revoke_grant`, `revoke_grants_of` | `DELETE FROM grants ... RETURNING`; `ON DELETE CASCADE` deletes the access tokens in the same statement | a racing rotation either commits first (its new token is then deleted by the cascade) or finds the row gone |
/// | `try_increment` | `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` with the ceiling in the `SET` | the upsert's row lock serializes increments of a key |
/// | `claim_once` | `INSERT ... ON CONFLICT DO UPDATE ... WHERE until <= now` | as above |
/// | reads | one `SELECT` | one snapshot |
///
/// Every operation, connection wait included, is bounded by
/// [`operation_timeout`](PostgresStoreBuilder::operation_timeout) (default 5 s) and the server
/// cancels a statement that runs longer (`statement_timeout`); a database that is down, paused
/// or slow is answered `temporarily_unavailable` (503), and since every change is one statement
/// it is applied whole or not at all. The pool reconnects by itself when the database is back:
/// each pooled connection the outage cut fails at most one more request (503) before it is
/// replaced (the pool does not ping a connection before every use, which would double the
/// round trips).
///
/// The tables live in their own schema, [`DEFAULT_SCHEMA`] unless
/// [`schema`](PostgresStoreBuilder::schema) or the URL's `options[search_path]` names another,
/// so they and sqlx's `_sqlx_migrations` never meet the application's own. Expired rows are
/// purged in the background in bounded batches (see [`purge_expired`](Self::purge_expired)).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    clients: ClientRegistry,
    operation_timeout: Duration,
    purge: PurgeSchedule,
}

impl fmt::Debug for PostgresStore {
    // Not the pool's options: they hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("connections", &self.inner.pool.size())
            .field("operation_timeout", &self.inner.operation_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PostgresStore`].
#[derive(Debug)]
pub struct PostgresStoreBuilder {
    clients: Vec<Client>,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    operation_timeout: Duration,
    purge_every: Option<Duration>,
    purge_batch: u32,
}

impl PostgresStoreBuilder {
    /// Registers a client in this process (the same on every instance). Clients can also be
    /// kept in the database: see [`PostgresStore::put_client`].
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// The schema of the store's tables (default [`DEFAULT_SCHEMA`], or the URL's
    /// `search_path`): an identifier of letters, digits and `_`. [`PostgresStore::migrate`]
    /// creates it.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the store's pool opens (default 10). Each instance has its own
    /// pool; the server's `max_connections` must cover them all.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a request waits for a free pooled connection (default 3 s) before it is
    /// answered 503.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The bound on one store operation, connection wait included (default 5 s); also the
    /// server-side `statement_timeout` of the store's connections.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How often expired rows are purged (default every 10 s; `None` never, for a deployment
    /// that calls [`PostgresStore::purge_expired`] itself).
    pub fn purge_every(mut self, every: Option<Duration>) -> Self {
        self.purge_every = every;
        self
    }

    /// Rows one purge statement deletes from one table (default 1000).
    pub fn purge_batch(mut self, rows: u32) -> Self {
        self.purge_batch = rows;
        self
    }

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`; see
    /// sqlx's [`PgConnectOptions`] for the parameters). One connection is opened now, so a
    /// wrong URL or password fails here; the rest as requests need them.
    pub async fn connect(self, url: &str) -> StoreResult<PostgresStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        self.connect_with(options).await
    }

    /// Connects with explicit connection options (TLS, a socket, a password from elsewhere).
    pub async fn connect_with(self, options: PgConnectOptions) -> StoreResult<PostgresStore> {
        let schema = match self.schema {
            Some(schema) => schema,
            None => search_path_of(&options).unwrap_or_else(|| DEFAULT_SCHEMA.to_owned()),
        };
        if !is_identifier(&schema) {
            return Err(StoreError::Backend(format!(
                "invalid schema name {schema:?}: letters, digits and _ only"
            )));
        }
        let statement_timeout = self.operation_timeout.as_millis().to_string();
        let options = options.application_name("tower-device-flow").options([
            ("search_path", schema.as_str()),
            ("statement_timeout", statement_timeout.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // A ping before every use would double the round trips; a broken connection fails
            // its request (503) and is replaced.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                schema,
                clients: ClientRegistry::new(self.clients),
                operation_timeout: self.operation_timeout,
                purge: PurgeSchedule::new(self.purge_every, self.purge_batch),
            }),
        })
    }
}

/// The first schema of a `search_path` set in the connection options, if it is a plain name.
fn search_path_of(options: &PgConnectOptions) -> Option<String> {
    let opts = options.get_options()?;
    let at = opts.rfind("search_path=")?;
    let value = opts[at + "search_path=".len()..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()?;
    is_identifier(value).then(|| value.to_owned())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

impl PostgresStore {
    /// A builder: schema [`DEFAULT_SCHEMA`], 10 connections, 3 s acquire timeout, 5 s
    /// operation timeout, a purge every 10 s in batches of 1000.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            clients: Vec::new(),
            schema: None,
            max_connections: 10,
            acquire_timeout: shared::DEFAULT_ACQUIRE_TIMEOUT,
            operation_timeout: shared::DEFAULT_OPERATION_TIMEOUT,
            purge_every: Some(shared::DEFAULT_PURGE_EVERY),
            purge_batch: shared::DEFAULT_PURGE_BATCH,
        }
    }

    /// Creates the schema and applies the crate's migrations that are not applied yet (sqlx's
    /// migrator, under its advisory lock, so instances starting together are safe). Call it
    /// at start, before serving.
    pub async fn migrate(&self) -> StoreResult<()> {
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.inner.schema);
        if let Err(e) = sqlx::query(&create).execute(&self.inner.pool).await {
            // Two instances creating it at once: one of them loses the race, which is fine.
            let raced = matches!(&e, sqlx::Error::Database(d)
                if d.code().is_some_and(|c| c == "23505" || c == "42P06"));
            if !raced {
                return Err(db_error(e));
            }
        }
        schema::migrator()
            .await?
            .run(&self.inner.pool)
            .await
            .map_err(schema::migrate_error)
    }

    /// The schema of the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool, for the application's own queries on the store's tables (for
    /// example to list or revoke grants from an admin tool).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Closes the pool: waits for operations under way, then closes every connection.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Registers a client in this process, or replaces the one with its id.
    pub fn add_client(&self, client: Client) {
        self.inner.clients.add(client);
    }

    /// Removes a client registered in this process.
    pub fn remove_client(&self, client_id: &str) -> Option<Client> {
        self.inner.clients.remove(client_id)
    }

    /// Stores a client in the database's `clients` table (its secret as a SHA-256 digest), or
    /// replaces the one with its id, for every instance at once. A client registered in the
    /// process under the same id takes precedence.
    pub async fn put_client(&self, client: &Client) -> StoreResult<()> {
        let op = async {
            sqlx::query(shared::UPSERT_CLIENT)
                .bind(client.id().as_str())
                .bind(client.secret_digest().map(|d| &d.as_bytes()[..]))
                .bind(client.allowed_scope().as_str())
                .bind(client.default_scope().as_str())
                .bind(client.name())
                .execute(&self.inner.pool)
                .await
                .map_err(db_error)?;
            Ok(())
        };
        bounded(self.inner.operation_timeout, op).await
    }

    /// Deletes a client from the database's `clients` table; true if it was there.
    pub async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let op = async {
            let done = sqlx::query(shared::DELETE_CLIENT)
                .bind(client_id)
                .execute(&self.inner.pool)
                .await
                .map_err(db_error)?;
            Ok(done.rows_affected() > 0)
        };
        bounded(self.inner.operation_timeout, op).await
    }

    /// Deletes rows that ended at or before `now`: per table, batches of
    /// [`purge_batch`](PostgresStoreBuilder::purge_batch) rows, at most 20 batches, each one
    /// `DELETE` through the index on the table's end column (O(batch x log rows), never a
    /// scan) that skips rows other instances are purging (`SKIP LOCKED`). Returns the rows
    /// deleted. The store runs it by itself every
    /// [`purge_every`](PostgresStoreBuilder::purge_every), in the background of a write.
    pub async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let batch = self.inner.purge.batch;
        let mut total = 0;
        for table in PURGED {
            let sql = table.statement(SKIP_LOCKED);
            for _ in 0..shared::PURGE_MAX_BATCHES {
                let op = async {
                    sqlx::query(&sql)
                        .bind(db_time(now))
                        .bind(i64::from(batch))
                        .execute(&self.inner.pool)
                        .await
                        .map_err(db_error)
                };
                let deleted = bounded(self.inner.operation_timeout, op)
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
        // A code is held: by a live row (taken) or by a dead one not purged yet (free it). One
        // transaction, so a racing insert of the same code waits on the unique index.
        let mut tx = self.inner.pool.begin().await.map_err(db_error)?;
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

impl ClientSource for PostgresStore {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        if let Some(c) = self.inner.clients.get(client_id) {
            return Ok(Some(c));
        }
        self.op(async {
            let row: Option<ClientRow> = sqlx::query_as(shared::SELECT_CLIENT)
                .bind(client_id)
                .fetch_optional(&self.inner.pool)
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
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db_error)?;
            shared::union_with_rows(registered, &rows)
        })
        .await
        .map(Some)
    }
}

impl Store for PostgresStore {
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
                .execute(&self.inner.pool)
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
                .fetch_optional(&self.inner.pool)
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
                    .fetch_optional(&self.inner.pool)
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
            let sql = if issue.is_some() {
                REDEEM
            } else {
                shared::UPDATE_DEVICE_GRANT
            };
            let q = sqlx::query(sql).bind(&device_code.as_bytes()[..]);
            let mut q = bind_device_grant!(q, DeviceGrantValues::of(&grant))
                .bind(db_u64(expected_version))
                .bind(db_time(now));
            if let Some(issue) = &issue {
                let g = &issue.grant;
                q = bind_grant!(
                    q.bind(&g.id.as_bytes()[..]),
                    GrantValues::of(g, issue.access.expires_at)
                );
                q = bind_access!(
                    q.bind(&g.access_token.as_bytes()[..]),
                    AccessValues::of(&issue.access)
                );
            }
            let changed = q
                .execute(&self.inner.pool)
                .await
                .map_err(db_error)?
                .rows_affected();
            Ok(changed == 1)
        })
        .await
    }

    async fn grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Versioned<Grant>>> {
        self.op(async {
            let row: Option<GrantRow> = sqlx::query_as(shared::SELECT_GRANT)
                .bind(&id.as_bytes()[..])
                .bind(db_time(now))
                .fetch_optional(&self.inner.pool)
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
            let q = sqlx::query(ROTATE)
                .bind(&id.as_bytes()[..])
                .bind(db_u64(expected_version));
            let q = bind_grant!(q, GrantValues::of(&rotation.next, access.expires_at))
                .bind(db_time(now))
                .bind(&rotation.revoke.as_bytes()[..])
                .bind(&rotation.next.access_token.as_bytes()[..]);
            let changed = bind_access!(q, AccessValues::of(&access))
                .execute(&self.inner.pool)
                .await
                .map_err(db_error)?
                .rows_affected();
            Ok(changed == 1)
        })
        .await
    }

    async fn revoke_grant(&self, id: &GrantId, _now: Timestamp) -> StoreResult<Option<Grant>> {
        self.op(async {
            let row: Option<GrantRow> = sqlx::query_as(shared::DELETE_GRANT)
                .bind(&id.as_bytes()[..])
                .fetch_optional(&self.inner.pool)
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
                .fetch_all(&self.inner.pool)
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
                .fetch_all(&self.inner.pool)
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
                .fetch_optional(&self.inner.pool)
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
                .execute(&self.inner.pool)
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
                    .fetch_one(&self.inner.pool)
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
                .execute(&self.inner.pool)
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
                .execute(&self.inner.pool)
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
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db_error)?;
            Ok(Some(u64::try_from(n).unwrap_or(0)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(is_identifier("device_flow"));
        assert!(is_identifier("_t1"));
        assert!(!is_identifier("1t"));
        assert!(!is_identifier("a\"; DROP TABLE x; --"));
        assert!(!is_identifier(""));
        assert!(!is_identifier(&"a".repeat(64)));
    }

    #[test]
    fn the_url_can_name_the_schema() {
        let o =
            PgConnectOptions::from_str("postgres://h/db?options[search_path]=tenant_7").unwrap();
        assert_eq!(search_path_of(&o).as_deref(), Some("tenant_7"));
        let o = PgConnectOptions::from_str("postgres://h/db").unwrap();
        assert_eq!(search_path_of(&o), None);
    }
}

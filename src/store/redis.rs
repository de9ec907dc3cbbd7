//! [`RedisStore`]: a [`Store`] on Redis. The key layout, the consistency guarantees and an
//! example are documented on the type (this module is private; the type is re-exported).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    ErrorKind, IntoConnectionInfo, RedisError, Script, ScriptInvocation, ServerErrorKind,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::records::{
    Client, ClientRegistry, IssuedTokens, RefreshTokenRecord, TokenInfo, Versioned,
};
use super::traits::{Store, StoreError, StoreResult};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::grant::DeviceGrant;

/// Expiry times are capped at the end of year 9999: a saturated [`Timestamp`] (`u64::MAX`) is
/// not a valid `PEXPIREAT` argument, and Lua compares times as doubles, exact below 2^53.
const MAX_EXPIRY_MS: u64 = 253_402_300_799_999;
const _: () = assert!(
    MAX_EXPIRY_MS < 1 << 53,
    "Lua must represent every expiry exactly"
);

/// How often a take-once script is retried when the record it was given changed between the
/// read and the script. Records are written once, so in practice this never loops.
const MAX_ATTEMPTS: usize = 3;

/// Insert-if-absent of a grant and its user-code index. A key whose retain-until time has
/// passed (by the caller's `now`) counts as free, as in the memory store.
///
/// KEYS: 1 grant, 2 user-code index.
/// ARGV: 1 now, 2 grant JSON, 3 retain-until, 4 device-code hex.
const INSERT_GRANT: &str = r"
local now = tonumber(ARGV[1])
local function live(key)
  local x = redis.call('HGET', key, 'x')
  return x and tonumber(x) > now
end
if live(KEYS[1]) or live(KEYS[2]) then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'v', '0', 'g', ARGV[2], 'x', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'd', ARGV[4], 'x', ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
return 1
";

/// Compare-and-swap of a grant's version, storing the issued tokens in the same step.
///
/// Versions are compared as decimal strings and the next version is computed by the caller, so
/// no version ever passes through a Lua double.
///
/// KEYS: 1 grant, 2 user-code index of the new grant, 3 access token (optional),
///       4 refresh token (optional).
/// ARGV: 1 expected version, 2 new version, 3 now, 4 grant JSON, 5 retain-until,
///       6 device-code hex, 7 access JSON, 8 access expiry, 9 refresh JSON, 10 refresh expiry.
const REPLACE_GRANT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'v', 'x')
if cur[1] ~= ARGV[1] or not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'g', ARGV[4], 'x', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
-- Keep the index alive exactly as long as the grant, should a caller ever move its expiry.
if cur[2] ~= ARGV[5] and redis.call('HGET', KEYS[2], 'd') == ARGV[6] then
  redis.call('HSET', KEYS[2], 'x', ARGV[5])
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[7])
  redis.call('PEXPIREAT', KEYS[3], ARGV[8])
end
if KEYS[4] then
  redis.call('SET', KEYS[4], ARGV[9])
  redis.call('PEXPIREAT', KEYS[4], ARGV[10])
end
return 1
";

/// Take-once of a refresh token: deletes it and its access token and stores the new tokens.
///
/// The caller read the old record to learn (and declare) its access token's key; the script
/// checks the record is still that one, so the access token it deletes is the right one.
/// Returns 1 on success, 0 when the old token is gone, -1 when it changed (read again).
///
/// KEYS: 1 old refresh, 2 old access, 3 new access, 4 new refresh (optional).
/// ARGV: 1 old refresh record as read, 2 access JSON, 3 access expiry, 4 refresh JSON,
///       5 refresh expiry.
const ROTATE_REFRESH: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
if cur ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('PEXPIREAT', KEYS[3], ARGV[3])
if KEYS[4] then
  redis.call('SET', KEYS[4], ARGV[4])
  redis.call('PEXPIREAT', KEYS[4], ARGV[5])
end
return 1
";

/// Deletes a refresh token and its access token; same protocol as [`ROTATE_REFRESH`].
///
/// KEYS: 1 refresh, 2 its access token. ARGV: 1 refresh record as read.
const REVOKE_REFRESH: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
if cur ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
";

/// Increments a counter, or starts a new window at 1. The window end is stored beside the
/// count so that expiry follows the caller's `now`, not only Redis's own clock.
///
/// KEYS: 1 counter. ARGV: 1 now, 2 end of a new window.
const INCREMENT_COUNTER: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'n', 'x')
if cur[1] and cur[2] and tonumber(cur[2]) > tonumber(ARGV[1]) then
  return redis.call('HINCRBY', KEYS[1], 'n', 1)
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'n', 1, 'x', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// The scripts, hashed once; `EVALSHA` falls back to loading a script the server lost.
struct Scripts {
    insert_grant: Script,
    replace_grant: Script,
    rotate_refresh: Script,
    revoke_refresh: Script,
    increment_counter: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            insert_grant: Script::new(INSERT_GRANT),
            replace_grant: Script::new(REPLACE_GRANT),
            rotate_refresh: Script::new(ROTATE_REFRESH),
            revoke_refresh: Script::new(REVOKE_REFRESH),
            increment_counter: Script::new(INCREMENT_COUNTER),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.insert_grant,
            &self.replace_grant,
            &self.rotate_refresh,
            &self.revoke_refresh,
            &self.increment_counter,
        ]
    }
}

/// Builds the key names of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Keys {
    /// The prefix in braces: the hash tag shared by every key.
    tag: Box<str>,
}

impl Keys {
    fn new(prefix: &str) -> StoreResult<Self> {
        // An empty tag (`{}`) makes Redis hash the whole key, and a brace inside the prefix
        // would end the tag early: either would scatter one script's keys over several slots.
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(format!(
                "invalid Redis key prefix {prefix:?}: it must be non-empty and contain no braces"
            )));
        }
        Ok(Keys {
            tag: format!("{{{prefix}}}").into_boxed_str(),
        })
    }

    fn prefix(&self) -> &str {
        &self.tag[1..self.tag.len() - 1]
    }

    fn digest_key(&self, kind: char, digest: &Digest) -> String {
        format!("{}:{kind}:{}", self.tag, digest.to_hex())
    }

    fn grant(&self, device_code: &Digest) -> String {
        self.digest_key('g', device_code)
    }

    fn user_code(&self, user_code: &Digest) -> String {
        self.digest_key('u', user_code)
    }

    fn access(&self, token: &Digest) -> String {
        self.digest_key('a', token)
    }

    fn refresh(&self, token: &Digest) -> String {
        self.digest_key('r', token)
    }

    fn counter(&self, key: &str) -> String {
        format!("{}:c:{key}", self.tag)
    }
}

struct Inner {
    keys: Keys,
    scripts: Scripts,
    clients: ClientRegistry,
}

/// A [`Store`] on Redis, shared by every instance of a deployment. Clones are cheap and share
/// the connection, the scripts and the registered clients.
///
/// # Connecting
///
/// ```no_run
/// use tower_device_flow::store::RedisStore;
/// use tower_device_flow::{Client, Clock, Scope, Store, SystemClock};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder()
///     .prefix("myapp-oauth")
///     .client(Client::public("tv-app", Scope::parse("profile email")?))
///     .connect("redis://127.0.0.1:6379")
///     .await?;
///
/// // `store` is cheap to clone: hand a clone to every service and to the bearer layer.
/// // Like any `Store`, it is driven by the crate's services; used directly it looks like this:
/// assert!(store.client("tv-app").await?.is_some());
/// let window = std::time::Duration::from_secs(60);
/// let attempts = store
///     .increment_counter("verify:198.51.100.7", window, SystemClock.now())
///     .await?;
/// # let _ = attempts;
/// # Ok(())
/// # }
/// ```
///
/// [`RedisStore::connect`] (or [`RedisStoreBuilder::connect`]) opens a
/// [`ConnectionManager`]: one multiplexed connection that every request shares (pipelined,
/// no connection per request) and that reconnects by itself after a network failure. An
/// application that already has a `ConnectionManager` passes it to [`RedisStore::new`]. Any
/// other [`ConnectionLike`] connection works too through [`RedisStore::with_connection`], for
/// example a Redis Cluster connection (`redis::cluster_async::ClusterConnection`, after enabling
/// the `redis` crate's `cluster-async` feature in the application's own `Cargo.toml`).
///
/// Clients are configuration, not state: they are registered in the process
/// ([`RedisStoreBuilder::client`], [`RedisStore::add_client`]), so every instance must register
/// the same clients.
///
/// # Key layout
///
/// Every key starts with the prefix (default `tdf`) in braces, a Redis Cluster *hash tag*. Codes
/// and tokens appear only as the lower-case hex of their SHA-256 [`Digest`], never in plaintext.
///
/// | Key                     | Type   | Fields / value                                      | Expires at                    |
/// |-------------------------|--------|-----------------------------------------------------|-------------------------------|
/// | `{tdf}:g:<device hex>`  | hash   | `v` version, `g` grant JSON, `x` retain-until (ms)  | [`DeviceGrant::retain_until`] |
/// | `{tdf}:u:<user hex>`    | hash   | `d` device-code hex, `x` retain-until (ms)          | the grant's retain-until      |
/// | `{tdf}:a:<token hex>`   | string | [`TokenInfo`] JSON                                  | the token's `expires_at`      |
/// | `{tdf}:r:<token hex>`   | string | [`RefreshTokenRecord`] JSON, names its access token | the token's `expires_at`      |
/// | `{tdf}:c:<counter key>` | hash   | `n` count, `x` end of the window (ms)               | the end of the window         |
///
/// Times are Unix milliseconds; expiries are set with `PEXPIREAT` from the same timestamps.
///
/// Nothing outlives its flow: every key is written together with its expiry, in the same
/// script, so no key is ever left without a TTL (not even if the process dies mid-request).
///
/// # Redis Cluster: one slot per prefix
///
/// A script may only touch keys of one hash slot. The keys one operation touches are unrelated
/// random digests (a grant and its user code; an old refresh token, the access token it names,
/// and the new pair), and the [`Store`] contract gives no way to derive one from another, so
/// the only tag they can all share is the prefix. The consequence: all of one deployment's data
/// lives in one slot, on one shard (and its replicas). That is cluster-*compatible* (no
/// `CROSSSLOT` errors, scripts run on a cluster unchanged) but not cluster-*scaled*. It is the
/// right trade-off here: a flow is a few hundred bytes and a handful of operations, while one
/// Redis shard runs tens of thousands of such scripts a second. Deployments that must spread
/// the load can run several stores with distinct prefixes (for example one per tenant), each
/// landing on its own slot.
///
/// Every script also *declares* every key it touches in `KEYS` (the refresh token's access token
/// is read first, then passed in and verified by the script), as Redis requires for scripts
/// and as cluster clients and proxies use for routing.
///
/// # Consistency
///
/// Every change of state is one Lua script (or one single command), which Redis runs atomically:
///
/// * [`insert_grant`](Store::insert_grant): insert-if-absent on both the grant and its
///   user-code index, in one script; neither is written unless both are free.
/// * [`replace_grant`](Store::replace_grant): compare-and-swap on the version, storing the
///   issued tokens in the same script. Of any number of racing polls, exactly one swap succeeds,
///   and tokens exist only for the poll that won.
/// * [`rotate_refresh_token`](Store::rotate_refresh_token): take-once of the old refresh token
///   (deleting it and the access token it names) and storing of the new tokens, in one script.
/// * [`revoke_refresh_token`](Store::revoke_refresh_token): deletes the refresh token and its
///   access token in one script; [`revoke_access_token`](Store::revoke_access_token) is one `DEL`.
/// * [`increment_counter`](Store::increment_counter): increment, or start a new window and set
///   its expiry, in one script.
///
/// No `WATCH`/`MULTI` is used, so the shared multiplexed connection is never tied up.
///
/// **Retries.** A request whose reply is lost (a timeout, a dropped connection) is reported as
/// [`StoreError::Unavailable`]; it may or may not have run. Neither this store nor the
/// connection resends it. Retrying is safe anyway: a repeated `replace_grant` names a version
/// that has already moved, so it fails and no second set of tokens is ever issued; a repeated
/// rotation finds the old refresh token gone. The price of exactly-once: the tokens of a swap
/// whose reply was lost are never handed out (they expire with their TTL), and the device's
/// next poll hears `invalid_grant`, so its user starts over.
///
/// **Time.** Expiry is decided by the `now` each method is given, exactly as in
/// [`MemoryStore`](super::MemoryStore): a grant past its retain-until time or a counter past its
/// window is treated as absent even while its key still exists. Redis TTLs, set from the same
/// absolute timestamps, only reclaim the memory, so clocks of the application servers and of
/// Redis should agree to within seconds (as NTP keeps them); a skew shortens or lengthens how
/// long a key physically stays, not what the protocol decides.
///
/// **Errors.** Connection failures, timeouts and a server that is loading, read-only or
/// failing over map to [`StoreError::Unavailable`] (`503`); everything else (undecodable data,
/// script errors, permissions) maps to [`StoreError::Backend`] (`500`).
///
/// Requires Redis 4.0 or later (multi-field `HSET`); tested against Redis 7.
pub struct RedisStore<C = ConnectionManager> {
    conn: C,
    inner: Arc<Inner>,
}

impl<C: Clone> Clone for RedisStore<C> {
    fn clone(&self) -> Self {
        RedisStore {
            conn: self.conn.clone(),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`]: key prefix, clients, connection settings.
///
/// ```no_run
/// use std::time::Duration;
/// use redis::aio::ConnectionManagerConfig;
/// use tower_device_flow::store::RedisStore;
/// use tower_device_flow::{Client, Scope};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder()
///     .prefix("auth")
///     .client(Client::public("tv-app", Scope::parse("profile")?))
///     .connection_config(
///         ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(1))),
///     )
///     .connect("redis://redis.internal:6379")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisStoreBuilder {
    prefix: String,
    clients: Vec<Client>,
    config: ConnectionManagerConfig,
}

impl RedisStoreBuilder {
    /// Sets the key prefix (default [`RedisStore::DEFAULT_PREFIX`], `tdf`). It must be
    /// non-empty and contain no `{` or `}`, as it becomes the keys' hash tag. Stores with
    /// different prefixes share nothing, so one Redis can serve several deployments.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Registers a client.
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// Sets the reconnection and timeout settings of the [`ConnectionManager`] that
    /// [`connect`](Self::connect) opens (the `redis` crate's defaults otherwise: 500 ms response
    /// timeout, 1 s connection timeout, six reconnection attempts with exponential backoff).
    pub fn connection_config(mut self, config: ConnectionManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects to the Redis server at `info` (such as `"redis://127.0.0.1:6379"` or
    /// `"rediss://user:password@host:6380/0"`) and loads the scripts, so that a server that
    /// refuses scripting fails here rather than on the first request.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached and with
    /// [`StoreError::Backend`] for an invalid prefix or address or a refused script.
    pub async fn connect<T: IntoConnectionInfo>(
        self,
        info: T,
    ) -> StoreResult<RedisStore<ConnectionManager>> {
        let keys = Keys::new(&self.prefix)?;
        let client = ::redis::Client::open(info).map_err(store_error)?;
        let mut conn = ConnectionManager::new_with_config(client, self.config)
            .await
            .map_err(store_error)?;
        let scripts = Scripts::new();
        for script in scripts.all() {
            script.load_async(&mut conn).await.map_err(store_error)?;
        }
        Ok(RedisStore::from_parts(conn, keys, scripts, self.clients))
    }

    /// The store on an existing connection, such as a [`ConnectionManager`] the application
    /// already uses (scripts are loaded on first use). Fails only for an invalid prefix.
    pub fn build<C>(self, conn: C) -> StoreResult<RedisStore<C>> {
        let keys = Keys::new(&self.prefix)?;
        Ok(RedisStore::from_parts(
            conn,
            keys,
            Scripts::new(),
            self.clients,
        ))
    }
}

impl RedisStore<ConnectionManager> {
    /// The key prefix used unless [`RedisStoreBuilder::prefix`] names another.
    pub const DEFAULT_PREFIX: &'static str = "tdf";

    /// A builder with the default prefix, no clients and the `redis` crate's default
    /// connection settings.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            clients: Vec::new(),
            config: ConnectionManagerConfig::new(),
        }
    }

    /// Connects to the Redis server at `info` with the default prefix and settings; see
    /// [`RedisStoreBuilder::connect`]. Register clients with [`add_client`](Self::add_client).
    pub async fn connect<T: IntoConnectionInfo>(info: T) -> StoreResult<Self> {
        Self::builder().connect(info).await
    }

    /// The store on an existing [`ConnectionManager`], with keys under `prefix`. Fails only
    /// for an invalid prefix (empty, or containing a brace).
    pub fn new(conn: ConnectionManager, prefix: &str) -> StoreResult<Self> {
        Self::with_connection(conn, prefix)
    }
}

impl<C> RedisStore<C> {
    /// The store on any async Redis connection (for example a cluster connection), with keys
    /// under `prefix`. The connection is cloned for every request, so it must be a cheap,
    /// shared handle such as [`ConnectionManager`] or
    /// [`MultiplexedConnection`](::redis::aio::MultiplexedConnection).
    pub fn with_connection(conn: C, prefix: &str) -> StoreResult<Self> {
        let keys = Keys::new(prefix)?;
        Ok(Self::from_parts(conn, keys, Scripts::new(), Vec::new()))
    }

    fn from_parts(conn: C, keys: Keys, scripts: Scripts, clients: Vec<Client>) -> Self {
        RedisStore {
            conn,
            inner: Arc::new(Inner {
                keys,
                scripts,
                clients: ClientRegistry::new(clients),
            }),
        }
    }

    /// The key prefix (without braces).
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Registers (or replaces) a client in this process, for this store and all its clones.
    pub fn add_client(&self, client: Client) {
        self.inner.clients.add(client);
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn conn(&self) -> C {
        self.conn.clone()
    }

    /// Runs a take-once script on the refresh token `token`: reads its record to learn the
    /// access token it names, then runs `script` with KEYS = [refresh, access, ...] and
    /// ARGV = [record as read, ...], where `extra` appends the rest.
    async fn take_refresh(
        &self,
        token: &Digest,
        script: &Script,
        extra: impl Fn(&mut ScriptInvocation<'_>) + Sync,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let refresh_key = keys.refresh(token);
        for _ in 0..MAX_ATTEMPTS {
            let raw: Option<Vec<u8>> = ::redis::cmd("GET")
                .arg(&refresh_key)
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            let Some(raw) = raw else {
                return Ok(false);
            };
            let record: RefreshTokenRecord = from_json(&raw, "refresh token")?;
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&refresh_key)
                .key(keys.access(&record.access_token))
                .arg(raw);
            extra(&mut invocation);
            let outcome: i64 = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            match outcome {
                1 => return Ok(true),
                0 => return Ok(false),
                // The record was replaced between the read and the script: read it again.
                _ => continue,
            }
        }
        Err(StoreError::Backend(
            "refresh token record changed during every attempt".to_owned(),
        ))
    }
}

impl<C> Store for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.inner.clients.get(client_id))
    }

    async fn insert_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let inserted: i64 = self
            .inner
            .scripts
            .insert_grant
            .key(keys.grant(&device_code))
            .key(keys.user_code(&grant.user_code))
            .arg(now.as_unix_millis())
            .arg(to_json(&grant, "grant")?)
            .arg(expiry_ms(grant.retain_until()))
            .arg(device_code.to_hex())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        script_bool(inserted)
    }

    async fn grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        let fields: (Option<String>, Option<String>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
            .arg(self.inner.keys.grant(device_code))
            .arg("v")
            .arg("x")
            .arg("g")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let (version, retain_until, grant) = match fields {
            (None, None, None) => return Ok(None),
            (Some(v), Some(x), Some(g)) => (v, x, g),
            _ => return Err(StoreError::Backend("incomplete grant record".to_owned())),
        };
        if parse_u64(&retain_until, "grant expiry")? <= now.as_unix_millis() {
            return Ok(None);
        }
        Ok(Some(Versioned {
            version: parse_u64(&version, "grant version")?,
            record: from_json(&grant, "grant")?,
        }))
    }

    async fn grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<(Digest, Versioned<DeviceGrant>)>> {
        // Two reads need no atomicity here: the index never points at a different grant while
        // both are live, and the grant read is checked on its own.
        let fields: (Option<String>, Option<String>) = ::redis::cmd("HMGET")
            .arg(self.inner.keys.user_code(user_code))
            .arg("d")
            .arg("x")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let (device_hex, retain_until) = match fields {
            (None, None) => return Ok(None),
            (Some(d), Some(x)) => (d, x),
            _ => return Err(StoreError::Backend("incomplete user-code index".to_owned())),
        };
        if parse_u64(&retain_until, "user-code expiry")? <= now.as_unix_millis() {
            return Ok(None);
        }
        let device_code = Digest::from_hex(&device_hex).ok_or_else(|| {
            StoreError::Backend("malformed device-code digest in index".to_owned())
        })?;
        Ok(self
            .grant(&device_code, now)
            .await?
            .map(|grant| (device_code, grant)))
    }

    async fn replace_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedTokens>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let new_version = expected_version
            .checked_add(1)
            .ok_or_else(|| StoreError::Backend("grant version overflow".to_owned()))?;
        let mut invocation = self.inner.scripts.replace_grant.prepare_invoke();
        invocation
            .key(keys.grant(device_code))
            .key(keys.user_code(&grant.user_code))
            .arg(expected_version)
            .arg(new_version)
            .arg(now.as_unix_millis())
            .arg(to_json(&grant, "grant")?)
            .arg(expiry_ms(grant.retain_until()))
            .arg(device_code.to_hex());
        if let Some(issue) = &issue {
            let (access, info) = &issue.access;
            invocation
                .key(keys.access(access))
                .arg(to_json(info, "access token")?)
                .arg(expiry_ms(info.expires_at));
            if let Some((refresh, record)) = &issue.refresh {
                invocation
                    .key(keys.refresh(refresh))
                    .arg(to_json(record, "refresh token")?)
                    .arg(expiry_ms(record.expires_at));
            }
        }
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        script_bool(swapped)
    }

    async fn access_token(
        &self,
        token: &Digest,
        _now: Timestamp,
    ) -> StoreResult<Option<TokenInfo>> {
        let raw: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(self.inner.keys.access(token))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        raw.map(|raw| from_json(&raw, "access token")).transpose()
    }

    async fn refresh_token(
        &self,
        token: &Digest,
        _now: Timestamp,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let raw: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(self.inner.keys.refresh(token))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        raw.map(|raw| from_json(&raw, "refresh token")).transpose()
    }

    async fn rotate_refresh_token(
        &self,
        old: &Digest,
        issue: IssuedTokens,
        _now: Timestamp,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let (access, info) = &issue.access;
        let access = (
            keys.access(access),
            to_json(info, "access token")?,
            expiry_ms(info.expires_at),
        );
        let refresh = match &issue.refresh {
            Some((digest, record)) => Some((
                keys.refresh(digest),
                to_json(record, "refresh token")?,
                expiry_ms(record.expires_at),
            )),
            None => None,
        };
        self.take_refresh(old, &self.inner.scripts.rotate_refresh, |invocation| {
            let (key, json, expiry) = &access;
            invocation.key(key).arg(json).arg(*expiry);
            if let Some((key, json, expiry)) = &refresh {
                invocation.key(key).arg(json).arg(*expiry);
            }
        })
        .await
    }

    async fn revoke_access_token(&self, token: &Digest) -> StoreResult<bool> {
        let deleted: i64 = ::redis::cmd("DEL")
            .arg(self.inner.keys.access(token))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(deleted > 0)
    }

    async fn revoke_refresh_token(&self, token: &Digest) -> StoreResult<bool> {
        self.take_refresh(token, &self.inner.scripts.revoke_refresh, |_| {})
            .await
    }

    async fn increment_counter(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let count: i64 = self
            .inner
            .scripts
            .increment_counter
            .key(self.inner.keys.counter(key))
            .arg(now.as_unix_millis())
            .arg(expiry_ms(now.saturating_add(window)))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        u64::try_from(count).map_err(|_| StoreError::Backend(format!("negative counter {count}")))
    }

    async fn counter(&self, key: &str, now: Timestamp) -> StoreResult<u64> {
        let fields: (Option<String>, Option<String>) = ::redis::cmd("HMGET")
            .arg(self.inner.keys.counter(key))
            .arg("n")
            .arg("x")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match fields {
            (Some(n), Some(x)) if parse_u64(&x, "counter window")? > now.as_unix_millis() => {
                parse_u64(&n, "counter")
            }
            _ => Ok(0),
        }
    }
}

/// A timestamp as a `PEXPIREAT` argument, capped at [`MAX_EXPIRY_MS`].
fn expiry_ms(t: Timestamp) -> u64 {
    t.as_unix_millis().min(MAX_EXPIRY_MS)
}

fn to_json<T: Serialize>(value: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode {what}: {e}")))
}

fn from_json<T: DeserializeOwned>(raw: &[u8], what: &str) -> StoreResult<T> {
    serde_json::from_slice(raw)
        .map_err(|e| StoreError::Backend(format!("cannot decode stored {what}: {e}")))
}

fn parse_u64(s: &str, what: &str) -> StoreResult<u64> {
    s.parse()
        .map_err(|_| StoreError::Backend(format!("malformed {what} {s:?}")))
}

/// A script's 1/0 answer.
fn script_bool(n: i64) -> StoreResult<bool> {
    match n {
        1 => Ok(true),
        0 => Ok(false),
        other => Err(StoreError::Backend(format!(
            "unexpected script result {other}"
        ))),
    }
}

/// Sorts a Redis error into "try again later" and "broken".
fn store_error(e: RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
        // A script running past its time limit blocks the server for everyone, for now.
        || e.code() == Some("BUSY");
    // The message names the failure and at most key names (digests), never a secret.
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_prefix_hash_tag() {
        let keys = Keys::new("tdf").unwrap();
        let d = Digest::of(b"secret");
        let hex = d.to_hex();
        assert_eq!(keys.grant(&d), format!("{{tdf}}:g:{hex}"));
        assert_eq!(keys.user_code(&d), format!("{{tdf}}:u:{hex}"));
        assert_eq!(keys.access(&d), format!("{{tdf}}:a:{hex}"));
        assert_eq!(keys.refresh(&d), format!("{{tdf}}:r:{hex}"));
        // Braces later in a key do not move the tag: Redis uses the first `{...}`.
        assert_eq!(keys.counter("ip:{x}"), "{tdf}:c:ip:{x}");
        assert_eq!(keys.prefix(), "tdf");
    }

    #[test]
    fn prefixes_that_would_break_the_slot_are_refused() {
        for bad in ["", "a{b", "a}b", "{tdf}"] {
            assert!(
                matches!(Keys::new(bad), Err(StoreError::Backend(_))),
                "{bad:?}"
            );
        }
        assert!(Keys::new("my-app:prod").is_ok());
    }

    #[test]
    fn expiries_are_capped_for_pexpireat() {
        assert_eq!(expiry_ms(Timestamp::from_unix_millis(1_000)), 1_000);
        assert_eq!(
            expiry_ms(Timestamp::from_unix_millis(u64::MAX)),
            MAX_EXPIRY_MS
        );
    }

    #[test]
    fn errors_are_sorted_into_unavailable_and_backend() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(store_error(io), StoreError::Unavailable(_)));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(store_error(refused), StoreError::Unavailable(_)));
        for kind in [
            ServerErrorKind::ReadOnly,
            ServerErrorKind::BusyLoading,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::TryAgain,
        ] {
            let e = RedisError::from((ErrorKind::Server(kind), "transient"));
            assert!(
                matches!(store_error(e), StoreError::Unavailable(_)),
                "{kind:?}"
            );
        }
        for kind in [
            ErrorKind::Server(ServerErrorKind::ResponseError),
            ErrorKind::Server(ServerErrorKind::NoPerm),
            ErrorKind::UnexpectedReturnType,
            ErrorKind::InvalidClientConfig,
        ] {
            let e = RedisError::from((kind, "broken"));
            assert!(matches!(store_error(e), StoreError::Backend(_)), "{kind:?}");
        }
    }

    #[test]
    fn script_answers() {
        assert_eq!(script_bool(1), Ok(true));
        assert_eq!(script_bool(0), Ok(false));
        assert!(script_bool(7).is_err());
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(Duration::from_millis(300)));
        // Port 1 is closed on any sane machine: the connection is refused at once.
        let result = RedisStore::builder()
            .connection_config(config)
            .connect("redis://127.0.0.1:1")
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn bad_configuration_is_a_backend_error() {
        let bad_url = RedisStore::connect("http://not-redis").await;
        assert!(
            matches!(bad_url, Err(StoreError::Backend(_))),
            "{bad_url:?}"
        );
        let bad_prefix = RedisStore::builder()
            .prefix("a{b}")
            .connect("redis://127.0.0.1:1")
            .await;
        assert!(
            matches!(bad_prefix, Err(StoreError::Backend(_))),
            "{bad_prefix:?}"
        );
    }
}

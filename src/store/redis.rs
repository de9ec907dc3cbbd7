//! [`RedisStore`]: a [`Store`] on Redis. The key layout, the consistency guarantees and an
//! example are documented on the type (this module is private; the type is re-exported).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::clients::{ClientRegistry, ClientSource};
use super::records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
use super::traits::{Store, StoreError, StoreResult};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::family::{Grant, Rotation};
use crate::grant::{DeviceGrant, GrantStatus};
use crate::ids::{GrantId, Subject};
use crate::scope::Scope;

/// Expiry times are capped at the end of year 9999: a saturated [`Timestamp`] (`u64::MAX`) is
/// not a valid `PEXPIREAT` argument, and Lua compares times as doubles, exact below 2^53.
const MAX_EXPIRY_MS: u64 = 253_402_300_799_999;
const _: () = assert!(
    MAX_EXPIRY_MS < 1 << 53,
    "Lua must represent every expiry exactly"
);

/// How many grants one [`REVOKE_GRANTS_OF`] script revokes; a subject with more is revoked in
/// several scripts. Bounds how long one script holds the server.
const REVOKE_BATCH: usize = 128;

/// How long a one-time claim's key outlives its `until`. Whether a claim is taken is decided
/// by the caller's `now` against the stored `until`; the margin keeps a Redis clock running
/// ahead of the instances' from dropping the key (and so freeing the claim, letting a DPoP
/// proof be replayed) before `until` by their clocks.
const CLAIM_TTL_MARGIN: Duration = Duration::from_secs(60);

/// How long after its expiry a device grant stays counted in the pending set before an insert
/// prunes it. The count itself is exact by the caller's `now` (expired entries are not counted);
/// the margin only keeps an instance whose clock runs ahead from pruning entries another
/// instance still counts.
const PENDING_PRUNE_MARGIN: Duration = Duration::from_secs(60);

// ---- Lua scripts ----
//
// Conventions shared by every script:
// * Times are Unix milliseconds as decimal strings; `now` is the caller's. Lua numbers are
//   doubles, exact for every time below MAX_EXPIRY_MS.
// * Versions are compared as decimal strings and the next version is computed by the caller,
//   so no version ever passes through a Lua double.
// * A number computed in Lua is passed back to Redis through string.format('%d', ...), never
//   through Lua's own number-to-string conversion (which would write 1.7e+12).
// * Keys known before the script runs are declared in KEYS. A key that can only be known from
//   a record the script reads (the access token a grant names, a grant an index lists) is
//   derived inside the script as TAG .. ':x:' .. hex, where TAG is the `{prefix}` hash tag at
//   the start of KEYS[1]. Redis Cluster hashes a key by its first `{...}`, so a derived key is
//   always in the same slot as KEYS[1], whatever follows the tag: the script never leaves its
//   slot, and so never its node.

/// Insert-if-absent of a device grant and its user-code index, and its place among the pending
/// grants. A key whose retain-until time has passed (by the caller's `now`) counts as free, as
/// in the memory store.
///
/// KEYS: 1 device grant, 2 user-code index, 3 pending set.
/// ARGV: 1 now, 2 grant JSON, 3 retain-until, 4 device-code hex, 5 expires-at,
///       6 `1` if the grant is pending, 7 prune pending entries that expired before this.
const INSERT_DEVICE_GRANT: &str = r"
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
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[7])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
else
  redis.call('ZREM', KEYS[3], ARGV[4])
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[3], string.format('%d', tonumber(last[2])))
end
return 1
";

/// Compare-and-swap of a device grant's version; when tokens are issued, stores in the same
/// step the new grant (version 0), its access token and its subject index entry.
///
/// KEYS: 1 device grant, 2 user-code index, 3 pending set; with an issue also
///       4 grant, 5 access token, 6 subject index.
/// ARGV: 1 expected version, 2 new version, 3 now, 4 device grant JSON, 5 retain-until,
///       6 device-code hex, 7 `1` if still pending; with an issue also 8 grant JSON,
///       9 grant expires-at, 10 access-token hex, 11 subject hex, 12 grant id hex,
///       13 access JSON, 14 access expires-at, 15 grant keep-until.
const REPLACE_DEVICE_GRANT: &str = r"
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
if ARGV[7] ~= '1' then
  redis.call('ZREM', KEYS[3], ARGV[6])
end
if KEYS[4] then
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], 'v', '0', 'g', ARGV[8], 'x', ARGV[9], 'a', ARGV[10], 's', ARGV[11])
  redis.call('PEXPIREAT', KEYS[4], ARGV[15])
  redis.call('SET', KEYS[5], ARGV[13])
  redis.call('PEXPIREAT', KEYS[5], ARGV[14])
  redis.call('ZADD', KEYS[6], ARGV[15], ARGV[12])
  local last = redis.call('ZRANGE', KEYS[6], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[6], string.format('%d', tonumber(last[2])))
end
return 1
";

/// Compare-and-swap of a grant's rotation: the successor, its new access token, and the
/// deletion of the replaced pair's access token, in one step.
///
/// KEYS: 1 grant, 2 new access token, 3 access token to revoke, 4 subject index.
/// ARGV: 1 expected version, 2 new version, 3 now, 4 grant JSON, 5 grant expires-at,
///       6 new access-token hex, 7 subject hex, 8 grant id hex, 9 access JSON,
///       10 access expires-at, 11 grant keep-until.
const REPLACE_GRANT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'v', 'x')
if cur[1] ~= ARGV[1] or not cur[2] or tonumber(cur[2]) <= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'g', ARGV[4], 'x', ARGV[5], 'a', ARGV[6], 's', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[11])
redis.call('SET', KEYS[2], ARGV[9])
redis.call('PEXPIREAT', KEYS[2], ARGV[10])
if KEYS[3] ~= KEYS[2] then
  redis.call('DEL', KEYS[3])
end
-- The grant's keep-until moved with the rotation: so does its index entry's, and the index's.
redis.call('ZADD', KEYS[4], ARGV[11], ARGV[8])
local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[4], string.format('%d', tonumber(last[2])))
return 1
";

/// Revokes a grant: deletes it, the access token it names at this moment and its subject index
/// entry. The last two are derived from the grant's own fields (see the conventions above).
/// Returns the grant's JSON, or nil if there was none.
///
/// KEYS: 1 grant. ARGV: 1 grant id hex.
const REVOKE_GRANT: &str = r"
local tag = string.match(KEYS[1], '^{[^}]*}')
local cur = redis.call('HMGET', KEYS[1], 'g', 'a', 's')
if not cur[1] then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('incomplete grant record')
  end
  return false
end
redis.call('DEL', KEYS[1])
if cur[2] then
  redis.call('DEL', tag .. ':a:' .. cur[2])
end
if cur[3] then
  redis.call('ZREM', tag .. ':s:' .. cur[3], ARGV[1])
end
return cur[1]
";

/// The live grants a subject index lists, as JSON; drops the ids whose grant is gone (revoked,
/// or reclaimed by its TTL). Grants expired by the caller's `now` but still stored are left
/// out of the answer and kept in the index: a caller's clock never removes what another
/// instance still considers live.
///
/// KEYS: 1 subject index. ARGV: 1 now.
const GRANTS_OF: &str = r"
local tag = string.match(KEYS[1], '^{[^}]*}')
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local cur = redis.call('HMGET', tag .. ':g:' .. id, 'g', 'x')
  if not cur[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif not cur[2] then
    return redis.error_reply('incomplete grant record')
  elseif tonumber(cur[2]) > now then
    out[#out + 1] = cur[1]
  end
end
return out
";

/// Revokes up to ARGV[1] grants of a subject, each as [`REVOKE_GRANT`] does, all in this one
/// step. Returns {ids taken from the index, {grant JSON...}}.
///
/// KEYS: 1 subject index. ARGV: 1 batch size.
const REVOKE_GRANTS_OF: &str = r"
local tag = string.match(KEYS[1], '^{[^}]*}')
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local key = tag .. ':g:' .. id
  local cur = redis.call('HMGET', key, 'g', 'a')
  if cur[1] then
    redis.call('DEL', key)
    if cur[2] then
      redis.call('DEL', tag .. ':a:' .. cur[2])
    end
    out[#out + 1] = cur[1]
  end
  redis.call('ZREM', KEYS[1], id)
end
return {#ids, out}
";

/// Increments a counter if it is below the maximum; a missing or ended counter starts a new
/// window at zero first. The window end is stored beside the count, so that expiry follows the
/// caller's `now`. Returns {counted 1/0, value, window end}.
///
/// KEYS: 1 counter. ARGV: 1 now, 2 max, 3 end of a new window.
const TRY_INCREMENT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'n', 'x')
local n, x
if cur[1] and cur[2] and tonumber(cur[2]) > tonumber(ARGV[1]) then
  n, x = tonumber(cur[1]), cur[2]
else
  n, x = 0, ARGV[3]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'n', '0', 'x', x)
  redis.call('PEXPIREAT', KEYS[1], x)
end
if n < tonumber(ARGV[2]) then
  return {1, redis.call('HINCRBY', KEYS[1], 'n', 1), x}
end
return {0, n, x}
";

/// Takes one back from a live counter, never below zero.
///
/// KEYS: 1 counter. ARGV: 1 now.
const DECREMENT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'n', 'x')
if cur[1] and cur[2] and tonumber(cur[2]) > tonumber(ARGV[1]) and tonumber(cur[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 1
";

/// Claims a one-time value until ARGV[2], unless a claim still holds by the caller's `now`.
///
/// KEYS: 1 claim. ARGV: 1 now, 2 until, 3 expiry of the key.
const CLAIM_ONCE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
";

/// The scripts, hashed once; `EVALSHA` falls back to loading a script the server lost.
struct Scripts {
    insert_device_grant: Script,
    replace_device_grant: Script,
    replace_grant: Script,
    revoke_grant: Script,
    grants_of: Script,
    revoke_grants_of: Script,
    try_increment: Script,
    decrement: Script,
    claim_once: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            insert_device_grant: Script::new(INSERT_DEVICE_GRANT),
            replace_device_grant: Script::new(REPLACE_DEVICE_GRANT),
            replace_grant: Script::new(REPLACE_GRANT),
            revoke_grant: Script::new(REVOKE_GRANT),
            grants_of: Script::new(GRANTS_OF),
            revoke_grants_of: Script::new(REVOKE_GRANTS_OF),
            try_increment: Script::new(TRY_INCREMENT),
            decrement: Script::new(DECREMENT),
            claim_once: Script::new(CLAIM_ONCE),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.insert_device_grant,
            &self.replace_device_grant,
            &self.replace_grant,
            &self.revoke_grant,
            &self.grants_of,
            &self.revoke_grants_of,
            &self.try_increment,
            &self.decrement,
            &self.claim_once,
        ]
    }
}

/// Builds the key names of one prefix. The one-letter kinds must match the ones the scripts
/// derive (`:a:`, `:g:`, `:s:`).
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

    fn device_grant(&self, device_code: &Digest) -> String {
        self.digest_key('d', device_code)
    }

    fn user_code(&self, user_code: &Digest) -> String {
        self.digest_key('u', user_code)
    }

    fn pending(&self) -> String {
        format!("{}:p", self.tag)
    }

    fn grant(&self, id: &GrantId) -> String {
        format!("{}:g:{id}", self.tag)
    }

    fn subject(&self, subject: &Subject) -> String {
        self.digest_key('s', &subject_digest(subject))
    }

    fn access(&self, token: &Digest) -> String {
        self.digest_key('a', token)
    }

    fn counter(&self, key: &str) -> String {
        format!("{}:c:{key}", self.tag)
    }

    fn claim(&self, key: &Digest) -> String {
        self.digest_key('o', key)
    }
}

/// A subject as it appears in keys: its digest, so that index keys have a fixed length and no
/// user identifier (an email address, say) is spelled out in a key name.
fn subject_digest(subject: &Subject) -> Digest {
    Digest::of(subject.as_str().as_bytes())
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
/// use tower_device_flow::{Client, ClientSource, Clock, Scope, Store, SystemClock};
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
/// let attempt = store
///     .try_increment("verify:198.51.100.7", 5, window, SystemClock.now())
///     .await?;
/// assert!(attempt.counted);
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
/// Every key starts with the prefix (default `tdf`) in braces, a Redis Cluster *hash tag*. Codes,
/// tokens and subjects appear only as the lower-case hex of their SHA-256 [`Digest`], grants by
/// their [`GrantId`] (itself a digest of the family key, which is never stored): a dump of Redis
/// holds no usable code or token.
///
/// | Key | Type | Holds | Expires at |
/// |---|---|---|---|
/// | `{tdf}:d:<device-code hex>` | hash | `v` version, `g` [`DeviceGrant`] JSON, `x` retain-until | [`DeviceGrant::retain_until`] |
/// | `{tdf}:u:<user-code hex>` | hash | `d` device-code hex, `x` retain-until | its device grant's retain-until |
/// | `{tdf}:p` | sorted set | device-code hex of each pending device grant, scored by its `expires_at` | the latest score |
/// | `{tdf}:g:<grant id>` | hash | `v` version, `g` [`Grant`] JSON, `x` its [`Grant::expires_at`], `a` its access token's hex, `s` its subject's hex | the later of the grant's end and its access token's |
/// | `{tdf}:s:<subject hex>` | sorted set | the subject's grant ids, each scored by when its grant key expires | the latest score |
/// | `{tdf}:a:<access-token hex>` | string | [`TokenInfo`] JSON (names its grant) | [`TokenInfo::expires_at`] |
/// | `{tdf}:c:<counter key>` | hash | `n` count, `x` end of the window | the end of the window |
/// | `{tdf}:o:<one-time value hex>` | string | the `until` of the claim | `until` + 1 min |
///
/// Times are Unix milliseconds; expiries are set with `PEXPIREAT` from the same timestamps.
/// Refresh tokens have no keys: a grant holds the digests of its live refresh token and of the
/// one its latest rotation superseded ([`crate::family`]). A grant is over at its `x`, but its
/// key stays as long as its access token lives (which can be longer, with a refresh token
/// shorter-lived than the access token), so that revoking the grant still deletes the token.
///
/// Nothing outlives its flow: every key is written together with its expiry, in the same
/// script, so no key is ever left without a TTL (not even if the process dies mid-request).
/// A one-time claim's key is kept a minute past its `until` so that a Redis clock running ahead
/// of the instances' cannot free a claim early (which would let a DPoP proof be replayed).
///
/// # Redis Cluster: one slot per prefix
///
/// A script may only touch keys of one hash slot. The keys one operation touches are unrelated
/// random digests (a device grant and its user code; a grant, its old and new access tokens and
/// its subject's index), so the only tag they can all share is the prefix. The consequence: all
/// of one deployment's data lives in one slot, on one shard (and its replicas). That is
/// cluster-*compatible* (no `CROSSSLOT` errors, scripts run on a cluster unchanged) but not
/// cluster-*scaled*. It is the right trade-off here: a flow is a few hundred bytes and a
/// handful of operations, while one Redis shard runs tens of thousands of such scripts a second.
/// Deployments that must spread the load can run several stores with distinct prefixes (for
/// example one per tenant), each landing on its own slot.
///
/// Every key a script can know before it runs is declared in `KEYS`, as cluster clients and
/// proxies use for routing. A few keys can only be known from a record the script reads: the
/// access token and index entry of a grant being revoked, and the grants a subject index lists.
/// Those scripts build the key from the hash tag at the start of their first declared key.
/// Redis Cluster hashes a key by its first `{...}`, so such a key is in the declared key's slot
/// whatever the record held: the script never leaves its slot.
/// (Reading the record first to declare the key would cost a round trip and a retry loop for
/// no gain, with every key of a prefix in one slot.)
///
/// # Consistency
///
/// Every change of state is one Lua script, which Redis runs atomically (no `WATCH`/`MULTI`,
/// so the shared multiplexed connection is never tied up):
///
/// * [`insert_device_grant`](Store::insert_device_grant): insert-if-absent on both the device
///   grant and its user-code index; neither is written unless both are free
///   ([`Insert::Taken`]). Redis has no memory ceiling here: never [`Insert::Full`].
/// * [`replace_device_grant`](Store::replace_device_grant): compare-and-swap on the version.
///   When it issues, the same script stores the new grant (version 0), its access token and
///   its subject index entry: of any number of racing polls on any number of instances, exactly
///   one swap succeeds, and a grant exists only for the poll that won.
/// * [`replace_grant`](Store::replace_grant): compare-and-swap on the grant's version that
///   stores the new access token and deletes the replaced one in the same script, so of racing
///   refreshes exactly one rotates, and a revoked (deleted) grant can never be rotated.
/// * [`revoke_grant`](Store::revoke_grant): deletes the grant, the access token it names at
///   that moment and its index entry in one script. A rotation on one instance and a revocation
///   on another are therefore ordered by Redis: either the rotation ran first and its new token
///   is the one the revocation deletes, or the revocation ran first and the rotation finds no
///   grant and writes nothing. No live token is ever left behind a revoked grant.
/// * [`revoke_grants_of`](Store::revoke_grants_of): revokes a subject's grants 128 at a time,
///   each batch in one script (so, for any subject with at most 128 grants, all of them in one
///   atomic step). A grant issued while it runs may survive, as the contract allows.
///   [`grants_of`](Store::grants_of) answers the grants not over by the caller's `now`, and
///   drops from the index the ids of grants that are gone (revoked, or reclaimed by their TTL).
/// * [`access_token`](Store::access_token) is one `GET`: a token lives until its own expiry
///   unless it is revoked, and every revocation and rotation deletes it in the script that ends
///   it, so no separate check of its grant is needed.
///   [`revoke_access_token`](Store::revoke_access_token) is one `DEL`.
/// * [`try_increment`](Store::try_increment): the check against the maximum, the increment, and
///   the start of a new window with its expiry, in one script: no number of concurrent calls
///   takes a counter past its maximum. [`decrement`](Store::decrement) never goes below zero.
/// * [`claim_once`](Store::claim_once): a `SET NX PXAT` decided by the caller's `now`: the
///   script stores the claim's `until`, and a claim whose `until` has passed by the caller's
///   `now` is free again.
/// * [`pending_device_grants`](Store::pending_device_grants) is exact and cheap: one `ZCOUNT`
///   (O(log n)) of the pending set, which gains a device code when it is inserted and loses it
///   in the script that decides it; entries expired by more than a minute are pruned as new
///   grants arrive.
///
/// **Lost replies.** A request whose reply is lost (a timeout, a dropped connection) is
/// reported as [`StoreError::Unavailable`]; it may or may not have run. Neither this store nor
/// the connection resends it. A repeated compare-and-swap names a version that has already
/// moved, so it never issues twice; and the token endpoint looks for the access token it
/// minted, answering with it if the write went through. If Redis is unreachable for that look
/// too, the device hears `503` and retries: a poll then gets `invalid_grant` (its code is
/// spent), while a refresh retried with its old refresh token within the grace period
/// ([`DeviceFlowBuilder::refresh_token_grace`](crate::DeviceFlowBuilder::refresh_token_grace))
/// is answered with a fresh pair and keeps its grant.
///
/// **Time.** Expiry is decided by the `now` each method is given, exactly as in
/// [`MemoryStore`](super::MemoryStore): a device grant or grant past its time, a counter past its
/// window or a claim past its `until` is treated as absent even while its key still exists (an
/// expired access token is returned, as the contract allows, and its callers refuse it). Redis TTLs, set from the same absolute
/// timestamps, only reclaim the memory, so clocks of the application servers and of Redis
/// should agree to within seconds (as NTP keeps them); a skew shortens or lengthens how long a
/// key physically stays, not what the protocol decides.
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
}

impl<C> ClientSource for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.inner.clients.get(client_id))
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        Ok(Some(self.inner.clients.known_scopes()))
    }
}

impl<C> Store for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<Insert> {
        let keys = &self.inner.keys;
        let prune_before = now
            .as_unix_millis()
            .saturating_sub(PENDING_PRUNE_MARGIN.as_millis() as u64);
        let inserted: i64 = self
            .inner
            .scripts
            .insert_device_grant
            .key(keys.device_grant(&device_code))
            .key(keys.user_code(&grant.user_code))
            .key(keys.pending())
            .arg(now.as_unix_millis())
            .arg(to_json(&grant, "device grant")?)
            .arg(expiry_ms(grant.retain_until()))
            .arg(device_code.to_hex())
            .arg(expiry_ms(grant.expires_at))
            .arg(flag(grant.status == GrantStatus::Pending))
            .arg(prune_before)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(if script_bool(inserted)? {
            Insert::Inserted
        } else {
            Insert::Taken
        })
    }

    async fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        let fields: (Option<String>, Option<String>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
            .arg(self.inner.keys.device_grant(device_code))
            .arg("v")
            .arg("x")
            .arg("g")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let (version, retain_until, grant) = match fields {
            (None, None, None) => return Ok(None),
            (Some(v), Some(x), Some(g)) => (v, x, g),
            _ => {
                return Err(StoreError::Backend(
                    "incomplete device grant record".to_owned(),
                ))
            }
        };
        if parse_u64(&retain_until, "device grant expiry")? <= now.as_unix_millis() {
            return Ok(None);
        }
        Ok(Some(Versioned {
            version: parse_u64(&version, "device grant version")?,
            record: from_json(&grant, "device grant")?,
        }))
    }

    async fn device_grant_by_user_code(
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
            .device_grant(&device_code, now)
            .await?
            .map(|grant| (device_code, grant)))
    }

    async fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let new_version = next_version(expected_version)?;
        let mut invocation = self.inner.scripts.replace_device_grant.prepare_invoke();
        invocation
            .key(keys.device_grant(device_code))
            .key(keys.user_code(&grant.user_code))
            .key(keys.pending())
            .arg(expected_version)
            .arg(new_version)
            .arg(now.as_unix_millis())
            .arg(to_json(&grant, "device grant")?)
            .arg(expiry_ms(grant.retain_until()))
            .arg(device_code.to_hex())
            .arg(flag(grant.status == GrantStatus::Pending));
        if let Some(IssuedGrant { grant, access }) = &issue {
            invocation
                .key(keys.grant(&grant.id))
                .key(keys.access(&grant.access_token))
                .key(keys.subject(&grant.subject))
                .arg(to_json(grant, "grant")?)
                .arg(expiry_ms(grant.expires_at))
                .arg(grant.access_token.to_hex())
                .arg(subject_digest(&grant.subject).to_hex())
                .arg(grant.id.to_string())
                .arg(to_json(access, "access token")?)
                .arg(expiry_ms(access.expires_at))
                .arg(keep_until(grant, access));
        }
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        script_bool(swapped)
    }

    async fn grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Versioned<Grant>>> {
        let fields: (Option<String>, Option<String>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
            .arg(self.inner.keys.grant(id))
            .arg("v")
            .arg("x")
            .arg("g")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let (version, expires_at, grant) = match fields {
            (None, None, None) => return Ok(None),
            (Some(v), Some(x), Some(g)) => (v, x, g),
            _ => return Err(StoreError::Backend("incomplete grant record".to_owned())),
        };
        if parse_u64(&expires_at, "grant expiry")? <= now.as_unix_millis() {
            return Ok(None);
        }
        Ok(Some(Versioned {
            version: parse_u64(&version, "grant version")?,
            record: from_json(&grant, "grant")?,
        }))
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let keys = &self.inner.keys;
        let Rotation { next, revoke } = rotation;
        if next.id != *id {
            return Err(StoreError::Backend(format!(
                "rotation of grant {id} names grant {}",
                next.id
            )));
        }
        let new_version = next_version(expected_version)?;
        let swapped: i64 = self
            .inner
            .scripts
            .replace_grant
            .key(keys.grant(id))
            .key(keys.access(&next.access_token))
            .key(keys.access(&revoke))
            .key(keys.subject(&next.subject))
            .arg(expected_version)
            .arg(new_version)
            .arg(now.as_unix_millis())
            .arg(to_json(&next, "grant")?)
            .arg(expiry_ms(next.expires_at))
            .arg(next.access_token.to_hex())
            .arg(subject_digest(&next.subject).to_hex())
            .arg(id.to_string())
            .arg(to_json(&access, "access token")?)
            .arg(expiry_ms(access.expires_at))
            .arg(keep_until(&next, &access))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        script_bool(swapped)
    }

    async fn revoke_grant(&self, id: &GrantId, _now: Timestamp) -> StoreResult<Option<Grant>> {
        let raw: Option<Vec<u8>> = self
            .inner
            .scripts
            .revoke_grant
            .key(self.inner.keys.grant(id))
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        raw.map(|raw| from_json(&raw, "grant")).transpose()
    }

    async fn grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        let raw: Vec<Vec<u8>> = self
            .inner
            .scripts
            .grants_of
            .key(self.inner.keys.subject(subject))
            .arg(now.as_unix_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        raw.iter().map(|raw| from_json(raw, "grant")).collect()
    }

    async fn revoke_grants_of(
        &self,
        subject: &Subject,
        _now: Timestamp,
    ) -> StoreResult<Vec<Grant>> {
        let key = self.inner.keys.subject(subject);
        let mut revoked = Vec::new();
        loop {
            let (taken, grants): (usize, Vec<Vec<u8>>) = self
                .inner
                .scripts
                .revoke_grants_of
                .key(&key)
                .arg(REVOKE_BATCH)
                .invoke_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            for raw in &grants {
                revoked.push(from_json(raw, "grant")?);
            }
            // Every id taken leaves the index, so this ends; a full batch may have more behind.
            if taken < REVOKE_BATCH {
                return Ok(revoked);
            }
        }
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

    async fn revoke_access_token(&self, token: &Digest, _now: Timestamp) -> StoreResult<bool> {
        let deleted: i64 = ::redis::cmd("DEL")
            .arg(self.inner.keys.access(token))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(deleted > 0)
    }

    async fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<Count> {
        let (counted, value, resets_at): (i64, i64, String) = self
            .inner
            .scripts
            .try_increment
            .key(self.inner.keys.counter(key))
            .arg(now.as_unix_millis())
            .arg(max)
            .arg(expiry_ms(now.saturating_add(window)))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(Count {
            counted: script_bool(counted)?,
            value: u64::try_from(value)
                .map_err(|_| StoreError::Backend(format!("negative counter {value}")))?,
            resets_at: Timestamp::from_unix_millis(parse_u64(&resets_at, "counter window")?),
        })
    }

    async fn decrement(&self, key: &str, now: Timestamp) -> StoreResult<()> {
        let _: i64 = self
            .inner
            .scripts
            .decrement
            .key(self.inner.keys.counter(key))
            .arg(now.as_unix_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let claimed: i64 = self
            .inner
            .scripts
            .claim_once
            .key(self.inner.keys.claim(key))
            .arg(now.as_unix_millis())
            .arg(expiry_ms(until))
            .arg(expiry_ms(until.saturating_add(CLAIM_TTL_MARGIN)))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        script_bool(claimed)
    }

    async fn pending_device_grants(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        let count: u64 = ::redis::cmd("ZCOUNT")
            .arg(self.inner.keys.pending())
            .arg(format!("({}", now.as_unix_millis()))
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(Some(count))
    }
}

/// A timestamp as a `PEXPIREAT` argument, capped at [`MAX_EXPIRY_MS`].
fn expiry_ms(t: Timestamp) -> u64 {
    t.as_unix_millis().min(MAX_EXPIRY_MS)
}

/// When a grant's key may go: at the grant's end, or at its access token's if that is later.
/// The access token lives until its own expiry (a refresh token may be shorter-lived), and until
/// then a revocation must still find the grant to delete it.
fn keep_until(grant: &Grant, access: &TokenInfo) -> u64 {
    expiry_ms(grant.expires_at.max(access.expires_at))
}

/// A flag as a script argument.
fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn next_version(expected: u64) -> StoreResult<u64> {
    expected
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("version overflow".to_owned()))
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
        assert_eq!(keys.device_grant(&d), format!("{{tdf}}:d:{hex}"));
        assert_eq!(keys.user_code(&d), format!("{{tdf}}:u:{hex}"));
        assert_eq!(keys.access(&d), format!("{{tdf}}:a:{hex}"));
        assert_eq!(keys.claim(&d), format!("{{tdf}}:o:{hex}"));
        assert_eq!(keys.pending(), "{tdf}:p");
        let id = GrantId::from_bytes([0xab; 16]);
        assert_eq!(keys.grant(&id), format!("{{tdf}}:g:{}", "ab".repeat(16)));
        let subject = Subject::new("alice@example.com");
        assert_eq!(
            keys.subject(&subject),
            format!("{{tdf}}:s:{}", Digest::of(b"alice@example.com").to_hex())
        );
        // Braces later in a key do not move the tag: Redis uses the first `{...}`.
        assert_eq!(keys.counter("ip:{x}"), "{tdf}:c:ip:{x}");
        assert_eq!(keys.prefix(), "tdf");
    }

    /// The scripts derive keys from the tag with the same one-letter kinds as [`Keys`].
    #[test]
    fn scripts_derive_keys_of_the_same_kinds() {
        for (script, kinds) in [
            (REVOKE_GRANT, &["':a:'", "':s:'"][..]),
            (GRANTS_OF, &["':g:'"][..]),
            (REVOKE_GRANTS_OF, &["':g:'", "':a:'"][..]),
        ] {
            assert!(script.contains("string.match(KEYS[1], '^{[^}]*}')"));
            for kind in kinds {
                assert!(script.contains(&format!("tag .. {kind} ..")), "{kind}");
            }
        }
        let keys = Keys::new("p").unwrap();
        assert!(keys.access(&Digest::of(b"x")).starts_with("{p}:a:"));
        assert!(keys.subject(&Subject::new("x")).starts_with("{p}:s:"));
        assert!(keys
            .grant(&GrantId::from_bytes([0; 16]))
            .starts_with("{p}:g:"));
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

//! [`MemoryStore`]: the embedded default store.
//!
//! Each table is split into shards, each behind its own mutex, so concurrent requests on
//! different codes never wait on one another. Keys are SHA-256 digests, already uniformly
//! random, so a shard is picked by one slice of the digest and the hash map hashes by another,
//! with no rehashing. A shard drops its expired records during a write at most once per
//! [`MemoryStoreBuilder::purge_every`], so memory stays bounded under a stream of abandoned
//! flows, at amortized O(1) per operation. No lock is ever held while another is taken.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::records::{
    Client, ClientRegistry, IssuedTokens, RefreshTokenRecord, TokenInfo, Versioned,
};
use super::traits::{Store, StoreResult};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::grant::DeviceGrant;

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is uniformly random: eight of its bytes are a perfect hash already.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.as_bytes()[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

/// A hasher that passes a [`Digest`]'s own random bits through.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than digests; fold them in (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The first 16 bytes of a digest: the key of the grant tables. Half a digest keeps table
/// slots small (the grant table holds a record per abandoned flow); the other half is kept in
/// the slot and compared, so two device codes can never be confused.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HalfKey([u8; 16]);

impl Hash for HalfKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

fn split(d: &Digest) -> (HalfKey, [u8; 16]) {
    let mut key = [0u8; 16];
    let mut rest = [0u8; 16];
    key.copy_from_slice(&d.as_bytes()[..16]);
    rest.copy_from_slice(&d.as_bytes()[16..]);
    (HalfKey(key), rest)
}

fn join(key: &HalfKey, rest: &[u8; 16]) -> Digest {
    let mut d = [0u8; 32];
    d[..16].copy_from_slice(&key.0);
    d[16..].copy_from_slice(rest);
    Digest::from_bytes(d)
}

/// A stored grant, boxed so that the table's slots stay 24 bytes whatever the grant's size
/// (a hash table keeps up to half its slots empty after it grows).
struct GrantSlot {
    rest: [u8; 16],
    grant: Versioned<DeviceGrant>,
}

/// Records that know when they may be dropped.
trait Expiring {
    fn drop_after(&self) -> Timestamp;
}

impl Expiring for Box<GrantSlot> {
    fn drop_after(&self) -> Timestamp {
        self.grant.record.retain_until()
    }
}
impl Expiring for TokenInfo {
    fn drop_after(&self) -> Timestamp {
        self.expires_at
    }
}
impl Expiring for RefreshTokenRecord {
    fn drop_after(&self) -> Timestamp {
        self.expires_at
    }
}
/// A user-code index entry: the grant's key and when the grant may be dropped.
#[derive(Clone, Copy)]
struct IndexEntry(HalfKey, Timestamp);
impl Expiring for IndexEntry {
    fn drop_after(&self) -> Timestamp {
        self.1
    }
}
#[derive(Clone, Copy)]
struct Counter(u64, Timestamp);
impl Expiring for Counter {
    fn drop_after(&self) -> Timestamp {
        self.1
    }
}

struct Shard<K, V, H> {
    map: HashMap<K, V, H>,
    next_purge: Timestamp,
}

struct Table<K, V, H> {
    shards: Box<[Mutex<Shard<K, V, H>>]>,
    purge_every: Duration,
}

impl<K: Hash + Eq, V: Expiring, H: BuildHasher + Default> Table<K, V, H> {
    fn new(shards: usize, purge_every: Duration) -> Self {
        Table {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::with_hasher(H::default()),
                        next_purge: Timestamp::EPOCH,
                    })
                })
                .collect(),
            purge_every,
        }
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard<K, V, H>> {
        // A panic while holding a shard cannot leave a half-written record (every write is a
        // single map operation), so a poisoned lock is safe to keep using.
        self.shards[index % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Locks a shard for writing, first dropping its expired records if it is time to.
    fn lock_for_write(&self, index: usize, now: Timestamp) -> MutexGuard<'_, Shard<K, V, H>> {
        let mut shard = self.lock(index);
        if now >= shard.next_purge {
            shard.map.retain(|_, v| v.drop_after() > now);
            shard.next_purge = now.saturating_add(self.purge_every);
        }
        shard
    }

    fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).map.len()).sum()
    }
}

fn shard_of(d: &Digest) -> usize {
    // Bytes 8..16, independent of the bytes the hash map uses.
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[8..16]);
    u64::from_le_bytes(b) as usize
}

type DigestTable<V> = Table<Digest, V, BuildHasherDefault<DigestHasher>>;
type HalfKeyTable<V> = Table<HalfKey, V, BuildHasherDefault<DigestHasher>>;

struct Inner {
    clients: ClientRegistry,
    grants: HalfKeyTable<Box<GrantSlot>>,
    user_codes: HalfKeyTable<IndexEntry>,
    access: DigestTable<TokenInfo>,
    refresh: DigestTable<RefreshTokenRecord>,
    counters: Table<Box<str>, Counter, RandomState>,
    counter_shard: RandomState,
}

/// The in-memory [`Store`]: sharded, O(1) per operation, expired records purged as it goes.
/// Clones share the same data.
///
/// ```
/// use tower_device_flow::{Client, MemoryStore, Scope};
///
/// let store = MemoryStore::builder()
///     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
///     .build();
/// store.add_client(Client::confidential("cli", "secret", Scope::parse("email").unwrap()));
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("grants", &self.inner.grants.len())
            .field("access_tokens", &self.inner.access.len())
            .field("refresh_tokens", &self.inner.refresh.len())
            .finish()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    clients: Vec<Client>,
    shards: usize,
    purge_every: Duration,
}

impl MemoryStoreBuilder {
    /// Registers a client.
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// Shards per table (default 64). More shards, less contention.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// How often at most a shard sweeps out expired records (default 30 s).
    pub fn purge_every(mut self, every: Duration) -> Self {
        self.purge_every = every;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let (n, every) = (self.shards, self.purge_every);
        MemoryStore {
            inner: Arc::new(Inner {
                clients: ClientRegistry::new(self.clients),
                grants: Table::new(n, every),
                user_codes: Table::new(n, every),
                access: Table::new(n, every),
                refresh: Table::new(n, every),
                counters: Table::new(n, every),
                counter_shard: RandomState::new(),
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

impl MemoryStore {
    /// A builder with no clients, 64 shards and a 30 s purge period.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            clients: Vec::new(),
            shards: 64,
            purge_every: Duration::from_secs(30),
        }
    }

    /// Registers (or replaces) a client at run time. Grants already issued keep their scope.
    pub fn add_client(&self, client: Client) {
        self.inner.clients.add(client);
    }

    /// Number of stored grants (including expired ones not yet purged).
    pub fn grant_count(&self) -> usize {
        self.inner.grants.len()
    }

    /// Number of stored access tokens (including expired ones not yet purged).
    pub fn access_token_count(&self) -> usize {
        self.inner.access.len()
    }

    /// Number of stored refresh tokens (including expired ones not yet purged).
    pub fn refresh_token_count(&self) -> usize {
        self.inner.refresh.len()
    }

    fn store_tokens(&self, issue: IssuedTokens, now: Timestamp) {
        let (digest, info) = issue.access;
        self.inner
            .access
            .lock_for_write(shard_of(&digest), now)
            .map
            .insert(digest, info);
        if let Some((digest, record)) = issue.refresh {
            self.inner
                .refresh
                .lock_for_write(shard_of(&digest), now)
                .map
                .insert(digest, record);
        }
    }

    fn counter_shard(&self, key: &str) -> usize {
        self.inner.counter_shard.hash_one(key) as usize
    }
}

impl Store for MemoryStore {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.inner.clients.get(client_id))
    }

    async fn insert_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let drop_after = grant.retain_until();
        let user_shard = shard_of(&grant.user_code);
        let (user_key, _) = split(&grant.user_code);
        let (device_key, rest) = split(&device_code);
        {
            // Claim the user code first: it is the key that can collide.
            let mut index = self.inner.user_codes.lock_for_write(user_shard, now);
            if index
                .map
                .get(&user_key)
                .is_some_and(|e| e.drop_after() > now)
            {
                return Ok(false);
            }
            index
                .map
                .insert(user_key, IndexEntry(device_key, drop_after));
        }
        let mut grants = self
            .inner
            .grants
            .lock_for_write(shard_of(&device_code), now);
        if grants
            .map
            .get(&device_key)
            .is_some_and(|g| g.drop_after() > now)
        {
            drop(grants);
            // Give back the user code; a device code collision means a broken generator.
            self.inner.user_codes.lock(user_shard).map.remove(&user_key);
            return Ok(false);
        }
        let slot = GrantSlot {
            rest,
            grant: Versioned {
                version: 0,
                record: grant,
            },
        };
        grants.map.insert(device_key, Box::new(slot));
        Ok(true)
    }

    async fn grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        let (key, rest) = split(device_code);
        let grants = self.inner.grants.lock(shard_of(device_code));
        Ok(grants
            .map
            .get(&key)
            .filter(|slot| slot.rest == rest && slot.drop_after() > now)
            .map(|slot| slot.grant.clone()))
    }

    async fn grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<(Digest, Versioned<DeviceGrant>)>> {
        let (user_key, _) = split(user_code);
        let device_key = {
            let index = self.inner.user_codes.lock(shard_of(user_code));
            match index.map.get(&user_key) {
                Some(e) if e.drop_after() > now => e.0,
                _ => return Ok(None),
            }
        };
        // A half key holds the bytes that pick the shard.
        let shard = shard_of(&join(&device_key, &[0; 16]));
        let grants = self.inner.grants.lock(shard);
        Ok(grants
            .map
            .get(&device_key)
            .filter(|slot| slot.drop_after() > now)
            .map(|slot| (join(&device_key, &slot.rest), slot.grant.clone())))
    }

    async fn replace_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedTokens>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        {
            let (key, rest) = split(device_code);
            let mut grants = self.inner.grants.lock_for_write(shard_of(device_code), now);
            match grants.map.get_mut(&key) {
                Some(slot) if slot.rest == rest && slot.grant.version == expected_version => {
                    slot.grant.version += 1;
                    slot.grant.record = grant;
                }
                _ => return Ok(false),
            }
        }
        // The swap above is the exactly-once decision; the tokens are stored before the caller
        // can hand them out.
        if let Some(issue) = issue {
            self.store_tokens(issue, now);
        }
        Ok(true)
    }

    async fn access_token(
        &self,
        token: &Digest,
        _now: Timestamp,
    ) -> StoreResult<Option<TokenInfo>> {
        let access = self.inner.access.lock(shard_of(token));
        Ok(access.map.get(token).cloned())
    }

    async fn refresh_token(
        &self,
        token: &Digest,
        _now: Timestamp,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let refresh = self.inner.refresh.lock(shard_of(token));
        Ok(refresh.map.get(token).cloned())
    }

    async fn rotate_refresh_token(
        &self,
        old: &Digest,
        issue: IssuedTokens,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let removed = self
            .inner
            .refresh
            .lock_for_write(shard_of(old), now)
            .map
            .remove(old);
        let Some(old_record) = removed else {
            return Ok(false);
        };
        self.inner
            .access
            .lock(shard_of(&old_record.access_token))
            .map
            .remove(&old_record.access_token);
        self.store_tokens(issue, now);
        Ok(true)
    }

    async fn revoke_access_token(&self, token: &Digest) -> StoreResult<bool> {
        Ok(self
            .inner
            .access
            .lock(shard_of(token))
            .map
            .remove(token)
            .is_some())
    }

    async fn revoke_refresh_token(&self, token: &Digest) -> StoreResult<bool> {
        let removed = self.inner.refresh.lock(shard_of(token)).map.remove(token);
        match removed {
            Some(record) => {
                self.inner
                    .access
                    .lock(shard_of(&record.access_token))
                    .map
                    .remove(&record.access_token);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn increment_counter(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut shard = self
            .inner
            .counters
            .lock_for_write(self.counter_shard(key), now);
        // Look up before inserting so the hot path allocates no key.
        let fresh = Counter(1, now.saturating_add(window));
        match shard.map.get_mut(key) {
            Some(c) if c.1 > now => {
                c.0 += 1;
                Ok(c.0)
            }
            Some(c) => {
                *c = fresh;
                Ok(1)
            }
            None => {
                shard.map.insert(Box::from(key), fresh);
                Ok(1)
            }
        }
    }

    async fn counter(&self, key: &str, now: Timestamp) -> StoreResult<u64> {
        let shard = self.inner.counters.lock(self.counter_shard(key));
        Ok(shard.map.get(key).filter(|c| c.1 > now).map_or(0, |c| c.0))
    }
}

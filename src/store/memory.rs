//! [`MemoryStore`]: the embedded default store.
//!
//! Each table is split into shards, each behind its own mutex, so concurrent requests on
//! different codes never wait on one another. Keys are SHA-256 digests (or ids derived from
//! one), already uniformly random, so a shard is picked by one slice of the key and the hash
//! map hashes by another, with no rehashing. A shard drops its expired records during a write
//! at most once per [`MemoryStoreBuilder::purge_every`], so memory stays bounded under a stream
//! of abandoned flows, at amortized O(1) per operation.
//!
//! Only a redemption holds two locks at once: it keeps the device grant's shard locked while it
//! stores the new grant, its access token and its subject index entry (taken in that order,
//! and no other operation ever holds a lock while taking another, so there is no deadlock), so
//! that nobody sees the device grant redeemed before the grant exists. Elsewhere, where one
//! primitive touches two tables, the writes are ordered so that no reader or racing writer can
//! be left with a live token behind a revoked grant: a rotation stores its new access token
//! before it swaps the grant (and takes it back if the swap fails), and a revocation deletes
//! the access token the grant names once the grant is gone.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::clients::{ClientRegistry, ClientSource};
use super::records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
use super::traits::{Store, StoreResult};
use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};
use crate::family::{Grant, Rotation, Superseded};
use crate::grant::{DeviceGrant, GrantStatus, RequestOrigin, RETENTION_AFTER_EXPIRY};
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is uniformly random: eight of its bytes are a perfect hash already.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.as_bytes()[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

/// A hasher that passes a key's own random bits through.
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

/// Sixteen random bytes as a table key: the first half of a digest (the device-grant tables)
/// or a grant id. Half a digest keeps table slots small (the grant table holds a record per
/// abandoned flow); where the other half matters it is kept in the slot and compared, so two
/// device codes can never be confused.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HalfKey([u8; 16]);

impl Hash for HalfKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

impl HalfKey {
    fn shard(&self) -> usize {
        // Bytes 8..16, independent of the bytes the hash map uses.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..16]);
        u64::from_le_bytes(b) as usize
    }

    fn of_grant(id: &GrantId) -> Self {
        HalfKey(*id.as_bytes())
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

fn shard_of(d: &Digest) -> usize {
    split(d).0.shard()
}

/// A stored device grant, boxed so that the table's slots stay 24 bytes whatever the grant's
/// size (a hash table keeps up to half its slots empty after it grows), in a compact form:
/// the status as a tag with the approval beside it, the poll time without an `Option`'s
/// padding, and the fields a pending grant rarely has (an audience, the request's origin) in
/// one optional box. A million abandoned flows are what this table holds under a flood.
struct DeviceSlot {
    rest: [u8; 16],
    user_code: Digest,
    client_id: ClientId,
    scope: Scope,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// Meaningful when `flags & POLLED`.
    last_poll: Timestamp,
    version: u64,
    interval: u32,
    flags: u8,
    status: u8,
    /// Who approved and when, for `STATUS_APPROVED` (boxed: a grant is approved only for the
    /// moments until its device polls).
    approved: Option<Box<(Subject, Timestamp)>>,
    extra: Option<Box<DeviceExtra>>,
}

struct DeviceExtra {
    audience: Option<Audience>,
    origin: Option<Box<RequestOrigin>>,
}

/// Counted among the live pending grants (see [`Pending`]).
const COUNTED: u8 = 1;
/// `last_poll` is set.
const POLLED: u8 = 2;
const STATUS_PENDING: u8 = 0;
const STATUS_APPROVED: u8 = 1;
const STATUS_DENIED: u8 = 2;
const STATUS_REDEEMED: u8 = 3;

impl DeviceSlot {
    fn new(rest: [u8; 16], version: u64, grant: DeviceGrant, counted: bool) -> Self {
        let DeviceGrant {
            client_id,
            scope,
            audience,
            user_code,
            created_at,
            expires_at,
            interval,
            last_poll,
            status,
            origin,
        } = grant;
        let (status, approved) = match status {
            GrantStatus::Pending => (STATUS_PENDING, None),
            GrantStatus::Approved {
                subject,
                approved_at,
            } => (STATUS_APPROVED, Some(Box::new((subject, approved_at)))),
            GrantStatus::Denied => (STATUS_DENIED, None),
            GrantStatus::Redeemed => (STATUS_REDEEMED, None),
        };
        let flags =
            if counted { COUNTED } else { 0 } | if last_poll.is_some() { POLLED } else { 0 };
        DeviceSlot {
            rest,
            user_code,
            client_id,
            scope,
            created_at,
            expires_at,
            last_poll: last_poll.unwrap_or(Timestamp::EPOCH),
            version,
            interval,
            flags,
            status,
            approved,
            extra: (audience.is_some() || origin.is_some())
                .then(|| Box::new(DeviceExtra { audience, origin })),
        }
    }

    fn counted(&self) -> bool {
        self.flags & COUNTED != 0
    }

    fn uncount(&mut self) {
        self.flags &= !COUNTED;
    }

    fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    fn to_versioned(&self) -> Versioned<DeviceGrant> {
        let status = match (self.status, self.approved.as_deref()) {
            (STATUS_APPROVED, Some((subject, approved_at))) => GrantStatus::Approved {
                subject: subject.clone(),
                approved_at: *approved_at,
            },
            (STATUS_DENIED, _) => GrantStatus::Denied,
            (STATUS_REDEEMED, _) => GrantStatus::Redeemed,
            _ => GrantStatus::Pending,
        };
        let (audience, origin) = match &self.extra {
            Some(e) => (e.audience.clone(), e.origin.clone()),
            None => (None, None),
        };
        Versioned {
            version: self.version,
            record: DeviceGrant {
                client_id: self.client_id.clone(),
                scope: self.scope.clone(),
                audience,
                user_code: self.user_code,
                created_at: self.created_at,
                expires_at: self.expires_at,
                interval: self.interval,
                last_poll: (self.flags & POLLED != 0).then_some(self.last_poll),
                status,
                origin,
            },
        }
    }
}

/// A stored grant, boxed for the same reason, in a compact form: the fields a grant rarely has
/// (an audience, a DPoP key) share one optional box.
struct GrantSlot {
    version: u64,
    client_id: ClientId,
    subject: Subject,
    scope: Scope,
    approved_at: Timestamp,
    last_used_at: Timestamp,
    expires_at: Timestamp,
    /// When the slot may go: the grant's end, or its access token's if that is later (an
    /// access token lives until its own expiry, and a lookup needs the grant's subject and
    /// client).
    keep_until: Timestamp,
    access_token: Digest,
    refresh_token: Option<Digest>,
    /// The superseded refresh token and when; `at == EPOCH` for none.
    superseded: (Digest, Timestamp),
    rare: Option<Box<Rare>>,
}

#[derive(Clone, Default)]
struct Rare {
    audience: Option<Audience>,
    cnf: Option<Thumbprint>,
}

impl Rare {
    fn boxed(audience: Option<Audience>, cnf: Option<Thumbprint>) -> Option<Box<Rare>> {
        (audience.is_some() || cnf.is_some()).then(|| Box::new(Rare { audience, cnf }))
    }
}

impl GrantSlot {
    fn new(version: u64, g: Grant, access_expires_at: Timestamp) -> Self {
        GrantSlot {
            version,
            keep_until: g.expires_at.max(access_expires_at),
            client_id: g.client_id,
            subject: g.subject,
            scope: g.scope,
            approved_at: g.approved_at,
            last_used_at: g.last_used_at,
            expires_at: g.expires_at,
            access_token: g.access_token,
            refresh_token: g.refresh_token,
            superseded: g
                .superseded
                .map_or((Digest::from_bytes([0; 32]), Timestamp::EPOCH), |s| {
                    (s.refresh_token, s.at)
                }),
            rare: Rare::boxed(g.audience, g.cnf),
        }
    }

    fn to_grant(&self, id: GrantId) -> Versioned<Grant> {
        let rare = self.rare.as_deref().cloned().unwrap_or_default();
        Versioned {
            version: self.version,
            record: Grant {
                id,
                client_id: self.client_id.clone(),
                subject: self.subject.clone(),
                scope: self.scope.clone(),
                audience: rare.audience,
                approved_at: self.approved_at,
                last_used_at: self.last_used_at,
                expires_at: self.expires_at,
                access_token: self.access_token,
                refresh_token: self.refresh_token,
                superseded: (self.superseded.1 != Timestamp::EPOCH).then_some(Superseded {
                    refresh_token: self.superseded.0,
                    at: self.superseded.1,
                }),
                cnf: rare.cnf,
            },
        }
    }
}

/// A stored access token. Who it acts for and for which client is its grant's, so the token
/// keeps only what may differ from the grant (its own, possibly narrowed, scope) and the
/// grant's id; a lookup joins the two. A token whose grant is gone is dead, whatever happens
/// to the token's own record. Keyed by the digest's first half and boxed, like the other
/// tables (a 24-byte slot instead of an 80-byte one, in a table up to half empty); the other
/// half is kept here and compared.
struct AccessSlot {
    rest: [u8; 16],
    grant: HalfKey,
    scope: Scope,
    expires_at: Timestamp,
    rare: Option<Box<Rare>>,
}

/// Records that know when they may be dropped.
trait Expiring {
    fn drop_after(&self) -> Timestamp;
}

impl Expiring for Box<DeviceSlot> {
    fn drop_after(&self) -> Timestamp {
        // As `DeviceGrant::retain_until`.
        self.expires_at.saturating_add(RETENTION_AFTER_EXPIRY)
    }
}
impl Expiring for Box<GrantSlot> {
    fn drop_after(&self) -> Timestamp {
        self.keep_until
    }
}
impl Expiring for Box<AccessSlot> {
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
/// A claimed one-time value: the digest's other half, and until when it is claimed.
#[derive(Clone, Copy)]
struct Claim([u8; 16], Timestamp);
impl Expiring for Claim {
    fn drop_after(&self) -> Timestamp {
        self.1
    }
}
/// The grants of one subject: almost always one, kept without a heap allocation.
enum Ids {
    One(GrantId),
    Many(Vec<GrantId>),
}
impl Expiring for Ids {
    fn drop_after(&self) -> Timestamp {
        // Emptied entries are removed at once; live ones are never swept by time.
        Timestamp::from_unix_millis(u64::MAX)
    }
}

impl Ids {
    fn to_vec(&self) -> Vec<GrantId> {
        match self {
            Ids::One(id) => vec![*id],
            Ids::Many(ids) => ids.clone(),
        }
    }

    fn push(&mut self, id: GrantId) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; true if none is left.
    fn remove(&mut self, id: &GrantId) -> bool {
        match self {
            Ids::One(first) => first == id,
            Ids::Many(ids) => {
                ids.retain(|i| i != id);
                if let [only] = ids[..] {
                    *self = Ids::One(only);
                }
                ids_empty(self)
            }
        }
    }
}

fn ids_empty(ids: &Ids) -> bool {
    matches!(ids, Ids::Many(v) if v.is_empty())
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
    /// `on_drop` sees each record dropped, with its key.
    fn lock_for_write_with(
        &self,
        index: usize,
        now: Timestamp,
        mut on_drop: impl FnMut(&K, &V),
    ) -> MutexGuard<'_, Shard<K, V, H>> {
        let mut shard = self.lock(index);
        if now >= shard.next_purge {
            shard.map.retain(|k, v| {
                let keep = v.drop_after() > now;
                if !keep {
                    on_drop(k, v);
                }
                keep
            });
            shard.next_purge = now.saturating_add(self.purge_every);
        }
        shard
    }

    fn lock_for_write(&self, index: usize, now: Timestamp) -> MutexGuard<'_, Shard<K, V, H>> {
        self.lock_for_write_with(index, now, |_, _| {})
    }

    fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).map.len()).sum()
    }
}

type HalfKeyTable<V> = Table<HalfKey, V, BuildHasherDefault<DigestHasher>>;

/// The ceiling on live pending device grants, and the count against it.
///
/// A grant is counted from its insertion until it is decided, or until a sweep finds it
/// expired or drops it; the count is exact (a slot records whether it is counted). When the
/// ceiling is reached, one sweep of every shard (at most once a second) stops counting the
/// grants that expired and learns when the earliest counted one will, which is the
/// `Retry-After` the store answers with.
struct Pending {
    max: Option<usize>,
    count: AtomicUsize,
    /// Unix millis of the earliest expiry among counted grants, as of the last full sweep.
    earliest: AtomicU64,
    /// Unix millis before which no full sweep runs again.
    next_sweep: AtomicU64,
}

impl Pending {
    fn uncount(&self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner {
    clients: ClientRegistry,
    device_grants: HalfKeyTable<Box<DeviceSlot>>,
    user_codes: HalfKeyTable<IndexEntry>,
    grants: HalfKeyTable<Box<GrantSlot>>,
    subjects: Table<Subject, Ids, RandomState>,
    access: HalfKeyTable<Box<AccessSlot>>,
    counters: Table<Box<str>, Counter, RandomState>,
    claims: HalfKeyTable<Claim>,
    pending: Pending,
    hash: RandomState,
}

/// The in-memory [`Store`]: sharded, O(1) per operation, expired records purged as it goes.
/// Clones share the same data.
///
/// ```
/// use tower_device_flow::{Client, MemoryStore, Scope};
///
/// let store = MemoryStore::builder()
///     .client(Client::public("tv-app", Scope::parse("profile").unwrap()))
///     .max_pending_grants(Some(100_000)) // the memory ceiling; answered 503 past it
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
            .field("device_grants", &self.inner.device_grants.len())
            .field("grants", &self.inner.grants.len())
            .field("access_tokens", &self.inner.access.len())
            .finish()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    clients: Vec<Client>,
    shards: usize,
    purge_every: Duration,
    max_pending: Option<usize>,
}

/// The default ceiling on live pending device grants: about 110 MB of grants at the measured
/// ~300 bytes each, with the expired ones still kept for `expired_token` answers on top.
pub const DEFAULT_MAX_PENDING_GRANTS: usize = 250_000;

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

    /// The most live pending device grants the store holds (default
    /// [`DEFAULT_MAX_PENDING_GRANTS`]; `None` for no ceiling). Past it, device authorization
    /// answers 503 `temporarily_unavailable` with a `Retry-After` of when the earliest pending
    /// grant expires; room frees as grants are decided or expire. This bounds the memory a
    /// flood of abandoned flows can take, whoever sends it.
    pub fn max_pending_grants(mut self, max: Option<usize>) -> Self {
        self.max_pending = max;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let (n, every) = (self.shards, self.purge_every);
        MemoryStore {
            inner: Arc::new(Inner {
                clients: ClientRegistry::new(self.clients),
                device_grants: Table::new(n, every),
                user_codes: Table::new(n, every),
                grants: Table::new(n, every),
                subjects: Table::new(n, every),
                access: Table::new(n, every),
                counters: Table::new(n, every),
                claims: Table::new(n, every),
                pending: Pending {
                    max: self.max_pending,
                    count: AtomicUsize::new(0),
                    earliest: AtomicU64::new(0),
                    next_sweep: AtomicU64::new(0),
                },
                hash: RandomState::new(),
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
    /// A builder with no clients, 64 shards, a 30 s purge period and the default ceiling on
    /// pending grants.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            clients: Vec::new(),
            shards: 64,
            purge_every: Duration::from_secs(30),
            max_pending: Some(DEFAULT_MAX_PENDING_GRANTS),
        }
    }

    /// Registers a client at run time, or replaces (updates) the one with its id. Grants
    /// already issued keep their scope.
    pub fn add_client(&self, client: Client) {
        self.inner.clients.add(client);
    }

    /// Removes a client at run time: it can no longer authenticate, so it can neither redeem
    /// nor refresh; revoke its grants to end them at once.
    pub fn remove_client(&self, client_id: &str) -> Option<Client> {
        self.inner.clients.remove(client_id)
    }

    /// Number of stored device grants (including expired ones not yet purged).
    pub fn device_grant_count(&self) -> usize {
        self.inner.device_grants.len()
    }

    /// Number of live pending device grants, as counted against the ceiling.
    pub fn pending_grant_count(&self) -> usize {
        self.inner.pending.count.load(Ordering::Relaxed)
    }

    /// Number of stored grants (approved devices; including expired ones not yet purged).
    pub fn grant_count(&self) -> usize {
        self.inner.grants.len()
    }

    /// Number of stored access tokens (including expired ones not yet purged).
    pub fn access_token_count(&self) -> usize {
        self.inner.access.len()
    }

    fn hash_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        self.inner.hash.hash_one(key) as usize
    }

    /// Reserves a place among the live pending grants, or says when to come back.
    fn reserve_pending(&self, now: Timestamp) -> Result<(), Duration> {
        let pending = &self.inner.pending;
        let Some(max) = pending.max else {
            pending.count.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        for attempt in 0..2 {
            if pending.count.fetch_add(1, Ordering::Relaxed) < max {
                return Ok(());
            }
            pending.uncount();
            if attempt == 0 && !self.sweep_pending(now) {
                break;
            }
        }
        let earliest = Timestamp::from_unix_millis(pending.earliest.load(Ordering::Relaxed));
        Err(earliest
            .saturating_duration_since(now)
            .max(Duration::from_secs(1)))
    }

    /// Sweeps every device-grant shard: drops what may be dropped, stops counting grants that
    /// expired, and records the earliest expiry among those still counted. At most once a
    /// second; false if it did not run.
    fn sweep_pending(&self, now: Timestamp) -> bool {
        let pending = &self.inner.pending;
        let due = pending.next_sweep.load(Ordering::Relaxed);
        if now.as_unix_millis() < due
            || pending
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(Duration::from_secs(1)).as_unix_millis(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        let mut earliest = u64::MAX;
        let table = &self.inner.device_grants;
        for i in 0..table.shards.len() {
            let mut shard = table.lock(i);
            shard.map.retain(|_, slot| {
                if slot.counted() && slot.is_expired(now) {
                    slot.uncount();
                    pending.uncount();
                }
                if slot.counted() {
                    earliest = earliest.min(slot.expires_at.as_unix_millis());
                }
                slot.drop_after() > now
            });
        }
        pending.earliest.store(earliest, Ordering::Relaxed);
        true
    }

    fn remove_access(&self, token: &Digest) -> bool {
        let (key, rest) = split(token);
        let mut access = self.inner.access.lock(key.shard());
        if access.map.get(&key).is_some_and(|a| a.rest == rest) {
            access.map.remove(&key);
            true
        } else {
            false
        }
    }

    fn store_access(&self, grant: &GrantId, digest: Digest, info: TokenInfo, now: Timestamp) {
        let (key, rest) = split(&digest);
        let slot = AccessSlot {
            rest,
            grant: HalfKey::of_grant(grant),
            scope: info.scope,
            expires_at: info.expires_at,
            rare: Rare::boxed(info.audience, info.cnf),
        };
        self.inner
            .access
            .lock_for_write(key.shard(), now)
            .map
            .insert(key, Box::new(slot));
    }

    fn index_subject(&self, subject: &Subject, id: GrantId, now: Timestamp) {
        let mut shard = self
            .inner
            .subjects
            .lock_for_write(self.hash_of(subject), now);
        match shard.map.get_mut(subject) {
            Some(ids) => ids.push(id),
            None => {
                shard.map.insert(subject.clone(), Ids::One(id));
            }
        }
    }

    fn unindex_subject(&self, subject: &Subject, id: &GrantId) {
        let mut shard = self.inner.subjects.lock(self.hash_of(subject));
        if shard.map.get_mut(subject).is_some_and(|ids| ids.remove(id)) {
            shard.map.remove(subject);
        }
    }

    /// Locks a grant shard for writing; the grants its purge drops (ended, and past their
    /// access token's end) are added to `ended`, for [`unindex_ended`](Self::unindex_ended)
    /// once the lock is released: so the subject index only ever names slots that exist.
    fn grants_for_write(
        &self,
        shard: usize,
        now: Timestamp,
        ended: &mut Vec<(Subject, GrantId)>,
    ) -> MutexGuard<'_, Shard<HalfKey, Box<GrantSlot>, BuildHasherDefault<DigestHasher>>> {
        self.inner
            .grants
            .lock_for_write_with(shard, now, |key, slot| {
                ended.push((slot.subject.clone(), GrantId::from_bytes(key.0)))
            })
    }

    /// Takes the grants a purge dropped out of the subject index.
    fn unindex_ended(&self, ended: Vec<(Subject, GrantId)>) {
        for (subject, id) in ended {
            self.unindex_subject(&subject, &id);
        }
    }

    /// Removes a grant and returns it; the caller deletes its access token and index entry.
    fn take_grant(&self, id: &GrantId) -> Option<Box<GrantSlot>> {
        let key = HalfKey::of_grant(id);
        self.inner.grants.lock(key.shard()).map.remove(&key)
    }
}

impl ClientSource for MemoryStore {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.inner.clients.get(client_id))
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        Ok(Some(self.inner.clients.known_scopes()))
    }
}

impl Store for MemoryStore {
    async fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> StoreResult<Insert> {
        if let Err(retry_after) = self.reserve_pending(now) {
            return Ok(Insert::Full { retry_after });
        }
        let pending = &self.inner.pending;
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
                pending.uncount();
                return Ok(Insert::Taken);
            }
            index
                .map
                .insert(user_key, IndexEntry(device_key, drop_after));
        }
        let uncount = |slot: &DeviceSlot| {
            if slot.counted() {
                pending.uncount();
            }
        };
        let mut grants =
            self.inner
                .device_grants
                .lock_for_write_with(device_key.shard(), now, |_, slot| uncount(slot));
        if grants
            .map
            .get(&device_key)
            .is_some_and(|g| g.drop_after() > now)
        {
            drop(grants);
            pending.uncount();
            // Give back the user code; a device code collision means a broken generator.
            self.inner.user_codes.lock(user_shard).map.remove(&user_key);
            return Ok(Insert::Taken);
        }
        let slot = DeviceSlot::new(rest, 0, grant, true);
        if let Some(old) = grants.map.insert(device_key, Box::new(slot)) {
            uncount(&old);
        }
        Ok(Insert::Inserted)
    }

    async fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<Versioned<DeviceGrant>>> {
        let (key, rest) = split(device_code);
        let grants = self.inner.device_grants.lock(key.shard());
        Ok(grants
            .map
            .get(&key)
            .filter(|slot| slot.rest == rest && slot.drop_after() > now)
            .map(|slot| slot.to_versioned()))
    }

    async fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> StoreResult<Option<(Digest, Versioned<DeviceGrant>)>> {
        let (user_key, _) = split(user_code);
        let device_key = {
            let index = self.inner.user_codes.lock(user_key.shard());
            match index.map.get(&user_key) {
                Some(e) if e.drop_after() > now => e.0,
                _ => return Ok(None),
            }
        };
        let grants = self.inner.device_grants.lock(device_key.shard());
        Ok(grants
            .map
            .get(&device_key)
            .filter(|slot| slot.drop_after() > now)
            .map(|slot| (join(&device_key, &slot.rest), slot.to_versioned())))
    }

    async fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (key, rest) = split(device_code);
        let pending = &self.inner.pending;
        let mut grants =
            self.inner
                .device_grants
                .lock_for_write_with(key.shard(), now, |_, slot| {
                    if slot.counted() {
                        pending.uncount();
                    }
                });
        match grants.map.get_mut(&key) {
            Some(slot) if slot.rest == rest && slot.version == expected_version => {
                let mut counted = slot.counted();
                if counted && grant.status != GrantStatus::Pending {
                    counted = false;
                    pending.uncount();
                }
                **slot = DeviceSlot::new(rest, expected_version + 1, grant, counted);
            }
            _ => return Ok(false),
        }
        // The swap above is the exactly-once decision. The grant, its token and its index
        // entry are stored while the device grant's shard is still held, so no reader sees the
        // device grant redeemed before they exist (the one place that nests locks; see the
        // module doc for the order).
        if let Some(IssuedGrant { grant, access }) = issue {
            let (id, digest) = (grant.id, grant.access_token);
            let subject = grant.subject.clone();
            let key = HalfKey::of_grant(&id);
            let slot = GrantSlot::new(0, grant, access.expires_at);
            let mut ended = Vec::new();
            self.grants_for_write(key.shard(), now, &mut ended)
                .map
                .insert(key, Box::new(slot));
            self.store_access(&id, digest, access, now);
            self.index_subject(&subject, id, now);
            self.unindex_ended(ended);
        }
        drop(grants);
        Ok(true)
    }

    async fn grant(&self, id: &GrantId, now: Timestamp) -> StoreResult<Option<Versioned<Grant>>> {
        let key = HalfKey::of_grant(id);
        let grants = self.inner.grants.lock(key.shard());
        Ok(grants
            .map
            .get(&key)
            .filter(|slot| slot.expires_at > now)
            .map(|slot| slot.to_grant(*id)))
    }

    async fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let Rotation { next, revoke } = rotation;
        let new_access = next.access_token;
        let access_expires_at = access.expires_at;
        // The new token first: a revocation that removes the grant after the swap below then
        // finds and deletes it.
        self.store_access(id, new_access, access, now);
        let key = HalfKey::of_grant(id);
        let mut ended = Vec::new();
        let swapped = {
            let mut grants = self.grants_for_write(key.shard(), now, &mut ended);
            match grants.map.get_mut(&key) {
                Some(slot) if slot.version == expected_version && slot.expires_at > now => {
                    **slot = GrantSlot::new(expected_version + 1, next, access_expires_at);
                    true
                }
                _ => false,
            }
        };
        if swapped {
            self.remove_access(&revoke);
        } else {
            self.remove_access(&new_access);
        }
        self.unindex_ended(ended);
        Ok(swapped)
    }

    async fn revoke_grant(&self, id: &GrantId, _now: Timestamp) -> StoreResult<Option<Grant>> {
        let Some(slot) = self.take_grant(id) else {
            return Ok(None);
        };
        // The grant is gone, so no rotation can swap in another token: the one it names is
        // the last.
        self.remove_access(&slot.access_token);
        self.unindex_subject(&slot.subject, id);
        Ok(Some(slot.to_grant(*id).record))
    }

    async fn grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        let ids = {
            let shard = self.inner.subjects.lock(self.hash_of(subject));
            shard.map.get(subject).map(Ids::to_vec).unwrap_or_default()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = self.grant(&id, now).await? {
                out.push(g.record);
            }
        }
        Ok(out)
    }

    async fn revoke_grants_of(&self, subject: &Subject, now: Timestamp) -> StoreResult<Vec<Grant>> {
        let ids = {
            let shard = self.inner.subjects.lock(self.hash_of(subject));
            shard.map.get(subject).map(Ids::to_vec).unwrap_or_default()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = self.revoke_grant(&id, now).await? {
                out.push(g);
            }
        }
        Ok(out)
    }

    async fn access_token(&self, token: &Digest, now: Timestamp) -> StoreResult<Option<TokenInfo>> {
        let (grant, scope, expires_at, rare) = {
            let (key, rest) = split(token);
            let access = self.inner.access.lock(key.shard());
            match access.map.get(&key) {
                Some(a) if a.rest == rest => {
                    (a.grant, a.scope.clone(), a.expires_at, a.rare.clone())
                }
                _ => return Ok(None),
            }
        };
        let grants = self.inner.grants.lock(grant.shard());
        // Not the grant's own end: a token lives until its own expiry (callers check that),
        // unless its grant was revoked.
        let Some(g) = grants.map.get(&grant).filter(|g| g.drop_after() > now) else {
            return Ok(None);
        };
        let rare = rare.map(|r| *r).unwrap_or_default();
        Ok(Some(TokenInfo {
            subject: g.subject.clone(),
            client_id: g.client_id.clone(),
            scope,
            expires_at,
            grant_id: Some(GrantId::from_bytes(grant.0)),
            audience: rare.audience,
            cnf: rare.cnf,
        }))
    }

    async fn revoke_access_token(&self, token: &Digest, _now: Timestamp) -> StoreResult<bool> {
        Ok(self.remove_access(token))
    }

    async fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> StoreResult<Count> {
        let mut shard = self.inner.counters.lock_for_write(self.hash_of(key), now);
        let fresh = Counter(0, now.saturating_add(window));
        // Look up before inserting so the hot path allocates no key.
        let counter = match shard.map.get_mut(key) {
            Some(c) if c.1 > now => c,
            Some(c) => {
                *c = fresh;
                c
            }
            None => shard.map.entry(Box::from(key)).or_insert(fresh),
        };
        let counted = counter.0 < max;
        if counted {
            counter.0 += 1;
        }
        Ok(Count {
            counted,
            value: counter.0,
            resets_at: counter.1,
        })
    }

    async fn decrement(&self, key: &str, now: Timestamp) -> StoreResult<()> {
        let mut shard = self.inner.counters.lock(self.hash_of(key));
        if let Some(c) = shard.map.get_mut(key).filter(|c| c.1 > now) {
            c.0 = c.0.saturating_sub(1);
        }
        Ok(())
    }

    async fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (half, rest) = split(key);
        let mut shard = self.inner.claims.lock_for_write(half.shard(), now);
        match shard.map.get(&half) {
            Some(c) if c.1 > now && c.0 == rest => Ok(false),
            _ => {
                shard.map.insert(half, Claim(rest, until));
                Ok(true)
            }
        }
    }

    async fn pending_device_grants(&self, _now: Timestamp) -> StoreResult<Option<u64>> {
        Ok(Some(self.pending_grant_count() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::UserCode;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn pending(n: u64, now: Timestamp, expires_in: u64) -> (Digest, DeviceGrant) {
        let user = UserCode::from_normalized(format!("CODE{n}"));
        let grant = DeviceGrant::new(
            ClientId::new("tv"),
            Scope::parse("profile").unwrap(),
            user.digest(),
            now,
            Duration::from_secs(expires_in),
            Duration::from_secs(5),
        );
        (Digest::of(format!("device{n}").as_bytes()), grant)
    }

    #[test]
    fn the_ceiling_refuses_then_frees_room_as_grants_expire() {
        block(async {
            let store = MemoryStore::builder().max_pending_grants(Some(3)).build();
            for n in 0..3 {
                let (d, g) = pending(n, t(1000 + n), 600);
                assert_eq!(
                    store.insert_device_grant(d, g, t(1000 + n)).await.unwrap(),
                    Insert::Inserted
                );
            }
            let (d, g) = pending(9, t(1010), 600);
            // Full: come back when the earliest (inserted at 1000, 600 s) expires.
            assert_eq!(
                store
                    .insert_device_grant(d, g.clone(), t(1010))
                    .await
                    .unwrap(),
                Insert::Full {
                    retry_after: Duration::from_secs(590)
                }
            );
            assert_eq!(store.pending_grant_count(), 3);
            // Once the first two expired, there is room again.
            assert_eq!(
                store.insert_device_grant(d, g, t(1601)).await.unwrap(),
                Insert::Inserted
            );
            assert_eq!(store.pending_grant_count(), 2);
        });
    }

    #[test]
    fn deciding_a_grant_frees_its_place() {
        block(async {
            let store = MemoryStore::builder().max_pending_grants(Some(1)).build();
            let (d, g) = pending(1, t(1000), 600);
            store
                .insert_device_grant(d, g.clone(), t(1000))
                .await
                .unwrap();
            let denied = g.decide(crate::grant::Decision::Deny, t(1001)).unwrap();
            assert!(store
                .replace_device_grant(&d, 0, denied, None, t(1001))
                .await
                .unwrap());
            assert_eq!(store.pending_grant_count(), 0);
            let (d2, g2) = pending(2, t(1002), 600);
            assert_eq!(
                store.insert_device_grant(d2, g2, t(1002)).await.unwrap(),
                Insert::Inserted
            );
        });
    }

    fn issue(n: u8, subject: &str, now: Timestamp) -> (Digest, DeviceGrant, IssuedGrant) {
        let (d, g) = pending(u64::from(n), now, 600);
        let id = GrantId::from_bytes([n; 16]);
        let access = Digest::of(&[n, 1]);
        let grant = Grant {
            id,
            client_id: ClientId::new("tv"),
            subject: Subject::new(subject),
            scope: Scope::parse("profile").unwrap(),
            audience: None,
            approved_at: now,
            last_used_at: now,
            expires_at: now.saturating_add(Duration::from_secs(100)),
            access_token: access,
            refresh_token: Some(Digest::of(&[n, 2])),
            superseded: None,
            cnf: None,
        };
        let info = TokenInfo::new(
            grant.subject.clone(),
            grant.client_id.clone(),
            grant.scope.clone(),
            now.saturating_add(Duration::from_secs(50)),
        )
        .with_grant_id(Some(id));
        (
            d,
            g,
            IssuedGrant {
                grant,
                access: info,
            },
        )
    }

    /// A grant that ends by itself leaves the subject index when the purge drops it, so a
    /// subject who signs devices in for years does not grow an index of dead ids.
    #[test]
    fn purged_grants_leave_the_subject_index() {
        block(async {
            let store = MemoryStore::builder()
                .shards(1)
                .purge_every(Duration::from_secs(1))
                .build();
            for (n, at) in [(1u8, 1000), (2, 1010)] {
                let (d, g, issued) = issue(n, "alice", t(at));
                store
                    .insert_device_grant(d, g.clone(), t(at))
                    .await
                    .unwrap();
                assert!(store
                    .replace_device_grant(&d, 0, g, Some(issued), t(at))
                    .await
                    .unwrap());
            }
            let alice = Subject::new("alice");
            assert_eq!(store.grants_of(&alice, t(1050)).await.unwrap().len(), 2);
            // Grant 1 ended at 1100; grant 2 at 1110. A redemption at 1105 purges grant 1.
            let (d, g, issued) = issue(3, "bob", t(1105));
            store
                .insert_device_grant(d, g.clone(), t(1105))
                .await
                .unwrap();
            assert!(store
                .replace_device_grant(&d, 0, g, Some(issued), t(1105))
                .await
                .unwrap());
            let index = |s: &Subject| {
                let shard = store.inner.subjects.lock(store.hash_of(s));
                shard.map.get(s).map(Ids::to_vec).unwrap_or_default()
            };
            assert_eq!(index(&alice), vec![GrantId::from_bytes([2; 16])]);
            // A rotation's purge works the same (here of an unknown grant, which swaps
            // nothing), and an emptied entry goes with its last id.
            let stray = issue(9, "carol", t(1300)).2;
            let rotation = Rotation {
                next: stray.grant,
                revoke: Digest::of(b"none"),
            };
            let unknown = GrantId::from_bytes([9; 16]);
            let swapped = store
                .replace_grant(&unknown, 0, rotation, stray.access, t(1300))
                .await
                .unwrap();
            assert!(!swapped);
            assert!(index(&alice).is_empty());
            assert!(index(&Subject::new("bob")).is_empty());
            assert_eq!(store.inner.subjects.len(), 0);
            assert_eq!(store.grant_count(), 0);
        });
    }

    #[test]
    fn subject_index_keeps_one_id_inline() {
        let a = GrantId::from_bytes([1; 16]);
        let b = GrantId::from_bytes([2; 16]);
        let mut ids = Ids::One(a);
        ids.push(b);
        assert_eq!(ids.to_vec(), vec![a, b]);
        assert!(!ids.remove(&a));
        assert!(matches!(ids, Ids::One(x) if x == b));
        assert!(ids.remove(&b));
    }
}

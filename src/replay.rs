//! One-time claims of DPoP proofs (RFC 9449 11.1): where the token endpoint and the bearer
//! layer remember which proofs they have accepted.
//!
//! Every [`Store`] is a [`ReplayCache`] through its `claim_once` primitive, so every instance
//! sharing the store refuses a proof another instance accepted: that is what
//! [`DeviceFlow`](crate::DeviceFlow) uses for its token endpoint and its bearer layers. A
//! resource server without the store uses [`MemoryReplayCache`], which protects one process
//! only: behind a load balancer, a proof replayed to another instance would be accepted there
//! (within the proof's short `iat` window); share a store, or pin clients to one instance, if
//! that matters.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::store::{Store, StoreError, StoreResult};

/// The future of [`ReplayCache::claim_once`].
pub type ClaimFuture<'a> = Pin<Box<dyn Future<Output = StoreResult<bool>> + Send + 'a>>;

/// Remembers one-time values until they expire.
pub trait ReplayCache: Send + Sync + 'static {
    /// Atomically: if `key` is not held (or its claim ended), hold it until `until` and answer
    /// `true`; otherwise answer `false` and change nothing.
    fn claim_once<'a>(
        &'a self,
        key: &'a Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> ClaimFuture<'a>;
}

impl<S: Store> ReplayCache for S {
    fn claim_once<'a>(
        &'a self,
        key: &'a Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> ClaimFuture<'a> {
        Box::pin(Store::claim_once(self, key, until, now))
    }
}

/// How many shards [`MemoryReplayCache`] spreads its claims over, so concurrent requests rarely
/// wait on one lock.
const SHARDS: usize = 16;

/// A [`ReplayCache`] in this process's memory, for a resource server that does not share the
/// authorization server's store. It holds at most `capacity` live claims; past that it refuses
/// to claim (answered 503), rather than forget a claim early and let a replay through.
pub struct MemoryReplayCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    claims: HashMap<Digest, Timestamp>,
    /// The earliest moment a sweep can free anything, so full shards are not swept in vain.
    next_sweep: Option<Timestamp>,
}

impl MemoryReplayCache {
    /// A cache holding up to `capacity` live claims (one per proof accepted within its window:
    /// requests per second times the window, roughly).
    pub fn new(capacity: usize) -> Self {
        MemoryReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The number of claims held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.claims.len()))
            .sum()
    }

    /// True if no claim is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn claim(&self, key: &Digest, until: Timestamp, now: Timestamp) -> StoreResult<bool> {
        let index = usize::from(key.as_bytes()[0]) % SHARDS;
        let mut shard = self.shards[index]
            .lock()
            .map_err(|_| StoreError::Backend("replay cache lock poisoned".into()))?;
        if let Some(held) = shard.claims.get(key) {
            if *held > now {
                return Ok(false);
            }
        }
        if shard.claims.len() >= self.per_shard && shard.next_sweep.is_none_or(|t| t <= now) {
            shard.claims.retain(|_, until| *until > now);
            shard.next_sweep = shard.claims.values().min().copied();
        }
        if shard.claims.len() >= self.per_shard && !shard.claims.contains_key(key) {
            return Err(StoreError::Unavailable(
                "the DPoP replay cache is full".into(),
            ));
        }
        shard.claims.insert(*key, until);
        Ok(true)
    }
}

impl Default for MemoryReplayCache {
    /// Room for 1 000 000 live claims (about 100 MB at most).
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl ReplayCache for MemoryReplayCache {
    fn claim_once<'a>(
        &'a self,
        key: &'a Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> ClaimFuture<'a> {
        let answer = self.claim(key, until, now);
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    fn claim(c: &MemoryReplayCache, key: &Digest, until: u64, now: u64) -> StoreResult<bool> {
        c.claim(key, at(until), at(now))
    }

    #[test]
    fn once_until_the_claim_ends() {
        let c = MemoryReplayCache::new(100);
        let k = Digest::of(b"jti");
        assert_eq!(claim(&c, &k, 160, 100), Ok(true));
        assert_eq!(claim(&c, &k, 170, 110), Ok(false));
        assert_eq!(claim(&c, &k, 170, 159), Ok(false));
        assert_eq!(claim(&c, &Digest::of(b"other"), 160, 110), Ok(true));
        // After its window the proof is refused as stale anyway; the key may be claimed again.
        assert_eq!(claim(&c, &k, 220, 160), Ok(true));
    }

    #[test]
    fn full_of_live_claims_it_refuses_rather_than_forgets() {
        let c = MemoryReplayCache::new(SHARDS);
        // Keys of one shard (first byte 0 mod SHARDS) until it is full.
        let keys: Vec<Digest> = (0u32..)
            .map(|i| Digest::of(&i.to_be_bytes()))
            .filter(|d| usize::from(d.as_bytes()[0]) % SHARDS == 0)
            .take(2)
            .collect();
        assert_eq!(claim(&c, &keys[0], 160, 100), Ok(true));
        assert!(matches!(
            claim(&c, &keys[1], 160, 100),
            Err(StoreError::Unavailable(_))
        ));
        // The held key is still refused, and once it expires there is room again.
        assert_eq!(claim(&c, &keys[0], 160, 120), Ok(false));
        assert_eq!(claim(&c, &keys[1], 220, 160), Ok(true));
        assert_eq!(c.len(), 1);
    }
}

//! A bounded in-memory cache of verification answers, and one request in flight per token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use crate::clock::Timestamp;
use crate::codes::Digest;

const SHARDS: usize = 16;

type Shard<V> = Mutex<HashMap<[u8; 32], (V, Timestamp)>>;

/// Answers keyed by token digest, each kept until its own deadline, at most `capacity` in all.
/// Sharded so concurrent requests rarely wait on one lock; a full shard evicts an arbitrary
/// entry (digests are uniformly spread, so which one is as good as random).
pub(crate) struct AnswerCache<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
}

impl<V: Clone> AnswerCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        AnswerCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, key: &Digest) -> &Shard<V> {
        &self.shards[usize::from(key.as_bytes()[0]) % SHARDS]
    }

    /// The answer for `key`, if one is kept and its deadline is after `now`.
    pub(crate) fn get(&self, key: &Digest, now: Timestamp) -> Option<V> {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get(key.as_bytes()) {
            Some((v, until)) if now < *until => Some(v.clone()),
            Some(_) => {
                shard.remove(key.as_bytes());
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `key` until `until` (nothing, if that is not after `now`).
    pub(crate) fn insert(&self, key: &Digest, value: V, until: Timestamp, now: Timestamp) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(key.as_bytes()) {
            shard.retain(|_, (_, u)| now < *u);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(*key.as_bytes(), (value, until));
    }

    /// How many answers are kept (expired ones included until they are touched).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

type Cell<V> = Arc<OnceCell<V>>;

/// One computation in flight per key, however many callers wait for it: the first caller
/// runs it, the others await its answer. If the caller running it is cancelled, a waiting one
/// takes over (the cell is not left half-done).
pub(crate) struct Singleflight<V> {
    inflight: Mutex<HashMap<[u8; 32], Cell<V>>>,
}

impl<V: Clone> Singleflight<V> {
    pub(crate) fn new() -> Self {
        Singleflight {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The answer of the one `compute` in flight for `key`, starting it if there is none.
    pub(crate) async fn run<F, Fut>(&self, key: &Digest, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(*key.as_bytes()).or_default().clone()
        };
        let leave = Leave {
            map: &self.inflight,
            key: *key.as_bytes(),
            cell: &cell,
        };
        let answer = cell.get_or_init(compute).await.clone();
        drop(leave);
        answer
    }

    /// How many keys have a computation in flight or abandoned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Removes a finished (or abandoned) cell from the in-flight map, on every exit path.
struct Leave<'a, V> {
    map: &'a Mutex<HashMap<[u8; 32], Cell<V>>>,
    key: [u8; 32],
    cell: &'a Cell<V>,
}

impl<V> Drop for Leave<'_, V> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = map
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, self.cell));
        // Done: later callers read the answer cache instead. Abandoned by its last caller (the
        // map and this caller hold the only references): nobody will finish it.
        if ours && (self.cell.initialized() || Arc::strong_count(self.cell) <= 2) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn answers_live_until_their_deadline() {
        let cache = AnswerCache::new(100);
        let k = Digest::of(b"a");
        cache.insert(&k, 1, t(10), t(0));
        assert_eq!(cache.get(&k, t(9)), Some(1));
        assert_eq!(cache.get(&k, t(10)), None);
        cache.insert(&k, 2, t(5), t(5)); // already due: not kept
        assert_eq!(cache.get(&k, t(5)), None);
        assert_eq!(AnswerCache::<u8>::new(0).get(&k, t(0)), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = AnswerCache::new(64);
        for i in 0..10_000u32 {
            cache.insert(&Digest::of(&i.to_le_bytes()), i, t(100), t(0));
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        // Expired entries go first when a shard is full.
        let cache = AnswerCache::new(SHARDS);
        for i in 0..1000u32 {
            cache.insert(&Digest::of(&i.to_le_bytes()), i, t(1), t(0));
        }
        let fresh = Digest::of(b"fresh");
        cache.insert(&fresh, 7, t(100), t(50));
        assert_eq!(cache.get(&fresh, t(60)), Some(7));
    }

    #[tokio::test]
    async fn one_computation_for_many_waiters() {
        let flight = Arc::new(Singleflight::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let key = Digest::of(b"token");
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (flight, runs, mut rx) = (flight.clone(), runs.clone(), rx.clone());
            waiters.push(tokio::spawn(async move {
                flight
                    .run(&key, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = rx.wait_for(|open| *open).await;
                        42
                    })
                    .await
            }));
        }
        // Let every waiter (on this one-thread runtime) join the flight before it may finish.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tx.send(true).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flight.len(), 0, "finished flights are forgotten");
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flight = Arc::new(Singleflight::<u32>::new());
        let key = Digest::of(b"token");
        let f = flight.clone();
        let leader = tokio::spawn(async move { f.run(&key, std::future::pending).await });
        tokio::task::yield_now().await;
        let f = flight.clone();
        let waiter = tokio::spawn(async move { f.run(&key, || async { 9 }).await });
        tokio::task::yield_now().await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), 9);
        assert_eq!(flight.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_flight_is_forgotten() {
        let flight = Arc::new(Singleflight::<u32>::new());
        let key = Digest::of(b"token");
        // The leader never finishes: it is cancelled by a timeout.
        let leader = tokio::time::timeout(
            Duration::from_millis(1),
            flight.run(&key, std::future::pending),
        );
        assert!(leader.await.is_err());
        assert_eq!(flight.len(), 0, "an abandoned flight is forgotten");
        assert_eq!(flight.run(&key, || async { 5 }).await, 5);
    }
}

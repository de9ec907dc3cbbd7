//! Memory benchmark: heap bytes per pending device grant, per grant with its access token
//! (and refresh token) in `MemoryStore`, and whether memory stays flat under a flood of
//! abandoned flows, purged as they expire or held back by the pending-grant ceiling.
//!
//! ```text
//! cargo bench --bench memory
//! BENCH_RECORDS=1000000 BENCH_FLOOD_RATE=2000 BENCH_FLOOD_SECS=1800 cargo bench --bench memory
//! BENCH_CEILING=20000 BENCH_CEILING_SECS=600 cargo bench --bench memory
//! ```
//!
//! A counting global allocator tracks the bytes requested and not yet freed; "bytes per
//! record" is the growth of that figure while `n` records are stored through the [`Store`]
//! trait, divided by `n`. Everything the records share (the client id, scope and subject
//! strings, the store's empty shards) is allocated before the baseline is taken, so the figure
//! is what one more record costs. It counts requested sizes: the system allocator's own
//! rounding and headers (8–16 bytes per allocation) come on top, which is why the allocation
//! count per record is shown too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tower_device_flow::family::Grant;
use tower_device_flow::store::{Insert, IssuedGrant};
use tower_device_flow::{
    Client, ClientId, DeviceGrant, Digest, GrantId, MemoryStore, Scope, Store, Subject, Timestamp,
    TokenInfo, Versioned,
};

/// The system allocator, counting live bytes and live allocations.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics and never affect what is returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator for `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was returned by this allocator for `layout`; the caller upholds the
        // rest of `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snapshot {
    bytes: usize,
    allocs: usize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        allocs: LIVE_ALLOCS.load(Ordering::Relaxed),
    }
}

/// Resident set size of the process, from /proc/self/statm (Linux; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split(' ').nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// Polls `f` once: `MemoryStore` futures are ready on their first poll.
fn poll_once<F: Future>(f: F) -> F::Output {
    static WAKER: OnceLock<Waker> = OnceLock::new();
    let waker = WAKER.get_or_init(|| Waker::from(Arc::new(NoopWake)));
    let mut cx = Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a MemoryStore future was not ready on its first poll"),
    }
}

/// Uniformly spread digests (splitmix64), without the heap or SHA-256.
struct Digests(u64);

impl Digests {
    fn next(&mut self) -> Digest {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_exact_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Digest::from_bytes(bytes)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000)
}

/// The strings every record shares, as the endpoints share them (cloned `Arc`s).
struct Shared {
    client_id: ClientId,
    scope: Scope,
    subject: Subject,
}

fn shared() -> Shared {
    Shared {
        client_id: ClientId::new("demo-device"),
        scope: Scope::parse("profile email").expect("valid scope"),
        subject: Subject::new("alice"),
    }
}

/// A store with the pending-grant ceiling `ceiling` (`None`: none, to measure records past the
/// default one).
fn new_store(ceiling: Option<usize>) -> MemoryStore {
    MemoryStore::builder()
        .client(Client::public("demo-device", shared().scope))
        .max_pending_grants(ceiling)
        .build()
}

struct Measured {
    label: String,
    n: usize,
    bytes: usize,
    allocs: usize,
}

impl Measured {
    fn per_record(&self) -> f64 {
        self.bytes as f64 / self.n as f64
    }
    fn allocs_per_record(&self) -> f64 {
        self.allocs as f64 / self.n as f64
    }
}

/// `n` pending device grants inserted with `insert_device_grant`; `own_scope` gives each its
/// own scope string, as when the device names `scope` in its request (parsed per request).
fn pending_grants(n: usize, own_scope: bool) -> Measured {
    let s = shared();
    let store = new_store(None);
    let mut digests = Digests(n as u64);
    let now = t0();
    let before = snapshot();
    for _ in 0..n {
        let scope = if own_scope {
            Scope::parse("profile email").expect("valid scope")
        } else {
            s.scope.clone()
        };
        let grant = DeviceGrant::new(
            s.client_id.clone(),
            scope,
            digests.next(),
            now,
            Duration::from_secs(1800),
            Duration::from_secs(5),
        );
        let inserted = poll_once(store.insert_device_grant(digests.next(), grant, now));
        assert_eq!(
            inserted.expect("insert"),
            Insert::Inserted,
            "device or user code collision"
        );
    }
    let after = snapshot();
    assert_eq!(store.device_grant_count(), n);
    Measured {
        label: format!(
            "pending device grant{}",
            if own_scope {
                ", scope parsed per request"
            } else {
                ""
            }
        ),
        n,
        bytes: after.bytes - before.bytes,
        allocs: after.allocs - before.allocs,
    }
}

/// `n` redemptions through `replace_device_grant` with an [`IssuedGrant`] on one carrier device
/// grant: each stores a grant, its access token and its subject index entry. `refresh` gives
/// each grant a refresh token (so a pair of tokens); `own_subject` gives each its own subject
/// string, as each approval by another end user does.
fn grants(n: usize, refresh: bool, own_subject: bool) -> Measured {
    let s = shared();
    let store = new_store(None);
    let mut digests = Digests(0x5eed ^ n as u64);
    let now = t0();
    let carrier = digests.next();
    let device = DeviceGrant::new(
        s.client_id.clone(),
        s.scope.clone(),
        digests.next(),
        now,
        Duration::from_secs(1800),
        Duration::from_secs(5),
    );
    assert_eq!(
        poll_once(store.insert_device_grant(carrier, device.clone(), now)).expect("insert"),
        Insert::Inserted
    );
    // Swapped once before the baseline: the carrier's replacement is the same size each time.
    assert!(
        poll_once(store.replace_device_grant(&carrier, 0, device.clone(), None, now))
            .expect("swap")
    );
    let access_expires = now.saturating_add(Duration::from_secs(3600));
    let grant_expires = if refresh {
        now.saturating_add(Duration::from_secs(30 * 24 * 3600))
    } else {
        access_expires
    };
    let before = snapshot();
    for version in 1..=n as u64 {
        let subject = if own_subject {
            Subject::new(format!("user-{version:07}"))
        } else {
            s.subject.clone()
        };
        let access = digests.next();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digests.next().as_bytes()[..16]);
        let id = GrantId::from_bytes(id);
        let grant = Grant {
            id,
            client_id: s.client_id.clone(),
            subject: subject.clone(),
            scope: s.scope.clone(),
            audience: None,
            approved_at: now,
            last_used_at: now,
            expires_at: grant_expires,
            access_token: access,
            refresh_token: refresh.then(|| digests.next()),
            superseded: None,
            cnf: None,
        };
        let info = TokenInfo::new(
            subject,
            s.client_id.clone(),
            s.scope.clone(),
            access_expires,
        )
        .with_grant_id(Some(id));
        let issue = IssuedGrant {
            grant,
            access: info,
        };
        let swapped = poll_once(store.replace_device_grant(
            &carrier,
            version,
            device.clone(),
            Some(issue),
            now,
        ));
        assert!(swapped.expect("swap"));
    }
    let after = snapshot();
    assert_eq!(store.access_token_count(), n);
    assert_eq!(store.grant_count(), n);
    Measured {
        label: format!(
            "{}{}",
            if refresh {
                "grant with access + refresh token (a pair)"
            } else {
                "grant with an access token only (no refresh)"
            },
            if own_subject {
                ", subject per approval"
            } else {
                ""
            }
        ),
        n,
        bytes: after.bytes - before.bytes,
        allocs: after.allocs - before.allocs,
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Abandoned flows: `rate` device grants per simulated second, each expiring `expires_in` after
/// it is made (and kept 600 s more, `RETENTION_AFTER_EXPIRY`), for `secs` simulated seconds,
/// with the time handed to the store moving forward, on a store with the pending-grant ceiling
/// `ceiling`. Prints live bytes once a simulated minute; returns whether they stayed flat over
/// the last third of the run.
fn flood(rate: usize, expires_in: u64, secs: u64, ceiling: Option<usize>) -> bool {
    let s = shared();
    let store = new_store(ceiling);
    let mut digests = Digests(0xf100d);
    let start = t0();
    let before = snapshot();
    let step_ms = 1000.0 / rate as f64;
    let mut samples: Vec<(u64, usize, usize, usize, usize, usize)> = Vec::new();
    let began = Instant::now();
    let (mut inserted, mut refused) = (0usize, 0usize);
    for sec in 0..secs {
        for k in 0..rate {
            let now = Timestamp::from_unix_millis(
                start.as_unix_millis() + sec * 1000 + (k as f64 * step_ms) as u64,
            );
            let grant = DeviceGrant::new(
                s.client_id.clone(),
                s.scope.clone(),
                digests.next(),
                now,
                Duration::from_secs(expires_in),
                Duration::from_secs(5),
            );
            match poll_once(store.insert_device_grant(digests.next(), grant, now)).expect("insert")
            {
                Insert::Inserted => inserted += 1,
                Insert::Full { .. } => refused += 1,
                Insert::Taken => panic!("device or user code collision"),
            }
        }
        if (sec + 1) % 60 == 0 {
            let live = snapshot().bytes - before.bytes;
            samples.push((
                sec + 1,
                inserted,
                refused,
                store.device_grant_count(),
                live,
                rss_bytes(),
            ));
        }
    }
    println!();
    println!(
        "Flood of abandoned flows: {rate} new device grants per simulated second, `expires_in` \
         {expires_in} s (kept {} s in all), {secs} simulated seconds, pending ceiling {}, \
         default `purge_every` (30 s): {inserted} inserted, {refused} refused (`Insert::Full`, \
         503), {:.1} s of real time:",
        expires_in + 600,
        ceiling.map_or("none".to_owned(), |c| c.to_string()),
        began.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| simulated time (s) | inserted | refused | device grants held | live heap (MiB) | \
         process RSS (MiB) | heap if all were kept (MiB, est.) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let per_grant = samples
        .iter()
        .rev()
        .find(|(_, ins, _, held, ..)| ins == held)
        .map_or(0.0, |(_, _, _, held, live, _)| *live as f64 / *held as f64);
    for (t, ins, refused, held, live, rss) in &samples {
        println!(
            "| {t} | {ins} | {refused} | {held} | {:.1} | {:.1} | {:.1} |",
            mib(*live),
            mib(*rss),
            (*ins + *refused) as f64 * per_grant / (1024.0 * 1024.0)
        );
    }
    // Flat: over the last third of the run, live bytes move by less than 10 %.
    let tail: Vec<usize> = samples
        .iter()
        .filter(|(t, ..)| *t * 3 >= secs * 2)
        .map(|s| s.4)
        .collect();
    let (lo, hi) = (
        tail.iter().copied().min().unwrap_or(0),
        tail.iter().copied().max().unwrap_or(0),
    );
    let flat = lo > 0 && (hi as f64) <= lo as f64 * 1.10;
    println!();
    println!(
        "Last third of the run: live heap between {:.1} and {:.1} MiB ({:+.1} %): {}.",
        mib(lo),
        mib(hi),
        if lo > 0 {
            (hi as f64 / lo as f64 - 1.0) * 100.0
        } else {
            0.0
        },
        if flat { "flat" } else { "**still growing**" }
    );
    flat
}

fn main() {
    let n: usize = env_or("BENCH_RECORDS", 1_000_000);
    let below: usize = env_or("BENCH_RECORDS_BELOW_GROWTH", 850_000);
    let rate: usize = env_or("BENCH_FLOOD_RATE", 2_000);
    let flood_secs: u64 = env_or("BENCH_FLOOD_SECS", 1_800);
    let flood_expires: u64 = env_or("BENCH_FLOOD_EXPIRES_IN", 10);
    let ceiling: usize = env_or("BENCH_CEILING", 20_000);
    let ceiling_secs: u64 = env_or("BENCH_CEILING_SECS", 600);

    println!("# memory");
    println!();
    println!(
        "Record sizes (stack part, bytes): Digest {}, DeviceGrant {}, Versioned<DeviceGrant> {}, \
         Grant {}, TokenInfo {}.",
        std::mem::size_of::<Digest>(),
        std::mem::size_of::<DeviceGrant>(),
        std::mem::size_of::<Versioned<DeviceGrant>>(),
        std::mem::size_of::<Grant>(),
        std::mem::size_of::<TokenInfo>(),
    );

    // First, while the process heap is still small, so that its RSS column means something.
    // Short-lived abandoned flows, no ceiling: the purge alone keeps memory flat.
    let purged = flood(rate, flood_expires, flood_secs, None);
    // Abandoned flows that stay pending for the whole run: only the ceiling bounds them.
    let bounded = flood(rate, 1800, ceiling_secs, Some(ceiling));

    let mut rows = Vec::new();
    let started = Instant::now();
    rows.push(pending_grants(n, false));
    rows.push(pending_grants(n, true));
    rows.push(pending_grants(below, false));
    rows.push(grants(n, true, false));
    rows.push(grants(n, true, true));
    rows.push(grants(n, false, false));
    rows.push(grants(n, false, true));
    rows.push(grants(below, true, false));
    rows.push(grants(below, false, false));

    println!();
    println!(
        "| records | n | live heap bytes / record | per token | live allocations / record | \
         target | met |"
    );
    println!("|---|---:|---:|---:|---:|---:|:---:|");
    for m in &rows {
        let pair = m.label.contains("a pair");
        let (per, per_token, target, target_text) = if m.label.starts_with("pending") {
            let per = m.per_record();
            (per, "–".to_owned(), 320.0, "320 per grant".to_owned())
        } else if pair {
            // Two tokens: the target is per token.
            let per = m.per_record();
            (
                per,
                format!("{:.1}", per / 2.0),
                512.0,
                "256 per token".to_owned(),
            )
        } else {
            // An access token is stored only with its grant: this is what one costs, with no
            // target of its own (the per-token target is for a grant's pair).
            let per = m.per_record();
            (per, format!("{per:.1}"), f64::INFINITY, "–".to_owned())
        };
        let met = if m.n != n || target.is_infinite() {
            "–"
        } else if per <= target {
            "yes"
        } else {
            "**no**"
        };
        println!(
            "| {} | {} | {:.1} | {} | {:.2} | {} | {} |",
            m.label,
            m.n,
            per,
            per_token,
            m.allocs_per_record(),
            target_text,
            met
        );
    }
    println!();
    println!(
        "Floods flat: purge {}, ceiling {}. (measured in {:.1} s)",
        if purged { "yes" } else { "**no**" },
        if bounded { "yes" } else { "**no**" },
        started.elapsed().as_secs_f64()
    );
}

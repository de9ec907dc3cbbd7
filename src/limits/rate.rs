//! Per-source rate limits in this process: GCRA (a token bucket without a timer) from the
//! `governor` crate, keyed by source address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::settings::RateLimit;
use crate::clock::Clock;

/// The crate's clock as `governor` reads it, so a [`ManualClock`](crate::ManualClock) drives
/// the limits in tests: time since the Unix epoch (saturating, so a clock stepped back only
/// makes the limiter stricter for a moment).
#[derive(Clone)]
pub(crate) struct FlowClock(pub(crate) Arc<dyn Clock>);

impl governor::clock::Clock for FlowClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now().as_unix_millis())
    }
}

type Keyed = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, FlowClock, NoOpMiddleware<Duration>>;

/// How often (in checks) the table's size is looked at.
const SIZE_CHECK_EVERY: u64 = 1024;

/// One per-source limit: a burst, then a sustained rate, per source address.
pub(crate) struct SourceRate {
    quota: Quota,
    clock: FlowClock,
    max_sources: usize,
    checks: AtomicU64,
    // Replaced whole when a flood from more sources than `max_sources` fills it: the memory
    // stays bounded, at the price of every source starting again with a full burst.
    table: RwLock<Keyed>,
}

impl SourceRate {
    pub(crate) fn new(limit: RateLimit, clock: FlowClock, max_sources: usize) -> Option<Self> {
        let burst = NonZeroU32::new(limit.burst)?;
        let quota = Quota::with_period(limit.per)?.allow_burst(burst);
        Some(SourceRate {
            quota,
            table: RwLock::new(RateLimiter::dashmap_with_clock(quota, clock.clone())),
            clock,
            max_sources: max_sources.max(1),
            checks: AtomicU64::new(0),
        })
    }

    /// Counts one request from `source`: `Err(wait)` if it is over the limit, with how long
    /// until one more would be allowed.
    pub(crate) fn check(&self, source: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SIZE_CHECK_EVERY == 0 {
            self.bound_size();
        }
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        match table.check_key(&source) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::Clock as _;
                Err(not_until.wait_time_from(self.clock.now()))
            }
        }
    }

    /// Forgets sources whose bucket is full again; if the table is still too big, starts a
    /// new one.
    fn bound_size(&self) {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if table.len() <= self.max_sources {
            return;
        }
        table.retain_recent();
        if table.len() <= self.max_sources {
            table.shrink_to_fit();
            return;
        }
        drop(table);
        tracing::warn!(
            max_sources = self.max_sources,
            "more sources than the rate limiter tracks: its table starts over"
        );
        *self.table.write().unwrap_or_else(PoisonError::into_inner) =
            RateLimiter::dashmap_with_clock(self.quota, self.clock.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Timestamp};

    fn limiter(burst: u32, per_secs: u64, max: usize) -> (SourceRate, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_700_000_000_000));
        let limit = RateLimit {
            burst,
            per: Duration::from_secs(per_secs),
        };
        let rate = SourceRate::new(limit, FlowClock(Arc::new(clock.clone())), max).unwrap();
        (rate, clock)
    }

    #[test]
    fn burst_then_sustained_rate_per_source() {
        let (rate, clock) = limiter(3, 2, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(rate.check(a).is_ok());
        }
        let wait = rate.check(a).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        // Another source is untouched.
        assert!(rate.check(b).is_ok());
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(rate.check(a).unwrap_err(), Duration::from_millis(500));
        clock.advance(Duration::from_millis(500));
        assert!(rate.check(a).is_ok());
        assert!(rate.check(a).is_err());
        // A full refill gives the whole burst back.
        clock.advance(Duration::from_secs(6));
        for _ in 0..3 {
            assert!(rate.check(a).is_ok());
        }
    }

    #[test]
    fn zero_burst_means_no_limit_configured() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let none = RateLimit {
            burst: 0,
            per: Duration::from_secs(1),
        };
        assert!(SourceRate::new(none, FlowClock(clock), 10).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let (rate, clock) = limiter(1, 1, 100);
        for i in 0..5_000u32 {
            let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let _ = rate.check(ip);
        }
        assert!(
            rate.len() <= 100 + SIZE_CHECK_EVERY as usize,
            "{}",
            rate.len()
        );
        // Once the buckets refill, the sources are forgotten.
        clock.advance(Duration::from_secs(5));
        for _ in 0..SIZE_CHECK_EVERY {
            let _ = rate.check("192.0.2.9".parse().unwrap());
        }
        assert!(rate.len() <= 100, "{}", rate.len());
    }
}

//! Limits that slow floods and guessing down without locking legitimate users out.
//!
//! Two kinds, for two jobs:
//!
//! - **Rate limits per source** ([`RateLimit`]): a burst, then a sustained rate, per client
//!   address (see [`client_addr`](crate::client_addr)), at the device authorization endpoint,
//!   the token endpoint and the verification page's POST. They are kept in this process (GCRA
//!   from the `governor` crate): they only make one address's flood cheap to refuse, so `N`
//!   instances letting an address through `N` times as fast is harmless, and nothing about
//!   them needs a round trip to the store.
//! - **Budgets** ([`AttemptLimit`]) on what must hold however many instances serve: wrong user
//!   codes ([`GuessingLimits`]) and failed sign-ins and client secrets
//!   ([`FailedAuthLimits`]). They live in the store, and every attempt *reserves* its place
//!   (one atomic increment-if-below-max) before the code is looked up or the secret checked,
//!   then gives it back if it turns out right: no burst of concurrent requests gets more
//!   attempts than the budget, on any store.
//!
//! None of them is a lockout that one party can spend for everyone: each counts a source, an
//! end user, or an (account, source) pair. What protects memory from a botnet is the store's
//! ceiling on pending grants (for `MemoryStore`, `max_pending_grants`).

mod budget;
mod rate;
mod settings;

pub use settings::{AttemptLimit, FailedAuthLimits, GuessingLimits, Limits, RateLimit};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use http::{Extensions, StatusCode};

pub(crate) use budget::{reserve_attempt, reserve_guess, AuthKind};

use crate::client_addr::{ClientAddrs, Resolved};
use crate::clock::{Clock, Timestamp};
use crate::error::{ErrorCode, OAuthError};
use crate::observe::Limit;
use crate::observer::Observer;
use rate::{FlowClock, SourceRate};

/// Which per-source rate limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    DeviceAuthorization,
    Token,
    Verification,
}

/// The limits at run time: the configuration, the rate limiters' tables and the clock.
pub(crate) struct Limiter {
    pub(crate) limits: Limits,
    clients: ClientAddrs,
    clock: Arc<dyn Clock>,
    /// Where refusals are reported (the flow's observer).
    pub(crate) observer: Observer,
    device_authorization: Option<SourceRate>,
    token: Option<SourceRate>,
    verification: Option<SourceRate>,
}

impl Limiter {
    pub(crate) fn new(
        limits: Limits,
        clients: ClientAddrs,
        clock: Arc<dyn Clock>,
        observer: Observer,
    ) -> Self {
        let rate = |l: Option<RateLimit>| {
            l.and_then(|l| SourceRate::new(l, FlowClock(clock.clone()), limits.max_tracked_sources))
        };
        Limiter {
            device_authorization: rate(limits.device_authorization),
            token: rate(limits.token),
            verification: rate(limits.verification),
            limits,
            clients,
            clock,
            observer,
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Where the request comes from. Without a [`ClientAddr`](crate::client_addr::ClientAddr)
    /// in its extensions the per-source limits cannot apply: said once in the log.
    pub(crate) fn resolve(&self, extensions: &Extensions, headers: &HeaderMap) -> Resolved {
        let resolved = self.clients.resolve(extensions, headers);
        if resolved.source.is_none() {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                tracing::warn!(
                    "a request without a ClientAddr extension: per-source limits do not apply \
                     (insert the peer address in the server loop; see client_addr)"
                )
            });
        }
        resolved
    }

    /// Counts a request against its route's per-source rate limit (a refusal is reported).
    pub(crate) fn check_rate(&self, route: Route, source: Option<IpAddr>) -> Result<(), Duration> {
        let (limiter, limit) = match route {
            Route::DeviceAuthorization => {
                (&self.device_authorization, Limit::DeviceAuthorizationRate)
            }
            Route::Token => (&self.token, Limit::TokenRate),
            Route::Verification => (&self.verification, Limit::VerificationRate),
        };
        match (limiter, source) {
            (Some(l), Some(ip)) => l.check(ip).inspect_err(|_| {
                tracing::info!(?route, source = %ip, "per-source rate limit reached");
                self.observer
                    .limit_hit(limit, self.clock.now(), source, None, None);
            }),
            _ => Ok(()),
        }
    }

    /// Reports a refusal by a budget kept in the store (they are checked outside the limiter).
    pub(crate) fn refused(
        &self,
        limit: Limit,
        source: Option<IpAddr>,
        client_id: Option<&crate::ids::ClientId>,
        subject: Option<&crate::ids::Subject>,
    ) {
        self.observer
            .limit_hit(limit, self.clock.now(), source, client_id, subject);
    }
}

/// Whole seconds to wait, rounded up (a client told to come back a second early is only
/// refused again), at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Seconds from `now` until `until`, rounded up, at least 1.
pub(crate) fn retry_after_until(until: Timestamp, now: Timestamp) -> u64 {
    retry_after_secs(until.saturating_duration_since(now))
}

/// A 429 refusal with `code`, `description` and the truth about when to come back.
pub(crate) fn too_many(code: ErrorCode, description: &'static str, retry_after: u64) -> OAuthError {
    OAuthError::new(code, description)
        .with_status(StatusCode::TOO_MANY_REQUESTS)
        .with_retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(1_800)), 1_800);
        let t = Timestamp::from_unix_millis(10_000);
        assert_eq!(retry_after_until(t, Timestamp::from_unix_millis(8_500)), 2);
        assert_eq!(retry_after_until(t, Timestamp::from_unix_millis(20_000)), 1);
    }

    #[test]
    fn per_second_rates() {
        assert_eq!(RateLimit::per_second(5, 50).per, Duration::from_millis(20));
        assert_eq!(RateLimit::per_second(5, 0).per, Duration::from_secs(1));
    }
}

//! Recording the metrics: one function per event, for the services to call. With the feature
//! `metrics` off they are empty and vanish; with it on, every key is a `static` (labels are
//! fixed sets), so recording allocates nothing and costs one lookup in the installed recorder
//! (the facade's no-op recorder when none is).

use std::time::Duration;

use super::metric::{Endpoint, StoreOperation};
use crate::error::ErrorCode;

/// How a request was answered, for the counters by outcome (polls, refreshes, bearer checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Tokens (a poll), a rotation (a refresh), or a token let through (the bearer layer).
    Ok,
    /// A refresh retried within its grace period.
    Retried,
    /// No token presented (the bearer layer).
    Missing,
    /// An OAuth error code.
    Error(ErrorCode),
}

impl Answer {
    pub(crate) fn of<T, E>(result: &Result<T, E>, code: impl Fn(&E) -> ErrorCode) -> Self {
        match result {
            Ok(_) => Answer::Ok,
            Err(e) => Answer::Error(code(e)),
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::time::Duration;

    use metrics::{Key, Label, Level, Metadata};

    use super::Answer;
    use crate::error::ErrorCode;
    use crate::observe::audit::{Limit, RevocationReason};
    use crate::observe::metric::{self, Endpoint, StoreOperation};

    static META: Metadata<'static> =
        Metadata::new("tower_device_flow", Level::INFO, Some(module_path!()));

    /// A `static` key of `metric` without labels.
    macro_rules! plain {
        ($metric:expr) => {{
            static KEY: Key = Key::from_static_name($metric);
            &KEY
        }};
    }

    /// A `static` key of `metric` with fixed labels.
    macro_rules! labelled {
        ($metric:expr, $($k:literal => $v:expr),+) => {{
            static LABELS: [Label; [$($k),+].len()] = [$(Label::from_static_parts($k, $v)),+];
            static KEY: Key = Key::from_static_parts($metric, &LABELS);
            &KEY
        }};
    }

    /// The key of a single-label metric for each variant of a label enum.
    macro_rules! by {
        ($value:expr, $metric:expr, $label:literal, $ty:ident: $($variant:ident),+) => {
            match $value {
                $($ty::$variant => labelled!($metric, $label => $ty::$variant.as_str())),+
            }
        };
    }

    /// `{outcome="refused", error=code}` of `metric`, one static key per error code.
    macro_rules! refused {
        ($code:expr, $metric:expr) => {
            refused!(@ $code, $metric, InvalidRequest, InvalidClient, InvalidGrant,
                UnauthorizedClient, UnsupportedGrantType, InvalidScope, AuthorizationPending,
                SlowDown, AccessDenied, ExpiredToken, UnsupportedTokenType, InvalidToken,
                InsufficientScope, InvalidTarget, InvalidDpopProof, UseDpopNonce, ServerError,
                TemporarilyUnavailable)
        };
        (@ $code:expr, $metric:expr, $($variant:ident),+) => {
            match $code {
                $(ErrorCode::$variant => labelled!(
                    $metric, "outcome" => "refused", "error" => ErrorCode::$variant.as_str()
                )),+
            }
        };
    }

    fn count(key: &'static Key, n: u64) {
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
    }

    fn observe(key: &'static Key, d: Duration) {
        metrics::with_recorder(|r| r.register_histogram(key, &META).record(d.as_secs_f64()));
    }

    pub(crate) fn grant_created() {
        count(plain!(metric::GRANTS_CREATED), 1);
    }
    pub(crate) fn grant_approved() {
        count(plain!(metric::GRANTS_APPROVED), 1);
    }
    pub(crate) fn grant_denied() {
        count(plain!(metric::GRANTS_DENIED), 1);
    }
    pub(crate) fn grant_redeemed() {
        count(plain!(metric::GRANTS_REDEEMED), 1);
    }
    pub(crate) fn reuse_detected() {
        count(plain!(metric::REFRESH_TOKEN_REUSE), 1);
    }
    pub(crate) fn wrong_user_code() {
        count(plain!(metric::WRONG_USER_CODES), 1);
    }

    pub(crate) fn poll(answer: Answer) {
        let key = match answer {
            Answer::Ok => labelled!(metric::POLLS, "outcome" => "issued"),
            Answer::Error(ErrorCode::AuthorizationPending) => {
                labelled!(metric::POLLS, "outcome" => "pending")
            }
            Answer::Error(ErrorCode::SlowDown) => {
                labelled!(metric::POLLS, "outcome" => "slow_down")
            }
            Answer::Error(code) => {
                if code == ErrorCode::ExpiredToken {
                    count(plain!(metric::GRANTS_EXPIRED), 1);
                }
                refused!(code, metric::POLLS)
            }
            Answer::Retried | Answer::Missing => return,
        };
        count(key, 1);
    }

    pub(crate) fn refresh(answer: Answer) {
        let key = match answer {
            Answer::Ok => labelled!(metric::REFRESHES, "outcome" => "rotated"),
            Answer::Retried => labelled!(metric::REFRESHES, "outcome" => "retried"),
            Answer::Error(code) => refused!(code, metric::REFRESHES),
            Answer::Missing => return,
        };
        count(key, 1);
    }

    pub(crate) fn bearer(answer: Answer) {
        let key = match answer {
            Answer::Ok => labelled!(metric::BEARER_CHECKS, "outcome" => "allowed"),
            Answer::Missing => labelled!(metric::BEARER_CHECKS, "outcome" => "missing"),
            Answer::Error(code) => refused!(code, metric::BEARER_CHECKS),
            Answer::Retried => return,
        };
        count(key, 1);
    }

    pub(crate) fn revoked(reason: RevocationReason, n: u64) {
        if n == 0 {
            return;
        }
        let key = by!(reason, metric::REVOCATIONS, "reason", RevocationReason:
            AccessToken, RefreshToken, EndUser, Account, Reuse);
        count(key, n);
    }

    pub(crate) fn limit_refused(limit: Limit) {
        let key = by!(limit, metric::LIMIT_REFUSALS, "limit", Limit:
            DeviceAuthorizationRate, TokenRate, VerificationRate, UserCodeGuessing,
            EndUserSignIn, ClientSecret, GrantsPerClient, GrantsOverall, PendingGrants);
        count(key, 1);
    }

    pub(crate) fn request(endpoint: Endpoint, d: Duration) {
        let key = by!(endpoint, metric::REQUEST_DURATION, "endpoint", Endpoint:
            DeviceAuthorization, Token, Verification, Revocation, Introspection,
            ConnectedDevices);
        observe(key, d);
    }

    fn store_key(op: StoreOperation, errors: bool) -> &'static Key {
        macro_rules! ops {
            ($metric:expr) => {
                by!(op, $metric, "operation", StoreOperation: Client, KnownScopes, InsertDeviceGrant,
                    DeviceGrant, DeviceGrantByUserCode, ReplaceDeviceGrant, Grant,
                    ReplaceGrant, RevokeGrant, GrantsOf, RevokeGrantsOf, AccessToken,
                    RevokeAccessToken, TryIncrement, Decrement, ClaimOnce,
                    PendingDeviceGrants)
            };
        }
        if errors {
            ops!(metric::STORE_ERRORS)
        } else {
            ops!(metric::STORE_CALL_DURATION)
        }
    }

    pub(crate) fn store_call(op: StoreOperation, d: Duration, failed: bool) {
        observe(store_key(op, false), d);
        if failed {
            count(store_key(op, true), 1);
        }
    }

    pub(crate) fn pending_grants(n: u64) {
        // Precise below 2^53, which no store holds.
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        metrics::with_recorder(|r| {
            r.register_gauge(plain!(metric::PENDING_GRANTS), &META)
                .set(n)
        });
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
mod off {
    use super::*;
    use crate::observe::audit::{Limit, RevocationReason};

    #[inline(always)]
    pub(crate) fn grant_created() {}
    #[inline(always)]
    pub(crate) fn grant_approved() {}
    #[inline(always)]
    pub(crate) fn grant_denied() {}
    #[inline(always)]
    pub(crate) fn grant_redeemed() {}
    #[inline(always)]
    pub(crate) fn reuse_detected() {}
    #[inline(always)]
    pub(crate) fn wrong_user_code() {}
    #[inline(always)]
    pub(crate) fn poll(_: Answer) {}
    #[inline(always)]
    pub(crate) fn refresh(_: Answer) {}
    #[inline(always)]
    pub(crate) fn bearer(_: Answer) {}
    #[inline(always)]
    pub(crate) fn revoked(_: RevocationReason, _: u64) {}
    #[inline(always)]
    pub(crate) fn limit_refused(_: Limit) {}
    #[inline(always)]
    pub(crate) fn request(_: Endpoint, _: Duration) {}
    #[inline(always)]
    pub(crate) fn store_call(_: StoreOperation, _: Duration, _: bool) {}
    #[inline(always)]
    pub(crate) fn pending_grants(_: u64) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// Measures one request or call: the time since [`start`](Timer::start), read only with the
/// feature `metrics` on (without it, no clock is read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    start: std::time::Instant,
}

impl Timer {
    #[inline]
    pub(crate) fn start() -> Self {
        Timer {
            #[cfg(feature = "metrics")]
            start: std::time::Instant::now(),
        }
    }

    /// Records the request's duration at `endpoint`.
    #[inline]
    pub(crate) fn request(self, endpoint: Endpoint) {
        request(endpoint, self.elapsed());
    }

    #[inline]
    fn elapsed(self) -> Duration {
        #[cfg(feature = "metrics")]
        return self.start.elapsed();
        #[cfg(not(feature = "metrics"))]
        Duration::ZERO
    }
}

pin_project_lite::pin_project! {
    /// A store call's future, recording its duration (and failure) when it completes.
    pub(crate) struct Timed<F> {
        #[pin]
        future: F,
        op: StoreOperation,
        timer: Option<Timer>,
    }
}

/// Times the store call `future` as operation `op`.
#[inline]
pub(crate) fn timed<F>(op: StoreOperation, future: F) -> Timed<F> {
    Timed {
        future,
        op,
        timer: None,
    }
}

impl<F, T, E> std::future::Future for Timed<F>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        // Started at the first poll: the call runs from then on.
        let timer = *this.timer.get_or_insert_with(Timer::start);
        let out = std::task::ready!(this.future.poll(cx));
        store_call(*this.op, timer.elapsed(), out.is_err());
        std::task::Poll::Ready(out)
    }
}

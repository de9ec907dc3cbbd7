//! The limits' settings, as the builder takes them.

use std::time::Duration;

/// A budget of failed attempts: at most `max` failures per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptLimit {
    /// Failures allowed in one window.
    pub max: u64,
    /// The window, counted from the first failure.
    pub window: Duration,
}

/// A rate limit per source: `burst` requests at once, then one more every `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed at once (a burst of 0 turns the limit off).
    pub burst: u32,
    /// The sustained rate: one request per this much time.
    pub per: Duration,
}

impl RateLimit {
    /// `burst` at once, then `per_second` a second.
    pub fn per_second(burst: u32, per_second: u32) -> Self {
        RateLimit {
            burst,
            per: Duration::from_secs(1) / per_second.max(1),
        }
    }
}

/// The guessing limits of the verification page (RFC 8628 5.1): how many wrong user codes an
/// end user, and a source address, may enter.
///
/// An end user with no wrong code in their window is always looked up: no one else can spend
/// their budget. Every wrong code counts against the end user, the source address and an
/// overall tally; an end user who has already entered a wrong code needs room in both their
/// own budget and their address's. While the overall tally is past `under_attack`'s threshold,
/// those who already failed get `tightened_to` attempts instead: a flood of guesses slows the
/// guessers down, never the end user typing the right code for the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessingLimits {
    /// Wrong codes per end user (default 5 per 15 minutes).
    pub per_user: AttemptLimit,
    /// Wrong codes per source address, enforced on end users who already failed (default 20
    /// per 15 minutes; `None` for no per-source budget).
    pub per_source: Option<AttemptLimit>,
    /// Wrong codes overall past which budgets tighten (default 1 000 per 15 minutes).
    pub under_attack: Option<AttemptLimit>,
    /// The budget of a user or address that already failed, while under attack (default 2:
    /// one more try after a typo).
    pub tightened_to: u64,
}

impl Default for GuessingLimits {
    fn default() -> Self {
        let window = Duration::from_secs(15 * 60);
        GuessingLimits {
            per_user: AttemptLimit { max: 5, window },
            per_source: Some(AttemptLimit { max: 20, window }),
            under_attack: Some(AttemptLimit { max: 1_000, window }),
            tightened_to: 2,
        }
    }
}

/// Limits on failed authentications: end users' passwords (an [`EndUserResolver`] that says
/// which account a request tried, as [`BasicLogin`] does) and client secrets at every
/// endpoint. Once a budget is spent the answer is 429 with `Retry-After`, before the secret is
/// checked.
///
/// Counted per (account, source) and per source, never per account alone, so nobody can lock
/// an account out from elsewhere.
///
/// [`EndUserResolver`]: crate::verification::EndUserResolver
/// [`BasicLogin`]: crate::verification::BasicLogin
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedAuthLimits {
    /// Failures per account from one source (default 10 per 15 minutes).
    pub per_account_and_source: AttemptLimit,
    /// Failures per source, whatever the account (default 50 per 15 minutes; `None` for none).
    pub per_source: Option<AttemptLimit>,
}

impl Default for FailedAuthLimits {
    fn default() -> Self {
        let window = Duration::from_secs(15 * 60);
        FailedAuthLimits {
            per_account_and_source: AttemptLimit { max: 10, window },
            per_source: Some(AttemptLimit { max: 50, window }),
        }
    }
}

/// Every limit of the flow, set with
/// [`DeviceFlowBuilder::limits`](crate::DeviceFlowBuilder::limits).
///
/// ```
/// use tower_device_flow::limits::{Limits, RateLimit};
///
/// let limits = Limits {
///     device_authorization: Some(RateLimit::per_second(10, 1)),
///     ..Limits::default()
/// };
/// assert!(Limits::default().without_per_source().token.is_none());
/// # let _ = limits;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Device authorization requests per source (default: a burst of 200, then 5 a second:
    /// a room of TVs set up at once behind one address is never refused, and one address
    /// can hold at most about 9 000 of the store's 250 000 pending grants in the default 30
    /// minutes).
    pub device_authorization: Option<RateLimit>,
    /// Token requests per source (default: a burst of 200, then 50 a second: polls at the
    /// `interval` of hundreds of devices behind one address).
    pub token: Option<RateLimit>,
    /// Verification page POSTs per source (default: a burst of 200, then 10 a second).
    pub verification: Option<RateLimit>,
    /// Wrong user codes on the verification page.
    pub guessing: GuessingLimits,
    /// Failed sign-ins and client secrets.
    pub failed_auth: FailedAuthLimits,
    /// The most sources each rate limit tracks at once (default 100 000, a few MB); past
    /// that, sources whose bucket is full are forgotten, and if that is not enough the table
    /// starts over.
    pub max_tracked_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            device_authorization: Some(RateLimit::per_second(200, 5)),
            token: Some(RateLimit::per_second(200, 50)),
            verification: Some(RateLimit::per_second(200, 10)),
            guessing: GuessingLimits::default(),
            failed_auth: FailedAuthLimits::default(),
            max_tracked_sources: 100_000,
        }
    }
}

impl Limits {
    /// The limits without any per-source one (rate limits, the per-source guessing budget,
    /// the per-source failure budget), for load tests that send everything from one address.
    /// The per-user and per-(account, source) budgets stay.
    pub fn without_per_source(mut self) -> Self {
        self.device_authorization = None;
        self.token = None;
        self.verification = None;
        self.guessing.per_source = None;
        self.failed_auth.per_source = None;
        self
    }
}

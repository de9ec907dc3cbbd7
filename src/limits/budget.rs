//! Budgets kept in the store: each attempt reserves its place before the secret or code is
//! checked (one atomic increment-if-below-max per budget), and gives it back if it was right.

use std::net::IpAddr;

use super::settings::{AttemptLimit, FailedAuthLimits, GuessingLimits};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::store::{Store, StoreResult, Subject};

/// A budget was spent: when the earliest one that refused starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spent {
    pub(crate) until: Timestamp,
}

/// Places taken in some budgets, to keep (a failure) or give back (a success).
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Reservation {
    taken: Vec<String>,
    /// For guesses: counted once the guess turns out wrong (never a gate for it).
    on_failure: Vec<(String, AttemptLimit)>,
}

impl Reservation {
    /// The attempt succeeded: the places are given back.
    pub(crate) async fn succeeded<S: Store>(self, store: &S, now: Timestamp) -> StoreResult<()> {
        let mut result = Ok(());
        for key in &self.taken {
            if let Err(e) = store.decrement(key, now).await {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// After a store failure: gives the places back, best effort (the failure the store
    /// already reported is the one to answer with).
    pub(crate) async fn give_back_quietly<S: Store>(&mut self, store: &S, now: Timestamp) {
        for key in self.taken.drain(..) {
            if let Err(e) = store.decrement(&key, now).await {
                tracing::warn!(error = %e, "could not give back a reserved attempt");
            }
        }
    }

    /// The attempt failed: the places stay taken, and the tallies that only count failures
    /// count it.
    pub(crate) async fn failed<S: Store>(self, store: &S, now: Timestamp) -> StoreResult<()> {
        for (key, limit) in &self.on_failure {
            store
                .try_increment(key, u64::MAX, limit.window, now)
                .await?;
        }
        Ok(())
    }
}

/// Takes a place in each budget in turn; if one is spent, gives back the places already taken.
async fn take<S: Store>(
    store: &S,
    budgets: &[(String, u64, AttemptLimit)],
    now: Timestamp,
    reservation: &mut Reservation,
) -> StoreResult<Result<(), Spent>> {
    for (key, max, limit) in budgets {
        let count = match store.try_increment(key, *max, limit.window, now).await {
            Ok(count) => count,
            Err(e) => {
                // An outage must not leave places taken: give them back, best effort, this
                // one too (its reply may be what was lost).
                reservation.taken.push(key.clone());
                reservation.give_back_quietly(store, now).await;
                return Err(e);
            }
        };
        if !count.counted {
            for key in reservation.taken.drain(..) {
                store.decrement(&key, now).await?;
            }
            return Ok(Err(Spent {
                until: count.resets_at,
            }));
        }
        reservation.taken.push(key.clone());
    }
    Ok(Ok(()))
}

/// What failed to authenticate: an end user's password or a client's secret. Their budgets
/// are apart, so neither can spend the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthKind {
    EndUser,
    Client,
}

impl AuthKind {
    fn prefix(self) -> &'static str {
        match self {
            AuthKind::EndUser => "login-failures",
            AuthKind::Client => "secret-failures",
        }
    }
}

/// Reserves an authentication attempt for `account` from `source`: a place in the source's
/// budget, then in the (account, source) budget. Without a known source neither applies: all
/// unknown sources would be one, and a budget for it would let anyone lock the account out
/// (the services log once that requests arrive without a client address).
pub(crate) async fn reserve_attempt<S: Store>(
    store: &S,
    limits: &FailedAuthLimits,
    kind: AuthKind,
    account: &str,
    source: Option<IpAddr>,
    now: Timestamp,
) -> StoreResult<Result<Reservation, Spent>> {
    let Some(source) = source else {
        return Ok(Ok(Reservation::default()));
    };
    let prefix = kind.prefix();
    let mut budgets = Vec::with_capacity(2);
    if let Some(limit) = limits.per_source {
        budgets.push((format!("{prefix}:source:{source}"), limit.max, limit));
    }
    // The account name is the client's to choose: keep the key short.
    let account = &Digest::of(account.as_bytes()).to_hex()[..32];
    let limit = limits.per_account_and_source;
    budgets.push((
        format!("{prefix}:account:{account}:{source}"),
        limit.max,
        limit,
    ));
    let mut reservation = Reservation::default();
    Ok(take(store, &budgets, now, &mut reservation)
        .await?
        .map(|()| reservation))
}

const OVERALL_KEY: &str = "user-code-failures:*";

/// Reserves a user-code lookup for `user` from `source` under the [`GuessingLimits`] rules.
pub(crate) async fn reserve_guess<S: Store>(
    store: &S,
    limits: &GuessingLimits,
    user: &Subject,
    source: Option<IpAddr>,
    now: Timestamp,
) -> StoreResult<Result<Reservation, Spent>> {
    let user_key = format!(
        "user-code-failures:user:{}",
        &Digest::of(user.as_str().as_bytes()).to_hex()[..32]
    );
    let source_key = source.map(|s| format!("user-code-failures:source:{s}"));
    let per_user = limits.per_user;
    let mut reservation = Reservation::default();
    let first = match store
        .try_increment(&user_key, per_user.max, per_user.window, now)
        .await
    {
        Ok(first) => first,
        Err(e) => {
            // The reply may be what was lost: give the place back, best effort.
            reservation.taken.push(user_key);
            reservation.give_back_quietly(store, now).await;
            return Err(e);
        }
    };
    if !first.counted {
        return Ok(Err(Spent {
            until: first.resets_at,
        }));
    }
    reservation.taken.push(user_key.clone());
    if let Some(overall) = limits.under_attack {
        reservation
            .on_failure
            .push((OVERALL_KEY.to_owned(), overall));
    }
    if first.value == 1 {
        // No wrong code in this user's window: nobody else can stop them. A wrong one still
        // counts against their address.
        if let (Some(key), Some(limit)) = (source_key, limits.per_source) {
            reservation.on_failure.push((key, limit));
        }
        return Ok(Ok(reservation));
    }
    // This user already failed: their address's budget applies too, and both tighten while
    // the overall tally says guessing is going on.
    let mut attack_until = None;
    if let Some(overall) = limits.under_attack {
        // A read: with a maximum of 0 nothing is ever added.
        let tally = match store
            .try_increment(OVERALL_KEY, 0, overall.window, now)
            .await
        {
            Ok(tally) => tally,
            Err(e) => {
                reservation.give_back_quietly(store, now).await;
                return Err(e);
            }
        };
        if tally.value >= overall.max {
            attack_until = Some(tally.resets_at);
            if first.value > limits.tightened_to {
                reservation.succeeded(store, now).await?;
                return Ok(Err(Spent {
                    until: first.resets_at.min(tally.resets_at),
                }));
            }
        }
    }
    if let (Some(key), Some(limit)) = (source_key, limits.per_source) {
        let max = match attack_until {
            Some(_) => limit.max.min(limits.tightened_to),
            None => limit.max,
        };
        if let Err(spent) = take(store, &[(key, max, limit)], now, &mut reservation).await? {
            let until = attack_until.map_or(spent.until, |a| a.min(spent.until));
            return Ok(Err(Spent { until }));
        }
    }
    Ok(Ok(reservation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::time::Duration;

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[tokio::test]
    async fn auth_budgets_are_per_account_and_source() {
        let store = MemoryStore::default();
        let limits = FailedAuthLimits::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..limits.per_account_and_source.max {
            let r = reserve_attempt(&store, &limits, AuthKind::EndUser, "alice", a, T0)
                .await
                .unwrap()
                .unwrap();
            r.failed(&store, T0).await.unwrap();
        }
        let spent = reserve_attempt(&store, &limits, AuthKind::EndUser, "alice", a, T0)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(spent.until, T0.saturating_add(Duration::from_secs(900)));
        // Alice from elsewhere, bob from the same source, and alice's client secrets: untouched.
        for (kind, account, source) in [
            (AuthKind::EndUser, "alice", b),
            (AuthKind::EndUser, "bob", a),
            (AuthKind::Client, "alice", a),
        ] {
            let r = reserve_attempt(&store, &limits, kind, account, source, T0)
                .await
                .unwrap()
                .unwrap();
            r.succeeded(&store, T0).await.unwrap();
        }
        // A success gives its place back: bob can still fail as often.
        for _ in 0..limits.per_account_and_source.max {
            reserve_attempt(&store, &limits, AuthKind::EndUser, "bob", a, T0)
                .await
                .unwrap()
                .unwrap()
                .failed(&store, T0)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn without_a_source_no_one_can_lock_an_account_out() {
        let store = MemoryStore::default();
        let limits = FailedAuthLimits::default();
        for _ in 0..50 {
            reserve_attempt(&store, &limits, AuthKind::EndUser, "alice", None, T0)
                .await
                .unwrap()
                .unwrap()
                .failed(&store, T0)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_source_budget_caps_every_account() {
        let store = MemoryStore::default();
        let limits = FailedAuthLimits::default();
        let a = ip("192.0.2.1");
        for i in 0..limits.per_source.map_or(0, |l| l.max) {
            reserve_attempt(&store, &limits, AuthKind::Client, &format!("c{i}"), a, T0)
                .await
                .unwrap()
                .unwrap()
                .failed(&store, T0)
                .await
                .unwrap();
        }
        assert!(
            reserve_attempt(&store, &limits, AuthKind::Client, "fresh", a, T0)
                .await
                .unwrap()
                .is_err()
        );
        // The refused attempt took no place in the fresh account's budget.
        let later = T0.saturating_add(Duration::from_secs(901));
        for _ in 0..limits.per_account_and_source.max {
            reserve_attempt(&store, &limits, AuthKind::Client, "fresh", a, later)
                .await
                .unwrap()
                .unwrap()
                .failed(&store, later)
                .await
                .unwrap();
        }
    }

    async fn guess(
        store: &MemoryStore,
        limits: &GuessingLimits,
        user: &str,
        source: Option<IpAddr>,
        right: bool,
    ) -> bool {
        match reserve_guess(store, limits, &Subject::new(user), source, T0)
            .await
            .unwrap()
        {
            Ok(r) if right => r.succeeded(store, T0).await.map(|_| true).unwrap(),
            Ok(r) => r.failed(store, T0).await.map(|_| true).unwrap(),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn an_untouched_user_is_always_looked_up() {
        let store = MemoryStore::default();
        let limits = GuessingLimits::default();
        let a = ip("192.0.2.1");
        // Many accounts guessing from one address spend the address's budget...
        for i in 0..40 {
            assert!(guess(&store, &limits, &format!("mallory{i}"), a, false).await);
        }
        assert!(!guess(&store, &limits, "mallory0", a, false).await);
        // ...but a user with no wrong code is looked up, from there or anywhere, right or wrong.
        assert!(guess(&store, &limits, "alice", a, true).await);
        assert!(guess(&store, &limits, "alice", a, true).await);
        assert!(guess(&store, &limits, "bob", a, false).await);
        // bob failed once: now the address's budget applies to him.
        assert!(!guess(&store, &limits, "bob", a, true).await);
        assert!(guess(&store, &limits, "bob", ip("192.0.2.2"), true).await);
    }

    #[tokio::test]
    async fn per_user_budget_is_the_ceiling() {
        let store = MemoryStore::default();
        let limits = GuessingLimits::default();
        for _ in 0..5 {
            assert!(guess(&store, &limits, "alice", ip("192.0.2.1"), false).await);
        }
        assert!(!guess(&store, &limits, "alice", ip("192.0.2.9"), true).await);
        assert!(guess(&store, &limits, "bob", ip("192.0.2.1"), true).await);
    }

    #[tokio::test]
    async fn under_attack_only_those_who_failed_are_tightened() {
        let store = MemoryStore::default();
        let limits = GuessingLimits {
            under_attack: Some(AttemptLimit {
                max: 10,
                window: Duration::from_secs(900),
            }),
            ..GuessingLimits::default()
        };
        // Ten accounts on ten addresses each fail once: the tally reaches the threshold.
        for i in 0..10 {
            let source = ip(&format!("198.51.100.{i}"));
            assert!(guess(&store, &limits, &format!("m{i}"), source, false).await);
        }
        // A second try is still within the tightened budget (2), a third is not.
        let s0 = ip("198.51.100.0");
        assert!(guess(&store, &limits, "m0", s0, false).await);
        assert!(!guess(&store, &limits, "m0", s0, true).await);
        // An untouched user is never refused, even from an attacking address.
        assert!(guess(&store, &limits, "alice", s0, true).await);
        // Someone who had one typo gets one more try.
        assert!(guess(&store, &limits, "carol", ip("203.0.113.5"), false).await);
        assert!(guess(&store, &limits, "carol", ip("203.0.113.5"), true).await);
    }

    #[tokio::test]
    async fn without_a_source_only_the_user_budget_applies() {
        let store = MemoryStore::default();
        let limits = GuessingLimits::default();
        for _ in 0..5 {
            assert!(guess(&store, &limits, "alice", None, false).await);
        }
        assert!(!guess(&store, &limits, "alice", None, true).await);
        assert!(guess(&store, &limits, "bob", None, true).await);
    }
}

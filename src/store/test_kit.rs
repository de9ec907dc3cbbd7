//! The store conformance kit: the crate's behavioural tests for a [`Store`], runnable against
//! any backend.
//!
//! Each check drives the grant state machine of [`crate::grant`] exactly as the services do
//! (read the grant, ask it what a poll or a decision means, write the successor back with
//! [`Store::replace_grant`], and on a lost compare-and-swap read again), then asserts what the
//! [`Store`] contract promises. A violation panics with a message naming the check.
//!
//! The kit registers nothing and needs no clients in the store: grants and tokens name a client
//! id, which the store only keeps. Only [`check_client_lookup`] looks a client up, and it is
//! given the id of one the caller registered. Codes, tokens and counter keys are random, so
//! checks can share one store, and timestamps are taken near the real current time (from
//! [`SystemClock`]) because a backend may also expire records by its own clock (as Redis TTLs
//! do); expiry is exercised by passing later `now` values, never by sleeping.
//!
//! # Running it against your backend
//!
//! Enable the `test-kit` feature for your tests and call [`run_all`] from a multi-threaded
//! Tokio test, so that the racing checks really run in parallel:
//!
//! ```toml
//! [dev-dependencies]
//! tower-device-flow = { version = "0.1", features = ["test-kit"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```
//! use tower_device_flow::store::test_kit;
//! use tower_device_flow::{Client, MemoryStore, Scope};
//!
//! // Your backend in place of `MemoryStore`; in your crate this is a
//! // `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`.
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
//! # async fn main() { my_store_conforms().await }
//! async fn my_store_conforms() {
//!     // A fresh store for each check (a shared one works too: checks use random keys).
//!     let make = || {
//!         MemoryStore::builder()
//!             .client(Client::public("kit-client", Scope::parse("profile").unwrap()))
//!             .build()
//!     };
//!     test_kit::run_all(make).await;
//!     test_kit::check_client_lookup(make(), "kit-client").await;
//! }
//! ```
//!
//! A backend that needs a connection (as a database does) connects once, outside `make`, and
//! lets `make` hand out clones; a backend with a key prefix can give each test its own prefix
//! and delete it afterwards, as this crate's `tests/store_conformance.rs` does for Redis.
//!
//! Each check is also public on its own (`check_*`), to give every check its own test and a
//! precise failure report.

use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::records::{IssuedTokens, RefreshTokenRecord, TokenInfo, Versioned};
use super::traits::{Store, StoreResult};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::codes::{
    AccessToken, DeviceCode, Digest, RefreshToken, UserCode, UserCodeFormat, UserCodeGenerator,
};
use crate::error::ErrorCode;
use crate::grant::{DecideError, Decision, DeviceGrant, GrantStatus, PollOutcome};
use crate::ids::{ClientId, Subject};
use crate::scope::Scope;

/// How many tasks race in the concurrency checks.
pub const RACERS: usize = 64;

/// How long the kit's device codes stay valid.
const EXPIRES_IN: Duration = Duration::from_secs(600);
/// The kit's polling interval.
const INTERVAL: Duration = Duration::from_secs(5);
/// The kit's access-token lifetime.
const ACCESS_TTL: Duration = Duration::from_secs(600);
/// The kit's refresh-token lifetime.
const REFRESH_TTL: Duration = Duration::from_secs(1800);
/// A compare-and-swap loop that has not settled after this many rounds is broken.
const MAX_CAS_ROUNDS: usize = 10_000;

/// Runs every check except [`check_client_lookup`] (which needs a registered client), each on
/// a fresh store from `make`. Call it from a multi-threaded Tokio runtime.
pub async fn run_all<S, F>(make: F)
where
    S: Store + Clone,
    F: Fn() -> S,
{
    check_insert_if_absent(make()).await;
    check_concurrent_inserts_claim_user_code_once(make()).await;
    check_lookups(make()).await;
    check_compare_and_swap(make()).await;
    check_approve_then_poll_issues_once(make()).await;
    check_concurrent_polls_issue_once(make()).await;
    check_slow_down(make()).await;
    check_denied(make()).await;
    check_expiry(make()).await;
    check_rotation_take_once_under_race(make()).await;
    check_rotation_deletes_old_access_token(make()).await;
    check_revocation(make()).await;
    check_counters(make()).await;
}

/// `client` finds the registered client `known_client_id` and nothing for an unknown id.
pub async fn check_client_lookup<S: Store>(store: S, known_client_id: &str) {
    const CHECK: &str = "client_lookup";
    let found = ok(CHECK, store.client(known_client_id).await);
    let client = found.unwrap_or_else(|| fail(CHECK, "the registered client is not found"));
    assert_eq!(
        client.id().as_str(),
        known_client_id,
        "[{CHECK}] wrong client returned"
    );
    let unknown = format!("unknown-{}", random_hex());
    assert!(
        ok(CHECK, store.client(&unknown).await).is_none(),
        "[{CHECK}] an unknown client id was found"
    );
}

/// `insert_grant` is insert-if-absent on both keys: a second grant with a taken user code, or
/// under a taken device code, is refused and writes nothing.
pub async fn check_insert_if_absent<S: Store>(store: S) {
    const CHECK: &str = "insert_if_absent";
    let now = base();
    let first = Flow::new(now);
    assert!(
        ok(
            CHECK,
            store
                .insert_grant(first.device(), first.grant.clone(), now)
                .await
        ),
        "[{CHECK}] inserting a fresh grant failed"
    );

    // Another device code, the same user code: refused, and the new device code stays unknown.
    let same_user = Flow::with_user_code(first.user.clone(), now);
    assert!(
        !ok(
            CHECK,
            store
                .insert_grant(same_user.device(), same_user.grant.clone(), now)
                .await
        ),
        "[{CHECK}] a second grant took a user code that is in use"
    );
    assert!(
        ok(CHECK, store.grant(&same_user.device(), now).await).is_none(),
        "[{CHECK}] a refused insert stored its grant"
    );

    // The same device code, another user code: refused, and the new user code stays unindexed.
    let other = Flow::new(now);
    assert!(
        !ok(
            CHECK,
            store
                .insert_grant(first.device(), other.grant.clone(), now)
                .await
        ),
        "[{CHECK}] a second grant replaced one under the same device code"
    );
    assert!(
        ok(
            CHECK,
            store.grant_by_user_code(&other.user.digest(), now).await
        )
        .is_none(),
        "[{CHECK}] a refused insert indexed its user code"
    );

    // The first grant is untouched.
    let stored = read_grant(CHECK, &store, &first.device(), now).await;
    assert_eq!(
        stored.version, 0,
        "[{CHECK}] a new grant must start at version 0"
    );
    assert_eq!(
        stored.record, first.grant,
        "[{CHECK}] a refused insert changed the grant"
    );
    let (device, _) = ok(
        CHECK,
        store.grant_by_user_code(&first.user.digest(), now).await,
    )
    .unwrap_or_else(|| fail(CHECK, "the user code of the first grant is not indexed"));
    assert_eq!(
        device,
        first.device(),
        "[{CHECK}] the user code points at the wrong grant"
    );
}

/// Of [`RACERS`] concurrent inserts of different grants with one user code, exactly one wins.
pub async fn check_concurrent_inserts_claim_user_code_once<S: Store + Clone>(store: S) {
    const CHECK: &str = "concurrent_inserts_claim_user_code_once";
    let now = base();
    let user = UserCodeFormat::default().generate();
    let barrier = std::sync::Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, flow) = (
            store.clone(),
            barrier.clone(),
            Flow::with_user_code(user.clone(), now),
        );
        racers.spawn(async move {
            barrier.wait().await;
            let inserted = ok(
                CHECK,
                store.insert_grant(flow.device(), flow.grant, now).await,
            );
            inserted.then_some(flow.device)
        });
    }
    let winners: Vec<DeviceCode> = join_all(CHECK, racers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "[{CHECK}] {} of {RACERS} racing inserts claimed the same user code",
        winners.len()
    );
    let (device, _) = ok(CHECK, store.grant_by_user_code(&user.digest(), now).await)
        .unwrap_or_else(|| fail(CHECK, "the claimed user code is not indexed"));
    assert_eq!(
        device,
        winners[0].digest(),
        "[{CHECK}] the index names a losing grant"
    );
}

/// A grant is found by device code and by user code, with its version; unknown codes are not.
pub async fn check_lookups<S: Store>(store: S) {
    const CHECK: &str = "lookups";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;

    let by_device = read_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(
        by_device,
        Versioned {
            version: 0,
            record: flow.grant.clone()
        },
        "[{CHECK}] the grant read back differs from the one inserted"
    );
    let (device, by_user) = ok(
        CHECK,
        store.grant_by_user_code(&flow.user.digest(), now).await,
    )
    .unwrap_or_else(|| fail(CHECK, "the grant is not found by its user code"));
    assert_eq!(
        device,
        flow.device(),
        "[{CHECK}] lookup by user code returned the wrong key"
    );
    assert_eq!(by_user, by_device, "[{CHECK}] the two lookups disagree");

    let unknown = Flow::new(now);
    assert!(
        ok(CHECK, store.grant(&unknown.device(), now).await).is_none(),
        "[{CHECK}] an unknown device code was found"
    );
    assert!(
        ok(
            CHECK,
            store.grant_by_user_code(&unknown.user.digest(), now).await
        )
        .is_none(),
        "[{CHECK}] an unknown user code was found"
    );
}

/// `replace_grant` swaps only on the current version, bumps it by one, and on failure writes
/// nothing at all, neither the grant nor the tokens. A retried swap (same expected version)
/// fails, so a lost reply can never lead to a second issuance.
pub async fn check_compare_and_swap<S: Store>(store: S) {
    const CHECK: &str = "compare_and_swap";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;

    let polled = DeviceGrant {
        last_poll: Some(now),
        ..flow.grant.clone()
    };
    assert!(
        ok(
            CHECK,
            store
                .replace_grant(&flow.device(), 0, polled.clone(), None, now)
                .await
        ),
        "[{CHECK}] a swap on the current version failed"
    );
    let stored = read_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(
        stored.version, 1,
        "[{CHECK}] a swap must bump the version by one"
    );
    assert_eq!(
        stored.record, polled,
        "[{CHECK}] the swap did not store the new grant"
    );

    // Retrying the same swap (as after a lost reply) fails and writes nothing, tokens included.
    let issued = Issued::new(&flow.grant.client_id, "mallory", &flow.grant.scope, now);
    let redeemed = DeviceGrant {
        status: GrantStatus::Redeemed,
        ..flow.grant.clone()
    };
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(
                    &flow.device(),
                    0,
                    redeemed.clone(),
                    Some(issued.tokens.clone()),
                    now
                )
                .await
        ),
        "[{CHECK}] a swap on a stale version succeeded"
    );
    let stored = read_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(
        stored,
        Versioned {
            version: 1,
            record: polled
        },
        "[{CHECK}] a failed swap changed the grant"
    );
    issued
        .assert_absent(CHECK, &store, now, "a failed swap stored its tokens")
        .await;

    assert!(
        ok(
            CHECK,
            store
                .replace_grant(&flow.device(), 1, redeemed.clone(), None, now)
                .await
        ),
        "[{CHECK}] a swap on the current version failed"
    );
    assert_eq!(
        read_grant(CHECK, &store, &flow.device(), now).await.version,
        2
    );

    let unknown = Flow::new(now);
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&unknown.device(), 0, unknown.grant.clone(), None, now)
                .await
        ),
        "[{CHECK}] a swap on an unknown device code succeeded"
    );
    assert!(
        ok(CHECK, store.grant(&unknown.device(), now).await).is_none(),
        "[{CHECK}] a swap on an unknown device code created a grant"
    );
}

/// Approve, then poll: the poll issues tokens once, stored with the swap, and every later poll
/// is refused with `invalid_grant`.
pub async fn check_approve_then_poll_issues_once<S: Store>(store: S) {
    const CHECK: &str = "approve_then_poll_issues_once";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;
    let client = flow.grant.client_id.clone();

    // Another client's poll is refused and changes nothing.
    let other = ClientId::new("kit-other-client");
    let refused = poll(CHECK, &store, &flow.device(), &other, now, |_, _| {
        unreachable_issue(CHECK)
    })
    .await;
    assert_eq!(
        refused,
        Polled::Refused(ErrorCode::InvalidGrant),
        "[{CHECK}] another client polled"
    );

    decide(
        CHECK,
        &store,
        &flow.device(),
        Decision::Approve(Subject::new("alice")),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    let approved = read_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(approved.version, 1, "[{CHECK}] approval must be one swap");

    let t = later(now, 1);
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        t,
        |subject, scope| {
            assert_eq!(
                subject.as_str(),
                "alice",
                "[{CHECK}] tokens issued for the wrong subject"
            );
            Issued::new(&client, subject.as_str(), &scope, t)
        },
    )
    .await;
    let Polled::Issued(issued) = polled else {
        fail(CHECK, &format!("polling an approved grant gave {polled:?}"))
    };
    issued.assert_present(CHECK, &store, t).await;

    let redeemed = read_grant(CHECK, &store, &flow.device(), t).await;
    assert_eq!(redeemed.version, 2, "[{CHECK}] issuance must be one swap");
    assert_eq!(
        redeemed.record.status,
        GrantStatus::Redeemed,
        "[{CHECK}] grant not redeemed"
    );
    for i in 2..4 {
        let again = poll(
            CHECK,
            &store,
            &flow.device(),
            &client,
            later(now, i),
            |_, _| unreachable_issue(CHECK),
        )
        .await;
        assert_eq!(
            again,
            Polled::Refused(ErrorCode::InvalidGrant),
            "[{CHECK}] a redeemed device code was accepted again"
        );
    }
}

/// Of [`RACERS`] concurrent polls of an approved grant, exactly one swap wins: one set of
/// tokens exists, the others were never stored, and every loser ends with `invalid_grant`.
pub async fn check_concurrent_polls_issue_once<S: Store + Clone>(store: S) {
    const CHECK: &str = "concurrent_polls_issue_once";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;
    decide(
        CHECK,
        &store,
        &flow.device(),
        Decision::Approve(Subject::new("bob")),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));

    let t = later(now, 5);
    let barrier = std::sync::Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, device) = (store.clone(), barrier.clone(), flow.device());
        let client = flow.grant.client_id.clone();
        racers.spawn(async move {
            // Every racer has its own tokens, so a store that let two swaps through would show
            // two stored sets.
            let mut mine = None;
            barrier.wait().await;
            let polled = poll(CHECK, &store, &device, &client, t, |subject, scope| {
                let issued = Issued::new(&client, subject.as_str(), &scope, t);
                mine = Some(issued.clone());
                issued
            })
            .await;
            (polled, mine)
        });
    }
    let results = join_all(CHECK, racers).await;
    let mut winners = 0;
    for (polled, mine) in &results {
        match polled {
            Polled::Issued(issued) => {
                winners += 1;
                issued.assert_present(CHECK, &store, t).await;
            }
            Polled::Refused(ErrorCode::InvalidGrant) => {
                if let Some(lost) = mine {
                    lost.assert_absent(CHECK, &store, t, "a losing swap stored its tokens")
                        .await;
                }
            }
            other => fail(CHECK, &format!("a racing poll gave {other:?}")),
        }
    }
    assert_eq!(
        winners, 1,
        "[{CHECK}] {winners} of {RACERS} racing polls were issued tokens"
    );
    let grant = read_grant(CHECK, &store, &flow.device(), t).await;
    assert_eq!(
        grant.version, 2,
        "[{CHECK}] approval and issuance must be exactly two swaps"
    );
    assert_eq!(
        grant.record.status,
        GrantStatus::Redeemed,
        "[{CHECK}] grant not redeemed"
    );
}

/// `slow_down` bookkeeping goes through the store: the poll time and the grown interval are
/// stored, a poll that loses a swap re-reads and sees the other poll, and a zero interval
/// writes nothing.
pub async fn check_slow_down<S: Store>(store: S) {
    const CHECK: &str = "slow_down";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;
    let device = flow.device();
    let client = flow.grant.client_id.clone();
    let no_issue = |_: Subject, _: Scope| -> Issued { unreachable_issue(CHECK) };

    let expect = |polled: Polled, want: Polled, what: &str| {
        assert_eq!(polled, want, "[{CHECK}] {what}");
    };
    expect(
        poll(CHECK, &store, &device, &client, later(now, 1), no_issue).await,
        Polled::Pending,
        "first poll",
    );
    let g = read_grant(CHECK, &store, &device, now).await;
    assert_eq!(
        g.record.last_poll,
        Some(later(now, 1)),
        "[{CHECK}] poll time not stored"
    );
    assert_eq!(
        g.version, 1,
        "[{CHECK}] a pending poll with an interval must be one swap"
    );

    // 2 s later, under the 5 s interval: slow_down, interval 10 s, stored.
    expect(
        poll(CHECK, &store, &device, &client, later(now, 3), no_issue).await,
        Polled::SlowDown,
        "poll after 2 s",
    );
    let g = read_grant(CHECK, &store, &device, now).await;
    assert_eq!(
        g.record.interval, 10,
        "[{CHECK}] the grown interval was not stored"
    );
    assert_eq!(
        g.record.last_poll,
        Some(later(now, 3)),
        "[{CHECK}] poll time not stored"
    );

    // 9 s later: fine under the old interval, too soon under the stored one.
    expect(
        poll(CHECK, &store, &device, &client, later(now, 12), no_issue).await,
        Polled::SlowDown,
        "poll after 9 s",
    );
    assert_eq!(
        read_grant(CHECK, &store, &device, now)
            .await
            .record
            .interval,
        15
    );
    // 15 s later: on the interval, pending.
    expect(
        poll(CHECK, &store, &device, &client, later(now, 27), no_issue).await,
        Polled::Pending,
        "poll after 15 s",
    );

    // Two polls read the same version; the second loses the swap, reads again, and must then
    // see the first poll's time: slow_down.
    let seen = read_grant(CHECK, &store, &device, now).await;
    let t = later(now, 42);
    let PollOutcome::Pending { next: Some(next) } = seen.record.poll(&client, t) else {
        fail(CHECK, "a poll on the interval was not pending")
    };
    assert!(ok(
        CHECK,
        store
            .replace_grant(&device, seen.version, next.clone(), None, t)
            .await
    ));
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&device, seen.version, next, None, t)
                .await
        ),
        "[{CHECK}] two polls swapped the same version"
    );
    expect(
        poll(CHECK, &store, &device, &client, t, no_issue).await,
        Polled::SlowDown,
        "the losing poll, retried",
    );
    assert_eq!(
        read_grant(CHECK, &store, &device, now)
            .await
            .record
            .interval,
        20
    );

    // With no interval there is nothing to record, so polls write nothing.
    let mut free = Flow::new(now);
    free.grant.interval = 0;
    insert(CHECK, &store, &free, now).await;
    for _ in 0..3 {
        let polled = poll(
            CHECK,
            &store,
            &free.device(),
            &client,
            later(now, 1),
            no_issue,
        )
        .await;
        expect(polled, Polled::Pending, "poll without interval");
    }
    assert_eq!(
        read_grant(CHECK, &store, &free.device(), now).await.version,
        0,
        "[{CHECK}] polls without an interval wrote the grant"
    );
}

/// A denied grant answers `access_denied` without writing, and stays denied.
pub async fn check_denied<S: Store>(store: S) {
    const CHECK: &str = "denied";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;
    let client = flow.grant.client_id.clone();
    decide(CHECK, &store, &flow.device(), Decision::Deny, now)
        .await
        .unwrap_or_else(|e| fail(CHECK, &format!("denial refused: {e:?}")));
    for i in 1..3 {
        let polled = poll(
            CHECK,
            &store,
            &flow.device(),
            &client,
            later(now, i * 10),
            |_, _| unreachable_issue(CHECK),
        )
        .await;
        assert_eq!(
            polled,
            Polled::Refused(ErrorCode::AccessDenied),
            "[{CHECK}] denied grant polled"
        );
    }
    let again = decide(
        CHECK,
        &store,
        &flow.device(),
        Decision::Approve(Subject::new("eve")),
        now,
    )
    .await;
    assert_eq!(
        again,
        Err(DecideError::AlreadyDecided),
        "[{CHECK}] a denied grant was approved"
    );
    let stored = read_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(stored.version, 1, "[{CHECK}] refusals must not write");
    assert_eq!(stored.record.status, GrantStatus::Denied);
}

/// Expiry by `now`: an expired grant answers `expired_token` (approved or not), stays visible
/// until [`DeviceGrant::retain_until`], then is gone from both lookups and frees its user code.
pub async fn check_expiry<S: Store>(store: S) {
    const CHECK: &str = "expiry";
    let now = base();
    let lifetime = Duration::from_secs(60);
    let flow = Flow::with(UserCodeFormat::default().generate(), now, lifetime);
    insert(CHECK, &store, &flow, now).await;
    let approved = Flow::with(UserCodeFormat::default().generate(), now, lifetime);
    insert(CHECK, &store, &approved, now).await;
    decide(
        CHECK,
        &store,
        &approved.device(),
        Decision::Approve(Subject::new("carol")),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    let client = flow.grant.client_id.clone();
    let no_issue = |_: Subject, _: Scope| -> Issued { unreachable_issue(CHECK) };

    let last_moment = Timestamp::from_unix_millis(flow.grant.expires_at.as_unix_millis() - 1);
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        last_moment,
        no_issue,
    )
    .await;
    assert_eq!(polled, Polled::Pending, "[{CHECK}] a grant expired early");

    let expired = flow.grant.expires_at;
    for device in [flow.device(), approved.device()] {
        let polled = poll(CHECK, &store, &device, &client, expired, no_issue).await;
        assert_eq!(
            polled,
            Polled::Refused(ErrorCode::ExpiredToken),
            "[{CHECK}] expired grant polled"
        );
    }
    let decided = decide(CHECK, &store, &flow.device(), Decision::Deny, expired).await;
    assert_eq!(
        decided,
        Err(DecideError::Expired),
        "[{CHECK}] an expired grant was decided"
    );
    assert!(
        ok(
            CHECK,
            store.grant_by_user_code(&flow.user.digest(), expired).await
        )
        .is_some(),
        "[{CHECK}] an expired grant must stay visible until retain_until"
    );

    let gone = flow.grant.retain_until();
    let just_before = Timestamp::from_unix_millis(gone.as_unix_millis() - 1);
    assert!(
        ok(CHECK, store.grant(&flow.device(), just_before).await).is_some(),
        "[{CHECK}] dropped early"
    );
    assert!(
        ok(CHECK, store.grant(&flow.device(), gone).await).is_none(),
        "[{CHECK}] a grant was returned after retain_until"
    );
    assert!(
        ok(
            CHECK,
            store.grant_by_user_code(&flow.user.digest(), gone).await
        )
        .is_none(),
        "[{CHECK}] a grant was found by user code after retain_until"
    );

    // Once the old grant is gone, its user code is free again.
    let reuse = Flow::with(flow.user.clone(), gone, EXPIRES_IN);
    assert!(
        ok(
            CHECK,
            store
                .insert_grant(reuse.device(), reuse.grant.clone(), gone)
                .await
        ),
        "[{CHECK}] a user code stayed taken after its grant's retain_until"
    );
    let (device, found) = ok(
        CHECK,
        store.grant_by_user_code(&flow.user.digest(), gone).await,
    )
    .unwrap_or_else(|| fail(CHECK, "the reused user code is not indexed"));
    assert_eq!(
        device,
        reuse.device(),
        "[{CHECK}] the reused user code names the old grant"
    );
    assert_eq!(found.record, reuse.grant);
}

/// Of [`RACERS`] concurrent rotations of one refresh token, exactly one succeeds: it removes
/// the old refresh and access tokens and stores its own; the losers store nothing.
pub async fn check_rotation_take_once_under_race<S: Store + Clone>(store: S) {
    const CHECK: &str = "rotation_take_once_under_race";
    let now = base();
    let first = issue_via_flow(CHECK, &store, now).await;
    let old = first.refresh_digest(CHECK);

    let t = later(now, 60);
    let barrier = std::sync::Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        let client = first.client.clone();
        racers.spawn(async move {
            barrier.wait().await;
            // As the token endpoint does: read and check the record, then take it.
            let record = ok(CHECK, store.refresh_token(&old, t).await);
            let issued = Issued::new(&client, "dave", &Scope::empty(), t);
            let rotated = match record {
                Some(_) => ok(
                    CHECK,
                    store
                        .rotate_refresh_token(&old, issued.tokens.clone(), t)
                        .await,
                ),
                None => false,
            };
            (rotated, issued)
        });
    }
    let results = join_all(CHECK, racers).await;
    let winners = results.iter().filter(|(rotated, _)| *rotated).count();
    assert_eq!(
        winners, 1,
        "[{CHECK}] {winners} of {RACERS} racing rotations succeeded"
    );
    for (rotated, issued) in &results {
        if *rotated {
            issued.assert_present(CHECK, &store, t).await;
        } else {
            issued
                .assert_absent(CHECK, &store, t, "a losing rotation stored its tokens")
                .await;
        }
    }
    first
        .assert_absent(CHECK, &store, t, "rotation left the old tokens")
        .await;
}

/// A rotation deletes the old refresh token and the access token issued with it; rotating the
/// old token again fails and stores nothing.
pub async fn check_rotation_deletes_old_access_token<S: Store>(store: S) {
    const CHECK: &str = "rotation_deletes_old_access_token";
    let now = base();
    let first = issue_via_flow(CHECK, &store, now).await;
    let old = first.refresh_digest(CHECK);

    let t = later(now, 60);
    let second = Issued::new(&first.client, "erin", &Scope::empty(), t);
    assert!(
        ok(
            CHECK,
            store
                .rotate_refresh_token(&old, second.tokens.clone(), t)
                .await
        ),
        "[{CHECK}] rotating a live refresh token failed"
    );
    first
        .assert_absent(CHECK, &store, t, "rotation left the old tokens")
        .await;
    second.assert_present(CHECK, &store, t).await;

    let third = Issued::new(&first.client, "erin", &Scope::empty(), t);
    assert!(
        !ok(
            CHECK,
            store
                .rotate_refresh_token(&old, third.tokens.clone(), t)
                .await
        ),
        "[{CHECK}] a rotated refresh token was rotated again"
    );
    third
        .assert_absent(CHECK, &store, t, "a failed rotation stored its tokens")
        .await;
    second.assert_present(CHECK, &store, t).await;

    // A rotation may issue an access token alone; the old pair still goes.
    let access_only = Issued::access_only(&first.client, "erin", t);
    assert!(ok(
        CHECK,
        store
            .rotate_refresh_token(&second.refresh_digest(CHECK), access_only.tokens.clone(), t)
            .await
    ));
    second
        .assert_absent(CHECK, &store, t, "rotation left the old tokens")
        .await;
    access_only.assert_present(CHECK, &store, t).await;
}

/// Revoking an access token deletes it; revoking a refresh token deletes it and its access
/// token. Both report whether the token existed.
pub async fn check_revocation<S: Store>(store: S) {
    const CHECK: &str = "revocation";
    let now = base();

    let first = issue_via_flow(CHECK, &store, now).await;
    let access = first.tokens.access.0;
    assert!(
        ok(CHECK, store.revoke_access_token(&access).await),
        "[{CHECK}] revoking a live access token"
    );
    assert!(
        ok(CHECK, store.access_token(&access, now).await).is_none(),
        "[{CHECK}] access token survived"
    );
    assert!(
        !ok(CHECK, store.revoke_access_token(&access).await),
        "[{CHECK}] revoking a revoked access token reported it existed"
    );
    // Its refresh token can still be revoked, although its access token is already gone.
    let refresh = first.refresh_digest(CHECK);
    assert!(
        ok(CHECK, store.revoke_refresh_token(&refresh).await),
        "[{CHECK}] revoking a live refresh token"
    );
    assert!(
        ok(CHECK, store.refresh_token(&refresh, now).await).is_none(),
        "[{CHECK}] refresh token survived"
    );

    let second = issue_via_flow(CHECK, &store, now).await;
    let refresh = second.refresh_digest(CHECK);
    assert!(
        ok(CHECK, store.revoke_refresh_token(&refresh).await),
        "[{CHECK}] revoking a live refresh token"
    );
    second
        .assert_absent(
            CHECK,
            &store,
            now,
            "refresh revocation must take its access token along",
        )
        .await;
    assert!(
        !ok(CHECK, store.revoke_refresh_token(&refresh).await),
        "[{CHECK}] revoking a revoked refresh token reported it existed"
    );

    let unknown = AccessToken::generate().digest();
    assert!(
        !ok(CHECK, store.revoke_access_token(&unknown).await),
        "[{CHECK}] revoked an unknown token"
    );
    assert!(
        !ok(CHECK, store.revoke_refresh_token(&unknown).await),
        "[{CHECK}] revoked an unknown token"
    );
}

/// Counters count up within their window, are independent, read 0 once the window (measured
/// from the first increment, by `now`) has passed, and then start again at 1.
pub async fn check_counters<S: Store>(store: S) {
    const CHECK: &str = "counters";
    let now = base();
    let window = Duration::from_secs(60);
    let key = format!("kit:{}", random_hex());
    let other = format!("kit:{}", random_hex());

    assert_eq!(
        ok(CHECK, store.counter(&key, now).await),
        0,
        "[{CHECK}] a new counter is not 0"
    );
    for want in 1..=3 {
        let t = later(now, want - 1);
        let got = ok(CHECK, store.increment_counter(&key, window, t).await);
        assert_eq!(got, want, "[{CHECK}] increment returned the wrong count");
    }
    assert_eq!(
        ok(CHECK, store.counter(&key, later(now, 30)).await),
        3,
        "[{CHECK}] counter read"
    );
    assert_eq!(
        ok(CHECK, store.increment_counter(&other, window, now).await),
        1,
        "[{CHECK}] counters share state"
    );
    assert_eq!(
        ok(CHECK, store.counter(&key, now).await),
        3,
        "[{CHECK}] counters share state"
    );

    // The window runs from the first increment, not the last.
    let end = now.saturating_add(window);
    let just_before = Timestamp::from_unix_millis(end.as_unix_millis() - 1);
    assert_eq!(
        ok(CHECK, store.counter(&key, just_before).await),
        3,
        "[{CHECK}] window ended early"
    );
    assert_eq!(
        ok(CHECK, store.counter(&key, end).await),
        0,
        "[{CHECK}] window did not end"
    );
    assert_eq!(
        ok(CHECK, store.increment_counter(&key, window, end).await),
        1,
        "[{CHECK}] an expired counter must start again at 1"
    );
    let next = later(end, 1);
    assert_eq!(
        ok(CHECK, store.increment_counter(&key, window, next).await),
        2
    );
    assert_eq!(ok(CHECK, store.counter(&key, next).await), 2);
}

// ---------------------------------------------------------------------------------------------
// The server's side of the protocol, as the services implement it.

/// What one poll of the token endpoint answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Polled {
    Pending,
    SlowDown,
    Issued(Box<Issued>),
    Refused(ErrorCode),
    Unknown,
}

/// Polls as the token endpoint does: read, ask the grant, swap the successor in, and on a lost
/// swap start over. `mint` makes the tokens for an `Issue` outcome.
async fn poll<S: Store>(
    check: &str,
    store: &S,
    device: &Digest,
    client: &ClientId,
    now: Timestamp,
    mut mint: impl FnMut(Subject, Scope) -> Issued,
) -> Polled {
    for _ in 0..MAX_CAS_ROUNDS {
        let Some(current) = ok(check, store.grant(device, now).await) else {
            return Polled::Unknown;
        };
        let (next, answer) = match current.record.poll(client, now) {
            PollOutcome::Pending { next: None } => return Polled::Pending,
            PollOutcome::Pending { next: Some(next) } => (next, Polled::Pending),
            PollOutcome::SlowDown { next } => (next, Polled::SlowDown),
            PollOutcome::Issue {
                next,
                subject,
                scope,
            } => {
                let issued = mint(subject, scope);
                (next, Polled::Issued(Box::new(issued)))
            }
            PollOutcome::Refuse(code) => return Polled::Refused(code),
        };
        let tokens = match &answer {
            Polled::Issued(issued) => Some(issued.tokens.clone()),
            _ => None,
        };
        if ok(
            check,
            store
                .replace_grant(device, current.version, next, tokens, now)
                .await,
        ) {
            return answer;
        }
    }
    fail(check, "a poll's compare-and-swap never settled")
}

/// Records a decision as the verification page does: read, decide, swap, retry.
async fn decide<S: Store>(
    check: &str,
    store: &S,
    device: &Digest,
    decision: Decision,
    now: Timestamp,
) -> Result<(), DecideError> {
    for _ in 0..MAX_CAS_ROUNDS {
        let current = read_grant(check, store, device, now).await;
        let next = current.record.decide(decision.clone(), now)?;
        if ok(
            check,
            store
                .replace_grant(device, current.version, next, None, now)
                .await,
        ) {
            return Ok(());
        }
    }
    fail(check, "a decision's compare-and-swap never settled")
}

/// Runs a whole flow (insert, approve, poll) and returns the tokens it issued.
async fn issue_via_flow<S: Store>(check: &str, store: &S, now: Timestamp) -> Issued {
    let flow = Flow::new(now);
    insert(check, store, &flow, now).await;
    decide(
        check,
        store,
        &flow.device(),
        Decision::Approve(Subject::new("frank")),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(check, &format!("approval refused: {e:?}")));
    let client = flow.grant.client_id.clone();
    let polled = poll(
        check,
        store,
        &flow.device(),
        &client,
        now,
        |subject, scope| Issued::new(&client, subject.as_str(), &scope, now),
    )
    .await;
    match polled {
        Polled::Issued(issued) => {
            issued.assert_present(check, store, now).await;
            *issued
        }
        other => fail(check, &format!("polling an approved grant gave {other:?}")),
    }
}

/// A device authorization as the device endpoint creates it, with its plaintext codes.
struct Flow {
    device: DeviceCode,
    user: UserCode,
    grant: DeviceGrant,
}

impl Flow {
    fn new(now: Timestamp) -> Self {
        Self::with(UserCodeFormat::default().generate(), now, EXPIRES_IN)
    }

    fn with_user_code(user: UserCode, now: Timestamp) -> Self {
        Self::with(user, now, EXPIRES_IN)
    }

    fn with(user: UserCode, now: Timestamp, expires_in: Duration) -> Self {
        let grant = DeviceGrant::new(
            ClientId::new("kit-client"),
            scope("profile email"),
            user.digest(),
            now,
            expires_in,
            INTERVAL,
        );
        Flow {
            device: DeviceCode::generate(),
            user,
            grant,
        }
    }

    fn device(&self) -> Digest {
        self.device.digest()
    }
}

/// The tokens of one token response, with their plaintext (so tests can look for leaks).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Issued {
    client: ClientId,
    access: AccessToken,
    refresh: Option<RefreshToken>,
    tokens: IssuedTokens,
}

impl Issued {
    fn new(client: &ClientId, subject: &str, scope: &Scope, now: Timestamp) -> Self {
        let mut issued = Self::access_only(client, subject, now);
        issued.tokens.access.1.scope = scope.clone();
        let refresh = RefreshToken::generate();
        issued.tokens.refresh = Some((
            refresh.digest(),
            RefreshTokenRecord {
                subject: Subject::new(subject),
                client_id: client.clone(),
                scope: scope.clone(),
                expires_at: now.saturating_add(REFRESH_TTL),
                access_token: issued.access.digest(),
            },
        ));
        issued.refresh = Some(refresh);
        issued
    }

    fn access_only(client: &ClientId, subject: &str, now: Timestamp) -> Self {
        let access = AccessToken::generate();
        let info = TokenInfo {
            subject: Subject::new(subject),
            client_id: client.clone(),
            scope: Scope::empty(),
            expires_at: now.saturating_add(ACCESS_TTL),
        };
        Issued {
            client: client.clone(),
            tokens: IssuedTokens {
                access: (access.digest(), info),
                refresh: None,
            },
            access,
            refresh: None,
        }
    }

    fn refresh_digest(&self, check: &str) -> Digest {
        match &self.tokens.refresh {
            Some((digest, _)) => *digest,
            None => fail(check, "the flow issued no refresh token"),
        }
    }

    async fn assert_present<S: Store>(&self, check: &str, store: &S, now: Timestamp) {
        let (digest, info) = &self.tokens.access;
        assert_eq!(
            ok(check, store.access_token(digest, now).await).as_ref(),
            Some(info),
            "[{check}] the issued access token is not stored as issued"
        );
        if let Some((digest, record)) = &self.tokens.refresh {
            assert_eq!(
                ok(check, store.refresh_token(digest, now).await).as_ref(),
                Some(record),
                "[{check}] the issued refresh token is not stored as issued"
            );
        }
    }

    async fn assert_absent<S: Store>(&self, check: &str, store: &S, now: Timestamp, what: &str) {
        let (digest, _) = &self.tokens.access;
        assert!(
            ok(check, store.access_token(digest, now).await).is_none(),
            "[{check}] {what} (access token)"
        );
        if let Some((digest, _)) = &self.tokens.refresh {
            assert!(
                ok(check, store.refresh_token(digest, now).await).is_none(),
                "[{check}] {what} (refresh token)"
            );
        }
    }
}

async fn insert<S: Store>(check: &str, store: &S, flow: &Flow, now: Timestamp) {
    assert!(
        ok(
            check,
            store
                .insert_grant(flow.device(), flow.grant.clone(), now)
                .await
        ),
        "[{check}] inserting a fresh grant failed"
    );
}

async fn read_grant<S: Store>(
    check: &str,
    store: &S,
    device: &Digest,
    now: Timestamp,
) -> Versioned<DeviceGrant> {
    ok(check, store.grant(device, now).await)
        .unwrap_or_else(|| fail(check, "a stored grant is missing"))
}

async fn join_all<T: 'static>(check: &str, mut set: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(value) => out.push(value),
            // Re-raise a racer's own assertion so its message is the one reported.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => fail(check, &format!("a racing task failed: {e}")),
        }
    }
    out
}

/// A time near the real current time, so backends that also expire by their own clock keep
/// the kit's records for the length of the run.
fn base() -> Timestamp {
    SystemClock.now()
}

fn later(t: Timestamp, secs: u64) -> Timestamp {
    t.saturating_add(Duration::from_secs(secs))
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap_or_else(|e| panic!("kit scope {s:?}: {e}"))
}

fn random_hex() -> String {
    AccessToken::generate().digest().to_hex()[..16].to_owned()
}

fn ok<T>(check: &str, result: StoreResult<T>) -> T {
    result.unwrap_or_else(|e| panic!("[{check}] store error: {e}"))
}

fn fail(check: &str, message: &str) -> ! {
    panic!("[{check}] {message}")
}

fn unreachable_issue(check: &str) -> Issued {
    fail(check, "the grant issued tokens where it must not")
}

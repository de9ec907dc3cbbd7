//! The store conformance kit: the crate's behavioural tests for a [`Store`], runnable against
//! any backend.
//!
//! Each check drives the crate's own rules exactly as the services do: the device grant state
//! machine of [`crate::grant`] (read the device grant, ask it what a poll or a decision means,
//! write the successor back with [`Store::replace_device_grant`], and on a lost
//! compare-and-swap read again) and the token family rules of [`crate::family`] (read the
//! [`Grant`], ask it what a presented refresh token is, rotate it with
//! [`Store::replace_grant`]). It then asserts what the [`Store`] contract promises. A violation
//! panics with a message naming the check.
//!
//! The kit registers nothing and needs no clients in the store: grants and tokens name a client
//! id, which the store only keeps. Only [`check_client_lookup`] and [`check_known_scopes`] look
//! clients up, and they are given the id of one the caller registered. Codes, tokens, subjects
//! and counter keys are random, so checks can share one store, and timestamps are taken near the real current time
//! (from [`SystemClock`]) because a backend may also expire records by its own clock (as Redis
//! TTLs do); expiry is exercised by passing later `now` values, never by sleeping.
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
//!     // For a store that lists its clients (for the metadata's `scopes_supported`).
//!     let store = make();
//!     test_kit::check_known_scopes(store.clone(), "kit-client", |client| {
//!         store.add_client(client);
//!         std::future::ready(())
//!     })
//!     .await;
//! }
//! ```
//!
//! A backend that needs a connection (as a database does) connects once, outside `make`, and
//! lets `make` hand out clones; a backend with a key prefix can give each test its own prefix
//! and delete it afterwards, as this crate's `tests/store_conformance.rs` does for Redis.
//!
//! Each check is also public on its own (`check_*`), to give every check its own test and a
//! precise failure report. [`check_pending_device_grants`] compares counts before and after, so
//! it needs a store no other test writes to while it runs; every other check may share a store
//! with anything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
use super::traits::{Store, StoreResult};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::codes::{
    AccessToken, DeviceCode, Digest, FamilyKey, RefreshToken, Thumbprint, UserCode, UserCodeFormat,
    UserCodeGenerator,
};
use crate::error::ErrorCode;
use crate::family::{Grant, NewTokens, Presented, DEFAULT_REFRESH_GRACE};
use crate::grant::{DecideError, Decision, DeviceGrant, GrantStatus, PollOutcome};
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;

/// How many tasks race in the concurrency checks.
pub const RACERS: usize = 64;

/// How many concurrent calls race for a counter's budget in [`check_try_increment_under_race`].
pub const BUDGET_RACERS: usize = 200;

/// How many times [`check_revoke_racing_rotation`] races a revocation against a rotation.
pub const REVOKE_ROUNDS: usize = 100;

/// How many grants one subject holds in [`check_revoke_grants_of_racing_rotations`].
pub const SUBJECT_GRANTS: usize = 8;

/// How long the kit's device codes stay valid.
const EXPIRES_IN: Duration = Duration::from_secs(600);
/// The kit's polling interval.
const INTERVAL: Duration = Duration::from_secs(5);
/// The kit's access-token lifetime.
const ACCESS_TTL: Duration = Duration::from_secs(600);
/// The kit's refresh-token lifetime: how long its grants live.
const REFRESH_TTL: Duration = Duration::from_secs(1800);
/// The grace period the kit's refreshes allow for retries (the crate's default).
const GRACE: Duration = DEFAULT_REFRESH_GRACE;
/// A compare-and-swap loop that has not settled after this many rounds is broken.
const MAX_CAS_ROUNDS: usize = 10_000;
/// The client every kit grant is for.
const KIT_CLIENT: &str = "kit-client";

/// Runs every check except [`check_client_lookup`] (which needs a registered client), each on
/// a fresh store from `make`. Call it from a multi-threaded Tokio runtime.
pub async fn run_all<S, F>(make: F)
where
    S: Store + Clone,
    F: Fn() -> S,
{
    // Device grants.
    check_insert_if_absent(make()).await;
    check_concurrent_inserts_claim_user_code_once(make()).await;
    check_lookups(make()).await;
    check_compare_and_swap(make()).await;
    check_approve_then_poll_issues_once(make()).await;
    check_concurrent_polls_issue_once(make()).await;
    check_slow_down(make()).await;
    check_denied(make()).await;
    check_expiry(make()).await;
    check_pending_device_grants(make()).await;
    // Redemption and grants.
    check_redemption_stores_grant(make()).await;
    check_redemption_is_atomic(make()).await;
    check_grant_compare_and_swap(make()).await;
    check_concurrent_rotations_rotate_once(make()).await;
    check_rotation_replaces_access_token(make()).await;
    check_racing_refreshes_leave_one_pair(make()).await;
    check_revoke_grant(make()).await;
    check_revoke_racing_rotation(make()).await;
    check_grants_of(make()).await;
    check_revoke_grants_of_racing_rotations(make()).await;
    check_grant_expiry(make()).await;
    check_revoke_access_token(make()).await;
    // Limits and one-time values.
    check_try_increment(make()).await;
    check_try_increment_under_race(make()).await;
    check_decrement(make()).await;
    check_claim_once(make()).await;
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

/// `known_scopes` lists the scopes of the registered client `known_client_id`, and a client
/// added afterwards (through `add`, the caller's way of registering one) shows on the next
/// call. For a store that can list its clients; one that cannot answers `None` (the
/// provided default of [`ClientSource::known_scopes`](crate::store::ClientSource::known_scopes))
/// and has no use for this check.
pub async fn check_known_scopes<S, F, Fut>(store: S, known_client_id: &str, add: F)
where
    S: Store,
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const CHECK: &str = "known_scopes";
    let client = ok(CHECK, store.client(known_client_id).await)
        .unwrap_or_else(|| fail(CHECK, "the registered client is not found"));
    let known = ok(CHECK, store.known_scopes().await)
        .unwrap_or_else(|| fail(CHECK, "the store cannot list the scopes of its clients"));
    assert!(
        client.allowed_scope().is_subset_of(&known),
        "[{CHECK}] {:?} lacks the scope of {known_client_id}: {:?}",
        known,
        client.allowed_scope()
    );
    let token = format!("kit-scope-{}", random_hex());
    let scope = Scope::parse(&token).unwrap_or_else(|_| fail(CHECK, "a random scope token"));
    add(Client::public(
        format!("kit-client-{}", random_hex()),
        scope,
    ))
    .await;
    let known = ok(CHECK, store.known_scopes().await)
        .unwrap_or_else(|| fail(CHECK, "the store stopped listing the scopes of its clients"));
    assert!(
        known.contains(&token) && client.allowed_scope().is_subset_of(&known),
        "[{CHECK}] a client added is not listed: {known:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Device grants.

/// `insert_device_grant` is insert-if-absent on both keys: a second grant with a taken user
/// code, or under a taken device code, is refused with [`Insert::Taken`] and writes nothing.
pub async fn check_insert_if_absent<S: Store>(store: S) {
    const CHECK: &str = "insert_if_absent";
    let now = base();
    let first = Flow::new(now);
    insert(CHECK, &store, &first, now).await;

    // Another device code, the same user code: refused, and the new device code stays unknown.
    let same_user = Flow::with_user_code(first.user.clone(), now);
    assert_eq!(
        ok(
            CHECK,
            store
                .insert_device_grant(same_user.device(), same_user.grant.clone(), now)
                .await
        ),
        Insert::Taken,
        "[{CHECK}] a second grant took a user code that is in use"
    );
    assert!(
        ok(CHECK, store.device_grant(&same_user.device(), now).await).is_none(),
        "[{CHECK}] a refused insert stored its grant"
    );

    // The same device code, another user code: refused, and the new user code stays unindexed.
    let other = Flow::new(now);
    assert_eq!(
        ok(
            CHECK,
            store
                .insert_device_grant(first.device(), other.grant.clone(), now)
                .await
        ),
        Insert::Taken,
        "[{CHECK}] a second grant replaced one under the same device code"
    );
    assert!(
        ok(
            CHECK,
            store
                .device_grant_by_user_code(&other.user.digest(), now)
                .await
        )
        .is_none(),
        "[{CHECK}] a refused insert indexed its user code"
    );

    // The first grant is untouched.
    let stored = read_device_grant(CHECK, &store, &first.device(), now).await;
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
        store
            .device_grant_by_user_code(&first.user.digest(), now)
            .await,
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
    let barrier = Arc::new(Barrier::new(RACERS));
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
                store
                    .insert_device_grant(flow.device(), flow.grant, now)
                    .await,
            );
            match inserted {
                Insert::Inserted => Some(flow.device),
                Insert::Taken => None,
                Insert::Full { .. } => fail(CHECK, "a store with room answered Full"),
            }
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
    let (device, _) = ok(
        CHECK,
        store.device_grant_by_user_code(&user.digest(), now).await,
    )
    .unwrap_or_else(|| fail(CHECK, "the claimed user code is not indexed"));
    assert_eq!(
        device,
        winners[0].digest(),
        "[{CHECK}] the index names a losing grant"
    );
}

/// A device grant is found by device code and by user code, with its version; unknown codes
/// are not.
pub async fn check_lookups<S: Store>(store: S) {
    const CHECK: &str = "lookups";
    let now = base();
    let mut flow = Flow::new(now);
    // Every field a device grant can carry round-trips.
    flow.grant = flow.grant.with_audience(Some(audience())).with_origin(Some(
        crate::grant::RequestOrigin::new("192.0.2.7".parse().ok(), Some("kit/1.0")),
    ));
    insert(CHECK, &store, &flow, now).await;

    let by_device = read_device_grant(CHECK, &store, &flow.device(), now).await;
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
        store
            .device_grant_by_user_code(&flow.user.digest(), now)
            .await,
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
        ok(CHECK, store.device_grant(&unknown.device(), now).await).is_none(),
        "[{CHECK}] an unknown device code was found"
    );
    assert!(
        ok(
            CHECK,
            store
                .device_grant_by_user_code(&unknown.user.digest(), now)
                .await
        )
        .is_none(),
        "[{CHECK}] an unknown user code was found"
    );
}

/// `replace_device_grant` swaps only on the current version, bumps it by one, and on failure
/// writes nothing at all: neither the device grant nor the grant it would issue, its access
/// token or its subject index entry. A retried swap (same expected version) fails, so a lost
/// reply can never lead to a second issuance.
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
                .replace_device_grant(&flow.device(), 0, polled.clone(), None, now)
                .await
        ),
        "[{CHECK}] a swap on the current version failed"
    );
    let stored = read_device_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(
        stored.version, 1,
        "[{CHECK}] a swap must bump the version by one"
    );
    assert_eq!(
        stored.record, polled,
        "[{CHECK}] the swap did not store the new grant"
    );

    // Retrying the same swap (as after a lost reply) fails and writes nothing, grant included.
    let issued = Issued::new(&flow.grant, &random_subject(), now, now);
    let redeemed = DeviceGrant {
        status: GrantStatus::Redeemed,
        ..flow.grant.clone()
    };
    assert!(
        !ok(
            CHECK,
            store
                .replace_device_grant(
                    &flow.device(),
                    0,
                    redeemed.clone(),
                    Some(issued.issue.clone()),
                    now
                )
                .await
        ),
        "[{CHECK}] a swap on a stale version succeeded"
    );
    let stored = read_device_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(
        stored,
        Versioned {
            version: 1,
            record: polled
        },
        "[{CHECK}] a failed swap changed the grant"
    );
    issued
        .assert_absent(CHECK, &store, now, "a failed swap stored its grant")
        .await;

    assert!(
        ok(
            CHECK,
            store
                .replace_device_grant(&flow.device(), 1, redeemed.clone(), None, now)
                .await
        ),
        "[{CHECK}] a swap on the current version failed"
    );
    assert_eq!(
        read_device_grant(CHECK, &store, &flow.device(), now)
            .await
            .version,
        2
    );

    let unknown = Flow::new(now);
    let issued = Issued::new(&unknown.grant, &random_subject(), now, now);
    assert!(
        !ok(
            CHECK,
            store
                .replace_device_grant(
                    &unknown.device(),
                    0,
                    unknown.grant.clone(),
                    Some(issued.issue.clone()),
                    now
                )
                .await
        ),
        "[{CHECK}] a swap on an unknown device code succeeded"
    );
    assert!(
        ok(CHECK, store.device_grant(&unknown.device(), now).await).is_none(),
        "[{CHECK}] a swap on an unknown device code created a device grant"
    );
    issued
        .assert_absent(
            CHECK,
            &store,
            now,
            "a swap on an unknown device code stored a grant",
        )
        .await;
}

/// Approve, then poll: the poll issues a grant once, stored with the swap, and every later
/// poll is refused with `invalid_grant`.
pub async fn check_approve_then_poll_issues_once<S: Store>(store: S) {
    const CHECK: &str = "approve_then_poll_issues_once";
    let now = base();
    let flow = Flow::new(now);
    insert(CHECK, &store, &flow, now).await;
    let client = flow.grant.client_id.clone();
    let alice = random_subject();

    // Another client's poll is refused and changes nothing.
    let other = ClientId::new("kit-other-client");
    let refused = poll(CHECK, &store, &flow.device(), &other, now, no_issue(CHECK)).await;
    assert_eq!(
        refused,
        Polled::Refused(ErrorCode::InvalidGrant),
        "[{CHECK}] another client polled"
    );

    decide(
        CHECK,
        &store,
        &flow.device(),
        Decision::Approve(alice.clone()),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    let approved = read_device_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(approved.version, 1, "[{CHECK}] approval must be one swap");

    let t = later(now, 1);
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        t,
        |device, subject, approved_at| {
            assert_eq!(
                subject, alice,
                "[{CHECK}] tokens issued for the wrong subject"
            );
            assert_eq!(approved_at, now, "[{CHECK}] the approval time was not kept");
            Issued::new(device, &subject, approved_at, t)
        },
    )
    .await;
    let Polled::Issued(issued) = polled else {
        fail(CHECK, &format!("polling an approved grant gave {polled:?}"))
    };
    issued.assert_stored(CHECK, &store, t).await;

    let redeemed = read_device_grant(CHECK, &store, &flow.device(), t).await;
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
            no_issue(CHECK),
        )
        .await;
        assert_eq!(
            again,
            Polled::Refused(ErrorCode::InvalidGrant),
            "[{CHECK}] a redeemed device code was accepted again"
        );
    }
    assert_eq!(
        ok(CHECK, store.grants_of(&alice, t).await).len(),
        1,
        "[{CHECK}] one redemption must make one grant"
    );
}

/// Of [`RACERS`] concurrent polls of an approved grant, exactly one swap wins: one grant and
/// one access token exist, the others were never stored, and every loser ends with
/// `invalid_grant`.
pub async fn check_concurrent_polls_issue_once<S: Store + Clone>(store: S) {
    const CHECK: &str = "concurrent_polls_issue_once";
    let now = base();
    let subject = random_subject();
    let flow = approved_flow(CHECK, &store, &subject, now).await;

    let t = later(now, 5);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, device) = (store.clone(), barrier.clone(), flow.device());
        racers.spawn(async move {
            // Every racer mints its own grant, so a store that let two swaps through would
            // show two stored grants.
            let mut mine = None;
            barrier.wait().await;
            let client = ClientId::new(KIT_CLIENT);
            let polled = poll(CHECK, &store, &device, &client, t, |grant, subject, at| {
                let issued = Issued::new(grant, &subject, at, t);
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
                issued.assert_stored(CHECK, &store, t).await;
            }
            Polled::Refused(ErrorCode::InvalidGrant) => {
                if let Some(lost) = mine {
                    lost.assert_absent(CHECK, &store, t, "a losing swap stored its grant")
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
    assert_eq!(
        ok(CHECK, store.grants_of(&subject, t).await).len(),
        1,
        "[{CHECK}] racing polls left more than one grant"
    );
    let grant = read_device_grant(CHECK, &store, &flow.device(), t).await;
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

    let expect = |polled: Polled, want: Polled, what: &str| {
        assert_eq!(polled, want, "[{CHECK}] {what}");
    };
    expect(
        poll(
            CHECK,
            &store,
            &device,
            &client,
            later(now, 1),
            no_issue(CHECK),
        )
        .await,
        Polled::Pending,
        "first poll",
    );
    let g = read_device_grant(CHECK, &store, &device, now).await;
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
        poll(
            CHECK,
            &store,
            &device,
            &client,
            later(now, 3),
            no_issue(CHECK),
        )
        .await,
        Polled::SlowDown,
        "poll after 2 s",
    );
    let g = read_device_grant(CHECK, &store, &device, now).await;
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
        poll(
            CHECK,
            &store,
            &device,
            &client,
            later(now, 12),
            no_issue(CHECK),
        )
        .await,
        Polled::SlowDown,
        "poll after 9 s",
    );
    assert_eq!(
        read_device_grant(CHECK, &store, &device, now)
            .await
            .record
            .interval,
        15
    );
    // 15 s later: on the interval, pending.
    expect(
        poll(
            CHECK,
            &store,
            &device,
            &client,
            later(now, 27),
            no_issue(CHECK),
        )
        .await,
        Polled::Pending,
        "poll after 15 s",
    );

    // Two polls read the same version; the second loses the swap, reads again, and must then
    // see the first poll's time: slow_down.
    let seen = read_device_grant(CHECK, &store, &device, now).await;
    let t = later(now, 42);
    let PollOutcome::Pending { next: Some(next) } = seen.record.poll(&client, t) else {
        fail(CHECK, "a poll on the interval was not pending")
    };
    assert!(ok(
        CHECK,
        store
            .replace_device_grant(&device, seen.version, next.clone(), None, t)
            .await
    ));
    assert!(
        !ok(
            CHECK,
            store
                .replace_device_grant(&device, seen.version, next, None, t)
                .await
        ),
        "[{CHECK}] two polls swapped the same version"
    );
    expect(
        poll(CHECK, &store, &device, &client, t, no_issue(CHECK)).await,
        Polled::SlowDown,
        "the losing poll, retried",
    );
    assert_eq!(
        read_device_grant(CHECK, &store, &device, now)
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
            no_issue(CHECK),
        )
        .await;
        expect(polled, Polled::Pending, "poll without interval");
    }
    assert_eq!(
        read_device_grant(CHECK, &store, &free.device(), now)
            .await
            .version,
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
            no_issue(CHECK),
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
        Decision::Approve(random_subject()),
        now,
    )
    .await;
    assert_eq!(
        again,
        Err(DecideError::AlreadyDecided),
        "[{CHECK}] a denied grant was approved"
    );
    let stored = read_device_grant(CHECK, &store, &flow.device(), now).await;
    assert_eq!(stored.version, 1, "[{CHECK}] refusals must not write");
    assert_eq!(stored.record.status, GrantStatus::Denied);
}

/// Expiry by `now`: an expired device grant answers `expired_token` (approved or not), stays
/// visible until [`DeviceGrant::retain_until`], then is gone from both lookups, cannot be
/// swapped, and frees its user code.
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
        Decision::Approve(random_subject()),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    let client = flow.grant.client_id.clone();

    let last_moment = just_before(flow.grant.expires_at);
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        last_moment,
        no_issue(CHECK),
    )
    .await;
    assert_eq!(polled, Polled::Pending, "[{CHECK}] a grant expired early");

    let expired = flow.grant.expires_at;
    for device in [flow.device(), approved.device()] {
        let polled = poll(CHECK, &store, &device, &client, expired, no_issue(CHECK)).await;
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
            store
                .device_grant_by_user_code(&flow.user.digest(), expired)
                .await
        )
        .is_some(),
        "[{CHECK}] an expired grant must stay visible until retain_until"
    );

    let gone = flow.grant.retain_until();
    let stored = ok(
        CHECK,
        store.device_grant(&flow.device(), just_before(gone)).await,
    )
    .unwrap_or_else(|| fail(CHECK, "a device grant was dropped before retain_until"));
    assert!(
        ok(CHECK, store.device_grant(&flow.device(), gone).await).is_none(),
        "[{CHECK}] a device grant was returned after retain_until"
    );
    assert!(
        ok(
            CHECK,
            store
                .device_grant_by_user_code(&flow.user.digest(), gone)
                .await
        )
        .is_none(),
        "[{CHECK}] a device grant was found by user code after retain_until"
    );
    assert!(
        !ok(
            CHECK,
            store
                .replace_device_grant(&flow.device(), stored.version, stored.record, None, gone)
                .await
        ) || ok(CHECK, store.device_grant(&flow.device(), gone).await).is_none(),
        "[{CHECK}] a swap revived a device grant past retain_until"
    );

    // Once the old grant is gone, its user code is free again.
    let reuse = Flow::with(flow.user.clone(), gone, EXPIRES_IN);
    assert_eq!(
        ok(
            CHECK,
            store
                .insert_device_grant(reuse.device(), reuse.grant.clone(), gone)
                .await
        ),
        Insert::Inserted,
        "[{CHECK}] a user code stayed taken after its grant's retain_until"
    );
    let (device, found) = ok(
        CHECK,
        store
            .device_grant_by_user_code(&flow.user.digest(), gone)
            .await,
    )
    .unwrap_or_else(|| fail(CHECK, "the reused user code is not indexed"));
    assert_eq!(
        device,
        reuse.device(),
        "[{CHECK}] the reused user code names the old grant"
    );
    assert_eq!(found.record, reuse.grant);
}

/// [`Store::pending_device_grants`], if the store answers it, counts inserted pending grants
/// and stops counting them once decided. Compares counts before and after, so no other test
/// may write to the store meanwhile.
pub async fn check_pending_device_grants<S: Store>(store: S) {
    const CHECK: &str = "pending_device_grants";
    let now = base();
    let Some(before) = ok(CHECK, store.pending_device_grants(now).await) else {
        // The store cannot tell cheaply; nothing it promises to check.
        return;
    };
    let flows = [Flow::new(now), Flow::new(now), Flow::new(now)];
    for flow in &flows {
        insert(CHECK, &store, flow, now).await;
    }
    let count = |n: Option<u64>| n.unwrap_or_else(|| fail(CHECK, "the gauge stopped answering"));
    assert_eq!(
        count(ok(CHECK, store.pending_device_grants(now).await)),
        before + 3,
        "[{CHECK}] inserted pending grants are not counted"
    );
    // A refused insert counts nothing.
    let taken = Flow::with_user_code(flows[0].user.clone(), now);
    assert_eq!(
        ok(
            CHECK,
            store
                .insert_device_grant(taken.device(), taken.grant, now)
                .await
        ),
        Insert::Taken
    );
    // A poll keeps a grant pending.
    let client = ClientId::new(KIT_CLIENT);
    poll(
        CHECK,
        &store,
        &flows[2].device(),
        &client,
        later(now, 1),
        no_issue(CHECK),
    )
    .await;
    assert_eq!(
        count(ok(CHECK, store.pending_device_grants(now).await)),
        before + 3,
        "[{CHECK}] a refused insert or a poll changed the count"
    );
    decide(CHECK, &store, &flows[0].device(), Decision::Deny, now)
        .await
        .unwrap_or_else(|e| fail(CHECK, &format!("denial refused: {e:?}")));
    decide(
        CHECK,
        &store,
        &flows[1].device(),
        Decision::Approve(random_subject()),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    assert_eq!(
        count(ok(CHECK, store.pending_device_grants(now).await)),
        before + 1,
        "[{CHECK}] decided grants are still counted as pending"
    );
}

// ---------------------------------------------------------------------------------------------
// Redemption and grants.

/// A redemption stores, with the swap that marks the device grant redeemed, the new grant at
/// version 0 exactly as issued (every field, an audience and DPoP key included), its access
/// token under `issue.grant.access_token`, and its subject index entry.
pub async fn check_redemption_stores_grant<S: Store>(store: S) {
    const CHECK: &str = "redemption_stores_grant";
    let now = base();
    let subject = random_subject();
    let mut flow = Flow::new(now);
    flow.grant = flow.grant.with_audience(Some(audience()));
    insert(CHECK, &store, &flow, now).await;
    decide(
        CHECK,
        &store,
        &flow.device(),
        Decision::Approve(subject.clone()),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(CHECK, &format!("approval refused: {e:?}")));
    let t = later(now, 3);
    let client = ClientId::new(KIT_CLIENT);
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        t,
        |grant, subject, at| {
            let mut issued = Issued::new(grant, &subject, at, t);
            // A bound grant and token: the key must be kept too.
            let cnf = Some(Thumbprint::from_bytes(*Digest::of(b"kit key").as_bytes()));
            issued.issue.grant.cnf = cnf;
            issued.issue.access = issued.issue.access.clone().with_cnf(cnf);
            issued
        },
    )
    .await;
    let Polled::Issued(issued) = polled else {
        fail(CHECK, &format!("polling an approved grant gave {polled:?}"))
    };
    assert_eq!(
        issued.issue.grant.audience,
        Some(audience()),
        "[{CHECK}] the kit lost the audience"
    );
    issued.assert_stored(CHECK, &store, t).await;
    let listed = ok(CHECK, store.grants_of(&subject, t).await);
    assert_eq!(
        listed,
        vec![issued.issue.grant.clone()],
        "[{CHECK}] grants_of must list the redeemed grant as issued"
    );
    // The grant id is what the token names.
    let info = ok(CHECK, store.access_token(&issued.access.digest(), t).await)
        .unwrap_or_else(|| fail(CHECK, "the access token is missing"));
    assert_eq!(info.grant_id, Some(issued.id()), "[{CHECK}] wrong grant id");
}

/// The redemption swap is atomic: while [`RACERS`] polls race to redeem, an observer that sees
/// the device grant redeemed always finds the grant (by subject) and its access token already
/// stored.
pub async fn check_redemption_is_atomic<S: Store + Clone>(store: S) {
    const CHECK: &str = "redemption_is_atomic";
    let now = base();
    let subject = random_subject();
    let flow = approved_flow(CHECK, &store, &subject, now).await;
    let t = later(now, 1);
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(RACERS + 1));

    let observer = {
        let (store, done, barrier, device, subject) = (
            store.clone(),
            done.clone(),
            barrier.clone(),
            flow.device(),
            subject.clone(),
        );
        tokio::spawn(async move {
            barrier.wait().await;
            // Bounded: the pollers are, and `done` is set once they are through.
            let mut observed = false;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let seen = read_device_grant(CHECK, &store, &device, t).await;
                if seen.record.status == GrantStatus::Redeemed {
                    let grants = ok(CHECK, store.grants_of(&subject, t).await);
                    let [grant] = &grants[..] else {
                        fail(
                            CHECK,
                            &format!(
                                "the device grant reads redeemed, but its subject has {} grants",
                                grants.len()
                            ),
                        )
                    };
                    assert!(
                        ok(CHECK, store.access_token(&grant.access_token, t).await).is_some(),
                        "[{CHECK}] the device grant reads redeemed before its access token is stored"
                    );
                    observed = true;
                    break;
                }
                if finished {
                    break;
                }
                tokio::task::yield_now().await;
            }
            observed
        })
    };
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, device) = (store.clone(), barrier.clone(), flow.device());
        racers.spawn(async move {
            barrier.wait().await;
            let client = ClientId::new(KIT_CLIENT);
            poll(CHECK, &store, &device, &client, t, |grant, subject, at| {
                Issued::new(grant, &subject, at, t)
            })
            .await
        });
    }
    let results = join_all(CHECK, racers).await;
    done.store(true, Ordering::SeqCst);
    let observed = match observer.await {
        Ok(observed) => observed,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => fail(CHECK, &format!("the observer failed: {e}")),
    };
    assert!(observed, "[{CHECK}] the redemption was never observed");
    let winners = results
        .iter()
        .filter(|p| matches!(p, Polled::Issued(_)))
        .count();
    assert_eq!(winners, 1, "[{CHECK}] {winners} polls were issued tokens");
}

/// `replace_grant` swaps only on the current version and bumps it by one. A winning swap
/// stores `rotation.next`, the new access token under `rotation.next.access_token`, and
/// deletes `rotation.revoke`; a losing one (stale version, or the grant gone) writes nothing:
/// its access token is not stored and the token it would revoke lives on.
pub async fn check_grant_compare_and_swap<S: Store>(store: S) {
    const CHECK: &str = "grant_compare_and_swap";
    let now = base();
    let first = issue_grant(CHECK, &store, &random_subject(), now).await;
    let id = first.id();
    let t = later(now, 60);

    let current = read_grant(CHECK, &store, &id, t).await;
    assert_eq!(
        current.version, 0,
        "[{CHECK}] a new grant must be version 0"
    );
    let second = Pair::mint(&first.family, &current.record, t);
    let rotation = rotate(CHECK, &current.record, &first.refresh, &second, t);
    assert!(
        ok(
            CHECK,
            store
                .replace_grant(&id, 0, rotation.clone(), second.info.clone(), t)
                .await
        ),
        "[{CHECK}] a rotation on the current version failed"
    );
    let stored = read_grant(CHECK, &store, &id, t).await;
    assert_eq!(
        stored,
        Versioned {
            version: 1,
            record: rotation.next.clone()
        },
        "[{CHECK}] the rotation did not store the successor at version + 1"
    );
    second.assert_live(CHECK, &store, t).await;
    assert!(
        ok(CHECK, store.access_token(&first.access.digest(), t).await).is_none(),
        "[{CHECK}] the rotation left the replaced access token"
    );

    // The same rotation again (a retry after a lost reply, or a racer): refused, nothing written.
    let third = Pair::mint(&first.family, &current.record, t);
    let stale = rotate(CHECK, &current.record, &first.refresh, &third, t);
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&id, 0, stale, third.info.clone(), t)
                .await
        ),
        "[{CHECK}] a rotation on a stale version succeeded"
    );
    assert_eq!(
        read_grant(CHECK, &store, &id, t).await,
        stored,
        "[{CHECK}] a failed rotation changed the grant"
    );
    third
        .assert_absent(
            CHECK,
            &store,
            t,
            "a failed rotation stored its access token",
        )
        .await;
    second.assert_live(CHECK, &store, t).await;

    // A stale rotation naming the live access token as the one to revoke must not delete it.
    let fourth = Pair::mint(&first.family, &stored.record, t);
    let mut sneaky = rotate(CHECK, &stored.record, &second.refresh, &fourth, t);
    sneaky.revoke = second.access.digest();
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&id, 0, sneaky, fourth.info.clone(), t)
                .await
        ),
        "[{CHECK}] a rotation on a stale version succeeded"
    );
    second.assert_live(CHECK, &store, t).await;
    fourth
        .assert_absent(
            CHECK,
            &store,
            t,
            "a failed rotation stored its access token",
        )
        .await;

    // An unknown grant: refused, nothing created.
    let stranger = FamilyKey::generate();
    let mut ghost = stored.record.clone();
    ghost.id = stranger.grant_id();
    let fifth = Pair::mint(&stranger, &ghost, t);
    let rotation = rotate(CHECK, &ghost, &second.refresh, &fifth, t);
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&ghost.id, 1, rotation, fifth.info.clone(), t)
                .await
        ),
        "[{CHECK}] a rotation of an unknown grant succeeded"
    );
    assert!(
        ok(CHECK, store.grant(&ghost.id, t).await).is_none(),
        "[{CHECK}] a rotation of an unknown grant created it"
    );
    fifth
        .assert_absent(
            CHECK,
            &store,
            t,
            "a failed rotation stored its access token",
        )
        .await;
}

/// Of [`RACERS`] rotations racing on one grant version (as racing refreshes that all read the
/// grant before any wrote), exactly one wins; no loser's access token is stored, and the
/// grant is the winner's.
pub async fn check_concurrent_rotations_rotate_once<S: Store + Clone>(store: S) {
    const CHECK: &str = "concurrent_rotations_rotate_once";
    let now = base();
    let first = issue_grant(CHECK, &store, &random_subject(), now).await;
    let id = first.id();
    let t = later(now, 60);
    let current = read_grant(CHECK, &store, &id, t).await;

    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, current) = (store.clone(), barrier.clone(), current.clone());
        let (family, refresh) = (first.family, first.refresh.clone());
        racers.spawn(async move {
            let pair = Pair::mint(&family, &current.record, t);
            let rotation = rotate(CHECK, &current.record, &refresh, &pair, t);
            barrier.wait().await;
            let won = ok(
                CHECK,
                store
                    .replace_grant(&id, current.version, rotation, pair.info.clone(), t)
                    .await,
            );
            (won, pair)
        });
    }
    let results = join_all(CHECK, racers).await;
    let winners: Vec<&Pair> = results
        .iter()
        .filter(|(won, _)| *won)
        .map(|(_, p)| p)
        .collect();
    let [winner] = winners[..] else {
        fail(
            CHECK,
            &format!(
                "{} of {RACERS} racing rotations of one version won",
                winners.len()
            ),
        )
    };
    for (won, pair) in &results {
        if !*won {
            pair.assert_absent(
                CHECK,
                &store,
                t,
                "a losing rotation stored its access token",
            )
            .await;
        }
    }
    winner.assert_live(CHECK, &store, t).await;
    let stored = read_grant(CHECK, &store, &id, t).await;
    assert_eq!(
        stored.version, 1,
        "[{CHECK}] more than one rotation applied"
    );
    assert_eq!(
        stored.record.access_token,
        winner.access.digest(),
        "[{CHECK}] the grant does not name the winner's access token"
    );
    assert_eq!(
        stored.record.refresh_token,
        Some(winner.refresh.digest()),
        "[{CHECK}] the grant does not name the winner's refresh token"
    );
    assert!(
        ok(CHECK, store.access_token(&first.access.digest(), t).await).is_none(),
        "[{CHECK}] the replaced access token survived"
    );
}

/// Rotations chain: each deletes the access token it replaces (`rotation.revoke`) and stores
/// the new one, a retry (the superseded refresh token within the grace period) replaces the
/// pair the rotation issued, and a rotation may issue an access token without a refresh token.
pub async fn check_rotation_replaces_access_token<S: Store>(store: S) {
    const CHECK: &str = "rotation_replaces_access_token";
    let now = base();
    let first = issue_grant(CHECK, &store, &random_subject(), now).await;
    let t = later(now, 60);

    let Refreshed::Rotated(second, how) = refresh(CHECK, &store, &first.refresh, t).await else {
        fail(CHECK, "refreshing with the live refresh token failed")
    };
    assert_eq!(how, Presented::Current, "[{CHECK}] the live token");
    second.assert_live(CHECK, &store, t).await;
    assert!(
        ok(CHECK, store.access_token(&first.access.digest(), t).await).is_none(),
        "[{CHECK}] the rotation left the replaced access token"
    );

    // The first refresh token again, within the grace period: a retry, whose new pair
    // replaces the second one.
    let t2 = later(t, 5);
    let Refreshed::Rotated(third, how) = refresh(CHECK, &store, &first.refresh, t2).await else {
        fail(CHECK, "a retry within the grace period failed")
    };
    assert_eq!(how, Presented::Retry, "[{CHECK}] a retry within grace");
    third.assert_live(CHECK, &store, t2).await;
    assert!(
        ok(CHECK, store.access_token(&second.access.digest(), t2).await).is_none(),
        "[{CHECK}] a retry left the access token of the pair it replaced"
    );
    let grant = read_grant(CHECK, &store, &first.id(), t2).await;
    assert_eq!(grant.version, 2, "[{CHECK}] two rotations, two swaps");
    assert_eq!(grant.record.refresh_token, Some(third.refresh.digest()));

    // An access token alone (no refresh token issued): the old pair still goes.
    let t3 = later(t2, 5);
    let mut alone = Pair::mint(&first.family, &grant.record, t3);
    alone.tokens.refresh_token = None;
    alone.tokens.expires_at = alone.info.expires_at;
    let rotation = rotate(CHECK, &grant.record, &third.refresh, &alone, t3);
    assert!(
        ok(
            CHECK,
            store
                .replace_grant(&first.id(), 2, rotation, alone.info.clone(), t3)
                .await
        ),
        "[{CHECK}] a rotation issuing only an access token failed"
    );
    alone.assert_live(CHECK, &store, t3).await;
    assert!(
        ok(CHECK, store.access_token(&third.access.digest(), t3).await).is_none(),
        "[{CHECK}] the rotation left the replaced access token"
    );
    assert_eq!(
        read_grant(CHECK, &store, &first.id(), t3)
            .await
            .record
            .refresh_token,
        None,
        "[{CHECK}] the grant kept a refresh token it no longer has"
    );
}

/// [`RACERS`] refreshes of one refresh token race as the token endpoint runs them (read,
/// rotate, on a lost swap read again): one rotates, the others find the token superseded
/// within the grace period and are answered with fresh pairs, each replacing the pair before.
/// At the end exactly one access token is live, and it and the live refresh token are one
/// racer's pair.
pub async fn check_racing_refreshes_leave_one_pair<S: Store + Clone>(store: S) {
    const CHECK: &str = "racing_refreshes_leave_one_pair";
    let now = base();
    let first = issue_grant(CHECK, &store, &random_subject(), now).await;
    let t = later(now, 60);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier, refresh_token) =
            (store.clone(), barrier.clone(), first.refresh.clone());
        racers.spawn(async move {
            barrier.wait().await;
            refresh(CHECK, &store, &refresh_token, t).await
        });
    }
    let results = join_all(CHECK, racers).await;
    let mut pairs = Vec::new();
    let mut current = 0;
    for r in results {
        match r {
            Refreshed::Rotated(pair, how) => {
                if how == Presented::Current {
                    current += 1;
                }
                pairs.push(pair);
            }
            other => fail(CHECK, &format!("a racing refresh gave {other:?}")),
        }
    }
    assert_eq!(
        current, 1,
        "[{CHECK}] {current} racing refreshes rotated the live token (the rest must be retries)"
    );
    let mut live = Vec::new();
    for pair in &pairs {
        if ok(CHECK, store.access_token(&pair.access.digest(), t).await).is_some() {
            live.push(pair);
        }
    }
    let [survivor] = live[..] else {
        fail(
            CHECK,
            &format!(
                "{} access tokens are live after {RACERS} racing refreshes",
                live.len()
            ),
        )
    };
    let grant = read_grant(CHECK, &store, &first.id(), t).await;
    assert_eq!(
        grant.version, RACERS as u64,
        "[{CHECK}] every refresh must be one swap"
    );
    assert_eq!(grant.record.access_token, survivor.access.digest());
    assert_eq!(
        grant.record.refresh_token,
        Some(survivor.refresh.digest()),
        "[{CHECK}] the live refresh token is not the live access token's pair"
    );
    assert!(
        ok(CHECK, store.access_token(&first.access.digest(), t).await).is_none(),
        "[{CHECK}] the first access token survived"
    );
}

/// `revoke_grant` deletes the grant, the access token it names and its subject index entry,
/// returns the grant as it was, and answers `None` the second time. Other grants of the same
/// subject are untouched, and a rotation of the revoked grant fails and stores nothing.
pub async fn check_revoke_grant<S: Store>(store: S) {
    const CHECK: &str = "revoke_grant";
    let now = base();
    let subject = random_subject();
    let doomed = issue_grant(CHECK, &store, &subject, now).await;
    let kept = issue_grant(CHECK, &store, &subject, now).await;
    let t = later(now, 10);
    let before = read_grant(CHECK, &store, &doomed.id(), t).await;

    let revoked = ok(CHECK, store.revoke_grant(&doomed.id(), t).await)
        .unwrap_or_else(|| fail(CHECK, "revoking a live grant found nothing"));
    assert_eq!(
        revoked, before.record,
        "[{CHECK}] revoke_grant must return the grant as it was"
    );
    doomed
        .assert_absent(CHECK, &store, t, "a revoked grant lives on")
        .await;
    assert!(
        ok(CHECK, store.revoke_grant(&doomed.id(), t).await).is_none(),
        "[{CHECK}] a revoked grant was revoked again"
    );
    kept.assert_stored(CHECK, &store, t).await;
    let ids = ids_of(&ok(CHECK, store.grants_of(&subject, t).await));
    assert_eq!(
        ids,
        HashSet::from([kept.id()]),
        "[{CHECK}] the subject index still lists the revoked grant"
    );

    // A rotation that read the grant before the revocation finds it gone.
    let late = Pair::mint(&doomed.family, &before.record, t);
    let rotation = rotate(CHECK, &before.record, &doomed.refresh, &late, t);
    assert!(
        !ok(
            CHECK,
            store
                .replace_grant(&doomed.id(), before.version, rotation, late.info.clone(), t)
                .await
        ),
        "[{CHECK}] a revoked grant was rotated"
    );
    late.assert_absent(
        CHECK,
        &store,
        t,
        "a rotation of a revoked grant stored its access token",
    )
    .await;
    assert!(
        ok(CHECK, store.grant(&doomed.id(), t).await).is_none(),
        "[{CHECK}] a rotation revived a revoked grant"
    );
    assert!(
        ok(CHECK, store.revoke_grant(&kept.id(), t).await).is_some(),
        "[{CHECK}] revoking the other grant"
    );
    assert!(
        ok(CHECK, store.grants_of(&subject, t).await).is_empty(),
        "[{CHECK}] the subject still has grants"
    );
}

/// A revocation racing a rotation of the same grant never leaves a live access token behind
/// the revoked grant, whichever comes first; run [`REVOKE_ROUNDS`] times.
pub async fn check_revoke_racing_rotation<S: Store + Clone>(store: S) {
    const CHECK: &str = "revoke_racing_rotation";
    let now = base();
    let subject = random_subject();
    let t = later(now, 30);
    let mut rotated_first = 0;
    for _ in 0..REVOKE_ROUNDS {
        let issued = issue_grant(CHECK, &store, &subject, now).await;
        let id = issued.id();
        let current = read_grant(CHECK, &store, &id, t).await;
        let pair = Pair::mint(&issued.family, &current.record, t);
        let rotation = rotate(CHECK, &current.record, &issued.refresh, &pair, t);
        let barrier = Arc::new(Barrier::new(2));
        let rotator = {
            let (store, barrier, info) = (store.clone(), barrier.clone(), pair.info.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                ok(
                    CHECK,
                    store
                        .replace_grant(&id, current.version, rotation, info, t)
                        .await,
                )
            })
        };
        let revoker = {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                ok(CHECK, store.revoke_grant(&id, t).await)
            })
        };
        let (rotated, revoked) = match (rotator.await, revoker.await) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => fail(CHECK, "a racing task failed"),
        };
        let revoked = revoked.unwrap_or_else(|| fail(CHECK, "the revocation found no grant"));
        if rotated {
            rotated_first += 1;
            assert_eq!(
                revoked.access_token,
                pair.access.digest(),
                "[{CHECK}] a rotation won before the revocation, which returned the old grant"
            );
        }
        assert!(
            ok(CHECK, store.grant(&id, t).await).is_none(),
            "[{CHECK}] the grant survived its revocation"
        );
        for (token, what) in [(&issued.access, "old"), (&pair.access, "new")] {
            assert!(
                ok(CHECK, store.access_token(&token.digest(), t).await).is_none(),
                "[{CHECK}] the {what} access token is live behind a revoked grant (rotation {})",
                if rotated { "won" } else { "lost" }
            );
        }
    }
    // Not asserted: which side wins is the scheduler's business.
    let _ = rotated_first;
    assert!(
        ok(CHECK, store.grants_of(&subject, t).await).is_empty(),
        "[{CHECK}] revoked grants are still listed"
    );
}

/// `grants_of` lists exactly the live grants of a subject; `revoke_grants_of` revokes all of
/// them (grants, access tokens, index) and returns them, and nobody else's.
pub async fn check_grants_of<S: Store>(store: S) {
    const CHECK: &str = "grants_of";
    let now = base();
    let (alice, bob) = (random_subject(), random_subject());
    assert!(
        ok(CHECK, store.grants_of(&alice, now).await).is_empty(),
        "[{CHECK}] a new subject has grants"
    );
    let mut hers = Vec::new();
    for _ in 0..3 {
        hers.push(issue_grant(CHECK, &store, &alice, now).await);
    }
    let his = issue_grant(CHECK, &store, &bob, now).await;
    let t = later(now, 10);

    let listed = ok(CHECK, store.grants_of(&alice, t).await);
    assert_eq!(
        ids_of(&listed),
        hers.iter().map(Issued::id).collect::<HashSet<_>>(),
        "[{CHECK}] grants_of lists the wrong grants"
    );
    assert_eq!(listed.len(), 3, "[{CHECK}] grants_of lists a grant twice");
    for g in &listed {
        assert_eq!(g.subject, alice, "[{CHECK}] another subject's grant listed");
    }
    // A rotation shows in the listing (the grant as it is now).
    let Refreshed::Rotated(pair, _) = refresh(CHECK, &store, &hers[0].refresh, t).await else {
        fail(CHECK, "refresh failed")
    };
    let listed = ok(CHECK, store.grants_of(&alice, t).await);
    let rotated = listed
        .iter()
        .find(|g| g.id == hers[0].id())
        .unwrap_or_else(|| fail(CHECK, "a rotated grant is no longer listed"));
    assert_eq!(
        rotated.access_token,
        pair.access.digest(),
        "[{CHECK}] grants_of returned a stale grant"
    );

    let revoked = ok(CHECK, store.revoke_grants_of(&alice, t).await);
    assert_eq!(
        ids_of(&revoked),
        hers.iter().map(Issued::id).collect::<HashSet<_>>(),
        "[{CHECK}] revoke_grants_of returned the wrong grants"
    );
    assert_eq!(revoked.len(), 3, "[{CHECK}] a grant was revoked twice");
    for issued in &hers {
        issued
            .assert_absent(CHECK, &store, t, "revoke_grants_of left a grant")
            .await;
    }
    pair.assert_absent(CHECK, &store, t, "revoke_grants_of left an access token")
        .await;
    assert!(
        ok(CHECK, store.grants_of(&alice, t).await).is_empty(),
        "[{CHECK}] grants are listed after revoke_grants_of"
    );
    his.assert_stored(CHECK, &store, t).await;
    assert!(
        ok(CHECK, store.revoke_grants_of(&alice, t).await).is_empty(),
        "[{CHECK}] a second revoke_grants_of found grants"
    );
}

/// `revoke_grants_of` racing a refresh of every one of the subject's grants ("sign out
/// everywhere" while the devices refresh) leaves no grant and no access token, old or new,
/// whichever side wins each race; another subject's grant is untouched. Run
/// [`REVOKE_ROUNDS`] / 10 times over [`SUBJECT_GRANTS`] grants.
pub async fn check_revoke_grants_of_racing_rotations<S: Store + Clone>(store: S) {
    const CHECK: &str = "revoke_grants_of_racing_rotations";
    let now = base();
    let t = later(now, 30);
    let bystander = issue_grant(CHECK, &store, &random_subject(), now).await;
    for _ in 0..REVOKE_ROUNDS / 10 {
        let subject = random_subject();
        let mut issued = Vec::with_capacity(SUBJECT_GRANTS);
        for _ in 0..SUBJECT_GRANTS {
            issued.push(issue_grant(CHECK, &store, &subject, now).await);
        }
        let barrier = Arc::new(Barrier::new(SUBJECT_GRANTS + 1));
        let mut set = JoinSet::new();
        for grant in &issued {
            let (store, barrier, token) = (store.clone(), barrier.clone(), grant.refresh.clone());
            set.spawn(async move {
                barrier.wait().await;
                match refresh(CHECK, &store, &token, t).await {
                    Refreshed::Rotated(pair, _) => Some(*pair),
                    Refreshed::Unknown => None,
                    Refreshed::Reused => fail(CHECK, "a live refresh token was taken for reuse"),
                }
            });
        }
        let revoker = {
            let (store, barrier, subject) = (store.clone(), barrier.clone(), subject.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                ok(CHECK, store.revoke_grants_of(&subject, t).await)
            })
        };
        let rotated: Vec<Pair> = join_all(CHECK, set).await.into_iter().flatten().collect();
        let revoked = match revoker.await {
            Ok(revoked) => revoked,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => fail(CHECK, &format!("the revoker failed: {e}")),
        };
        assert_eq!(
            ids_of(&revoked),
            issued.iter().map(Issued::id).collect::<HashSet<_>>(),
            "[{CHECK}] revoke_grants_of did not revoke every grant of the subject"
        );
        for grant in &issued {
            grant
                .assert_absent(CHECK, &store, t, "a grant survived revoke_grants_of")
                .await;
        }
        for pair in &rotated {
            pair.assert_absent(
                CHECK,
                &store,
                t,
                "a rotation's access token is live behind revoke_grants_of",
            )
            .await;
        }
        assert!(
            ok(CHECK, store.grants_of(&subject, t).await).is_empty(),
            "[{CHECK}] the subject still has grants"
        );
    }
    bystander.assert_stored(CHECK, &store, t).await;
}

/// A grant past its `expires_at` is not returned by `grant` or `grants_of`; until then it is.
/// Its access token lives until its own `expires_at`, which may be later.
pub async fn check_grant_expiry<S: Store>(store: S) {
    const CHECK: &str = "grant_expiry";
    let now = base();
    let subject = random_subject();
    let short = issue_grant(CHECK, &store, &subject, now).await;
    let long = {
        // A second grant refreshed later, so it ends later.
        let issued = issue_grant(CHECK, &store, &subject, now).await;
        let Refreshed::Rotated(_, _) =
            refresh(CHECK, &store, &issued.refresh, later(now, 300)).await
        else {
            fail(CHECK, "refresh failed")
        };
        issued
    };
    let end = short.issue.grant.expires_at;
    let before = just_before(end);
    assert!(
        ok(CHECK, store.grant(&short.id(), before).await).is_some(),
        "[{CHECK}] a grant ended early"
    );
    assert_eq!(
        ok(CHECK, store.grants_of(&subject, before).await).len(),
        2,
        "[{CHECK}] a live grant is not listed"
    );
    assert!(
        ok(CHECK, store.grant(&short.id(), end).await).is_none(),
        "[{CHECK}] a grant was returned past its expires_at"
    );
    assert_eq!(
        ids_of(&ok(CHECK, store.grants_of(&subject, end).await)),
        HashSet::from([long.id()]),
        "[{CHECK}] grants_of listed an expired grant"
    );
    // Its access token has ended long before (its own lifetime is shorter than the grant's);
    // if the store still returns it, it must say so.
    if let Some(info) = ok(CHECK, store.access_token(&short.access.digest(), end).await) {
        assert!(
            info.is_expired(end),
            "[{CHECK}] an access token outlived its grant"
        );
    }

    // A grant's end is not a revocation: an access token that outlives its grant (a refresh
    // token shorter-lived than the access token) stays valid until its own expiry.
    let client = ClientId::new(KIT_CLIENT);
    let flow = approved_flow(CHECK, &store, &subject, now).await;
    let polled = poll(
        CHECK,
        &store,
        &flow.device(),
        &client,
        now,
        |grant, subject, at| {
            let mut issued = Issued::new(grant, &subject, at, now);
            issued.issue.grant.expires_at = later(now, 60);
            issued
        },
    )
    .await;
    let Polled::Issued(brief) = polled else {
        fail(CHECK, &format!("polling an approved grant gave {polled:?}"))
    };
    let after = later(now, 120);
    assert!(
        ok(CHECK, store.grant(&brief.id(), after).await).is_none(),
        "[{CHECK}] a grant was returned past its expires_at"
    );
    assert_eq!(
        ok(
            CHECK,
            store.access_token(&brief.access.digest(), after).await
        ),
        Some(brief.issue.access.clone()),
        "[{CHECK}] an access token ended with its grant, before its own expiry"
    );
}

/// `revoke_access_token` deletes one access token and reports whether it existed; the grant
/// and its refresh token live on.
pub async fn check_revoke_access_token<S: Store>(store: S) {
    const CHECK: &str = "revoke_access_token";
    let now = base();
    let issued = issue_grant(CHECK, &store, &random_subject(), now).await;
    let access = issued.access.digest();
    assert!(
        ok(CHECK, store.revoke_access_token(&access, now).await),
        "[{CHECK}] revoking a live access token reported it missing"
    );
    assert!(
        ok(CHECK, store.access_token(&access, now).await).is_none(),
        "[{CHECK}] a revoked access token survived"
    );
    assert!(
        !ok(CHECK, store.revoke_access_token(&access, now).await),
        "[{CHECK}] revoking a revoked access token reported it existed"
    );
    assert_eq!(
        read_grant(CHECK, &store, &issued.id(), now).await,
        Versioned {
            version: 0,
            record: issued.issue.grant.clone()
        },
        "[{CHECK}] revoking an access token changed its grant"
    );
    // The grant still refreshes, and revoking the grant afterwards copes with the token gone.
    let t = later(now, 1);
    let Refreshed::Rotated(pair, _) = refresh(CHECK, &store, &issued.refresh, t).await else {
        fail(
            CHECK,
            "a grant whose access token was revoked no longer refreshes",
        )
    };
    pair.assert_live(CHECK, &store, t).await;
    assert!(ok(CHECK, store.revoke_grant(&issued.id(), t).await).is_some());
    pair.assert_absent(CHECK, &store, t, "revoking the grant left its access token")
        .await;
    let unknown = AccessToken::generate().digest();
    assert!(
        !ok(CHECK, store.revoke_access_token(&unknown, now).await),
        "[{CHECK}] revoked an unknown token"
    );
}

// ---------------------------------------------------------------------------------------------
// Limits and one-time values.

/// `try_increment` counts up to `max` and no further, reports its value and when its window
/// (from the first count, by `now`) ends; counters are independent; once the window has ended
/// the counter starts again at 1 with a new window.
pub async fn check_try_increment<S: Store>(store: S) {
    const CHECK: &str = "try_increment";
    let now = base();
    let window = Duration::from_secs(60);
    let key = format!("kit:{}", random_hex());
    let other = format!("kit:{}", random_hex());
    let resets_at = now.saturating_add(window);

    for want in 1..=3 {
        let t = later(now, want - 1);
        assert_eq!(
            ok(CHECK, store.try_increment(&key, 3, window, t).await),
            Count {
                counted: true,
                value: want,
                resets_at
            },
            "[{CHECK}] increment {want} of 3"
        );
    }
    // At the maximum: not counted, left alone, the window where it was.
    for _ in 0..2 {
        assert_eq!(
            ok(
                CHECK,
                store.try_increment(&key, 3, window, later(now, 30)).await
            ),
            Count {
                counted: false,
                value: 3,
                resets_at
            },
            "[{CHECK}] a counter at its maximum must refuse and stay"
        );
    }
    // A higher maximum for the same key lets it go on (the caller chooses the budget).
    assert_eq!(
        ok(
            CHECK,
            store.try_increment(&key, 4, window, later(now, 30)).await
        ),
        Count {
            counted: true,
            value: 4,
            resets_at
        }
    );
    assert_eq!(
        ok(CHECK, store.try_increment(&other, 3, window, now).await),
        Count {
            counted: true,
            value: 1,
            resets_at
        },
        "[{CHECK}] counters share state"
    );

    // The window runs from the first count, not the last.
    assert_eq!(
        ok(
            CHECK,
            store
                .try_increment(&key, 4, window, just_before(resets_at))
                .await
        ),
        Count {
            counted: false,
            value: 4,
            resets_at
        },
        "[{CHECK}] the window ended early"
    );
    let next = resets_at.saturating_add(window);
    assert_eq!(
        ok(CHECK, store.try_increment(&key, 4, window, resets_at).await),
        Count {
            counted: true,
            value: 1,
            resets_at: next
        },
        "[{CHECK}] an ended window must start again at 1"
    );
    assert_eq!(
        ok(
            CHECK,
            store
                .try_increment(&key, 4, window, later(resets_at, 1))
                .await
        ),
        Count {
            counted: true,
            value: 2,
            resets_at: next
        }
    );
    // A maximum of zero never counts.
    let zero = format!("kit:{}", random_hex());
    let c = ok(CHECK, store.try_increment(&zero, 0, window, now).await);
    assert!(
        !c.counted && c.value == 0,
        "[{CHECK}] a zero budget counted: {c:?}"
    );
}

/// [`BUDGET_RACERS`] concurrent `try_increment`s on one counter with a budget of a quarter of
/// them count exactly the budget: each counted call sees a different value, every refused one
/// sees the maximum, and the counter ends at the maximum.
pub async fn check_try_increment_under_race<S: Store + Clone>(store: S) {
    const CHECK: &str = "try_increment_under_race";
    let now = base();
    let window = Duration::from_secs(60);
    let max = (BUDGET_RACERS / 4) as u64;
    let key = format!("kit:{}", random_hex());
    let barrier = Arc::new(Barrier::new(BUDGET_RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..BUDGET_RACERS {
        let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
        racers.spawn(async move {
            barrier.wait().await;
            ok(CHECK, store.try_increment(&key, max, window, now).await)
        });
    }
    let counts = join_all(CHECK, racers).await;
    let counted: Vec<u64> = counts
        .iter()
        .filter(|c| c.counted)
        .map(|c| c.value)
        .collect();
    assert_eq!(
        counted.len() as u64,
        max,
        "[{CHECK}] {} of {BUDGET_RACERS} racing calls counted against a budget of {max}",
        counted.len()
    );
    let distinct: HashSet<u64> = counted.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=max).collect::<HashSet<_>>(),
        "[{CHECK}] counted calls must see the values 1..=max, once each"
    );
    for c in counts.iter().filter(|c| !c.counted) {
        assert_eq!(c.value, max, "[{CHECK}] a refused call saw {c:?}");
    }
    let last = ok(CHECK, store.try_increment(&key, max, window, now).await);
    assert_eq!(
        last,
        Count {
            counted: false,
            value: max,
            resets_at: now.saturating_add(window)
        },
        "[{CHECK}] the counter went past its budget"
    );
}

/// `decrement` gives back one reserved count, never goes below zero, and leaves a missing or
/// ended counter alone.
pub async fn check_decrement<S: Store>(store: S) {
    const CHECK: &str = "decrement";
    let now = base();
    let window = Duration::from_secs(60);
    let key = format!("kit:{}", random_hex());
    let resets_at = now.saturating_add(window);
    for _ in 0..2 {
        ok(CHECK, store.try_increment(&key, 2, window, now).await);
    }
    assert!(
        !ok(CHECK, store.try_increment(&key, 2, window, now).await).counted,
        "[{CHECK}] a full budget counted"
    );
    ok(CHECK, store.decrement(&key, later(now, 1)).await);
    assert_eq!(
        ok(
            CHECK,
            store.try_increment(&key, 2, window, later(now, 2)).await
        ),
        Count {
            counted: true,
            value: 2,
            resets_at
        },
        "[{CHECK}] a decrement must give back one place, in the same window"
    );
    for _ in 0..5 {
        ok(CHECK, store.decrement(&key, later(now, 3)).await);
    }
    assert_eq!(
        ok(
            CHECK,
            store.try_increment(&key, 2, window, later(now, 4)).await
        ),
        Count {
            counted: true,
            value: 1,
            resets_at
        },
        "[{CHECK}] decrements went below zero"
    );

    // A missing counter is left alone: decrementing creates nothing.
    let fresh = format!("kit:{}", random_hex());
    ok(CHECK, store.decrement(&fresh, now).await);
    let t = later(now, 7);
    assert_eq!(
        ok(CHECK, store.try_increment(&fresh, 2, window, t).await),
        Count {
            counted: true,
            value: 1,
            resets_at: t.saturating_add(window)
        },
        "[{CHECK}] a decrement of a missing counter changed it"
    );

    // An ended counter is left alone: the next count starts a new window at 1.
    ok(CHECK, store.decrement(&key, resets_at).await);
    assert_eq!(
        ok(CHECK, store.try_increment(&key, 2, window, resets_at).await),
        Count {
            counted: true,
            value: 1,
            resets_at: resets_at.saturating_add(window)
        },
        "[{CHECK}] a decrement revived an ended counter"
    );
}

/// `claim_once`: of [`RACERS`] concurrent claims of one value exactly one is `true`; every
/// later claim before `until` is `false`; from `until` on the value can be claimed again.
/// Different values are independent.
pub async fn check_claim_once<S: Store + Clone>(store: S) {
    const CHECK: &str = "claim_once";
    let now = base();
    let until = later(now, 60);
    let key = AccessToken::generate().digest();
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        racers.spawn(async move {
            barrier.wait().await;
            ok(CHECK, store.claim_once(&key, until, now).await)
        });
    }
    let won = join_all(CHECK, racers)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(
        won, 1,
        "[{CHECK}] {won} of {RACERS} racing claims of one value succeeded"
    );
    for t in [later(now, 1), just_before(until)] {
        assert!(
            !ok(CHECK, store.claim_once(&key, until, t).await),
            "[{CHECK}] a claimed value was claimed again before `until`"
        );
    }
    let other = AccessToken::generate().digest();
    assert!(
        ok(CHECK, store.claim_once(&other, until, now).await),
        "[{CHECK}] claims of different values interfere"
    );
    let again = later(until, 60);
    assert!(
        ok(CHECK, store.claim_once(&key, again, until).await),
        "[{CHECK}] a value could not be claimed again once its claim ended"
    );
    assert!(
        !ok(CHECK, store.claim_once(&key, again, later(until, 1)).await),
        "[{CHECK}] the renewed claim did not hold"
    );
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

/// Polls as the token endpoint does: read, ask the device grant, swap the successor in (with
/// the new grant, for an `Issue` outcome), and on a lost swap start over. `mint` makes the
/// grant for an `Issue` outcome from the device grant, the subject and the approval time.
async fn poll<S: Store>(
    check: &str,
    store: &S,
    device: &Digest,
    client: &ClientId,
    now: Timestamp,
    mut mint: impl FnMut(&DeviceGrant, Subject, Timestamp) -> Issued,
) -> Polled {
    for _ in 0..MAX_CAS_ROUNDS {
        let Some(current) = ok(check, store.device_grant(device, now).await) else {
            return Polled::Unknown;
        };
        let (next, answer) = match current.record.poll(client, now) {
            PollOutcome::Pending { next: None } => return Polled::Pending,
            PollOutcome::Pending { next: Some(next) } => (next, Polled::Pending),
            PollOutcome::SlowDown { next } => (next, Polled::SlowDown),
            PollOutcome::Issue {
                next,
                subject,
                approved_at,
                scope,
            } => {
                let issued = mint(&current.record, subject, approved_at);
                assert_eq!(
                    issued.issue.grant.scope, scope,
                    "[{check}] the grant must carry the device grant's scope"
                );
                (next, Polled::Issued(Box::new(issued)))
            }
            PollOutcome::Refuse(code) => return Polled::Refused(code),
        };
        let issue = match &answer {
            Polled::Issued(issued) => Some(issued.issue.clone()),
            _ => None,
        };
        if ok(
            check,
            store
                .replace_device_grant(device, current.version, next, issue, now)
                .await,
        ) {
            return answer;
        }
    }
    fail(check, "a poll's compare-and-swap never settled")
}

/// A `mint` for [`poll`] where no poll may issue.
fn no_issue(check: &'static str) -> impl FnMut(&DeviceGrant, Subject, Timestamp) -> Issued {
    move |_: &DeviceGrant, _: Subject, _: Timestamp| -> Issued {
        fail(check, "the grant issued tokens where it must not")
    }
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
        let current = read_device_grant(check, store, device, now).await;
        let next = current.record.decide(decision.clone(), now)?;
        if ok(
            check,
            store
                .replace_device_grant(device, current.version, next, None, now)
                .await,
        ) {
            return Ok(());
        }
    }
    fail(check, "a decision's compare-and-swap never settled")
}

/// Inserts a device grant and has `subject` approve it.
async fn approved_flow<S: Store>(
    check: &str,
    store: &S,
    subject: &Subject,
    now: Timestamp,
) -> Flow {
    let flow = Flow::new(now);
    insert(check, store, &flow, now).await;
    decide(
        check,
        store,
        &flow.device(),
        Decision::Approve(subject.clone()),
        now,
    )
    .await
    .unwrap_or_else(|e| fail(check, &format!("approval refused: {e:?}")));
    flow
}

/// Runs a whole flow (insert, approve, poll) for `subject` and returns the grant it issued.
async fn issue_grant<S: Store>(
    check: &str,
    store: &S,
    subject: &Subject,
    now: Timestamp,
) -> Issued {
    let flow = approved_flow(check, store, subject, now).await;
    let client = flow.grant.client_id.clone();
    let polled = poll(
        check,
        store,
        &flow.device(),
        &client,
        now,
        |grant, subject, at| Issued::new(grant, &subject, at, now),
    )
    .await;
    match polled {
        Polled::Issued(issued) => {
            issued.assert_stored(check, store, now).await;
            *issued
        }
        other => fail(check, &format!("polling an approved grant gave {other:?}")),
    }
}

/// What a refresh answered.
#[derive(Debug)]
enum Refreshed {
    /// A new pair, for the live token or a retry.
    Rotated(Box<Pair>, Presented),
    /// The token was reused: the grant is revoked.
    Reused,
    /// No grant for the token.
    Unknown,
}

/// Refreshes as the token endpoint does: read the grant the token names, ask it what the token
/// is, rotate by compare-and-swap, on a lost swap read again; reuse revokes the grant.
async fn refresh<S: Store>(
    check: &str,
    store: &S,
    presented: &RefreshToken,
    now: Timestamp,
) -> Refreshed {
    let family = presented
        .family()
        .unwrap_or_else(|| fail(check, "a kit refresh token names no family"));
    let id = family.grant_id();
    for _ in 0..MAX_CAS_ROUNDS {
        let Some(current) = ok(check, store.grant(&id, now).await) else {
            return Refreshed::Unknown;
        };
        let how = current.record.presented(&presented.digest(), now, GRACE);
        let pair = Pair::mint(&family, &current.record, now);
        let Some(rotation) = current.record.rotate(how, pair.tokens, now) else {
            ok(check, store.revoke_grant(&id, now).await);
            return Refreshed::Reused;
        };
        if ok(
            check,
            store
                .replace_grant(&id, current.version, rotation, pair.info.clone(), now)
                .await,
        ) {
            return Refreshed::Rotated(Box::new(pair), how);
        }
    }
    fail(check, "a refresh's compare-and-swap never settled")
}

/// The rotation of `grant` when `presented` is presented and answered with `pair`.
fn rotate(
    check: &str,
    grant: &Grant,
    presented: &RefreshToken,
    pair: &Pair,
    now: Timestamp,
) -> crate::family::Rotation {
    let how = grant.presented(&presented.digest(), now, GRACE);
    grant
        .rotate(how, pair.tokens, now)
        .unwrap_or_else(|| fail(check, &format!("the kit's token was {how:?}")))
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
            ClientId::new(KIT_CLIENT),
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

/// A redemption's grant and first pair, with their plaintext (so tests can look for leaks).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Issued {
    family: FamilyKey,
    access: AccessToken,
    refresh: RefreshToken,
    issue: IssuedGrant,
}

impl Issued {
    /// The grant a redemption of `device`, approved by `subject` at `approved_at`, issues at
    /// `now`: built as the token endpoint builds it.
    fn new(
        device: &DeviceGrant,
        subject: &Subject,
        approved_at: Timestamp,
        now: Timestamp,
    ) -> Self {
        let family = FamilyKey::generate();
        let access = AccessToken::generate();
        let refresh = RefreshToken::generate(&family);
        let access_expires_at = now.saturating_add(ACCESS_TTL);
        let grant = Grant {
            id: family.grant_id(),
            client_id: device.client_id.clone(),
            subject: subject.clone(),
            scope: device.scope.clone(),
            audience: device.audience.clone(),
            approved_at,
            last_used_at: now,
            expires_at: now.saturating_add(REFRESH_TTL),
            access_token: access.digest(),
            refresh_token: Some(refresh.digest()),
            superseded: None,
            cnf: None,
        };
        let info = TokenInfo::new(
            subject.clone(),
            device.client_id.clone(),
            device.scope.clone(),
            access_expires_at,
        )
        .with_grant_id(Some(grant.id))
        .with_audience(device.audience.clone());
        Issued {
            family,
            access,
            refresh,
            issue: IssuedGrant {
                grant,
                access: info,
            },
        }
    }

    fn id(&self) -> GrantId {
        self.issue.grant.id
    }

    /// The grant is stored at version 0 as issued, its access token as issued, and its subject
    /// lists it.
    async fn assert_stored<S: Store>(&self, check: &str, store: &S, now: Timestamp) {
        assert_eq!(
            ok(check, store.grant(&self.id(), now).await),
            Some(Versioned {
                version: 0,
                record: self.issue.grant.clone()
            }),
            "[{check}] the issued grant is not stored as issued"
        );
        assert_eq!(
            ok(check, store.access_token(&self.access.digest(), now).await).as_ref(),
            Some(&self.issue.access),
            "[{check}] the issued access token is not stored as issued"
        );
        let listed = ok(check, store.grants_of(&self.issue.grant.subject, now).await);
        assert!(
            listed.iter().any(|g| g.id == self.id()),
            "[{check}] the issued grant is not indexed under its subject"
        );
    }

    /// Neither the grant, nor its access token, nor its index entry exist.
    async fn assert_absent<S: Store>(&self, check: &str, store: &S, now: Timestamp, what: &str) {
        assert!(
            ok(check, store.grant(&self.id(), now).await).is_none(),
            "[{check}] {what} (grant)"
        );
        assert!(
            ok(check, store.access_token(&self.access.digest(), now).await).is_none(),
            "[{check}] {what} (access token)"
        );
        let listed = ok(check, store.grants_of(&self.issue.grant.subject, now).await);
        assert!(
            !listed.iter().any(|g| g.id == self.id()),
            "[{check}] {what} (subject index)"
        );
    }
}

/// The pair a refresh of `grant` issues, built as the token endpoint builds it.
#[derive(Clone, Debug)]
struct Pair {
    access: AccessToken,
    refresh: RefreshToken,
    tokens: NewTokens,
    info: TokenInfo,
}

impl Pair {
    fn mint(family: &FamilyKey, grant: &Grant, now: Timestamp) -> Self {
        let access = AccessToken::generate();
        let refresh = RefreshToken::generate(family);
        let info = TokenInfo::new(
            grant.subject.clone(),
            grant.client_id.clone(),
            grant.scope.clone(),
            now.saturating_add(ACCESS_TTL),
        )
        .with_grant_id(Some(grant.id))
        .with_audience(grant.audience.clone())
        .with_cnf(grant.cnf);
        Pair {
            tokens: NewTokens {
                access_token: access.digest(),
                refresh_token: Some(refresh.digest()),
                expires_at: now.saturating_add(REFRESH_TTL),
            },
            access,
            refresh,
            info,
        }
    }

    /// The access token is stored as issued.
    async fn assert_live<S: Store>(&self, check: &str, store: &S, now: Timestamp) {
        assert_eq!(
            ok(check, store.access_token(&self.access.digest(), now).await).as_ref(),
            Some(&self.info),
            "[{check}] the rotation's access token is not stored as issued"
        );
    }

    async fn assert_absent<S: Store>(&self, check: &str, store: &S, now: Timestamp, what: &str) {
        assert!(
            ok(check, store.access_token(&self.access.digest(), now).await).is_none(),
            "[{check}] {what}"
        );
    }
}

async fn insert<S: Store>(check: &str, store: &S, flow: &Flow, now: Timestamp) {
    assert_eq!(
        ok(
            check,
            store
                .insert_device_grant(flow.device(), flow.grant.clone(), now)
                .await
        ),
        Insert::Inserted,
        "[{check}] inserting a fresh grant failed"
    );
}

async fn read_device_grant<S: Store>(
    check: &str,
    store: &S,
    device: &Digest,
    now: Timestamp,
) -> Versioned<DeviceGrant> {
    ok(check, store.device_grant(device, now).await)
        .unwrap_or_else(|| fail(check, "a stored device grant is missing"))
}

async fn read_grant<S: Store>(
    check: &str,
    store: &S,
    id: &GrantId,
    now: Timestamp,
) -> Versioned<Grant> {
    ok(check, store.grant(id, now).await)
        .unwrap_or_else(|| fail(check, "a stored grant is missing"))
}

fn ids_of(grants: &[Grant]) -> HashSet<GrantId> {
    grants.iter().map(|g| g.id).collect()
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

fn just_before(t: Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(t.as_unix_millis().saturating_sub(1))
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap_or_else(|e| panic!("kit scope {s:?}: {e}"))
}

fn audience() -> Audience {
    Audience::from_resources(["https://api.kit.example/"])
        .unwrap_or_else(|e| panic!("kit audience: {e}"))
}

fn random_subject() -> Subject {
    Subject::new(format!("kit-user-{}", random_hex()))
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
